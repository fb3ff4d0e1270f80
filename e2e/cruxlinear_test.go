package e2e

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
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
// three-server Crux cluster, read, write and delete six keys at once
// while one member is killed with -9 and comes back on its data dir.
// porcupine checks that every key's history is linearizable. A write or
// delete whose answer the client did not get (the member died under it)
// may or may not have happened: it stays open to the end of the history.
func TestCruxLinearizable(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	args := func(i int, extra ...string) []string {
		return append([]string{"--app-id", "lin", "--bootstrap-expect", "3", "--cluster-id", "e2e-lin", "--data-dir", dirs[i]}, extra...)
	}
	a := startMecha(t, args(0)...)
	join := fmt.Sprintf("127.0.0.1:%d", a.gossipPort)
	rts := []*mecha{a, startMecha(t, args(1, "--join", join)...), startMecha(t, args(2, "--join", join)...)}
	for i, m := range rts {
		eventually(t, 30*time.Second, func() error {
			if r := do(t, "POST", m.url("/v1.0/state/statestore"), fmt.Sprintf(`[{"key":"probe-%d","value":1}]`, i), "Content-Type", "application/json"); r.Status != 204 {
				return fmt.Errorf("runtime %d: %d %s", i, r.Status, r.Body)
			}
			return nil
		})
	}
	var mu sync.Mutex // guards rts[2], which the restart replaces
	base := func(i int) string {
		mu.Lock()
		defer mu.Unlock()
		return rts[i].url("/v1.0/state/statestore")
	}
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	hc := &http.Client{Timeout: 3 * time.Second}
	t0 := time.Now()
	now := func() int64 { return time.Since(t0).Nanoseconds() }
	const open = math.MaxInt64 / 2 // the return of an operation whose outcome is unknown
	var hmu sync.Mutex
	var history []porcupine.Operation
	var done, unknown, failedReads int
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
					req, _ = http.NewRequest("GET", base(rt)+"/"+in.key, nil)
				case p < 9:
					in.op, in.value = "put", fmt.Sprintf("c%d-%d", c, n)
					req, _ = http.NewRequest("POST", base(rt), bytes.NewBufferString(fmt.Sprintf(`[{"key":%q,"value":%q}]`, in.key, in.value)))
					req.Header.Set("Content-Type", "application/json")
				default:
					in.op = "delete"
					req, _ = http.NewRequest("DELETE", base(rt)+"/"+in.key, nil)
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
				ret := now()
				op := porcupine.Operation{ClientId: c, Input: in, Call: call, Return: ret, Output: regOutput{}}
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
					failedReads++ // says nothing
				case status == 204:
					history = append(history, op)
					done++
				default:
					// The answer is lost: applied or not, nobody knows.
					op.Return = open
					history = append(history, op)
					unknown++
				}
				hmu.Unlock()
				if status != 200 && status != 204 {
					time.Sleep(20 * time.Millisecond) // not a spin while a member is down
				}
			}
		}()
	}
	time.Sleep(3 * time.Second)
	_ = rts[2].cmd.Process.Kill()
	<-rts[2].done
	time.Sleep(2 * time.Second)
	c := startMecha(t, args(2, "--join", join)...)
	mu.Lock()
	rts[2] = c
	mu.Unlock()
	eventually(t, 30*time.Second, func() error {
		if r := do(t, "GET", c.url("/v1.0/state/statestore/probe-0"), nil); r.Status != 200 {
			return fmt.Errorf("the returned member: %d %s", r.Status, r.Body)
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d operations answered, %d writes with an unknown outcome, %d failed reads", done, unknown, failedReads)
	if done < 500 || unknown+failedReads == 0 {
		t.Fatalf("%d answered, %d unknown, %d failed reads: the history does not exercise the kill", done, unknown, failedReads)
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel, history, 60*time.Second)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := t.TempDir() + "/history.html"
		_ = porcupine.VisualizePath(registerModel, info, path)
		t.Fatalf("the history is not linearizable (see %s)", path)
	default:
		t.Fatalf("porcupine could not decide within 60 s (%v)", res)
	}
}
