// Command im is the reconnect-storm benchmark of the IM example
// (examples/im): it starts two runtimes with a gateway each (runtime A the
// Crux server, runtime B a Crux client, as make im-demo does) and drives
// them over WebSocket, as browsers would:
//
//  1. -conns users log in, spread over both gateways and over source
//     addresses 127.0.0.x (one address has ~28,000 ports per gateway);
//  2. the storm: every connection closes at once and logs in again at
//     once, as after a gateway restart;
//  3. a steady message load at -rate messages/s for -duration between
//     random connected users, each message acknowledged by its
//     recipient.
//
// It reports logins/s and Crux session writes/s of each login phase, the
// delivery latency (send to arrival at the recipient) p50, p99 and p999
// with the rate reached, and the CPU and RSS of every process (mecha and
// gateway A and B, and this generator) in each phase.
//
//	go run ./bench/im -conns 10000 -rate 2000 -duration 10s
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"mecha/internal/procstat"
)

func main() {
	conns := flag.Int("conns", 10000, "concurrent WebSocket connections (users)")
	rate := flag.Int("rate", 2000, "messages per second in the steady phase")
	duration := flag.Duration("duration", 10*time.Second, "length of the steady phase")
	dialers := flag.Int("dialers", 512, "logins in flight at once")
	cpuProfile := flag.String("cpuprofile", "", "write this generator's CPU profile here")
	flag.StringVar(&gatewayProfile, "gatewayprofile", "", "write the gateways' CPU profiles here (.a and .b)")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(*conns, *rate, *duration, *dialers); err != nil {
		pprof.StopCPUProfile()
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

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func build(dir, out, pkg string) (string, error) {
	p := filepath.Join(dir, out)
	cmd := exec.Command("go", "build", "-o", p, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return p, cmd.Run()
}

// child is the gateway process the runtime started: the runtime's child
// other than its reaper.
func child(pid int, gateway string) int {
	for range 100 {
		// Any thread of the runtime may have started it.
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

func run(conns, rate int, duration time.Duration, dialers int) error {
	// Room for every connection's two ends: the hard limit, which only
	// CAP_SYS_RESOURCE raises.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if want := uint64(conns) + 1000; lim.Max < want {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err != nil {
			return fmt.Errorf("%d connections need %d descriptors in this process and in the gateways, and the hard limit is %d (raising it needs CAP_SYS_RESOURCE): %w", conns, want, lim.Max, err)
		}
	} else {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
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
	webA, webB := freePort(), freePort()
	peers := fmt.Sprintf("http://127.0.0.1:%d,http://127.0.0.1:%d", webA, webB)
	start := func(name string, web int, extra ...string) (*exec.Cmd, *lineLog, error) {
		args := append([]string{"run", "--app-id", "gateway", "--app-port", strconv.Itoa(freePort()), "--data-dir", filepath.Join(dir, name),
			"--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--broker-port", "0", "--internal-port", "0",
			"--gossip-port", "0", "--gossip-bind-address", "127.0.0.1", "--log-level", "warn"}, extra...)
		cmd := exec.Command(mecha, append(args, "--", gateway)...)
		cmd.Env = append(os.Environ(), fmt.Sprint("WEB_PORT=", web), "IM_WEB_PEERS="+peers, "IM_SESSION_TTL=10m")
		if gatewayProfile != "" {
			cmd.Env = append(cmd.Env, "IM_PPROF_FILE="+gatewayProfile+"."+name)
		}
		l := &lineLog{}
		cmd.Stdout, cmd.Stderr = l, l
		return cmd, l, cmd.Start()
	}
	gossip := strconv.Itoa(freePort())
	a, aLog, err := start("a", webA, "--bootstrap-expect", "1", "--gossip-port", gossip)
	if err != nil {
		return err
	}
	defer stop(a)
	b, bLog, err := start("b", webB, "--crux-client", "--join", "127.0.0.1:"+gossip)
	if err != nil {
		return err
	}
	defer stop(b)
	procs := []proc{{"mecha A", a.Process.Pid}, {"gateway A", child(a.Process.Pid, gateway)}, {"mecha B", b.Process.Pid},
		{"gateway B", child(b.Process.Pid, gateway)}, {"generator", os.Getpid()}}
	gws := []string{fmt.Sprintf("127.0.0.1:%d", webA), fmt.Sprintf("127.0.0.1:%d", webB)}
	if err := waitReady(gws); err != nil {
		return fmt.Errorf("%w\nA:\n%s\nB:\n%s", err, aLog.String(), bLog.String())
	}
	fmt.Printf("IM reconnect storm: %d connections over 2 gateways, %d logins in flight\n\n", conns, dialers)

	g := &generator{gws: gws, users: make([]*user, conns)}
	for i := range g.users {
		g.users[i] = &user{name: fmt.Sprintf("u%d", i), id: i, gw: i % 2}
	}
	phase := func(name string, f func() (string, error)) error {
		before := sample(procs)
		t0 := time.Now()
		res, err := f()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		report(name, res, time.Since(t0), before, sample(procs))
		return nil
	}
	login := func() (string, error) {
		d, failed := g.loginAll(dialers)
		if failed > 0 {
			return "", fmt.Errorf("%d of %d logins failed (the first: %v)", failed, conns, g.firstErr.Load())
		}
		r := float64(conns) / d.Seconds()
		// A login writes the profile and the session and scans the inbox.
		return fmt.Sprintf("%d logins in %v: %.0f logins/s, %.0f Crux session writes/s", conns, d.Round(time.Millisecond), r, r), nil
	}
	if err := phase("first login", login); err != nil {
		return err
	}
	if err := phase("storm (all close, all log in again)", func() (string, error) {
		g.closeAll()
		return login()
	}); err != nil {
		return err
	}
	return phase(fmt.Sprintf("steady messages (%d/s for %v)", rate, duration), func() (string, error) { return g.messages(rate, duration) })
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

// waitReady waits until both gateways serve and a login works on each.
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

type user struct {
	name string
	id   int
	gw   int
	mu   sync.Mutex
	ws   *websocket.Conn
}

type generator struct {
	gws      []string
	users    []*user
	round    int      // login rounds so far
	clients  sync.Map // source address → *http.Client
	firstErr atomic.Value
	// sent holds each message's send time by text, until it arrives.
	sent      sync.Map
	latencies []time.Duration
	latMu     sync.Mutex
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

// client dials from src, so that many source addresses share the load.
func (g *generator) client(src net.IP) *http.Client {
	if c, ok := g.clients.Load(src.String()); ok {
		return c.(*http.Client)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		// Pick the port at connect, by the whole address pair, not at
		// bind: a source address then serves far more connections.
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1) })
		return errors.Join(err, serr)
	}}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: -1}}
	actual, _ := g.clients.LoadOrStore(src.String(), c)
	return actual.(*http.Client)
}

