package resiliency

import (
	"container/list"
	"sync"
	"time"
)

// State is a circuit breaker's state.
type State int

// The states of a circuit breaker.
const (
	// StateClosed lets calls through and counts their outcomes.
	StateClosed State = iota
	// StateHalfOpen lets maxRequests trial calls through.
	StateHalfOpen
	// StateOpen refuses calls until its timeout has passed.
	StateOpen
)

// String is the state's name as Dapr logs it.
func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half-open"
	case StateOpen:
		return "open"
	}
	return "unknown"
}

// breakerRefusal tells why allow refused.
type breakerRefusal int

const (
	refusedNone breakerRefusal = iota
	refusedOpen
	refusedTrials
)

// breaker is gobreaker's state machine with the time passed in, so it is
// stepped deterministically. Each state change starts a new generation;
// outcomes reported for an older generation are ignored (a call that
// started before the breaker opened does not count after).
type breaker struct {
	p      *breakerPolicy
	notify func(from, to State)

	// mu guards the fields below.
	mu         sync.Mutex
	state      State
	generation uint64
	counts     Counts
	// expiry ends the current generation: the closed state's interval,
	// the open state's timeout; zero when it never ends.
	expiry time.Time
}

func newBreaker(p *breakerPolicy, now time.Time, notify func(from, to State)) *breaker {
	b := &breaker{p: p, notify: notify}
	b.newGeneration(now)
	return b
}

// current advances time-driven transitions and returns the state.
func (b *breaker) current(now time.Time) State {
	switch b.state {
	case StateClosed:
		if !b.expiry.IsZero() && !now.Before(b.expiry) {
			b.newGeneration(now)
		}
	case StateOpen:
		if !now.Before(b.expiry) {
			b.setState(StateHalfOpen, now)
		}
	}
	return b.state
}

// allow admits a call or says why not. The returned generation goes back
// in done or cancel.
func (b *breaker) allow(now time.Time) (uint64, breakerRefusal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.current(now) {
	case StateOpen:
		return b.generation, refusedOpen
	case StateHalfOpen:
		if b.counts.Requests >= b.p.maxRequests {
			return b.generation, refusedTrials
		}
	}
	b.counts.onRequest()
	return b.generation, refusedNone
}

// done records the outcome of a call admitted in generation gen.
func (b *breaker) done(gen uint64, ok bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	state := b.current(now)
	if gen != b.generation {
		return
	}
	if ok {
		b.counts.onSuccess()
		if state == StateHalfOpen && b.counts.ConsecutiveSuccesses >= b.p.maxRequests {
			b.setState(StateClosed, now)
		}
		return
	}
	switch state {
	case StateClosed:
		b.counts.onFailure()
		if b.p.trip(b.counts) {
			b.setState(StateOpen, now)
		}
	case StateHalfOpen:
		b.setState(StateOpen, now)
	}
}

// cancel returns the slot of an admitted call that never reached the
// target (the caller gave up), so it counts neither way.
func (b *breaker) cancel(gen uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen == b.generation && b.counts.Requests > 0 {
		b.counts.Requests--
	}
}

// stateAt reports the state at now (advancing time-driven transitions).
func (b *breaker) stateAt(now time.Time) State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current(now)
}

func (b *breaker) setState(s State, now time.Time) {
	if b.state == s {
		return
	}
	prev := b.state
	b.state = s
	b.newGeneration(now)
	if b.notify != nil {
		b.notify(prev, s)
	}
}

func (b *breaker) newGeneration(now time.Time) {
	b.generation++
	b.counts = Counts{}
	switch b.state {
	case StateClosed:
		if b.p.interval == 0 {
			b.expiry = time.Time{}
		} else {
			b.expiry = now.Add(b.p.interval)
		}
	case StateOpen:
		b.expiry = now.Add(b.p.timeout)
	default:
		b.expiry = time.Time{}
	}
}

// breakerSet keeps a target's breakers, one per instance key, evicting the
// least recently used beyond size (Dapr's circuitBreakerCacheSize). The
// key "" is the target-wide breaker.
type breakerSet struct {
	p      *breakerPolicy
	size   int
	notify func(instance string, from, to State)

	// mu guards m and lru.
	mu  sync.Mutex
	m   map[string]*list.Element
	lru list.List // of *breakerEntry, most recent first
}

type breakerEntry struct {
	key string
	b   *breaker
}

func newBreakerSet(p *breakerPolicy, size int, notify func(instance string, from, to State)) *breakerSet {
	if size <= 0 {
		size = defaultBreakerCacheSize
	}
	return &breakerSet{p: p, size: size, notify: notify, m: map[string]*list.Element{}}
}

// get returns the breaker of an instance, creating it closed.
func (s *breakerSet) get(key string, now time.Time) *breaker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		s.lru.MoveToFront(e)
		return e.Value.(*breakerEntry).b
	}
	var notify func(from, to State)
	if s.notify != nil {
		n := s.notify
		notify = func(from, to State) { n(key, from, to) }
	}
	b := newBreaker(s.p, now, notify)
	s.m[key] = s.lru.PushFront(&breakerEntry{key: key, b: b})
	for s.lru.Len() > s.size {
		last := s.lru.Back()
		s.lru.Remove(last)
		delete(s.m, last.Value.(*breakerEntry).key)
	}
	return b
}

// peek returns the breaker of an instance without creating one.
func (s *breakerSet) peek(key string) *breaker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		return e.Value.(*breakerEntry).b
	}
	return nil
}
