package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"mecha/internal/poll"
)

// sarama is tested at the version pubsub.mecha uses (2.7: flexible
// Metadata, OffsetFetch, ApiVersions v3, KIP-394 joins) and at sarama's
// default (2.1: only non-flexible versions, JoinGroup v3).
var saramaVersions = []struct {
	name    string
	version sarama.KafkaVersion
}{
	{"v2.7", sarama.V2_7_0_0},
	{"default", sarama.DefaultVersion},
}

func saramaConfig(v sarama.KafkaVersion) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = v
	c.ClientID = "sarama-test"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	return c
}

func TestSaramaProducers(t *testing.T) {
	for _, v := range saramaVersions {
		t.Run(v.name, func(t *testing.T) {
			b := startBroker(t)
			adm := newAdmin(t, b.Addr())
			createTopic(t, adm, "sync", 3, nil)
			createTopic(t, adm, "async", 3, nil)
			cfg := saramaConfig(v.version)

			// SyncProducer: every send is answered with its place, and
			// the record read back there is the one sent.
			sp, err := sarama.NewSyncProducer([]string{b.Addr()}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer sp.Close()
			type place struct {
				part int32
				off  int64
			}
			sent := map[place]string{}
			for i := 0; i < 30; i++ {
				val := fmt.Sprintf("sync-%d", i)
				part, off, err := sp.SendMessage(&sarama.ProducerMessage{Topic: "sync", Key: sarama.StringEncoder(fmt.Sprint("k", i)), Value: sarama.StringEncoder(val),
					Headers: []sarama.RecordHeader{{Key: []byte("h"), Value: []byte(val)}}})
				if err != nil {
					t.Fatalf("SendMessage %d: %v", i, err)
				}
				if _, dup := sent[place{part, off}]; dup {
					t.Fatalf("two sends answered with partition %d offset %d", part, off)
				}
				sent[place{part, off}] = val
			}
			batch := []*sarama.ProducerMessage{}
			for i := 0; i < 20; i++ {
				batch = append(batch, &sarama.ProducerMessage{Topic: "sync", Value: sarama.StringEncoder(fmt.Sprintf("batch-%d", i))})
			}
			if err := sp.SendMessages(batch); err != nil {
				t.Fatalf("SendMessages: %v", err)
			}
			for _, m := range batch {
				sent[place{m.Partition, m.Offset}] = string(m.Value.(sarama.StringEncoder))
			}
			cons, err := sarama.NewConsumer([]string{b.Addr()}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer cons.Close()
			got := map[place]string{}
			for p := int32(0); p < 3; p++ {
				pc, err := cons.ConsumePartition("sync", p, sarama.OffsetOldest)
				if err != nil {
					t.Fatal(err)
				}
				want := 0
				for pl := range sent {
					if pl.part == p {
						want++
					}
				}
				timeout := time.After(waitLong)
				for n := 0; n < want; n++ {
					select {
					case m := <-pc.Messages():
						got[place{m.Partition, m.Offset}] = string(m.Value)
						if len(m.Headers) == 1 && string(m.Headers[0].Value) != string(m.Value) {
							t.Errorf("record %s has header %s", m.Value, m.Headers[0].Value)
						}
					case err := <-pc.Errors():
						t.Fatalf("partition %d: %v", p, err)
					case <-timeout:
						t.Fatalf("partition %d: read %d of %d records", p, n, want)
					}
				}
				pc.Close()
			}
			if len(got) != len(sent) {
				t.Fatalf("read back %d records, sent %d", len(got), len(sent))
			}
			for pl, v := range sent {
				if got[pl] != v {
					t.Errorf("partition %d offset %d holds %q, the producer was told %q", pl.part, pl.off, got[pl], v)
				}
			}

			// AsyncProducer: every record is acknowledged, none fails, and
			// each gets its own offset.
			ap, err := sarama.NewAsyncProducer([]string{b.Addr()}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			const n = 2000
			go func() {
				for i := 0; i < n; i++ {
					ap.Input() <- &sarama.ProducerMessage{Topic: "async", Key: sarama.StringEncoder(fmt.Sprint(i % 13)), Value: sarama.StringEncoder(fmt.Sprint(i))}
				}
			}()
			acked := map[place]bool{}
			timeout := time.After(waitLong)
			for len(acked) < n {
				select {
				case m := <-ap.Successes():
					pl := place{m.Partition, m.Offset}
					if acked[pl] {
						t.Fatalf("two records acknowledged at partition %d offset %d", m.Partition, m.Offset)
					}
					acked[pl] = true
				case err := <-ap.Errors():
					t.Fatalf("async produce failed: %v", err)
				case <-timeout:
					t.Fatalf("%d of %d records acknowledged", len(acked), n)
				}
			}
			if err := ap.Close(); err != nil {
				t.Fatal(err)
			}
			var total int64
			for _, end := range endOffsets(t, adm, "async") {
				total += end
			}
			if total != n {
				t.Errorf("the log holds %d records, %d were acknowledged", total, n)
			}
		})
	}
}

// saramaMember is one member of a sarama consumer group, consuming until
// stopped.
type saramaMember struct {
	name   string
	group  sarama.ConsumerGroup
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	claims []int32        // partitions of the current session
	seen   map[string]int // record value -> deliveries to this member
	errs   []error
}

func startSaramaMember(t *testing.T, addr, group, topic, name string, v sarama.KafkaVersion) *saramaMember {
	t.Helper()
	cfg := saramaConfig(v)
	cfg.ClientID = name
	// A session far longer than the tests wait: a rebalance they see
	// comes from a join or a leave, never from an expired session.
	cfg.Consumer.Group.Session.Timeout = 30 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = 100 * time.Millisecond
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	cfg.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
	g, err := sarama.NewConsumerGroup([]string{addr}, group, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &saramaMember{name: name, group: g, cancel: cancel, done: make(chan struct{}), seen: map[string]int{}}
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, m); err != nil {
				if errors.Is(err, sarama.ErrClosedConsumerGroup) {
					return
				}
				m.mu.Lock()
				m.errs = append(m.errs, err)
				m.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}()
	t.Cleanup(func() { m.stop(t) })
	return m
}

// stop ends the member's session (committing what it marked) and then
// closes it, which leaves the group.
func (m *saramaMember) stop(t *testing.T) {
	m.cancel()
	<-m.done
	if err := m.group.Close(); err != nil {
		t.Errorf("%s: close: %v", m.name, err)
	}
}

func (m *saramaMember) Setup(s sarama.ConsumerGroupSession) error {
	var parts []int32
	for _, ps := range s.Claims() {
		parts = append(parts, ps...)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	m.mu.Lock()
	m.claims = parts
	m.mu.Unlock()
	return nil
}

func (m *saramaMember) Cleanup(sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	m.claims = nil
	m.mu.Unlock()
	return nil
}

func (m *saramaMember) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for msg := range c.Messages() {
		m.mu.Lock()
		m.seen[string(msg.Value)]++
		m.mu.Unlock()
		s.MarkMessage(msg, "")
	}
	return nil
}

func (m *saramaMember) claimed() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.claims)
}

func (m *saramaMember) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seen)
}

