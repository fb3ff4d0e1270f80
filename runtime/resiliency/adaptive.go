package resiliency

import (
	"math"
	"sync"
	"time"
)

// adaptiveLimiter is a gradient concurrency limit (Netflix
// concurrency-limits' Gradient, Envoy's adaptive concurrency). It is a
// state machine fed RTT samples with their time:
//
//   - samples are averaged over a sample window (sampleRTT);
//   - minRTT is the smallest window average over the current and the
//     previous minRTTWindow (a two-bucket windowed minimum, so a
//     permanent change in the target's speed is learnt within two
//     epochs);
//   - at the end of a window, gradient = clamp(tolerance × minRTT /
//     sampleRTT, 0.5, 1) and the new estimate is limit × gradient + √limit
//     (the queue allowance that lets the limit probe upwards), smoothed
//     by smoothing and clamped to [minLimit, maxLimit];
//   - when the window never used half the limit, the limit does not grow
//     (it would be a guess that nothing tested).
type adaptiveLimiter struct {
	p *adaptivePolicy

	// mu guards the fields below.
	mu           sync.Mutex
	limit        float64
	inflight     int
	peak         int // highest inflight in the window
	windowEnd    time.Time
	sum          time.Duration
	n            int
	minCur       time.Duration // 0 = none yet
	minPrev      time.Duration
	epochEnd     time.Time
	lastSample   time.Duration // sampleRTT of the last window, for tests
	lastMinRTT   time.Duration
	lastGradient float64
}

func newAdaptiveLimiter(p *adaptivePolicy) *adaptiveLimiter {
	return &adaptiveLimiter{p: p, limit: float64(p.initialLimit)}
}

// acquire takes a slot under the current limit.
func (a *adaptiveLimiter) acquire() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inflight >= int(a.limit) {
		return false
	}
	a.inflight++
	a.peak = max(a.peak, a.inflight)
	return true
}

func (a *adaptiveLimiter) release() {
	a.mu.Lock()
	a.inflight--
	a.mu.Unlock()
}

// sample feeds one attempt's RTT, measured at now.
func (a *adaptiveLimiter) sample(now time.Time, rtt time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.windowEnd.IsZero() {
		a.windowEnd = now.Add(a.p.window)
	}
	a.sum += rtt
	a.n++
	if !now.Before(a.windowEnd) {
		a.update(now)
	}
}

func (a *adaptiveLimiter) update(now time.Time) {
	mean := a.sum / time.Duration(a.n)
	if a.epochEnd.IsZero() || !now.Before(a.epochEnd) {
		a.minPrev, a.minCur = a.minCur, mean
		a.epochEnd = now.Add(a.p.minRTTWindow)
	} else if mean < a.minCur {
		a.minCur = mean
	}
	minRTT := a.minCur
	if a.minPrev > 0 && a.minPrev < minRTT {
		minRTT = a.minPrev
	}
	gradient := 1.0
	if mean > 0 {
		gradient = math.Max(0.5, math.Min(1, a.p.tolerance*float64(minRTT)/float64(mean)))
	}
	est := a.limit*gradient + math.Sqrt(a.limit)
	if gradient >= 1 && float64(a.peak)*2 < a.limit {
		est = a.limit
	}
	next := (1-a.p.smoothing)*a.limit + a.p.smoothing*est
	a.limit = math.Max(float64(a.p.minLimit), math.Min(float64(a.p.maxLimit), next))
	a.lastSample, a.lastMinRTT, a.lastGradient = mean, minRTT, gradient

	a.sum, a.n = 0, 0
	a.peak = a.inflight
	a.windowEnd = now.Add(a.p.window)
}

// current is the limit now, rounded down as acquire applies it.
func (a *adaptiveLimiter) current() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return int(a.limit)
}
