package subscriptions

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"mecha/internal/poll"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/google/uuid"

	"mecha/components"
	"mecha/runtime/appchannel"
	"mecha/runtime/cloudevent"
)

func TestRouter(t *testing.T) {
	type event = map[string]any
	cases := []struct {
		name   string
		sub    appchannel.Subscription
		events []event
		want   []string // the route of each event
	}{
		{
			name:   "route only",
			sub:    appchannel.Subscription{Topic: "t", Route: "/orders"},
			events: []event{{"type": "x"}},
			want:   []string{"/orders"},
		},
		{
			name: "rules are tried in order, then the default",
			sub: appchannel.Subscription{Topic: "t", Routes: &appchannel.Routes{
				Rules: []appchannel.Rule{
					{Match: `event.type == "a"`, Path: "/first"},
					{Match: `event.type.startsWith("a")`, Path: "/second"},
					{Match: `event.type == "a"`, Path: "/never"},
				},
				Default: "/default",
			}},
			events: []event{{"type": "a"}, {"type": "ab"}, {"type": "b"}},
			want:   []string{"/first", "/second", "/default"},
		},
		{
			name: "routes.default wins over route",
			sub:  appchannel.Subscription{Topic: "t", Route: "/route", Routes: &appchannel.Routes{Default: "/default"}},
			events: []event{
				{"type": "a"},
			},
			want: []string{"/default"},
		},
		{
			name: "a rule that cannot evaluate does not match",
			sub: appchannel.Subscription{Topic: "t", Routes: &appchannel.Routes{
				Rules: []appchannel.Rule{
					{Match: `event.missing == "x"`, Path: "/missing"},
					{Match: `event.data.priority > 5.0`, Path: "/urgent"},
				},
				Default: "/default",
			}},
			events: []event{
				{"type": "a"},
				{"type": "a", "data": "not an object"},
				{"type": "a", "data": map[string]any{"priority": 9.0}},
				{"type": "a", "missing": "x"},
			},
			want: []string{"/default", "/default", "/urgent", "/missing"},
		},
		{
			name: "a rule that is not boolean does not match",
			sub: appchannel.Subscription{Topic: "t", Routes: &appchannel.Routes{
				Rules:   []appchannel.Rule{{Match: `event.type`, Path: "/str"}},
				Default: "/default",
			}},
			events: []event{{"type": "true"}},
			want:   []string{"/default"},
		},
		{
			name: "rules without a default drop what does not match",
			sub: appchannel.Subscription{Topic: "t", Routes: &appchannel.Routes{
				Rules: []appchannel.Rule{{Match: `event.type == "a"`, Path: "a"}},
			}},
			events: []event{{"type": "a"}, {"type": "b"}},
			want:   []string{"/a", ""},
		},
		{
			name: "a rule without match is the default",
			sub: appchannel.Subscription{Topic: "t", Routes: &appchannel.Routes{
				Rules: []appchannel.Rule{
					{Match: " ", Path: "catchall"},
					{Match: `event.type == "a"`, Path: "/a"},
				},
			}},
			events: []event{{"type": "a"}, {"type": "b"}},
			want:   []string{"/a", "/catchall"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := newRouter(&c.sub)
			if err != nil {
				t.Fatal(err)
			}
			for i, ev := range c.events {
				got, err := r.route(ev)
				if err != nil || got != c.want[i] {
					t.Errorf("route(%v) = %q, %v; want %q", ev, got, err, c.want[i])
				}
			}
		})
	}
}

func TestRouterPathNormalisation(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/x", "/x"}, {"x", "/x"}, {"//x", "/x"}, {" x ", "/x"}, {"/", "/"}, {"a/b", "/a/b"},
	} {
		r, err := newRouter(&appchannel.Subscription{Topic: "t", Route: c.in})
		if err != nil {
			t.Errorf("route %q: %v", c.in, err)
			continue
		}
		if got, _ := r.route(nil); got != c.want || r.needsFields() {
			t.Errorf("route %q became %q (needsFields %v), want %q", c.in, got, r.needsFields(), c.want)
		}
	}
}

