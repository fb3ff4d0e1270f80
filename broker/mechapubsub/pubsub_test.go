package mechapubsub_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/kit/logger"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker"
	"mecha/broker/brokertest"
	"mecha/broker/mechapubsub"
	"mecha/internal/poll"
)

const waitLong = 20 * time.Second

func testLogger() logger.Logger {
	l := logger.NewLogger("mechapubsub-test")
	l.SetOutputLevel(logger.WarnLevel)
	return l
}

// env is a test's broker and the way the component reaches it: in-process
// (the default of mecha run) or over the network.
type env struct {
	b     *broker.Broker
	local bool
}

// brokers is the broker's address.
func (e env) brokers() string { return e.b.Addr() }

// defaults are what mecha run would give the component.
func (e env) defaults() mechapubsub.Defaults {
	if e.local {
		return mechapubsub.Defaults{Brokers: e.b.Addr(), Broker: e.b}
	}
	return mechapubsub.Defaults{Brokers: e.b.Addr()}
}

// eachWay runs test in-process and over the network (brokertest.EachWay).
func eachWay(t *testing.T, test func(t *testing.T, e env)) {
	brokertest.EachWay(t, func(t *testing.T, b *broker.Broker, local bool) { test(t, env{b: b, local: local}) })
}

// newPubSub returns an initialized pubsub.mecha on e's broker with the
// given extra properties, closed at the end of the test (Close twice is
// fine).
func newPubSub(t *testing.T, e env, props map[string]string) pubsub.PubSub {
	t.Helper()
	p := mechapubsub.New(testLogger(), e.defaults())
	md := pubsub.Metadata{Base: metadata.Base{Name: "pubsub", Properties: props}}
	if err := p.Init(t.Context(), md); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// inbox records deliveries; fail decides per message whether the handler
// returns an error.
type inbox struct {
	mu   sync.Mutex
	msgs []*pubsub.NewMessage
	at   []time.Time
	fail func(m *pubsub.NewMessage, attempt int) error
}

func (in *inbox) handler(_ context.Context, m *pubsub.NewMessage) error {
	in.mu.Lock()
	attempt := 1
	for _, prev := range in.msgs {
		if prev.Topic == m.Topic && prev.Metadata["__partition"] == m.Metadata["__partition"] && prev.Metadata["__offset"] == m.Metadata["__offset"] {
			attempt++
		}
	}
	in.msgs = append(in.msgs, m)
	in.at = append(in.at, time.Now())
	fail := in.fail
	in.mu.Unlock()
	if fail != nil {
		return fail(m, attempt)
	}
	return nil
}

func (in *inbox) data() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]string, len(in.msgs))
	for i, m := range in.msgs {
		out[i] = string(m.Data)
	}
	return out
}

func (in *inbox) has(d string) bool { return slices.Contains(in.data(), d) }

func (in *inbox) get(d string) []*pubsub.NewMessage {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []*pubsub.NewMessage
	for _, m := range in.msgs {
		if string(m.Data) == d {
			out = append(out, m)
		}
	}
	return out
}

func publish(t *testing.T, p pubsub.PubSub, topic, data string, md map[string]string) {
	t.Helper()
	if err := p.Publish(t.Context(), &pubsub.PublishRequest{Topic: topic, Data: []byte(data), Metadata: md}); err != nil {
		t.Fatalf("publish %s to %s: %v", data, topic, err)
	}
}

func subscribe(t *testing.T, ctx context.Context, p pubsub.PubSub, topic string, in *inbox) {
	t.Helper()
	if err := p.Subscribe(ctx, pubsub.SubscribeRequest{Topic: topic}, in.handler); err != nil {
		t.Fatalf("subscribe %s: %v", topic, err)
	}
}

