package resiliency

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// maxMethodBuckets bounds the per-method buckets of one target; methods
// beyond it share one overflow bucket, so a client inventing method
// names cannot grow memory without bound.
const maxMethodBuckets = 4096

// rateLimiter is a token bucket per target, or per method. Time is passed
// in (AllowN), so the buckets follow the injected clock.
type rateLimiter struct {
	p *rateLimitPolicy
	// one is the target's bucket, and the overflow bucket per method.
	one *rate.Limiter

	// methods maps a method to its *rate.Limiter; read without locks on
	// the hot path.
	methods sync.Map
	n       atomic.Int32
}

func newRateLimiter(p *rateLimitPolicy) *rateLimiter {
	return &rateLimiter{p: p, one: rate.NewLimiter(rate.Limit(p.rate), p.burst)}
}

// allow takes a token for method at now.
func (l *rateLimiter) allow(method string, now time.Time) bool {
	if !l.p.perMethod {
		return l.one.AllowN(now, 1)
	}
	if v, ok := l.methods.Load(method); ok {
		return v.(*rate.Limiter).AllowN(now, 1)
	}
	if l.n.Load() >= maxMethodBuckets {
		return l.one.AllowN(now, 1)
	}
	v, loaded := l.methods.LoadOrStore(method, rate.NewLimiter(rate.Limit(l.p.rate), l.p.burst))
	if !loaded {
		l.n.Add(1)
	}
	return v.(*rate.Limiter).AllowN(now, 1)
}
