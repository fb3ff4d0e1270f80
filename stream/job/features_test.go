package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker"
	"mecha/internal/poll"
)

// ---- helpers -------------------------------------------------------------

// ftStart runs a new runner of spec in the background; stop cancels it
// (no checkpoint at stop: it stands for a crash) and fails the test if
// Run returned an error. stop is also a cleanup, so it may be skipped.
func ftStart(t *testing.T, spec Spec, opts Options, before ...func(*Runner)) (*Runner, func()) {
	t.Helper()
	r, err := New(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range before {
		f(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("job %s: Run: %v", spec.Name, err)
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// ftClient is a producer and admin client of the broker at addr that
// sends each record to the partition it names.
func ftClient(t *testing.T, addr string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func ftCreateTopic(t *testing.T, cl *kgo.Client, topic string, partitions int32) {
	t.Helper()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), partitions, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
}

func ftProduce(t *testing.T, cl *kgo.Client, recs []*kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// ftEndCount is the number of records in topic now (the sum of its end
// offsets); 0 while it does not exist. The client caches metadata: a
// topic it found missing stays missing to it for a while, so the tests
// create their sink topics first.
func ftEndCount(t *testing.T, cl *kgo.Client, topic string) int64 {
	t.Helper()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		return 0
	}
	n := int64(0)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += o.Offset
		}
	})
	return n
}

// ftReadTopic reads every record of topic up to its end offsets now, in
// partition order.
func ftReadTopic(t *testing.T, addr string, topic string) []*kgo.Record {
	t.Helper()
	adm := ftClient(t, addr)
	ends, err := kadm.NewClient(adm).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	from := map[int32]kgo.Offset{}
	end := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			from[o.Partition] = kgo.NewOffset().At(0)
			end[o.Partition] = o.Offset
		}
	})
	if len(from) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[int32][]*kgo.Record{}
	complete := func() bool {
		for p, e := range end {
			if int64(len(got[p])) < e {
				return false
			}
		}
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !complete() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: timed out", topic)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < end[r.Partition] {
				got[r.Partition] = append(got[r.Partition], r)
			}
		})
	}
	var ps []int32
	for p := range got {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	var out []*kgo.Record
	for _, p := range ps {
		out = append(out, got[p]...)
	}
	return out
}

// ftState is a state sink: the last value saved per key.
type ftState struct {
	mu sync.Mutex
	m  map[string]string
}

func newFTState() *ftState { return &ftState{m: map[string]string{}} }

func (s *ftState) save(_ context.Context, _ string, es []StateEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range es {
		s.m[e.Key] = string(e.Value)
	}
	return nil
}

// diff compares the saved windows of job (keys "<job>:<key>:<start>")
// with want ("<key>:<start>" → value) and describes the first
// differences; "" when they are the same.
func (s *ftState) diff(job string, want map[string]int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, n := range want {
		v, ok := s.m[job+":"+k]
		if !ok {
			out = append(out, k+" missing")
			continue
		}
		var o Output
		if err := json.Unmarshal([]byte(v), &o); err != nil {
			out = append(out, fmt.Sprintf("%s: %v", k, err))
			continue
		}
		if f, ok := o.Value.(float64); !ok || int64(f) != n || o.Key+":"+fmt.Sprint(o.WindowStart) != k || o.Update {
			out = append(out, fmt.Sprintf("%s = %s, want value %d", k, v, n))
		}
	}
	for k := range s.m {
		if _, ok := want[strings.TrimPrefix(k, job+":")]; !ok {
			out = append(out, "unexpected "+k)
		}
	}
	sort.Strings(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("… %d more", len(out)-10))
	}
	return strings.Join(out, "; ")
}

// ftWaitState polls until the state sink of job holds exactly want, and
// fails naming the differences left otherwise.
func ftWaitState(t *testing.T, s *ftState, job string, want map[string]int64) {
	t.Helper()
	var last string
	defer func() {
		if t.Failed() && last != "" {
			t.Logf("state of %s: %s", job, last)
		}
	}()
	poll.Until(t, 30*time.Second, "the state sink of "+job+" to hold every window", func() bool {
		last = s.diff(job, want)
		return last == ""
	})
}

// uvData is visits of pages by users over 4 partitions, each partition
// in event-time order, and the exact distinct users per page per 1 s
// window ("<page>:<start>" → UV). One visit far ahead per partition ends
// the data: it closes every window of the visits (its own never fires).
func uvData(topic string, n int) (recs []*kgo.Record, uv map[string]int64) {
	users := map[string]map[string]bool{}
	for i := range n {
		page, user, ts := fmt.Sprintf("p%d", (i*13)%37), fmt.Sprintf("u%d", (i*7)%97), int64(i)*2
		k := fmt.Sprintf("%s:%d", page, ts/1000*1000)
		if users[k] == nil {
			users[k] = map[string]bool{}
		}
		users[k][user] = true
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 4),
			Value: fmt.Appendf(nil, `{"page":%q,"user":%q,"ts":%d}`, page, user, ts)})
	}
	for p := range int32(4) {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: []byte(`{"page":"end","user":"x","ts":100000000}`)})
	}
	uv = map[string]int64{}
	for k, us := range users {
		uv[k] = int64(len(us))
	}
	return recs, uv
}