func TestPublishSubscribeRoundTrip(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		p := newPubSub(t, e, map[string]string{"consumerID": "app1"})
		in := &inbox{}
		start := time.Now()
		subscribe(t, t.Context(), p, "orders", in)
		if d := time.Since(start); d > time.Second {
			t.Errorf("Subscribe took %s; it must return before the group is assigned", d)
		}
		publish(t, p, "orders", "hello", map[string]string{"partitionKey": "k1", "traceparent": "00-abc", "h1": "v1"})
		poll.Until(t, waitLong, "the published message", func() bool { return in.has("hello") })

		m := in.get("hello")[0]
		if m.Topic != "orders" {
			t.Errorf("Topic = %q, want orders", m.Topic)
		}
		for k, want := range map[string]string{"__key": "k1", "__topic": "orders", "h1": "v1", "traceparent": "00-abc"} {
			if got := m.Metadata[k]; got != want {
				t.Errorf("metadata %s = %q, want %q (all: %v)", k, got, want, m.Metadata)
			}
		}
		if _, ok := m.Metadata["partitionKey"]; ok {
			t.Errorf("partitionKey became a header: %v", m.Metadata)
		}
		for _, k := range []string{"__partition", "__offset", "__timestamp"} {
			if _, err := strconv.ParseInt(m.Metadata[k], 10, 64); err != nil {
				t.Errorf("metadata %s = %q, want a number", k, m.Metadata[k])
			}
		}

		// key is the other way to set the record key; records with the same
		// key share a partition.
		publish(t, p, "orders", "second", map[string]string{"key": "k1"})
		poll.Until(t, waitLong, "the second message", func() bool { return in.has("second") })
		m2 := in.get("second")[0]
		if m2.Metadata["__key"] != "k1" || m2.Metadata["__partition"] != m.Metadata["__partition"] {
			t.Errorf("second: key %q partition %q, want k1 on partition %s", m2.Metadata["__key"], m2.Metadata["__partition"], m.Metadata["__partition"])
		}

		bp, ok := p.(pubsub.BulkPublisher)
		if !ok {
			t.Fatal("pubsub.mecha is not a BulkPublisher")
		}
		resp, err := bp.BulkPublish(t.Context(), &pubsub.BulkPublishRequest{Topic: "orders", Metadata: map[string]string{"batch": "1"}, Entries: []pubsub.BulkMessageEntry{
			{EntryId: "e1", Event: []byte("bulk-1"), Metadata: map[string]string{"partitionKey": "b"}},
			{EntryId: "e2", Event: []byte("bulk-2")},
		}})
		if err != nil || len(resp.FailedEntries) != 0 {
			t.Fatalf("BulkPublish = %+v, %v", resp, err)
		}
		poll.Until(t, waitLong, "both bulk entries", func() bool { return in.has("bulk-1") && in.has("bulk-2") })
		if b := in.get("bulk-1")[0]; b.Metadata["batch"] != "1" || b.Metadata["__key"] != "b" {
			t.Errorf("bulk-1 metadata = %v, want the request's batch header and key b", b.Metadata)
		}
		if got := len(in.data()); got != 4 {
			t.Errorf("%d deliveries (%v), want 4, each once", got, in.data())
		}
	})
}

func TestBulkPublishReportsFailedEntries(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		p := newPubSub(t, e, map[string]string{"maxMessageBytes": "1000"})
		resp, err := p.(pubsub.BulkPublisher).BulkPublish(t.Context(), &pubsub.BulkPublishRequest{Topic: "big", Entries: []pubsub.BulkMessageEntry{
			{EntryId: "small", Event: []byte("ok")},
			{EntryId: "huge", Event: []byte(strings.Repeat("x", 5000))},
		}})
		if err == nil {
			t.Fatal("BulkPublish with a record over maxMessageBytes succeeded")
		}
		if len(resp.FailedEntries) != 1 || resp.FailedEntries[0].EntryId != "huge" || resp.FailedEntries[0].Error == nil {
			t.Fatalf("FailedEntries = %+v, want just huge with its error", resp.FailedEntries)
		}
	})
}

