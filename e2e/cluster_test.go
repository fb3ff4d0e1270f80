package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	runtimev1 "github.com/dapr/dapr/pkg/proto/runtime/v1"
	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// received counts what an HTTP test app recorded on a route.
func receivedCount(t *testing.T, appPort int, route string) int {
	t.Helper()
	var got []map[string]any
	do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/received?route=%s", appPort, route), nil).json(t, &got)
	return len(got)
}

// TestClusterInvocation runs three runtimes on loopback that find each
// other by gossip: A (no app) calls appb on B and appc on C1 and C2 by
// name, through their internal ports.
func TestClusterInvocation(t *testing.T) {
	bPort := startHTTPApp(t)
	b := startMecha(t, "--app-id", "appb", "--app-port", fmt.Sprint(bPort))
	join := fmt.Sprintf("127.0.0.1:%d", b.gossipPort)
	c1Port, c2Port := startHTTPApp(t), startHTTPApp(t)
	c1 := startMecha(t, "--app-id", "appc", "--app-port", fmt.Sprint(c1Port), "--join", join)
	c2 := startMecha(t, "--app-id", "appc", "--app-port", fmt.Sprint(c2Port), "--join", join)
	a := startMecha(t, "--app-id", "appa", "--join", join)
	_ = c1

	// The catalog reaches A: appb answers through B.
	eventually(t, 10*time.Second, func() error {
		r := do(t, "GET", a.url("/v1.0/invoke/appb/method/echo/ping"), nil)
		if r.Status != 200 {
			return fmt.Errorf("status %d: %s", r.Status, r.Body)
		}
		return nil
	})
	checkEchoVerbs(t, a.url("/v1.0/invoke/appb/method/echo/a/b?x=1&y=two"), "appa")
	// The dapr-app-id header form, and a large body both ways.
	big := bytes.Repeat([]byte("0123456789abcdef"), 256<<10/16*8) // 2 MiB
	r := do(t, "POST", a.url("/echo/big"), big, "dapr-app-id", "appb")
	expectStatus(t, r, 200)
	var e echo
	r.json(t, &e)
	if len(e.Body) != len(big) || e.Path != "/echo/big" {
		t.Fatalf("big body: app saw %d bytes at %s, want %d", len(e.Body), e.Path, len(big))
	}
	// An unknown app-id gets Dapr's error.
	expectError(t, do(t, "GET", a.url("/v1.0/invoke/nobody/method/x"), nil), 500, "ERR_DIRECT_INVOKE")

	// appc has two instances: round robin spreads the calls over both.
	eventually(t, 10*time.Second, func() error {
		if r := do(t, "POST", a.url("/v1.0/invoke/appc/method/orders"), `{}`); r.Status != 200 {
			return fmt.Errorf("status %d: %s", r.Status, r.Body)
		}
		if receivedCount(t, c1Port, "orders") == 0 || receivedCount(t, c2Port, "orders") == 0 {
			return fmt.Errorf("only one instance has been called so far")
		}
		return nil
	})
	n1, n2 := receivedCount(t, c1Port, "orders"), receivedCount(t, c2Port, "orders")
	for range 40 {
		expectStatus(t, do(t, "POST", a.url("/v1.0/invoke/appc/method/orders"), `{}`), 200)
	}
	d1, d2 := receivedCount(t, c1Port, "orders")-n1, receivedCount(t, c2Port, "orders")-n2
	if d1+d2 != 40 || d1 < 15 || d2 < 15 {
		t.Fatalf("40 calls went %d to C1 and %d to C2, want them spread over both", d1, d2)
	}

	// kill -9 of C2's runtime: within 5 s the catalog drops it, and every
	// call lands on C1.
	killed := time.Now()
	_ = c2.cmd.Process.Kill()
	// Idempotent calls right after the kill, before the catalog knows:
	// those that land on the dead runtime are sent again to the live one.
	for i := range 10 {
		if r := do(t, "GET", a.url("/v1.0/invoke/appc/method/echo/after-kill"), nil); r.Status != 200 {
			t.Fatalf("GET %d right after the kill: %d %s", i, r.Status, r.Body)
		}
	}
	var gone time.Duration
	eventually(t, 15*time.Second, func() error {
		before := receivedCount(t, c1Port, "orders")
		for i := range 10 {
			if r := do(t, "POST", a.url("/v1.0/invoke/appc/method/orders"), `{}`); r.Status != 200 {
				return fmt.Errorf("call %d after the kill: %d %s", i, r.Status, r.Body)
			}
		}
		if got := receivedCount(t, c1Port, "orders") - before; got != 10 {
			return fmt.Errorf("%d of 10 calls reached C1", got)
		}
		gone = time.Since(killed)
		return nil
	})
	t.Logf("C2 left A's catalog %v after kill -9", gone.Round(time.Millisecond))
	if gone > 6*time.Second {
		t.Fatalf("a dead runtime stayed in the catalog %v, want under 5 s", gone)
	}
	if !strings.Contains(a.output(), "API listening") {
		t.Fatal("no startup line")
	}
}

