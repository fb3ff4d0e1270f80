package resiliency

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type ctxKey struct{}

func TestAttemptContextTimesOut(t *testing.T) {
	clock := newManualClock()
	q := newDeadlineQueue(clock)
	parent := context.WithValue(context.Background(), ctxKey{}, "v")
	now := clock.Now()
	a := newAttemptCtx(parent, q, now, now.Add(time.Second))
	if d, ok := a.Deadline(); !ok || !d.Equal(now.Add(time.Second)) {
		t.Fatalf("Deadline = %v %v", d, ok)
	}
	if a.Value(ctxKey{}) != "v" {
		t.Fatal("values of the parent are lost")
	}
	child, cancelChild := context.WithCancel(a)
	defer cancelChild()
	if a.Err() != nil {
		t.Fatalf("Err before the deadline = %v", a.Err())
	}
	clock.Advance(999 * time.Millisecond)
	select {
	case <-a.Done():
		t.Fatal("done before the deadline")
	default:
	}
	clock.Advance(time.Millisecond)
	<-a.Done()
	<-child.Done()
	if a.Err() != context.DeadlineExceeded || !errors.Is(child.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v, child Err = %v; want DeadlineExceeded", a.Err(), child.Err())
	}
	if !a.finish() {
		t.Fatal("finish must report the timeout")
	}
}

func TestAttemptContextFinishAndParent(t *testing.T) {
	clock := newManualClock()
	q := newDeadlineQueue(clock)
	now := clock.Now()

	// Finishing cancels (as a cancel func does) and leaves the queue.
	a := newAttemptCtx(context.Background(), q, now, now.Add(time.Second))
	if a.finish() {
		t.Fatal("finish reported a timeout that did not happen")
	}
	if a.Err() != context.Canceled || q.head != nil {
		t.Fatalf("after finish: Err %v, queue head %p", a.Err(), q.head)
	}
	<-a.Done() // closed

	// The parent's cancellation shows in Err at once, and in Done.
	parent, cancel := context.WithCancel(context.Background())
	b := newAttemptCtx(parent, q, now, now.Add(time.Second))
	done := b.Done()
	cancel()
	<-done
	if b.Err() != context.Canceled {
		t.Fatalf("Err after the parent's cancel = %v", b.Err())
	}
	b.finish()

	// A parent with an earlier deadline wins Deadline.
	early, cancelEarly := context.WithDeadline(context.Background(), now.Add(time.Millisecond))
	defer cancelEarly()
	c := newAttemptCtx(early, q, now, now.Add(time.Hour))
	if d, _ := c.Deadline(); !d.Equal(now.Add(time.Millisecond)) {
		t.Fatalf("Deadline = %v, want the parent's", d)
	}
	c.finish()

	// AfterFunc, registered and stopped.
	d := newAttemptCtx(context.Background(), q, now, now.Add(time.Second))
	ran := make(chan struct{})
	stop := d.AfterFunc(func() { t.Error("stopped AfterFunc ran") })
	if !stop() || stop() {
		t.Fatal("stop must succeed once")
	}
	d.AfterFunc(func() { close(ran) })
	d.finish()
	<-ran
}

func TestDeadlineQueueExpiresOnlyDueAttempts(t *testing.T) {
	clock := newManualClock()
	q := newDeadlineQueue(clock)
	t0 := clock.Now()
	var as []*attemptCtx
	for i := range 5 {
		now := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		as = append(as, newAttemptCtx(context.Background(), q, now, now.Add(time.Second)))
	}
	as[0].finish() // the head finishes early: the timer fires for nothing
	as[2].finish()
	clock.Advance(1250 * time.Millisecond) // deadlines 1.0 (done), 1.1, 1.2 due
	<-as[1].Done()
	clock.WaitTimers(1) // re-armed for as[3]
	if as[3].Err() != nil || as[4].Err() != nil {
		t.Fatal("attempts not yet due were expired")
	}
	if got := clock.NextTimer(); got != 50*time.Millisecond {
		t.Fatalf("timer re-armed in %v, want 50ms (as[3] at 1.3s)", got)
	}
	clock.Advance(50 * time.Millisecond)
	<-as[3].Done()
	for i, a := range as {
		a.finish()
		if want := i == 1 || i == 3; a.timedOut != want {
			t.Errorf("attempt %d timedOut = %v, want %v", i, a.timedOut, want)
		}
	}
	as[4].finish()
	if q.head != nil || q.tail != nil {
		t.Fatal("queue not empty after every attempt finished")
	}
}

// TestDeadlineQueueConcurrent runs attempts with a real short timeout
// from many goroutines (run with -race): some time out, all leave the
// queue.
func TestDeadlineQueueConcurrent(t *testing.T) {
	q := newDeadlineQueue(SystemClock{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				now := time.Now()
				a := newAttemptCtx(context.Background(), q, now, now.Add(time.Millisecond))
				if (i+w)%10 == 0 {
					<-a.Done() // wait it out
					if !errors.Is(a.Err(), context.DeadlineExceeded) {
						t.Errorf("Err = %v", a.Err())
					}
				}
				child, cancel := context.WithCancel(a)
				a.finish()
				<-child.Done()
				cancel()
			}
		}()
	}
	wg.Wait()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head != nil {
		t.Fatal("attempts left in the queue")
	}
}