// A handler error redelivers the same record, with a growing delay, and
// holds back the records after it in its partition.
func TestHandlerErrorRedeliversSameMessage(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		p := newPubSub(t, e, map[string]string{"consumerID": "app1"})
		in := &inbox{fail: func(m *pubsub.NewMessage, attempt int) error {
			if string(m.Data) == "b" && attempt <= 3 {
				return fmt.Errorf("app says retry (attempt %d)", attempt)
			}
			return nil
		}}
		subscribe(t, t.Context(), p, "jobs", in)
		for _, d := range []string{"a", "b", "c"} {
			publish(t, p, "jobs", d, map[string]string{"partitionKey": "same"})
		}
		poll.Until(t, waitLong, "c after b succeeded", func() bool { return in.has("c") })
		if got, want := in.data(), []string{"a", "b", "b", "b", "b", "c"}; !slices.Equal(got, want) {
			t.Fatalf("deliveries = %v, want %v", got, want)
		}
		bs := in.get("b")
		for _, b := range bs[1:] {
			if b.Metadata["__offset"] != bs[0].Metadata["__offset"] || b.Metadata["__partition"] != bs[0].Metadata["__partition"] {
				t.Errorf("redelivery at %s/%s, first at %s/%s: not the same record", b.Metadata["__partition"], b.Metadata["__offset"], bs[0].Metadata["__partition"], bs[0].Metadata["__offset"])
			}
		}
		// Backoff: 100 ms, then 200 ms, then 400 ms, each ±20% (jitter).
		in.mu.Lock()
		gaps := []time.Duration{in.at[2].Sub(in.at[1]), in.at[3].Sub(in.at[2]), in.at[4].Sub(in.at[3])}
		in.mu.Unlock()
		for i, min := range []time.Duration{75 * time.Millisecond, 150 * time.Millisecond, 300 * time.Millisecond} {
			if gaps[i] < min {
				t.Errorf("redelivery gaps %v: gap %d is under %s; want a backoff of 100ms doubling", gaps, i+1, min)
			}
		}
	})
}

// A record whose handler never succeeded is delivered again by the next
// instance of the component in the same group; handled ones are not.
func TestRestartRedeliversOnlyUnacked(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		props := map[string]string{"consumerGroup": "restart-group"}
		p1 := newPubSub(t, e, props)
		in1 := &inbox{fail: func(m *pubsub.NewMessage, _ int) error {
			if string(m.Data) == "unacked" {
				return errors.New("not yet")
			}
			return nil
		}}
		subscribe(t, t.Context(), p1, "events", in1)
		elsewhere := keyOnOtherPartition(t, "events", "k")
		publish(t, p1, "events", "acked", map[string]string{"partitionKey": "k"})
		publish(t, p1, "events", "unacked", map[string]string{"partitionKey": "k"})
		// Another partition: handled, so it must not come back either.
		publish(t, p1, "events", "other-acked", map[string]string{"partitionKey": elsewhere})
		poll.Until(t, waitLong, "unacked to be retried", func() bool {
			return len(in1.get("unacked")) >= 2 && in1.has("other-acked")
		})
		if err := p1.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		n := len(in1.data())

		p2 := newPubSub(t, e, props)
		in2 := &inbox{}
		subscribe(t, t.Context(), p2, "events", in2)
		poll.Until(t, waitLong, "unacked on the new instance", func() bool { return in2.has("unacked") })
		// Publish a marker on the other partition: once it arrives, anything
		// redelivered there would have arrived before it.
		publish(t, p2, "events", "marker", map[string]string{"partitionKey": elsewhere})
		poll.Until(t, waitLong, "the marker", func() bool { return in2.has("marker") })
		got := in2.data()
		slices.Sort(got)
		if want := []string{"marker", "unacked"}; !slices.Equal(got, want) {
			t.Errorf("new instance got %v, want %v: acked messages came back or unacked did not", got, want)
		}
		if len(in1.data()) != n {
			t.Errorf("the closed instance's handler was called after Close")
		}
	})
}

// keyOnOtherPartition returns a key that sarama's default partitioner
// puts on another of the three partitions than key.
func keyOnOtherPartition(t *testing.T, topic, key string) string {
	t.Helper()
	part := func(k string) int32 {
		n, err := sarama.NewHashPartitioner(topic).Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(k)}, 3)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i := 0; ; i++ {
		if k := "other-" + strconv.Itoa(i); part(k) != part(key) {
			return k
		}
	}
}