func TestRouterErrors(t *testing.T) {
	cases := []struct {
		name string
		sub  appchannel.Subscription
		want string
	}{
		{"no route at all", appchannel.Subscription{Topic: "orders"}, `topic "orders" has no route`},
		{"blank route", appchannel.Subscription{Topic: "orders", Route: "  "}, "has no route"},
		{"empty routes", appchannel.Subscription{Topic: "orders", Routes: &appchannel.Routes{}}, "has no route"},
		{"CEL syntax error", appchannel.Subscription{Topic: "t", Routes: &appchannel.Routes{
			Rules: []appchannel.Rule{{Match: `event.type == "a"`, Path: "/a"}, {Match: `event.type ==`, Path: "/b"}},
		}}, "routes.rules[1].match"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := newRouter(&c.sub)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func parseYAML(t *testing.T, file, in, appID string) ([]appchannel.Subscription, error) {
	t.Helper()
	docs, err := components.SplitDocuments(file, []byte(in))
	if err != nil {
		t.Fatalf("SplitDocuments: %v", err)
	}
	return ParseDeclarative(docs, appID)
}

func TestParseDeclarative(t *testing.T) {
	const file = "/res/subs.yaml"
	in := `apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata: {name: v1}
spec:
  pubsubname: pubsub
  topic: orders
  route: /orders
  deadLetterTopic: orders-dlq
  metadata: {rawPayload: "true"}
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: v2}
spec:
  pubsubname: pubsub
  topic: payments
  routes:
    rules:
    - match: event.type == "refund"
      path: /refunds
    default: /payments
  bulkSubscribe: {enabled: true, maxMessagesCount: 10, maxAwaitDurationMs: 50}
scopes: [app, other]
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: scoped-away}
spec: {pubsubname: pubsub, topic: hidden, routes: {default: /hidden}}
scopes: [other]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: ignored}
spec: {type: pubsub.in-memory}
`
	subs, err := parseYAML(t, file, in, "app")
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 2 {
		t.Fatalf("got %d subscriptions, want 2: %+v", len(subs), subs)
	}
	v1, v2 := subs[0], subs[1]
	if v1.PubsubName != "pubsub" || v1.Topic != "orders" || v1.Route != "/orders" || v1.Routes != nil ||
		v1.DeadLetterTopic != "orders-dlq" || v1.Metadata["rawPayload"] != "true" || v1.BulkSubscribe != nil {
		t.Errorf("v1alpha1 subscription = %+v", v1)
	}
	if v2.Topic != "payments" || v2.Route != "" || v2.Routes == nil || v2.Routes.Default != "/payments" ||
		!slices.Equal(v2.Routes.Rules, []appchannel.Rule{{Match: `event.type == "refund"`, Path: "/refunds"}}) {
		t.Errorf("v2alpha1 subscription = %+v routes %+v", v2, v2.Routes)
	}
	if bs := v2.BulkSubscribe; bs == nil || !bs.Enabled || bs.MaxMessagesCount != 10 || bs.MaxAwaitDurationMs != 50 {
		t.Errorf("bulkSubscribe = %+v", v2.BulkSubscribe)
	}

	other, err := parseYAML(t, file, in, "other")
	if err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, s := range other {
		topics = append(topics, s.Topic)
	}
	if !slices.Equal(topics, []string{"orders", "payments", "hidden"}) {
		t.Errorf("topics for app other = %v", topics)
	}
}

func TestParseDeclarativeErrors(t *testing.T) {
	const file = "/res/subs.yaml"
	const head = "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\n"
	cases := []struct {
		name string
		in   string
		want []string
		// wraps is false for errors that do not wrap ErrInvalidSubscription.
		wraps bool
	}{
		{"missing pubsubname", head + "spec: {topic: t, route: /t}\n", []string{file, `subscription "s"`, "spec.pubsubname: must be set"}, true},
		{"missing topic", head + "spec: {pubsubname: p, route: /t}\n", []string{file, "spec.topic: must be set"}, true},
		{"missing topic in the second document", "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: ok}\nspec: {pubsubname: p, topic: t, route: /t}\n---\n" +
			head + "spec: {pubsubname: p}\n", []string{file + " (document 2)", "spec.topic"}, true},
		{"unknown field", head + "spec: {pubsubname: p, topic: t, route: /t, deadletter: x}\n", []string{file, `unknown field "deadletter"`}, true},
		{"no route", head + "spec: {pubsubname: p, topic: t}\n", []string{file, `subscription "s"`, "has no route"}, false},
		{"bad CEL", head + "spec: {pubsubname: p, topic: t, routes: {rules: [{match: 'event.type ==', path: /a}]}}\n",
			[]string{file, `subscription "s"`, "routes.rules[0].match"}, false},
		{"invalid even when scoped away", head + "spec: {pubsubname: p, topic: t}\nscopes: [other]\n", []string{file, "has no route"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			subs, err := parseYAML(t, file, c.in, "app")
			if err == nil {
				t.Fatalf("got %+v and no error", subs)
			}
			if c.wraps && !errors.Is(err, ErrInvalidSubscription) {
				t.Errorf("error %v does not wrap ErrInvalidSubscription", err)
			}
			for _, s := range c.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

// ---- delivery through the in-memory pubsub ----

// fakeSink is the app. A delivery whose context has ended fails without
// reaching it, as a request from a stopped subscription would. verdict and
// bulkVerdict decide the answer from the event and how many times it was
// delivered (1 for the first delivery).
type fakeSink struct {
	verdict     func(ev *cloudevent.Event, n int) (appchannel.EventStatus, error)
	bulkVerdict func(ev *cloudevent.Event, n int) appchannel.EventStatus

	mu     sync.Mutex
	events []*appchannel.TopicEvent
	bulks  []*appchannel.BulkEvent
	counts map[string]int // CloudEvent id -> deliveries
}

func (s *fakeSink) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[id]
}

func (s *fakeSink) record(ce []byte) (*cloudevent.Event, int) {
	ev, err := cloudevent.Parse(ce)
	if err != nil {
		panic("sink received an invalid CloudEvent: " + err.Error())
	}
	if s.counts == nil {
		s.counts = map[string]int{}
	}
	s.counts[ev.ID]++
	return ev, s.counts[ev.ID]
}

// delivered returns the single-event deliveries of the CloudEvent id.
func (s *fakeSink) delivered(id string) []*appchannel.TopicEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*appchannel.TopicEvent
	for _, e := range s.events {
		if ev, _ := cloudevent.Parse(e.CloudEvent); ev != nil && ev.ID == id {
			out = append(out, e)
		}
	}
	return out
}

func (s *fakeSink) DeliverEvent(ctx context.Context, te *appchannel.TopicEvent) (appchannel.EventStatus, error) {
	if err := ctx.Err(); err != nil {
		return appchannel.StatusRetry, err
	}
	s.mu.Lock()
	cp := *te
	s.events = append(s.events, &cp)
	ev, n := s.record(te.CloudEvent)
	s.mu.Unlock()
	if s.verdict == nil {
		return appchannel.StatusSuccess, nil
	}
	return s.verdict(ev, n)
}

func (s *fakeSink) DeliverBulk(ctx context.Context, be *appchannel.BulkEvent) (map[string]appchannel.EventStatus, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[string]appchannel.EventStatus{}
	s.mu.Lock()
	cp := *be
	cp.Entries = slices.Clone(be.Entries)
	s.bulks = append(s.bulks, &cp)
	type verdict struct {
		ev *cloudevent.Event
		n  int
		id string
	}
	var vs []verdict
	for _, e := range be.Entries {
		ev, n := s.record(e.Event)
		vs = append(vs, verdict{ev, n, e.EntryID})
	}
	s.mu.Unlock()
	for _, v := range vs {
		st := appchannel.StatusSuccess
		if s.bulkVerdict != nil {
			st = s.bulkVerdict(v.ev, v.n)
		}
		out[v.id] = st
	}
	return out, nil
}

// testEnv is a subscriptions manager over the embedded in-memory pubsub.
type testEnv struct {
	m  *Manager
	ps *components.PubSub
}

// loadDefaults loads the embedded default components for a test.
func loadDefaults(t *testing.T) (*components.Manager, *slog.Logger) {
	t.Helper()
	reg := components.NewRegistry()
	components.RegisterContrib(reg)
	components.RegisterMecha(reg, components.MechaOptions{DataDir: t.TempDir()})
	log := slog.New(slog.DiscardHandler)
	cm := components.NewManager(components.Options{AppID: "app", Registry: reg, Defaults: components.EmbeddedDefaults(false), Logger: log})
	if _, err := cm.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cm.Close() })
	return cm, log
}

func start(t *testing.T, sink Sink, subs ...appchannel.Subscription) *testEnv {
	t.Helper()
	cm, log := loadDefaults(t)
	m := New(Options{AppID: "app", Components: cm, Logger: log,
		Retry: Retry{MaxRetries: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Drain(ctx)
	})
	m.SetDeclarative(subs)
	m.SetApp(sink, nil)
	m.Sync(t.Context())
	if got := len(m.List()); got != len(subs) {
		t.Fatalf("%d subscriptions active, want %d", got, len(subs))
	}
	return &testEnv{m: m, ps: cm.Snapshot().PubSub["pubsub"]}
}

// publish sends a CloudEvent of the given type and JSON data and returns
// its id.
func (e *testEnv) publish(t *testing.T, topic, typ, data string) string {
	t.Helper()
	id := uuid.NewString()
	ce := cloudevent.Append(nil, &cloudevent.Envelope{ID: id, Source: "publisher", Type: typ, Topic: topic, PubsubName: "pubsub", ContentType: "application/json", Data: []byte(data)})
	e.publishRaw(t, topic, ce)
	return id
}

func (e *testEnv) publishRaw(t *testing.T, topic string, data []byte) {
	t.Helper()
	ct := cloudevent.ContentType
	if err := e.ps.PS.Publish(t.Context(), &pubsub.PublishRequest{Data: data, PubsubName: "pubsub", Topic: topic, ContentType: &ct}); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, for at most 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

// The in-memory pubsub calls a subscription's handler for one event at a
// time, in publish order, and redelivers an event before it moves on. So
// once a later "marker" event has arrived, every delivery of the earlier
// events has happened: the tests below use that instead of waiting.

func TestDeliverySuccessAckedOnce(t *testing.T) {
	sink := &fakeSink{}
	env := start(t, sink, appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Route: "/orders"})
	id := env.publish(t, "orders", "order", `{"n":1}`)
	waitFor(t, "the event", func() bool { return sink.count(id) > 0 })
	marker := env.publish(t, "orders", "order", `{"n":2}`)
	waitFor(t, "the marker", func() bool { return sink.count(marker) > 0 })

	got := sink.delivered(id)
	if len(got) != 1 {
		t.Fatalf("event delivered %d times, want once", len(got))
	}
	te := got[0]
	if te.Path != "orders" || te.PubsubName != "pubsub" || te.Topic != "orders" {
		t.Errorf("delivered to path %q pubsub %q topic %q", te.Path, te.PubsubName, te.Topic)
	}
	ev, err := cloudevent.Parse(te.CloudEvent)
	if err != nil || string(ev.Data) != `{"n":1}` || ev.Source != "publisher" {
		t.Errorf("delivered CloudEvent %s (%v)", te.CloudEvent, err)
	}
}

func TestDeliveryRetryThenSuccess(t *testing.T) {
	sink := &fakeSink{verdict: func(ev *cloudevent.Event, n int) (appchannel.EventStatus, error) {
		if ev.Type == "flaky" && n == 1 {
			return appchannel.StatusRetry, nil
		}
		return appchannel.StatusSuccess, nil
	}}
	env := start(t, sink, appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Route: "orders"})
	id := env.publish(t, "orders", "flaky", `"x"`)
	marker := env.publish(t, "orders", "order", `"marker"`)
	waitFor(t, "the marker", func() bool { return sink.count(marker) > 0 })
	got := sink.delivered(id)
	if len(got) != 2 {
		t.Fatalf("event delivered %d times, want twice", len(got))
	}
	if string(got[0].CloudEvent) != string(got[1].CloudEvent) || got[0].Path != got[1].Path {
		t.Errorf("the retry delivered a different event:\n%s\n%s", got[0].CloudEvent, got[1].CloudEvent)
	}
}

func TestDeliveryDeadLetter(t *testing.T) {
	sink := &fakeSink{verdict: func(ev *cloudevent.Event, n int) (appchannel.EventStatus, error) {
		if ev.Type == "poison" && ev.Topic == "orders" && n <= 3 {
			// Only the first three deliveries (from "orders") fail; the
			// fourth is the dead-lettered copy.
			return appchannel.StatusRetry, errors.New("app is failing")
		}
		return appchannel.StatusSuccess, nil
	}}
	env := start(t, sink,
		appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Route: "/orders", DeadLetterTopic: "orders-dlq"},
		appchannel.Subscription{PubsubName: "pubsub", Topic: "orders-dlq", Route: "/dlq"},
	)
	id := env.publish(t, "orders", "poison", `{"bad":true}`)
	var fromDLQ *appchannel.TopicEvent
	waitFor(t, "the dead-lettered event", func() bool {
		for _, te := range sink.delivered(id) {
			if te.Path == "dlq" {
				fromDLQ = te
				return true
			}
		}
		return false
	})
	var attempts int
	for _, te := range sink.delivered(id) {
		if te.Path == "orders" {
			attempts++
		}
	}
	if attempts != 3 {
		t.Errorf("event attempted %d times on its route before dead-lettering, want 1+MaxRetries = 3", attempts)
	}
	if fromDLQ.Topic != "orders-dlq" {
		t.Errorf("dead-lettered event came from topic %q", fromDLQ.Topic)
	}
	if ev, err := cloudevent.Parse(fromDLQ.CloudEvent); err != nil || string(ev.Data) != `{"bad":true}` {
		t.Errorf("dead-lettered CloudEvent %s (%v)", fromDLQ.CloudEvent, err)
	}
	// Dead-lettering acks the original: it is not attempted again.
	marker := env.publish(t, "orders", "order", `"marker"`)
	waitFor(t, "the marker", func() bool { return sink.count(marker) > 0 })
	if n := len(sink.delivered(id)); n != 4 {
		t.Errorf("event delivered %d times in all, want 3 attempts + 1 from the dead-letter topic", n)
	}
}

func TestDeliveryDrop(t *testing.T) {
	sink := &fakeSink{verdict: func(ev *cloudevent.Event, n int) (appchannel.EventStatus, error) {
		if ev.Type == "unwanted" {
			return appchannel.StatusDrop, nil
		}
		return appchannel.StatusSuccess, nil
	}}
	env := start(t, sink,
		appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Route: "/orders", DeadLetterTopic: "orders-dlq"},
		appchannel.Subscription{PubsubName: "pubsub", Topic: "orders-dlq", Route: "/dlq"},
	)
	id := env.publish(t, "orders", "unwanted", `1`)
	marker := env.publish(t, "orders", "order", `2`)
	waitFor(t, "the marker", func() bool { return sink.count(marker) > 0 })
	// A dead-letter publish would have happened before the marker was
	// delivered; a marker on the dead-letter topic comes after it.
	dlqMarker := env.publish(t, "orders-dlq", "order", `3`)
	waitFor(t, "the dead-letter marker", func() bool { return sink.count(dlqMarker) > 0 })
	// As in Dapr 1.14, a dropped event goes to the dead-letter topic once,
	// and is never redelivered to its own route.
	got := sink.delivered(id)
	if len(got) != 2 || got[0].Path != "orders" || got[1].Path != "dlq" {
		t.Fatalf("dropped event delivered %d times (%v), want once to orders and once to the dead-letter route", len(got), got)
	}
}

func TestDeliveryCELRouting(t *testing.T) {
	sink := &fakeSink{}
	env := start(t, sink, appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Routes: &appchannel.Routes{
		Rules: []appchannel.Rule{
			{Match: `event.type == "order.created"`, Path: "/created"},
			{Match: `event.data.priority > 5.0`, Path: "urgent"},
		},
		Default: "/other",
	}})
	cases := []struct{ typ, data, path string }{
		{"order.created", `{"priority":9}`, "created"},
		{"order.updated", `{"priority":9}`, "urgent"},
		{"order.updated", `{"priority":1}`, "other"},
		{"order.updated", `"no fields"`, "other"},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		ids[i] = env.publish(t, "orders", c.typ, c.data)
	}
	for i, c := range cases {
		waitFor(t, "event "+c.typ, func() bool { return sink.count(ids[i]) > 0 })
		if got := sink.delivered(ids[i]); len(got) != 1 || got[0].Path != c.path {
			t.Errorf("event %s %s went to %v, want path %q once", c.typ, c.data, got, c.path)
		}
	}
}