// TestAPIToken: with DAPR_API_TOKEN set, every API call needs the token
// in dapr-api-token (HTTP) or gRPC metadata, except the health checks.
func TestAPIToken(t *testing.T) {
	appPort := startHTTPApp(t)
	m := startMechaEnv(t, []string{"DAPR_API_TOKEN=s3cret"}, "--app-id", "tok", "--app-port", fmt.Sprint(appPort))
	m.waitHealthy(t)
	expectError(t, do(t, "GET", m.url("/v1.0/metadata"), nil), 401, "ERR_API_TOKEN")
	expectError(t, do(t, "GET", m.url("/v1.0/metadata"), nil, "dapr-api-token", "wrong"), 401, "ERR_API_TOKEN")
	expectError(t, do(t, "GET", m.url("/v1.0/invoke/tok/method/echo/x"), nil), 401, "ERR_API_TOKEN")
	expectStatus(t, do(t, "GET", m.url("/v1.0/metadata"), nil, "dapr-api-token", "s3cret"), 200)
	expectStatus(t, do(t, "GET", m.url("/v1.0/invoke/tok/method/echo/x"), nil, "dapr-api-token", "s3cret"), 200)
	expectStatus(t, do(t, "GET", m.url("/v1.0/healthz"), nil), 204)

	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", m.grpcPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := runtimev1.NewDaprClient(conn)
	if _, err := cl.GetMetadata(context.Background(), &runtimev1.GetMetadataRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("gRPC without the token: %v, want Unauthenticated", err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "dapr-api-token", "s3cret")
	if md, err := cl.GetMetadata(ctx, &runtimev1.GetMetadataRequest{}); err != nil || md.GetId() != "tok" {
		t.Fatalf("gRPC with the token: %v %v", md, err)
	}
}

// TestAccessControl: the called runtime applies its Configuration's
// accessControl to calls from other apps.
func TestAccessControl(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "config.yaml", `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: acl
spec:
  accessControl:
    defaultAction: deny
    policies:
    - appId: appa
      defaultAction: deny
      operations:
      - name: /echo/**
        httpVerb: ["GET"]
        action: allow
`)
	bPort := startHTTPApp(t)
	b := startMecha(t, "--app-id", "guarded", "--app-port", fmt.Sprint(bPort), "--config", cfg)
	join := fmt.Sprintf("127.0.0.1:%d", b.gossipPort)
	a := startMecha(t, "--app-id", "appa", "--join", join)
	z := startMecha(t, "--app-id", "appz", "--join", join)
	eventually(t, 10*time.Second, func() error {
		if r := do(t, "GET", a.url("/v1.0/invoke/guarded/method/echo/x"), nil); r.Status != 200 {
			return fmt.Errorf("appa GET: %d %s", r.Status, r.Body)
		}
		return nil
	})
	// daprd answers a denied invocation as a failed one with status 403.
	expectError(t, do(t, "POST", a.url("/v1.0/invoke/guarded/method/echo/x"), "{}"), 403, "ERR_DIRECT_INVOKE")
	expectError(t, do(t, "GET", a.url("/v1.0/invoke/guarded/method/orders"), nil), 403, "ERR_DIRECT_INVOKE")
	eventually(t, 10*time.Second, func() error {
		r := do(t, "GET", z.url("/v1.0/invoke/guarded/method/echo/x"), nil)
		if r.Status != 403 || !strings.Contains(string(r.Body), "ERR_DIRECT_INVOKE") || !strings.Contains(string(r.Body), "denied") {
			return fmt.Errorf("appz GET: %d %s, want 403 ERR_DIRECT_INVOKE (denied)", r.Status, r.Body)
		}
		return nil
	})
	// A bad section stops the runtime with the field named.
	bad := writeFile(t, t.TempDir(), "bad.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  accessControl:\n    defaultAction: perhaps\n")
	p := start(t, bins.mecha, "run", "--app-id", "x", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--internal-port", "0",
		"--gossip-port", "0", "--gossip-bind-address", "127.0.0.1", "--broker-port", "-1", "--data-dir", t.TempDir(), "--config", bad)
	if code := p.wait(30 * time.Second); code == 0 || !strings.Contains(p.output(), "spec.accessControl.defaultAction") {
		t.Fatalf("exit %d:\n%s", code, p.output())
	}
}