// Several topics share one group member: the app's group does not
// rebalance against itself.
func TestTwoTopicsOneMember(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		p := newPubSub(t, e, map[string]string{"consumerID": "two-topics"})
		in := &inbox{}
		subscribe(t, t.Context(), p, "t1", in)
		subscribe(t, t.Context(), p, "t2", in)
		publish(t, p, "t1", "one", nil)
		publish(t, p, "t2", "two", nil)
		poll.Until(t, waitLong, "both topics", func() bool { return in.has("one") && in.has("two") })
		for _, m := range in.get("one") {
			if m.Topic != "t1" {
				t.Errorf("one arrived with topic %s", m.Topic)
			}
		}

		adm := newAdmin(t, e.brokers())
		poll.Until(t, waitLong, "one member subscribed to both topics", func() bool {
			return slices.Equal(memberTopics(t, adm, "two-topics"), []string{"t1", "t2"})
		})
	})
}

// memberTopics returns the sorted topics of the group's only member when
// the group is stable with exactly one member, else nil.
func memberTopics(t *testing.T, adm *kadm.Client, group string) []string {
	ds, err := adm.DescribeGroups(t.Context(), group)
	if err != nil {
		return nil
	}
	g := ds[group]
	if g.State != "Stable" || len(g.Members) != 1 {
		return nil
	}
	meta, ok := g.Members[0].Join.AsConsumer()
	if !ok {
		return nil
	}
	topics := slices.Clone(meta.Topics)
	slices.Sort(topics)
	return topics
}

func newAdmin(t *testing.T, brokers string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// Ending a Subscribe context stops delivery of that topic only; a later
// Subscribe picks up what was published in between.
func TestSubscribeCancelStopsTopic(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		p := newPubSub(t, e, map[string]string{"consumerID": "cancel-app"})
		gone, keep := &inbox{}, &inbox{}
		ctx, cancel := context.WithCancel(t.Context())
		subscribe(t, ctx, p, "gone", gone)
		subscribe(t, t.Context(), p, "keep", keep)
		publish(t, p, "gone", "before", nil)
		poll.Until(t, waitLong, "the first message", func() bool { return gone.has("before") })

		cancel()
		// The group's member drops the topic: nothing of ours fetches it.
		adm := newAdmin(t, e.brokers())
		poll.Until(t, waitLong, "the member to subscribe to keep only", func() bool {
			return slices.Equal(memberTopics(t, adm, "cancel-app"), []string{"keep"})
		})
		publish(t, p, "gone", "after", nil)
		publish(t, p, "keep", "still", nil)
		poll.Until(t, waitLong, "the other topic's message", func() bool { return keep.has("still") })

		again := &inbox{}
		subscribe(t, t.Context(), p, "gone", again)
		poll.Until(t, waitLong, "the message published while unsubscribed", func() bool { return again.has("after") })
		if gone.has("after") {
			t.Errorf("the cancelled subscription received a message: %v", gone.data())
		}
		if again.has("before") {
			t.Errorf("a handled message came back: %v", again.data())
		}
	})
}

func TestSubscribeWithoutGroup(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		p := newPubSub(t, e, nil)
		publish(t, p, "t", "publishing needs no group", nil)
		err := p.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: "t"}, (&inbox{}).handler)
		if err == nil || !strings.Contains(err.Error(), "consumerGroup") || !errors.Is(err, mechapubsub.ErrMetadata) {
			t.Fatalf("Subscribe without a group: %v, want a metadata error naming consumerGroup", err)
		}
	})
}

// ourGoroutines lists goroutines running the component's or its clients'
// code (franz-go's, inproc's).
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/twmb/franz-go/pkg/kgo.") || strings.Contains(g, "mecha/broker/inproc.") || strings.Contains(g, "mechapubsub.(*") {
			out = append(out, g)
		}
	}
	return out
}

