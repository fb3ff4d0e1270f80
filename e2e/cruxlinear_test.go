package e2e

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"mecha/statestore"
)

// regInput is one operation on a key of the Crux cluster.
type regInput struct {
	op    string // get, put, delete
	key   string
	value string // put
}

// regOutput is what a get read: the value, or none.
type regOutput struct {
	value  string
	exists bool
}

// regState is a key's state in the model: a register that may be empty.
type regState = regOutput

// registerModel is Crux as the clients see it: one register per key.
var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return regState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in := state.(regState), input.(regInput)
		switch in.op {
		case "put":
			return true, regState{value: in.value, exists: true}
		case "delete":
			return true, regState{}
		}
		return output.(regOutput) == s, s
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.op == "get" {
			o := output.(regOutput)
			return fmt.Sprintf("get(%s) -> %q %v", in.key, o.value, o.exists)
		}
		return fmt.Sprintf("%s(%s, %q)", in.op, in.key, in.value)
	},
}

// TestCruxLinearizable: six clients, two through each runtime of a
// three-server Crux cluster, read, write and delete twelve keys at once
// while one member is killed with -9 (its slots fail over to in-sync
// replicas) and comes back on its data dir.
// porcupine checks that every key's history is linearizable.
func TestCruxLinearizable(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	args := func(i int, extra ...string) []string {
		return append([]string{"--app-id", "lin", "--bootstrap-expect", "3", "--cluster-id", "e2e-lin", "--data-dir", dirs[i]}, extra...)
	}
	a := startMecha(t, args(0)...)
	join := fmt.Sprintf("127.0.0.1:%d", a.gossipPort)
	rts := []*mecha{a, startMecha(t, args(1, "--join", join)...), startMecha(t, args(2, "--join", join)...)}
	var mu sync.Mutex // guards rts[2], which the restart replaces
	base := func(i int) string {
		mu.Lock()
		defer mu.Unlock()
		return rts[i].url("/v1.0/state/statestore")
	}
	checkLinearizable(t, base, func() {
		_ = rts[2].cmd.Process.Kill()
		<-rts[2].done
		time.Sleep(2 * time.Second)
		c := startMecha(t, args(2, "--join", join)...)
		mu.Lock()
		rts[2] = c
		mu.Unlock()
	})
}

// TestCruxLinearizablePartition: the same clients while the link to the
// member in its own network namespace is cut for longer than gossip
// takes to declare it dead, then healed: its slots fail over to in-sync
// replicas, it rejoins as a follower, and no history breaks
// linearizability.
func TestCruxLinearizablePartition(t *testing.T) {
	// Beyond loopback, cluster traffic must be authenticated.
	const key = "cGFydGl0aW9uLWtleS0xNg=="
	ns := newNetns(t, "mecha-crux", "10.232.0.1", "10.232.0.2")
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	cluster := func(i int, bind string) []string {
		return []string{"--app-id", "lin", "--bootstrap-expect", "3", "--cluster-id", "e2e-part", "--data-dir", dirs[i],
			"--gossip-bind-address", bind, "--gossip-key", key, "--dapr-listen-addresses", bind}
	}
	a := startMechaNoWait(t, cluster(0, ns.hostIP)...)
	join := fmt.Sprintf("%s:%d", ns.hostIP, a.gossipPort)
	b := startMechaNoWait(t, append(cluster(1, ns.hostIP), "--join", join)...)
	// c runs inside the namespace, reached over the veth pair.
	c := listening(startEnv(t, nil, "ip", append([]string{"netns", "exec", ns.name, bins.mecha}, mechaArgs(t, append(cluster(2, ns.nsIP), "--join", join)...)...)...), 20*time.Second)
	urls := []string{
		fmt.Sprintf("http://%s:%d/v1.0/state/statestore", ns.hostIP, a.httpPort),
		fmt.Sprintf("http://%s:%d/v1.0/state/statestore", ns.hostIP, b.httpPort),
		fmt.Sprintf("http://%s:%d/v1.0/state/statestore", ns.nsIP, c.httpPort),
	}
	checkLinearizable(t, func(i int) string { return urls[i] }, func() {
		ns.cut(t)
		time.Sleep(8 * time.Second)
		ns.heal(t)
	})
}

