package resiliency

import (
	"context"
)

// bulkhead caps a target's concurrent calls with a counting semaphore.
// Waiting senders on a Go channel are served in FIFO order, so callers
// that wait get slots in arrival order.
type bulkhead struct {
	p   *bulkheadPolicy
	sem chan struct{}
}

func newBulkhead(p *bulkheadPolicy) *bulkhead {
	return &bulkhead{p: p, sem: make(chan struct{}, p.maxConcurrent)}
}

// acquire takes a slot, waiting up to maxWait; waited tells whether it had
// to wait. It returns ErrBulkheadFull when no slot freed in time, or ctx's
// error if the caller gave up first.
func (b *bulkhead) acquire(ctx context.Context, c Clock) (waited bool, err error) {
	select {
	case b.sem <- struct{}{}:
		return false, nil
	default:
	}
	if b.p.maxWait <= 0 {
		return false, ErrBulkheadFull
	}
	t := c.NewTimer(b.p.maxWait)
	select {
	case b.sem <- struct{}{}:
		t.Stop()
		return true, nil
	case <-t.C():
		// A slot may have freed at the same instant; take it if so.
		select {
		case b.sem <- struct{}{}:
			return true, nil
		default:
			return true, ErrBulkheadFull
		}
	case <-ctx.Done():
		t.Stop()
		return true, ctx.Err()
	}
}

func (b *bulkhead) release() { <-b.sem }

// inFlight is the number of slots taken.
func (b *bulkhead) inFlight() int { return len(b.sem) }
