package balance

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// ErrInvalidConfig is wrapped by WeightedConfig validation errors.
var ErrInvalidConfig = errors.New("invalid balancer config")

// WeightedConfig tunes the Weighted balancer. The zero value takes every
// default.
type WeightedConfig struct {
	// DecayTime is the time constant of the decaying averages: a sample's
	// weight falls by e every DecayTime (default 10s). Shorter reacts
	// faster and forgets faster.
	DecayTime time.Duration
	// LatencyFloor is the least latency an instance is credited with, so
	// that sub-millisecond noise does not decide shares (default 1ms).
	LatencyFloor time.Duration
	// ErrorExponent sharpens the penalty for errors: the weight is
	// proportional to successRate^ErrorExponent (default 4: a 10% error
	// rate costs a third of the share).
	ErrorExponent float64
	// MinShare is the floor: every live instance weighs at least
	// MinShare × the mean weight (default 0.05), so a slow but healthy
	// instance keeps some traffic and its statistics keep updating.
	MinShare float64
	// RecomputeInterval is how often shares are recomputed from the
	// statistics (default 100ms). Ejections apply at once.
	RecomputeInterval time.Duration
	// EjectConsecutiveFailures ejects an instance after this many failed
	// calls in a row (default 5; negative disables).
	EjectConsecutiveFailures int
	// EjectErrorRate ejects an instance whose decayed error rate exceeds
	// it, once EjectMinSamples (decayed) calls back it (default 0.5; 1
	// disables).
	EjectErrorRate  float64
	EjectMinSamples float64 // default 10
	// MaxEjectedFraction caps the instances ejected at once (default 0.5,
	// rounded down: a lone instance is never ejected).
	MaxEjectedFraction float64
	// ProbeInterval is how long after ejection an instance is due its
	// first probe (default 5s); each failed probe doubles the wait, up to
	// MaxProbeInterval (default 2m).
	ProbeInterval    time.Duration
	MaxProbeInterval time.Duration
}

func (c *WeightedConfig) withDefaults() WeightedConfig {
	o := *c
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	deff := func(f *float64, v float64) {
		if *f == 0 {
			*f = v
		}
	}
	def(&o.DecayTime, 10*time.Second)
	def(&o.LatencyFloor, time.Millisecond)
	def(&o.RecomputeInterval, 100*time.Millisecond)
	def(&o.ProbeInterval, 5*time.Second)
	def(&o.MaxProbeInterval, 2*time.Minute)
	deff(&o.ErrorExponent, 4)
	deff(&o.MinShare, 0.05)
	deff(&o.EjectErrorRate, 0.5)
	deff(&o.EjectMinSamples, 10)
	deff(&o.MaxEjectedFraction, 0.5)
	if o.EjectConsecutiveFailures == 0 {
		o.EjectConsecutiveFailures = 5
	}
	return o
}

// validate names the first bad field (after defaults).
func (c *WeightedConfig) validate() error {
	bad := func(field string, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.DecayTime <= 0:
		return bad("DecayTime", "must be > 0, got %s", c.DecayTime)
	case c.LatencyFloor <= 0:
		return bad("LatencyFloor", "must be > 0, got %s", c.LatencyFloor)
	case c.RecomputeInterval <= 0:
		return bad("RecomputeInterval", "must be > 0, got %s", c.RecomputeInterval)
	case c.ProbeInterval <= 0:
		return bad("ProbeInterval", "must be > 0, got %s", c.ProbeInterval)
	case c.MaxProbeInterval < c.ProbeInterval:
		return bad("MaxProbeInterval", "must be ≥ ProbeInterval (%s), got %s", c.ProbeInterval, c.MaxProbeInterval)
	case !(c.ErrorExponent > 0) || math.IsInf(c.ErrorExponent, 0):
		return bad("ErrorExponent", "must be > 0, got %g", c.ErrorExponent)
	case !(c.MinShare > 0 && c.MinShare <= 1):
		return bad("MinShare", "must be within (0, 1], got %g", c.MinShare)
	case !(c.EjectErrorRate > 0 && c.EjectErrorRate <= 1):
		return bad("EjectErrorRate", "must be within (0, 1], got %g", c.EjectErrorRate)
	case !(c.EjectMinSamples > 0):
		return bad("EjectMinSamples", "must be > 0, got %g", c.EjectMinSamples)
	case !(c.MaxEjectedFraction > 0 && c.MaxEjectedFraction < 1):
		return bad("MaxEjectedFraction", "must be within (0, 1), got %g", c.MaxEjectedFraction)
	}
	return nil
}

