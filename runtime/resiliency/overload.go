package resiliency

import "sync/atomic"

// dropper is random early drop over a target's in-flight calls.
type dropper struct {
	p        *dropPolicy
	inflight atomic.Int64
}

func newDropper(p *dropPolicy) *dropper { return &dropper{p: p} }

// dropProbability is the chance of dropping a new call when n calls are
// already in flight: 0 below low, rising linearly to 1 at high.
func (p *dropPolicy) dropProbability(n int64) float64 {
	switch {
	case n < int64(p.low):
		return 0
	case n >= int64(p.high):
		return 1
	}
	return float64(n-int64(p.low)) / float64(p.high-p.low)
}

// admit counts the call in unless it is dropped; rnd is uniform in [0, 1).
// An admitted call must be followed by done.
func (d *dropper) admit(rnd func() float64) bool {
	n := d.inflight.Add(1) - 1
	if p := d.p.dropProbability(n); p > 0 && (p >= 1 || rnd() < p) {
		d.inflight.Add(-1)
		return false
	}
	return true
}

func (d *dropper) done() { d.inflight.Add(-1) }
