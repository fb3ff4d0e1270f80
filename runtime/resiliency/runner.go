package resiliency

import (
	"context"
	"errors"
	"time"
)

// Op is one attempt of a call. It must return once ctx is done: Do does
// not abandon a running op in a goroutine, so an op that ignores ctx
// outlives its timeout.
type Op func(ctx context.Context) error

// Call describes a call beyond its op. The zero Call is a call to the
// target as a whole, retried on any error.
type Call struct {
	// Method keys the bucket of rate limits with per: method (all calls
	// without one share the "" bucket).
	Method string
	// Instance keys the circuit breaker when Pick is nil; "" is the
	// target-wide breaker.
	Instance string
	// Pick, when set, chooses the instance of each attempt (1, 2, ...)
	// before the breaker check, so that a retry can go to another
	// instance: it is where the load balancer plugs in. Its error fails
	// the attempt and is retried like any other; wrap it with Permanent
	// (say, for balance.ErrNoInstance) to end the call. With Pick, an open
	// breaker fails only that attempt; without, it ends the call, as in
	// Dapr.
	Pick func(attempt int) (instance string, err error)
	// Skipped, if set, is called when an attempt's breaker refuses the
	// instance Pick chose, so the caller can release what Pick took (a
	// balancer's in-flight slot).
	Skipped func(instance string, err error)
	// Retriable, if set, decides whether a failed attempt may be retried
	// (use NoRetry for calls that are not idempotent). Errors marked with
	// Permanent are never retried.
	Retriable func(err error) bool
}

// Runner applies one target's policies to calls. Get it from
// Policies.ForApp or ForComponent; it is safe for concurrent use.
type Runner struct {
	target string
	clock  Clock
	rnd    func() float64

	timeout       time.Duration
	deadlines     *deadlineQueue
	retry         *retryPolicy
	breakers      *breakerSet
	breakerPolicy string
	bulkhead      *bulkhead
	limiter       *rateLimiter
	adaptive      *adaptiveLimiter
	drop          *dropper
	// needsTime: some policy reads the clock on every call.
	needsTime bool

	// Refusals are built once, so refusing allocates nothing.
	errTimeout, errBulkhead, errRate, errConcurrency, errDrop *PolicyError
}

// noopRunner serves targets without policies.
var noopRunner = &Runner{clock: SystemClock{}}

// Target names the Runner's target, as its errors do: `app "orders"`.
func (r *Runner) Target() string { return r.target }

// Passthrough reports whether the Runner applies no policy at all.
func (r *Runner) Passthrough() bool {
	return r.timeout == 0 && r.retry == nil && r.breakers == nil && r.bulkhead == nil &&
		r.limiter == nil && r.adaptive == nil && r.drop == nil
}

// Do runs op under the target's policies: Do(ctx, op) is
// DoCall(ctx, Call{}, op).
func (r *Runner) Do(ctx context.Context, op Op) error { return r.DoCall(ctx, Call{}, op) }

// DoCall runs op under the target's policies, from the outside in:
//
//	rate limit → overload drop → bulkhead → adaptive limit → retries,
//	and for each attempt: circuit breaker → timeout → op.
//
// A refusal is a *PolicyError wrapping ErrRateLimited, ErrOverloaded,
// ErrBulkheadFull, ErrConcurrencyLimit or ErrCircuitOpen; an attempt that
// runs out of time is one wrapping ErrTimeout (and matching
// context.DeadlineExceeded). Otherwise the error is the last attempt's,
// as op returned it (unwrapped from Permanent).
func (r *Runner) DoCall(ctx context.Context, c Call, op Op) error {
	// Reading the clock is not free (tens of ns): read it once here and
	// once after the op, and only when a policy needs it.
	var now time.Time
	if r.needsTime {
		now = r.clock.Now()
	}
	if r.limiter != nil && !r.limiter.allow(c.Method, now) {
		return r.errRate
	}
	if r.drop != nil {
		if !r.drop.admit(r.rnd) {
			return r.errDrop
		}
		defer r.drop.done()
	}
	if r.bulkhead != nil {
		waited, err := r.bulkhead.acquire(ctx, r.clock)
		if err != nil {
			if err == ErrBulkheadFull {
				return r.errBulkhead
			}
			return &PolicyError{Target: r.target, Policy: r.errBulkhead.Policy, Detail: "gave up waiting for a slot", Err: err}
		}
		defer r.bulkhead.release()
		if waited && r.needsTime {
			now = r.clock.Now()
		}
	}
	if r.adaptive != nil {
		if !r.adaptive.acquire() {
			return r.errConcurrency
		}
		defer r.adaptive.release()
	}
	return r.retries(ctx, &c, op, now)
}