func TestDeliveryNoMatchingRuleDrops(t *testing.T) {
	sink := &fakeSink{}
	env := start(t, sink, appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Routes: &appchannel.Routes{
		Rules: []appchannel.Rule{{Match: `event.type == "wanted"`, Path: "/wanted"}},
	}})
	unrouted := env.publish(t, "orders", "other", `1`)
	marker := env.publish(t, "orders", "wanted", `2`)
	waitFor(t, "the marker", func() bool { return sink.count(marker) > 0 })
	if n := sink.count(unrouted); n != 0 {
		t.Errorf("an event no rule matched was delivered %d times", n)
	}
}

func TestDeliveryRawPayload(t *testing.T) {
	sink := &fakeSink{}
	env := start(t, sink, appchannel.Subscription{PubsubName: "pubsub", Topic: "raw", Route: "/raw", Metadata: map[string]string{"rawPayload": "true"}})
	raw := []byte{0x00, 0x01, 0xff, 'h', 'i'}
	env.publishRaw(t, "raw", raw)
	var te *appchannel.TopicEvent
	waitFor(t, "the raw event", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		if len(sink.events) > 0 {
			te = sink.events[0]
		}
		return te != nil
	})
	ev, err := cloudevent.Parse(te.CloudEvent)
	if err != nil {
		t.Fatalf("raw payload not wrapped in a CloudEvent: %v: %q", err, te.CloudEvent)
	}
	if string(ev.Data) != string(raw) || ev.DataContentType != "application/octet-stream" {
		t.Errorf("data = %q content type %q, want the raw bytes as application/octet-stream", ev.Data, ev.DataContentType)
	}
	fields, err := ev.Fields()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := fields["data_base64"].(string); got != base64.StdEncoding.EncodeToString(raw) {
		t.Errorf("data_base64 = %q in %s", got, te.CloudEvent)
	}
	if _, ok := fields["data"]; ok {
		t.Errorf("wrapped raw payload has a data field: %s", te.CloudEvent)
	}
	if ev.Source != "app" || ev.Topic != "raw" || ev.PubsubName != "pubsub" || ev.SpecVersion != "1.0" || ev.ID == "" {
		t.Errorf("envelope attributes: %s", te.CloudEvent)
	}
	if te.Path != "raw" {
		t.Errorf("path = %q", te.Path)
	}
}

