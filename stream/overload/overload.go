// Package overload is the stream engine's overload protection, as the
// seed ran it at the sources: every task reports its health; when a
// threshold is crossed the controller halves the source rate, and while
// the job stays healthy it raises the rate by 10% per interval until the
// limit is released. It is a plain state machine fed health samples.
package overload

import "fmt"

// Health is one task's report for an interval.
type Health struct {
	// Backlog is the records waiting at the source (lag, summed over
	// partitions).
	Backlog int64
	// LagMs is how far event processing trails the wall clock (the
	// watermark delay).
	LagMs int64
	// CPU is the process's CPU use over the interval, in cores.
	CPU float64
	// GCPauseMs is the garbage collector's longest pause in the interval.
	GCPauseMs float64
	// InputRate is the records per second read in the interval.
	InputRate float64
}

// Thresholds mark a task overloaded; a zero field is not checked.
type Thresholds struct {
	MaxBacklog   int64   `json:"maxBacklog,omitempty"`
	MaxLagMs     int64   `json:"maxLagMs,omitempty"`
	MaxCPU       float64 `json:"maxCPU,omitempty"`
	MaxGCPauseMs float64 `json:"maxGCPauseMs,omitempty"`
}

// Validate names a negative threshold.
func (t Thresholds) Validate() error {
	if t.MaxBacklog < 0 || t.MaxLagMs < 0 || t.MaxCPU < 0 || t.MaxGCPauseMs < 0 {
		return fmt.Errorf("overload thresholds must not be negative: %+v", t)
	}
	return nil
}

// Breach says which threshold h crosses, or "" when none.
func (t Thresholds) Breach(h Health) string {
	switch {
	case t.MaxBacklog > 0 && h.Backlog > t.MaxBacklog:
		return fmt.Sprintf("backlog %d > %d", h.Backlog, t.MaxBacklog)
	case t.MaxLagMs > 0 && h.LagMs > t.MaxLagMs:
		return fmt.Sprintf("lag %dms > %dms", h.LagMs, t.MaxLagMs)
	case t.MaxCPU > 0 && h.CPU > t.MaxCPU:
		return fmt.Sprintf("cpu %.2f > %.2f", h.CPU, t.MaxCPU)
	case t.MaxGCPauseMs > 0 && h.GCPauseMs > t.MaxGCPauseMs:
		return fmt.Sprintf("gc pause %.1fms > %.1fms", h.GCPauseMs, t.MaxGCPauseMs)
	}
	return ""
}

// minRate is the lowest rate the controller sets: a job never stops.
const minRate = 1

// Controller adapts a source rate limit to the job's health.
type Controller struct {
	Thresholds Thresholds
	// Static is the operator's own limit (0 = none): the controller never
	// goes above it.
	Static float64
	// rate is the controller's limit; 0 means it imposes none.
	rate float64
	// ceiling is where recovery releases the limit: the input rate seen
	// when the job first overloaded.
	ceiling float64
}

// Rate is the limit the source should apply now (0 = none).
func (c *Controller) Rate() float64 {
	switch {
	case c.rate == 0:
		return c.Static
	case c.Static > 0:
		return min(c.rate, c.Static)
	}
	return c.rate
}

// Observe feeds one interval's health and returns the new limit and, when
// it changed, why.
func (c *Controller) Observe(h Health) (rate float64, reason string) {
	before := c.Rate()
	if b := c.Thresholds.Breach(h); b != "" {
		cur := c.Rate()
		if cur == 0 {
			cur = h.InputRate
		}
		if cur <= 0 {
			cur = 2 * minRate
		}
		if c.rate == 0 {
			// First breach: recovery climbs back to the rate in force
			// now (the static limit, or the input rate seen), then
			// releases the limit.
			c.ceiling = cur
		}
		c.rate = max(cur/2, minRate)
		if r := c.Rate(); r != before {
			return r, "overloaded (" + b + "): rate halved"
		}
		return c.Rate(), ""
	}
	if c.rate == 0 {
		return c.Rate(), ""
	}
	c.rate *= 1.1
	if c.rate >= c.ceiling || (c.Static > 0 && c.rate >= c.Static) {
		c.rate, c.ceiling = 0, 0
		return c.Rate(), "healthy: limit released"
	}
	return c.Rate(), "healthy: rate raised 10%"
}