// loginAll logs every user in, dialers at a time, and waits for every
// welcome.
func (g *generator) loginAll(dialers int) (time.Duration, int) {
	g.round++
	start := time.Now()
	var failed atomic.Int64
	work := make(chan *user)
	var wg sync.WaitGroup
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range work {
				if err := g.login(u); err != nil {
					failed.Add(1)
					g.firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for _, u := range g.users {
		work <- u
	}
	close(work)
	wg.Wait()
	return time.Since(start), int(failed.Load())
}

func (g *generator) login(u *user) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var c *websocket.Conn
		c, _, err = websocket.Dial(ctx, "ws://"+g.gws[u.gw]+"/ws?user="+u.name, &websocket.DialOptions{HTTPClient: g.client(source(g.round, u.id))})
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
			go g.read(u, c)
			return nil
		}
		time.Sleep(time.Duration(100*(attempt+1)) * time.Millisecond)
	}
	return err
}

// read takes a connection's frames: messages are timed and acknowledged.
func (g *generator) read(u *user, c *websocket.Conn) {
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
		if t0, ok := g.sent.LoadAndDelete(f.Text); ok {
			d := time.Since(t0.(time.Time))
			g.latMu.Lock()
			g.latencies = append(g.latencies, d)
			g.latMu.Unlock()
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

// messages sends rate messages a second for d between random users and
// reports the delivery latency.
func (g *generator) messages(rate int, d time.Duration) (string, error) {
	g.latMu.Lock()
	g.latencies = g.latencies[:0]
	g.latMu.Unlock()
	var sent, failed atomic.Int64
	tick := time.Second / time.Duration(rate)
	// Senders send in batches every 10 ms, from many goroutines.
	const workers = 256
	work := make(chan int, rate)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				from := g.users[rand.IntN(len(g.users))]
				to := g.users[rand.IntN(len(g.users))]
				text := "m" + strconv.Itoa(n)
				f, _ := json.Marshal(map[string]string{"type": "send", "to": to.name, "text": text})
				from.mu.Lock()
				c := from.ws
				from.mu.Unlock()
				if c == nil {
					failed.Add(1)
					continue
				}
				g.sent.Store(text, time.Now())
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := c.Write(ctx, websocket.MessageText, f)
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				sent.Add(1)
			}
		}()
	}
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		due := int(time.Since(start) / tick)
		for ; n < due; n++ {
			work <- n
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	// Let the last ones arrive.
	for i := 0; i < 100; i++ {
		g.latMu.Lock()
		got := len(g.latencies)
		g.latMu.Unlock()
		if int64(got) >= sent.Load() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.latMu.Lock()
	lat := append([]time.Duration(nil), g.latencies...)
	g.latMu.Unlock()
	if len(lat) == 0 {
		return "", errors.New("no message arrived")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration {
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("%d sent (%.0f/s), %d arrived, %d send failures; delivery p50 %v, p99 %v, p999 %v",
		sent.Load(), float64(sent.Load())/elapsed.Seconds(), len(lat), failed.Load(), q(0.5), q(0.99), q(0.999)), nil
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

var order = []string{"mecha A", "gateway A", "mecha B", "gateway B", "generator"}

func report(name, res string, wall time.Duration, before, after map[string]usage) {
	fmt.Printf("%s: %s\n", name, res)
	var total time.Duration
	for _, p := range order {
		total += after[p].cpu - before[p].cpu
	}
	for _, p := range order {
		cpu := after[p].cpu - before[p].cpu
		fmt.Printf("  %-10s CPU %6.2f s (%4.1f%% of the CPU used, %.2f cores)  RSS %5d MB (peak %d MB)\n", p, cpu.Seconds(),
			100*cpu.Seconds()/max(total.Seconds(), 1e-9), cpu.Seconds()/wall.Seconds(), after[p].rss>>20, after[p].peak>>20)
	}
	fmt.Println()
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