// clockStride: Done reads the clock once per this many calls to an
// instance, to see whether the shares are due a recompute. Reading the
// clock on every call would cost more than the rest of Pick and Done.
const clockStride = 16

// Weighted shares traffic by recent health, as Tencent MSEC routes: each
// instance's weight is
//
//	Weight × successRate^ErrorExponent / max(latency, LatencyFloor)
//
// over time-decayed averages of its calls (latency of successful calls
// only, so failing fast does not look fast), floored at MinShare × the
// mean weight. An instance that fails EjectConsecutiveFailures times in a
// row, or whose error rate passes EjectErrorRate, is ejected: it gets no
// traffic until a probe passes (DueProbes lists the instances due one;
// the caller probes them and calls ReportProbe).
//
// Done only adds to an instance's counters (atomics, no lock, no clock
// read but one call in clockStride). Every RecomputeInterval the counters
// are folded into the decayed averages, e^(-Δt/DecayTime) per fold, and a
// new immutable table is published; Pick reads that table: a random draw
// and a binary search.
type Weighted struct {
	cfg   WeightedConfig
	clock Clock
	rnd   Source

	table atomic.Pointer[wTable]
	// lastBuild is the clock time (UnixNano) of the last table build.
	lastBuild atomic.Int64

	// mu guards members, every wStats field that is not atomic, and the
	// ejection decisions; it serializes table builds.
	mu      sync.Mutex
	members []wEntry
}

type wEntry struct {
	inst Instance
	st   *wStats
}

// wTable is what Pick reads; it is rebuilt, never changed.
type wTable struct {
	all    []wEntry // every member, for when all are ejected
	live   []wEntry
	cum    []float64 // cumulative weights of live
	shares map[string]float64
}

// wStats are one instance's statistics.
type wStats struct {
	b *Weighted
	// done is built once so Pick returns it without allocating.
	done Done

	// Written by Done, folded and reset by buildLocked.
	calls, fails, latSum atomic.Int64
	consec               atomic.Int64
	ejected              atomic.Bool // written under b.mu

	// Guarded by b.mu.
	cnt, succ    float64 // decayed counts of calls and of successes
	latW, latCnt float64 // decayed sum (ns) and count of successful latencies
	lastFold     time.Time
	probeFails   int
	nextProbe    time.Time
}

func (b *Weighted) newStats() *wStats {
	s := &wStats{b: b}
	s.done = s.finish
	return s
}

// NewWeighted returns an empty Weighted balancer. clock and rnd default
// to the system clock and math/rand/v2's generator.
func NewWeighted(cfg WeightedConfig, clock Clock, rnd Source) (*Weighted, error) {
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	if clock == nil {
		clock = systemClock{}
	}
	if rnd == nil {
		rnd = runtimeSource{}
	}
	b := &Weighted{cfg: c, clock: clock, rnd: rnd}
	b.table.Store(&wTable{})
	return b, nil
}

// Pick implements Balancer; key is ignored.
func (b *Weighted) Pick(string) (Instance, Done, error) {
	t := b.table.Load()
	if len(t.live) == 0 {
		if len(t.all) == 0 {
			return Instance{}, nil, ErrNoInstance
		}
		// Everything is ejected (only possible by removals): better a
		// doubtful instance than none.
		e := t.all[b.rnd.Uint64()%uint64(len(t.all))]
		return e.inst, e.st.done, nil
	}
	u := uniform(b.rnd) * t.cum[len(t.cum)-1]
	lo, hi := 0, len(t.cum)-1
	for lo < hi {
		m := (lo + hi) / 2
		if t.cum[m] > u {
			hi = m
		} else {
			lo = m + 1
		}
	}
	e := t.live[lo]
	return e.inst, e.st.done, nil
}

