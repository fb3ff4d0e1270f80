package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestCruxKillUnderLoad: eight writers save strong writes, each a counter
// on keys of its own, through two runtimes of a three-server Crux cluster
// while the third, which leads a third of the slots, is killed with -9.
// Afterwards every key holds the last value its writer saw acknowledged,
// or a later one whose answer was lost; and a write with an ETag the key
// had before its last acknowledged write is refused (409): the failover
// kept every acknowledged version.
func TestCruxKillUnderLoad(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	args := func(i int, extra ...string) []string {
		return append([]string{"--app-id", "load", "--bootstrap-expect", "3", "--cluster-id", "e2e-kill", "--data-dir", dirs[i]}, extra...)
	}
	a := startMecha(t, args(0)...)
	join := fmt.Sprintf("127.0.0.1:%d", a.gossipPort)
	b := startMecha(t, args(1, "--join", join)...)
	c := startMecha(t, args(2, "--join", join)...)
	for i, m := range []*mecha{a, b, c} {
		eventually(t, 30*time.Second, func() error {
			r := do(t, "POST", m.url("/v1.0/state/statestore"), fmt.Sprintf(`[{"key":"probe-%d","value":1,"options":{"consistency":"strong"}}]`, i), "Content-Type", "application/json")
			if r.Status != 204 {
				return fmt.Errorf("runtime %d: %d %s", i, r.Status, r.Body)
			}
			return nil
		})
	}
	const writers, keys = 8, 16
	type acked struct {
		value    int
		etag     string // the ETag of the acknowledged value
		previous string // the key's ETag before it
		unknown  int    // the highest value written whose answer was lost
	}
	state := make([][keys]acked, writers)
	hc := &http.Client{Timeout: 5 * time.Second}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var oks, fails, afterKill int
	var killedAt time.Time // set under mu
	for w := range writers {
		base := []*mecha{a, b}[w%2].url("/v1.0/state/statestore")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				k := n % keys
				key := fmt.Sprintf("load-%d-%d", w, k)
				body := fmt.Sprintf(`[{"key":%q,"value":%d,"options":{"consistency":"strong"}}]`, key, n)
				resp, err := hc.Post(base, "application/json", bytes.NewBufferString(body))
				ok := err == nil && resp.StatusCode == 204
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if !ok {
					state[w][k].unknown = n
					mu.Lock()
					fails++
					mu.Unlock()
					time.Sleep(50 * time.Millisecond)
					continue
				}
				st := &state[w][k]
				var got []byte
				etag := ""
				if gr, err := hc.Get(base + "/" + key + "?consistency=strong"); err == nil {
					got, _ = io.ReadAll(gr.Body)
					gr.Body.Close()
					if gr.StatusCode == 200 {
						etag = gr.Header.Get("ETag")
					}
				}
				if etag != "" && string(got) == strconv.Itoa(n) {
					st.previous, st.etag = st.etag, etag
				} else {
					st.previous, st.etag = "", "" // read failed or a later write won: no ETag claim
				}
				st.value = n
				mu.Lock()
				oks++
				if !killedAt.IsZero() {
					afterKill++
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(2 * time.Second)
	_ = c.cmd.Process.Kill()
	<-c.done
	killed := time.Now()
	mu.Lock()
	killedAt = killed
	mu.Unlock()
	time.Sleep(8 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d strong writes acknowledged (%d after kill -9), %d failed or unanswered", oks, afterKill, fails)
	if oks < 200 || afterKill < 20 {
		t.Fatalf("%d acknowledged, %d after the kill: the load did not cross it", oks, afterKill)
	}
	for w := range writers {
		for k := range keys {
			st := state[w][k]
			if st.value == 0 {
				continue
			}
			key := fmt.Sprintf("load-%d-%d", w, k)
			var r response
			eventually(t, 15*time.Second, func() error {
				r = do(t, "GET", a.url("/v1.0/state/statestore/"+key+"?consistency=strong"), nil)
				if r.Status != 200 {
					return fmt.Errorf("%s: %d %s", key, r.Status, r.Body)
				}
				return nil
			})
			got, _ := strconv.Atoi(string(r.Body))
			if got != st.value && (got < st.value || got > st.unknown) {
				t.Fatalf("%s holds %d; %d was acknowledged last (and %d the last unanswered write)", key, got, st.value, st.unknown)
			}
			if got == st.value && st.etag != "" && r.Header.Get("ETag") != st.etag {
				t.Fatalf("%s: ETag %s, %s when acknowledged", key, r.Header.Get("ETag"), st.etag)
			}
			if st.previous != "" {
				stale := do(t, "POST", a.url("/v1.0/state/statestore"), fmt.Sprintf(`[{"key":%q,"value":-1,"etag":%q,"options":{"consistency":"strong"}}]`, key, st.previous), "Content-Type", "application/json")
				if stale.Status != 409 {
					t.Fatalf("%s: a write with the stale ETag %s: %d %s, want 409", key, st.previous, stale.Status, stale.Body)
				}
			}
		}
	}
}

// cruxSlots reads `mecha crux status -o json` of m: the slots each member
// leads and holds, and the moves in flight.
func cruxSlots(t *testing.T, m *mecha) (leads, holds map[string]int, moving int) {
	leads, holds, moving, _ = cruxSlotsUnder(t, m)
	return leads, holds, moving
}

// cruxSlotsUnder is cruxSlots and the count of under-replicated slots
// (fewer in sync than replicas).
func cruxSlotsUnder(t *testing.T, m *mecha) (leads, holds map[string]int, moving, under int) {
	t.Helper()
	var st struct {
		Members []struct {
			ID       string `json:"id"`
			Leaders  int    `json:"leaders"`
			Replicas int    `json:"replicas"`
		} `json:"members"`
		Slots struct {
			Moving          int `json:"moving"`
			UnderReplicated int `json:"underReplicated"`
		} `json:"slots"`
	}
	out := cruxStatusCLI(t, m, "-o", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("mecha crux status -o json: %v\n%s", err, out)
	}
	leads, holds = map[string]int{}, map[string]int{}
	for _, mb := range st.Members {
		leads[mb.ID], holds[mb.ID] = mb.Leaders, mb.Replicas
	}
	return leads, holds, st.Slots.Moving, st.Slots.UnderReplicated
}

// TestCruxJoinUnderLoad: a fourth server joins a three-server Crux
// cluster under a strong write load. The control plane moves replicas and
// leaderships to it (each new replica copies its slot, tails it, joins
// the in-sync set and takes the old one's place) until leaders are
// spread within ±10%; no write fails with anything but a retriable 503,
// and every key is still there, read through the new member.
func TestCruxJoinUnderLoad(t *testing.T) {
	args := func(extra ...string) []string {
		return append([]string{"--app-id", "join", "--bootstrap-expect", "3", "--cluster-id", "e2e-join", "--data-dir", t.TempDir()}, extra...)
	}
	a := startMecha(t, args()...)
	join := fmt.Sprintf("127.0.0.1:%d", a.gossipPort)
	b := startMecha(t, args("--join", join)...)
	c := startMecha(t, args("--join", join)...)
	for i, m := range []*mecha{a, b, c} {
		eventually(t, 30*time.Second, func() error {
			r := do(t, "POST", m.url("/v1.0/state/statestore"), fmt.Sprintf(`[{"key":"probe-%d","value":1}]`, i), "Content-Type", "application/json")
			if r.Status != 204 {
				return fmt.Errorf("runtime %d: %d %s", i, r.Status, r.Body)
			}
			return nil
		})
	}
	const n = 300
	for i := range n {
		expectStatus(t, do(t, "POST", a.url("/v1.0/state/statestore"), fmt.Sprintf(`[{"key":"user-%d","value":%d,"options":{"consistency":"strong"}}]`, i, i), "Content-Type", "application/json"), 204)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var oks, retriable int
	var bad []string
	for w := range 4 {
		base := []*mecha{a, b}[w%2].url("/v1.0/state/statestore")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := w; ; j += 4 {
				select {
				case <-stop:
					return
				default:
				}
				i := j % n
				resp, err := hc.Post(base, "application/json", bytes.NewBufferString(fmt.Sprintf(`[{"key":"user-%d","value":%d,"options":{"consistency":"strong"}}]`, i, i)))
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				switch resp.StatusCode {
				case 204:
					oks++
				case 503:
					retriable++
				default:
					bad = append(bad, fmt.Sprintf("%d %s", resp.StatusCode, body))
				}
				mu.Unlock()
			}
		}()
	}
	d := startMecha(t, args("--join", join)...)
	joined := time.Now()
	eventually(t, 120*time.Second, func() error {
		leads, holds, moving := cruxSlots(t, a)
		if len(leads) != 4 || moving > 0 {
			return fmt.Errorf("members leading %v, holding %v, %d moves in flight:\n%s", leads, holds, moving, grepLines(cruxStatusCLI(t, a), "move"))
		}
		for id, l := range leads {
			if l < 230 || l > 282 {
				return fmt.Errorf("%s leads %d slots (holds %d): %v", id, l, holds[id], leads)
			}
		}
		return nil
	})
	t.Logf("the slots balanced over four members %v after the fourth started", time.Since(joined).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	t.Logf("during the moves: %d writes acknowledged, %d retriable 503s", oks, retriable)
	if len(bad) > 0 {
		t.Fatalf("%d writes failed otherwise, the first: %s", len(bad), bad[0])
	}
	if oks == 0 {
		t.Fatal("no write was acknowledged during the moves")
	}
	for i := range n {
		r := do(t, "GET", d.url(fmt.Sprintf("/v1.0/state/statestore/user-%d?consistency=strong", i)), nil)
		if r.Status != 200 || string(r.Body) != strconv.Itoa(i) {
			t.Fatalf("user-%d through the new member: %d %s", i, r.Status, r.Body)
		}
	}
}

// TestCruxRollingRestart: every server of a three-server Crux cluster is
// stopped with SIGTERM and started again on its data dir, one after the
// other, under a strong write and read load through a client runtime. A
// stopping server hands its leaderships to in-sync replicas first (a
// drain), and takes them back when it returns: nothing acknowledged is
// lost, and the load sees at most retriable 503s, counted here.
func TestCruxRollingRestart(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	args := func(i int, extra ...string) []string {
		return append([]string{"--app-id", "roll", "--bootstrap-expect", "3", "--cluster-id", "e2e-roll", "--data-dir", dirs[i]}, extra...)
	}
	servers := []*mecha{startMecha(t, args(0)...)}
	join := fmt.Sprintf("127.0.0.1:%d", servers[0].gossipPort)
	servers = append(servers, startMecha(t, args(1, "--join", join)...), startMecha(t, args(2, "--join", join)...))
	client := startMecha(t, "--app-id", "roll", "--crux-client", "--cluster-id", "e2e-roll", "--join", join, "--data-dir", t.TempDir())
	base := client.url("/v1.0/state/statestore")
	eventually(t, 30*time.Second, func() error {
		for i := range 30 {
			r := do(t, "POST", base, fmt.Sprintf(`[{"key":"probe-%d","value":1,"options":{"consistency":"strong"}}]`, i), "Content-Type", "application/json")
			if r.Status != 204 {
				return fmt.Errorf("probe-%d: %d %s", i, r.Status, r.Body)
			}
		}
		return nil
	})
	const n = 200
	hc := &http.Client{Timeout: 10 * time.Second}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	last := map[int]int{} // key → last acknowledged value
	var oks, retriable int
	var bad, samples []string
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := 1; ; v++ {
				select {
				case <-stop:
					return
				default:
				}
				k := (v*4 + w) % n
				resp, err := hc.Post(base, "application/json", bytes.NewBufferString(fmt.Sprintf(`[{"key":"roll-%d","value":%d,"options":{"consistency":"strong"}}]`, k, v)))
				status := 0
				var body []byte
				if err == nil {
					body, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				mu.Lock()
				switch status {
				case 204:
					oks++
					last[k] = v
				case 503:
					retriable++
					if len(samples) < 3 {
						samples = append(samples, string(body))
					}
				default:
					bad = append(bad, fmt.Sprintf("roll-%d: %d %s %v", k, status, body, err))
				}
				mu.Unlock()
				if status != 204 {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	for i := range servers {
		time.Sleep(time.Second)
		servers[i].proc.stop()
		servers[i] = startMecha(t, args(i, "--join", fmt.Sprintf("127.0.0.1:%d", servers[(i+1)%3].gossipPort))...)
		// It takes its leaderships back once it is in sync again; the
		// next one stops once no slot is under-replicated, as a Kafka
		// operator waits for no under-replicated partition.
		eventually(t, 60*time.Second, func() error {
			leads, _, _, under := cruxSlotsUnder(t, client)
			for id, l := range leads {
				if l < 300 {
					return fmt.Errorf("after restarting server %d: %s leads %d slots: %v\n%s", i, id, l, leads, cruxStatusCLI(t, client))
				}
			}
			if under > 0 {
				return fmt.Errorf("after restarting server %d: %d slots under-replicated", i, under)
			}
			return nil
		})
	}
	close(stop)
	wg.Wait()
	t.Logf("rolling restart: %d strong writes acknowledged, %d retriable 503s, such as %q", oks, retriable, samples)
	if len(bad) > 0 {
		t.Fatalf("%d writes failed otherwise, the first: %s", len(bad), bad[0])
	}
	for k, v := range last {
		// A read may meet the last member's move back (a retriable 503).
		eventually(t, 10*time.Second, func() error {
			r := do(t, "GET", fmt.Sprintf("%s/roll-%d?consistency=strong", base, k), nil)
			if r.Status == 503 {
				return fmt.Errorf("roll-%d: %d %s", k, r.Status, r.Body)
			}
			if got, _ := strconv.Atoi(string(r.Body)); r.Status != 200 || got < v {
				t.Fatalf("roll-%d: %d %s, %d was acknowledged", k, r.Status, r.Body, v)
			}
			return nil
		})
	}
}