func TestDeliveryBulk(t *testing.T) {
	sink := &fakeSink{
		verdict: func(*cloudevent.Event, int) (appchannel.EventStatus, error) {
			return appchannel.StatusRetry, errors.New("single delivery used for a bulk subscription")
		},
		bulkVerdict: func(ev *cloudevent.Event, n int) appchannel.EventStatus {
			if ev.Type == "flaky" && n == 1 {
				return appchannel.StatusRetry
			}
			return appchannel.StatusSuccess
		},
	}
	env := start(t, sink, appchannel.Subscription{PubsubName: "pubsub", Topic: "bulk", Route: "/bulk",
		BulkSubscribe: &appchannel.BulkSubscribe{Enabled: true, MaxMessagesCount: 5, MaxAwaitDurationMs: 5}})
	ids := []string{
		env.publish(t, "bulk", "a", `{"i":1}`),
		env.publish(t, "bulk", "flaky", `{"i":2}`),
		env.publish(t, "bulk", "c", `{"i":3}`),
	}
	waitFor(t, "all bulk entries", func() bool { return sink.count(ids[2]) > 0 })

	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.events) != 0 {
		t.Errorf("%d events went through DeliverEvent, want all through DeliverBulk", len(sink.events))
	}
	seen := map[string]int{}
	for _, be := range sink.bulks {
		if be.Path != "bulk" || be.PubsubName != "pubsub" || be.Topic != "bulk" || be.ID == "" || len(be.Entries) == 0 {
			t.Errorf("bulk event = %+v", be)
		}
		for _, e := range be.Entries {
			ev, err := cloudevent.Parse(e.Event)
			if err != nil {
				t.Fatalf("entry event %q: %v", e.Event, err)
			}
			seen[ev.ID]++
			if e.EntryID == "" || e.ContentType != cloudevent.ContentType {
				t.Errorf("entry id %q content type %q", e.EntryID, e.ContentType)
			}
		}
	}
	if seen[ids[0]] != 1 || seen[ids[1]] != 2 || seen[ids[2]] != 1 {
		t.Errorf("entries delivered %v times, want 1, 2 (one retry) and 1", []int{seen[ids[0]], seen[ids[1]], seen[ids[2]]})
	}
}