func uvSpec(name, topic string, parallelism int) Spec {
	return Spec{Name: name, Source: Source{Topic: topic, EventTimeField: "ts",
		// No partition goes idle in these tests: only data moves the watermark.
		IdleTimeout: Duration{time.Minute}},
		KeyBy: "page", Window: Window{Type: "tumbling", Size: Duration{time.Second}},
		Aggregate: Aggregate{Type: "countDistinct", Field: "user"}, Sink: Sink{Type: "state"}, Parallelism: parallelism}
}

// ---- 1. parallelism ------------------------------------------------------

// TestParallelismExactUV runs a count-distinct job with 4 tasks over a
// 4-partition topic, and the same job with 1 task over the same data:
// both leave exactly the reference UV of every page in every window, each
// window fired once.
func TestParallelismExactUV(t *testing.T) {
	eachWay(t, func(t *testing.T, addr string, local broker.Local) {
		cl := ftClient(t, addr)
		ftCreateTopic(t, cl, "visits", 4)
		recs, want := uvData("visits", 4000)
		st4, st1 := newFTState(), newFTState()
		r4, _ := ftStart(t, uvSpec("uv4", "visits", 4), Options{Brokers: addr, Broker: local, SaveState: st4.save})
		r1, _ := ftStart(t, uvSpec("uv1", "visits", 1), Options{Brokers: addr, Broker: local, SaveState: st1.save})
		ftProduce(t, cl, recs)
		ftWaitState(t, st4, "uv4", want)
		ftWaitState(t, st1, "uv1", want)
		for _, r := range []*Runner{r4, r1} {
			if c := r.Counts(); c.Out != int64(len(want)) || c.Late != 0 || c.DeadLettered != 0 {
				t.Errorf("job %s: counts %+v, want %d windows out, none late or dead-lettered", r.spec.Name, c, len(want))
			}
		}
		if got := r4.Status().Parallelism; got != 4 {
			t.Errorf("status parallelism %d, want 4", got)
		}
	})
}

// TestParallelismCheckpointPortable stops a 4-task job mid-window after a
// checkpoint (no checkpoint at stop, as in a crash) and resumes it with 2
// tasks on the same data dir: the open windows and the distinct-value
// dictionary move to the tasks that own their keys now, and the state
// ends exactly at the reference.
func TestParallelismCheckpointPortable(t *testing.T) {
	eachWay(t, func(t *testing.T, addr string, local broker.Local) {
		cl := ftClient(t, addr)
		ftCreateTopic(t, cl, "visits", 4)
		recs, want := uvData("visits", 4000)
		const half = 2250 // event time 4.5 s: mid-window
		st := newFTState()
		dataDir := t.TempDir()
		spec := uvSpec("uvcp", "visits", 4)
		spec.Checkpoint.Interval = Duration{20 * time.Millisecond}
		a, stopA := ftStart(t, spec, Options{Brokers: addr, Broker: local, DataDir: dataDir, SaveState: st.save})
		ftProduce(t, cl, recs[:half])
		poll.Until(t, 30*time.Second, "the first run to read the first half", func() bool { return a.Counts().In == half })
		c0 := a.Counts().Checkpoints
		poll.Until(t, 30*time.Second, "a checkpoint after the first half", func() bool { return a.Counts().Checkpoints > c0 })
		stopA()

		// The checkpoint holds open windows (else the resume would prove
		// nothing about moving them between tasks).
		b, err := os.ReadFile(filepath.Join(dataDir, "uvcp", "checkpoint.json"))
		if err != nil {
			t.Fatal(err)
		}
		var cp checkpointFile
		if err := json.Unmarshal(b, &cp); err != nil {
			t.Fatal(err)
		}
		if len(cp.Operator.Panes) == 0 || len(cp.Dictionary) == 0 {
			t.Fatalf("checkpoint has %d panes and %d dictionary values, want some of both", len(cp.Operator.Panes), len(cp.Dictionary))
		}

		spec.Parallelism = 2
		r2, _ := ftStart(t, spec, Options{Brokers: addr, Broker: local, DataDir: dataDir, SaveState: st.save})
		ftProduce(t, cl, recs[half:])
		ftWaitState(t, st, "uvcp", want)
		c := r2.Counts()
		if !c.Restored || c.In != int64(len(recs)-half) {
			t.Fatalf("second run: restored %v, read %d records, want it resumed at record %d (read %d)", c.Restored, c.In, half, len(recs)-half)
		}
	})
}

