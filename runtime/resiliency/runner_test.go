package resiliency

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// policiesFor builds Policies from one YAML spec with a manual clock and a
// fixed random number.
func policiesFor(t testing.TB, spec string, clock Clock) *Policies {
	t.Helper()
	p, err := New(Options{Clock: clock, Rand: func() float64 { return 0.5 }}, mustYAML(t, head(spec)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// gate is an op that blocks until released, reporting when it started.
type gate struct {
	started chan struct{}
	release chan error
}

func newGate() *gate { return &gate{started: make(chan struct{}, 16), release: make(chan error)} }

func (g *gate) op(ctx context.Context) error {
	g.started <- struct{}{}
	select {
	case err := <-g.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func wantPolicyErr(t *testing.T, err, sentinel error, policy string) {
	t.Helper()
	var pe *PolicyError
	if !errors.Is(err, sentinel) || !errors.As(err, &pe) || pe.Policy != policy {
		t.Fatalf("error = %v, want %v from %s", err, sentinel, policy)
	}
}

func TestCompositionOrderOuterLayers(t *testing.T) {
	clock := newManualClock()
	p := policiesFor(t, `  policies:
    rateLimits: {rl: {rate: 0.001, burst: 4}}
    overloadDrop: {red: {lowWatermark: 1, highWatermark: 2}}
    bulkheads: {bh: {maxConcurrent: 1, maxWait: 1h}}
  targets:
    apps:
      orders: {rateLimit: rl, overloadDrop: red, bulkhead: bh}
`, clock)
	r := p.ForApp("orders")
	ctx := context.Background()
	g := newGate()

	c1 := async(func() error { return r.Do(ctx, g.op) }) // holds the bulkhead
	<-g.started
	c2 := async(func() error { return r.Do(ctx, g.op) }) // passes drop (p=0 at 1 in flight), waits in the bulkhead
	clock.WaitTimers(1)
	// Two in flight at the drop layer: the next call is dropped before it
	// would wait in the bulkhead.
	wantPolicyErr(t, r.Do(ctx, g.op), ErrOverloaded, "overloadDrop.red")
	wantPolicyErr(t, r.Do(ctx, g.op), ErrOverloaded, "overloadDrop.red")
	// The bucket is now empty (4 tokens taken): the rate limit, outermost,
	// refuses even though the drop would too.
	wantPolicyErr(t, r.Do(ctx, g.op), ErrRateLimited, "rateLimits.rl")

	g.release <- nil
	if err := <-c1; err != nil {
		t.Fatal(err)
	}
	<-g.started // c2 got the bulkhead slot
	g.release <- nil
	if err := <-c2; err != nil {
		t.Fatal(err)
	}
	if r.drop.inflight.Load() != 0 || r.bulkhead.inFlight() != 0 {
		t.Fatalf("leaked: drop inflight %d, bulkhead %d", r.drop.inflight.Load(), r.bulkhead.inFlight())
	}
}

func TestCompositionOrderInnerLayers(t *testing.T) {
	clock := newManualClock()
	p := policiesFor(t, `  policies:
    bulkheads: {bh: {maxConcurrent: 2}}
    adaptiveConcurrency: {ac: {minLimit: 1, maxLimit: 1, initialLimit: 1}}
    retries: {twice: {duration: 1s, maxRetries: 2}}
  targets:
    apps:
      orders: {bulkhead: bh, adaptiveConcurrency: ac, retry: twice}
`, clock)
	r := p.ForApp("orders")
	ctx := context.Background()
	g := newGate()

	c1 := async(func() error { return r.Do(ctx, g.op) })
	<-g.started
	g.release <- errors.New("first attempt fails")
	clock.WaitTimers(1) // c1 is in its backoff, still holding its adaptive slot
	// The bulkhead admits a second call, the adaptive limit (inside it)
	// refuses: the limit covers the whole call, retries included.
	wantPolicyErr(t, r.Do(ctx, g.op), ErrConcurrencyLimit, "adaptiveConcurrency.ac")
	if r.bulkhead.inFlight() != 1 {
		t.Fatalf("refused call kept its bulkhead slot: %d in flight", r.bulkhead.inFlight())
	}
	clock.Advance(time.Second)
	<-g.started
	g.release <- nil
	if err := <-c1; err != nil {
		t.Fatalf("retried call = %v", err)
	}
}

func TestRetriesFollowTheScheduleOnTheClock(t *testing.T) {
	clock := newManualClock()
	p := policiesFor(t, `  policies:
    retries: {exp: {policy: exponential, initialInterval: 100ms, multiplier: 2, randomizationFactor: 0, maxRetries: 3}}
  targets:
    apps:
      orders: {retry: exp}
`, clock)
	r := p.ForApp("orders")
	var calls atomic.Int32
	fail := errors.New("boom")
	done := async(func() error {
		return r.Do(context.Background(), func(context.Context) error {
			calls.Add(1)
			return fail
		})
	})
	for _, want := range []time.Duration{ms(100), ms(200), ms(400)} {
		clock.WaitTimers(1)
		if got := clock.NextTimer(); got != want {
			t.Fatalf("backoff = %v, want %v", got, want)
		}
		clock.Advance(want)
	}
	if err := <-done; err != fail {
		t.Fatalf("Do = %v, want the last attempt's error", err)
	}
	if calls.Load() != 4 {
		t.Fatalf("attempts = %d, want 1 + 3 retries", calls.Load())
	}
}

func TestRetryStopsOnPermanentNoRetryAndMatching(t *testing.T) {
	p := policiesFor(t, `  policies:
    retries: {r: {duration: 0, maxRetries: 3, matching: {httpStatusCodes: "503"}}}
  targets:
    apps:
      orders: {retry: r}
`, newManualClock())
	r := p.ForApp("orders")
	ctx := context.Background()
	count := func(c Call, err error) (int, error) {
		n := 0
		got := r.DoCall(ctx, c, func(context.Context) error { n++; return err })
		return n, got
	}
	base := errors.New("base")
	if n, err := count(Call{}, Permanent(base)); n != 1 || err != base {
		t.Errorf("Permanent: %d attempts, %v; want 1, the unwrapped error", n, err)
	}
	if n, _ := count(Call{Retriable: NoRetry}, base); n != 1 {
		t.Errorf("NoRetry: %d attempts", n)
	}
	if n, _ := count(Call{}, httpErr(404)); n != 1 {
		t.Errorf("404 outside matching: %d attempts", n)
	}
	if n, _ := count(Call{}, httpErr(503)); n != 4 {
		t.Errorf("503 in matching: %d attempts, want 4", n)
	}
	if n, _ := count(Call{}, base); n != 4 {
		t.Errorf("error without status: %d attempts, want 4", n)
	}
}

func TestTimeoutCutsAnAttempt(t *testing.T) {
	clock := newManualClock()
	p := policiesFor(t, `  policies:
    timeouts: {short: 1s}
    retries: {once: {duration: 2s, maxRetries: 1}}
  targets:
    apps:
      orders: {timeout: short, retry: once}
`, clock)
	r := p.ForApp("orders")
	g := newGate()
	done := async(func() error { return r.Do(context.Background(), g.op) })
	<-g.started
	clock.WaitTimers(1)
	clock.Advance(time.Second) // first attempt times out
	clock.WaitTimers(1)        // the retry's backoff
	if got := clock.NextTimer(); got != 2*time.Second {
		t.Fatalf("backoff after timeout = %v", got)
	}
	clock.Advance(2 * time.Second)
	<-g.started
	clock.WaitTimers(1)
	clock.Advance(time.Second) // second attempt times out too
	err := <-done
	wantPolicyErr(t, err, ErrTimeout, "timeouts.short")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Error("a timeout must match context.DeadlineExceeded")
	}
}

func TestBreakerThroughDo(t *testing.T) {
	clock := newManualClock()
	var changes []string
	opts := Options{Clock: clock, Rand: func() float64 { return 0 }, OnBreakerChange: func(target, inst string, from, to State) {
		changes = append(changes, fmt.Sprintf("%s/%s %v→%v", target, inst, from, to))
	}}
	p, err := New(opts, mustYAML(t, head(`  policies:
    retries: {r: {duration: 0, maxRetries: 5}}
    circuitBreakers: {cb: {trip: consecutiveFailures >= 2, timeout: 10s}}
  targets:
    apps:
      orders: {retry: r, circuitBreaker: cb}
`)))
	if err != nil {
		t.Fatal(err)
	}
	r := p.ForApp("orders")
	ctx := context.Background()
	fail := errors.New("down")
	n := 0
	err = r.Do(ctx, func(context.Context) error { n++; return fail })
	// Two failures trip the breaker; the third attempt is refused and,
	// without a picker, that ends the call (as Dapr's permanent error).
	wantPolicyErr(t, err, ErrCircuitOpen, "circuitBreakers.cb")
	if n != 2 {
		t.Fatalf("op ran %d times, want 2", n)
	}
	if r.BreakerState("") != StateOpen {
		t.Fatal("breaker not open")
	}
	if len(changes) != 1 || changes[0] != `app "orders"/ closed→open` {
		t.Fatalf("changes = %v", changes)
	}

	// With a picker, breakers are per instance and an open one only
	// fails its attempt: the retry goes elsewhere.
	picks := []string{"a", "a", "a", "b"}
	var skipped []string
	var ran []string
	var current string
	c := Call{
		Pick:    func(n int) (string, error) { current = picks[n-1]; return current, nil },
		Skipped: func(inst string, err error) { skipped = append(skipped, inst) },
	}
	err = r.DoCall(ctx, c, func(context.Context) error {
		ran = append(ran, current)
		if current == "a" {
			return fail
		}
		return nil
	})
	if err != nil {
		t.Fatalf("DoCall = %v, want success on b", err)
	}
	if fmt.Sprint(ran) != "[a a b]" || fmt.Sprint(skipped) != "[a]" {
		t.Fatalf("ran %v skipped %v, want a a (trip) then a skipped then b", ran, skipped)
	}
	if r.BreakerState("a") != StateOpen || r.BreakerState("b") != StateClosed {
		t.Fatal("per-instance breaker states wrong")
	}
	clock.Advance(10 * time.Second)
	if r.BreakerState("a") != StateHalfOpen {
		t.Fatal("a must be half-open after its timeout")
	}
}

func TestPassthroughRunnerStillPicks(t *testing.T) {
	p, _ := New(Options{})
	r := p.ForApp("x")
	picked := 0
	err := r.DoCall(context.Background(), Call{Pick: func(int) (string, error) { picked++; return "i", nil }},
		func(context.Context) error { return nil })
	if err != nil || picked != 1 {
		t.Fatalf("err %v picked %d", err, picked)
	}
	pickErr := errors.New("no instance")
	if err := r.DoCall(context.Background(), Call{Pick: func(int) (string, error) { return "", pickErr }},
		func(context.Context) error { t.Fatal("op ran without an instance"); return nil }); err != pickErr {
		t.Fatalf("err = %v, want the pick error", err)
	}
}

func TestReloadKeepsStateOfUnchangedPolicies(t *testing.T) {
	clock := newManualClock()
	s := NewStore(Options{Clock: clock})
	doc := func(timeout, trip string) *Document {
		return mustYAML(t, head(fmt.Sprintf(`  policies:
    timeouts: {t: %s}
    circuitBreakers: {cb: {trip: %q}}
    bulkheads: {bh: {maxConcurrent: 2}}
  targets:
    apps:
      orders: {timeout: t, circuitBreaker: cb, bulkhead: bh}
`, timeout, trip)))
	}
	if err := s.Replace(doc("5s", "consecutiveFailures >= 1")); err != nil {
		t.Fatal(err)
	}
	r1 := s.ForApp("orders")
	_ = r1.Do(context.Background(), func(context.Context) error { return errors.New("x") })
	if r1.BreakerState("") != StateOpen {
		t.Fatal("breaker did not open")
	}
	// Timeout changes, breaker and bulkhead do not: their state survives.
	if err := s.Replace(doc("9s", "consecutiveFailures >= 1")); err != nil {
		t.Fatal(err)
	}
	r2 := s.ForApp("orders")
	if r2 == r1 || r2.timeout != 9*time.Second {
		t.Fatal("reload did not install the new timeout")
	}
	if r2.BreakerState("") != StateOpen || r2.breakers != r1.breakers || r2.bulkhead != r1.bulkhead {
		t.Fatal("unchanged breaker/bulkhead state did not survive the reload")
	}
	// The trip changes: the breaker starts closed.
	if err := s.Replace(doc("9s", "consecutiveFailures >= 3")); err != nil {
		t.Fatal(err)
	}
	r3 := s.ForApp("orders")
	if r3.BreakerState("") != StateClosed || r3.bulkhead != r1.bulkhead {
		t.Fatal("changed breaker must reset, unchanged bulkhead must stay")
	}
	// A Runner first built on superseded Policies (a call that loaded them
	// just before a reload) shares the state of the current ones.
	old := s.Policies()
	if err := s.Replace(doc("1s", "consecutiveFailures >= 3")); err != nil {
		t.Fatal(err)
	}
	if late, cur := old.ForComponent("x", "", Outbound), s.ForApp("orders"); late == cur || cur.bulkhead != r1.bulkhead {
		t.Fatal("state not shared across Policies")
	}
	fresh := s.Policies()
	if err := s.Replace(doc("1s", "consecutiveFailures >= 3")); err != nil {
		t.Fatal(err)
	}
	if fresh.ForApp("never-called") != s.ForApp("never-called") {
		t.Fatal("targets without policies share the passthrough runner")
	}
	// Changed definitions are pruned from the registry.
	if err := s.Replace(mustYAML(t, head("  policies:\n    bulkheads: {bh: {maxConcurrent: 9}}\n  targets:\n    apps:\n      orders: {bulkhead: bh}\n"))); err != nil {
		t.Fatal(err)
	}
	if n := len(s.states.m); n != 0 {
		t.Fatalf("registry holds %d stale states after every definition changed", n)
	}
	if s.ForApp("orders").bulkhead == r1.bulkhead || len(s.states.m) != 1 {
		t.Fatal("a changed bulkhead must start afresh")
	}
	// A bad document leaves the policies in force.
	bad := mustYAML(t, head("  targets:\n    apps:\n      orders: {retry: nope}\n"))
	before := s.ForApp("orders")
	if err := s.Replace(bad); err == nil || s.ForApp("orders") != before {
		t.Fatal("a failed Replace must keep the current policies")
	}
}

// TestReloadUnderConcurrentCalls swaps policies while calls run (run with
// -race). The bulkhead is unchanged across the swaps, so its bound holds
// over calls that started under different Policies.
func TestReloadUnderConcurrentCalls(t *testing.T) {
	s := NewStore(Options{})
	docs := []*Document{
		mustYAML(t, head(`  policies:
    timeouts: {t: 10s}
    bulkheads: {bh: {maxConcurrent: 3, maxWait: 1m}}
    circuitBreakers: {cb: {trip: consecutiveFailures > 1000000}}
    rateLimits: {rl: {rate: 1e9, per: method}}
  targets:
    apps:
      orders: {timeout: t, bulkhead: bh, circuitBreaker: cb, rateLimit: rl}
`)),
		mustYAML(t, head(`  policies:
    timeouts: {t: 20s}
    retries: {r: {duration: 0, maxRetries: 2}}
    bulkheads: {bh: {maxConcurrent: 3, maxWait: 1m}}
  targets:
    apps:
      orders: {timeout: t, retry: r, bulkhead: bh}
`)),
	}
	if err := s.Replace(docs[0]); err != nil {
		t.Fatal(err)
	}
	var inflight, peak atomic.Int32
	var calls atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := s.ForApp("orders").DoCall(context.Background(), Call{Method: "m"}, func(context.Context) error {
					n := inflight.Add(1)
					for {
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					runtime.Gosched()
					inflight.Add(-1)
					return nil
				})
				calls.Add(1)
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		if err := s.Replace(docs[i%2]); err != nil {
			t.Fatal(err)
		}
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("call failed during reloads: %v", err)
	}
	if p := peak.Load(); p > 3 {
		t.Fatalf("%d calls in flight, bulkhead allows 3", p)
	}
	if calls.Load() == 0 {
		t.Fatal("no calls ran")
	}
}