func TestDeliveryBulkDeadLetter(t *testing.T) {
	sink := &fakeSink{bulkVerdict: func(ev *cloudevent.Event, n int) appchannel.EventStatus {
		if ev.Type == "poison" {
			return appchannel.StatusRetry
		}
		return appchannel.StatusSuccess
	}}
	env := start(t, sink,
		appchannel.Subscription{PubsubName: "pubsub", Topic: "bulk", Route: "/bulk", DeadLetterTopic: "bulk-dlq",
			BulkSubscribe: &appchannel.BulkSubscribe{Enabled: true, MaxAwaitDurationMs: 5}},
		appchannel.Subscription{PubsubName: "pubsub", Topic: "bulk-dlq", Route: "/dlq"},
	)
	id := env.publish(t, "bulk", "poison", `1`)
	waitFor(t, "the dead-lettered entry", func() bool { return len(sink.delivered(id)) > 0 })
	if got := sink.delivered(id); len(got) != 1 || got[0].Path != "dlq" {
		t.Errorf("dead-lettered entry arrived as %v", got)
	}
	if n := sink.count(id); n != 4 {
		t.Errorf("entry delivered %d times, want 3 bulk attempts + 1 from the dead-letter topic", n)
	}
}

func TestPauseAndSync(t *testing.T) {
	sink := &fakeSink{}
	env := start(t, sink, appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Route: "/orders"})
	before := env.publish(t, "orders", "order", `1`)
	waitFor(t, "delivery before the pause", func() bool { return sink.count(before) > 0 })

	env.m.Pause()
	if n := len(env.m.List()); n != 0 {
		t.Errorf("%d subscriptions listed while paused", n)
	}
	paused := env.publish(t, "orders", "order", `2`)

	env.m.Sync(t.Context())
	if n := len(env.m.List()); n != 1 {
		t.Fatalf("%d subscriptions after Sync, want 1", n)
	}
	after := env.publish(t, "orders", "order", `3`)
	waitFor(t, "delivery after Sync", func() bool { return sink.count(after) > 0 })
	if n := sink.count(paused); n != 0 {
		t.Errorf("event published while paused reached the app %d times", n)
	}
	if n := sink.count(after); n != 1 {
		t.Errorf("event after Sync delivered %d times, want once", n)
	}
}