// pipelineResults runs recs through a pipeline of spec in rounds of size
// batch and returns its emitted results as "key@start" → value, counting
// each key's window.
func pipelineResults(t *testing.T, spec Spec, recs []Record, batch int) (vals map[string]any, times map[string]int, busyTasks int) {
	t.Helper()
	p := testPipeline(t, spec)
	for part := range int32(3) {
		p.AddPartition(spec.Source.Topic, part)
	}
	vals, times = map[string]any{}, map[string]int{}
	now := time.Now()
	for i := 0; i < len(recs); i += batch {
		if i+batch >= len(recs) {
			// Before the last round: how many tasks hold windows.
			for _, tk := range p.tasks {
				if tk.op.Panes() > 0 {
					busyTasks++
				}
			}
		}
		for _, res := range p.Round(recs[i:min(i+batch, len(recs))], now) {
			if res.Kind != Emitted {
				t.Fatalf("result %+v, want only window results", res)
			}
			k := fmt.Sprintf("%s@%d", res.Key, res.Window.Start)
			vals[k] = res.Value
			times[k]++
		}
	}
	return vals, times, busyTasks
}

// TestPipelineParallelismSameResults: a pipeline with 3 tasks fires every
// key's window exactly once, with the value a 1-task pipeline computes
// and the test's reference, and its keys are spread over all 3 tasks.
func TestPipelineParallelismSameResults(t *testing.T) {
	var recs []Record
	want := map[string]any{}
	users := map[string]map[int]bool{}
	for i := range 3000 {
		page, user, ts := fmt.Sprintf("p%d", i%23), i%41, int64(i)*3
		k := fmt.Sprintf("%s@%d", page, ts/1000*1000)
		if users[k] == nil {
			users[k] = map[int]bool{}
		}
		users[k][user] = true
		recs = append(recs, Record{Topic: "v", Partition: int32(i % 3), Offset: int64(i / 3),
			Fields: map[string]any{"page": page, "user": int64(user), "ts": ts}})
	}
	for k, us := range users {
		want[k] = int64(len(us))
	}
	for part := range int32(3) {
		recs = append(recs, Record{Topic: "v", Partition: part, Fields: map[string]any{"page": "end", "user": int64(0), "ts": int64(1e9)}})
	}
	spec := Spec{Name: "pp", Source: Source{Topic: "v", EventTimeField: "ts", IdleTimeout: Duration{time.Hour}}, KeyBy: "page",
		Window: Window{Type: "tumbling", Size: Duration{time.Second}}, Aggregate: Aggregate{Type: "countDistinct", Field: "user"},
		Sink: Sink{Type: "blackhole"}}
	one, onceEach, _ := pipelineResults(t, spec, recs, 250)
	if !reflect.DeepEqual(one, want) {
		t.Fatalf("1 task: %d windows, want the %d of the reference", len(one), len(want))
	}
	spec.Parallelism = 3
	three, times, busy := pipelineResults(t, spec, recs, 250)
	for k, n := range times {
		if n != 1 {
			t.Errorf("3 tasks: window %s came out %d times", k, n)
		}
	}
	for k, n := range onceEach {
		if n != 1 {
			t.Errorf("1 task: window %s came out %d times", k, n)
		}
	}
	if !reflect.DeepEqual(three, one) {
		for k, v := range one {
			if three[k] != v {
				t.Errorf("window %s: %v with 3 tasks, %v with 1", k, three[k], v)
			}
		}
		t.Fatalf("3 tasks: %d windows, 1 task: %d", len(three), len(one))
	}
	if busy != 3 {
		t.Fatalf("%d of 3 tasks held windows, want the keys spread over all", busy)
	}
}

// ---- 2. pass-through -----------------------------------------------------

