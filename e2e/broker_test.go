package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestBrokerPubSubAcrossRestarts publishes through the Dapr API into the
// embedded broker (pubsub.mecha, the default pubsub) and restarts mecha on
// the same data dir: events acknowledged by the app are not delivered
// again, and events published while the subscriber was away are.
func TestBrokerPubSubAcrossRestarts(t *testing.T) {
	appPort := startHTTPApp(t)
	dir := t.TempDir()
	run := func(appID string, withApp bool) *mecha {
		args := []string{"--app-id", appID, "--data-dir", dir}
		if withApp {
			args = append(args, "--app-port", fmt.Sprint(appPort))
		}
		return startMecha(t, args...)
	}
	publish := func(m *mecha, from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/orders"), fmt.Sprintf(`{"n":%d}`, i), "Content-Type", "application/json"), 204)
		}
	}
	numbers := func(recs []rec) []int {
		var out []int
		for _, r := range recs {
			var ev struct {
				Data struct{ N int } `json:"data"`
			}
			if err := json.Unmarshal(r.Body, &ev); err != nil {
				t.Fatalf("delivery is not a CloudEvent: %s", r.Body)
			}
			out = append(out, ev.Data.N)
		}
		return out
	}

	m1 := run("subber", true)
	publish(m1, 0, 5)
	waitReceived(t, appPort, "orders", 5)
	m1.proc.stop()

	// Another app publishes while the subscriber is down.
	m2 := run("publisher", false)
	publish(m2, 5, 10)
	m2.proc.stop()

	m3 := run("subber", true)
	waitReceived(t, appPort, "orders", 10)
	// Nothing more may arrive: give a late duplicate the chance to show by
	// publishing a marker and waiting for it.
	publish(m3, 10, 11)
	got := numbers(waitReceived(t, appPort, "orders", 11))
	want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("deliveries across restarts = %v, want %v (each once, in order)", got, want)
	}
}

// TestBrokerKafkaClientInterop points a plain Kafka client (franz-go) at
// the broker inside `mecha run`: records it produces reach the app through
// the subscription, and events published through the Dapr API are
// CloudEvents on the topic.
func TestBrokerKafkaClientInterop(t *testing.T) {
	appPort := startHTTPApp(t)
	m := startMecha(t, "--app-id", "interop", "--app-port", fmt.Sprint(appPort))
	addr := fmt.Sprintf("127.0.0.1:%d", m.brokerPort)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// A plain record with its content type in a header: wrapped in a
	// CloudEvent (as Dapr wraps raw payloads) whose data is the record.
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Key: []byte("k"), Value: []byte(`{"from":"kafka"}`),
		Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte("application/json")}}}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := waitReceived(t, appPort, "orders", 1)
	var ev struct {
		ce
		DataContentType string `json:"datacontenttype"`
	}
	if err := json.Unmarshal(got[0].Body, &ev); err != nil || ev.SpecVersion != "1.0" || ev.DataContentType != "application/json" || string(ev.Data) != `{"from":"kafka"}` {
		t.Fatalf("app got %s (%v), want the Kafka record's payload in a CloudEvent", got[0].Body, err)
	}
	expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/orders"), `{"from":"dapr"}`, "Content-Type", "application/json"), 204)
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("the Dapr-published event never showed up on the topic")
		}
		var found bool
		fs.EachRecord(func(r *kgo.Record) {
			var ev ce
			if json.Unmarshal(r.Value, &ev) == nil && ev.SpecVersion == "1.0" && string(ev.Data) == `{"from":"dapr"}` && ev.Source == "interop" {
				found = true
			}
		})
		if found {
			return
		}
	}
}

