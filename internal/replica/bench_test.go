package replica

import (
	"testing"
	"time"
)

// benchPayload is a batch's data in the benchmarks: a small producer
// batch or a few Crux records.
var benchPayload = make([]byte, 256)

// BenchmarkLeaderHandleFetch is the leader's cost of one checked fetch
// that returns one batch (the follower's tail check, the position and
// caught-up bookkeeping, the watermark, the read), with 3 replicas.
func BenchmarkLeaderHandleFetch(b *testing.B) {
	const batches = 1024
	log := NewMemLog()
	for i := range batches {
		if err := log.Append([]Batch{{Base: int64(i), Epoch: 1, Count: 1, Data: benchPayload}}); err != nil {
			b.Fatal(err)
		}
	}
	all := []ReplicaID{1, 2, 3}
	l, err := NewLeader(log, DefaultConfig(), Assignment{Self: 1, Epoch: 1, Replicas: all, ISR: all, ISRVersion: 1}, 0, t0)
	if err != nil {
		b.Fatal(err)
	}
	var resp FetchResponse
	req := FetchRequest{Epoch: 1, LastEpoch: 1, MaxBytes: int32(len(benchPayload))}
	var events []Event
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req.Replica = ReplicaID(2 + i%2)
		req.FetchOffset = int64(1 + i%(batches-1))
		if err := l.HandleFetch(&req, t0.Add(time.Duration(i)), &resp); err != nil {
			b.Fatal(err)
		}
		if len(resp.Batches) != 1 {
			b.Fatalf("%d batches", len(resp.Batches))
		}
		events = l.Events(events[:0])
	}
}

// benchCluster is a leader and two followers wired in process, their
// fetches optionally through the wire codec.
type benchCluster struct {
	leader    *Leader
	followers []*Follower
	resp      FetchResponse
	frame     []byte
	events    []Event
	wire      bool
	acked     int
}

func newBenchCluster(b *testing.B, wire bool) *benchCluster {
	all := []ReplicaID{1, 2, 3}
	cfg := DefaultConfig()
	cfg.MinISR = 2
	l, err := NewLeader(NewMemLog(), cfg, Assignment{Self: 1, Epoch: 1, Replicas: all, ISR: all, ISRVersion: 1}, 0, t0)
	if err != nil {
		b.Fatal(err)
	}
	c := &benchCluster{leader: l, wire: wire}
	for _, id := range all[1:] {
		f, err := NewFollower(NewMemLog(), cfg, id, 0)
		if err != nil {
			b.Fatal(err)
		}
		f.SetLeader(1, 1)
		c.followers = append(c.followers, f)
	}
	return c
}

// round is one write and one fetch by each follower: the fetches carry
// this write and report the previous one, whose acknowledgement the
// watermark then releases.
func (c *benchCluster) round(b *testing.B, now time.Time) {
	if _, err := c.leader.Append(Batch{Count: 1, Data: benchPayload}, Strong, now); err != nil {
		b.Fatal(err)
	}
	for _, f := range c.followers {
		req, ok := f.Fetch(now)
		if !ok {
			b.Fatal("no fetch")
		}
		if c.wire {
			c.frame = AppendFetchRequest(c.frame[:0], &req)
			var err error
			if req, err = DecodeFetchRequest(c.frame); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.leader.HandleFetch(&req, now, &c.resp); err != nil {
			b.Fatal(err)
		}
		if c.wire {
			c.frame = AppendFetchResponse(c.frame[:0], &c.resp)
			if err := DecodeFetchResponse(c.frame, &c.resp); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.HandleResponse(&c.resp, now); err != nil {
			b.Fatal(err)
		}
		c.events = f.Events(c.events[:0])
	}
	c.events = c.leader.Events(c.events[:0])
	for _, e := range c.events {
		if e.Kind == EventAcked {
			c.acked++
		}
	}
}

func benchHW(b *testing.B, wire bool) {
	c := newBenchCluster(b, wire)
	log := c.leader.log.(*MemLog)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.round(b, t0.Add(time.Duration(i)))
		if i%4096 == 4095 {
			// Retention keeps the in-memory logs small; the
			// followers' starts follow the leader's.
			if err := log.TrimTo(c.leader.HighWatermark()); err != nil {
				b.Fatal(err)
			}
		}
	}
	if b.N > 2 && c.acked < b.N-2 {
		b.Fatalf("%d of %d writes acknowledged", c.acked, b.N)
	}
}

// BenchmarkHWAdvance3 is one strong write replicated to two followers
// and acknowledged by the high watermark, in process: the leader's
// append, both followers' fetches (request, answer, append) and the
// ack, per op.
func BenchmarkHWAdvance3(b *testing.B) { benchHW(b, false) }

// BenchmarkHWAdvance3Wire is BenchmarkHWAdvance3 with every fetch and
// answer encoded and decoded as the transport would carry them.
func BenchmarkHWAdvance3Wire(b *testing.B) { benchHW(b, true) }
