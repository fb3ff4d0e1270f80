package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startGuest starts `mecha run` with only an app-id, an app port (when
// not 0) and a data dir: every port is left to the runtime.
func startGuest(t *testing.T, dataDir, appID string, appPort int, extra ...string) *mecha {
	t.Helper()
	args := append([]string{"run", "--app-id", appID, "--data-dir", dataDir}, extra...)
	if appPort != 0 {
		args = append(args, "--app-port", strconv.Itoa(appPort))
	}
	m := listening(start(t, bins.mecha, args...), 30*time.Second)
	m.waitHealthy(t)
	return m
}

// TestSeveralRuntimesOneHost: runtimes started on the data dir of
// another (the default ~/.mecha/data, here a temp dir) need no flags:
// they pick free ports, join the owner's gossip and publish through the
// owner's broker, so apps on one host see each other's events and call
// each other by app-id. (Reproduced: a second `mecha run` needed six
// ports changed, and its events never reached the other app.)
func TestSeveralRuntimesOneHost(t *testing.T) {
	data := t.TempDir()
	// A store whose keys are not prefixed by the app-id (keyPrefix name),
	// as apps that share state configure it.
	res := t.TempDir()
	writeFile(t, res, "shared.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: shared
spec:
  type: state.crux
  version: v1
  metadata:
  - name: keyPrefix
    value: name
`)
	subPort := startHTTPApp(t)
	// The owner: explicit free ports, so as not to take the defaults on
	// a shared test machine.
	owner := startMecha(t, "--app-id", "subber", "--app-port", strconv.Itoa(subPort), "--data-dir", data, "--broker-port", "0", "--resources-path", res)
	if _, err := os.Stat(filepath.Join(data, "owner.json")); err != nil {
		t.Fatalf("the owner recorded no owner.json: %v", err)
	}
	calleePort := startHTTPApp(t)
	guest := startGuest(t, data, "pubber", calleePort, "--resources-path", res)
	third := startGuest(t, data, "third", 0)

	for _, g := range []*mecha{guest, third} {
		if g.httpPort == owner.httpPort || g.httpPort == 3500 || g.brokerPort != 0 {
			t.Fatalf("guest ports: http %d broker %d (owner http %d): want a picked HTTP port and no broker of its own", g.httpPort, g.brokerPort, owner.httpPort)
		}
		if !strings.Contains(g.proc.output(), "another mecha run owns the data dir") {
			t.Fatalf("the guest does not say whose data dir it shares:\n%s", g.proc.output())
		}
	}
	// Events published through either guest reach the owner's app,
	// through the owner's broker.
	for i, g := range []*mecha{guest, third} {
		r := do(t, "POST", g.url("/v1.0/publish/pubsub/orders"), fmt.Sprintf(`{"from":%d}`, i), "Content-Type", "application/json")
		expectStatus(t, r, 204)
	}
	got := waitReceived(t, subPort, "orders", 2)
	if !strings.Contains(string(got[0].Body)+string(got[1].Body), `"from":1`) {
		t.Fatalf("events: %s / %s", got[0].Body, got[1].Body)
	}
	// The runtimes found each other by gossip: invocation by app-id in
	// both directions.
	eventually(t, 20*time.Second, func() error {
		if r := do(t, "POST", third.url("/v1.0/invoke/subber/method/echo/x"), "hi"); r.Status != 200 {
			return fmt.Errorf("third → subber: %d %s", r.Status, r.Body)
		}
		if r := do(t, "POST", owner.url("/v1.0/invoke/pubber/method/echo/y"), "hi"); r.Status != 200 {
			return fmt.Errorf("owner → pubber: %d %s", r.Status, r.Body)
		}
		return nil
	})
	// Crux is the owner's: state saved through a guest is read through
	// the owner, with its ETag; the guest keeps no Crux of its own.
	expectStatus(t, do(t, "POST", guest.url("/v1.0/state/shared"), `[{"key":"{u1}session","value":{"gw":"g1"}},{"key":"{u1}device","value":"ios","metadata":{"ttlInSeconds":"3600"}}]`, "Content-Type", "application/json"), 204)
	viaGuest := do(t, "GET", guest.url("/v1.0/state/shared/{u1}session"), nil)
	viaOwner := do(t, "GET", owner.url("/v1.0/state/shared/{u1}session"), nil)
	if viaOwner.Status != 200 || string(viaOwner.Body) != `{"gw":"g1"}` || viaOwner.Header.Get("ETag") == "" || viaOwner.Header.Get("ETag") != viaGuest.Header.Get("ETag") {
		t.Fatalf("read through the owner: %d %s etag %q (through the guest %q)", viaOwner.Status, viaOwner.Body, viaOwner.Header.Get("ETag"), viaGuest.Header.Get("ETag"))
	}
	// A transaction through the guest, its keys in one slot by their hash
	// tag. With one data member (the owner) a transaction may also span
	// slots: they all live there.
	expectStatus(t, do(t, "POST", guest.url("/v1.0/state/shared/transaction"), `{"operations":[{"operation":"upsert","request":{"key":"{u1}session","value":{"gw":"g2"}}},{"operation":"delete","request":{"key":"{u1}device"}}]}`, "Content-Type", "application/json"), 204)
	if r := do(t, "GET", owner.url("/v1.0/state/shared/{u1}session"), nil); string(r.Body) != `{"gw":"g2"}` {
		t.Fatalf("after the transaction: %s", r.Body)
	}
	if r := do(t, "GET", owner.url("/v1.0/state/shared/{u1}device"), nil); r.Status != 204 {
		t.Fatalf("the transaction's delete: %d %s", r.Status, r.Body)
	}
	expectStatus(t, do(t, "POST", guest.url("/v1.0/state/shared/transaction"), `{"operations":[{"operation":"upsert","request":{"key":"a","value":1}},{"operation":"upsert","request":{"key":"b","value":2}}]}`, "Content-Type", "application/json"), 204)
	for k, want := range map[string]string{"a": "1", "b": "2"} {
		if r := do(t, "GET", owner.url("/v1.0/state/shared/"+k), nil); string(r.Body) != want {
			t.Fatalf("cross-slot transaction, key %s: %d %s", k, r.Status, r.Body)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "guests", "pubber", "crux")); !os.IsNotExist(err) {
		t.Fatalf("the guest opened a Crux of its own: %v", err)
	}
	// When the owner stops, a runtime started later owns the data dir.
	owner.proc.stop()
	guest.proc.stop()
	third.proc.stop()
	next := startMecha(t, "--app-id", "next", "--data-dir", data, "--broker-port", "0")
	if strings.Contains(next.proc.output(), "another mecha run owns") || next.brokerPort == 0 {
		t.Fatalf("after the owner left, the next runtime is a guest:\n%s", next.proc.output())
	}
}

// TestAppPortNothingListens: with --app-port and no app, mecha says what
// it waits for within seconds, and connects once the app listens.
// (Reproduced: it waited silently forever.)
func TestAppPortNothingListens(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	m := startMechaNoWait(t, "--app-id", "late", "--app-port", strconv.Itoa(port))
	m.proc.waitLine(regexp.MustCompile(`waiting for the app: nothing takes connections at its port yet.*addr=127.0.0.1:`+strconv.Itoa(port)), 15*time.Second)
	app := start(t, bins.httpapp, "-port", strconv.Itoa(port))
	app.waitLine(listeningRE, 10*time.Second)
	m.proc.waitLine(regexp.MustCompile(`the app listens now`), 15*time.Second)
	m.waitHealthy(t)
}