// TestBrokerBindings runs bindings.mecha both ways through `mecha run`:
// the output binding produces to a topic of the embedded broker, and the
// input binding consumes it and POSTs each record to the app.
func TestBrokerBindings(t *testing.T) {
	appPort := startHTTPApp(t)
	dir := t.TempDir()
	writeFile(t, dir, "bindings.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: mybinding
spec:
  type: bindings.mecha
  version: v1
  metadata:
  - name: topics
    value: binding-events
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: events-out
spec:
  type: bindings.mecha
  version: v1
  metadata:
  - name: publishTopic
    value: binding-events
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.crux
  version: v1
`)
	m := startMecha(t, "--app-id", "binder", "--app-port", fmt.Sprint(appPort), "--resources-path", dir)
	for i := 0; i < 3; i++ {
		r := do(t, "POST", m.url("/v1.0/bindings/events-out"), fmt.Sprintf(`{"operation":"create","data":{"n":%d},"metadata":{"key":"k"}}`, i))
		expectStatus(t, r, 200)
	}
	// Each record arrives once and in order. (The app's reply saves state
	// in statestore; a reply that failed would be retried and show up
	// here as a duplicate.)
	got := waitReceived(t, appPort, "mybinding", 3)
	for i, r := range got[:3] {
		if want := fmt.Sprintf(`{"n":%d}`, i); string(r.Body) != want {
			t.Fatalf("binding delivery %d = %s, want %s", i, r.Body, want)
		}
	}
	// The app's reply to an input binding may save state: it went through.
	r := do(t, "GET", m.url("/v1.0/state/statestore/from-binding"), nil)
	if r.Status != 200 || string(r.Body) != `{"seen":true}` {
		t.Fatalf("state saved by the binding reply: %d %s", r.Status, r.Body)
	}
}

// TestStreamJobInMechaRun declares a StreamJob next to the components:
// events an app publishes through the Dapr API are counted per page in
// 1 s event-time windows, and the results land on a topic.
func TestStreamJobInMechaRun(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "resources.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.mecha
  version: v1
---
`+clickCountJob("clicks-per-page", `  sink:
    type: topic
    topic: clicks-per-page
`)+`---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.crux
  version: v1
---
`+clickCountJob("clicks-state", `  sink:
    type: state
`))
	m := startMecha(t, "--app-id", "clicker", "--resources-path", dir)
	clicks := []struct {
		page string
		ts   int
	}{{"home", 100}, {"cart", 200}, {"home", 900}, {"home", 1500}, {"cart", 2100}, {"home", 5000}}
	for _, c := range clicks {
		expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/clicks"), fmt.Sprintf(`{"page":%q,"ts":%d}`, c.page, c.ts), "Content-Type", "application/json"), 204)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(fmt.Sprintf("127.0.0.1:%d", m.brokerPort)), kgo.AllowAutoTopicCreation(),
		kgo.ConsumeTopics("clicks-per-page"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The last click (t=5000) moves the watermark past the first windows.
	want := map[string]float64{"home@0": 2, "cart@0": 1, "home@1000": 1, "cart@2000": 1}
	got := map[string]float64{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(got) < len(want) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("windows so far %v, want %v", got, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			var o struct {
				Key         string  `json:"key"`
				WindowStart int64   `json:"windowStart"`
				Value       float64 `json:"value"`
			}
			if err := json.Unmarshal(r.Value, &o); err != nil {
				t.Fatalf("result %s: %v", r.Value, err)
			}
			got[fmt.Sprintf("%s@%d", o.Key, o.WindowStart)] = o.Value
		})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("windows %v, want %v", got, want)
	}
	// The control API on the metrics port, through the CLI.
	admin := fmt.Sprintf("127.0.0.1:%d", m.metricsPort)
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bins.mecha, append([]string{"stream", "--admin", admin}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("mecha stream %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := cli("-o", "json", "list"); !strings.Contains(out, `"job": "clicks-per-page"`) || !strings.Contains(out, `"in": 6`) {
		t.Fatalf("mecha stream -o json list:\n%s", out)
	}
	if out := cli("list"); !regexp.MustCompile(`(?m)^JOB +SOURCE +STATE`).MatchString(out) || !regexp.MustCompile(`(?m)^clicks-per-page +clicks +running +`).MatchString(out) {
		t.Fatalf("mecha stream list (a table):\n%s", out)
	}
	// pause answers the state it set; reading follows at the end of the
	// poll under way.
	if out := cli("pause", "clicks-per-page"); !strings.Contains(out, `"paused": true`) {
		t.Fatalf("mecha stream pause:\n%s", out)
	}
	eventually(t, 10*time.Second, func() error {
		if out := cli("status", "clicks-per-page"); !strings.Contains(out, `"reading": false`) {
			return fmt.Errorf("still reading:\n%s", out)
		}
		return nil
	})
	if out := cli("set", "clicks-per-page", "--rate", "1000", "--sampling", "0.5"); !strings.Contains(out, `"rateLimit": 1000`) || !strings.Contains(out, `"sampling": 0.5`) {
		t.Fatalf("mecha stream set:\n%s", out)
	}
	if out, err := exec.Command(bins.mecha, "stream", "--admin", admin, "pause", "no-such-job").CombinedOutput(); err == nil || !strings.Contains(string(out), `no stream job`) {
		t.Fatalf("pausing an unknown job: %v\n%s", err, out)
	}

	// The second job writes the same windows to the state store, where
	// the app reads them under "<job>:<key>:<window start>".
	eventually(t, 15*time.Second, func() error {
		r := do(t, "GET", m.url("/v1.0/state/statestore/clicks-state:home:0"), nil)
		if r.Status != 200 || !strings.Contains(string(r.Body), `"value":2`) {
			return fmt.Errorf("state sink: %d %s", r.Status, r.Body)
		}
		return nil
	})
}

// TestStreamJobKill9ExactlyOnceState kills mecha (kill -9) while a stream
// job counts clicks into Crux, restarts it on the same data dir, and
// checks every window's count in the state store against the clicks
// published: the job resumes from its checkpoint, and the windows it
// re-fires overwrite their own keys, so nothing is lost or counted twice.
func TestStreamJobKill9ExactlyOnceState(t *testing.T) {
	res := t.TempDir()
	writeFile(t, res, "resources.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.mecha
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.crux
  version: v1
---
`+clickCountJob("counts", `  sink:
    type: state
  checkpoint:
    interval: 100ms
`))
	data := t.TempDir()
	run := func() *mecha {
		return startMecha(t, "--app-id", "counter", "--resources-path", res, "--data-dir", data)
	}
	clicks := &clickStream{}
	m := run()
	clicks.publish(t, m, 0, 120)
	// Wait for a checkpoint past the first windows, then kill -9.
	eventually(t, 20*time.Second, func() error {
		r := do(t, "GET", m.url("/v1.0/state/statestore/counts:home:1000"), nil)
		if r.Status != 200 {
			return fmt.Errorf("first windows not in the state store yet: %d", r.Status)
		}
		if _, err := os.Stat(filepath.Join(data, "stream", "counts", "checkpoint.json")); err != nil {
			return err
		}
		return nil
	})
	clicks.publish(t, m, 120, 160)
	if err := m.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	m.proc.wait(10 * time.Second)

	m = run()
	m.proc.waitLine(regexp.MustCompile(`stream: resumed from checkpoint.* job=counts`), 20*time.Second)
	clicks.publish(t, m, 160, 300)
	clicks.check(t, m, clicks.counts)
}

// clickStream publishes the clicks of the stream job tests through a
// runtime's pubsub, and keeps the reference: click i is on page home or
// cart in turn, by user u<i mod 7>, at event time i×50 ms.
type clickStream struct {
	counts map[string]int             // clicks per window key
	users  map[string]map[string]bool // distinct users per window key
}

func (c *clickStream) publish(t *testing.T, m *mecha, from, to int) {
	t.Helper()
	if c.counts == nil {
		c.counts, c.users = map[string]int{}, map[string]map[string]bool{}
	}
	for i := from; i < to; i++ {
		page, user, ts := []string{"home", "cart"}[i%2], fmt.Sprintf("u%d", i%7), i*50
		key := fmt.Sprintf("counts:%s:%d", page, ts/1000*1000)
		c.counts[key]++
		if c.users[key] == nil {
			c.users[key] = map[string]bool{}
		}
		c.users[key][user] = true
		// (Retried: a cluster's topic may be moving its leader.)
		eventually(t, 20*time.Second, func() error {
			r := do(t, "POST", m.url("/v1.0/publish/pubsub/clicks"), fmt.Sprintf(`{"page":%q,"user":%q,"ts":%d}`, page, user, ts), "Content-Type", "application/json")
			if r.Status != 204 {
				return fmt.Errorf("publish: %d %s", r.Status, r.Body)
			}
			return nil
		})
	}
}

// check publishes one click far ahead, which closes every window before
// it, then waits until each window key's value read through m is want's.
func (c *clickStream) check(t *testing.T, m *mecha, want map[string]int) {
	t.Helper()
	expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/clicks"), `{"page":"end","user":"x","ts":100000}`, "Content-Type", "application/json"), 204)
	for key, n := range want {
		eventually(t, 30*time.Second, func() error {
			r := do(t, "GET", m.url("/v1.0/state/statestore/"+key), nil)
			var o struct{ Value int }
			if r.Status != 200 || json.Unmarshal(r.Body, &o) != nil || o.Value != n {
				return fmt.Errorf("%s = %d %s, want %d", key, r.Status, r.Body, n)
			}
			return nil
		})
	}
}

// distinct is the reference's distinct users per window key.
func (c *clickStream) distinct() map[string]int {
	out := map[string]int{}
	for k, us := range c.users {
		out[k] = len(us)
	}
	return out
}

// clickCountJob is a StreamJob counting the clicks topic's events per
// page in 1 s event-time windows; sink is its YAML from "  sink:" on.
func clickCountJob(name, sink string) string { return clickJob(name, "count", sink) }

// clickJob is a StreamJob aggregating the clicks topic's events per page
// in 1 s event-time windows: "count", or "countDistinct" of their users
// (the UV).
func clickJob(name, aggregate, sink string) string {
	user, field := "", ""
	if aggregate == "countDistinct" {
		user, field = "    user: data.user\n", "    field: user\n"
	}
	return `apiVersion: mecha.io/v1alpha1
kind: StreamJob
metadata:
  name: ` + name + `
spec:
  source:
    topic: clicks
    eventTimeField: ts
  map:
    page: data.page
` + user + `    ts: data.ts
  keyBy: page
  window:
    type: tumbling
    size: 1s
  aggregate:
    type: ` + aggregate + "\n" + field + sink
}

// Records a plain Kafka client produced, without a CloudEvent envelope,
// reach the subscriber wrapped as Dapr wraps raw payloads (data_base64,
// application/octet-stream without a content type of their own); an
// event the app fails every time (a poison event) is dropped after the
// retries when the subscription has no dead-letter topic, so the events
// behind it on its partition are delivered. Reproduced defect: a raw
// record was delivered as it was, labelled a CloudEvent, and one the app
// failed was redelivered forever, blocking its partition.
func TestPlainKafkaRecordsAndPoisonEvents(t *testing.T) {
	appPort := startHTTPApp(t)
	res := t.TempDir()
	writeFile(t, res, "poison.yaml", `apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: poison}
spec:
  pubsubname: pubsub
  topic: poison
  routes:
    rules:
    - {match: 'event.type == "good"', path: /orders}
    default: /fail
`)
	m := startMecha(t, "--app-id", "plain", "--app-port", fmt.Sprint(appPort), "--resources-path", res)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(fmt.Sprintf("127.0.0.1:%d", m.brokerPort)), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("hello")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := waitReceived(t, appPort, "orders", 1)
	var ev struct {
		SpecVersion     string `json:"specversion"`
		DataContentType string `json:"datacontenttype"`
		DataBase64      string `json:"data_base64"`
		Topic           string `json:"topic"`
	}
	if err := json.Unmarshal(got[0].Body, &ev); err != nil || ev.SpecVersion != "1.0" || ev.DataContentType != "application/octet-stream" ||
		ev.DataBase64 != "aGVsbG8=" || ev.Topic != "orders" {
		t.Fatalf("the app got %s (%v), want a CloudEvent wrapping the raw record", got[0].Body, err)
	}

	// A poison record, then a good one behind it on the same partition.
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "poison", Value: []byte("bad")},
		&kgo.Record{Topic: "poison", Value: []byte(`{"specversion":"1.0","type":"good","id":"g1","source":"kafka","datacontenttype":"application/json","data":{"ok":true}}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		for _, r := range received(t, appPort, "orders") {
			if strings.Contains(string(r.Body), `"id":"g1"`) {
				return nil
			}
		}
		return fmt.Errorf("the event behind the poison one has not arrived")
	})
	if n := len(received(t, appPort, "fail")); n < 2 {
		t.Errorf("the poison event was tried %d times, want its retries", n)
	}
	if !strings.Contains(m.output(), "delivery failed after retries; event dropped") {
		t.Errorf("no log line for the dropped event:\n%s", m.output())
	}
}

