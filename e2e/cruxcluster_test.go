package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
)

// TestCruxCluster starts three runtimes on loopback, each a server of the
// Crux cluster (--bootstrap-expect 3) with a data dir of its own: the
// control plane spreads the slots over them, and a value saved through
// any runtime is read through every other with its ETag. Each slot has
// three copies: kill -9 of one member fails its slots over to in-sync
// replicas, and nothing acknowledged is lost; when it returns on its
// data dir it follows again and serves every key.
func TestCruxCluster(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	a := startMecha(t, "--app-id", "im", "--bootstrap-expect", "3", "--cluster-id", "e2e-crux", "--data-dir", dirs[0])
	join := fmt.Sprintf("127.0.0.1:%d", a.gossipPort)
	b := startMecha(t, "--app-id", "im", "--bootstrap-expect", "3", "--cluster-id", "e2e-crux", "--data-dir", dirs[1], "--join", join)
	c := startMecha(t, "--app-id", "im", "--bootstrap-expect", "3", "--cluster-id", "e2e-crux", "--data-dir", dirs[2], "--join", join)
	rts := []*mecha{a, b, c}
	started := time.Now()
	// The cluster forms: a save through each runtime succeeds.
	for i, m := range rts {
		eventually(t, 30*time.Second, func() error {
			r := do(t, "POST", m.url("/v1.0/state/statestore"), fmt.Sprintf(`[{"key":"probe-%d","value":1}]`, i), "Content-Type", "application/json")
			if r.Status != 204 {
				return fmt.Errorf("runtime %d: %d %s", i, r.Status, r.Body)
			}
			return nil
		})
	}
	t.Logf("the cluster served every runtime %v after the third started", time.Since(started).Round(time.Millisecond))
	const n = 60
	etags := make([]string, n)
	for i := range n {
		m := rts[i%3]
		expectStatus(t, do(t, "POST", m.url("/v1.0/state/statestore"), fmt.Sprintf(`[{"key":"user-%d","value":{"gw":"g%d"}}]`, i, i), "Content-Type", "application/json"), 204)
	}
	for i := range n {
		for j, m := range rts {
			r := do(t, "GET", m.url(fmt.Sprintf("/v1.0/state/statestore/user-%d", i)), nil)
			if r.Status != 200 || string(r.Body) != fmt.Sprintf(`{"gw":"g%d"}`, i) {
				t.Fatalf("user-%d through runtime %d: %d %s", i, j, r.Status, r.Body)
			}
			if j == 0 {
				etags[i] = r.Header.Get("ETag")
			} else if e := r.Header.Get("ETag"); e != etags[i] {
				t.Fatalf("user-%d: ETag %q through runtime 0, %q through %d", i, etags[i], e, j)
			}
		}
	}
	// Each server follows the others' slots: it fetched their records,
	// and reports the lag of the slots it leads.
	eventually(t, 10*time.Second, func() error {
		for i, m := range rts {
			r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/metrics", m.metricsPort), nil)
			if !regexp.MustCompile(`(?m)^mecha_crux_replica_fetched_records_total [1-9]`).Match(r.Body) ||
				!regexp.MustCompile(`(?m)^mecha_crux_replica_lag_records\{slot="\d+"\} \d+`).Match(r.Body) {
				return fmt.Errorf("server %d's replication metrics:\n%s", i, grepLines(string(r.Body), "mecha_crux_replica_fetched"))
			}
		}
		return nil
	})
	if out := cruxStatusCLI(t, a); !strings.Contains(out, "replication:") || !strings.Contains(out, "records fetched") {
		t.Fatalf("mecha crux status of a server shows no replication:\n%s", out)
	}
	// A guest on a's data dir follows the cluster's map through a: it
	// reads every key, and its writes land in the cluster.
	guest := startGuest(t, dirs[0], "im", 0)
	eventually(t, 10*time.Second, func() error {
		for i := range n {
			r := do(t, "GET", guest.url(fmt.Sprintf("/v1.0/state/statestore/user-%d", i)), nil)
			if r.Status != 200 || r.Header.Get("ETag") != etags[i] {
				return fmt.Errorf("user-%d through a's guest: %d %s", i, r.Status, r.Body)
			}
		}
		return nil
	})
	expectStatus(t, do(t, "POST", guest.url("/v1.0/state/statestore"), `[{"key":"from-guest","value":"g"}]`, "Content-Type", "application/json"), 204)
	if r := do(t, "GET", c.url("/v1.0/state/statestore/from-guest"), nil); string(r.Body) != `"g"` {
		t.Fatalf("a guest's write, read through c: %d %s", r.Status, r.Body)
	}
	guest.proc.stop()
	// Two clients (--crux-client) hold no slots and route every key:
	// what one saves, with a TTL or in a transaction, the other reads
	// with its ETag and expiry.
	clientDirs := []string{t.TempDir(), t.TempDir()}
	d := startMecha(t, "--app-id", "im", "--crux-client", "--cluster-id", "e2e-crux", "--join", join, "--data-dir", clientDirs[0])
	e := startMecha(t, "--app-id", "im", "--crux-client", "--cluster-id", "e2e-crux", "--join", join, "--data-dir", clientDirs[1])
	for _, m := range []*mecha{d, e} {
		eventually(t, 15*time.Second, func() error {
			if r := do(t, "GET", m.url("/v1.0/state/statestore/user-0"), nil); r.Status != 200 || r.Header.Get("ETag") != etags[0] {
				return fmt.Errorf("user-0 through a client: %d %s", r.Status, r.Body)
			}
			return nil
		})
	}
	expectStatus(t, do(t, "POST", d.url("/v1.0/state/statestore"), `[{"key":"{u9}session","value":"s9","metadata":{"ttlInSeconds":"300"}}]`, "Content-Type", "application/json"), 204)
	expectStatus(t, do(t, "POST", d.url("/v1.0/state/statestore/transaction"), `{"operations":[{"operation":"upsert","request":{"key":"{u9}device","value":"web"}},{"operation":"upsert","request":{"key":"{u9}seen","value":42}}]}`, "Content-Type", "application/json"), 204)
	viaD := do(t, "GET", d.url("/v1.0/state/statestore/{u9}session"), nil)
	viaE := do(t, "GET", e.url("/v1.0/state/statestore/{u9}session"), nil)
	if viaE.Status != 200 || string(viaE.Body) != `"s9"` || viaE.Header.Get("ETag") != viaD.Header.Get("ETag") || viaE.Header.Get("metadata.ttlExpireTime") == "" {
		t.Fatalf("a client's write with a TTL, read through the other: %d %s etag %q (%q) ttl %q", viaE.Status, viaE.Body, viaE.Header.Get("ETag"), viaD.Header.Get("ETag"), viaE.Header.Get("metadata.ttlExpireTime"))
	}
	for k, want := range map[string]string{"{u9}device": `"web"`, "{u9}seen": "42"} {
		if r := do(t, "GET", e.url("/v1.0/state/statestore/"+k), nil); string(r.Body) != want {
			t.Fatalf("a client's transaction, %s through the other: %d %s", k, r.Status, r.Body)
		}
	}
	// The gRPC API too, with the Dapr Go SDK.
	sdk, err := dapr.NewClientWithAddress(fmt.Sprintf("127.0.0.1:%d", e.grpcPort))
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sdk.SaveState(ctx, "statestore", "{u9}grpc", []byte(`"via-grpc"`), nil); err != nil {
		t.Fatalf("SaveState through a client: %v", err)
	}
	for i := range n {
		it, err := sdk.GetState(ctx, "statestore", fmt.Sprintf("user-%d", i), nil)
		if err != nil || string(it.Value) != fmt.Sprintf(`{"gw":"g%d"}`, i) || it.Etag != etags[i] {
			t.Fatalf("GetState user-%d through a client: %v %s etag %q (want %q)", i, err, it.Value, it.Etag, etags[i])
		}
	}
	if r := do(t, "GET", a.url("/v1.0/state/statestore/{u9}grpc"), nil); string(r.Body) != `"via-grpc"` {
		t.Fatalf("a gRPC save through a client, read through a: %d %s", r.Status, r.Body)
	}
	for _, dir := range clientDirs {
		if _, err := os.Stat(filepath.Join(dir, "crux")); !os.IsNotExist(err) {
			t.Fatalf("a client opened a Crux of its own in %s: %v", dir, err)
		}
	}
	checkCruxStatus(t, d, a, b, c)
	// A client configured for another cluster refuses the servers' map:
	// its requests fail with both cluster ids named, and so does its
	// status.
	stranger := startMecha(t, "--app-id", "im", "--crux-client", "--cluster-id", "other", "--join", join)
	eventually(t, 15*time.Second, func() error {
		r := do(t, "GET", stranger.url("/v1.0/state/statestore/user-0"), nil)
		if r.Status != 503 || !strings.Contains(string(r.Body), `\"e2e-crux\"`) || !strings.Contains(string(r.Body), `\"other\"`) {
			return fmt.Errorf("through a client of another cluster: %d %s", r.Status, r.Body)
		}
		return nil
	})
	if out := cruxStatusCLI(t, stranger, "-o", "json"); !strings.Contains(out, "cluster id mismatch") {
		t.Fatalf("the status of a client of another cluster names no problem:\n%s", out)
	}
	stranger.proc.stop()

	// A transaction's keys must share a slot: a hash tag does it; keys
	// in different slots get a 400 naming them.
	expectStatus(t, do(t, "POST", b.url("/v1.0/state/statestore/transaction"), `{"operations":[{"operation":"upsert","request":{"key":"{u1}session","value":"s"}},{"operation":"upsert","request":{"key":"{u1}device","value":"ios"}}]}`, "Content-Type", "application/json"), 204)
	if r := do(t, "GET", c.url("/v1.0/state/statestore/{u1}device"), nil); string(r.Body) != `"ios"` {
		t.Fatalf("after the transaction: %d %s", r.Status, r.Body)
	}
	r := do(t, "POST", a.url("/v1.0/state/statestore/transaction"), `{"operations":[{"operation":"upsert","request":{"key":"user-1","value":1}},{"operation":"upsert","request":{"key":"user-2","value":2}}]}`, "Content-Type", "application/json")
	expectError(t, r, 400, "ERR_STATE_TRANSACTION")
	if !strings.Contains(string(r.Body), "different slots") {
		t.Fatalf("cross-slot transaction: %s", r.Body)
	}

	// kill -9 of c: its slots fail over to their in-sync replicas on a
	// and b, and every key is served again through a, with its ETag.
	_ = c.cmd.Process.Kill()
	<-c.done
	killed := time.Now()
	eventually(t, 20*time.Second, func() error {
		for i := range n {
			r := do(t, "GET", a.url(fmt.Sprintf("/v1.0/state/statestore/user-%d", i)), nil)
			if r.Status != 200 || string(r.Body) != fmt.Sprintf(`{"gw":"g%d"}`, i) || r.Header.Get("ETag") != etags[i] {
				return fmt.Errorf("user-%d with c killed: %d %s etag %q (was %q)", i, r.Status, r.Body, r.Header.Get("ETag"), etags[i])
			}
		}
		return nil
	})
	t.Logf("every key served again %v after kill -9 of c (failover)", time.Since(killed).Round(time.Millisecond))
	// Writes go on without c, strong ones (two copies) included.
	expectStatus(t, do(t, "POST", b.url("/v1.0/state/statestore"), `[{"key":"user-0","value":{"gw":"moved"},"options":{"consistency":"strong"}}]`, "Content-Type", "application/json"), 204)
	etags[0] = do(t, "GET", a.url("/v1.0/state/statestore/user-0"), nil).Header.Get("ETag")
	// c cannot return under another cluster's id: its data dir belongs
	// to this one, and the error names both.
	wrong := startEnv(t, nil, bins.mecha, "run", "--app-id", "im", "--bootstrap-expect", "3", "--cluster-id", "another", "--data-dir", dirs[2], "--join", join,
		"--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--broker-port", "-1", "--internal-port", "0", "--gossip-port", "0", "--gossip-bind-address", "127.0.0.1")
	if code := wrong.wait(30 * time.Second); code == 0 || !strings.Contains(wrong.output(), `"e2e-crux"`) || !strings.Contains(wrong.output(), `"another"`) {
		t.Fatalf("c on its data dir with another --cluster-id: exit %d, want a failure naming both ids:\n%s", code, wrong.output())
	}
	// c returns on its data dir (new ports): every key is back, with its
	// value and ETag.
	c = startMecha(t, "--app-id", "im", "--bootstrap-expect", "3", "--cluster-id", "e2e-crux", "--data-dir", dirs[2], "--join", join)
	restarted := time.Now()
	eventually(t, 30*time.Second, func() error {
		for i := range n {
			m := []*mecha{b, c}[i%2] // through a survivor and the returned one
			r := do(t, "GET", m.url(fmt.Sprintf("/v1.0/state/statestore/user-%d", i)), nil)
			want := fmt.Sprintf(`{"gw":"g%d"}`, i)
			if i == 0 {
				want = `{"gw":"moved"}`
			}
			if r.Status != 200 || string(r.Body) != want || r.Header.Get("ETag") != etags[i] {
				return fmt.Errorf("user-%d after c returned: %d %s etag %q (was %q)", i, r.Status, r.Body, r.Header.Get("ETag"), etags[i])
			}
		}
		return nil
	})
	t.Logf("every key served again %v after c restarted", time.Since(restarted).Round(time.Millisecond))
}

