package inproc_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker"
	"mecha/broker/brokertest"
	"mecha/broker/inproc"
	"mecha/internal/poll"
)

const waitLong = 20 * time.Second

func startBroker(t testing.TB, partitions int32) *broker.Broker {
	t.Helper()
	return brokertest.StartBroker(t, func(c *broker.Config) { c.DefaultPartitions = partitions })
}

func newKgo(t *testing.T, b *broker.Broker, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.Addr())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

// Records written in-process read back the same through the in-process
// Fetch and through a Kafka client: key, value, headers, timestamp,
// partition and offset.
func TestProduceSyncRoundTrip(t *testing.T) {
	b := startBroker(t, 3)
	ctx := testContext(t)
	c := inproc.New(b, inproc.Options{})
	ts := time.UnixMilli(1_700_000_000_123)
	var recs []*kgo.Record
	for i := range 30 {
		r := &kgo.Record{Topic: "rt", Key: []byte("k" + strconv.Itoa(i%5)), Value: []byte("v" + strconv.Itoa(i)),
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(strconv.Itoa(i))}, {Key: "nil"}}, Timestamp: ts.Add(time.Duration(i) * time.Millisecond)}
		if i == 7 {
			r.Key = nil
		}
		recs = append(recs, r)
	}
	if err := c.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl := newKgo(t, b, kgo.ConsumeTopics("rt"))
	seen := map[string]*kgo.Record{}
	for len(seen) < len(recs) {
		fs := cl.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)] = r })
	}
	for _, want := range recs {
		got := seen[string(want.Value)]
		if got.Partition != want.Partition || got.Offset != want.Offset || string(got.Key) != string(want.Key) ||
			!got.Timestamp.Equal(want.Timestamp) || len(got.Headers) != 2 || string(got.Headers[0].Value) != string(want.Headers[0].Value) || got.Headers[1].Value != nil {
			t.Errorf("a Kafka client read %+v, produced %+v", got, want)
		}
	}

	// And the in-process Fetch reads the same records.
	parts := []broker.FetchPartition{{Topic: "rt", Partition: recs[0].Partition, Offset: 0, MaxBytes: 1 << 20}}
	fs := c.Fetch(ctx, parts, 0)
	n := 0
	fs.EachRecord(func(r *kgo.Record) {
		if w := seen[string(r.Value)]; w == nil || w.Offset != r.Offset || w.Partition != r.Partition {
			t.Errorf("in-process fetch read %+v", r)
		}
		n++
	})
	if n == 0 {
		t.Error("in-process fetch read nothing")
	}

	// The default partitioner places keys where a default kgo client
	// does (Kafka's murmur2).
	prod := newKgo(t, b)
	for i := range 5 {
		r := &kgo.Record{Topic: "rt", Key: []byte("k" + strconv.Itoa(i))}
		if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if r.Partition != recs[i].Partition {
			t.Errorf("key %s: kgo put it on %d, inproc on %d", r.Key, r.Partition, recs[i].Partition)
		}
	}
}

// A sarama-compatible partitioner places keys as sarama's hash
// partitioner does: pubsub.mecha keeps its placement whichever client
// writes.
func TestProduceSyncSaramaHasher(t *testing.T) {
	b := startBroker(t, 7)
	ctx := testContext(t)
	fnv32a := func(k []byte) uint32 { h := fnv.New32a(); h.Write(k); return h.Sum32() }
	c := inproc.New(b, inproc.Options{Partitioner: kgo.StickyKeyPartitioner(kgo.SaramaCompatHasher(fnv32a))})
	for i := range 50 {
		k := []byte("key-" + strconv.Itoa(i))
		r := &kgo.Record{Topic: "s", Key: k}
		if err := c.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		want := int32(fnv32a(k)) % 7
		if want < 0 {
			want = -want
		}
		if r.Partition != want {
			t.Fatalf("key %s on %d, sarama's hash puts it on %d", k, r.Partition, want)
		}
	}
}

// A record over MaxRecordBytes fails alone; many records are split into
// batches under MaxBatchBytes and land contiguously.
func TestProduceSyncLimits(t *testing.T) {
	b := startBroker(t, 1)
	ctx := testContext(t)
	c := inproc.New(b, inproc.Options{MaxRecordBytes: 1000, MaxBatchBytes: 4096})
	rs := c.ProduceSync(ctx, &kgo.Record{Topic: "l", Value: []byte("small")}, &kgo.Record{Topic: "l", Value: make([]byte, 2000)})
	if rs[0].Err != nil || !errors.Is(rs[1].Err, kerr.MessageTooLarge) {
		t.Fatalf("results %v, %v; want nil, MESSAGE_TOO_LARGE", rs[0].Err, rs[1].Err)
	}
	var recs []*kgo.Record
	for i := range 500 {
		recs = append(recs, &kgo.Record{Topic: "l", Value: []byte(strings.Repeat("x", 100) + strconv.Itoa(i))})
	}
	if err := c.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if r.Offset != recs[0].Offset+int64(i) {
			t.Fatalf("record %d at %d, the first at %d: not contiguous", i, r.Offset, recs[0].Offset)
		}
	}
	if rs := c.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}); rs[0].Err == nil {
		t.Error("a record without a topic was produced")
	}
}