var wanRE = regexp.MustCompile(`msg="API listening".* wan_port=(\d+)`)

// TestClusterDCFailover: two DCs, each with a gateway. A caller in dc-a is
// served by dc-a's instance of appb, unless it names dc-b's instance
// (mecha-instance-id); when that runtime dies (kill -9), its calls fail
// over to dc-b's instance, through dc-b's gateway.
func TestClusterDCFailover(t *testing.T) {
	// dc-b: a gateway and an instance of appb.
	g := startMecha(t, "--app-id", "gw-b", "--dc", "dc-b", "--gateway", "--wan-port", "0")
	gWAN := wanRE.FindStringSubmatch(g.output())[1]
	b2Port := startHTTPApp(t)
	b2 := startMecha(t, "--app-id", "appb", "--app-port", fmt.Sprint(b2Port), "--dc", "dc-b", "--join", fmt.Sprintf("127.0.0.1:%d", g.gossipPort))
	// dc-a: the caller is the gateway, with its own instance of appb.
	a := startMecha(t, "--app-id", "appa", "--dc", "dc-a", "--gateway", "--wan-port", "0", "--wan-join", "127.0.0.1:"+gWAN)
	b1Port := startHTTPApp(t)
	b1 := startMecha(t, "--app-id", "appb", "--app-port", fmt.Sprint(b1Port), "--dc", "dc-a", "--join", fmt.Sprintf("127.0.0.1:%d", a.gossipPort))

	// Served from the local DC only, once dc-a's instance is known.
	eventually(t, 10*time.Second, func() error {
		if r := do(t, "POST", a.url("/v1.0/invoke/appb/method/orders"), `{}`); r.Status != 200 {
			return fmt.Errorf("status %d: %s", r.Status, r.Body)
		}
		if receivedCount(t, b1Port, "orders") == 0 {
			return fmt.Errorf("dc-a's instance not called yet")
		}
		return nil
	})
	before2 := receivedCount(t, b2Port, "orders")
	for range 20 {
		expectStatus(t, do(t, "POST", a.url("/v1.0/invoke/appb/method/orders"), `{}`), 200)
	}
	if n := receivedCount(t, b2Port, "orders") - before2; n != 0 {
		t.Fatalf("%d of 20 calls left dc-a while it had a healthy instance", n)
	}
	// A call naming dc-b's instance goes there, through dc-b's gateway,
	// although dc-a has an instance of its own.
	b2ID := instanceID(t, b2)
	eventually(t, 10*time.Second, func() error {
		before := receivedCount(t, b2Port, "orders")
		if r := do(t, "POST", a.url("/v1.0/invoke/appb/method/orders"), `{}`, "mecha-instance-id", b2ID); r.Status != 200 {
			return fmt.Errorf("naming instance %s: %d %s", b2ID, r.Status, r.Body)
		}
		if n := receivedCount(t, b2Port, "orders") - before; n != 1 {
			return fmt.Errorf("the call naming dc-b's instance reached it %d times", n)
		}
		return nil
	})

	_ = b1.cmd.Process.Kill()
	eventually(t, 20*time.Second, func() error {
		before := receivedCount(t, b2Port, "orders")
		for i := range 5 {
			if r := do(t, "POST", a.url("/v1.0/invoke/appb/method/orders"), `{}`); r.Status != 200 {
				return fmt.Errorf("call %d: %d %s", i, r.Status, r.Body)
			}
		}
		if n := receivedCount(t, b2Port, "orders") - before; n != 5 {
			return fmt.Errorf("%d of 5 calls reached dc-b", n)
		}
		return nil
	})
}

