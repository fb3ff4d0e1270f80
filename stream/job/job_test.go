package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker"
	"mecha/broker/brokertest"
	"mecha/broker/inproc"
	"mecha/internal/poll"
)

const goodDoc = `{"apiVersion":"mecha.io/v1alpha1","kind":"StreamJob","metadata":{"name":"uv"},
 "spec":{"source":{"topic":"bids","eventTimeField":"ts","maxOutOfOrderness":"2s"},
  "filter":"price > 0","map":{"auction":"auction","bidder":"bidder","ts":"ts"},"keyBy":"auction",
  "window":{"type":"tumbling","size":"10s"},"aggregate":{"type":"countDistinct","field":"bidder"},
  "sink":{"type":"topic","topic":"uv-out"},"deadLetterTopic":"bids-dlq","lateTopic":"bids-late"}}`

func TestParseDocument(t *testing.T) {
	s, err := ParseDocument([]byte(goodDoc))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "uv" || s.Window.Size.Duration != 10*time.Second || s.Source.MaxOutOfOrderness.Duration != 2*time.Second {
		t.Fatalf("parsed %+v", s)
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"unknown field", `"keyBy":"auction"`, `"groupBy":"auction"`, `unknown field "groupBy"`},
		{"no topic", `"topic":"bids"`, `"topic":""`, "spec.source.topic: must be set"},
		{"bad window", `"type":"tumbling"`, `"type":"hopping"`, `spec.window: kind "hopping"`},
		{"bad duration", `"size":"10s"`, `"size":"ten"`, `want a duration such as "10s", got "ten"`},
		{"bad aggregate", `"type":"countDistinct"`, `"type":"median"`, `spec.aggregate: aggregate "median"`},
		{"bad filter", `"price > 0"`, `"price >"`, "spec.filter:"},
		{"bad map", `"bidder":"bidder"`, `"bidder":"bidder +"`, "spec.map.bidder:"},
		{"bad sink", `"type":"topic"`, `"type":"s3"`, `spec.sink.type: want topic, state, app, pubsub, stdout or blackhole, got "s3"`},
		{"no name", `"name":"uv"`, `"name":""`, "metadata.name: must be set"},
		{"bad start offset", `"topic":"bids",`, `"topic":"bids","startOffset":"middle",`, `spec.source.startOffset: want earliest or latest, got "middle"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(goodDoc, c.from, c.to, 1)
			if doc == goodDoc {
				t.Fatalf("test case did not change the document")
			}
			_, err := ParseDocument([]byte(doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to say %q", err, c.want)
			}
		})
	}
}

// TestRunUVThroughBroker runs the UV job against a real broker: bids with
// out-of-order event times go in, exact distinct bidders per auction per
// 10 s window come out on the sink topic; a malformed record goes to the
// dead-letter topic with its error, a too-late one to the late topic.
func TestRunUVThroughBroker(t *testing.T) {
	eachWay(t, func(t *testing.T, addr string, local broker.Local) {
		// One source partition keeps the produce order the watermark sees;
		// TestPartitionWatermarks covers several.
		adm, err := kgo.NewClient(kgo.SeedBrokers(addr))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kadm.NewClient(adm).CreateTopic(context.Background(), 1, 1, nil, "bids"); err != nil {
			t.Fatal(err)
		}
		adm.Close()
		spec, err := ParseDocument([]byte(goodDoc))
		if err != nil {
			t.Fatal(err)
		}
		r, err := New(spec, Options{Brokers: addr, Broker: local})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		defer func() { cancel(); <-done }()

		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation(),
			kgo.ConsumeTopics("uv-out", "bids-dlq", "bids-late"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		want := map[string]int{} // "auction@windowStart" -> distinct bidders
		seen := map[string]map[string]bool{}
		var recs []*kgo.Record
		add := func(auction string, bidder int, ts int64) {
			k := fmt.Sprintf("%s@%d", auction, ts/10000*10000)
			if seen[k] == nil {
				seen[k] = map[string]bool{}
			}
			seen[k][fmt.Sprint(bidder)] = true
			want[k] = len(seen[k])
			recs = append(recs, &kgo.Record{Topic: "bids", Key: []byte(auction),
				Value: []byte(fmt.Sprintf(`{"auction":%q,"bidder":%d,"price":5,"ts":%d}`, auction, bidder, ts))})
		}
		base := int64(1_700_000_000_000)
		for i := 0; i < 300; i++ {
			// Up to 1.5 s out of order, within the 2 s bound.
			ts := base + int64(i)*100 - int64(i%4)*500
			add(fmt.Sprintf("a%d", i%3), i%17, ts)
		}
		recs = append(recs, &kgo.Record{Topic: "bids", Value: []byte(`{not json`)})
		recs = append(recs, &kgo.Record{Topic: "bids", Value: []byte(`{"auction":"a0","bidder":1,"price":0,"ts":1}`)}) // filtered
		// Push the watermark past every window; then, once the windows fired
		// (the watermark moves at the end of a poll), send one too late.
		recs = append(recs, &kgo.Record{Topic: "bids", Value: []byte(fmt.Sprintf(`{"auction":"z","bidder":1,"price":5,"ts":%d}`, base+100000))})
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 30*time.Second, "the windows fired", func() bool { return r.Counts().Out >= int64(len(want)) })
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "bids", Value: []byte(fmt.Sprintf(`{"auction":"a1","bidder":99,"price":5,"ts":%d}`, base))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		var dlq, late []*kgo.Record
		poll.Until(t, 30*time.Second, "every window, the dead letter and the late event", func() bool {
			pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer pcancel()
			cl.PollFetches(pctx).EachRecord(func(rec *kgo.Record) {
				switch rec.Topic {
				case "uv-out":
					var o Output
					if err := json.Unmarshal(rec.Value, &o); err != nil {
						t.Errorf("bad output %s", rec.Value)
					}
					got[fmt.Sprintf("%s@%d", o.Key, o.WindowStart)] = int(o.Value.(float64))
				case "bids-dlq":
					dlq = append(dlq, rec)
				case "bids-late":
					late = append(late, rec)
				}
			})
			return len(got) >= len(want) && len(dlq) >= 1 && len(late) >= 1
		})
		for k, n := range want {
			if got[k] != n {
				t.Errorf("window %s: UV %d, want %d", k, got[k], n)
			}
		}
		if len(dlq) != 1 || string(dlq[0].Value) != `{not json` || !strings.Contains(headerValue(dlq[0], "error"), "decode") {
			t.Errorf("dead letters = %v", dlq)
		}
		if len(late) != 1 || !strings.Contains(string(late[0].Value), `"bidder":99`) {
			t.Errorf("late events = %v", late)
		}
		c := r.Counts()
		if c.Filtered != 1 || c.DeadLettered != 1 || c.Late != 1 {
			t.Errorf("counts %+v, want 1 filtered, 1 dead-lettered, 1 late", c)
		}
	})
}

func headerValue(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// TestPartitionWatermarks: the job's watermark is the lowest of its source
// partitions', so a partition behind in event time is not made late by
// another partition ahead.
func TestPartitionWatermarks(t *testing.T) {
	p := testPipeline(t, Spec{Name: "wm", Source: Source{Topic: "t", EventTimeField: "ts"}, Sink: Sink{Type: "blackhole"}})
	now := time.Now()
	p.AddPartition("t", 0)
	p.AddPartition("t", 1)
	for _, c := range []struct {
		partition int32
		ts        int64
		want      int64
	}{{0, 1000, math.MinInt64}, {1, 500, 499}, {0, 5000, 499}, {1, 6000, 4999}} {
		p.Round([]Record{{Topic: "t", Partition: c.partition, Fields: map[string]any{"ts": c.ts}}}, now)
		if wm := p.Watermark(); wm != c.want {
			t.Fatalf("after ts %d on partition %d: watermark %d, want %d", c.ts, c.partition, wm, c.want)
		}
	}
}

func testPipeline(t *testing.T, s Spec) *Pipeline {
	t.Helper()
	p, err := NewPipeline(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStateSinkRetriesWhileDown: a state sink that fails is retried with
// backoff until it takes the results; none is dropped.
func TestStateSinkRetriesWhileDown(t *testing.T) {
	eachWay(t, func(t *testing.T, addr string, local broker.Local) {
		doc := strings.Replace(goodDoc, `"sink":{"type":"topic","topic":"uv-out"}`, `"sink":{"type":"state","store":"sessions"}`, 1)
		// The records go to one of three partitions: the others are idle.
		doc = strings.Replace(doc, `"maxOutOfOrderness":"2s"`, `"maxOutOfOrderness":"2s","idleTimeout":"300ms"`, 1)
		spec, err := ParseDocument([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		failures, saved := 0, map[string]string{}
		save := func(_ context.Context, store string, entries []StateEntry) error {
			mu.Lock()
			defer mu.Unlock()
			if store != "sessions" {
				t.Errorf("saved to store %q, want sessions", store)
			}
			if failures < 2 {
				failures++
				return errors.New("store is down")
			}
			for _, e := range entries {
				saved[e.Key] = string(e.Value)
			}
			return nil
		}
		if _, err := New(spec, Options{Brokers: addr, Broker: local}); err == nil || !strings.Contains(err.Error(), "a state sink needs") {
			t.Fatalf("a state sink without SaveState: error %v", err)
		}
		r, err := New(spec, Options{Brokers: addr, Broker: local, SaveState: save})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		defer func() { cancel(); <-done }()
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic("bids"))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for _, v := range []string{`{"auction":"a","bidder":1,"price":5,"ts":1000}`, `{"auction":"a","bidder":2,"price":5,"ts":2000}`, `{"auction":"a","bidder":1,"price":5,"ts":30000}`} {
			// One at a time, so that the watermark sees them in order.
			if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("a"), Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		poll.Until(t, 20*time.Second, "the window result saved after the store came back", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return strings.Contains(saved["uv:a:0"], `"value":2`)
		})
		mu.Lock()
		defer mu.Unlock()
		if failures != 2 {
			t.Fatalf("%d failed saves, want 2 before the store came back", failures)
		}
	})
}

// TestIdlePartitionReleasesWatermark: a partition without records for the
// idle timeout stops holding the watermark back; one with a record holds
// it again.
func TestIdlePartitionReleasesWatermark(t *testing.T) {
	p := testPipeline(t, Spec{Name: "idle", Source: Source{Topic: "t", EventTimeField: "ts", IdleTimeout: Duration{time.Second}}, Sink: Sink{Type: "blackhole"}})
	now := p.started
	p.AddPartition("t", 1) // assigned, never had a record
	p.Round([]Record{{Topic: "t", Partition: 0, Fields: map[string]any{"ts": int64(5000)}}}, now)
	if wm := p.Watermark(); wm != math.MinInt64 {
		t.Fatalf("watermark %d, want it held by the empty partition", wm)
	}
	p.Round(nil, now.Add(2*time.Second))
	if wm := p.Watermark(); wm != 4999 {
		t.Fatalf("watermark %d after the idle timeout, want 4999 (partition 1 idle, partition 0 idle too: the highest)", wm)
	}
	p.Round([]Record{{Topic: "t", Partition: 0, Fields: map[string]any{"ts": int64(6000)}}}, now.Add(2*time.Second))
	if wm := p.Watermark(); wm != 5999 {
		t.Fatalf("watermark %d, want partition 0's 5999 with partition 1 idle", wm)
	}
	p.Round([]Record{{Topic: "t", Partition: 1, Fields: map[string]any{"ts": int64(3000)}}}, now.Add(2*time.Second))
	if wm := p.Watermark(); wm != 5999 {
		t.Fatalf("watermark %d, want it kept at 5999 (it never goes back) with partition 1 active again at 2999", wm)
	}
}

// eachWay runs test with the job on the broker in-process (local set, as
// mecha run gives it), then over the network (local nil); addr is the
// broker's address either way, for the test's own Kafka clients.
func eachWay(t *testing.T, test func(t *testing.T, addr string, local broker.Local)) {
	brokertest.EachWay(t, func(t *testing.T, b *broker.Broker, inProcess bool) {
		var local broker.Local
		if inProcess {
			local = b
		}
		test(t, b.Addr(), local)
	})
}

// Given the embedded broker and no address at all, a job reads and
// writes in-process; a source naming another cluster goes over the
// network.
func TestInProcessWithoutAddress(t *testing.T) {
	b := brokertest.StartBroker(t)
	spec := Spec{Name: "direct", Source: Source{Topic: "in"}, Sink: Sink{Type: "topic", Topic: "out"}}
	r, err := New(spec, Options{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if r.local == nil {
		t.Fatal("the job does not call the embedded broker in-process")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c := inproc.New(b, inproc.Options{})
	if err := c.ProduceSync(ctx, &kgo.Record{Topic: "in", Value: []byte(`{"n":1}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the record on the sink", func() bool {
		ends, err := c.EndOffsets(ctx, "out")
		return err == nil && ends["out"][0]+ends["out"][1]+ends["out"][2] == 1
	})

	other := spec
	other.Source.Brokers = "127.0.0.1:1"
	if r, err := New(other, Options{Broker: b}); err != nil || r.local != nil {
		t.Fatalf("a source naming another cluster: local %v, %v; want the network", r != nil && r.local != nil, err)
	}
}
