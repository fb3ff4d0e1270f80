package resiliency

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

func breakerPolicyFor(t testing.TB, spec CircuitBreakerSpec) *breakerPolicy {
	t.Helper()
	p, err := compileBreaker("t", "cb", "cb", spec)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type transition struct{ from, to State }

func TestBreakerSteps(t *testing.T) {
	p := breakerPolicyFor(t, CircuitBreakerSpec{MaxRequests: 2, Interval: "10s", Timeout: "30s", Trip: "consecutiveFailures >= 3"})
	t0 := time.Unix(1000, 0)
	var seen []transition
	b := newBreaker(p, t0, func(from, to State) { seen = append(seen, transition{from, to}) })

	call := func(at time.Duration, ok bool) breakerRefusal {
		t.Helper()
		gen, why := b.allow(t0.Add(at))
		if why == refusedNone {
			b.done(gen, ok, t0.Add(at))
		}
		return why
	}
	steps := []struct {
		at    time.Duration
		ok    bool
		want  breakerRefusal
		state State
	}{
		{0, false, refusedNone, StateClosed},
		{time.Second, false, refusedNone, StateClosed},
		{2 * time.Second, true, refusedNone, StateClosed}, // a success resets consecutiveFailures
		{3 * time.Second, false, refusedNone, StateClosed},
		{4 * time.Second, false, refusedNone, StateClosed},
		{5 * time.Second, false, refusedNone, StateOpen}, // third in a row: trips
		{6 * time.Second, true, refusedOpen, StateOpen},
		{34 * time.Second, true, refusedOpen, StateOpen},     // 29s after opening
		{35 * time.Second, true, refusedNone, StateHalfOpen}, // 30s: half-open, first trial succeeds
		{36 * time.Second, true, refusedNone, StateClosed},   // second success closes (maxRequests 2)
	}
	for i, s := range steps {
		if got := call(s.at, s.ok); got != s.want {
			t.Fatalf("step %d at %v: refusal = %v, want %v", i, s.at, got, s.want)
		}
		if got := b.stateAt(t0.Add(s.at)); got != s.state {
			t.Fatalf("step %d at %v: state = %v, want %v", i, s.at, got, s.state)
		}
	}
	want := []transition{{StateClosed, StateOpen}, {StateOpen, StateHalfOpen}, {StateHalfOpen, StateClosed}}
	if len(seen) != len(want) {
		t.Fatalf("transitions = %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("transitions = %v, want %v", seen, want)
		}
	}
}

func TestBreakerHalfOpenLimitsTrialsAndReopens(t *testing.T) {
	p := breakerPolicyFor(t, CircuitBreakerSpec{MaxRequests: 2, Timeout: "10s", Trip: "consecutiveFailures >= 1"})
	now := time.Unix(0, 0)
	b := newBreaker(p, now, nil)
	g, _ := b.allow(now)
	b.done(g, false, now)
	if b.stateAt(now) != StateOpen {
		t.Fatal("one failure must trip consecutiveFailures >= 1")
	}
	now = now.Add(10 * time.Second)
	g1, w1 := b.allow(now)
	g2, w2 := b.allow(now)
	_, w3 := b.allow(now)
	if w1 != refusedNone || w2 != refusedNone || w3 != refusedTrials {
		t.Fatalf("half-open admissions = %v %v %v, want two trials then refusedTrials", w1, w2, w3)
	}
	b.done(g1, true, now)
	b.done(g2, false, now) // a failing trial reopens
	if b.stateAt(now) != StateOpen {
		t.Fatal("a failed trial must reopen the breaker")
	}
	if _, w := b.allow(now.Add(9 * time.Second)); w != refusedOpen {
		t.Fatal("reopened breaker must wait a full timeout again")
	}
}

func TestBreakerIntervalClearsCounts(t *testing.T) {
	p := breakerPolicyFor(t, CircuitBreakerSpec{Interval: "10s", Trip: "totalFailures >= 3"})
	t0 := time.Unix(0, 0)
	b := newBreaker(p, t0, nil)
	for _, at := range []time.Duration{0, 5 * time.Second, 10 * time.Second, 15 * time.Second} {
		g, _ := b.allow(t0.Add(at))
		b.done(g, false, t0.Add(at))
	}
	// Failures at 0s and 5s fell in the first interval, 10s and 15s in
	// the second: never three in one generation.
	if b.stateAt(t0.Add(15*time.Second)) != StateClosed {
		t.Fatal("interval must clear the counts of the closed state")
	}
	g, _ := b.allow(t0.Add(19 * time.Second))
	b.done(g, false, t0.Add(19*time.Second))
	if b.stateAt(t0.Add(19*time.Second)) != StateOpen {
		t.Fatal("third failure within the second interval must trip")
	}
}

func TestBreakerIgnoresStaleGenerationsAndCancel(t *testing.T) {
	p := breakerPolicyFor(t, CircuitBreakerSpec{MaxRequests: 1, Timeout: "1s", Trip: "consecutiveFailures >= 1"})
	now := time.Unix(0, 0)
	b := newBreaker(p, now, nil)
	slow, _ := b.allow(now) // started while closed
	g, _ := b.allow(now)
	b.done(g, false, now) // opens
	b.done(slow, true, now)
	if b.stateAt(now) != StateOpen {
		t.Fatal("an outcome from before the breaker opened must not count")
	}
	now = now.Add(time.Second)
	trial, _ := b.allow(now)
	b.cancel(trial) // the caller gave up: the trial slot is free again
	if _, w := b.allow(now); w != refusedNone {
		t.Fatal("cancel must free the half-open trial slot")
	}
}

func TestBreakerSetEvictsLeastRecentlyUsed(t *testing.T) {
	p := breakerPolicyFor(t, CircuitBreakerSpec{Trip: "consecutiveFailures >= 1"})
	now := time.Unix(0, 0)
	s := newBreakerSet(p, 2, nil)
	a := s.get("a", now)
	g, _ := a.allow(now)
	a.done(g, false, now)
	s.get("b", now)
	s.get("a", now) // a is now the most recent
	s.get("c", now) // evicts b
	if s.peek("b") != nil || s.peek("a") != a || s.peek("c") == nil {
		t.Fatal("LRU eviction kept the wrong breakers")
	}
	if s.get("a", now).stateAt(now) != StateOpen {
		t.Fatal("a's state must survive while it is cached")
	}
}

// TestBreakerProperties checks invariants of the state machine over random
// histories: it opens exactly when the trip condition holds after a
// failure in the closed state, refuses everything while open, admits at
// most maxRequests trials while half-open, and only moves along the
// allowed transitions.
func TestBreakerProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		threshold := rapid.IntRange(1, 5).Draw(rt, "threshold")
		maxReq := rapid.IntRange(1, 3).Draw(rt, "maxRequests")
		timeout := time.Duration(rapid.IntRange(1, 10).Draw(rt, "timeoutSec")) * time.Second
		p := &breakerPolicy{name: "p", maxRequests: uint32(maxReq), timeout: timeout,
			trip: func(c Counts) bool { return c.ConsecutiveFailures >= uint32(threshold) }}
		now := time.Unix(0, 0)
		var moves []transition
		b := newBreaker(p, now, func(from, to State) { moves = append(moves, transition{from, to}) })
		var openedAt time.Time
		type pending struct{ gen uint64 }
		var inflight []pending
		consecutive := 0

		for i := 0; i < 100; i++ {
			switch rapid.IntRange(0, 3).Draw(rt, "op") {
			case 0: // time passes
				now = now.Add(time.Duration(rapid.IntRange(0, 4000).Draw(rt, "ms")) * time.Millisecond)
			case 1: // a call starts
				before := b.stateAt(now)
				gen, why := b.allow(now)
				switch before {
				case StateOpen:
					if why != refusedOpen {
						rt.Fatalf("open breaker admitted a call")
					}
					if now.Sub(openedAt) >= timeout {
						rt.Fatalf("still open %v after opening, timeout %v", now.Sub(openedAt), timeout)
					}
				case StateHalfOpen:
					trials := 0
					for _, p := range inflight {
						if p.gen == b.generation {
							trials++
						}
					}
					if why == refusedNone && trials >= maxReq {
						rt.Fatalf("half-open admitted trial %d of %d", trials+1, maxReq)
					}
				case StateClosed:
					if why != refusedNone {
						rt.Fatalf("closed breaker refused a call")
					}
				}
				if why == refusedNone {
					inflight = append(inflight, pending{gen})
				}
			case 2, 3: // a call ends
				if len(inflight) == 0 {
					continue
				}
				k := rapid.IntRange(0, len(inflight)-1).Draw(rt, "which")
				c := inflight[k]
				inflight = append(inflight[:k], inflight[k+1:]...)
				ok := rapid.Bool().Draw(rt, "ok")
				before := b.stateAt(now)
				current := c.gen == b.generation
				b.done(c.gen, ok, now)
				after := b.stateAt(now)
				if before == StateClosed && current {
					if ok {
						consecutive = 0
					} else {
						consecutive++
					}
					if wantOpen := consecutive >= threshold; wantOpen != (after == StateOpen) {
						rt.Fatalf("after %d consecutive failures state = %v (threshold %d)", consecutive, after, threshold)
					}
				}
				if after == StateOpen && before != StateOpen {
					openedAt = now
				}
				if after == StateClosed && before != StateClosed {
					consecutive = 0
				}
			}
		}
		for _, m := range moves {
			switch m {
			case transition{StateClosed, StateOpen}, transition{StateOpen, StateHalfOpen},
				transition{StateHalfOpen, StateClosed}, transition{StateHalfOpen, StateOpen}:
			default:
				rt.Fatalf("illegal transition %v → %v", m.from, m.to)
			}
		}
	})
}
