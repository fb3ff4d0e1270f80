package broker

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// While the disk is busy, a fetch far behind the high watermark gets no
// records and a throttle time; one at the tail is served; and when the
// disk is idle again the lagging one is served too.
func TestLagThrottling(t *testing.T) {
	busy := 1.0
	b := startBroker(t, func(c *Config) { c.Throttle.LagRecords = 100 })
	b.busyOverride = func() float64 { return busy }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := newKgo(t, b.Addr(), kgo.DefaultProduceTopic("lag"), kgo.AllowAutoTopicCreation())
	for range 300 {
		cl.Produce(ctx, &kgo.Record{Value: []byte("x")}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	fetch := func(offset int64, version int16) (*kmsg.FetchResponse, time.Duration) {
		t.Helper()
		req := kmsg.NewPtrFetchRequest()
		req.Version, req.MaxWaitMillis, req.MaxBytes = version, 10, 1<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "lag"
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset, rp.PartitionMaxBytes = offset, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		t0 := time.Now()
		// Raw, so that the version is the one asked.
		resp := dialRaw(t, b.Addr()).roundTrip(req).(*kmsg.FetchResponse)
		return resp, time.Since(t0)
	}
	// Lagging (0 of 300, more than 100 behind) while busy: throttled.
	resp, _ := fetch(0, 12)
	if resp.ThrottleMillis != 100 || len(resp.Topics[0].Partitions[0].RecordBatches) != 0 || resp.Topics[0].Partitions[0].HighWatermark != 300 {
		t.Fatalf("a lagging fetch while busy: throttle %d ms, %d bytes, hw %d; want 100 ms and no records", resp.ThrottleMillis, len(resp.Topics[0].Partitions[0].RecordBatches), resp.Topics[0].Partitions[0].HighWatermark)
	}
	if b.throttled.Load() != 1 {
		t.Fatalf("throttled counter %d", b.throttled.Load())
	}
	// Before KIP-219 (v7) the broker itself holds the answer.
	if resp, took := fetch(0, 7); resp.ThrottleMillis != 100 || took < 100*time.Millisecond {
		t.Fatalf("a v7 lagging fetch: throttle %d ms, answered after %v; want held 100 ms", resp.ThrottleMillis, took)
	}
	// At the tail (250 of 300): served, busy or not.
	if resp, _ := fetch(250, 12); resp.ThrottleMillis != 0 || len(resp.Topics[0].Partitions[0].RecordBatches) == 0 {
		t.Fatalf("a tail fetch while busy: throttle %d ms, %d bytes", resp.ThrottleMillis, len(resp.Topics[0].Partitions[0].RecordBatches))
	}
	// The disk idle again: the lagging fetch is served.
	busy = 0.1
	if resp, _ := fetch(0, 12); resp.ThrottleMillis != 0 || len(resp.Topics[0].Partitions[0].RecordBatches) == 0 {
		t.Fatalf("a lagging fetch while idle: throttle %d ms, %d bytes", resp.ThrottleMillis, len(resp.Topics[0].Partitions[0].RecordBatches))
	}
}

// The disk meter reads the data dir's device utilization from /sys.
func TestDiskMeter(t *testing.T) {
	m := newDiskMeter(t.TempDir())
	if m.path == "" {
		if _, err := os.Stat("/sys/dev/block"); err != nil {
			t.Skip("no /sys/dev/block here")
		}
		t.Logf("the temp dir's device has no block stat file (tmpfs or overlay): never busy")
		return
	}
	m.lastWall = time.Now().Add(-time.Second)
	m.sample(time.Now())
	if u := m.utilization(); u < 0 || u > 1 {
		t.Fatalf("utilization %v", u)
	}
}