func TestCloseStopsEverything(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		p := mechapubsub.New(testLogger(), e.defaults())
		if err := p.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: map[string]string{"consumerID": "closer"}}}); err != nil {
			t.Fatal(err)
		}
		in := &inbox{fail: func(m *pubsub.NewMessage, _ int) error {
			if string(m.Data) == "stuck" {
				return errors.New("always failing")
			}
			return nil
		}}
		subscribe(t, t.Context(), p, "a", in)
		subscribe(t, t.Context(), p, "b", in)
		publish(t, p, "a", "stuck", nil)
		publish(t, p, "b", "fine", nil)
		poll.Until(t, waitLong, "deliveries", func() bool { return in.has("fine") && len(in.get("stuck")) >= 2 })

		done := make(chan error, 1)
		go func() { done <- p.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Close: %v", err)
			}
		case <-time.After(waitLong):
			t.Fatal("Close did not return while a handler kept failing")
		}
		poll.Until(t, waitLong, "client and component goroutines to end", func() bool { return len(ourGoroutines()) == 0 })
		n := len(in.data())
		if err := p.Publish(t.Context(), &pubsub.PublishRequest{Topic: "a", Data: []byte("x")}); !errors.Is(err, mechapubsub.ErrClosed) {
			t.Errorf("Publish after Close: %v, want ErrClosed", err)
		}
		if err := p.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: "a"}, in.handler); !errors.Is(err, mechapubsub.ErrClosed) {
			t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if len(in.data()) != n {
			t.Error("handler called after Close returned")
		}
	})
}

func TestInitMetadataErrors(t *testing.T) {
	brokers := brokertest.Start(t)
	for _, tc := range []struct {
		name     string
		defaults string
		props    map[string]string
		want     []string
	}{
		{"no brokers", "", nil, []string{"metadata brokers", "--broker=false"}},
		{"initialOffset", brokers, map[string]string{"initialOffset": "x"}, []string{`metadata initialOffset: want "oldest" or "newest", got "x"`}},
		{"maxMessageBytes not a number", brokers, map[string]string{"maxMessageBytes": "lots"}, []string{"metadata maxMessageBytes", `"lots"`}},
		{"maxMessageBytes zero", brokers, map[string]string{"maxMessageBytes": "0"}, []string{"metadata maxMessageBytes"}},
		{"publishRetries", brokers, map[string]string{"publishRetries": "-1"}, []string{"metadata publishRetries"}},
		{"saslPassword without saslUsername", brokers, map[string]string{"saslPassword": "x"}, []string{"metadata saslUsername: saslUsername and saslPassword go together"}},
		{"saslMechanism", brokers, map[string]string{"saslUsername": "u", "saslPassword": "p", "saslMechanism": "GSSAPI"}, []string{"metadata saslMechanism", `"GSSAPI"`}},
		{"tls", brokers, map[string]string{"tls": "yes"}, []string{`metadata tls: want "true" or "false", got "yes"`}},
		{"caCert without tls", brokers, map[string]string{"caCert": "x"}, []string{"metadata caCert: set without tls"}},
		{"caCert not PEM", brokers, map[string]string{"tls": "true", "caCert": "x"}, []string{"metadata caCert: holds no PEM certificate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mechapubsub.New(testLogger(), mechapubsub.Defaults{Brokers: tc.defaults})
			err := p.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: tc.props}})
			if err == nil {
				_ = p.Close()
				t.Fatal("Init succeeded")
			}
			if !errors.Is(err, mechapubsub.ErrMetadata) {
				t.Errorf("error %v is not ErrMetadata", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestInitDefaultsAndOverrides(t *testing.T) {
	brokers := brokertest.Start(t)
	// brokers in the metadata win over the embedded default.
	p := mechapubsub.New(testLogger(), mechapubsub.Defaults{Brokers: "127.0.0.1:1"})
	if err := p.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: map[string]string{"brokers": brokers}}}); err != nil {
		t.Fatalf("Init with brokers metadata over a dead default: %v", err)
	}
	_ = p.Close()

	// The embedded broker is called in-process unless the metadata names
	// other brokers.
	b := brokertest.StartBroker(t)
	for _, tc := range []struct {
		brokers string
		local   bool
	}{{"", true}, {b.Addr(), true}, {brokers, false}, {b.Addr() + "," + brokers, false}} {
		o, err := mechapubsub.ParseClientOptions(map[string]string{"brokers": tc.brokers}, mechapubsub.Defaults{Brokers: b.Addr(), Broker: b})
		if err != nil || (o.Local != nil) != tc.local {
			t.Errorf("brokers %q: local %v (%v), want %v", tc.brokers, o.Local != nil, err, tc.local)
		}
	}
	if o, err := mechapubsub.ParseClientOptions(nil, mechapubsub.Defaults{Broker: b}); err != nil || o.Local == nil {
		t.Errorf("no broker address but an embedded broker: local %v, %v", o.Local != nil, err)
	}

	o, err := mechapubsub.ParseClientOptions(map[string]string{"consumerID": "app", "initialOffset": "Newest"}, mechapubsub.Defaults{Brokers: "h1:1, h2:2"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Brokers, []string{"h1:1", "h2:2"}) || o.ClientID != "mecha" || o.ConsumerGroup != "app" || o.InitialOffset != -1 {
		t.Errorf("options = %+v", o)
	}
	o, err = mechapubsub.ParseClientOptions(map[string]string{"consumerID": "app", "consumerGroup": "g", "clientID": "c"}, mechapubsub.Defaults{Brokers: "h:1"})
	if err != nil || o.ConsumerGroup != "g" || o.ClientID != "c" || o.InitialOffset != -2 {
		t.Errorf("options = %+v, %v; want group g, client c, oldest", o, err)
	}
}

// Handled records are committed while the component runs (auto-commit
// every second), not only at Close: a crash loses at most a second of
// acknowledgements.
func TestHandledOffsetsCommittedWhileRunning(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		p := newPubSub(t, e, map[string]string{"consumerID": "committer"})
		in := &inbox{}
		subscribe(t, t.Context(), p, "ticks", in)
		publish(t, p, "ticks", "one", map[string]string{"partitionKey": "k"})
		publish(t, p, "ticks", "two", map[string]string{"partitionKey": "k"})
		poll.Until(t, waitLong, "both records", func() bool { return in.has("two") })
		m := in.get("two")[0]
		part, _ := strconv.ParseInt(m.Metadata["__partition"], 10, 32)
		off, _ := strconv.ParseInt(m.Metadata["__offset"], 10, 64)

		adm := newAdmin(t, e.brokers())
		poll.Until(t, waitLong, "the committed offset past two", func() bool {
			os, err := adm.FetchOffsets(t.Context(), "committer")
			if err != nil {
				return false
			}
			o, ok := os.Lookup("ticks", int32(part))
			return ok && o.At == off+1
		})
	})
}