// checkLinearizable runs six clients, two through each runtime (base(i)
// is runtime i's state store URL), for three seconds, then fault, then
// until every runtime serves every key again and three seconds more, and
// checks the history with porcupine. A write or delete whose answer the
// client did not get may or may not have happened: it stays open to the
// end of the history. One the router refused before it reached a leader
// (no leader in the map, or moved again), or a member refused before it
// logged it (it does not lead the slot yet, or too few replicas are in
// sync), did not happen. Reads that failed say nothing. Every operation
// is strong (consistency=strong): an eventual write the leader
// acknowledged before a follower fetched it is lost when the leader dies,
// and an eventual read may see a write not yet committed, or come from a
// deposed leader that has not heard of its successor.
func checkLinearizable(t *testing.T, base func(int) string, fault func()) {
	t.Helper()
	for i := range 3 {
		eventually(t, 30*time.Second, func() error {
			r := do(t, "POST", base(i), fmt.Sprintf(`[{"key":"probe-%d","value":1}]`, i), "Content-Type", "application/json")
			if r.Status != 204 {
				return fmt.Errorf("runtime %d: %d %s", i, r.Status, r.Body)
			}
			return nil
		})
	}
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10", "k11"}
	hc := &http.Client{Timeout: 3 * time.Second}
	t0 := time.Now()
	now := func() int64 { return time.Since(t0).Nanoseconds() }
	const open = math.MaxInt64 / 2 // the return of an operation whose outcome is unknown
	var hmu sync.Mutex
	var history []porcupine.Operation
	var done, unknown, failedReads, refused int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rt := c % 3
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				in := regInput{key: keys[rand.IntN(len(keys))]}
				var req *http.Request
				switch p := rand.IntN(10); {
				case p < 5:
					in.op = "get"
					req, _ = http.NewRequest("GET", base(rt)+"/"+in.key+"?consistency=strong", nil)
				case p < 9:
					in.op, in.value = "put", fmt.Sprintf("c%d-%d", c, n)
					req, _ = http.NewRequest("POST", base(rt), bytes.NewBufferString(fmt.Sprintf(`[{"key":%q,"value":%q,"options":{"consistency":"strong"}}]`, in.key, in.value)))
					req.Header.Set("Content-Type", "application/json")
				default:
					in.op = "delete"
					req, _ = http.NewRequest("DELETE", base(rt)+"/"+in.key+"?consistency=strong", nil)
				}
				call := now()
				resp, err := hc.Do(req)
				var status int
				var body []byte
				if err == nil {
					body, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				op := porcupine.Operation{ClientId: c, Input: in, Call: call, Return: now(), Output: regOutput{}}
				hmu.Lock()
				switch {
				case in.op == "get" && status == 200:
					var v string
					if _, err := fmt.Sscanf(string(body), "%q", &v); err != nil {
						hmu.Unlock()
						t.Errorf("get %s: body %q", in.key, body)
						return
					}
					op.Output = regOutput{value: v, exists: true}
					history = append(history, op)
					done++
				case in.op == "get" && status == 204:
					history = append(history, op)
					done++
				case in.op == "get":
					failedReads++
				case status == 204:
					history = append(history, op)
					done++
				case status == 503 && (bytes.Contains(body, []byte("it has no leader")) || bytes.Contains(body, []byte("moved again")) ||
					bytes.Contains(body, []byte("does not lead the slot's replicas")) || bytes.Contains(body, []byte("in sync,"))):
					// Refused before it reached a leader: not applied.
					refused++
				default:
					op.Return = open
					history = append(history, op)
					unknown++
				}
				hmu.Unlock()
				// A few hundred operations a second: porcupine's search
				// grows fast with the writes of unknown outcome a key
				// collects, so those come at most five a second a client.
				pause := 5 * time.Millisecond
				if status != 200 && status != 204 {
					pause = time.Second
				}
				time.Sleep(pause)
			}
		}()
	}
	time.Sleep(3 * time.Second)
	fault()
	eventually(t, 45*time.Second, func() error {
		for i := range 3 {
			for _, k := range keys {
				if r := do(t, "GET", base(i)+"/"+k, nil); r.Status != 200 && r.Status != 204 {
					return fmt.Errorf("%s through runtime %d: %d %s", k, i, r.Status, r.Body)
				}
			}
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d operations answered, %d writes refused, %d with an unknown outcome, %d failed reads", done, refused, unknown, failedReads)
	if done < 500 || unknown+failedReads+refused == 0 {
		t.Fatalf("%d answered, %d unknown, %d failed reads: the history does not exercise the fault", done, unknown, failedReads)
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel, history, 60*time.Second)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := t.TempDir() + "/history.html"
		_ = porcupine.VisualizePath(registerModel, info, path)
		// The keys whose own history breaks, in call order, for the
		// failure's reader (the visualization is gone with TempDir).
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(regInput).key
			byKey[k] = append(byKey[k], op)
		}
		for k, ops := range byKey {
			if porcupine.CheckOperations(registerModel, ops) {
				continue
			}
			sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
			var b strings.Builder
			for _, op := range ops {
				ret := fmt.Sprint(time.Duration(op.Return))
				if op.Return == open {
					ret = "unknown"
				}
				fmt.Fprintf(&b, "  client %d %+v -> %+v  %v..%s\n", op.ClientId, op.Input, op.Output, time.Duration(op.Call), ret)
			}
			t.Logf("key %s (slot %d) is not linearizable alone:\n%s", k, statestore.SlotOf(k), b.String())
		}
		t.Fatalf("the history is not linearizable (see %s)", path)
	default:
		t.Fatalf("porcupine could not decide within 60 s (%v)", res)
	}
}