// finish is an instance's Done.
func (s *wStats) finish(err error, latency time.Duration) {
	n := s.calls.Add(1)
	if err == nil {
		s.latSum.Add(int64(latency))
		if s.consec.Load() != 0 {
			s.consec.Store(0)
		}
	} else {
		s.fails.Add(1)
		c := s.consec.Add(1)
		if k := s.b.cfg.EjectConsecutiveFailures; k > 0 && c >= int64(k) && !s.ejected.Load() {
			s.b.eject(s)
			return
		}
	}
	if n%clockStride == 0 {
		s.b.maybeBuild()
	}
}

// maybeBuild rebuilds the table if RecomputeInterval has passed and no
// one else is at it.
func (b *Weighted) maybeBuild() {
	now := b.clock.Now()
	if now.UnixNano()-b.lastBuild.Load() < int64(b.cfg.RecomputeInterval) || !b.mu.TryLock() {
		return
	}
	b.buildLocked(now)
	b.mu.Unlock()
}

// fold moves the counters into the decayed averages. b.mu is held.
func (s *wStats) fold(now time.Time, tau time.Duration) {
	if !s.lastFold.IsZero() {
		if dt := now.Sub(s.lastFold); dt > 0 {
			f := math.Exp(-float64(dt) / float64(tau))
			s.cnt *= f
			s.succ *= f
			s.latW *= f
			s.latCnt *= f
		}
	}
	if now.After(s.lastFold) {
		s.lastFold = now
	}
	// Done adds calls before fails and latency, so a fold racing a Done
	// can see a failure without its call: clamp.
	fails, lat, calls := s.fails.Swap(0), s.latSum.Swap(0), s.calls.Swap(0)
	fails = min(fails, calls)
	s.cnt += float64(calls)
	s.succ += float64(calls - fails)
	s.latW += float64(lat)
	s.latCnt += float64(calls - fails)
}

func (s *wStats) reset(now time.Time) {
	s.calls.Store(0)
	s.fails.Store(0)
	s.latSum.Store(0)
	s.consec.Store(0)
	s.cnt, s.succ, s.latW, s.latCnt, s.probeFails = 0, 0, 0, 0, 0
	s.lastFold = now
}

// eject takes s out of the rotation if the cap allows.
func (b *Weighted) eject(s *wStats) {
	now := b.clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ejectLocked(s, now) {
		b.buildLocked(now)
	}
}

// ejectLocked ejects s unless it is not a member, is already out, or the
// cap forbids; it reports whether it did. b.mu is held.
func (b *Weighted) ejectLocked(s *wStats, now time.Time) bool {
	if s.ejected.Load() {
		return false
	}
	member, ejected := false, 0
	for _, m := range b.members {
		if m.st == s {
			member = true
		}
		if m.st.ejected.Load() {
			ejected++
		}
	}
	if !member || ejected+1 > int(b.cfg.MaxEjectedFraction*float64(len(b.members))) {
		return false
	}
	s.ejected.Store(true)
	s.probeFails = 0
	s.nextProbe = now.Add(b.cfg.ProbeInterval)
	return true
}

// DueProbes appends to dst the ejected instances due a probe and returns
// it. Each is listed once per probe interval: report the outcome with
// ReportProbe; without a report it is listed again an interval later.
// Calling it periodically also keeps the shares current when traffic is
// light.
func (b *Weighted) DueProbes(dst []Instance) []Instance {
	now := b.clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.UnixNano()-b.lastBuild.Load() >= int64(b.cfg.RecomputeInterval) {
		b.buildLocked(now)
	}
	for _, m := range b.members {
		s := m.st
		if s.ejected.Load() && !now.Before(s.nextProbe) {
			dst = append(dst, m.inst)
			s.nextProbe = now.Add(b.probeWait(s.probeFails))
		}
	}
	return dst
}

func (b *Weighted) probeWait(fails int) time.Duration {
	d := b.cfg.ProbeInterval
	for i := 0; i < fails && d < b.cfg.MaxProbeInterval; i++ {
		d *= 2
	}
	return min(d, b.cfg.MaxProbeInterval)
}

// ReportProbe records a probe of an ejected instance. A passing probe
// puts it back with fresh statistics; a failing one doubles the wait for
// the next (up to MaxProbeInterval). Unknown or live instances are
// ignored.
func (b *Weighted) ReportProbe(id string, ok bool) {
	now := b.clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.members {
		s := m.st
		if m.inst.ID != id || !s.ejected.Load() {
			continue
		}
		if !ok {
			s.probeFails++
			s.nextProbe = now.Add(b.probeWait(s.probeFails))
			return
		}
		s.reset(now)
		s.ejected.Store(false)
		b.buildLocked(now)
		return
	}
}