// With initialOffset newest a new group skips what was published before
// it joined.
func TestInitialOffsetNewest(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		p := newPubSub(t, e, map[string]string{"consumerID": "late", "initialOffset": "newest"})
		publish(t, p, "news", "old", map[string]string{"partitionKey": "k"})
		in := &inbox{}
		subscribe(t, t.Context(), p, "news", in)
		// The group starts at the end of the log once assigned, which
		// Subscribe does not wait for: publish until something arrives.
		// Same key, same partition: had old been delivered, it would be
		// first.
		calls := 0
		poll.Until(t, waitLong, "a record published after the group joined", func() bool {
			if calls%50 == 0 {
				publish(t, p, "news", "new-"+strconv.Itoa(calls), map[string]string{"partitionKey": "k"})
			}
			calls++
			return len(in.data()) > 0
		})
		if got := in.data()[0]; got == "old" {
			t.Errorf("first delivery %q: newest delivered what was published before", got)
		}
	})
}

// In-process subscribers are members of the broker's consumer group like
// any Kafka client: one in-process and one franz-go member of one group
// split its partitions, every record reaches exactly one of them, and the
// group's committed offsets cover what either handled.
func TestInProcessSharesGroupWithKafkaClient(t *testing.T) {
	b := brokertest.StartBroker(t)
	e := env{b: b, local: true}
	p := newPubSub(t, e, map[string]string{"consumerID": "shared"})
	in := &inbox{}
	subscribe(t, t.Context(), p, "split", in)

	var mu sync.Mutex
	var viaKafka []string
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumerGroup("shared"), kgo.ConsumeTopics("split"),
		kgo.Balancers(kgo.CooperativeStickyBalancer()), kgo.HeartbeatInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			fs := cl.PollFetches(t.Context())
			if fs.IsClientClosed() || t.Context().Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				mu.Lock()
				viaKafka = append(viaKafka, string(r.Value))
				mu.Unlock()
			})
		}
	}()
	t.Cleanup(func() {
		cl.Close()
		<-polled
	})
	adm := newAdmin(t, b.Addr())
	poll.Until(t, waitLong, "two members sharing the three partitions", func() bool {
		ds, err := adm.DescribeGroups(t.Context(), "shared")
		if err != nil || ds["shared"].State != "Stable" || len(ds["shared"].Members) != 2 {
			return false
		}
		n := 0
		for _, m := range ds["shared"].Members {
			a, _ := m.Assigned.AsConsumer()
			for _, tp := range a.Topics {
				if len(tp.Partitions) == 0 {
					return false
				}
				n += len(tp.Partitions)
			}
		}
		return n == 3
	})
	const n = 60
	for i := range n {
		publish(t, p, "split", strconv.Itoa(i), map[string]string{"partitionKey": "k" + strconv.Itoa(i)})
	}
	poll.Until(t, waitLong, "every record at one member", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(in.data())+len(viaKafka) >= n
	})
	mu.Lock()
	all := append(in.data(), viaKafka...)
	kafka := len(viaKafka)
	mu.Unlock()
	slices.Sort(all)
	if len(all) != n || len(slices.Compact(all)) != n {
		t.Fatalf("%d deliveries, %d distinct; want each of %d once", len(all), len(slices.Compact(all)), n)
	}
	if kafka == 0 || kafka == n {
		t.Fatalf("the Kafka client got %d of %d: the group did not split", kafka, n)
	}
	// What the in-process member handled is committed in the group.
	poll.Until(t, waitLong, "the in-process member's commits", func() bool {
		offs, err := adm.FetchOffsets(t.Context(), "shared")
		if err != nil {
			return false
		}
		for _, m := range in.get(in.data()[len(in.data())-1]) {
			part, _ := strconv.ParseInt(m.Metadata["__partition"], 10, 32)
			off, _ := strconv.ParseInt(m.Metadata["__offset"], 10, 64)
			if o, ok := offs.Lookup("split", int32(part)); !ok || o.At != off+1 {
				return false
			}
		}
		return true
	})
}