// TestRegisterModel: the model refuses a stale read and a read of a
// deleted key, and accepts a write of unknown outcome either way.
func TestRegisterModel(t *testing.T) {
	op := func(in regInput, out regOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	put := func(v string, call, ret int64) porcupine.Operation {
		return op(regInput{op: "put", key: "k", value: v}, regOutput{}, call, ret)
	}
	get := func(v string, exists bool, call, ret int64) porcupine.Operation {
		return op(regInput{op: "get", key: "k"}, regOutput{value: v, exists: exists}, call, ret)
	}
	del := op(regInput{op: "delete", key: "k"}, regOutput{}, 4, 5)
	for name, tc := range map[string]struct {
		h  []porcupine.Operation
		ok bool
	}{
		"sequential":              {[]porcupine.Operation{put("a", 0, 1), get("a", true, 2, 3)}, true},
		"stale read":              {[]porcupine.Operation{put("a", 0, 1), put("b", 2, 3), get("a", true, 4, 5)}, false},
		"read after delete":       {[]porcupine.Operation{put("a", 0, 1), del, get("a", true, 6, 7)}, false},
		"concurrent":              {[]porcupine.Operation{put("a", 0, 10), get("", false, 1, 2), get("a", true, 3, 4)}, true},
		"unknown write happened":  {[]porcupine.Operation{put("a", 0, 1), put("b", 2, math.MaxInt64/2), get("b", true, 5, 6)}, true},
		"unknown write never did": {[]porcupine.Operation{put("a", 0, 1), put("b", 2, math.MaxInt64/2), get("a", true, 5, 6)}, true},
	} {
		if got := porcupine.CheckOperations(registerModel, tc.h); got != tc.ok {
			t.Errorf("%s: linearizable %v, want %v", name, got, tc.ok)
		}
	}
}
