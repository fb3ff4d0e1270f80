package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mecha/internal/poll"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// metric returns the value of the broker's metric name (with the label
// values given, in order), failing the test when there is none.
func metric(t testing.TB, b *Broker, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(b.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i, lp := range m.GetLabel() {
				if i >= len(labels) || lp.GetValue() != labels[i] {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

func TestListenerConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"zeros take the defaults", func(c *Config) { c.MaxConnections, c.IdleTimeout, c.RequestReadTimeout = 0, 0, 0 }, true},
		{"negative max connections", func(c *Config) { c.MaxConnections = -1 }, false},
		{"negative idle timeout", func(c *Config) { c.IdleTimeout = -time.Second }, false},
		{"negative request read timeout", func(c *Config) { c.RequestReadTimeout = -time.Second }, false},
	} {
		cfg := DefaultConfig()
		cfg.DataDir = t.TempDir()
		tc.mutate(&cfg)
		if err := cfg.validate(); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
		if tc.ok && (cfg.MaxConnections != defaultMaxConnections || cfg.IdleTimeout != defaultIdleTimeout || cfg.RequestReadTimeout != defaultRequestReadTimeout) {
			t.Errorf("%s: %d %s %s, want the defaults", tc.name, cfg.MaxConnections, cfg.IdleTimeout, cfg.RequestReadTimeout)
		}
	}
}

// At MaxConnections, a new connection is closed as soon as it is
// accepted, and counted; once a served one ends, new clients are served
// again. The gauge follows the connections.
func TestConnectionCap(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.MaxConnections = 3 })
	var served []*rawConn
	for i := 0; i < 3; i++ {
		c := dialRaw(t, b.Addr())
		c.roundTrip(kmsg.NewPtrApiVersionsRequest())
		served = append(served, c)
	}
	if n := metric(t, b, "mecha_broker_connections"); n != 3 {
		t.Fatalf("connections gauge %v, want 3", n)
	}
	if n := metric(t, b, "mecha_broker_max_connections"); n != 3 {
		t.Fatalf("max connections gauge %v, want 3", n)
	}
	for i := 1; i <= 2; i++ {
		over := dialRaw(t, b.Addr())
		// Closed without reading anything: no request needs to be sent.
		over.expectClosed("a connection past the cap")
		if n := metric(t, b, "mecha_broker_connections_refused_total"); n != float64(i) {
			t.Fatalf("refused %v, want %d", n, i)
		}
	}
	// The served connections go on being served.
	served[0].roundTrip(kmsg.NewPtrApiVersionsRequest())
	served[1].nc.Close()
	poll.Until(t, waitLong, "the closed connection to leave the count", func() bool { return metric(t, b, "mecha_broker_connections") == 2 })
	metadataWorks(t, b.Addr())
}

// A connection with nothing in progress that sends nothing for
// IdleTimeout is closed; a request in progress keeps it open however long
// it waits.
func TestIdleConnectionsAreClosed(t *testing.T) {
	const idle = 300 * time.Millisecond
	b := startBroker(t, func(c *Config) { c.IdleTimeout = idle })
	createTopic(t, newAdmin(t, b.Addr()), "quiet", 1, nil)
	poll.Until(t, waitLong, "the admin's connections to time out", func() bool { return b.connCount() == 0 })
	for _, tc := range []struct {
		name string
		run  func(c *rawConn)
	}{
		{"never sends anything", func(c *rawConn) {}},
		{"idle after an answer", func(c *rawConn) { c.roundTrip(kmsg.NewPtrApiVersionsRequest()) }},
		{"a fetch waiting 5 idle timeouts is answered, then the connection idles", func(c *rawConn) {
			req := kmsg.NewPtrFetchRequest()
			req.SetVersion(11)
			req.MaxWaitMillis, req.MinBytes, req.MaxBytes = int32(5*idle/time.Millisecond), 1, 1<<20
			ft := kmsg.NewFetchRequestTopic()
			ft.Topic = "quiet"
			fp := kmsg.NewFetchRequestTopicPartition()
			fp.PartitionMaxBytes = 1 << 20
			ft.Partitions = append(ft.Partitions, fp)
			req.Topics = append(req.Topics, ft)
			start := time.Now()
			resp := c.roundTrip(req).(*kmsg.FetchResponse)
			if len(resp.Topics) != 1 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
				t.Fatalf("fetch answer %+v", resp)
			}
			if waited := time.Since(start); waited < 4*idle {
				t.Fatalf("the fetch was answered after %s, before its max wait", waited)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, b, "mecha_broker_connection_timeouts_total", "idle")
			c := dialRaw(t, b.Addr())
			tc.run(c)
			c.expectClosed("an idle connection")
			poll.Until(t, waitLong, "the idle close to be counted", func() bool {
				return metric(t, b, "mecha_broker_connection_timeouts_total", "idle") == before+1
			})
		})
	}
	metadataWorks(t, b.Addr())
}

