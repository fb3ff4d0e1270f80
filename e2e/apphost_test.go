package e2e

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// An app of --app gets everything the --app-id app gets: its own input
// bindings (here a cron binding scoped to it, whose reply saves state
// under its own keys), stream job sinks (sink.app), its own consumer
// group, and subscriptions that a hot reload adds.
func TestEveryAppGetsTheWholeHost(t *testing.T) {
	firstPort, secondPort := startHTTPApp(t), startHTTPApp(t)
	res := t.TempDir()
	writeFile(t, res, "components.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: statestore}
spec: {type: state.in-memory, version: v1}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: pubsub}
spec: {type: pubsub.mecha, version: v1}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: mybinding}
spec:
  type: bindings.cron
  version: v1
  metadata:
  - {name: schedule, value: "@every 1s"}
scopes: [second]
---
`+clickCountJob("clicks-to-second", `  sink:
    type: app
    route: /stream-results
    app: second
`))
	m := startMecha(t, "--app-id", "first", "--app-port", fmt.Sprint(firstPort), "--app", fmt.Sprintf("id=second,port=%d", secondPort), "--resources-path", res)
	g := hostedRE.FindStringSubmatch(m.output())
	if g == nil {
		t.Fatalf("no app API line for the second app:\n%s", m.output())
	}
	second := "http://127.0.0.1:" + g[2]

	// The cron binding reaches the second app only, and its reply saves
	// state under the second app's keys.
	waitReceived(t, secondPort, "mybinding", 1)
	eventually(t, 10*time.Second, func() error {
		r := do(t, "GET", second+"/v1.0/state/statestore/from-binding", nil)
		if r.Status != 200 || string(r.Body) != `{"seen":true}` {
			return fmt.Errorf("second's from-binding: %d %s", r.Status, r.Body)
		}
		return nil
	})
	if r := do(t, "GET", m.url("/v1.0/state/statestore/from-binding"), nil); r.Status != 204 {
		t.Errorf("the first app sees the second's binding state: %d %s", r.Status, r.Body)
	}
	if n := len(received(t, firstPort, "mybinding")); n != 0 {
		t.Errorf("the first app got %d events of a binding scoped to the second", n)
	}

	// A stream job's app sink with sink.app: second.
	for _, c := range []struct {
		page string
		ts   int
	}{{"home", 100}, {"home", 5000}} {
		expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/clicks"), fmt.Sprintf(`{"page":%q,"ts":%d}`, c.page, c.ts), "Content-Type", "application/json"), 204)
	}
	waitReceived(t, secondPort, "stream-results", 1)

	// A Subscription added while running, scoped to the second app.
	writeFile(t, res, "late.yaml", `apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: late}
spec:
  pubsubname: pubsub
  topic: late
  routes: {default: /declarative}
scopes: [second]
`)
	eventually(t, 15*time.Second, func() error {
		var md struct {
			Subscriptions []struct{ Topic string } `json:"subscriptions"`
		}
		do(t, "GET", second+"/v1.0/metadata", nil).json(t, &md)
		for _, s := range md.Subscriptions {
			if s.Topic == "late" {
				return nil
			}
		}
		return fmt.Errorf("the second app's subscriptions: %+v", md.Subscriptions)
	})
	eventually(t, 15*time.Second, func() error {
		expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/late"), `{"n":1}`, "Content-Type", "application/json"), 204)
		if len(received(t, secondPort, "declarative")) == 0 {
			return fmt.Errorf("nothing on /declarative yet")
		}
		return nil
	})
	if n := len(received(t, firstPort, "declarative")); n != 0 {
		t.Errorf("the first app got %d events of a subscription scoped to the second", n)
	}
}

// A hot reload that changes state.crux (it holds its data directory
// locked) takes effect, under a write load, without failing a request
// or losing an acknowledged write. Reproduced defect: the new instance
// failed with "data directory is in use" and the old one stayed.
func TestCruxHotReloadUnderLoad(t *testing.T) {
	res := t.TempDir()
	data := t.TempDir()
	cruxYAML := func(maxValue int) string {
		return fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: statestore}
spec:
  type: state.crux
  version: v1
  metadata:
  - {name: dataDir, value: %s}
  - {name: maxValueBytes, value: "%d"}
`, data, maxValue)
	}
	file := writeFile(t, res, "crux.yaml", cruxYAML(200))
	m := startMecha(t, "--app-id", "reload", "--resources-path", res)
	big := fmt.Sprintf(`[{"key":"big","value":%q}]`, strings.Repeat("a", 500))
	expectError(t, do(t, "POST", m.url("/v1.0/state/statestore"), big), 500, "ERR_STATE_SAVE") // as daprd answers a store's refusal

	// Writers save keys as fast as they can while the component reloads.
	var (
		stop   atomic.Bool
		failed atomic.Int64
		mu     sync.Mutex
		acked  []string
		wg     sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				key := fmt.Sprintf("w%d-%d", w, i)
				resp, err := client.Post(m.url("/v1.0/state/statestore"), "application/json",
					strings.NewReader(fmt.Sprintf(`[{"key":%q,"value":%d}]`, key, i)))
				if err != nil {
					failed.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 204 {
					failed.Add(1)
					continue
				}
				mu.Lock()
				acked = append(acked, key)
				mu.Unlock()
			}
		}()
	}
	eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 200 {
			return fmt.Errorf("%d writes so far", len(acked))
		}
		return nil
	})
	if err := os.WriteFile(file, []byte(cruxYAML(1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		if r := do(t, "POST", m.url("/v1.0/state/statestore"), big); r.Status != 204 {
			return fmt.Errorf("a 500-byte value after raising maxValueBytes: %d %s", r.Status, r.Body)
		}
		return nil
	})
	stop.Store(true)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d writes failed across the reload", n)
	}
	// The line is logged once the new store serves, and read from the
	// process's output as it comes.
	eventually(t, 10*time.Second, func() error {
		if !regexp.MustCompile(`component loaded.*name=statestore.*op=updated`).MatchString(m.output()) {
			return fmt.Errorf("no reload of statestore logged:\n%s", m.output())
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for _, key := range acked {
		r := do(t, "GET", m.url("/v1.0/state/statestore/"+key), nil)
		want := key[len(key)-len(suffix(key)):]
		if r.Status != 200 || string(r.Body) != want {
			t.Fatalf("acknowledged %s reads %d %q after the reload, want %s", key, r.Status, r.Body, want)
		}
	}
	t.Logf("%d writes acknowledged across the reload, none failed", len(acked))
}

// suffix is the number after the last '-' of a key.
func suffix(key string) string {
	for i := len(key) - 1; i >= 0; i-- {
		if key[i] == '-' {
			return key[i+1:]
		}
	}
	return key
}