// Given only the embedded broker (no address at all), pubsub.mecha
// publishes and subscribes in-process: no socket is involved.
func TestInProcessWithoutAddress(t *testing.T) {
	b := brokertest.StartBroker(t)
	p := mechapubsub.New(testLogger(), mechapubsub.Defaults{Broker: b})
	if err := p.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: map[string]string{"consumerID": "no-socket"}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	in := &inbox{}
	subscribe(t, t.Context(), p, "direct", in)
	publish(t, p, "direct", "in-process", nil)
	poll.Until(t, waitLong, "the record", func() bool { return in.has("in-process") })
}

// Over the network, pubsub.mecha authenticates to a broker that asks for
// SASL (saslUsername, saslPassword, saslMechanism), even when that
// broker is this runtime's own; without credentials it is refused.
func TestSASLOverTheNetwork(t *testing.T) {
	b := brokertest.StartBroker(t, func(c *broker.Config) { c.SASLUsers = map[string]string{"app": "app-secret"} })
	for _, mech := range []string{"SCRAM-SHA-512", "SHA-256", "PLAIN"} {
		t.Run(mech, func(t *testing.T) {
			// The broker is this process's, yet credentials make the
			// component a network client of its SASL listener.
			p := newPubSub(t, env{b: b, local: true}, map[string]string{"consumerID": "app1", "saslUsername": "app", "saslPassword": "app-secret", "saslMechanism": mech})
			in := &inbox{}
			subscribe(t, t.Context(), p, "secured", in)
			publish(t, p, "secured", "hello "+mech, nil)
			poll.Until(t, waitLong, "the message through SASL", func() bool { return in.has("hello " + mech) })
		})
	}
	// A wrong password: Init, which connects, names the refusal.
	p := mechapubsub.New(testLogger(), mechapubsub.Defaults{Brokers: b.Addr()})
	err := p.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Name: "pubsub", Properties: map[string]string{"saslUsername": "app", "saslPassword": "wrong"}}})
	if err == nil {
		_ = p.Close()
		t.Fatal("Init with a wrong password succeeded")
	}
	if !strings.Contains(err.Error(), "SASL_AUTHENTICATION_FAILED") {
		t.Fatalf("Init with a wrong password: %v", err)
	}
}