// blockingSink holds every delivery until released.
type blockingSink struct {
	fakeSink
	entered  chan struct{}
	release  chan struct{}
	finished atomic.Bool
}

func (s *blockingSink) DeliverEvent(ctx context.Context, te *appchannel.TopicEvent) (appchannel.EventStatus, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	s.finished.Store(true)
	return appchannel.StatusSuccess, nil
}

func TestDrainWaitsForInFlightDelivery(t *testing.T) {
	sink := &blockingSink{entered: make(chan struct{}, 1), release: make(chan struct{})}
	env := start(t, sink, appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Route: "/orders"})
	released := false
	t.Cleanup(func() {
		if !released {
			close(sink.release)
		}
	})
	env.publish(t, "orders", "order", `1`)
	select {
	case <-sink.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the delivery never reached the app")
	}

	var finishedAtReturn atomic.Bool
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		env.m.Drain(ctx)
		finishedAtReturn.Store(sink.finished.Load())
		close(done)
	}()
	// Drain must still be waiting: the app has not answered. (A wrong
	// Drain is caught here or by finishedAtReturn below.)
	select {
	case <-done:
		t.Fatal("Drain returned while a delivery was in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(sink.release)
	released = true
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return after the delivery finished")
	}
	if !finishedAtReturn.Load() {
		t.Error("Drain returned before the in-flight delivery finished")
	}
	if n := len(env.m.List()); n != 0 {
		t.Errorf("%d subscriptions active after Drain", n)
	}
	env.m.Sync(t.Context())
	if n := len(env.m.List()); n != 0 {
		t.Errorf("Sync after Drain started %d subscriptions", n)
	}
}

