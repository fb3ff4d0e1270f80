package resiliency

import (
	"context"
	"sync"
	"time"
)

// deadlineQueue enforces the timeouts of one Runner's attempts with a
// single timer. context.WithTimeout arms a runtime timer per attempt (and
// allocates several objects), which costs more than every other policy
// together; here an attempt costs one allocation and two short critical
// sections. It works because a Runner's timeout is constant: attempts
// enter in deadline order, so the queue is a FIFO (an intrusive doubly
// linked list, so a finished attempt leaves in O(1)) and the timer only
// ever needs to fire for the head.
//
// The timer is armed for the head's deadline; when it fires it expires
// every due attempt and re-arms for the new head. Attempts that finish
// early just unlink themselves, so under steady traffic the timer fires
// about once per timeout period.
type deadlineQueue struct {
	clock Clock

	// mu guards the list, the attempts' links and queued flags, and timer.
	mu         sync.Mutex
	head, tail *attemptCtx
	timer      Timer // nil when not armed
}

func newDeadlineQueue(c Clock) *deadlineQueue { return &deadlineQueue{clock: c} }

func (q *deadlineQueue) push(a *attemptCtx, now time.Time) {
	q.mu.Lock()
	a.prev, a.queued = q.tail, true
	if q.tail != nil {
		q.tail.next = a
	} else {
		q.head = a
	}
	q.tail = a
	if q.timer == nil {
		q.timer = q.clock.AfterFunc(a.deadline.Sub(now), q.fire)
	}
	q.mu.Unlock()
}

func (q *deadlineQueue) unlinkLocked(a *attemptCtx) {
	if a.prev != nil {
		a.prev.next = a.next
	} else {
		q.head = a.next
	}
	if a.next != nil {
		a.next.prev = a.prev
	} else {
		q.tail = a.prev
	}
	a.prev, a.next, a.queued = nil, nil, false
}

func (q *deadlineQueue) remove(a *attemptCtx) {
	q.mu.Lock()
	if a.queued {
		q.unlinkLocked(a)
	}
	q.mu.Unlock()
}

// fire expires the due attempts and re-arms for the next one.
func (q *deadlineQueue) fire() {
	now := q.clock.Now()
	var due *attemptCtx // chained through nextDue
	q.mu.Lock()
	for a := q.head; a != nil && !a.deadline.After(now); a = q.head {
		q.unlinkLocked(a)
		a.nextDue, due = due, a
	}
	q.timer = nil
	if q.head != nil {
		q.timer = q.clock.AfterFunc(q.head.deadline.Sub(now), q.fire)
	}
	q.mu.Unlock()
	for a := due; a != nil; {
		next := a.nextDue
		a.nextDue = nil
		a.cancel(context.DeadlineExceeded, true)
		a = next
	}
}

// closedChan is the Done of attempts cancelled before anyone asked.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// attemptCtx is the context of one attempt under a timeout: the parent's
// values and cancellation, plus a deadline the Runner's deadlineQueue
// enforces. Like the standard library's contexts, its Done channel is
// made on first use; the parent's cancellation is also watched only from
// then on (Err consults the parent directly), so an op that never waits
// on Done costs nothing more. It implements the AfterFunc method, so
// contexts derived from it do not need a goroutine each.
//
// One difference from context.WithTimeout: context.Cause of an attempt
// that timed out returns context.DeadlineExceeded, not ErrTimeout; Do
// reports the timeout itself.
type attemptCtx struct {
	parent   context.Context
	deadline time.Time
	q        *deadlineQueue

	// Guarded by q.mu.
	prev, next *attemptCtx
	queued     bool
	nextDue    *attemptCtx

	// mu guards the fields below.
	mu         sync.Mutex
	done       chan struct{}
	err        error
	timedOut   bool
	afters     []*afterEntry
	stopParent func() bool
}

type afterEntry struct{ f func() }

func newAttemptCtx(parent context.Context, q *deadlineQueue, now, deadline time.Time) *attemptCtx {
	a := &attemptCtx{parent: parent, deadline: deadline, q: q}
	q.push(a, now)
	return a
}

// Deadline is the earlier of the parent's and the attempt's.
func (a *attemptCtx) Deadline() (time.Time, bool) {
	if d, ok := a.parent.Deadline(); ok && d.Before(a.deadline) {
		return d, true
	}
	return a.deadline, true
}

// Done is closed when the attempt times out, finishes, or its parent is
// cancelled.
func (a *attemptCtx) Done() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == nil {
		if a.err != nil {
			a.done = closedChan
		} else {
			a.done = make(chan struct{})
			a.watchParentLocked()
		}
	}
	return a.done
}

// Err is context.DeadlineExceeded after a timeout, the parent's error
// after it was cancelled, context.Canceled once the attempt finished.
func (a *attemptCtx) Err() error {
	a.mu.Lock()
	err := a.err
	a.mu.Unlock()
	if err != nil {
		return err
	}
	return a.parent.Err()
}

// Value returns the parent's values.
func (a *attemptCtx) Value(key any) any { return a.parent.Value(key) }

// AfterFunc runs f in its own goroutine once the attempt is done; stop
// unregisters it. context.WithCancel and friends use it for children.
func (a *attemptCtx) AfterFunc(f func()) (stop func() bool) {
	a.mu.Lock()
	if a.err != nil {
		a.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	e := &afterEntry{f: f}
	a.afters = append(a.afters, e)
	a.watchParentLocked()
	a.mu.Unlock()
	return func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		for i, x := range a.afters {
			if x == e {
				a.afters = append(a.afters[:i], a.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

// watchParentLocked forwards the parent's cancellation, once someone
// waits on the attempt. a.mu is held.
func (a *attemptCtx) watchParentLocked() {
	if a.stopParent != nil || a.parent.Done() == nil {
		return
	}
	p := a.parent
	a.stopParent = context.AfterFunc(p, func() { a.cancel(p.Err(), false) })
}

func (a *attemptCtx) cancel(err error, timedOut bool) {
	a.mu.Lock()
	if a.err != nil {
		a.mu.Unlock()
		return
	}
	a.err, a.timedOut = err, timedOut
	if a.done == nil {
		a.done = closedChan
	} else {
		close(a.done)
	}
	afters, stop := a.afters, a.stopParent
	a.afters, a.stopParent = nil, nil
	a.mu.Unlock()
	if stop != nil {
		stop()
	}
	for _, e := range afters {
		go e.f()
	}
}

// finish ends the attempt (cancelling it, as a context's cancel func
// does) and reports whether it had timed out.
func (a *attemptCtx) finish() (timedOut bool) {
	a.q.remove(a)
	a.cancel(context.Canceled, false)
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.timedOut
}