// A request that does not arrive whole within RequestReadTimeout of its
// first byte closes the connection, however short the idle timeout is
// not.
func TestUnfinishedRequestsTimeOut(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.RequestReadTimeout = 300 * time.Millisecond })
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(9)
	whole := kmsg.NewRequestFormatter().AppendRequest(nil, req, 1)
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"part of the size", whole[:2]},
		{"the size alone", whole[:4]},
		{"the size and part of the header", whole[:7]},
		{"all but the last byte", whole[:len(whole)-1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, b, "mecha_broker_connection_timeouts_total", "request_read")
			c := dialRaw(t, b.Addr())
			c.write(tc.bytes)
			c.expectClosed(tc.name)
			if n := metric(t, b, "mecha_broker_connection_timeouts_total", "request_read"); n != before+1 {
				t.Fatalf("request_read timeouts %v, want %v", n, before+1)
			}
		})
	}
	metadataWorks(t, b.Addr())
}

// The descriptor-limit test runs the broker in a child process (this test
// binary again) whose RLIMIT_NOFILE leaves room for only a few
// connections.
const (
	fdChildEnv      = "MECHA_BROKER_FDLIMIT_CHILD"
	fdChildDirEnv   = "MECHA_BROKER_FDLIMIT_DIR"
	fdChildIdleEnv  = "MECHA_BROKER_FDLIMIT_IDLE"
	fdChildRoom     = 8 // descriptors left for connections
	fdChildAddrLine = "BROKER_ADDR "
)

// fdLimitChild starts a broker, lowers the descriptor limit to what it
// holds plus fdChildRoom, prints its address and serves until stdin
// closes.
func fdLimitChild(t *testing.T) {
	idle, err := time.ParseDuration(os.Getenv(fdChildIdleEnv))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.IdleTimeout = "127.0.0.1:0", os.Getenv(fdChildDirEnv), idle
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	b, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = uint64(len(fds) + fdChildRoom)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s%s\n", fdChildAddrLine, b.Addr())
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
}

// lockedBuffer collects a child's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// At the descriptor limit the listener waits and retries instead of
// stopping or spinning, and logs that at a rate. Once the connections
// that hold the descriptors end, by their clients closing them or by the
// idle timeout, waiting clients are served again.
func TestListenerAtTheDescriptorLimit(t *testing.T) {
	if os.Getenv(fdChildEnv) != "" {
		fdLimitChild(t)
		return
	}
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs /proc/self/fd")
	}
	for _, tc := range []struct {
		name string
		idle time.Duration
		// closeIdle closes the client side of the idle connections;
		// otherwise the broker's idle timeout ends them.
		closeIdle bool
	}{
		{"idle connections time out", 500 * time.Millisecond, false},
		{"idle connections are closed by their clients", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestListenerAtTheDescriptorLimit$", "-test.count=1")
			cmd.Env = append(os.Environ(), fdChildEnv+"=1", fdChildDirEnv+"="+filepath.Join(t.TempDir(), "data"), fdChildIdleEnv+"="+tc.idle.String())
			stderr := &lockedBuffer{}
			cmd.Stderr = stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				stdin.Close()
				if err := cmd.Wait(); err != nil {
					t.Errorf("broker process: %v\n%s", err, stderr.b.String())
				}
			})
			sc := bufio.NewScanner(stdout)
			var addr string
			for addr == "" && sc.Scan() {
				addr, _ = strings.CutPrefix(sc.Text(), fdChildAddrLine)
			}
			if addr == "" {
				t.Fatalf("the broker process printed no address: %v\n%s", sc.Err(), stderr.b.String())
			}
			go func() { // drain what the test framework prints at the end
				for sc.Scan() {
				}
			}()

			// Twice the room in idle connections: the kernel completes
			// the handshakes, the broker accepts until its descriptors run
			// out and the rest wait in the listen queue.
			var idle []net.Conn
			for i := 0; i < 2*fdChildRoom; i++ {
				nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				idle = append(idle, nc)
				t.Cleanup(func() { nc.Close() })
			}
			start := time.Now()
			poll.Until(t, waitLong, "the broker to run out of descriptors", func() bool {
				return stderr.count("too many open files") > 0
			})
			// A new client waits in the queue behind the idle ones.
			client := dialRaw(t, addr)
			frame, corr := client.frame(kmsg.NewPtrApiVersionsRequest())
			client.write(frame)
			if tc.closeIdle {
				for _, nc := range idle {
					nc.Close()
				}
			}
			client.readResponse(kmsg.NewPtrApiVersionsRequest(), corr)
			metadataWorks(t, addr)
			// Retried with a growing wait and rate-limited: a few lines,
			// not one per retry.
			lines := stderr.count(`"msg":"accept failed; retrying"`)
			if max := logBurst + int(time.Since(start)/logInterval) + 1; lines == 0 || lines > max {
				t.Errorf("%d accept failure lines in %s, want 1 to %d", lines, time.Since(start), max)
			}
		})
	}
}
