package nexmark

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"mecha/stream/job"
)

// TestGeneratorProportions: 1 person, 3 auctions and 46 bids per 50
// events, ids that bids refer to exist, event time advancing at the rate.
func TestGeneratorProportions(t *testing.T) {
	g := NewGenerator(1_000_000, 1000, 1)
	kinds := map[int64]int{}
	maxPerson, maxAuction := int64(0), int64(0)
	for i := 0; i < 50_000; i++ {
		f, ts := g.Next()
		if want := 1_000_000 + int64(i); ts != want || f["dateTime"] != ts {
			t.Fatalf("event %d: time %d (field %v), want %d", i, ts, f["dateTime"], want)
		}
		k := f["event_type"].(int64)
		kinds[k]++
		switch k {
		case 0:
			maxPerson = max(maxPerson, f["id"].(int64))
		case 1:
			maxAuction = max(maxAuction, f["id"].(int64))
			if s := f["seller"].(int64); s < firstPersonID || s > maxPerson {
				t.Fatalf("auction %v: seller %d is not a person yet (newest %d)", f["id"], s, maxPerson)
			}
		case 2:
			if a := f["auction"].(int64); a < firstAuctionID || a > maxAuction {
				t.Fatalf("bid %d: auction %d does not exist yet (newest %d)", i, a, maxAuction)
			}
			if b := f["bidder"].(int64); b < firstPersonID || b > maxPerson+1 {
				t.Fatalf("bid %d: bidder %d out of range (newest person %d)", i, b, maxPerson)
			}
			if p := f["price"].(int64); p < 100 {
				t.Fatalf("bid %d: price %d cents", i, p)
			}
		}
	}
	if kinds[0] != 1000 || kinds[1] != 3000 || kinds[2] != 46000 {
		t.Fatalf("kinds %v, want 1000 people, 3000 auctions, 46000 bids", kinds)
	}
}

// TestQueriesAgainstReference runs each query inside a pipeline and checks
// its results against a count made here from the same generated events.
func TestQueriesAgainstReference(t *testing.T) {
	const events = 200_000
	// 20 s of event time at 10k events/s: the 10 s windows fire.
	gen := func() *Generator { return NewGenerator(0, 10_000, 7) }
	bids := 0
	maxPrice := map[int64]int64{}            // window start → highest price
	bidders := map[[2]int64]map[int64]bool{} // (auction, window) → bidders
	q2 := 0
	g := gen()
	for range events {
		f, ts := g.Next()
		if f["event_type"] != int64(2) {
			continue
		}
		bids++
		w := ts / 10_000 * 10_000
		maxPrice[w] = max(maxPrice[w], f["price"].(int64))
		k := [2]int64{f["auction"].(int64), w}
		if bidders[k] == nil {
			bidders[k] = map[int64]bool{}
		}
		bidders[k][f["bidder"].(int64)] = true
		if f["auction"].(int64)%123 == 0 {
			q2++
		}
	}
	run := func(q string, par int) []job.Result {
		spec, err := Query(q, "nexmark", par)
		if err != nil {
			t.Fatal(err)
		}
		p, err := job.NewPipeline(spec)
		if err != nil {
			t.Fatal(err)
		}
		g := gen()
		var out []job.Result
		for g.Count() < events {
			batch := make([]job.Record, 0, 1000)
			for range 1000 {
				off := g.Count()
				f, ts := g.Next()
				batch = append(batch, job.Record{Topic: "nexmark", Partition: int32(off % int64(par)), Offset: off, Timestamp: ts, Fields: f})
			}
			out = append(out, p.Round(batch, time.Now())...)
		}
		return append(out, p.Drain()...)
	}
	for _, par := range []int{1, 3} {
		if n := len(run("q0", par)); n != bids {
			t.Errorf("q0 parallelism %d: %d results, want the %d bids", par, n, bids)
		}
		if n := len(run("q2", par)); n != q2 {
			t.Errorf("q2 parallelism %d: %d results, want %d", par, n, q2)
		}
		for _, r := range run("q1", par) {
			m := r.Value.(map[string]any)
			if len(m) != 4 || m["price"] == nil {
				t.Fatalf("q1 result %v", m)
			}
		}
		got7 := map[int64]float64{}
		for _, r := range run("q7", par) {
			got7[r.Window.Start] = r.Value.(float64)
		}
		if len(got7) != len(maxPrice) {
			t.Errorf("q7 parallelism %d: %d windows, want %d", par, len(got7), len(maxPrice))
		}
		for w, p := range maxPrice {
			if got7[w] != float64(p) {
				t.Errorf("q7 parallelism %d: window %d max %v, want %d", par, w, got7[w], p)
			}
		}
		uv := run("uv", par)
		if len(uv) != len(bidders) {
			t.Errorf("uv parallelism %d: %d results, want %d", par, len(uv), len(bidders))
		}
		for _, r := range uv {
			var a int64
			for _, c := range r.Key {
				a = a*10 + int64(c-'0')
			}
			if want := len(bidders[[2]int64{a, r.Window.Start}]); r.Value.(int64) != int64(want) {
				t.Fatalf("uv parallelism %d: auction %s window %d: %v bidders, want %d", par, r.Key, r.Window.Start, r.Value, want)
			}
		}
		// q5: one hot auction per window slide (windows of 10 s every 2 s
		// over 20 s of events: 14 windows).
		if n := len(run("q5", par)); n != 14 {
			t.Errorf("q5 parallelism %d: %d windows, want 14", par, n)
		}
	}
}

