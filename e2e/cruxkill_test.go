package e2e

import (
	"bytes"
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
	time.Sleep(6 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d strong writes acknowledged (%d after kill -9), %d failed or unanswered", oks, afterKill, fails)
	if oks < 200 || afterKill < 50 {
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
