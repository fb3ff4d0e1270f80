package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// idleConns opens n TCP connections to addr that send nothing, and
// closes them at the end of the test.
func idleConns(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			break // the backlog is full: enough
		}
		cs = append(cs, c)
	}
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	return cs
}

// metric reads one sample of the runtime's Prometheus metrics.
func metric(t *testing.T, m *mecha, name, label string) float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", m.metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `\{listener="` + regexp.QuoteMeta(label) + `"\} (\S+)$`)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if g := re.FindStringSubmatch(sc.Text()); g != nil {
			v, _ := strconv.ParseFloat(g[1], 64)
			return v
		}
	}
	t.Fatalf("no %s{listener=%q} in the metrics", name, label)
	return 0
}

// Running out of file descriptors: idle connections fill the runtime's
// descriptor table (here 256). Reproduced defect: the HTTP API and the
// internal port then stopped for good, and healthz timed out forever.
// Now a failed accept is retried, silent connections are closed after
// the header timeout, and the runtime serves again by itself.
func TestOutOfDescriptors(t *testing.T) {
	cmd := fmt.Sprintf("ulimit -n 256 && exec %s run --app-id fd --dapr-http-port 0 --dapr-grpc-port 0 --metrics-port 0 --broker=false "+
		"--internal-port 0 --gossip-port 0 --header-timeout 1s --data-dir %s", bins.mecha, t.TempDir())
	p := start(t, "sh", "-c", cmd)
	g := p.waitLine(apiRE, 20*time.Second)
	m := &mecha{proc: p}
	m.httpPort, _ = strconv.Atoi(g[1])
	m.metricsPort, _ = strconv.Atoi(g[3])
	m.internalPort, _ = strconv.Atoi(g[5])
	m.waitHealthy(t)

	for _, port := range []int{m.httpPort, m.internalPort} {
		cs := idleConns(t, fmt.Sprintf("127.0.0.1:%d", port), 400)
		if len(cs) < 300 {
			t.Fatalf("only %d idle connections opened", len(cs))
		}
		// healthz waits behind the idle connections and is served once
		// they time out: within seconds, not never.
		// A new connection: it queues behind the idle ones.
		client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		start := time.Now()
		resp, err := client.Get(m.url("/v1.0/healthz"))
		if err != nil {
			t.Fatalf("healthz with the descriptors full of idle connections to port %d: %v", port, err)
		}
		resp.Body.Close()
		t.Logf("healthz answered %d after %v with %d idle connections to port %d", resp.StatusCode, time.Since(start).Round(time.Millisecond), len(cs), port)
		for _, c := range cs {
			c.Close()
		}
	}
	if n := metric(t, m, "mecha_listener_accept_errors_total", "http fd"); n == 0 {
		t.Error("no failed accept counted on the HTTP API: the descriptor table never filled")
	}
	if n := metric(t, m, "mecha_listener_accept_errors_total", "internal"); n == 0 {
		t.Error("no failed accept counted on the internal port")
	}
	expectStatus(t, do(t, "GET", m.url("/v1.0/healthz"), nil), 204)
	r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/x", m.internalPort), nil, "dapr-callee-app-id", "fd")
	if r.Status == 0 {
		t.Fatal("the internal port does not answer after the descriptors came back")
	}
}

// A client that sends nothing within the header timeout, on a new
// connection or after an answer, has its connection closed without a
// response: an answer on a connection nobody asked on (Go's
// http.Transport keeps spare ones) is an "unsolicited response" to the
// client. One that sent part of a request still gets its 400
// (TestAmbiguousFramingRefused).
func TestHeaderTimeoutClosesSilently(t *testing.T) {
	m := startMecha(t, "--app-id", "quiet", "--header-timeout", "1s", "--idle-timeout", "1s")
	const healthz = "GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, sent := range []string{"", healthz} {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.httpPort))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(sent)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
		start := time.Now()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("after %q: %v (the runtime did not close the connection)", sent, err)
		}
		if sent != "" {
			// The answer to the request, then nothing more.
			if !bytes.HasPrefix(got, []byte("HTTP/1.1 204")) || bytes.Count(got, []byte("HTTP/1.1")) != 1 {
				t.Fatalf("after %q the runtime answered %q, want one 204", sent, got)
			}
			got = nil
		}
		if len(got) != 0 {
			t.Fatalf("after %q the runtime answered %q", sent, got)
		}
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Fatalf("after %q the connection closed after %v, before the header timeout", sent, d)
		}
	}
}

// Past --max-connections a new connection is closed at once, and the
// ones under the cap are served; the refusals are counted.
func TestConnectionCap(t *testing.T) {
	m := startMecha(t, "--app-id", "cap", "--max-connections", "20")
	// The health check's connection may still be open: cap minus two.
	cs := idleConns(t, fmt.Sprintf("127.0.0.1:%d", m.httpPort), 18)
	over, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	over2, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer over2.Close()
	over3, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer over3.Close()
	_ = over3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over3.Read(make([]byte, 1)); err != io.EOF && !strings.Contains(fmt.Sprint(err), "reset") {
		t.Fatalf("a connection past the cap: read %v, want it closed at once", err)
	}
	// One under the cap is served.
	cs[0].Close()
	cs = cs[1:]
	eventually(t, 5*time.Second, func() error {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.httpPort))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.Contains(line, "204") {
			return fmt.Errorf("healthz under the cap: %q %v", line, err)
		}
		return nil
	})
	if n := metric(t, m, "mecha_listener_refused_total", "http cap"); n == 0 {
		t.Error("no refusal counted")
	}
	if n := metric(t, m, "mecha_listener_connections", "http cap"); n < 18 {
		t.Errorf("mecha_listener_connections = %v with %d idle connections open", n, len(cs))
	}
}

// A call's context ends when its client hangs up: the runtime stops
// retrying it (here, a retry policy that would go on for 10 s).
func TestHangUpEndsTheCall(t *testing.T) {
	res := t.TempDir()
	writeFile(t, res, "resiliency.yaml", `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: r}
spec:
  policies:
    retries:
      many: {policy: constant, duration: 100ms, maxRetries: 50}
  targets:
    apps:
      hang: {retry: many}
`)
	appPort := startHTTPApp(t)
	m := startMecha(t, "--app-id", "hang", "--app-port", fmt.Sprint(appPort), "--resources-path", res)
	failures := func() int {
		r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/failures", appPort), nil)
		n, _ := strconv.Atoi(string(r.Body))
		return n
	}
	client := &http.Client{Timeout: 700 * time.Millisecond}
	if resp, err := client.Get(m.url("/v1.0/invoke/hang/method/echo/x?status=500&sleepms=50")); err == nil {
		resp.Body.Close()
		t.Fatalf("the call answered %d within 700ms: the policy should keep retrying", resp.StatusCode)
	}
	// The runtime notices the hang-up within a second, then stops: the
	// count settles, long before the policy's 50 retries.
	var settled int
	eventually(t, 5*time.Second, func() error {
		a := failures()
		time.Sleep(500 * time.Millisecond)
		if b := failures(); b != a {
			return fmt.Errorf("still retrying: %d then %d attempts", a, b)
		}
		settled = a
		return nil
	})
	if settled >= 40 {
		t.Fatalf("the app got %d attempts: the retries did not stop with the client", settled)
	}
}
