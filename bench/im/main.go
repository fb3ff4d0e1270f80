// Command im is the reconnect-storm benchmark of the IM example
// (examples/im): it starts -gateways runtimes with a gateway each (the
// first runtime is the Crux server, the others Crux clients, as make
// im-demo does with two) and drives them over WebSocket, as browsers
// would, from worker processes of its own (a process holds at most
// -per-worker connections: descriptors are limited per process):
//
//  1. -conns users log in, spread over the gateways and over source
//     addresses 127.x.y.2;
//  2. the storm: every connection closes at once and logs in again at
//     once, as after a gateway restart;
//  3. a steady message load at -rate messages/s for -duration between
//     random users, each message acknowledged by its recipient.
//
// It reports logins/s and Crux session writes/s of each login phase, the
// delivery latency (send to arrival at the recipient, one host's clock)
// p50, p99 and p999 with the rate reached, and the CPU and RSS of every
// process in each phase.
//
//	go run ./bench/im -conns 10000 -rate 1000 -duration 10s
//	go run ./bench/im -conns 100000 -gateways 6 -rate 1000 -duration 15s
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"mecha/bench/internal/benchnet"
	"mecha/internal/procstat"
)

func main() {
	conns := flag.Int("conns", 10000, "concurrent WebSocket connections (users)")
	gateways := flag.Int("gateways", 2, "runtimes, each with a gateway")
	perWorker := flag.Int("per-worker", 15000, "connections per generator process")
	rate := flag.Int("rate", 1000, "messages per second in the steady phase")
	duration := flag.Duration("duration", 10*time.Second, "length of the steady phase")
	dialers := flag.Int("dialers", 512, "logins in flight at once, over all workers")
	flag.StringVar(&gatewayProfile, "gatewayprofile", "", "write the gateways' CPU profiles here (.0, .1, …)")
	worker := flag.String("worker", "", "internal: run as a worker for users lo:hi over the gateways gw,gw,…")
	flag.Parse()
	var err error
	if *worker != "" {
		err = runWorker(*worker, *dialers)
	} else {
		err = run(*conns, *gateways, *perWorker, *rate, *duration, *dialers)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "im:", err)
		os.Exit(1)
	}
}

// gatewayProfile is where the gateways write their CPU profiles.
var gatewayProfile string

// proc is a process whose CPU and memory are reported.
type proc struct {
	name string
	pid  int
}