// Update implements Balancer. Statistics and ejections follow the
// instances that stay.
func (b *Weighted) Update(instances []Instance) {
	now := b.clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	prev := make(map[string]*wStats, len(b.members))
	for _, m := range b.members {
		prev[m.inst.ID] = m.st
	}
	insts := normalize(instances)
	b.members = make([]wEntry, len(insts))
	for i, in := range insts {
		st, ok := prev[in.ID]
		if !ok {
			st = b.newStats()
			st.lastFold = now
		}
		b.members[i] = wEntry{inst: in, st: st}
	}
	b.buildLocked(now)
}

// buildLocked folds the counters, ejects instances whose error rate is
// over the threshold, recomputes the weights and publishes a new table.
// b.mu is held.
func (b *Weighted) buildLocked(now time.Time) {
	b.lastBuild.Store(now.UnixNano())
	c := &b.cfg
	for _, m := range b.members {
		s := m.st
		s.fold(now, c.DecayTime)
		if c.EjectErrorRate < 1 && s.cnt >= c.EjectMinSamples && 1-s.succ/s.cnt > c.EjectErrorRate {
			b.ejectLocked(s, now)
		}
	}
	type view struct {
		e        wEntry
		success  float64
		latency  float64 // ns; 0 = unknown
		weighted float64
	}
	views := make([]view, 0, len(b.members))
	var latSum float64
	var latN int
	for _, m := range b.members {
		s := m.st
		if s.ejected.Load() {
			continue
		}
		// One success of prior: an instance without calls is neutral,
		// and a handful of calls cannot swing it to an extreme.
		v := view{e: m, success: (s.succ + 1) / (s.cnt + 1)}
		if s.latCnt > 1e-9 {
			v.latency = s.latW / s.latCnt
			latSum += v.latency
			latN++
		}
		views = append(views, v)
	}
	floor := float64(c.LatencyFloor)
	meanLat := floor
	if latN > 0 {
		meanLat = math.Max(floor, latSum/float64(latN))
	}
	t := &wTable{all: b.members, shares: make(map[string]float64, len(views))}
	var total float64
	for i := range views {
		v := &views[i]
		lat := v.latency
		if lat == 0 {
			lat = meanLat // no successful call yet: assume the average
		}
		v.weighted = float64(v.e.inst.weight()) * math.Pow(v.success, c.ErrorExponent) / math.Max(lat, floor)
		total += v.weighted
	}
	if len(views) > 0 {
		least := c.MinShare * total / float64(len(views))
		sum := 0.0
		for i := range views {
			sum += math.Max(views[i].weighted, least)
			t.cum = append(t.cum, sum)
			t.live = append(t.live, views[i].e)
		}
		prev := 0.0
		for i := range views {
			t.shares[views[i].e.inst.ID] = (t.cum[i] - prev) / sum
			prev = t.cum[i]
		}
	}
	b.table.Store(t)
}

// InstanceStats describes one instance as the Weighted balancer sees it.
type InstanceStats struct {
	Instance Instance
	// Share is the fraction of picks it gets now (0 when ejected).
	Share float64
	// SuccessRate and Latency are the decayed averages (Latency over
	// successful calls; 0 when none).
	SuccessRate float64
	Latency     time.Duration
	Ejected     bool
}

// Stats reports every instance's share and averages, for metrics and the
// console. Calls since the last recompute are not in the averages yet.
func (b *Weighted) Stats() []InstanceStats {
	t := b.table.Load()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]InstanceStats, 0, len(b.members))
	for _, m := range b.members {
		s := m.st
		is := InstanceStats{Instance: m.inst, Share: t.shares[m.inst.ID], Ejected: s.ejected.Load(), SuccessRate: 1}
		if s.cnt > 1e-9 {
			is.SuccessRate = s.succ / s.cnt
		}
		if s.latCnt > 1e-9 {
			is.Latency = time.Duration(s.latW / s.latCnt)
		}
		out = append(out, is)
	}
	return out
}