// cruxStatusCLI runs `mecha crux status` against m's metrics port.
func cruxStatusCLI(t *testing.T, m *mecha, args ...string) string {
	t.Helper()
	out, err := exec.Command(bins.mecha, append([]string{"crux", "--admin", fmt.Sprintf("127.0.0.1:%d", m.metricsPort)}, append(args, "status")...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mecha crux status: %v\n%s", err, out)
	}
	return string(out)
}

// checkCruxStatus reads `mecha crux status` of client, which has routed
// requests, with the servers in the map: every slot led by one of them,
// each leading some, and the client's operations all remote; its metrics
// say the same.
func checkCruxStatus(t *testing.T, client *mecha, servers ...*mecha) {
	t.Helper()
	var st struct {
		Mode      string `json:"mode"`
		ClusterID string `json:"clusterId"`
		Members   []struct {
			ID      string `json:"id"`
			State   string `json:"state"`
			Leaders int    `json:"leaders"`
		} `json:"members"`
		Slots struct {
			Total, Leaderless int
			Balanced          bool
		} `json:"slots"`
		Routed struct{ Local, Remote int64 } `json:"routed"`
	}
	out := cruxStatusCLI(t, client, "-o", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("mecha crux status -o json: %v\n%s", err, out)
	}
	led := 0
	for _, mb := range st.Members {
		if mb.State != "alive" || mb.Leaders == 0 {
			t.Fatalf("member %s: %s, leading %d slots\n%s", mb.ID, mb.State, mb.Leaders, out)
		}
		led += mb.Leaders
	}
	if st.Mode != "client" || st.ClusterID != "e2e-crux" || len(st.Members) != len(servers) || led != 1024 ||
		st.Slots.Total != 1024 || st.Slots.Leaderless != 0 || !st.Slots.Balanced || st.Routed.Local != 0 || st.Routed.Remote == 0 {
		t.Fatalf("crux status of a client:\n%s", out)
	}
	table := cruxStatusCLI(t, client)
	for _, want := range []string{"this runtime: client", "cluster:      e2e-crux", "MEMBER", "LEADS"} {
		if !strings.Contains(table, want) {
			t.Fatalf("mecha crux status lacks %q:\n%s", want, table)
		}
	}
	r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/metrics", client.metricsPort), nil)
	if !regexp.MustCompile(`(?m)^mecha_crux_routed_total\{where="remote"\} [1-9]`).Match(r.Body) ||
		!regexp.MustCompile(`(?m)^mecha_crux_map_version [1-9]`).Match(r.Body) {
		t.Fatalf("a client's Crux metrics:\n%s", grepLines(string(r.Body), "mecha_crux_"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