// StreamJob files hot-reload like components: a new one starts, a
// changed one restarts, a removed one stops.
func TestStreamJobHotReload(t *testing.T) {
	res := t.TempDir()
	writeFile(t, res, "pubsub.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.mecha\n  version: v1\n")
	m := startMecha(t, "--app-id", "jobs", "--resources-path", res)
	admin := fmt.Sprintf("127.0.0.1:%d", m.metricsPort)
	list := func() string {
		out, err := exec.Command(bins.mecha, "stream", "--admin", admin, "-o", "json", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("mecha stream list: %v\n%s", err, out)
		}
		return string(out)
	}
	job := func(rate string) string {
		return "apiVersion: mecha.io/v1alpha1\nkind: StreamJob\nmetadata:\n  name: passthrough\nspec:\n  source: {topic: in, rateLimit: " + rate + "}\n  sink: {type: topic, topic: out}\n"
	}
	file := writeFile(t, res, "job.yaml", job("100"))
	eventually(t, 15*time.Second, func() error {
		if out := list(); !strings.Contains(out, `"job": "passthrough"`) || !strings.Contains(out, `"rateLimit": 100`) {
			return fmt.Errorf("the new job is not running:\n%s", out)
		}
		return nil
	})
	writeFile(t, res, "job.yaml", job("200"))
	eventually(t, 15*time.Second, func() error {
		if out := list(); !strings.Contains(out, `"rateLimit": 200`) {
			return fmt.Errorf("the changed job did not restart:\n%s", out)
		}
		return nil
	})
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		if out := list(); strings.Contains(out, "passthrough") {
			return fmt.Errorf("the removed job still runs:\n%s", out)
		}
		return nil
	})
}

