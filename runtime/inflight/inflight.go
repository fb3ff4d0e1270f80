// Package inflight counts work under way (deliveries to the app) so that a
// graceful shutdown can refuse new work and wait for the rest. A
// sync.WaitGroup does not fit: components keep calling handlers while they
// unsubscribe, and WaitGroup forbids Add concurrent with Wait.
package inflight

import (
	"context"
	"sync"
)

// Tracker counts work under way. The zero value is ready to use.
type Tracker struct {
	// mu guards the fields below.
	mu      sync.Mutex
	n       int
	closing bool
	idle    chan struct{} // closed when n reaches 0 while closing
}

// Enter records the start of one unit of work. It returns false once Close
// has been called: the caller must not start the work.
func (t *Tracker) Enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.n++
	return true
}

// Leave records the end of work started by a successful Enter.
func (t *Tracker) Leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.closing && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// Close refuses new work and waits until the work under way ends or ctx
// does. It reports whether everything finished.
func (t *Tracker) Close(ctx context.Context) bool {
	t.mu.Lock()
	t.closing = true
	if t.n == 0 {
		t.mu.Unlock()
		return true
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return true
	case <-ctx.Done():
		return false
	}
}
