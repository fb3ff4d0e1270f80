package job

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker/brokertest"
	"mecha/internal/poll"
)

// TestOverloadHalvesThenRecovers runs a job through the real broker with
// a static rate limit and a lag threshold. A record an hour old puts the
// watermark an hour behind: the job halves its source rate. A fresh
// record brings the watermark back: the rate climbs back in steps to the
// static limit and the job is no longer overloaded.
func TestOverloadHalvesThenRecovers(t *testing.T) {
	addr := brokertest.Start(t)
	ctx := context.Background()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("load"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "load"); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Name: "guarded", Source: Source{Topic: "load", EventTimeField: "ts", RateLimit: 1000},
		KeyBy: "k", Window: Window{Type: "tumbling", Size: Duration{time.Second}}, Aggregate: Aggregate{Type: "count"},
		Sink:     Sink{Type: "blackhole"},
		Overload: Overload{MaxLag: Duration{time.Minute}, Interval: Duration{50 * time.Millisecond}}}
	r, err := New(spec, Options{Brokers: addr})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() { cancel(); <-done }()
	produce := func(ts time.Time) {
		v := fmt.Sprintf(`{"k":"a","ts":%d}`, ts.UnixMilli())
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(time.Now().Add(-time.Hour))
	poll.Until(t, 10*time.Second, "the rate halved for the lag", func() bool {
		st := r.Status()
		return st.EffectiveRate > 0 && st.EffectiveRate <= 500 && st.Overloaded != ""
	})
	low := r.Status().EffectiveRate
	produce(time.Now())
	var steps []float64
	poll.Until(t, 20*time.Second, "the rate back at the static limit", func() bool {
		st := r.Status()
		if n := len(steps); n == 0 || steps[n-1] != st.EffectiveRate {
			steps = append(steps, st.EffectiveRate)
		}
		return st.EffectiveRate == 1000 && st.Overloaded == ""
	})
	// From its lowest point (the fresh record may take an interval or two
	// to be read, and the rate may halve again meanwhile) to the limit the
	// rate went up, never down, and through values in between: a climb,
	// not a jump.
	lowest := 0
	for i, s := range steps {
		if s < steps[lowest] {
			lowest = i
		}
	}
	low = min(low, steps[lowest])
	between := 0
	for i := lowest + 1; i < len(steps); i++ {
		if steps[i] < steps[i-1] {
			t.Fatalf("the rate fell while healthy: %v", steps)
		}
		if steps[i] > low && steps[i] < 1000 {
			between++
		}
	}
	if between == 0 {
		t.Fatalf("the rate jumped from %v to 1000 with no step between: %v", low, steps)
	}
}