// TestResiliencyOnInvocation: a Resiliency document in the caller's
// resources path applies to its calls to another runtime's app: the
// timeout cuts a slow call, a POST is not retried, and the circuit
// breaker opens after the trip expression holds, refusing calls until
// its timeout lets one through again.
func TestResiliencyOnInvocation(t *testing.T) {
	bPort := startHTTPApp(t)
	b := startMecha(t, "--app-id", "flaky", "--app-port", fmt.Sprint(bPort))
	dir := t.TempDir()
	writeFile(t, dir, "resiliency.yaml", `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: calls
spec:
  policies:
    timeouts:
      short: 300ms
    retries:
      thrice:
        policy: constant
        duration: 20ms
        maxRetries: 2
    circuitBreakers:
      trip3:
        maxRequests: 1
        timeout: 1s
        trip: consecutiveFailures >= 3
  targets:
    apps:
      flaky:
        timeout: short
        retry: thrice
        circuitBreaker: trip3
`)
	a := startMecha(t, "--app-id", "caller", "--join", fmt.Sprintf("127.0.0.1:%d", b.gossipPort), "--resources-path", dir)
	eventually(t, 10*time.Second, func() error {
		if r := do(t, "GET", a.url("/v1.0/invoke/flaky/method/echo/x"), nil); r.Status != 200 {
			return fmt.Errorf("status %d: %s", r.Status, r.Body)
		}
		return nil
	})
	// Three attempts of 300 ms, not three of a second.
	start := time.Now()
	r := do(t, "GET", a.url("/v1.0/invoke/flaky/method/echo/slow?sleepms=1000"), nil)
	if el := time.Since(start); r.Status != 500 || el > 2500*time.Millisecond || !strings.Contains(strings.ToLower(string(r.Body)), "timeout") {
		t.Fatalf("a slow GET: %d %s after %v, want a timeout error well under 3 s", r.Status, r.Body, el)
	}
	// The slow call's three timeouts opened the breaker: calls fail fast.
	expectError(t, do(t, "GET", a.url("/v1.0/invoke/flaky/method/echo/x"), nil), 500, "ERR_DIRECT_INVOKE")
	// After its 1 s timeout the breaker lets one call through, which closes it.
	eventually(t, 5*time.Second, func() error {
		if r := do(t, "GET", a.url("/v1.0/invoke/flaky/method/echo/x"), nil); r.Status != 200 {
			return fmt.Errorf("status %d: %s", r.Status, r.Body)
		}
		return nil
	})
	// A POST that fails is not retried: the app sees it once, and its 500
	// comes back to the caller as the app sent it.
	r = do(t, "POST", a.url("/v1.0/invoke/flaky/method/fail"), "x")
	if r.Status != 500 || !strings.Contains(string(r.Body), "boom") {
		t.Fatalf("POST /fail: %d %s, want the app's own 500", r.Status, r.Body)
	}
	if n := receivedCount(t, bPort, "fail"); n != 1 {
		t.Fatalf("the app saw the failing POST %d times, want once (no retries for POST)", n)
	}
}

// TestTrafficShift: in 2 DCs × 3 runtimes, a traffic policy set through
// one runtime's admin API (in dc-b) reaches a caller in dc-a within 2 s;
// then exactly 70 of 100 calls stay in dc-a and 30 go to dc-b. Clearing
// it brings every call home.
func TestTrafficShift(t *testing.T) {
	// 2 DCs × 3 runtimes, each with an app: a gateway and two instances of
	// appb per DC.
	gbPort := startHTTPApp(t)
	g := startMecha(t, "--app-id", "gw-b", "--app-port", fmt.Sprint(gbPort), "--dc", "dc-b", "--gateway", "--wan-port", "0")
	gWAN := wanRE.FindStringSubmatch(g.output())[1]
	b2Port, b2bPort := startHTTPApp(t), startHTTPApp(t)
	for _, p := range []int{b2Port, b2bPort} {
		startMecha(t, "--app-id", "appb", "--app-port", fmt.Sprint(p), "--dc", "dc-b", "--join", fmt.Sprintf("127.0.0.1:%d", g.gossipPort))
	}
	gaPort := startHTTPApp(t)
	a := startMecha(t, "--app-id", "appa", "--app-port", fmt.Sprint(gaPort), "--dc", "dc-a", "--gateway", "--wan-port", "0", "--wan-join", "127.0.0.1:"+gWAN)
	b1Port, b1bPort := startHTTPApp(t), startHTTPApp(t)
	for _, p := range []int{b1Port, b1bPort} {
		startMecha(t, "--app-id", "appb", "--app-port", fmt.Sprint(p), "--dc", "dc-a", "--join", fmt.Sprintf("127.0.0.1:%d", a.gossipPort))
	}
	inDC := func(ports ...int) int {
		n := 0
		for _, p := range ports {
			n += receivedCount(t, p, "orders")
		}
		return n
	}
	eventually(t, 10*time.Second, func() error {
		if r := do(t, "POST", a.url("/v1.0/invoke/appb/method/orders"), `{}`); r.Status != 200 || receivedCount(t, b1Port, "orders") == 0 || receivedCount(t, b1bPort, "orders") == 0 {
			return fmt.Errorf("dc-a's two instances not both reached yet: %d %s", r.Status, r.Body)
		}
		return nil
	})
	admin := func(m *mecha, method, app, body string) response {
		return do(t, method, fmt.Sprintf("http://127.0.0.1:%d/v1.0-alpha1/traffic/%s", m.metricsPort, app), body)
	}
	expectStatus(t, admin(g, "PUT", "appb", `{"shift":[{"fromDC":"dc-a","to":{"dc-a":70,"dc-b":30}}]}`), 200)
	set := time.Now()
	eventually(t, 5*time.Second, func() error {
		if r := admin(a, "GET", "appb", ""); r.Status != 200 || !strings.Contains(string(r.Body), `"dc-b":30`) {
			return fmt.Errorf("dc-a's caller has %d %s", r.Status, r.Body)
		}
		return nil
	})
	took := time.Since(set)
	t.Logf("the rule set in dc-b was in force in dc-a after %v", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("the traffic rule took %v to reach dc-a, want under 2 s", took)
	}
	n1, n2 := inDC(b1Port, b1bPort), inDC(b2Port, b2bPort)
	for range 100 {
		expectStatus(t, do(t, "POST", a.url("/v1.0/invoke/appb/method/orders"), `{}`), 200)
	}
	d1, d2 := inDC(b1Port, b1bPort)-n1, inDC(b2Port, b2bPort)-n2
	if d1 != 70 || d2 != 30 {
		t.Fatalf("100 calls went %d to dc-a and %d to dc-b, want 70 and 30", d1, d2)
	}
	// A bad policy names its field.
	if r := admin(a, "PUT", "appb", `{"shift":[{"fromDC":"dc-a","to":{"dc-a":50}}]}`); r.Status != 400 || !strings.Contains(string(r.Body), "add up to 50") {
		t.Fatalf("bad policy: %d %s", r.Status, r.Body)
	}
	expectStatus(t, admin(a, "DELETE", "appb", ""), 204)
	eventually(t, 5*time.Second, func() error {
		if r := admin(a, "GET", "appb", ""); r.Status != 404 {
			return fmt.Errorf("still %d %s", r.Status, r.Body)
		}
		return nil
	})
	n2 = inDC(b2Port, b2bPort)
	for range 20 {
		expectStatus(t, do(t, "POST", a.url("/v1.0/invoke/appb/method/orders"), `{}`), 200)
	}
	if d := inDC(b2Port, b2bPort) - n2; d != 0 {
		t.Fatalf("%d of 20 calls left dc-a after the policy was cleared", d)
	}
}

