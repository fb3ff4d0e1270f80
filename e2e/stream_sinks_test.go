package e2e

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestStreamJobAppAndPubSubSinks declares two StreamJobs counting the
// clicks an app publishes, per page in 1 s event-time windows: one with an
// app sink, whose results arrive as HTTP POSTs at the app's route, and one
// with a pubsub sink, whose results arrive through the app's subscription
// as CloudEvents. Each window arrives once, in the order the windows
// close, with its count.
func TestStreamJobAppAndPubSubSinks(t *testing.T) {
	appPort := startHTTPApp(t)
	dir := t.TempDir()
	writeFile(t, dir, "resources.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.mecha
  version: v1
---
`+clickCountJob("clicks-to-app", `  sink:
    type: app
    route: /stream-results
`)+`---
`+clickCountJob("clicks-to-pubsub", `  sink:
    type: pubsub
    topic: orders
`))
	m := startMecha(t, "--app-id", "clickapp", "--app-port", fmt.Sprint(appPort), "--resources-path", dir)
	click := func(page string, ts int) {
		t.Helper()
		expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/clicks"), fmt.Sprintf(`{"page":%q,"ts":%d}`, page, ts), "Content-Type", "application/json"), 204)
	}
	for _, c := range []struct {
		page string
		ts   int
	}{{"home", 100}, {"cart", 200}, {"home", 900}, {"home", 1500}, {"cart", 2100}, {"home", 5000}} {
		click(c.page, c.ts)
	}
	// The click at 5 s closed the windows before it, in order of their
	// end, then key.
	want := []string{"clicks-to-app cart@0-1000=1", "clicks-to-app home@0-1000=2", "clicks-to-app home@1000-2000=1", "clicks-to-app cart@2000-3000=1"}
	windows := func(bodies []json.RawMessage) []string {
		t.Helper()
		var out []string
		for _, b := range bodies {
			var o struct {
				Job         string `json:"job"`
				Key         string `json:"key"`
				WindowStart int64  `json:"windowStart"`
				WindowEnd   int64  `json:"windowEnd"`
				Value       int    `json:"value"`
			}
			if err := json.Unmarshal(b, &o); err != nil {
				t.Fatalf("result %s: %v", b, err)
			}
			out = append(out, fmt.Sprintf("%s %s@%d-%d=%d", o.Job, o.Key, o.WindowStart, o.WindowEnd, o.Value))
		}
		return out
	}
	appResults := func(n int) []string {
		t.Helper()
		var bodies []json.RawMessage
		for _, r := range waitReceived(t, appPort, "stream-results", n) {
			if ct := r.Headers["Content-Type"]; !strings.HasPrefix(ct, "application/json") {
				t.Errorf("app sink POST with Content-Type %q, want application/json", ct)
			}
			bodies = append(bodies, r.Body)
		}
		return windows(bodies)
	}
	pubsubResults := func(n int) []string {
		t.Helper()
		var bodies []json.RawMessage
		for _, r := range waitReceived(t, appPort, "orders", n) {
			var ev ce
			if err := json.Unmarshal(r.Body, &ev); err != nil || ev.Topic != "orders" || ev.PubsubName != "pubsub" {
				t.Fatalf("pubsub sink delivery is not a CloudEvent of pubsub/orders: %s", r.Body)
			}
			bodies = append(bodies, ev.Data)
		}
		return windows(bodies)
	}
	if got := appResults(len(want)); !reflect.DeepEqual(got, want) {
		t.Fatalf("app sink received\n%q\nwant\n%q", got, want)
	}
	// One more window, to see that nothing came twice before it.
	click("home", 10000)
	want = append(want, "clicks-to-app home@5000-6000=1")
	if got := appResults(len(want)); !reflect.DeepEqual(got, want) {
		t.Fatalf("app sink received\n%q\nwant\n%q", got, want)
	}
	for i := range want {
		want[i] = strings.Replace(want[i], "clicks-to-app", "clicks-to-pubsub", 1)
	}
	if got := pubsubResults(len(want)); !reflect.DeepEqual(got, want) {
		t.Fatalf("pubsub sink delivered\n%q\nwant\n%q", got, want)
	}
}
