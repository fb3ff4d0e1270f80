package resiliency

import (
	"sort"
	"sync"
	"testing"
	"time"
)

// manualClock is a Clock that moves only when the test advances it.
// Goroutines blocked on its timers are counted, so a test waits for them
// to be parked (WaitTimers) instead of sleeping.
type manualClock struct {
	mu     sync.Mutex
	cond   *sync.Cond
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	c       *manualClock
	at      time.Time
	ch      chan time.Time
	fn      func()
	stopped bool
	fired   bool
}

func newManualClock() *manualClock {
	c := &manualClock{now: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) NewTimer(d time.Duration) Timer { return c.add(d, nil) }

func (c *manualClock) add(d time.Duration, fn func()) *manualTimer {
	c.mu.Lock()
	t := &manualTimer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1), fn: fn}
	if d <= 0 {
		t.fired = true
		now := c.now
		c.mu.Unlock()
		t.fire(now)
		return t
	}
	c.timers = append(c.timers, t)
	c.cond.Broadcast()
	c.mu.Unlock()
	return t
}

func (t *manualTimer) fire(now time.Time) {
	if t.fn != nil {
		go t.fn() // as time.AfterFunc: in its own goroutine
		return
	}
	t.ch <- now
}

func (t *manualTimer) C() <-chan time.Time { return t.ch }

func (t *manualTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.fired || t.stopped {
		return false
	}
	t.stopped = true
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			break
		}
	}
	c.cond.Broadcast()
	return true
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) Timer { return c.add(d, f) }

// Advance moves the clock and fires the timers that fall due, in order.
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	var due, keep []*manualTimer
	for _, t := range c.timers {
		if !t.at.After(now) {
			t.fired = true
			due = append(due, t)
		} else {
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.cond.Broadcast()
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.fire(now)
	}
}

// WaitTimers blocks until at least n timers are pending.
func (c *manualClock) WaitTimers(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) < n {
		c.cond.Wait()
	}
}

// NextTimer is the duration until the earliest pending timer.
func (c *manualClock) NextTimer() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var d time.Duration = -1
	for _, t := range c.timers {
		if x := t.at.Sub(c.now); d < 0 || x < d {
			d = x
		}
	}
	return d
}

func TestManualClock(t *testing.T) {
	c := newManualClock()
	t1 := c.NewTimer(time.Second)
	t2 := c.NewTimer(2 * time.Second)
	if got := c.NextTimer(); got != time.Second {
		t.Fatalf("NextTimer = %v, want 1s", got)
	}
	c.Advance(time.Second)
	select {
	case <-t1.C():
	default:
		t.Fatal("1s timer did not fire after 1s")
	}
	if !t2.Stop() || t2.Stop() {
		t.Fatal("Stop of a pending timer must report true once")
	}
	fired := make(chan struct{})
	c.AfterFunc(time.Second, func() { close(fired) })
	c.Advance(time.Second)
	<-fired
}