func TestDrainGivesUpAtDeadline(t *testing.T) {
	sink := &blockingSink{entered: make(chan struct{}, 1), release: make(chan struct{})}
	env := start(t, sink, appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Route: "/orders"})
	// Registered after start so that it runs before start's Drain.
	t.Cleanup(func() { close(sink.release) })
	env.publish(t, "orders", "order", `1`)
	<-sink.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { env.m.Drain(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return at its context deadline")
	}
	if sink.finished.Load() {
		t.Error("the delivery finished although it was never released")
	}
}

func TestSyncListAndDuplicates(t *testing.T) {
	sink := &fakeSink{}
	cm, log := loadDefaults(t)
	m := New(Options{AppID: "app", Components: cm, Logger: log})
	t.Cleanup(func() { m.Drain(context.Background()) })

	docs, err := components.SplitDocuments("subs.yaml", []byte(
		"apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: a}\nspec: {pubsubname: pubsub, topic: b, routes: {rules: [{match: 'event.type == \"x\"', path: /x}], default: /b}, deadLetterTopic: dlq}\n"))
	if err != nil {
		t.Fatal(err)
	}
	decl, err := ParseDeclarative(docs, "app")
	if err != nil {
		t.Fatal(err)
	}
	m.SetDeclarative(decl)
	m.Sync(t.Context())
	if n := len(m.List()); n != 0 {
		t.Fatalf("Sync without an app started %d subscriptions", n)
	}
	m.SetApp(sink, []appchannel.Subscription{
		{PubsubName: "pubsub", Topic: "a", Route: "/a"},
		{PubsubName: "pubsub", Topic: "b", Route: "/duplicate"}, // declared already
		{PubsubName: "missing", Topic: "c", Route: "/c"},        // pubsub not loaded
	})
	m.Sync(t.Context())
	got := m.List()
	want := []Info{
		{PubsubName: "pubsub", Topic: "a", Type: "PROGRAMMATIC", Rules: []appchannel.Rule{{Path: "/a"}}},
		{PubsubName: "pubsub", Topic: "b", Type: "DECLARATIVE", DeadLetterTopic: "dlq",
			Rules: []appchannel.Rule{{Match: `event.type == "x"`, Path: "/x"}, {Path: "/b"}}},
	}
	if len(got) != len(want) {
		t.Fatalf("List = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.PubsubName != w.PubsubName || g.Topic != w.Topic || g.Type != w.Type || g.DeadLetterTopic != w.DeadLetterTopic || !slices.Equal(g.Rules, w.Rules) {
			t.Errorf("List[%d] = %+v, want %+v", i, g, w)
		}
	}
	// Sync again with nothing changed keeps the running subscriptions.
	m.Sync(t.Context())
	if n := len(m.List()); n != 2 {
		t.Errorf("second Sync left %d subscriptions", n)
	}
	// Dropping the programmatic subscriptions stops them.
	m.SetApp(sink, nil)
	m.Sync(t.Context())
	if got := m.List(); len(got) != 1 || got[0].Topic != "b" {
		t.Errorf("List after removing programmatic subscriptions = %+v", got)
	}
}

