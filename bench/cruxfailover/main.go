// Command cruxfailover measures a Crux cluster's failover: write
// unavailability after kill -9 of a server, and what an eventual write
// can lose with it.
//
// It starts three servers (--bootstrap-expect 3) and a client runtime
// (--crux-client) of the mecha binary given, runs writers through the
// client runtime (every key's leader is remote), kills one server with
// SIGKILL, and keeps writing. It reports:
//
//   - unavailability: from the kill until every key has taken a write
//     again (the victim led a third of them; the others never stop);
//   - the requests that failed meanwhile, by status;
//   - with -consistency eventual, the writes acknowledged before the kill
//     that the cluster no longer holds (a read of every key after the
//     failover, against the last value acknowledged), which is the
//     replication lag at the moment of the crash.
//
// Run it through bench/cruxfailover.sh, which builds mecha.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"mecha/bench/internal/benchnet"
)

func main() {
	bin := flag.String("mecha", "mecha", "the mecha binary")
	consistency := flag.String("consistency", "strong", "strong or eventual")
	writers := flag.Int("writers", 16, "concurrent writers")
	keys := flag.Int("keys", 256, "keys written, round robin")
	before := flag.Duration("before", 3*time.Second, "load before the kill")
	after := flag.Duration("after", 12*time.Second, "load after the kill")
	flag.StringVar(&logLevel, "log-level", "warn", "the runtimes' log level (their lines are prefixed s0..s2, client)")
	flag.Parse()
	if err := run(*bin, *consistency, *writers, *keys, *before, *after); err != nil {
		fmt.Fprintln(os.Stderr, "cruxfailover:", err)
		os.Exit(1)
	}
}

var logLevel string

// prefixed writes each line of a runtime's log with its name in front.
type prefixed struct {
	name string
	mu   sync.Mutex
	buf  []byte
}

