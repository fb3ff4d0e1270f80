package components

import (
	"sync/atomic"
	"time"
)

// Gate counts the calls in flight on one component instance, so that a
// hot reload can let them finish before it closes the instance. Calls
// that arrive while the instance is being replaced wait for the swap and
// then go to the new instance (Enter reports false and the caller looks
// the component up again).
//
// Enter and Leave are two atomic operations on the request path; the
// reload side pays for the waiting.
type Gate struct {
	n       atomic.Int64
	closing atomic.Bool
	// drained takes a signal when the last call leaves a closing gate.
	drained chan struct{}
	// done is closed when the swap is over: the waiters look again.
	done chan struct{}
}

func newGate() *Gate {
	return &Gate{drained: make(chan struct{}, 1), done: make(chan struct{})}
}

// Enter admits a call, or, when the instance is being replaced, waits
// until the replacement is in the snapshot and reports false: the caller
// must take the component from a fresh snapshot. A nil gate admits
// everything.
func (g *Gate) Enter() bool {
	if g == nil {
		return true
	}
	g.n.Add(1)
	// The Add above and closing's Store in drain are both sequentially
	// consistent: either this call sees closing, or drain sees it counted.
	if !g.closing.Load() {
		return true
	}
	g.Leave()
	<-g.done
	return false
}

// Leave ends a call that Enter admitted.
func (g *Gate) Leave() {
	if g == nil {
		return
	}
	if g.n.Add(-1) == 0 && g.closing.Load() {
		select {
		case g.drained <- struct{}{}:
		default:
		}
	}
}

// InFlight is the number of calls admitted and not yet left.
func (g *Gate) InFlight() int64 {
	if g == nil {
		return 0
	}
	return g.n.Load()
}

// drain stops admitting calls and waits up to timeout for those in
// flight; it reports whether they all finished.
func (g *Gate) drain(timeout time.Duration) bool {
	g.closing.Store(true)
	if g.n.Load() == 0 {
		return true
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for g.n.Load() > 0 {
		select {
		case <-g.drained:
		case <-t.C:
			return g.n.Load() == 0
		}
	}
	return true
}

// release lets the calls that waited in Enter look again; call it once
// the snapshot serves the replacement (or no longer has the component).
func (g *Gate) release() { close(g.done) }

// Source gives the live components: a View, or a Manager (the view of
// its runtime's app).
type Source interface {
	Snapshot() *Snapshot
}
