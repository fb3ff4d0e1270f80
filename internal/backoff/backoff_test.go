package backoff

import (
	"context"
	"testing"
	"time"
)

func TestSchedule(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		rnd  float64
		want []time.Duration
	}{
		{"doubles to max without jitter", Policy{Initial: 100 * time.Millisecond, Max: time.Second, Jitter: -1, Multiplier: 0},
			0.5, []time.Duration{100, 200, 400, 800, 1000, 1000}},
		{"jitter at its low end", Policy{Initial: 100 * time.Millisecond, Max: time.Second, Jitter: 0.2},
			0, []time.Duration{80, 160, 320, 640, 800}},
		{"jitter at its high end", Policy{Initial: 100 * time.Millisecond, Max: time.Second, Jitter: 0.2},
			1, []time.Duration{120, 240, 480, 960, 1200}},
		{"max below initial", Policy{Initial: 100 * time.Millisecond, Max: 10 * time.Millisecond, Jitter: -1},
			0.5, []time.Duration{100, 100}},
		{"multiplier 1.5", Policy{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 1.5, Jitter: -1},
			0.5, []time.Duration{100, 150, 225}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.p.New()
			b.rnd = func() float64 { return tc.rnd }
			for i, w := range tc.want {
				if got := b.Next(); got != w*time.Millisecond {
					t.Fatalf("wait %d = %v, want %v", i, got, w*time.Millisecond)
				}
			}
			b.Reset()
			if got, first := b.Next(), tc.want[0]*time.Millisecond; got != first {
				t.Errorf("after Reset: %v, want %v", got, first)
			}
		})
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	b := Policy{Initial: time.Hour}.New()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Wait(ctx); err != context.Canceled {
		t.Fatalf("Wait on a canceled context = %v", err)
	}
	done := make(chan struct{})
	close(done)
	if b.WaitChan(nil, done) {
		t.Fatal("WaitChan returned true with a closed channel")
	}
}