func (w *prefixed) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		fmt.Fprintf(os.Stderr, "%s %s\n", w.name, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

type proc struct {
	cmd  *exec.Cmd
	port int
}

func start(bin, name, dir string, args ...string) (*proc, error) {
	p := &proc{port: benchnet.FreePort()}
	args = append([]string{"run", "--app-id", "failover", "--dapr-http-port", strconv.Itoa(p.port), "--dapr-grpc-port", "0",
		"--metrics-port", "0", "--broker=false", "--internal-port", "0", "--log-level", logLevel, "--data-dir", dir}, args...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, &prefixed{name: name}
	return p, p.cmd.Start()
}

func (p *proc) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", p.port, path) }

type result struct {
	key        int
	value      int
	start, end time.Time
	status     int // 0: no answer
}

func run(bin, consistency string, writers, nkeys int, before, after time.Duration) error {
	work, err := os.MkdirTemp("", "cruxfailover")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	gossip := benchnet.FreePort()
	var procs []*proc
	defer func() {
		for _, p := range procs {
			_ = p.cmd.Process.Kill()
			_, _ = p.cmd.Process.Wait()
		}
	}()
	for i := range 3 {
		args := []string{"--bootstrap-expect", "3", "--cluster-id", "bench-failover"}
		if i == 0 {
			args = append(args, "--gossip-port", strconv.Itoa(gossip))
		} else {
			args = append(args, "--gossip-port", "0", "--join", fmt.Sprintf("127.0.0.1:%d", gossip))
		}
		p, err := start(bin, fmt.Sprintf("s%d", i), filepath.Join(work, fmt.Sprintf("s%d", i)), args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	client, err := start(bin, "client", filepath.Join(work, "client"), "--crux-client", "--gossip-port", "0", "--join", fmt.Sprintf("127.0.0.1:%d", gossip))
	if err != nil {
		return err
	}
	procs = append(procs, client)

	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: writers}}
	set := func(key, value int) int {
		body := fmt.Sprintf(`[{"key":"fo-%d","value":%d,"options":{"consistency":%q}}]`, key, value, consistency)
		resp, err := hc.Post(client.url("/v1.0/state/statestore"), "application/json", bytes.NewBufferString(body))
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Every key written once: the cluster serves its whole key space.
	deadline := time.Now().Add(60 * time.Second)
	for k := 0; k < nkeys; k++ {
		for set(k, 0) != 204 {
			if time.Now().After(deadline) {
				return fmt.Errorf("the cluster did not take key %d within 60 s", k)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	var (
		mu      sync.Mutex
		results []result
		next    int
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				next++
				n := next
				mu.Unlock()
				k := n % nkeys
				r := result{key: k, value: n, start: time.Now()}
				r.status = set(k, n)
				r.end = time.Now()
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(before)
	victimIdx := 1 + int(time.Now().UnixNano()%2) // not the first: it holds the gossip port others joined
	victim := procs[victimIdx]
	killedAt := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_, _ = victim.cmd.Process.Wait()
	time.Sleep(after)
	close(stop)
	wg.Wait()

	// Unavailability: from the kill until each key took a write again.
	firstOK := map[int]time.Time{}
	failed := map[int]int{}
	var okBefore, okAfter int
	lastAcked := map[int]int{} // by key: the value of the last write acknowledged before the kill
	for _, r := range results {
		if r.end.Before(killedAt) {
			if r.status == 204 {
				okBefore++
				if r.value > lastAcked[r.key] {
					lastAcked[r.key] = r.value
				}
			}
			continue
		}
		if r.status != 204 {
			failed[r.status]++
			continue
		}
		okAfter++
		if t, ok := firstOK[r.key]; !ok || r.end.Before(t) {
			firstOK[r.key] = r.end
		}
	}
	var worst time.Duration
	var byKey []time.Duration
	for k := 0; k < nkeys; k++ {
		t, ok := firstOK[k]
		if !ok {
			return fmt.Errorf("key %d took no write in the %v after the kill", k, after)
		}
		worst = max(worst, t.Sub(killedAt))
		byKey = append(byKey, t.Sub(killedAt))
	}
	sort.Slice(byKey, func(i, j int) bool { return byKey[i] < byKey[j] })
	var slow []time.Duration // requests in flight across the kill or after it
	for _, r := range results {
		if !r.end.Before(killedAt) && r.status == 204 {
			slow = append(slow, r.end.Sub(r.start))
		}
	}
	sort.Slice(slow, func(i, j int) bool { return slow[i] < slow[j] })
	fmt.Printf("consistency=%s writers=%d keys=%d\n", consistency, writers, nkeys)
	fmt.Printf("writes acknowledged: %d before the kill, %d after\n", okBefore, okAfter)
	fmt.Printf("unavailability: %.2f s (from the kill until every key took a write again)\n", worst.Seconds())
	fmt.Printf("keys writable again after: p50 %.2f s, p90 %.2f s, p99 %.2f s\n", byKey[len(byKey)/2].Seconds(), byKey[len(byKey)*9/10].Seconds(), byKey[len(byKey)*99/100].Seconds())
	fmt.Printf("victim: s%d, killed at %s\n", victimIdx, killedAt.UTC().Format("15:04:05.000"))
	if len(slow) > 0 {
		fmt.Printf("latency of writes after the kill: p50 %v, p99 %v, max %v\n", slow[len(slow)/2].Round(time.Microsecond), slow[len(slow)*99/100].Round(time.Microsecond), slow[len(slow)-1].Round(time.Millisecond))
	}
	fmt.Printf("failed writes after the kill: %v (status: count; 0 = no answer)\n", failed)

	// What the cluster still holds of the writes acknowledged before
	// the kill: every key read (strongly) against its last value then,
	// unless a later write to it was acknowledged.
	byValue := map[int]result{}
	for _, r := range results {
		byValue[r.value] = r
	}
	lost := 0
	for k, v := range lastAcked {
		resp, err := hc.Get(client.url(fmt.Sprintf("/v1.0/state/statestore/fo-%d?consistency=strong", k)))
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(bufio.NewReader(resp.Body))
		resp.Body.Close()
		got, err := strconv.Atoi(string(bytes.TrimSpace(b)))
		if resp.StatusCode != 200 || err != nil {
			return fmt.Errorf("read of fo-%d: %d %s", k, resp.StatusCode, b)
		}
		// Lost: the key holds an older value than the one acknowledged,
		// written before the kill (a value written after it may be an
		// older write that a writer held across the failover).
		if w, ok := byValue[got]; got < v && (!ok || w.end.Before(killedAt)) {
			lost++
		}
	}
	fmt.Printf("keys whose last write acknowledged before the kill is gone: %d of %d\n", lost, len(lastAcked))
	return nil
}