// TestPassThroughFilterMap: a job without a window filters and maps each
// record to a topic sink. The sink holds exactly the mapped records of the
// kept inputs, per key in source order, with the source keys; whole JSON
// numbers stay integers, so id % 2 works and a 64-bit id keeps its last
// digit.
func TestPassThroughFilterMap(t *testing.T) {
	eachWay(t, func(t *testing.T, addr string, local broker.Local) {
		cl := ftClient(t, addr)
		ftCreateTopic(t, cl, "events", 3)
		ftCreateTopic(t, cl, "evens-out", 3)
		spec, err := ParseDocument([]byte(`{"apiVersion":"mecha.io/v1alpha1","kind":"StreamJob","metadata":{"name":"evens"},
		 "spec":{"source":{"topic":"events"},"filter":"id % 2 == 0",
		  "map":{"id":"id","twice":"id * 2","big":"big","who":"name + \"!\""},
		  "sink":{"type":"topic","topic":"evens-out"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		r, _ := ftStart(t, spec, Options{Brokers: addr, Broker: local})
		const big = 9007199254740993 // 2^53+1: a float64 would make it ...992
		var recs []*kgo.Record
		want := map[string][]string{} // source key → mapped records, in order
		total := 0
		for i := range 300 {
			key := fmt.Sprintf("k%d", i%7)
			recs = append(recs, &kgo.Record{Topic: "events", Partition: int32(i % 7 % 3), Key: []byte(key),
				Value: fmt.Appendf(nil, `{"id":%d,"name":"n%d","big":%d,"extra":true}`, i, i, big+i)})
			if i%2 == 0 {
				want[key] = append(want[key], fmt.Sprintf(`{"big":%d,"id":%d,"twice":%d,"who":"n%d!"}`, big+i, i, 2*i, i))
				total++
			}
		}
		ftProduce(t, cl, recs)
		poll.Until(t, 30*time.Second, "every kept record on the sink", func() bool { return ftEndCount(t, cl, "evens-out") >= int64(total) })
		got := map[string][]string{}
		out := ftReadTopic(t, addr, "evens-out")
		for _, rec := range out {
			got[string(rec.Key)] = append(got[string(rec.Key)], string(rec.Value))
		}
		if len(out) != total {
			t.Errorf("sink holds %d records, want %d", len(out), total)
		}
		for k, w := range want {
			if !reflect.DeepEqual(got[k], w) {
				t.Errorf("key %s: sink has\n%v\nwant\n%v", k, got[k], w)
			}
		}
		if c := r.Counts(); c.In != 300 || c.Filtered != 150 || c.Out != int64(total) || c.DeadLettered != 0 {
			t.Errorf("counts %+v, want 300 in, 150 filtered, %d out, none dead-lettered", c, total)
		}
	})
}

// ---- 3. windowed join ----------------------------------------------------

// TestPipelineWindowedJoin feeds a join of clicks (left) and views (right)
// round by round: pairs come out only for equal keys in the same tumbling
// window, at the round whose watermark passes the window's end; a record
// arriving within the allowed lateness after the window fired emits only
// the pairs it makes (Update); one past the lateness is Late.
func TestPipelineWindowedJoin(t *testing.T) {
	L := func(id, user string, ts int64) Record {
		return Record{Topic: "clicks", Fields: map[string]any{"id": id, "user": user, "ts": ts}}
	}
	R := func(id, user string, ts int64) Record {
		return Record{Topic: "views", Fields: map[string]any{"id": id, "user": user, "ts": ts}}
	}
	rounds := []struct {
		name string
		recs []Record
		want []string
	}{
		{"before the watermark reaches the window end", []Record{L("a1", "a", 1000), L("b1", "b", 2000), R("ra1", "a", 3000), R("rc1", "c", 4000), R("ra2", "a", 12000)}, nil},
		{"the watermark passes the first window", []Record{L("a2", "a", 10500)}, []string{"a [0,10000) a1×ra1"}},
		{"within the allowed lateness", []Record{R("ra3", "a", 5000), R("rb1", "b", 6000), L("a3", "a", 16000), R("rx", "x", 16000)},
			[]string{"a [0,10000) a1×ra3 update", "b [0,10000) b1×rb1 update"}},
		{"past the allowed lateness", []Record{R("ra4", "a", 7000), L("b2", "b", 8000)}, []string{"late b2", "late ra4"}},
		{"the watermark passes the second window", []Record{L("z1", "z", 30000), R("rz1", "z", 30000)},
			[]string{"a [10000,20000) a2×ra2", "a [10000,20000) a3×ra2"}},
	}
	for _, par := range []int{1, 3} {
		t.Run(fmt.Sprintf("parallelism %d", par), func(t *testing.T) {
			p := testPipeline(t, Spec{Name: "j", Source: Source{Topic: "clicks", EventTimeField: "ts", IdleTimeout: Duration{time.Hour}}, KeyBy: "user",
				Window: Window{Type: "tumbling", Size: Duration{10 * time.Second}, AllowedLateness: Duration{5 * time.Second}},
				Join:   &Join{Topic: "views", KeyBy: "user"}, Sink: Sink{Type: "blackhole"}, Parallelism: par})
			p.AddPartition("clicks", 0)
			p.AddPartition("views", 0)
			now := time.Now()
			for _, rd := range rounds {
				var got []string
				for _, res := range p.Round(rd.recs, now) {
					switch res.Kind {
					case Late:
						got = append(got, fmt.Sprint("late ", res.Src.Fields["id"]))
					case Emitted:
						pair, ok := res.Value.(JoinPair)
						if !ok || !res.Windowed {
							t.Fatalf("%s: result %+v, want a windowed JoinPair", rd.name, res)
						}
						s := fmt.Sprintf("%s [%d,%d) %v×%v", res.Key, res.Window.Start, res.Window.End, pair.Left["id"], pair.Right["id"])
						if res.Update {
							s += " update"
						}
						got = append(got, s)
					default:
						t.Fatalf("%s: result %+v", rd.name, res)
					}
				}
				sort.Strings(got)
				if !reflect.DeepEqual(got, rd.want) {
					t.Fatalf("%s: results %q, want %q", rd.name, got, rd.want)
				}
			}
			if c := p.takeCounts(); c.Late != 2 || c.Out != 5 {
				t.Fatalf("counts %+v, want 2 late and 5 pairs out", c)
			}
		})
	}
}

// TestJoinThroughBroker joins orders with payments read from two topics
// of a real broker, with 2 tasks, into a topic sink: exactly the pairs of
// equal order ids in the same 1 s window come out.
func TestJoinThroughBroker(t *testing.T) {
	eachWay(t, func(t *testing.T, addr string, local broker.Local) {
		cl := ftClient(t, addr)
		ftCreateTopic(t, cl, "orders", 1)
		ftCreateTopic(t, cl, "payments", 1)
		ftCreateTopic(t, cl, "paid-out", 3)
		r, _ := ftStart(t, Spec{Name: "paid", Source: Source{Topic: "orders", EventTimeField: "ts", IdleTimeout: Duration{time.Minute}},
			KeyBy: "order", Window: Window{Type: "tumbling", Size: Duration{time.Second}},
			Join: &Join{Topic: "payments", KeyBy: "order", Filter: "amount > 0"}, Sink: Sink{Type: "topic", Topic: "paid-out"}, Parallelism: 2},
			Options{Brokers: addr, Broker: local})
		var recs []*kgo.Record
		var want []string
		pay := func(id, order string, ts int64, amount int) {
			recs = append(recs, &kgo.Record{Topic: "payments", Value: fmt.Appendf(nil, `{"pay":%q,"order":%q,"ts":%d,"amount":%d}`, id, order, ts, amount)})
		}
		for i := range 20 {
			recs = append(recs, &kgo.Record{Topic: "orders", Value: fmt.Appendf(nil, `{"order":"o%d","ts":%d}`, i, i*100)})
		}
		recs = append(recs, &kgo.Record{Topic: "orders", Value: []byte(`{"order":"end","ts":100000}`)})
		for i := 0; i < 20; i += 2 {
			pay(fmt.Sprintf("p%d", i), fmt.Sprintf("o%d", i), int64(i*100+50), 5)
			want = append(want, fmt.Sprintf("o%d@%d o%d+p%d", i, i/10*1000, i, i))
		}
		pay("p4b", "o4", 450, 7) // a second payment of o4, same window
		want = append(want, "o4@0 o4+p4b")
		pay("p3", "o3", 1300, 5)    // o3 is in window 0, its payment in window 1
		pay("p99", "o99", 500, 5)   // no such order
		pay("p5", "o5", 550, 0)     // filtered out on the right
		pay("pend", "x", 100000, 1) // closes the windows on the right
		ftProduce(t, cl, recs)
		poll.Until(t, 30*time.Second, "every pair on the sink", func() bool { return ftEndCount(t, cl, "paid-out") >= int64(len(want)) })
		var got []string
		for _, rec := range ftReadTopic(t, addr, "paid-out") {
			var o struct {
				Key         string `json:"key"`
				WindowStart int64  `json:"windowStart"`
				Value       struct {
					Left, Right map[string]any
				} `json:"value"`
			}
			if err := json.Unmarshal(rec.Value, &o); err != nil {
				t.Fatalf("result %s: %v", rec.Value, err)
			}
			if string(rec.Key) != o.Key {
				t.Errorf("result %s under key %s", rec.Value, rec.Key)
			}
			got = append(got, fmt.Sprintf("%s@%d %v+%v", o.Key, o.WindowStart, o.Value.Left["order"], o.Value.Right["pay"]))
		}
		sort.Strings(got)
		sort.Strings(want)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("pairs\n%q\nwant\n%q", got, want)
		}
		if c := r.Counts(); c.Filtered != 1 || c.Out != int64(len(want)) {
			t.Fatalf("counts %+v, want 1 filtered and %d out", c, len(want))
		}
	})
}

// ---- 4. topic sink across a restart --------------------------------------

// dedupData is one partition of events under 5 keys, one every 20 ms of
// event time: each key has 10 events in each 1 s window.
func dedupData(from, to int) []*kgo.Record {
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		recs = append(recs, &kgo.Record{Topic: "ticks", Value: fmt.Appendf(nil, `{"k":"k%d","ts":%d}`, i%5, i*20)})
	}
	return recs
}

func dedupSpec() Spec {
	return Spec{Name: "dedup", Source: Source{Topic: "ticks", EventTimeField: "ts"}, KeyBy: "k",
		Window: Window{Type: "tumbling", Size: Duration{time.Second}}, Aggregate: Aggregate{Type: "count"},
		Sink: Sink{Type: "topic", Topic: "ticks-out"}, Checkpoint: Checkpoint{Interval: Duration{time.Hour}}}
}

// dedupFirstRun runs the job over records 0–274 (windows 0–4 fire: 25
// results), checkpoints on request, then over records up to 599 (windows
// 5–10: 30 results more) and stops without a checkpoint, as in a crash.
func dedupFirstRun(t *testing.T, addr string, local broker.Local, cl *kgo.Client, dataDir string) (atCheckpoint, atStop int64) {
	t.Helper()
	a, stopA := ftStart(t, dedupSpec(), Options{Brokers: addr, Broker: local, DataDir: dataDir})
	ftProduce(t, cl, dedupData(0, 275))
	poll.Until(t, 30*time.Second, "the first 25 results", func() bool { return ftEndCount(t, cl, "ticks-out") == 25 && a.Counts().In == 275 })
	if err := a.TriggerCheckpoint(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "the triggered checkpoint", func() bool { return a.Counts().Checkpoints == 1 })
	atCheckpoint = ftEndCount(t, cl, "ticks-out")
	ftProduce(t, cl, dedupData(275, 600))
	poll.Until(t, 30*time.Second, "55 results", func() bool { return ftEndCount(t, cl, "ticks-out") == 55 && a.Counts().In == 600 })
	atStop = ftEndCount(t, cl, "ticks-out")
	stopA()
	if atCheckpoint != 25 || atStop != 55 || a.Counts().Checkpoints != 1 {
		t.Fatalf("first run: %d results at the checkpoint, %d at the stop, %d checkpoints; want 25, 55, 1", atCheckpoint, atStop, a.Counts().Checkpoints)
	}
	return atCheckpoint, atStop
}

// dedupCheckSink checks that the sink holds each key's window once, with
// its count, and the job's headers.
func dedupCheckSink(t *testing.T, addr string, windows int) {
	t.Helper()
	seen := map[string]int{}
	for _, rec := range ftReadTopic(t, addr, "ticks-out") {
		var o Output
		if err := json.Unmarshal(rec.Value, &o); err != nil {
			t.Fatal(err)
		}
		k := fmt.Sprintf("%s@%d", o.Key, o.WindowStart)
		seen[k]++
		if o.Value != 10.0 {
			t.Errorf("window %s: count %v, want 10", k, o.Value)
		}
		if headerValue(rec, HeaderJob) != "dedup" || headerValue(rec, HeaderID) == "" {
			t.Errorf("record %s: headers %v, want %s=dedup and a %s", rec.Value, rec.Headers, HeaderJob, HeaderID)
		}
	}
	for w := range windows {
		for k := range 5 {
			if n := seen[fmt.Sprintf("k%d@%d", k, w*1000)]; n != 1 {
				t.Errorf("window k%d@%d is on the sink %d times, want once", k, w*1000, n)
			}
		}
	}
	if len(seen) != windows*5 {
		t.Errorf("sink holds %d windows, want %d", len(seen), windows*5)
	}
}

// TestTopicSinkNoDuplicatesAfterRestart: a job with a topic sink stops
// (as in a crash) after writing results past its last checkpoint; the
// restarted job replays from the checkpoint and makes those results
// again, but skips each one it finds on the sink with its mecha-id:
// exactly as many as were written between the checkpoint and the stop.
// Every window ends up on the sink once, with the right count.
func TestTopicSinkNoDuplicatesAfterRestart(t *testing.T) {
	eachWay(t, func(t *testing.T, addr string, local broker.Local) {
		cl := ftClient(t, addr)
		ftCreateTopic(t, cl, "ticks", 1)
		ftCreateTopic(t, cl, "ticks-out", 3)
		dataDir := t.TempDir()
		atCheckpoint, atStop := dedupFirstRun(t, addr, local, cl, dataDir)

		b, _ := ftStart(t, dedupSpec(), Options{Brokers: addr, Broker: local, DataDir: dataDir})
		ftProduce(t, cl, dedupData(600, 900)) // windows 11–16 fire: 85 in all
		poll.Until(t, 30*time.Second, "the second run to read from its checkpoint to the end", func() bool {
			return b.Counts().In == 900-275 && ftEndCount(t, cl, "ticks-out") >= 85
		})
		c := b.Counts()
		if !c.Restored || c.Skipped != atStop-atCheckpoint {
			t.Fatalf("second run: restored %v, skipped %d, want the %d results written after the checkpoint skipped", c.Restored, c.Skipped, atStop-atCheckpoint)
		}
		dedupCheckSink(t, addr, 17)
		if n := ftEndCount(t, cl, "ticks-out"); n != 85 {
			t.Fatalf("sink holds %d records, want 85", n)
		}
	})
}

// TestTopicSinkNoDuplicatesCheckpointDuringReplay: the restarted job
// checkpoints before its replay has made again the results it found on
// the sink. It must keep skipping them after that checkpoint, and a
// restart from that checkpoint (a second crash) must still skip them.
func TestTopicSinkNoDuplicatesCheckpointDuringReplay(t *testing.T) {
	for _, crashAgain := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash again %v", crashAgain), func(t *testing.T) {
			eachWay(t, func(t *testing.T, addr string, local broker.Local) {
				cl := ftClient(t, addr)
				ftCreateTopic(t, cl, "ticks", 1)
				ftCreateTopic(t, cl, "ticks-out", 3)
				dataDir := t.TempDir()
				atCheckpoint, atStop := dedupFirstRun(t, addr, local, cl, dataDir)

				// Paused from the start: the checkpoint comes before any replay.
				b, stopB := ftStart(t, dedupSpec(), Options{Brokers: addr, Broker: local, DataDir: dataDir}, func(r *Runner) {
					r.Pause()
					if err := r.TriggerCheckpoint(); err != nil {
						t.Fatal(err)
					}
				})
				poll.Until(t, 30*time.Second, "the checkpoint before the replay", func() bool { return b.Counts().Checkpoints == 1 })
				if in := b.Counts().In; in != 0 {
					t.Fatalf("read %d records while paused", in)
				}
				r := b
				if crashAgain {
					stopB()
					r, _ = ftStart(t, dedupSpec(), Options{Brokers: addr, Broker: local, DataDir: dataDir})
				} else {
					b.Resume()
				}
				ftProduce(t, cl, dedupData(600, 900))
				poll.Until(t, 30*time.Second, "the replay and the new records", func() bool {
					return r.Counts().In == 900-275 && ftEndCount(t, cl, "ticks-out") >= 85
				})
				if s := r.Counts().Skipped; s != atStop-atCheckpoint {
					t.Errorf("skipped %d, want the %d results written after the first checkpoint", s, atStop-atCheckpoint)
				}
				dedupCheckSink(t, addr, 17)
				if n := ftEndCount(t, cl, "ticks-out"); n != 85 {
					t.Fatalf("sink holds %d records, want 85", n)
				}
			})
		})
	}
}

// ---- 5. app and pubsub sinks ---------------------------------------------

// ftFlaky is an app or pub/sub that fails the calls it is told to, and
// records the bodies it took.
type ftFlaky struct {
	mu    sync.Mutex
	calls int
	fail  map[int]bool // by call number, from 1
	got   []string
	args  []string // what the first call named
}

func (f *ftFlaky) take(args []string, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.args == nil {
		f.args = args
	}
	if f.fail[f.calls] {
		return errors.New("unavailable")
	}
	f.got = append(f.got, string(body))
	return nil
}

func (f *ftFlaky) bodies() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

// TestAppAndPubSubSinksRetry: an app sink and a pubsub sink whose target
// fails the first 3 calls, and 2 more later on: every result arrives, in
// order, none lost and none twice.
func TestAppAndPubSubSinksRetry(t *testing.T) {
	for _, c := range []struct {
		name string
		sink Sink
		args []string // what each call names: the route, or the pub/sub and topic
	}{
		{"app", Sink{Type: "app", Route: "/results"}, []string{"/results"}},
		{"pubsub default component", Sink{Type: "pubsub", Topic: "results"}, []string{"pubsub", "results"}},
		{"pubsub named component", Sink{Type: "pubsub", PubSub: "events", Topic: "results"}, []string{"events", "results"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			eachWay(t, func(t *testing.T, addr string, local broker.Local) {
				cl := ftClient(t, addr)
				ftCreateTopic(t, cl, "src", 1)
				f := &ftFlaky{fail: map[int]bool{1: true, 2: true, 3: true, 20: true, 21: true}}
				opts := Options{Brokers: addr, Broker: local,
					InvokeApp: func(_ context.Context, route string, body []byte) error { return f.take([]string{route}, body) },
					Publish: func(_ context.Context, pubsub, topic string, body []byte) error {
						return f.take([]string{pubsub, topic}, body)
					}}
				ftStart(t, Spec{Name: "s", Source: Source{Topic: "src"}, Map: map[string]string{"n": "n"}, Sink: c.sink}, opts)
				var recs []*kgo.Record
				var want []string
				for i := range 40 {
					recs = append(recs, &kgo.Record{Topic: "src", Value: fmt.Appendf(nil, `{"n":%d,"drop":"me"}`, i)})
					want = append(want, fmt.Sprintf(`{"n":%d}`, i))
				}
				// In two parts, so that later failures hit another round.
				ftProduce(t, cl, recs[:10])
				poll.Until(t, 30*time.Second, "the first 10 results", func() bool { return len(f.bodies()) >= 10 })
				ftProduce(t, cl, recs[10:])
				poll.Until(t, 30*time.Second, "every result", func() bool { return len(f.bodies()) >= len(want) })
				if got := f.bodies(); !reflect.DeepEqual(got, want) {
					t.Fatalf("received\n%q\nwant\n%q", got, want)
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				if !reflect.DeepEqual(f.args, c.args) || f.calls != len(want)+5 {
					t.Fatalf("calls %d naming %q, want %d naming %q", f.calls, f.args, len(want)+5, c.args)
				}
			})
		})
	}
}

// TestSinkNeedsRuntime: a job whose sink needs the runtime is refused
// without it, naming the sink.
func TestSinkNeedsRuntime(t *testing.T) {
	for _, sink := range []Sink{{Type: "app", Route: "/r"}, {Type: "pubsub", Topic: "t"}, {Type: "state"}} {
		t.Run(sink.Type, func(t *testing.T) {
			_, err := New(Spec{Name: "j", Source: Source{Topic: "t"}, Sink: sink}, Options{Brokers: "127.0.0.1:1"})
			if !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), "spec.sink: a "+sink.Type+" sink needs the runtime") {
				t.Fatalf("error %v, want one naming spec.sink and the %s sink", err, sink.Type)
			}
		})
	}
}

// ---- 6. validation -------------------------------------------------------

func TestValidateFeatures(t *testing.T) {
	base := func() Spec {
		return Spec{Name: "v", Source: Source{Topic: "a"}, KeyBy: "k", Window: Window{Type: "tumbling", Size: Duration{time.Second}},
			Aggregate: Aggregate{Type: "count"}, Sink: Sink{Type: "stdout"}}
	}
	join := func(s *Spec) {
		s.Aggregate = Aggregate{}
		s.Join = &Join{Topic: "b", KeyBy: "k"}
	}
	for _, c := range []struct {
		name string
		edit func(*Spec)
		want string // "" for a valid spec
	}{
		{"parallelism 0 is the default", func(s *Spec) { s.Parallelism = 0 }, ""},
		{"parallelism at the bound", func(s *Spec) { s.Parallelism = MaxParallelism }, ""},
		{"parallelism negative", func(s *Spec) { s.Parallelism = -1 }, "spec.parallelism: want 1 to 256, got -1"},
		{"parallelism above the bound", func(s *Spec) { s.Parallelism = MaxParallelism + 1 }, "spec.parallelism: want 1 to 256, got 257"},
		{"a join", join, ""},
		{"a join without window", func(s *Spec) { join(s); s.Window = Window{} }, "spec.window: a join needs a window"},
		{"a join with an aggregate", func(s *Spec) { join(s); s.Aggregate = Aggregate{Type: "count"} }, "spec.aggregate: a join has no aggregate"},
		{"a join without topic", func(s *Spec) { join(s); s.Join.Topic = "" }, "spec.join.topic: must be set"},
		{"a join on the source topic", func(s *Spec) { join(s); s.Join.Topic = "a" }, `spec.join.topic: is the source topic "a"`},
		{"a join without its keyBy", func(s *Spec) { join(s); s.Join.KeyBy = "" }, "spec.join.keyBy: a join needs keyBy on both sides"},
		{"a join without the source keyBy", func(s *Spec) { join(s); s.KeyBy = "" }, "spec.join.keyBy: a join needs keyBy on both sides"},
		{"a bad join filter", func(s *Spec) { join(s); s.Join.Filter = "x >" }, "spec.join.filter:"},
		{"pass-through", func(s *Spec) { s.Window, s.Aggregate = Window{}, Aggregate{} }, ""},
		{"an aggregate without window", func(s *Spec) { s.Window = Window{} }, "spec.window: an aggregate needs a window"},
		{"app sink", func(s *Spec) { s.Sink = Sink{Type: "app", Route: "/results"} }, ""},
		{"app sink without route", func(s *Spec) { s.Sink = Sink{Type: "app"} }, `spec.sink.route: want the app's path, such as /results, got ""`},
		{"app sink with a relative route", func(s *Spec) { s.Sink = Sink{Type: "app", Route: "results"} }, `spec.sink.route: want the app's path, such as /results, got "results"`},
		{"pubsub sink", func(s *Spec) { s.Sink = Sink{Type: "pubsub", Topic: "t"} }, ""},
		{"pubsub sink without topic", func(s *Spec) { s.Sink = Sink{Type: "pubsub", PubSub: "ps"} }, "spec.sink.topic: must be set for a pubsub sink"},
		{"topic sink without topic", func(s *Spec) { s.Sink = Sink{Type: "topic"} }, "spec.sink.topic: must be set for a topic sink"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := base()
			c.edit(&s)
			err := s.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("valid spec refused: %v", err)
			case c.want != "" && (!errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want it to say %q", err, c.want)
			}
		})
	}
	// The same fields through a StreamJob document.
	_, err := ParseDocument([]byte(`{"apiVersion":"mecha.io/v1alpha1","kind":"StreamJob","metadata":{"name":"d"},
	 "spec":{"source":{"topic":"a"},"parallelism":300,"sink":{"type":"stdout"}}}`))
	if err == nil || !strings.Contains(err.Error(), "spec.parallelism") {
		t.Fatalf("parallelism 300 in a document: %v", err)
	}
}
