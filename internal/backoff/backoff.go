// Package backoff is mecha's one exponential backoff with jitter, for
// every loop that waits before trying again (redeliveries, reconnects,
// rejoins, sink retries). Jitter spreads the retries of many clients
// that failed together, so that they do not come back together.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is how waits grow: Initial, times Multiplier after each wait, up
// to Max, each spread by ±Jitter of itself.
type Policy struct {
	Initial time.Duration
	Max     time.Duration
	// Multiplier is 2 when zero.
	Multiplier float64
	// Jitter is the fraction (0 to 1) by which a wait may differ from
	// the schedule either way; 0.2 when zero, none when negative.
	Jitter float64
}

// Backoff is one sequence of waits; it is not safe for concurrent use.
type Backoff struct {
	p    Policy
	next time.Duration
	rnd  func() float64
}

// New starts a sequence at p.Initial.
func (p Policy) New() *Backoff {
	if p.Multiplier == 0 {
		p.Multiplier = 2
	}
	if p.Jitter == 0 {
		p.Jitter = 0.2
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	return &Backoff{p: p, next: p.Initial, rnd: rand.Float64}
}

// Next returns the next wait and moves the schedule on.
func (b *Backoff) Next() time.Duration {
	d := b.next
	b.next = min(time.Duration(float64(b.next)*b.p.Multiplier), b.p.Max)
	if b.p.Jitter > 0 {
		d += time.Duration((2*b.rnd() - 1) * b.p.Jitter * float64(d))
	}
	return max(d, 0)
}

// Reset starts the schedule again at Initial, after a success.
func (b *Backoff) Reset() { b.next = b.p.Initial }

// Wait sleeps for the next wait, or until ctx ends (it then returns
// ctx's error).
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitChan sleeps for the next wait, or until one of done is closed (it
// then returns false).
func (b *Backoff) WaitChan(done ...<-chan struct{}) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	var d1, d2 <-chan struct{}
	if len(done) > 0 {
		d1 = done[0]
	}
	if len(done) > 1 {
		d2 = done[1]
	}
	select {
	case <-t.C:
		return true
	case <-d1:
		return false
	case <-d2:
		return false
	}
}