// TestClusterGRPCInvocation: InvokeService through the Dapr Go SDK on one
// runtime reaches a gRPC app (AppCallback) and an HTTP app on another; and
// the internal port drops malformed frames without harm.
func TestClusterGRPCInvocation(t *testing.T) {
	gPort, _ := startGRPCApp(t)
	g := startMecha(t, "--app-id", "grpcapp", "--app-port", fmt.Sprint(gPort), "--app-protocol", "grpc")
	hPort := startHTTPApp(t)
	startMecha(t, "--app-id", "httpapp", "--app-port", fmt.Sprint(hPort), "--join", fmt.Sprintf("127.0.0.1:%d", g.gossipPort))
	a := startMecha(t, "--app-id", "caller", "--join", fmt.Sprintf("127.0.0.1:%d", g.gossipPort))
	c := sdkClient(t, a)
	ctx := context.Background()
	eventually(t, 10*time.Second, func() error {
		_, err := c.InvokeMethodWithContent(ctx, "grpcapp", "hello", "post", &dapr.DataContent{ContentType: "text/plain", Data: []byte("hi")})
		return err
	})
	out, err := c.InvokeMethodWithContent(ctx, "grpcapp", "hello", "post", &dapr.DataContent{ContentType: "text/plain", Data: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	var e map[string]string
	_ = json.Unmarshal(out, &e)
	if e["method"] != "hello" || e["data"] != "hi" {
		t.Fatalf("gRPC app through two runtimes answered %s", out)
	}
	// The HTTP API on the caller reaches the gRPC app too.
	r := do(t, "PUT", a.url("/v1.0/invoke/grpcapp/method/items?x=1"), "body")
	expectStatus(t, r, 200)
	_ = json.Unmarshal(r.Body, &e)
	if e["method"] != "items" || e["data"] != "body" {
		t.Fatalf("HTTP invoke of the gRPC app answered %s", r.Body)
	}
	// The SDK reaches an HTTP app on another runtime, which learns the
	// caller from the runtime, not from what the caller claims.
	fake := metadata.AppendToOutgoingContext(ctx, "dapr-caller-app-id", "admin", "dapr-api-token", "leak")
	eventually(t, 10*time.Second, func() error {
		out, err := c.InvokeMethodWithContent(fake, "httpapp", "echo/sdk", "post", &dapr.DataContent{ContentType: "text/plain", Data: []byte("x")})
		if err != nil {
			return err
		}
		var ec echo
		if err := json.Unmarshal(out, &ec); err != nil || ec.Path != "/echo/sdk" || ec.Body != "x" || ec.Headers["Dapr-Caller-App-Id"] != "caller" || ec.Headers["Dapr-Api-Token"] != "" {
			return fmt.Errorf("http app saw %s (%v)", out, err)
		}
		return nil
	})

	// Garbage on the internal port: the connection is dropped, the runtime
	// serves on.
	for _, junk := range []string{"\x00\x01\x02garbage\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", strings.Repeat("A", 70000) + "\r\n\r\n"} {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.internalPort))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write([]byte(junk))
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.ReadAll(conn)
		conn.Close()
	}
	if _, err := c.InvokeMethodWithContent(ctx, "grpcapp", "hello", "post", &dapr.DataContent{ContentType: "text/plain", Data: []byte("hi")}); err != nil {
		t.Fatalf("after malformed frames: %v", err)
	}
	if strings.Contains(g.output(), "panic") {
		t.Fatalf("the runtime panicked:\n%s", g.output())
	}
}