// TestDrainWhilePublishing drains while events keep arriving: under -race
// this caught Add racing Wait on the old WaitGroup-based drain.
func TestDrainWhilePublishing(t *testing.T) {
	for i := 0; i < 10; i++ {
		env := start(t, &fakeSink{}, appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Route: "/orders"})
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				env.publish(t, "orders", "x", "1")
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		env.m.Drain(ctx)
		cancel()
		close(stop)
		<-done
	}
}

// An event whose expiration passed before delivery is dropped, not
// delivered (publish ttlInSeconds on a component without message TTL).
func TestExpiredEventsAreDropped(t *testing.T) {
	sink := &fakeSink{}
	env := start(t, sink, appchannel.Subscription{PubsubName: "pubsub", Topic: "orders", Route: "/orders"})
	old := uuid.NewString()
	env.publishRaw(t, "orders", cloudevent.Append(nil, &cloudevent.Envelope{ID: old, Source: "p", Topic: "orders", PubsubName: "pubsub",
		Expiration: time.Now().Add(-time.Minute).UTC().Format(time.RFC3339), Data: []byte("stale")}))
	marker := env.publish(t, "orders", "order", `1`)
	waitFor(t, "the marker", func() bool { return sink.count(marker) > 0 })
	if n := sink.count(old); n != 0 {
		t.Fatalf("expired event delivered %d times", n)
	}
}

// A reload that replaces the pubsub ends its streaming subscriptions, so
// their clients subscribe again to the new instance.
func TestStreamEndsWhenItsPubsubIsReloaded(t *testing.T) {
	dir := t.TempDir()
	yaml := "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n"
	if err := os.WriteFile(filepath.Join(dir, "ps.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := components.NewRegistry()
	components.RegisterContrib(reg)
	log := slog.New(slog.DiscardHandler)
	cm := components.NewManager(components.Options{AppID: "app", Paths: []string{dir}, Registry: reg, Logger: log})
	if _, err := cm.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cm.Close() })
	m := New(Options{AppID: "app", Components: cm, Logger: log})
	remove, ended, err := m.AddStream(t.Context(), appchannel.Subscription{PubsubName: "pubsub", Topic: "t"}, &fakeSink{})
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	m.SetApp(&fakeSink{}, nil)
	m.Sync(t.Context())
	select {
	case <-ended:
		t.Fatal("stream ended without a reload")
	default:
	}
	if err := os.WriteFile(filepath.Join(dir, "ps.yaml"), []byte(yaml+"  metadata:\n  - name: changed\n    value: \"1\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cm.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	m.Sync(t.Context())
	select {
	case <-ended:
	default:
		t.Fatal("stream still open on the replaced pubsub")
	}
}
