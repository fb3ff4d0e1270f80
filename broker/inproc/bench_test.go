package inproc_test

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker/inproc"
)

// BenchmarkProduceFetch is the broker path of a job inside mecha run, with
// no job: batches of 4,096 records of 180 bytes (a Nexmark bid) produced
// in-process to a 2-partition topic (one append per partition, fsync by
// interval), then read back with a Consumer.
func BenchmarkProduceFetch(b *testing.B) {
	br := startBroker(b, 2)
	ctx := context.Background()
	c := inproc.New(br, inproc.Options{Partitioner: kgo.ManualPartitioner()})
	if err := c.CreateTopic(ctx, "bench", 2); err != nil {
		b.Fatal(err)
	}
	value := []byte(`{"auction":1000,"bidder":1001,"channel":"Google","dateTime":1700000000123,"event_type":2,"extra":"","price":1553,"url":"https://www.nexmark.com/item.htm?query=1"}`)
	const batch = 4096
	recs := make([]kgo.Record, batch)
	ptrs := make([]*kgo.Record, batch)
	co := c.NewConsumer(map[string]map[int32]kgo.Offset{"bench": {0: kgo.NewOffset().AtStart(), 1: kgo.NewOffset().AtStart()}}, nil)
	b.SetBytes(int64(batch * len(value)))
	b.ReportAllocs()
	for b.Loop() {
		for i := range recs {
			recs[i] = kgo.Record{Topic: "bench", Partition: int32(i % 2), Value: value}
			ptrs[i] = &recs[i]
		}
		if err := c.ProduceSync(ctx, ptrs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		for n := 0; n < batch; {
			fs := co.PollRecords(ctx, 0)
			fs.EachError(func(_ string, _ int32, err error) { b.Fatal(err) })
			n += fs.NumRecords()
		}
	}
	b.ReportMetric(float64(b.N)*batch/b.Elapsed().Seconds(), "records/s")
}