// TestWholeDCDies: a caller in dc-a, whose app runs only in dc-b and
// dc-c, is served by dc-b (the first by name); when every runtime of
// dc-b is killed (kill -9), its calls go to dc-c within seconds.
func TestWholeDCDies(t *testing.T) {
	gb := startMecha(t, "--app-id", "gw-b", "--dc", "dc-b", "--gateway", "--wan-port", "0")
	gbWAN := wanRE.FindStringSubmatch(gb.output())[1]
	bPort := startHTTPApp(t)
	b := startMecha(t, "--app-id", "svc", "--app-port", fmt.Sprint(bPort), "--dc", "dc-b", "--join", fmt.Sprintf("127.0.0.1:%d", gb.gossipPort))
	gc := startMecha(t, "--app-id", "gw-c", "--dc", "dc-c", "--gateway", "--wan-port", "0", "--wan-join", "127.0.0.1:"+gbWAN)
	cPort := startHTTPApp(t)
	startMecha(t, "--app-id", "svc", "--app-port", fmt.Sprint(cPort), "--dc", "dc-c", "--join", fmt.Sprintf("127.0.0.1:%d", gc.gossipPort))
	a := startMecha(t, "--app-id", "caller", "--dc", "dc-a", "--gateway", "--wan-port", "0", "--wan-join", "127.0.0.1:"+gbWAN)
	eventually(t, 15*time.Second, func() error {
		if r := do(t, "POST", a.url("/v1.0/invoke/svc/method/orders"), `{}`); r.Status != 200 || receivedCount(t, bPort, "orders") == 0 {
			return fmt.Errorf("dc-b not reached yet: %d %s", r.Status, r.Body)
		}
		return nil
	})
	killed := time.Now()
	_ = gb.cmd.Process.Kill()
	_ = b.cmd.Process.Kill()
	eventually(t, 20*time.Second, func() error {
		before := receivedCount(t, cPort, "orders")
		for i := range 5 {
			if r := do(t, "POST", a.url("/v1.0/invoke/svc/method/orders"), `{}`); r.Status != 200 {
				return fmt.Errorf("call %d: %d %s", i, r.Status, r.Body)
			}
		}
		if n := receivedCount(t, cPort, "orders") - before; n != 5 {
			return fmt.Errorf("%d of 5 calls reached dc-c", n)
		}
		return nil
	})
	took := time.Since(killed)
	t.Logf("calls moved to dc-c %v after dc-b died", took.Round(time.Millisecond))
	if took > 12*time.Second {
		t.Fatalf("calls took %v to leave a dead DC", took)
	}
}

// TestPeerToken: with a gossip key, runtimes call each other's apps with
// a token derived from it, and the internal port refuses a call without
// it, whatever dapr-caller-app-id it claims.
func TestPeerToken(t *testing.T) {
	key := "c2VjcmV0LWtleS0xNi1ieQ==" // 16 bytes
	bPort := startHTTPApp(t)
	b := startMecha(t, "--app-id", "inner", "--app-port", fmt.Sprint(bPort), "--gossip-key", key)
	a := startMecha(t, "--app-id", "outer", "--gossip-key", key, "--join", fmt.Sprintf("127.0.0.1:%d", b.gossipPort))
	eventually(t, 10*time.Second, func() error {
		if r := do(t, "GET", a.url("/v1.0/invoke/inner/method/echo/x"), nil); r.Status != 200 {
			return fmt.Errorf("%d %s", r.Status, r.Body)
		}
		return nil
	})
	r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/echo/x", b.internalPort), nil, "dapr-caller-app-id", "outer", "dapr-callee-app-id", "inner")
	expectError(t, r, 403, "ERR_DIRECT_INVOKE")
}