// README's stream example works as written: the example job reads the
// CloudEvents that `mecha stream gen --template examples/stream/clicks.json`
// writes, none to its dead-letter topic. Reproduced defect: the job
// mapped data.page while the generator wrote bare JSON, and every record
// went to the dead-letter topic.
func TestReadmeStreamExample(t *testing.T) {
	examples, _ := filepath.Abs("../examples/stream")
	m := startMecha(t, "--app-id", "clicks", "--resources-path", examples)
	admin := fmt.Sprintf("127.0.0.1:%d", m.metricsPort)
	out, err := exec.Command(bins.mecha, "stream", "gen", "--brokers", fmt.Sprintf("127.0.0.1:%d", m.brokerPort), "--topic", "clicks",
		"--template", filepath.Join(examples, "clicks.json"), "--count", "500").CombinedOutput()
	if err != nil {
		t.Fatalf("mecha stream gen: %v\n%s", err, out)
	}
	eventually(t, 20*time.Second, func() error {
		out, err := exec.Command(bins.mecha, "stream", "--admin", admin, "-o", "json", "status", "uv-per-page").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var st struct {
			In           int64 `json:"in"`
			DeadLettered int64 `json:"deadLettered"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return err
		}
		if st.DeadLettered != 0 {
			t.Fatalf("%d generated records went to the dead-letter topic:\n%s", st.DeadLettered, out)
		}
		if st.In < 500 {
			return fmt.Errorf("the job read %d of 500 records", st.In)
		}
		return nil
	})
}