func TestRunReportsAndRejects(t *testing.T) {
	res, err := Run(context.Background(), Config{Query: "q2", Events: 50_000})
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 50_000 || res.CPU <= 0 || res.PerCore() <= 0 || res.Outputs == 0 {
		t.Fatalf("result %+v", res)
	}
	if _, err := Run(context.Background(), Config{Query: "q99", Events: 1}); !errors.Is(err, ErrQuery) {
		t.Fatalf("unknown query: error %v", err)
	}
}

func TestRunThroughBroker(t *testing.T) {
	res, err := RunThroughBroker(context.Background(), Config{Query: "q0", Events: 20_000, Parallelism: 2}, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 20_000 || res.Outputs != 18_400 {
		t.Fatalf("result %+v, want 20000 events and 18400 bids out", res)
	}
}

func BenchmarkQuery(b *testing.B) {
	for _, q := range Queries() {
		b.Run(q, func(b *testing.B) {
			res, err := Run(context.Background(), Config{Query: q, Events: int64(b.N)})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(res.PerCore(), "events/cpu-s")
		})
	}
}

// TestEncodeIsJSON: the generator's encoder writes what encoding/json
// reads back to the same event.
func TestEncodeIsJSON(t *testing.T) {
	g := NewGenerator(0, 1000, 3)
	for range 200 {
		f, _ := g.Next()
		b := Encode(nil, f)
		std, _ := json.Marshal(f)
		if string(b) != string(std) {
			t.Fatalf("encoded %s, encoding/json writes %s", b, std)
		}
	}
	// Keys of no event kind, and strings to escape, take the slow paths.
	f := map[string]any{"b": "quote \" and \\", "a": int64(-3), "c": "plain", "d": []int{1}}
	if b, std := Encode(nil, f), `{"a":-3,"b":"quote \" and \\","c":"plain","d":[1]}`; string(b) != std {
		t.Fatalf("encoded %s, want %s", b, std)
	}
}

// BenchmarkGenerateEncode is the generator's side of --through-broker
// without the broker: making an event and encoding it as JSON.
func BenchmarkGenerateEncode(b *testing.B) {
	g := NewGenerator(0, 10_000_000, 42)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		f, _ := g.Next()
		buf = Encode(buf[:0], f)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