func (r *Runner) retries(ctx context.Context, c *Call, op Op, start time.Time) error {
	now := start
	for n := 1; ; n++ {
		err := r.attempt(ctx, c, n, op, now)
		if err == nil {
			return nil
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			return perm.err
		}
		if r.retry == nil || ctx.Err() != nil || !r.retriable(c, err) {
			return err
		}
		var elapsed time.Duration
		if r.retry.exponential {
			elapsed = r.clock.Now().Sub(start)
		}
		wait, ok := r.retry.wait(n, elapsed, r.rnd())
		if !ok {
			return err
		}
		if sleep(ctx, r.clock, wait) != nil {
			return err
		}
		if r.needsTime {
			now = r.clock.Now()
		}
	}
}

func (r *Runner) retriable(c *Call, err error) bool {
	if c.Pick == nil && r.breakers != nil {
		var pe *PolicyError
		if errors.As(err, &pe) && pe.Err == ErrCircuitOpen {
			return false
		}
	}
	if c.Retriable != nil && !c.Retriable(err) {
		return false
	}
	return r.retry.matches(err)
}

// attempt runs one attempt, starting at start: pick, breaker, timeout, op.
func (r *Runner) attempt(ctx context.Context, c *Call, n int, op Op, start time.Time) error {
	inst := c.Instance
	if c.Pick != nil {
		var err error
		if inst, err = c.Pick(n); err != nil {
			return err
		}
	}
	var (
		b   *breaker
		gen uint64
	)
	if r.breakers != nil {
		b = r.breakers.get(inst, start)
		var why breakerRefusal
		if gen, why = b.allow(start); why != refusedNone {
			err := &PolicyError{Target: r.target, Policy: r.breakerPolicy, Instance: inst, Err: ErrCircuitOpen, Detail: "open"}
			if why == refusedTrials {
				err.Detail = "half-open, trial calls in use"
			}
			if c.Skipped != nil {
				c.Skipped(inst, err)
			}
			return err
		}
	}
	var err error
	if r.timeout > 0 {
		actx := newAttemptCtx(ctx, r.deadlines, start, start.Add(r.timeout))
		err = op(actx)
		if actx.finish() && err != nil && ctx.Err() == nil {
			err = r.errTimeout
		}
	} else {
		err = op(ctx)
	}
	if b != nil || r.adaptive != nil {
		end := start
		if r.adaptive != nil {
			end = r.clock.Now()
		}
		if b != nil {
			if err != nil && ctx.Err() != nil {
				b.cancel(gen)
			} else {
				b.done(gen, err == nil, end)
			}
		}
		if r.adaptive != nil {
			r.adaptive.sample(end, end.Sub(start))
		}
	}
	return err
}

// BreakerState reports the state of the breaker of instance ("" for the
// target-wide one); StateClosed when there is none yet or no breaker
// policy.
func (r *Runner) BreakerState(instance string) State {
	if r.breakers == nil {
		return StateClosed
	}
	if b := r.breakers.peek(instance); b != nil {
		return b.stateAt(r.clock.Now())
	}
	return StateClosed
}

// ConcurrencyLimit reports the adaptive concurrency limit now, or 0 when
// the target has none.
func (r *Runner) ConcurrencyLimit() int {
	if r.adaptive == nil {
		return 0
	}
	return r.adaptive.current()
}