func build(dir, out, pkg string) (string, error) {
	p := filepath.Join(dir, out)
	cmd := exec.Command("go", "build", "-o", p, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return p, cmd.Run()
}

// child is the gateway process the runtime started (any thread of the
// runtime may have started it).
func child(pid int, gateway string) int {
	for range 100 {
		files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		var b []byte
		for _, f := range files {
			c, _ := os.ReadFile(f)
			b = append(append(b, c...), ' ')
		}
		for _, f := range strings.Fields(string(b)) {
			c, _ := strconv.Atoi(f)
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); err == nil && exe == gateway {
				return c
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0
}

// maxFiles raises the soft descriptor limit to the hard one and returns
// it: only CAP_SYS_RESOURCE raises the hard limit.
func maxFiles() uint64 {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 1024
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Max
}

func run(conns, gateways, perWorker, rate int, duration time.Duration, dialers int) error {
	limit := maxFiles()
	if per := conns/gateways + 500; uint64(per) > limit || uint64(perWorker+500) > limit {
		return fmt.Errorf("%d connections per gateway and %d per worker need more than the %d descriptors a process may hold here: use more -gateways or a smaller -per-worker", conns/gateways, perWorker, limit)
	}
	dir, err := os.MkdirTemp("", "bench-im")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mecha, err := build(dir, "mecha", "./cmd/mecha")
	if err != nil {
		return err
	}
	gateway, err := build(dir, "gateway", "./examples/im/gateway")
	if err != nil {
		return err
	}
	webs := make([]int, gateways)
	var peers, gws []string
	for i := range webs {
		webs[i] = benchnet.FreePort()
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", webs[i]))
		gws = append(gws, fmt.Sprintf("127.0.0.1:%d", webs[i]))
	}
	start := func(i int, extra ...string) (*exec.Cmd, *lineLog, error) {
		args := append([]string{"run", "--app-id", "gateway", "--app-port", strconv.Itoa(benchnet.FreePort()), "--data-dir", filepath.Join(dir, strconv.Itoa(i)),
			"--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--broker-port", "0", "--internal-port", "0",
			"--gossip-bind-address", "127.0.0.1", "--log-level", "warn"}, extra...)
		cmd := exec.Command(mecha, append(args, "--", gateway)...)
		cmd.Env = append(os.Environ(), fmt.Sprint("WEB_PORT=", webs[i]), "IM_WEB_PEERS="+strings.Join(peers, ","), "IM_SESSION_TTL=10m")
		if gatewayProfile != "" {
			cmd.Env = append(cmd.Env, fmt.Sprintf("IM_PPROF_FILE=%s.%d", gatewayProfile, i))
		}
		l := &lineLog{}
		cmd.Stdout, cmd.Stderr = l, l
		return cmd, l, cmd.Start()
	}
	gossip := strconv.Itoa(benchnet.FreePort())
	var procs []proc
	var logs []*lineLog
	for i := range gateways {
		extra := []string{"--gossip-port", gossip, "--bootstrap-expect", "1"}
		if i > 0 {
			extra = []string{"--gossip-port", "0", "--crux-client", "--join", "127.0.0.1:" + gossip}
		}
		cmd, l, err := start(i, extra...)
		if err != nil {
			return err
		}
		defer stop(cmd)
		logs = append(logs, l)
		procs = append(procs, proc{fmt.Sprintf("mecha %d", i), cmd.Process.Pid}, proc{fmt.Sprintf("gateway %d", i), child(cmd.Process.Pid, gateway)})
	}
	if err := waitReady(gws); err != nil {
		for i, l := range logs {
			err = fmt.Errorf("%w\nruntime %d:\n%s", err, i, l.String())
		}
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	nw := (conns + perWorker - 1) / perWorker
	workers := make([]*workerProc, nw)
	for w := range workers {
		lo, hi := w*conns/nw, (w+1)*conns/nw
		cmd := exec.Command(self, "-worker", fmt.Sprintf("%d:%d:%d:%s", lo, hi, w, strings.Join(gws, ",")), "-dialers", strconv.Itoa(max(1, dialers/nw)))
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		defer func() { in.Close(); _ = cmd.Wait() }()
		workers[w] = &workerProc{in: in, out: bufio.NewScanner(out)}
		workers[w].out.Buffer(make([]byte, 1<<20), 256<<20)
		procs = append(procs, proc{fmt.Sprintf("generator %d", w), cmd.Process.Pid})
	}
	fmt.Printf("IM reconnect storm: %d connections over %d gateways, %d generator processes, %d logins in flight\n\n", conns, gateways, nw, dialers)
	phase := func(name string, f func() (string, error)) error {
		before := sample(procs)
		t0 := time.Now()
		res, err := f()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		report(name, res, time.Since(t0), procs, before, sample(procs))
		return nil
	}
	login := func() (string, error) {
		t0 := time.Now()
		rs, err := all(workers, "login")
		if err != nil {
			return "", err
		}
		d := time.Since(t0)
		for _, r := range rs {
			if r.Failed > 0 {
				return "", fmt.Errorf("%d logins failed (%s)", r.Failed, r.Err)
			}
		}
		lr := float64(conns) / d.Seconds()
		// A login is one transaction (the profile and the session) and
		// an inbox scan.
		return fmt.Sprintf("%d logins in %v: %.0f logins/s, %.0f Crux session writes/s", conns, d.Round(time.Millisecond), lr, lr), nil
	}
	if err := phase("first login", login); err != nil {
		return err
	}
	if err := phase("storm (all close, all log in again)", func() (string, error) {
		if _, err := all(workers, "close"); err != nil {
			return "", err
		}
		return login()
	}); err != nil {
		return err
	}
	return phase(fmt.Sprintf("steady messages (%d/s for %v)", rate, duration), func() (string, error) {
		t0 := time.Now()
		rs, err := all(workers, fmt.Sprintf("send %d %d %d", rate/nw, duration, conns))
		if err != nil {
			return "", err
		}
		elapsed := time.Since(t0)
		var sent, failed int
		for _, r := range rs {
			sent += r.Sent
			failed += r.Failed
		}
		// Let the last ones arrive, then collect.
		var lat []int64
		for range 100 {
			time.Sleep(100 * time.Millisecond)
			rs, err := all(workers, "count")
			if err != nil {
				return "", err
			}
			n := 0
			for _, r := range rs {
				n += r.Arrived
			}
			if n >= sent {
				break
			}
		}
		if rs, err = all(workers, "latencies"); err != nil {
			return "", err
		}
		for _, r := range rs {
			lat = append(lat, r.Latencies...)
		}
		if len(lat) == 0 {
			return "", fmt.Errorf("none of %d messages arrived", sent)
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		q := func(p float64) time.Duration {
			return time.Duration(lat[min(len(lat)-1, int(p*float64(len(lat))))]).Round(10 * time.Microsecond)
		}
		return fmt.Sprintf("%d sent (%.0f/s), %d arrived, %d send failures; delivery p50 %v, p99 %v, p999 %v",
			sent, float64(sent)/elapsed.Seconds(), len(lat), failed, q(0.5), q(0.99), q(0.999)), nil
	})
}

// workerProc is a generator process, driven by lines on its stdin; it
// answers each with one JSON line.
type workerProc struct {
	in  io.WriteCloser
	out *bufio.Scanner
}

type answer struct {
	Failed    int     `json:"failed"`
	Err       string  `json:"err,omitempty"`
	Sent      int     `json:"sent"`
	Arrived   int     `json:"arrived"`
	Latencies []int64 `json:"latencies,omitempty"`
}

// all sends cmd to every worker and waits for every answer.
func all(workers []*workerProc, cmd string) ([]answer, error) {
	for _, w := range workers {
		if _, err := fmt.Fprintln(w.in, cmd); err != nil {
			return nil, err
		}
	}
	out := make([]answer, len(workers))
	for i, w := range workers {
		if !w.out.Scan() {
			return nil, fmt.Errorf("worker %d ended: %v", i, w.out.Err())
		}
		if err := json.Unmarshal(w.out.Bytes(), &out[i]); err != nil {
			return nil, fmt.Errorf("worker %d: %q: %w", i, w.out.Text(), err)
		}
	}
	return out, nil
}

func stop(c *exec.Cmd) {
	_ = c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = c.Process.Kill()
	}
}

// waitReady waits until every gateway serves a login.
func waitReady(gws []string) error {
	deadline := time.Now().Add(60 * time.Second)
	for _, gw := range gws {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c, _, err := websocket.Dial(ctx, "ws://"+gw+"/ws?user=probe", nil)
			if err == nil {
				_, _, err = c.Read(ctx)
				c.CloseNow()
			}
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("gateway %s not ready: %v", gw, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// --- the worker ---

type user struct {
	name string
	id   int
	gw   int
	mu   sync.Mutex
	ws   *websocket.Conn
}

type generator struct {
	gws    []string
	users  []*user
	worker int
	round  int // login rounds so far
	// clients holds one HTTP client per source address.
	clients   sync.Map
	latMu     sync.Mutex
	latencies []int64
}

// runWorker serves the coordinator's commands for users lo:hi.
func runWorker(spec string, dialers int) error {
	maxFiles()
	parts := strings.SplitN(spec, ":", 4)
	if len(parts) != 4 {
		return fmt.Errorf("bad -worker %q", spec)
	}
	lo, _ := strconv.Atoi(parts[0])
	hi, _ := strconv.Atoi(parts[1])
	w, _ := strconv.Atoi(parts[2])
	g := &generator{gws: strings.Split(parts[3], ","), worker: w}
	for i := lo; i < hi; i++ {
		g.users = append(g.users, &user{name: fmt.Sprintf("u%d", i), id: i, gw: i % len(g.gws)})
	}
	if p := os.Getenv("IM_WORKER_PROFILE"); p != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", p, w)); err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	enc := json.NewEncoder(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var a answer
		switch f[0] {
		case "login":
			failed, err := g.loginAll(dialers)
			a.Failed = failed
			if err != nil {
				a.Err = err.Error()
			}
		case "close":
			g.closeAll()
		case "send":
			rate, _ := strconv.Atoi(f[1])
			d, _ := strconv.ParseInt(f[2], 10, 64)
			users, _ := strconv.Atoi(f[3])
			g.latMu.Lock()
			g.latencies = g.latencies[:0]
			g.latMu.Unlock()
			a.Sent, a.Failed = g.messages(rate, time.Duration(d), users)
		case "count":
			g.latMu.Lock()
			a.Arrived = len(g.latencies)
			g.latMu.Unlock()
		case "latencies":
			g.latMu.Lock()
			a.Latencies = append([]int64(nil), g.latencies...)
			g.latMu.Unlock()
		}
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
	return sc.Err()
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT.
const ipBindAddressNoPort = 24

// perSource is how many connections one source address carries.
const perSource = 4000

// source is the address user i dials from in a login round: each round
// uses fresh addresses, so that the ports the last round left in
// TIME_WAIT do not run a source address out of ports.
func source(round, i int) net.IP {
	n := round*64 + i/perSource
	return net.IPv4(127, byte(1+n/250), byte(n%250), 2)
}

// client dials from src.
func (g *generator) client(src net.IP) *http.Client {
	if c, ok := g.clients.Load(src.String()); ok {
		return c.(*http.Client)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		// Pick the port at connect, by the whole address pair, not at
		// bind: a source address then serves far more connections.
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: -1}}
	actual, _ := g.clients.LoadOrStore(src.String(), c)
	return actual.(*http.Client)
}

// loginAll logs every user in, dialers at a time, and waits for every
// welcome.
func (g *generator) loginAll(dialers int) (int, error) {
	g.round++
	var failed atomic.Int64
	var first atomic.Value
	work := make(chan *user)
	var wg sync.WaitGroup
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range work {
				if err := g.login(u); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for _, u := range g.users {
		work <- u
	}
	close(work)
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return int(failed.Load()), err
	}
	return 0, nil
}

func (g *generator) login(u *user) error {
	var err error
	for attempt := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var c *websocket.Conn
		c, _, err = websocket.Dial(ctx, "ws://"+g.gws[u.gw]+"/ws?user="+u.name, &websocket.DialOptions{HTTPClient: g.client(source(g.round*8+g.worker, u.id))})
		if err == nil {
			var b []byte
			_, b, err = c.Read(ctx)
			if err == nil && !strings.Contains(string(b), `"welcome"`) {
				err = fmt.Errorf("first frame %s", b)
			}
			if err != nil {
				c.CloseNow()
			}
		}
		cancel()
		if err == nil {
			u.mu.Lock()
			u.ws = c
			u.mu.Unlock()
			go g.read(c)
			return nil
		}
		time.Sleep(time.Duration(100*(attempt+1)) * time.Millisecond)
	}
	return err
}

// read takes a connection's frames: messages are timed (their text
// carries the send time) and acknowledged.
func (g *generator) read(c *websocket.Conn) {
	ctx := context.Background()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		var f struct{ Type, Msg, Text string }
		if json.Unmarshal(b, &f) != nil || f.Type != "msg" {
			continue
		}
		if ts, _, ok := strings.Cut(f.Text, "-"); ok {
			if sent, err := strconv.ParseInt(strings.TrimPrefix(ts, "t"), 10, 64); err == nil {
				d := time.Now().UnixNano() - sent
				g.latMu.Lock()
				g.latencies = append(g.latencies, d)
				g.latMu.Unlock()
			}
		}
		ack, _ := json.Marshal(map[string]string{"type": "ack", "msg": f.Msg})
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = c.Write(wctx, websocket.MessageText, ack)
		cancel()
	}
}

// closeAll closes every connection at once, as a gateway restart does.
func (g *generator) closeAll() {
	var wg sync.WaitGroup
	for _, u := range g.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.mu.Lock()
			c := u.ws
			u.ws = nil
			u.mu.Unlock()
			if c != nil {
				c.CloseNow()
			}
		}()
	}
	wg.Wait()
}

// messages sends rate messages a second for d from this worker's users
// to random users of all (users in all).
func (g *generator) messages(rate int, d time.Duration, users int) (sent, failed int) {
	var ns, nf atomic.Int64
	tick := time.Second / time.Duration(max(rate, 1))
	const senders = 128
	work := make(chan int, max(rate, 1))
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				from := g.users[rand.IntN(len(g.users))]
				to := fmt.Sprintf("u%d", rand.IntN(users))
				text := fmt.Sprintf("t%d-%d", time.Now().UnixNano(), n)
				f, _ := json.Marshal(map[string]string{"type": "send", "to": to, "text": text})
				from.mu.Lock()
				c := from.ws
				from.mu.Unlock()
				if c == nil {
					nf.Add(1)
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := c.Write(ctx, websocket.MessageText, f)
				cancel()
				if err != nil {
					nf.Add(1)
					continue
				}
				ns.Add(1)
			}
		}()
	}
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		for due := int(time.Since(start) / tick); n < due; n++ {
			work <- n
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(work)
	wg.Wait()
	return int(ns.Load()), int(nf.Load())
}

type usage struct {
	cpu       time.Duration
	rss, peak int64
}

func sample(procs []proc) map[string]usage {
	out := map[string]usage{}
	for _, p := range procs {
		cpu, rss, peak, _ := procstat.Of(p.pid)
		out[p.name] = usage{cpu, rss, peak}
	}
	return out
}

func report(name, res string, wall time.Duration, procs []proc, before, after map[string]usage) {
	fmt.Printf("%s: %s\n", name, res)
	var total, mecha time.Duration
	for _, p := range procs {
		cpu := after[p.name].cpu - before[p.name].cpu
		total += cpu
		if strings.HasPrefix(p.name, "mecha") {
			mecha += cpu
		}
	}
	for _, p := range procs {
		cpu := after[p.name].cpu - before[p.name].cpu
		fmt.Printf("  %-12s CPU %6.2f s (%4.1f%% of the CPU used, %.2f cores)  RSS %5d MB (peak %d MB)\n", p.name, cpu.Seconds(),
			100*cpu.Seconds()/max(total.Seconds(), 1e-9), cpu.Seconds()/wall.Seconds(), after[p.name].rss>>20, after[p.name].peak>>20)
	}
	fmt.Printf("  mecha's share: %.1f%% of the CPU used (%.2f of %.2f cores busy)\n\n", 100*mecha.Seconds()/max(total.Seconds(), 1e-9),
		total.Seconds()/wall.Seconds(), float64(runtime.NumCPU()))
}

// lineLog keeps a process's output.
type lineLog struct {
	mu sync.Mutex
	b  []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.b) < 1<<20 {
		l.b = append(l.b, p...)
	}
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
