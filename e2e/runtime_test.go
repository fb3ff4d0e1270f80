package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBindingsHTTP(t *testing.T) {
	appPort := startHTTPApp(t)
	dir := t.TempDir()
	writeFile(t, dir, "bindings.yaml", fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: mybinding
spec:
  type: bindings.cron
  version: v1
  metadata:
  - name: schedule
    value: "@every 1s"
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: myhttp
spec:
  type: bindings.http
  version: v1
  metadata:
  - name: url
    value: http://127.0.0.1:%d/echo/out
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.in-memory
  version: v1
`, appPort))
	m := startMecha(t, "--app-id", "binder", "--app-port", fmt.Sprint(appPort), "--resources-path", dir)

	// Input: the cron binding fires, the app gets POST /mybinding, and its
	// reply saves state.
	waitReceived(t, appPort, "mybinding", 1)
	eventually(t, 10*time.Second, func() error {
		r := do(t, "GET", m.url("/v1.0/state/statestore/from-binding"), nil)
		if r.Status != 200 || string(r.Body) != `{"seen":true}` {
			return fmt.Errorf("state from binding reply: %d %s", r.Status, r.Body)
		}
		return nil
	})

	// Output: the http binding posts to the app's echo route.
	r := do(t, "POST", m.url("/v1.0/bindings/myhttp"), `{"operation":"post","data":{"hello":"world"},"metadata":{"path":"/x"}}`)
	expectStatus(t, r, 200)
	var e struct {
		Method string `json:"method"`
		Body   string `json:"body"`
		Path   string `json:"path"`
	}
	r.json(t, &e)
	if e.Method != "POST" || e.Body != `{"hello":"world"}` || !strings.HasPrefix(e.Path, "/echo/out") {
		t.Fatalf("output binding reached the app as %+v", e)
	}
}

func TestSecretsHTTP(t *testing.T) {
	dir := t.TempDir()
	secrets := writeFile(t, t.TempDir(), "secrets.json", `{"db":{"password":"s3cret"},"token":"abc"}`)
	writeFile(t, dir, "secrets.yaml", fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: localsecrets
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - name: secretsFile
    value: %s
  - name: nestedSeparator
    value: ":"
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: envsecrets
spec:
  type: secretstores.local.env
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.in-memory
  version: v1
  metadata:
  - name: fromSecret
    secretKeyRef:
      name: token
  - name: fromEnv
    envRef: HOME
auth:
  secretStore: localsecrets
`, secrets))
	m := startMecha(t, "--app-id", "sec", "--resources-path", dir)
	r := do(t, "GET", m.url("/v1.0/secrets/localsecrets/db:password"), nil)
	expectStatus(t, r, 200)
	if string(r.Body) != `{"db:password":"s3cret"}` {
		t.Fatalf("secret = %s", r.Body)
	}
	r = do(t, "GET", m.url("/v1.0/secrets/localsecrets/bulk"), nil)
	expectStatus(t, r, 200)
	if !strings.Contains(string(r.Body), `"token":{"token":"abc"}`) {
		t.Fatalf("bulk secrets = %s", r.Body)
	}
	r = do(t, "GET", m.url("/v1.0/secrets/envsecrets/HOME"), nil)
	expectStatus(t, r, 200)
	expectError(t, do(t, "GET", m.url("/v1.0/secrets/nosuch/x"), nil), 401, "ERR_SECRET_STORE_NOT_FOUND")
}

