package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mecha/internal/poll"
)

// testConfig is a runtime on free loopback ports with the broker off.
func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.AppID = "a"
	cfg.HTTPPort, cfg.GRPCPort, cfg.MetricsPort, cfg.InternalPort, cfg.NoBroker = 0, 0, 0, 0, true
	cfg.Membership.GossipPort, cfg.Membership.WANPort = 0, 0
	cfg.Membership.BindAddress = "127.0.0.1"
	cfg.DataDir = t.TempDir()
	cfg.ShutdownGracePeriod = 3 * time.Second
	cfg.APIToken = ""
	return cfg
}

// listens records the listeners Run opens, by name, in order.
type listens struct {
	mu    sync.Mutex
	names []string
	lis   []net.Listener
	// fail, when set, makes the listener of that name fail.
	fail string
	// opened is told each listener's name as it opens.
	opened chan string
}

func (l *listens) listen(name, addr string) (net.Listener, error) {
	if name == l.fail {
		return nil, errors.New("injected failure")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.names = append(l.names, name)
	l.lis = append(l.lis, ln)
	l.mu.Unlock()
	if l.opened != nil {
		select {
		case l.opened <- name:
		default:
		}
	}
	return ln, nil
}

func (l *listens) addr(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, n := range l.names {
		if n == name {
			return l.lis[i].Addr().String()
		}
	}
	return ""
}

// allClosed reports whether nothing accepts on any recorded port.
func (l *listens) allClosed() (bool, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, ln := range l.lis {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err == nil {
			c.Close()
			return false, l.names[i]
		}
	}
	return true, ""
}

// fakeChild is an app that exits when told to, or on SIGTERM.
type fakeChild struct {
	env     []string
	exit    chan error
	signals chan syscall.Signal
	once    sync.Once
}

func newFakeChild(env []string) *fakeChild {
	return &fakeChild{env: env, exit: make(chan error, 1), signals: make(chan syscall.Signal, 8)}
}

func (c *fakeChild) Signal(sig syscall.Signal) error {
	c.signals <- sig
	if sig == syscall.SIGTERM || sig == syscall.SIGKILL {
		c.stop(nil)
	}
	return nil
}

func (c *fakeChild) stop(err error) { c.once.Do(func() { c.exit <- err }) }
func (c *fakeChild) Wait() error    { return <-c.exit }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// runAsync runs rt and returns a channel with Run's result.
func runAsync(ctx context.Context, rt *Runtime) chan error {
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	return done
}

func wait(t *testing.T, done chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		// What every goroutine was doing, for the hang to be found.
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
		t.Fatalf("Run did not return after %s; goroutines:\n%s", what, b.String())
		return nil
	}
}

// A failed startup stops what it started. Reproduced defect: with an
// extra app (--app) and a child command that does not exist, the extra
// app's servers kept running and Run never returned, so the process
// ignored SIGTERM.
func TestRunFailedChildStopsEverything(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []AppSpec{{ID: "b", Port: 1, Protocol: "http"}}
	cfg.Command = []string{"/nonexistent/app"}
	l := &listens{}
	rt := NewWithHooks(cfg, quiet(), Hooks{Listen: l.listen})
	err := wait(t, runAsync(t.Context(), rt), "the app failed to start")
	if err == nil || !strings.Contains(err.Error(), `starting the app a ("/nonexistent/app")`) {
		t.Fatalf("Run = %v, want the app's start error", err)
	}
	if want := []string{"http a", "grpc a", "http b", "grpc b", "metrics", "internal"}; !slices.Equal(l.names, want) {
		t.Errorf("listeners %v, want %v", l.names, want)
	}
	if ok, name := l.allClosed(); !ok {
		t.Errorf("the %s port still accepts after the failed startup", name)
	}
}

// A port that cannot be opened fails startup with the flag to change,
// and the ports opened before it are closed again.
func TestRunListenFailure(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []AppSpec{{ID: "b", Port: 1, Protocol: "http"}}
	l := &listens{fail: "grpc b"}
	rt := NewWithHooks(cfg, quiet(), Hooks{Listen: l.listen})
	err := wait(t, runAsync(t.Context(), rt), "a port failed")
	if err == nil || !strings.Contains(err.Error(), "--app b: dapr-grpc-port 0: injected failure") {
		t.Fatalf("Run = %v, want the grpc port of app b named", err)
	}
	if ok, name := l.allClosed(); !ok {
		t.Errorf("the %s port still accepts after the failed startup", name)
	}
}

// The app starts once every port listens, learns them from its
// environment, and its exit stops the runtime with its error; a
// shutdown asks the app to stop.
func TestRunChildLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(rt *Runtime, c *fakeChild)
		want error
		sig  bool // the app is sent SIGTERM
	}{
		{"the app exits", func(_ *Runtime, c *fakeChild) { c.stop(errors.New("exit status 3")) }, errors.New("app a: exit status 3"), false},
		{"shutdown API", func(rt *Runtime, _ *fakeChild) { rt.Shutdown() }, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Command = []string{"app"}
			l := &listens{}
			started := make(chan *fakeChild, 1)
			var openAtStart []string
			rt := NewWithHooks(cfg, quiet(), Hooks{Listen: l.listen, StartChild: func(cmd []string, dir string, env []string) (Child, error) {
				l.mu.Lock()
				openAtStart = slices.Clone(l.names)
				l.mu.Unlock()
				c := newFakeChild(env)
				started <- c
				return c, nil
			}})
			done := runAsync(t.Context(), rt)
			var c *fakeChild
			select {
			case c = <-started:
			case err := <-done:
				t.Fatalf("Run returned %v before starting the app", err)
			}
			if len(openAtStart) != 4 {
				t.Errorf("the app started with %v listening, want every port", openAtStart)
			}
			if want := "DAPR_HTTP_PORT=" + portOf(l.addr("http a")); !slices.Contains(c.env, want) {
				t.Errorf("app env %v lacks %s", c.env, want)
			}
			tc.end(rt, c)
			err := wait(t, done, tc.name)
			if fmt.Sprint(err) != fmt.Sprint(tc.want) {
				t.Errorf("Run = %v, want %v", err, tc.want)
			}
			sent := len(c.signals) > 0
			if sent != tc.sig {
				t.Errorf("app signalled: %v, want %v", sent, tc.sig)
			}
			if ok, name := l.allClosed(); !ok {
				t.Errorf("the %s port still accepts after Run returned", name)
			}
		})
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// The apps' table is complete before the internal port serves. A
// reproduced race: the list of extra apps was appended to while the
// internal port read it. Run with -race.
func TestInternalPortDuringStartup(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []AppSpec{{ID: "b", Port: 1, Protocol: "http"}, {ID: "c", Port: 1, Protocol: "http"}}
	l := &listens{opened: make(chan string, 16)}
	rt := NewWithHooks(cfg, quiet(), Hooks{Listen: l.listen})
	ctx, cancel := context.WithCancel(t.Context())
	done := runAsync(ctx, rt)
	for name := range l.opened {
		if name == "internal" {
			break
		}
	}
	addr := l.addr("internal")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
				req.Header.Set("dapr-callee-app-id", "c")
				if resp, err := http.DefaultClient.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	<-rt.Started()
	// Calls keep coming while the apps connect (they never do: port 1).
	poll.Until(t, 5*time.Second, "a call answered", func() bool {
		resp, err := http.Get("http://" + addr + "/x")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	close(stop)
	wg.Wait()
	cancel()
	if err := wait(t, done, "cancel"); err != nil {
		t.Fatal(err)
	}
}
