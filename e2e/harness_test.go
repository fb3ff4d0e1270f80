// Package e2e runs the real mecha binary with real apps and drives it the
// way users do: plain HTTP and the Dapr Go SDK.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var bins struct{ mecha, httpapp, grpcapp, checkout, orderprocessor, imgateway string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mecha-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.mecha = filepath.Join(dir, "mecha")
	bins.httpapp = filepath.Join(dir, "httpapp")
	bins.grpcapp = filepath.Join(dir, "grpcapp")
	bins.checkout = filepath.Join(dir, "checkout")
	bins.orderprocessor = filepath.Join(dir, "orderprocessor")
	bins.imgateway = filepath.Join(dir, "imgateway")
	for out, pkg := range map[string]string{bins.mecha: "mecha/cmd/mecha", bins.httpapp: "mecha/e2e/testapps/httpapp", bins.grpcapp: "mecha/e2e/testapps/grpcapp",
		bins.checkout: "mecha/e2e/testapps/quickstart/checkout", bins.orderprocessor: "mecha/e2e/testapps/quickstart/orderprocessor",
		bins.imgateway: "mecha/examples/im/gateway"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a started process whose output is captured line by line.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	err   error
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, name, args...)
}

// startEnv starts a process with extra environment variables.
func startEnv(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(name, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(name), p.output())
		}
	})
	return p
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			// Killed, but a process it started still holds its output.
			p.t.Errorf("%s: a process it started outlived it and holds its output", p.cmd.Path)
		}
	}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLine polls the output for a line matching re and returns its groups.
func (p *proc) waitLine(re *regexp.Regexp, timeout time.Duration) []string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		for _, l := range p.lines {
			if m := re.FindStringSubmatch(l); m != nil {
				p.mu.Unlock()
				return m
			}
		}
		p.mu.Unlock()
		select {
		case <-p.done:
			p.t.Fatalf("process exited (%v) before printing %s:\n%s", p.err, re, p.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("no line matching %s within %s:\n%s", re, timeout, p.output())
	return nil
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("process did not exit within %s:\n%s", timeout, p.output())
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

var listeningRE = regexp.MustCompile(`^LISTENING (\d+)(?: (\d+))?`)

// startHTTPApp starts the HTTP test app and returns its port.
func startHTTPApp(t *testing.T, env ...string) int {
	t.Helper()
	p := startEnv(t, env, bins.httpapp)
	m := p.waitLine(listeningRE, 10*time.Second)
	port, _ := strconv.Atoi(m[1])
	return port
}

// startGRPCApp starts the gRPC test app; it returns its gRPC port and its
// HTTP inspection port.
func startGRPCApp(t *testing.T) (int, int) {
	t.Helper()
	p := start(t, bins.grpcapp)
	m := p.waitLine(listeningRE, 10*time.Second)
	g, _ := strconv.Atoi(m[1])
	h, _ := strconv.Atoi(m[2])
	return g, h
}

// mecha is a running `mecha run`.
type mecha struct {
	*proc
	httpPort, grpcPort, metricsPort, brokerPort int
	internalPort, gossipPort                    int
}

func (m *mecha) url(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", m.httpPort, path)
}

var apiRE = regexp.MustCompile(`msg="API listening".* http_port=(\d+) grpc_port=(\d+) metrics_port=(\d+) broker_port=(\d+) internal_port=(\d+) gossip_port=(\d+)`)

// startMecha starts `mecha run` on free ports and waits until /v1.0/healthz
// answers 204.
func startMecha(t *testing.T, args ...string) *mecha {
	t.Helper()
	m := startMechaNoWait(t, args...)
	m.waitHealthy(t)
	return m
}

func startMechaNoWait(t *testing.T, args ...string) *mecha {
	t.Helper()
	return startMechaEnv(t, nil, args...)
}

// startMechaEnv starts `mecha run` with env added to its environment and
// waits for its ports (not for health).
func startMechaEnv(t *testing.T, env []string, args ...string) *mecha {
	t.Helper()
	p := startEnv(t, env, bins.mecha, mechaArgs(t, args...)...)
	return listening(p, 20*time.Second)
}

// mechaArgs are the arguments of `mecha run` on free ports, with args
// after them (a flag given again wins).
func mechaArgs(t *testing.T, args ...string) []string {
	base := []string{"run", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--broker-port", "-1",
		"--internal-port", "0", "--gossip-port", "0", "--gossip-bind-address", "127.0.0.1", "--data-dir", t.TempDir()}
	return append(base, args...)
}

// listening waits for the "API listening" line of a started mecha and
// reads its ports from it.
func listening(p *proc, timeout time.Duration) *mecha {
	g := p.waitLine(apiRE, timeout)
	m := &mecha{proc: p}
	m.httpPort, _ = strconv.Atoi(g[1])
	m.grpcPort, _ = strconv.Atoi(g[2])
	m.metricsPort, _ = strconv.Atoi(g[3])
	m.brokerPort, _ = strconv.Atoi(g[4])
	m.internalPort, _ = strconv.Atoi(g[5])
	m.gossipPort, _ = strconv.Atoi(g[6])
	return m
}

func (m *mecha) waitHealthy(t *testing.T) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		resp, err := http.Get(m.url("/v1.0/healthz"))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
}

// eventually polls f until it returns nil.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("condition not met within %s: %v", timeout, err)
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("response is not JSON: %v: %s", err, r.Body)
	}
}

// do sends an HTTP request; body may be a string, []byte, or anything to
// marshal as JSON.
func do(t *testing.T, method, url string, body any, headers ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func expectStatus(t *testing.T, r response, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %d, want %d; body %s", r.Status, want, r.Body)
	}
}

// expectError checks a Dapr error response.
func expectError(t *testing.T, r response, status int, code string) {
	t.Helper()
	expectStatus(t, r, status)
	var e struct {
		ErrorCode string `json:"errorCode"`
		Message   string `json:"message"`
	}
	r.json(t, &e)
	if e.ErrorCode != code || e.Message == "" {
		t.Fatalf("error body %s, want errorCode %s with a message", r.Body, code)
	}
}

// writeFile writes a file under dir.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