func TestMetadataHealthMetrics(t *testing.T) {
	m := startMecha(t, "--app-id", "meta", "--enable-api-logging")
	expectStatus(t, do(t, "GET", m.url("/v1.0/healthz/outbound"), nil), 204)
	m.waitLine(regexp.MustCompile(`msg="api call".*path=/v1.0/healthz/outbound status=204`), 5*time.Second)
	expectStatus(t, do(t, "PUT", m.url("/v1.0/metadata/team"), "storage"), 204)
	r := do(t, "GET", m.url("/v1.0/metadata"), nil)
	expectStatus(t, r, 200)
	var md struct {
		ID         string            `json:"id"`
		Extended   map[string]string `json:"extended"`
		Components []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"components"`
	}
	r.json(t, &md)
	comps := map[string]string{}
	for _, c := range md.Components {
		comps[c.Name] = c.Type
	}
	if md.ID != "meta" || md.Extended["team"] != "storage" || comps["statestore"] == "" || comps["pubsub"] == "" {
		t.Fatalf("metadata = %s", r.Body)
	}
	// Every API call is counted and timed.
	do(t, "GET", m.url("/v1.0/state/statestore/x"), nil)
	r = do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/metrics", m.metricsPort), nil)
	expectStatus(t, r, 200)
	for _, want := range []string{
		`mecha_api_requests_total{block="state",op="get",protocol="http",status="204"}`,
		`mecha_api_request_duration_seconds_bucket{block="state",op="get",protocol="http"`,
		`mecha_api_requests_total{block="metadata",op="set",protocol="http",status="204"}`,
	} {
		if !strings.Contains(string(r.Body), want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
}

func TestHotReload(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store-a
spec:
  type: state.in-memory
  version: v1
`)
	m := startMecha(t, "--app-id", "reload", "--resources-path", dir)
	expectStatus(t, do(t, "GET", m.url("/v1.0/state/store-a/k"), nil), 204)
	expectError(t, do(t, "GET", m.url("/v1.0/state/store-b/k"), nil), 400, "ERR_STATE_STORE_NOT_FOUND")

	// Adding a file adds the component.
	writeFile(t, dir, "b.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store-b
spec:
  type: state.in-memory
  version: v1
`)
	eventually(t, 10*time.Second, func() error {
		if r := do(t, "GET", m.url("/v1.0/state/store-b/k"), nil); r.Status != 204 {
			return fmt.Errorf("store-b not loaded yet: %d", r.Status)
		}
		return nil
	})
	expectStatus(t, do(t, "POST", m.url("/v1.0/state/store-b"), `[{"key":"k","value":1}]`), 204)

	// An invalid file is refused and leaves the running set as it was.
	writeFile(t, dir, "broken.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec:\n  typo: 1\n")
	m.waitLine(regexp.MustCompile(`hot reload: resources not applied.*broken.yaml`), 10*time.Second)
	expectStatus(t, do(t, "GET", m.url("/v1.0/state/store-b/k"), nil), 200)
	os.Remove(filepath.Join(dir, "broken.yaml"))

	// Changing a component re-creates it (in-memory data starts afresh).
	writeFile(t, dir, "b.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store-b
spec:
  type: state.in-memory
  version: v1
  metadata:
  - name: keyPrefix
    value: none
`)
	eventually(t, 10*time.Second, func() error {
		if r := do(t, "GET", m.url("/v1.0/state/store-b/k"), nil); r.Status != 204 {
			return fmt.Errorf("store-b not re-created yet: %d", r.Status)
		}
		return nil
	})

	// Deleting the file removes it.
	os.Remove(filepath.Join(dir, "b.yaml"))
	eventually(t, 10*time.Second, func() error {
		if r := do(t, "GET", m.url("/v1.0/state/store-b/k"), nil); r.Status != 400 {
			return fmt.Errorf("store-b still loaded: %d", r.Status)
		}
		return nil
	})
}

func TestDeclarativeSubscriptionHotReload(t *testing.T) {
	appPort := startHTTPApp(t)
	dir := t.TempDir()
	writeFile(t, dir, "pubsub.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
`)
	m := startMecha(t, "--app-id", "decl", "--app-port", fmt.Sprint(appPort), "--resources-path", dir)
	writeFile(t, dir, "sub.yaml", `apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: decl-sub
spec:
  pubsubname: pubsub
  topic: decl-topic
  routes:
    rules:
    - match: event.data.special == true
      path: /declarative-special
    default: /declarative
scopes:
- decl
`)
	eventually(t, 10*time.Second, func() error {
		do(t, "POST", m.url("/v1.0/publish/pubsub/decl-topic"), `{"special":true}`, "Content-Type", "application/json")
		if len(received(t, appPort, "declarative-special")) == 0 {
			return fmt.Errorf("declarative subscription not active yet")
		}
		return nil
	})
	expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/decl-topic"), `{"special":false}`, "Content-Type", "application/json"), 204)
	waitReceived(t, appPort, "declarative", 1)
}

func TestStartupErrors(t *testing.T) {
	cases := []struct {
		name, file, content string
		args                []string
		want                string
	}{
		{name: "missing app id", args: []string{}, want: "--app-id is required"},
		{name: "bad protocol", args: []string{"--app-id", "x", "--app-protocol", "smtp"}, want: `--app-protocol "smtp"`},
		{name: "invalid yaml", file: "bad.yaml", content: "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: [oops\n", want: "bad.yaml: not valid YAML"},
		{name: "unknown field", file: "typo.yaml", content: "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.in-memory\n  metdata: []\n", want: `typo.yaml: unknown field "metdata"`},
		{name: "missing type", file: "notype.yaml", content: "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  version: v1\n", want: "notype.yaml: component \"s\": spec.type: must be set"},
		{name: "unknown type", file: "unknown.yaml", content: "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.nosuch\n  version: v1\n", want: `unknown.yaml: component "s" (state.nosuch@v1): spec.type: unknown component type "state.nosuch"`},
		{name: "failed init", file: "mysql.yaml", content: "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.mysql\n  version: v1\n  initTimeout: 2s\n  metadata:\n  - name: connectionString\n    value: u:p@tcp(127.0.0.1:1)/db\n", want: `mysql.yaml: component "s" (state.mysql@v1): component init failed`},
		{name: "not in this build", file: "redis.yaml", content: "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.redis\n  version: v1\n", want: `redis.yaml: component "s" (state.redis@v1): spec.type: state.redis@v1 is not in this build of mecha: it brings cloud SDKs with it, so it is built in only with the build tag "redis"`},
		{name: "bad subscription", file: "sub.yaml", content: "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  pubsubname: pubsub\n  routes:\n    default: /x\n", want: `sub.yaml: subscription "s": spec.topic: must be set`},
		{name: "bad stream job", file: "job.yaml", content: "apiVersion: mecha.io/v1alpha1\nkind: StreamJob\nmetadata:\n  name: j\nspec:\n  source:\n    topic: t\n  window:\n    type: hopping\n    size: 1s\n  aggregate:\n    type: count\n  sink:\n    type: stdout\n", want: `job.yaml: invalid stream job "j": spec.window: kind "hopping"`},
		{name: "bad CEL", file: "cel.yaml", content: "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  pubsubname: pubsub\n  topic: t\n  routes:\n    rules:\n    - match: 'event.type =='\n      path: /x\n", want: `cel.yaml: subscription "s": spec.routes.rules[0].match`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"run", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--internal-port", "0", "--gossip-port", "0", "--gossip-bind-address", "127.0.0.1", "--broker-port", "-1", "--data-dir", t.TempDir()}, c.args...)
			if c.file != "" {
				dir := t.TempDir()
				writeFile(t, dir, c.file, c.content)
				args = append(args, "--app-id", "x", "--resources-path", dir)
			}
			p := start(t, bins.mecha, args...)
			code := p.wait(30 * time.Second)
			if code == 0 {
				t.Fatalf("mecha started despite %s", c.name)
			}
			if !strings.Contains(p.output(), c.want) {
				t.Fatalf("error does not say %q:\n%s", c.want, p.output())
			}
			if strings.Contains(p.output(), "panic") {
				t.Fatalf("mecha panicked:\n%s", p.output())
			}
		})
	}
	t.Run("broker port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		p := start(t, bins.mecha, "run", "--app-id", "x", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--internal-port", "0", "--gossip-port", "0", "--gossip-bind-address", "127.0.0.1",
			"--data-dir", t.TempDir(), "--broker-port", fmt.Sprint(port))
		want := fmt.Sprintf("address already in use (--broker-port %d; 0 picks a free port, --broker=false turns the broker off)", port)
		if code := p.wait(30 * time.Second); code == 0 || !strings.Contains(p.output(), want) {
			t.Fatalf("exit %d, want an error saying %q:\n%s", code, want, p.output())
		}
	})
	t.Run("bad --config", func(t *testing.T) {
		cfg := writeFile(t, t.TempDir(), "config.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  features:\n  - enabled: true\n")
		p := start(t, bins.mecha, "run", "--app-id", "x", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--internal-port", "0", "--gossip-port", "0", "--gossip-bind-address", "127.0.0.1", "--broker-port", "-1", "--data-dir", t.TempDir(), "--config", cfg)
		if code := p.wait(30 * time.Second); code == 0 || !strings.Contains(p.output(), "config.yaml: spec.features[0].name: must be set") {
			t.Fatalf("exit %d:\n%s", code, p.output())
		}
	})
	t.Run("a valid --config enables features", func(t *testing.T) {
		cfg := writeFile(t, t.TempDir(), "config.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  features:\n  - name: HotReload\n    enabled: true\n")
		m := startMecha(t, "--app-id", "x", "--config", cfg)
		if r := do(t, "GET", m.url("/v1.0/metadata"), nil); !strings.Contains(string(r.Body), `"enabledFeatures":["HotReload"]`) {
			t.Fatalf("metadata = %s", r.Body)
		}
	})
	t.Run("ignoreErrors skips a failing component", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, "mysql.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.mysql\n  version: v1\n  ignoreErrors: true\n  initTimeout: 1s\n  metadata:\n  - name: connectionString\n    value: u:p@tcp(127.0.0.1:1)/db\n")
		m := startMecha(t, "--app-id", "x", "--resources-path", dir)
		// The embedded statestore stays; the skipped store is not there.
		expectError(t, do(t, "GET", m.url("/v1.0/state/s/k"), nil), 400, "ERR_STATE_STORE_NOT_FOUND")
	})
}

func TestChildProcess(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env.txt")
	p := start(t, bins.mecha, "run", "--app-id", "kid", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--internal-port", "0", "--gossip-port", "0", "--gossip-bind-address", "127.0.0.1",
		"--broker-port", "-1", "--data-dir", t.TempDir(), "--", "sh", "-c", `echo "$DAPR_HTTP_PORT $DAPR_GRPC_PORT $APP_ID" > `+out+`; exit 3`)
	if code := p.wait(30 * time.Second); code != 3 {
		t.Fatalf("mecha exited %d, want the app's 3:\n%s", code, p.output())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	g := apiRE.FindStringSubmatch(p.output())
	if g == nil {
		t.Fatalf("no ports logged:\n%s", p.output())
	}
	if want := g[1] + " " + g[2] + " kid\n"; string(b) != want {
		t.Fatalf("child env %q, want %q", b, want)
	}
}

func TestSignalForwardingAndShutdown(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "got-term")
	ready := filepath.Join(dir, "ready")
	p := start(t, bins.mecha, "run", "--app-id", "sig", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--internal-port", "0", "--gossip-port", "0", "--gossip-bind-address", "127.0.0.1",
		"--broker-port", "-1", "--data-dir", t.TempDir(), "--", "sh", "-c", `trap "echo term > `+marker+`; exit 0" TERM; touch `+ready+`; while true; do sleep 0.05; done`)
	p.waitLine(apiRE, 20*time.Second)
	eventually(t, 10*time.Second, func() error { _, err := os.Stat(ready); return err })
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("mecha exited %d:\n%s", code, p.output())
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the app did not get SIGTERM:\n%s", p.output())
	}

	// The shutdown API stops the runtime gracefully.
	m := startMecha(t, "--app-id", "bye")
	expectStatus(t, do(t, "POST", m.url("/v1.0/shutdown"), nil), 204)
	if code := m.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d after shutdown API:\n%s", code, m.output())
	}
	if !strings.Contains(m.output(), "shutdown complete") {
		t.Fatalf("no graceful shutdown:\n%s", m.output())
	}
}

func TestAppHealthCheck(t *testing.T) {
	sick := filepath.Join(t.TempDir(), "sick")
	appPort := startHTTPApp(t, "UNHEALTHY_FILE="+sick)
	writeFile(t, filepath.Dir(sick), "sick", "")
	m := startMechaNoWait(t, "--app-id", "hc", "--app-port", fmt.Sprint(appPort), "--enable-app-health-check",
		"--app-health-probe-interval", "100ms", "--app-health-threshold", "1")
	// The outbound API serves while the app is not healthy (Dapr #1933),
	// but the runtime is not ready.
	expectStatus(t, do(t, "GET", m.url("/v1.0/healthz/outbound"), nil), 204)
	expectStatus(t, do(t, "POST", m.url("/v1.0/state/statestore"), `[{"key":"early","value":1}]`), 204)
	expectError(t, do(t, "GET", m.url("/v1.0/healthz"), nil), 500, "ERR_HEALTH_NOT_READY")
	os.Remove(sick)
	m.waitHealthy(t)
	m.waitLine(regexp.MustCompile(`app is healthy`), 5*time.Second)
	writeFile(t, filepath.Dir(sick), "sick", "")
	m.waitLine(regexp.MustCompile(`app is unhealthy; pausing deliveries`), 5*time.Second)
}

// TestGracefulShutdownDrains checks that a SIGTERM lets an invocation and a
// pub/sub delivery that are under way finish before mecha exits (Dapr
// #8332).
func TestGracefulShutdownDrains(t *testing.T) {
	appPort := startHTTPApp(t)
	m := startMecha(t, "--app-id", "drain", "--app-port", fmt.Sprint(appPort))
	inflight := func() string {
		return string(do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/inflight", appPort), nil).Body)
	}
	expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/slow-topic"), `{"slow":1}`, "Content-Type", "application/json"), 204)
	invoked := make(chan response, 1)
	go func() {
		invoked <- do(t, "GET", m.url("/v1.0/invoke/drain/method/echo/slow?sleepms=1000"), nil)
	}()
	eventually(t, 10*time.Second, func() error {
		if n := inflight(); n != "2" {
			return fmt.Errorf("%s requests in flight at the app, want 2", n)
		}
		return nil
	})
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	r := <-invoked
	expectStatus(t, r, 200)
	if code := m.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, m.output())
	}
	// mecha exited only after the app answered both.
	if n := inflight(); n != "0" {
		t.Fatalf("mecha exited with %s requests still in flight at the app", n)
	}
	if n := len(received(t, appPort, "slow")); n != 1 {
		t.Fatalf("slow delivery finished %d times, want 1", n)
	}
	if strings.Contains(m.output(), "still in flight") {
		t.Fatalf("drain gave up:\n%s", m.output())
	}
}

// The app dies with its runtime, even by kill -9, and so do the
// processes it started: a shell wrapper's app (as `npm start` runs node)
// no longer holds its port for the next `mecha run`. Reproduced defect:
// the app lived on under PID 1.
func TestAppDiesWithTheRuntime(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pids")
	// sh starts a grandchild (sleep) and waits: both must go.
	p := start(t, bins.mecha, "run", "--app-id", "orphan", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--internal-port", "0", "--gossip-port", "0",
		"--broker=false", "--data-dir", t.TempDir(), "--", "sh", "-c", `sleep 600 & echo "$$ $!" > `+pidFile+`; wait`)
	p.waitLine(apiRE, 20*time.Second)
	var shPID, sleepPID int
	eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return err
		}
		if _, err := fmt.Sscan(string(b), &shPID, &sleepPID); err != nil {
			return err
		}
		return nil
	})
	alive := func(pid int) bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// A zombie is dead: only its parent has not reaped it yet.
		return err == nil && !strings.Contains(string(b), ") Z ")
	}
	if !alive(shPID) || !alive(sleepPID) {
		t.Fatal("the app is not running")
	}
	_ = p.cmd.Process.Kill() // kill -9
	p.wait(10 * time.Second)
	eventually(t, 10*time.Second, func() error {
		if alive(shPID) || alive(sleepPID) {
			return fmt.Errorf("after kill -9 of mecha: app alive %v, its child alive %v", alive(shPID), alive(sleepPID))
		}
		return nil
	})
}

// On a host with only loopback (a container without a network), plain
// `mecha run --app-id myapp` starts and serves: single-host needs no
// private IP. Reproduced defect: it exited with "no private IP address
// found".
func TestLoopbackOnlyHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a network namespace needs root; skipped")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux); skipped")
	}
	data := t.TempDir()
	// Inside a fresh network namespace with only lo up, mecha starts on
	// its default ports and healthz answers there.
	script := fmt.Sprintf(`ip link set lo up || exit 1
%s run --app-id myapp --data-dir %s & pid=$!
trap 'kill $pid; wait $pid' EXIT
for i in $(seq 300); do
  if exec 3<>/dev/tcp/127.0.0.1/3500 2>/dev/null; then
    printf 'GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3; head -1 <&3; exit 0
  fi
  kill -0 $pid 2>/dev/null || exit 1
  sleep 0.1
done
exit 1`, bins.mecha, data)
	out, err := exec.Command("unshare", "--net", "--fork", "bash", "-c", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "HTTP/1.1 204") {
		t.Fatalf("mecha in a loopback-only network: %v\n%s", err, out)
	}
}