// CreateTopic and EndOffsets: the admin calls a job needs, in-process.
func TestAdmin(t *testing.T) {
	b := startBroker(t, 1)
	ctx := testContext(t)
	c := inproc.New(b, inproc.Options{Partitioner: kgo.ManualPartitioner()})
	if err := c.CreateTopic(ctx, "four", 4); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateTopic(ctx, "four", 4); !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Errorf("creating it again: %v, want TOPIC_ALREADY_EXISTS", err)
	}
	if err := c.ProduceSync(ctx, &kgo.Record{Topic: "four", Partition: 2}, &kgo.Record{Topic: "four", Partition: 2}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ends, err := c.EndOffsets(ctx, "four", "missing")
	if err != nil {
		t.Fatal(err)
	}
	if len(ends) != 1 || len(ends["four"]) != 4 || ends["four"][2] != 2 || ends["four"][0] != 0 {
		t.Fatalf("EndOffsets = %v, want four's four partitions (2 records in partition 2) and nothing for missing", ends)
	}
	if ps, _ := c.Partitions(ctx, "missing"); len(ps) != 1 {
		t.Errorf("Partitions of a missing topic: %v, want it created with one", ps)
	}
}

// A consumer reads from the start, the end or an offset, pauses and
// resumes topics, honours maxRecords, reads what a Kafka client wrote
// compressed, and starts over at the log start when its offset is gone.
func TestConsumer(t *testing.T) {
	b := startBroker(t, 2)
	ctx := testContext(t)
	c := inproc.New(b, inproc.Options{Partitioner: kgo.ManualPartitioner()})
	var recs []*kgo.Record
	for i := range 10 {
		recs = append(recs, &kgo.Record{Topic: "c", Partition: int32(i % 2), Value: []byte(strconv.Itoa(i))})
	}
	if err := c.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Snappy batches, as kgo writes by default.
	kc := newKgo(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := kc.ProduceSync(ctx, &kgo.Record{Topic: "c", Partition: 1, Value: []byte("compressed")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	co := c.NewConsumer(map[string]map[int32]kgo.Offset{"c": {0: kgo.NewOffset().AtStart(), 1: kgo.NewOffset().At(3)}}, nil)
	var got []string
	for len(got) < 5+3 {
		fs := co.PollRecords(ctx, 3)
		if n := fs.NumRecords(); n > 3 {
			t.Fatalf("a poll of at most 3 returned %d", n)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatal(err) })
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	slices.Sort(got)
	if want := []string{"0", "2", "4", "6", "7", "8", "9", "compressed"}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}

	co.PauseFetchTopics("c")
	if err := c.ProduceSync(ctx, &kgo.Record{Topic: "c", Partition: 0, Value: []byte("later")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	fs := co.PollRecords(pctx, 0)
	cancel()
	if fs.NumRecords() != 0 {
		t.Fatal("a paused topic was read")
	}
	co.ResumeFetchTopics("c")
	if fs := co.PollRecords(ctx, 0); fs.NumRecords() != 1 || string(fs.Records()[0].Value) != "later" {
		t.Fatalf("after resume: %v", fs.Records())
	}

	// The end is where the log ends at the first poll.
	end := c.NewConsumer(map[string]map[int32]kgo.Offset{"c": {0: kgo.NewOffset().AtEnd(), 1: kgo.NewOffset().At(1000)}}, nil)
	var fromEnd []string
	end.PollRecords(ctx, 0).EachRecord(func(r *kgo.Record) { fromEnd = append(fromEnd, string(r.Value)) })
	if err := c.ProduceSync(ctx, &kgo.Record{Topic: "c", Partition: 0, Value: []byte("newest")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for !slices.Contains(fromEnd, "newest") || !slices.Contains(fromEnd, "compressed") {
		end.PollRecords(ctx, 0).EachRecord(func(r *kgo.Record) { fromEnd = append(fromEnd, string(r.Value)) })
		if ctx.Err() != nil {
			t.Fatalf("read %v", fromEnd)
		}
	}
	if slices.Contains(fromEnd, "later") {
		t.Errorf("a consumer from the end read older records: %v", fromEnd)
	}
	if !slices.Contains(fromEnd, "1") {
		t.Errorf("a consumer past the end was not reset to the start: %v", fromEnd)
	}
}

// member is an in-process group member run by a test.
type member struct {
	m    *inproc.GroupMember
	stop context.CancelFunc
	done chan error

	mu    sync.Mutex
	owned map[string][]int32
	lost  int
}

func (mb *member) partitions() []int32 {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	out := slices.Clone(mb.owned["g"])
	slices.Sort(out)
	return out
}

func startMember(t *testing.T, b *broker.Broker, group string) *member {
	t.Helper()
	mb := &member{owned: map[string][]int32{}, done: make(chan error, 1)}
	c := inproc.New(b, inproc.Options{ClientID: "inproc-test"})
	m, err := c.NewGroupMember(inproc.GroupConfig{Group: group, Topics: []string{"g"}, SessionTimeout: 2 * time.Second, HeartbeatInterval: 100 * time.Millisecond,
		OnAssigned: func(_ context.Context, _ *inproc.GroupMember, a map[string][]int32) {
			mb.mu.Lock()
			defer mb.mu.Unlock()
			for t, ps := range a {
				mb.owned[t] = append(mb.owned[t], ps...)
			}
		},
		OnRevoked: func(ctx context.Context, m *inproc.GroupMember, r map[string][]int32) {
			mb.mu.Lock()
			for t, ps := range r {
				mb.owned[t] = slices.DeleteFunc(mb.owned[t], func(p int32) bool { return slices.Contains(ps, p) })
			}
			mb.mu.Unlock()
		},
		OnLost: func(context.Context, *inproc.GroupMember, map[string][]int32) {
			mb.mu.Lock()
			mb.lost++
			mb.owned = map[string][]int32{}
			mb.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mb.m = m
	ctx, cancel := context.WithCancel(context.Background())
	mb.stop = cancel
	go func() { mb.done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-mb.done
	})
	return mb
}

// groupAssignments returns each member's partitions of topic g as the
// coordinator has them, once the group is Stable.
func groupAssignments(t *testing.T, adm *kadm.Client, group string) map[string][]int32 {
	ds, err := adm.DescribeGroups(t.Context(), group)
	if err != nil || ds[group].State != "Stable" {
		return nil
	}
	out := map[string][]int32{}
	for _, m := range ds[group].Members {
		a, ok := m.Assigned.AsConsumer()
		if !ok {
			return nil
		}
		for _, tp := range a.Topics {
			ps := slices.Clone(tp.Partitions)
			slices.Sort(ps)
			out[m.ClientID+"/"+m.MemberID] = ps
		}
	}
	return out
}

// In-process members and a Kafka client in one group share its
// partitions, each partition to one of them; when the Kafka client
// leaves, the in-process members take its partitions over.
func TestGroupMembersShareWithKafkaClient(t *testing.T) {
	for _, tc := range []struct {
		name     string
		balancer kgo.GroupBalancer
	}{
		{"cooperative-sticky", kgo.CooperativeStickyBalancer()},
		{"range (eager, as sarama)", kgo.RangeBalancer()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, 6)
			ctx := testContext(t)
			group := "share-" + strings.Fields(tc.name)[0]
			a := startMember(t, b, group)
			bm := startMember(t, b, group)
			kc := newKgo(t, b, kgo.ConsumerGroup(group), kgo.ConsumeTopics("g"), kgo.Balancers(tc.balancer),
				kgo.SessionTimeout(2*time.Second), kgo.HeartbeatInterval(100*time.Millisecond))
			polled := make(chan struct{})
			go func() {
				defer close(polled)
				for ctx.Err() == nil {
					if kc.PollFetches(ctx).IsClientClosed() {
						return
					}
				}
			}()
			adm := kadm.NewClient(newKgo(t, b))
			poll.Until(t, waitLong, "three members splitting six partitions, two each", func() bool {
				as := groupAssignments(t, adm, group)
				if len(as) != 3 {
					return false
				}
				var all []int32
				for _, ps := range as {
					if len(ps) != 2 {
						return false
					}
					all = append(all, ps...)
				}
				slices.Sort(all)
				return slices.Equal(all, []int32{0, 1, 2, 3, 4, 5}) &&
					len(a.partitions()) == 2 && len(bm.partitions()) == 2 && !overlap(a.partitions(), bm.partitions())
			})
			kc.Close()
			<-polled
			poll.Until(t, waitLong, "the in-process members to take over the six", func() bool {
				pa, pb := a.partitions(), bm.partitions()
				return len(pa) == 3 && len(pb) == 3 && !overlap(pa, pb)
			})
			a.stop()
			if err := <-a.done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run after its context ended: %v", err)
			}
			a.done <- nil // for the cleanup
			poll.Until(t, waitLong, "the last member to own all six", func() bool { return len(bm.partitions()) == 6 })
			if a.lost+bm.lost != 0 {
				t.Errorf("members lost partitions (%d, %d); a rebalance should revoke them", a.lost, bm.lost)
			}
		})
	}
}

func overlap(a, b []int32) bool {
	for _, p := range a {
		if slices.Contains(b, p) {
			return true
		}
	}
	return false
}

// Commits go to the broker's committed offsets, which Kafka clients read,
// and a commit from a member the group dropped is refused.
func TestGroupMemberCommit(t *testing.T) {
	b := startBroker(t, 2)
	ctx := testContext(t)
	m := startMember(t, b, "commits")
	poll.Until(t, waitLong, "the member to own both partitions", func() bool { return len(m.partitions()) == 2 })
	if err := m.m.Commit(ctx, map[string]map[int32]int64{"g": {0: 5, 1: 7}}); err != nil {
		t.Fatal(err)
	}
	got, err := m.m.Committed(ctx, map[string][]int32{"g": {0, 1}, "other": {0}})
	if err != nil || got["g"][0] != 5 || got["g"][1] != 7 || got["other"][0] != -1 {
		t.Fatalf("Committed = %v, %v", got, err)
	}
	offs, err := kadm.NewClient(newKgo(t, b)).FetchOffsets(ctx, "commits")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup("g", 1); o.At != 7 {
		t.Errorf("a Kafka client sees offset %d for g/1, want 7", o.At)
	}
	m.stop()
	<-m.done
	m.done <- nil
	if err := m.m.Commit(ctx, map[string]map[int32]int64{"g": {0: 9}}); err == nil {
		t.Error("a commit after the member left succeeded")
	}
	ds, err := kadm.NewClient(newKgo(t, b)).DescribeGroups(ctx, "commits")
	if err != nil || ds["commits"].State != "Empty" {
		t.Errorf("after Run returned the group is %q (%v), want Empty: the member left", ds["commits"].State, err)
	}
}

func TestGroupMemberConfig(t *testing.T) {
	c := inproc.New(startBroker(t, 1), inproc.Options{})
	for _, cfg := range []inproc.GroupConfig{{Topics: []string{"t"}}, {Group: "g"}} {
		if _, err := c.NewGroupMember(cfg); err == nil {
			t.Errorf("NewGroupMember(%+v) succeeded", cfg)
		}
	}
}

// A revocation slower than the session timeout does not cost the member
// its session: it heartbeats meanwhile, so what it commits there counts.
func TestGroupMemberSlowRevoke(t *testing.T) {
	b := startBroker(t, 2)
	ctx := testContext(t)
	c := inproc.New(b, inproc.Options{})
	var committed error
	m, err := c.NewGroupMember(inproc.GroupConfig{Group: "slow", Topics: []string{"g"}, SessionTimeout: 300 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond,
		OnRevoked: func(ctx context.Context, m *inproc.GroupMember, r map[string][]int32) {
			time.Sleep(time.Second) // a handler finishing its record
			committed = m.Commit(ctx, map[string]map[int32]int64{"g": {0: 3}})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(rctx) }()
	poll.Until(t, waitLong, "the member to own both partitions", func() bool { return len(m.Owned()["g"]) == 2 })
	cancel()
	<-done
	if committed != nil {
		t.Fatalf("the commit at the end of a slow revocation: %v", committed)
	}
}

// Concurrent produces to one partition: every record lands once, each
// call's records contiguous and in order, at the offsets its caller was
// told.
func TestProduceSyncConcurrent(t *testing.T) {
	b := startBroker(t, 1)
	ctx := testContext(t)
	c := inproc.New(b, inproc.Options{})
	const writers, calls = 8, 100
	var mu sync.Mutex
	told := map[int64]string{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				recs := make([]*kgo.Record, 1+i%3)
				for j := range recs {
					recs[j] = &kgo.Record{Topic: "gc", Value: fmt.Appendf(nil, "w%d-%d-%d", w, i, j)}
				}
				if err := c.ProduceSync(ctx, recs...).FirstErr(); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for j, r := range recs {
					if r.Offset != recs[0].Offset+int64(j) {
						t.Errorf("call w%d-%d: offsets %d then %d", w, i, recs[0].Offset, r.Offset)
					}
					if prev, dup := told[r.Offset]; dup {
						t.Errorf("%s and %s both told offset %d", prev, r.Value, r.Offset)
					}
					told[r.Offset] = string(r.Value)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	co := c.NewConsumer(map[string]map[int32]kgo.Offset{"gc": {0: kgo.NewOffset().AtStart()}}, nil)
	read := 0
	for read < len(told) {
		co.PollRecords(ctx, 0).EachRecord(func(r *kgo.Record) {
			if told[r.Offset] != string(r.Value) {
				t.Fatalf("offset %d holds %s, its producer was told %s", r.Offset, r.Value, told[r.Offset])
			}
			read++
		})
	}
}