var hostedRE = regexp.MustCompile(`msg="app API listening".* app=(\S+) http_port=(\d+) grpc_port=(\d+)`)

// TestSeveralAppsOnOneRuntime: one mecha run serves two apps, each on its
// own API ports: each has its own state keys and identity as a caller,
// they call each other, and another runtime calls the second one.
func TestSeveralAppsOnOneRuntime(t *testing.T) {
	p1, p2, p3 := startHTTPApp(t), startHTTPApp(t), startHTTPApp(t)
	res := t.TempDir()
	writeFile(t, res, "state.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n")
	writeFile(t, res, "third.yaml", fmt.Sprintf("apiVersion: mecha.io/v1alpha1\nkind: App\nmetadata:\n  name: third\nspec:\n  port: %d\n", p3))
	m := startMecha(t, "--app-id", "first", "--app-port", fmt.Sprint(p1), "--app", fmt.Sprintf("id=second,port=%d", p2), "--resources-path", res)
	g := hostedRE.FindStringSubmatch(m.output())
	if g == nil || g[1] != "second" {
		t.Fatalf("no app API line for the second app:\n%s", m.output())
	}
	second := fmt.Sprintf("http://127.0.0.1:%s", g[2])

	// Identity: the metadata API and the caller the other app sees.
	var md map[string]any
	do(t, "GET", second+"/v1.0/metadata", nil).json(t, &md)
	if md["id"] != "second" {
		t.Fatalf("metadata on the second app's port: id %v", md["id"])
	}
	eventually(t, 10*time.Second, func() error {
		r := do(t, "GET", second+"/v1.0/invoke/first/method/echo/x", nil)
		if r.Status != 200 {
			return fmt.Errorf("second → first: %d %s", r.Status, r.Body)
		}
		var e echo
		r.json(t, &e)
		if e.Headers["Dapr-Caller-App-Id"] != "second" {
			return fmt.Errorf("first saw caller %q", e.Headers["Dapr-Caller-App-Id"])
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		r := do(t, "GET", m.url("/v1.0/invoke/second/method/echo/y"), nil)
		if r.Status != 200 {
			return fmt.Errorf("first → second: %d %s", r.Status, r.Body)
		}
		var e echo
		r.json(t, &e)
		if e.Path != "/echo/y" || e.Headers["Dapr-Caller-App-Id"] != "first" {
			return fmt.Errorf("second saw %+v", e)
		}
		return nil
	})
	// The app of the App document is served too.
	eventually(t, 10*time.Second, func() error {
		r := do(t, "GET", m.url("/v1.0/invoke/third/method/echo/t"), nil)
		if r.Status != 200 {
			return fmt.Errorf("first → third: %d %s", r.Status, r.Body)
		}
		return nil
	})
	// State keys are each app's own.
	expectStatus(t, do(t, "POST", second+"/v1.0/state/statestore", `[{"key":"k","value":"of-second"}]`), 204)
	if r := do(t, "GET", m.url("/v1.0/state/statestore/k"), nil); r.Status != 204 {
		t.Fatalf("first read second's key: %d %s", r.Status, r.Body)
	}
	if r := do(t, "GET", second+"/v1.0/state/statestore/k", nil); r.Status != 200 || !strings.Contains(string(r.Body), "of-second") {
		t.Fatalf("second's own key: %d %s", r.Status, r.Body)
	}
	// Another runtime reaches the second app by name.
	o := startMecha(t, "--app-id", "other", "--join", fmt.Sprintf("127.0.0.1:%d", m.gossipPort))
	eventually(t, 10*time.Second, func() error {
		r := do(t, "GET", o.url("/v1.0/invoke/second/method/echo/z"), nil)
		if r.Status != 200 {
			return fmt.Errorf("other → second: %d %s", r.Status, r.Body)
		}
		return nil
	})
	// A bad App document names its file and field.
	badRes := t.TempDir()
	writeFile(t, badRes, "app.yaml", "apiVersion: mecha.io/v1alpha1\nkind: App\nmetadata:\n  name: first\nspec:\n  port: 3001\n")
	dup := start(t, bins.mecha, "run", "--app-id", "first", "--resources-path", badRes, "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0",
		"--internal-port", "0", "--gossip-port", "0", "--gossip-bind-address", "127.0.0.1", "--broker-port", "-1", "--data-dir", t.TempDir())
	if code := dup.wait(20 * time.Second); code == 0 || !strings.Contains(dup.output(), `app.yaml`) || !strings.Contains(dup.output(), `already served`) {
		t.Fatalf("exit %d:\n%s", code, dup.output())
	}
	// A bad --app names what is wrong.
	bad := start(t, bins.mecha, "run", "--app-id", "x", "--app", "id=y,port=abc", "--data-dir", t.TempDir())
	if code := bad.wait(20 * time.Second); code == 0 || !strings.Contains(bad.output(), `port="abc" is not a port`) {
		t.Fatalf("exit %d:\n%s", code, bad.output())
	}
}

// TestGRPCProxy: an app calls another app's own gRPC service (here the
// standard health service), unary and streaming, through its runtime with
// the dapr-app-id metadata, as with Dapr's gRPC proxying: locally and
// through another runtime's internal port, and to one named instance.
func TestGRPCProxy(t *testing.T) {
	gPort, _ := startGRPCApp(t)
	b := startMecha(t, "--app-id", "gsvc", "--app-port", fmt.Sprint(gPort), "--app-protocol", "grpc")
	a := startMecha(t, "--app-id", "gcaller", "--join", fmt.Sprintf("127.0.0.1:%d", b.gossipPort))
	for _, m := range []*mecha{b, a} {
		conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", m.grpcPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		hc := healthpb.NewHealthClient(conn)
		ctx := metadata.AppendToOutgoingContext(context.Background(), "dapr-app-id", "gsvc")
		eventually(t, 10*time.Second, func() error {
			r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				return err
			}
			if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("status %v", r.GetStatus())
			}
			return nil
		})
		// A server stream, proxied message by message.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		first, err := w.Recv()
		cancel()
		if err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("watch through the proxy: %v %v", first, err)
		}
		// The app's own error status comes back as it gave it.
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "no-such"}); status.Code(err) != codes.NotFound {
			t.Fatalf("unknown health service: %v, want the app's NotFound", err)
		}
		// Without dapr-app-id an unknown service is Unimplemented, and the
		// runtime's own API still works on the same port.
		if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("no dapr-app-id: %v, want Unimplemented", err)
		}
		if md, err := runtimev1.NewDaprClient(conn).GetMetadata(context.Background(), &runtimev1.GetMetadataRequest{}); err != nil || md.GetId() == "" {
			t.Fatalf("the Dapr API on the proxying port: %v %v", md, err)
		}
		// Naming the instance: b's reaches the app, another is NotFound.
		for inst, want := range map[string]codes.Code{instanceID(t, b): codes.OK, "nobody-1": codes.NotFound} {
			ictx := metadata.AppendToOutgoingContext(ctx, "mecha-instance-id", inst)
			if _, err := hc.Check(ictx, &healthpb.HealthCheckRequest{}); status.Code(err) != want {
				t.Fatalf("proxied call naming instance %s: %v, want %v", inst, err, want)
			}
		}
	}
}

