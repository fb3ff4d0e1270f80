package job

import (
	"fmt"
	"testing"
	"time"
)

// Records as Nexmark's generator writes them (stream/nexmark): 46 bids, 3
// auctions and a person in every 50 events.
var (
	benchBid     = []byte(`{"auction":1000,"bidder":1001,"channel":"Google","dateTime":1700000000123,"event_type":2,"extra":"","price":1553,"url":"https://www.nexmark.com/item.htm?query=1"}`)
	benchAuction = []byte(`{"category":12,"dateTime":1700000000123,"description":"","event_type":1,"expires":1700000012345,"extra":"","id":1003,"initialBid":2871,"itemName":"item-3","reserve":17634,"seller":1000}`)
	benchPerson  = []byte(`{"city":"Boise","creditCard":"1234 5678","dateTime":1700000000123,"emailAddress":"p7@example.com","event_type":0,"extra":"","id":1007,"name":"Vicky Smith","state":"OR"}`)
)

// BenchmarkDecode is the decode of one source record into the fields a
// job's expressions see.
func BenchmarkDecode(b *testing.B) {
	for _, c := range []struct {
		name string
		rec  []byte
	}{{"bid", benchBid}, {"auction", benchAuction}, {"person", benchPerson}} {
		b.Run(c.name, func(b *testing.B) {
			var d decoder
			b.ReportAllocs()
			b.SetBytes(int64(len(c.rec)))
			for b.Loop() {
				if _, err := d.decode(c.rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRound is the job without the broker: a pipeline round over
// 4,096 Nexmark records as JSON, with one task (one source partition) and
// with two (two partitions, as `mecha stream bench nexmark --parallelism
// 2` runs): q0 (filter bids, pass them through), q1 (a map) and q5's
// front (filter, the aggregate field, a sliding window).
func BenchmarkRound(b *testing.B) {
	specs := map[string]Spec{
		"q0": {Filter: `event_type == 2`},
		"q1": {Filter: `event_type == 2`, Map: map[string]string{"auction": "auction", "bidder": "bidder", "price": "price * 908 / 1000", "dateTime": "dateTime"}},
		"q5": {Filter: `event_type == 2`, Window: Window{Type: "sliding", Size: Duration{10 * time.Second}, Slide: Duration{2 * time.Second}},
			Aggregate: Aggregate{Type: "topN", N: 1, Field: "auction"}},
	}
	for _, q := range []string{"q0", "q1", "q5"} {
		for _, par := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/tasks=%d", q, par), func(b *testing.B) {
				recs := make([]Record, 4096)
				for i := range recs {
					v := benchBid
					switch i % 50 {
					case 0:
						v = benchPerson
					case 1, 2, 3:
						v = benchAuction
					}
					recs[i] = Record{Topic: "nexmark", Partition: int32(i % par), Offset: int64(i), Timestamp: 1_700_000_000_123, Value: v}
				}
				s := specs[q]
				s.Name, s.Source, s.Sink, s.Parallelism = "bench-"+q, Source{Topic: "nexmark", EventTimeField: "dateTime"}, Sink{Type: "blackhole"}, par
				p, err := NewPipeline(s)
				if err != nil {
					b.Fatal(err)
				}
				for i := range par {
					p.AddPartition("nexmark", int32(i))
				}
				b.ReportAllocs()
				now := time.Now()
				for b.Loop() {
					p.Round(recs, now)
				}
				b.ReportMetric(float64(b.N)*float64(len(recs))/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}
