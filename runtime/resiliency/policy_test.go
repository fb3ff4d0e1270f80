package resiliency

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func retryFor(t testing.TB, s RetrySpec) *retryPolicy {
	t.Helper()
	r, err := compileRetry("t", "r", "r", s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func intp(n int) *int             { return &n }
func floatp(f float64) *float64   { return &f }
func ms(n int) time.Duration      { return time.Duration(n) * time.Millisecond }
func seconds(n int) time.Duration { return time.Duration(n) * time.Second }

func TestRetrySchedule(t *testing.T) {
	type step struct {
		elapsed time.Duration
		rnd     float64
		want    time.Duration
		ok      bool
	}
	for _, tc := range []struct {
		name  string
		spec  RetrySpec
		steps []step // retry 1, 2, ...
	}{
		{"constant", RetrySpec{Duration: "2s", MaxRetries: intp(3)},
			[]step{{0, 0, seconds(2), true}, {0, 0.9, seconds(2), true}, {0, 0, seconds(2), true}, {0, 0, 0, false}}},
		{"constant default is 5s forever", RetrySpec{},
			[]step{{0, 0, seconds(5), true}, {time.Hour, 0, seconds(5), true}}},
		{"no retries", RetrySpec{MaxRetries: intp(0)}, []step{{0, 0, 0, false}}},
		// Dapr's defaults, at the middle of the jitter (rnd 0.5):
		// 500ms × 1.5^n, capped at maxInterval.
		{"exponential defaults", RetrySpec{Policy: "exponential", MaxInterval: "1s"},
			[]step{{0, 0.5, ms(500), true}, {0, 0.5, ms(750), true}, {0, 0.5, ms(1000), true}, {0, 0.5, ms(1000), true}}},
		// Jitter spans ±50%: rnd 0 is half, rnd → 1 is one and a half.
		{"exponential jitter", RetrySpec{Policy: "exponential"},
			[]step{{0, 0, ms(250), true}, {0, 0.75, 937500 * time.Microsecond, true}}},
		{"exponential max elapsed", RetrySpec{Policy: "exponential", RandomizationFactor: floatp(0), MaxElapsedTime: "1s"},
			[]step{{0, 0, ms(500), true}, {ms(300), 0, ms(750), false}}},
		{"exponential tuned", RetrySpec{Policy: "exponential", InitialInterval: "100ms", Multiplier: floatp(2), RandomizationFactor: floatp(0), MaxRetries: intp(4)},
			[]step{{0, 0.3, ms(100), true}, {0, 0.3, ms(200), true}, {0, 0.3, ms(400), true}, {0, 0.3, ms(800), true}, {0, 0.3, 0, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := retryFor(t, tc.spec)
			for i, s := range tc.steps {
				got, ok := r.wait(i+1, s.elapsed, s.rnd)
				if ok != s.ok || (ok && got != s.want) {
					t.Fatalf("retry %d: wait = %v, %v; want %v, %v", i+1, got, ok, s.want, s.ok)
				}
			}
		})
	}
}

type httpErr int

func (e httpErr) Error() string       { return fmt.Sprintf("HTTP %d", int(e)) }
func (e httpErr) HTTPStatusCode() int { return int(e) }

func TestRetryMatching(t *testing.T) {
	r := retryFor(t, RetrySpec{Matching: &RetryMatching{HTTPStatusCodes: "429,500-503", GRPCStatusCodes: "14"}})
	onlyHTTP := retryFor(t, RetrySpec{Matching: &RetryMatching{HTTPStatusCodes: "503"}})
	for _, tc := range []struct {
		name          string
		err           error
		want, wantOne bool
	}{
		{"plain error", errors.New("connection reset"), true, true},
		{"503", httpErr(503), true, true},
		{"wrapped 429", fmt.Errorf("call: %w", httpErr(429)), true, false},
		{"404", httpErr(404), false, false},
		{"grpc unavailable", status.Error(codes.Unavailable, "x"), true, true},
		{"grpc invalid argument", status.Error(codes.InvalidArgument, "x"), false, true},
	} {
		if got := r.matches(tc.err); got != tc.want {
			t.Errorf("%s: matches = %v, want %v", tc.name, got, tc.want)
		}
		if got := onlyHTTP.matches(tc.err); got != tc.wantOne {
			t.Errorf("%s (HTTP list only): matches = %v, want %v", tc.name, got, tc.wantOne)
		}
	}
}

func TestBulkhead(t *testing.T) {
	clock := newManualClock()
	b := newBulkhead(&bulkheadPolicy{maxConcurrent: 2, maxWait: ms(50)})
	ctx := context.Background()
	acq := func(ctx context.Context) error { _, err := b.acquire(ctx, clock); return err }
	for i := range 2 {
		if acq(ctx) != nil {
			t.Fatalf("slot %d of two must be free", i+1)
		}
	}
	// A third caller waits; a slot frees within maxWait.
	got := make(chan error, 1)
	go func() { got <- acq(ctx) }()
	clock.WaitTimers(1)
	b.release()
	if err := <-got; err != nil {
		t.Fatalf("waiter = %v, want a slot", err)
	}
	// A fourth waits out maxWait.
	go func() { got <- acq(ctx) }()
	clock.WaitTimers(1)
	clock.Advance(ms(50))
	if err := <-got; err != ErrBulkheadFull {
		t.Fatalf("waiter after maxWait = %v, want ErrBulkheadFull", err)
	}
	// A caller that gives up gets its context's error.
	cctx, cancel := context.WithCancel(ctx)
	go func() { got <- acq(cctx) }()
	clock.WaitTimers(1)
	cancel()
	if err := <-got; err != context.Canceled {
		t.Fatalf("cancelled waiter = %v", err)
	}
	// Without maxWait, fail at once.
	ff := newBulkhead(&bulkheadPolicy{maxConcurrent: 1})
	_, _ = ff.acquire(ctx, clock)
	if _, err := ff.acquire(ctx, clock); err != ErrBulkheadFull {
		t.Fatalf("fail-fast bulkhead = %v", err)
	}
	if b.inFlight() != 2 {
		t.Fatalf("inFlight = %d, want 2", b.inFlight())
	}
}

func TestRateLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := newRateLimiter(&rateLimitPolicy{rate: 10, burst: 2, perMethod: true})
	for i, want := range []bool{true, true, false} {
		if got := l.allow("get", now); got != want {
			t.Fatalf("get #%d = %v, want %v", i, got, want)
		}
	}
	if !l.allow("put", now) {
		t.Fatal("another method must have its own bucket")
	}
	if l.allow("get", now.Add(ms(99))) {
		t.Fatal("a token takes 100ms to refill at 10/s")
	}
	if !l.allow("get", now.Add(ms(100))) {
		t.Fatal("token must be back after 100ms")
	}
	whole := newRateLimiter(&rateLimitPolicy{rate: 1, burst: 1})
	if !whole.allow("a", now) || whole.allow("b", now) {
		t.Fatal("without per: method, methods share the target's bucket")
	}
}

func TestRateLimiterBoundsMethods(t *testing.T) {
	now := time.Unix(0, 0)
	l := newRateLimiter(&rateLimitPolicy{rate: 1, burst: 1, perMethod: true})
	for i := 0; i < maxMethodBuckets+10; i++ {
		l.allow(fmt.Sprint("m", i), now)
	}
	if n := l.n.Load(); n != maxMethodBuckets {
		t.Fatalf("method buckets = %d, want the cap %d", n, maxMethodBuckets)
	}
}

func TestOverloadDropProbability(t *testing.T) {
	p := &dropPolicy{low: 100, high: 200}
	for _, tc := range []struct {
		inflight int64
		want     float64
	}{{0, 0}, {99, 0}, {100, 0}, {150, 0.5}, {175, 0.75}, {199, 0.99}, {200, 1}, {1000, 1}} {
		if got := p.dropProbability(tc.inflight); got != tc.want {
			t.Errorf("dropProbability(%d) = %v, want %v", tc.inflight, got, tc.want)
		}
	}
	d := newDropper(&dropPolicy{low: 1, high: 3})
	fixed := func(v float64) func() float64 { return func() float64 { return v } }
	// 0 in flight: always admitted.
	if !d.admit(fixed(0)) {
		t.Fatal("first call dropped")
	}
	// 1 in flight: p = 0; 2 in flight: p = 0.5.
	if !d.admit(fixed(0)) {
		t.Fatal("second call dropped at p=0")
	}
	if d.admit(fixed(0.4)) {
		t.Fatal("rnd 0.4 < p 0.5 must drop")
	}
	if !d.admit(fixed(0.6)) {
		t.Fatal("rnd 0.6 ≥ p 0.5 must pass")
	}
	// 3 in flight: p = 1 whatever rnd.
	if d.admit(fixed(0.999)) {
		t.Fatal("at the high watermark every call drops")
	}
	d.done()
	d.done()
	d.done()
	if d.inflight.Load() != 0 {
		t.Fatalf("inflight = %d after all done", d.inflight.Load())
	}
}

func adaptiveFor(t testing.TB, s AdaptiveConcurrencySpec) *adaptiveLimiter {
	t.Helper()
	p, err := compileAdaptive("t", "a", "a", s)
	if err != nil {
		t.Fatal(err)
	}
	return newAdaptiveLimiter(p)
}

func TestAdaptiveLimitSteps(t *testing.T) {
	a := adaptiveFor(t, AdaptiveConcurrencySpec{MinLimit: 4, MaxLimit: 100, InitialLimit: 16, Tolerance: 1, Smoothing: 1, SampleWindow: "1s", MinRTTWindow: "1m"})
	now := time.Unix(0, 0)
	fill := func() { // use the whole limit so growth is allowed
		for a.acquire() {
		}
		for a.inflight > 0 {
			a.release()
		}
	}
	window := func(rtt time.Duration) int {
		fill()
		a.sample(now, rtt)
		now = now.Add(time.Second)
		a.sample(now, rtt)
		return a.current()
	}
	// First window: minRTT = 10ms = sample, gradient 1: 16 + √16 = 20.
	if got := window(ms(10)); got != 20 {
		t.Fatalf("limit after an unloaded window = %d, want 20", got)
	}
	// RTT doubles: gradient 0.5 → 20 × 0.5 + √20 ≈ 14.47.
	if got := window(ms(20)); got != 14 {
		t.Fatalf("limit after RTT doubled = %d, want 14", got)
	}
	if a.lastMinRTT != ms(10) || a.lastGradient != 0.5 {
		t.Fatalf("minRTT %v gradient %v, want 10ms 0.5", a.lastMinRTT, a.lastGradient)
	}
	// Sustained high RTT converges down to the floor of L/2 + √L = L → L=4.
	for i := 0; i < 20; i++ {
		window(ms(100))
	}
	if got := a.current(); got != 4 {
		t.Fatalf("limit under sustained 10× RTT = %d, want the equilibrium/min 4", got)
	}
	// RTT recovers: grows by √L per window, bounded by maxLimit.
	prev := a.current()
	for i := 0; i < 5; i++ {
		if got := window(ms(10)); got <= prev {
			t.Fatalf("limit did not grow after recovery: %d → %d", prev, got)
		}
		prev = a.current()
	}
	for i := 0; i < 100; i++ {
		window(ms(10))
	}
	if got := a.current(); got != 100 {
		t.Fatalf("limit = %d, want maxLimit 100", got)
	}
}

func TestAdaptiveDoesNotGrowUnused(t *testing.T) {
	a := adaptiveFor(t, AdaptiveConcurrencySpec{InitialLimit: 20, Smoothing: 1, SampleWindow: "1s"})
	now := time.Unix(0, 0)
	for i := 0; i < 10; i++ {
		a.acquire() // one call at a time: never half the limit
		a.release()
		a.sample(now, ms(5))
		now = now.Add(time.Second)
	}
	if got := a.current(); got != 20 {
		t.Fatalf("an unused limit grew to %d", got)
	}
	for i := 0; i < 20; i++ {
		if !a.acquire() {
			t.Fatalf("acquire %d refused under limit 20", i)
		}
	}
	if a.acquire() {
		t.Fatal("acquire over the limit admitted")
	}
}

func TestAdaptiveMinRTTForgetsOldEpochs(t *testing.T) {
	a := adaptiveFor(t, AdaptiveConcurrencySpec{SampleWindow: "1s", MinRTTWindow: "10s"})
	now := time.Unix(0, 0)
	a.sample(now, ms(10))
	now = now.Add(time.Second)
	a.sample(now, ms(10)) // window mean 10ms: epoch 1 min
	for i := 0; i < 25; i++ {
		now = now.Add(time.Second)
		a.sample(now, ms(50))
	}
	// The target became permanently slower: after two epochs the 10ms
	// minimum is gone and minRTT is 50ms.
	if a.lastMinRTT != ms(50) {
		t.Fatalf("minRTT = %v after two epochs at 50ms, want 50ms", a.lastMinRTT)
	}
}