// deliveries merges what members received: value -> total deliveries.
func deliveries(ms ...*saramaMember) map[string]int {
	out := map[string]int{}
	for _, m := range ms {
		m.mu.Lock()
		for v, n := range m.seen {
			out[v] += n
		}
		m.mu.Unlock()
	}
	return out
}

func TestSaramaConsumerGroup(t *testing.T) {
	for _, v := range saramaVersions {
		t.Run(v.name, func(t *testing.T) {
			b := startBroker(t)
			adm := newAdmin(t, b.Addr())
			const topic, group = "shared", "workers"
			createTopic(t, adm, topic, 4, nil)
			cfg := saramaConfig(v.version)
			prod, err := sarama.NewSyncProducer([]string{b.Addr()}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer prod.Close()
			produce := func(prefix string, n int) {
				t.Helper()
				var msgs []*sarama.ProducerMessage
				for i := 0; i < n; i++ {
					msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(fmt.Sprint("k", i)), Value: sarama.StringEncoder(fmt.Sprintf("%s-%d", prefix, i))})
				}
				if err := prod.SendMessages(msgs); err != nil {
					t.Fatalf("produce %s: %v", prefix, err)
				}
			}
			all := []int32{0, 1, 2, 3}

			a := startSaramaMember(t, b.Addr(), group, topic, "member-a", v.version)
			poll.Until(t, waitLong, "member a to claim all four partitions", func() bool { return slices.Equal(a.claimed(), all) })
			bm := startSaramaMember(t, b.Addr(), group, topic, "member-b", v.version)
			poll.Until(t, waitLong, "both members to share the partitions", func() bool {
				ca, cb := a.claimed(), bm.claimed()
				both := append(slices.Clone(ca), cb...)
				slices.Sort(both)
				return len(ca) > 0 && len(cb) > 0 && slices.Equal(both, all)
			})
			t.Logf("a claims %v, b claims %v", a.claimed(), bm.claimed())

			// Every record reaches exactly one member, once.
			produce("first", 400)
			poll.Until(t, waitLong, "400 records consumed", func() bool { return len(deliveries(a, bm)) >= 400 })
			if a.count() == 0 || bm.count() == 0 {
				t.Errorf("member a consumed %d records and b %d: both own partitions, both must consume", a.count(), bm.count())
			}
			for val, n := range deliveries(a, bm) {
				if n != 1 {
					t.Errorf("%s delivered %d times", val, n)
				}
			}

			// a leaves: b gets every partition, well before a's session
			// (30 s) could expire, so the leave caused the rebalance.
			left := time.Now()
			a.stop(t)
			poll.Until(t, 15*time.Second, "member b to claim all partitions after a left", func() bool { return slices.Equal(bm.claimed(), all) })
			t.Logf("rebalance after leave took %s", time.Since(left))
			produce("second", 400)
			poll.Until(t, waitLong, "800 records consumed", func() bool { return len(deliveries(a, bm)) >= 800 })
			// A record a consumed and committed would come back to b
			// before b's records of the same partition: none did.
			for val, n := range deliveries(a, bm) {
				if n != 1 {
					t.Errorf("%s delivered %d times", val, n)
				}
			}
			bm.stop(t)

			// Offsets were committed: the lag of the group is zero, and a
			// new member resumes after them, reading only new records.
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			lag, err := adm.Lag(ctx, group)
			if err != nil {
				t.Fatal(err)
			}
			gl := lag[group]
			if err := gl.Error(); err != nil {
				t.Fatal(err)
			}
			if tot := gl.Lag.Total(); tot != 0 {
				t.Errorf("lag after both members committed and left = %d, want 0", tot)
			}
			produce("third", 100)
			c := startSaramaMember(t, b.Addr(), group, topic, "member-c", v.version)
			poll.Until(t, waitLong, "the new member to read the 100 new records", func() bool { return c.count() >= 100 })
			for val, n := range deliveries(c) {
				if n != 1 || !strings.HasPrefix(val, "third-") {
					t.Errorf("new member got %s (%d times); want only the records after the committed offsets, once", val, n)
				}
			}
			for _, m := range []*saramaMember{a, bm, c} {
				m.mu.Lock()
				for _, err := range m.errs {
					t.Errorf("%s: Consume: %v", m.name, err)
				}
				m.mu.Unlock()
			}
		})
	}
}