// TestHostedAppHealth: with app health checks on, an app of --app that
// turns unhealthy is marked so in the catalog, and other runtimes stop
// calling it until it is healthy again.
func TestHostedAppHealth(t *testing.T) {
	sick := filepath.Join(t.TempDir(), "sick")
	p1 := startHTTPApp(t)
	p2 := startHTTPApp(t, "UNHEALTHY_FILE="+sick)
	m := startMecha(t, "--app-id", "main", "--app-port", fmt.Sprint(p1), "--app", fmt.Sprintf("id=flaky2,port=%d", p2),
		"--enable-app-health-check", "--app-health-probe-interval", "100ms", "--app-health-threshold", "1")
	o := startMecha(t, "--app-id", "watcher", "--join", fmt.Sprintf("127.0.0.1:%d", m.gossipPort))
	call := func() response { return do(t, "GET", o.url("/v1.0/invoke/flaky2/method/echo/x"), nil) }
	eventually(t, 10*time.Second, func() error {
		if r := call(); r.Status != 200 {
			return fmt.Errorf("healthy: %d %s", r.Status, r.Body)
		}
		return nil
	})
	writeFile(t, filepath.Dir(sick), "sick", "")
	eventually(t, 10*time.Second, func() error {
		if r := call(); r.Status != 500 || !strings.Contains(string(r.Body), "none is healthy") {
			return fmt.Errorf("sick: %d %s", r.Status, r.Body)
		}
		return nil
	})
	os.Remove(sick)
	eventually(t, 10*time.Second, func() error {
		if r := call(); r.Status != 200 {
			return fmt.Errorf("healthy again: %d %s", r.Status, r.Body)
		}
		return nil
	})
}
