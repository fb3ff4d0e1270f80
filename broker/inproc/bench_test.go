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

// BenchmarkProduceSyncOne is what pubsub.mecha adds to a publish in
// mecha run: one record of a CloudEvent's size produced in-process and
// written to the log (fsync by interval), one call at a time.
func BenchmarkProduceSyncOne(b *testing.B) {
	br := startBroker(b, 1)
	ctx := context.Background()
	c := inproc.New(br, inproc.Options{})
	v := []byte(`{"data":{"orderId":42,"item":"book","qty":1},"datacontenttype":"application/json","id":"c2f5d3a1-1234-4cde-8f00-123456789abc","pubsubname":"pubsub","source":"bench","specversion":"1.0","time":"2026-12-02T16:00:00Z","topic":"orders","traceparent":"00-00000000000000000000000000000000-0000000000000000-00","tracestate":"","type":"com.dapr.event.sent"}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.ProduceSync(ctx, &kgo.Record{Topic: "one", Value: v}).FirstErr(); err != nil {
			b.Fatal(err)
		}
	}
}
