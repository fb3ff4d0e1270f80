// Package window is the stream engine's event-time windowing: tumbling,
// sliding and session windows over keyed inputs, bounded-out-of-orderness
// watermarks, allowed lateness and a side output for events that come too
// late. It is a plain state machine: Add feeds events, Advance feeds
// watermarks, and both return what fired, so it is tested without clocks
// or goroutines.
//
// Semantics follow Flink's: a window [start, end) fires once the
// watermark reaches end-1; its state is kept until the watermark passes
// end-1+allowedLateness, and an event arriving in that time updates the
// window and fires it again (Result.Update). An event whose every window
// is past that point is late and goes to the side output.
package window

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"mecha/stream/agg"
)

// Kind is a window kind.
type Kind string

// The window kinds.
const (
	Tumbling Kind = "tumbling"
	Sliding  Kind = "sliding"
	Session  Kind = "session"
)

// Spec describes windows; durations are in milliseconds of event time.
type Spec struct {
	Kind            Kind
	Size            int64 // tumbling and sliding
	Slide           int64 // sliding
	Gap             int64 // session: a key's session ends after Gap without events
	AllowedLateness int64
}

// ErrSpec is wrapped by every invalid Spec.
var ErrSpec = errors.New("invalid window")

// Validate names the first bad field.
func (s Spec) Validate() error {
	switch s.Kind {
	case Tumbling:
		if s.Size <= 0 {
			return fmt.Errorf("%w: size must be positive, got %dms", ErrSpec, s.Size)
		}
	case Sliding:
		if s.Size <= 0 || s.Slide <= 0 {
			return fmt.Errorf("%w: size and slide must be positive, got %dms and %dms", ErrSpec, s.Size, s.Slide)
		}
		if s.Slide > s.Size {
			return fmt.Errorf("%w: slide %dms is longer than size %dms", ErrSpec, s.Slide, s.Size)
		}
	case Session:
		if s.Gap <= 0 {
			return fmt.Errorf("%w: gap must be positive, got %dms", ErrSpec, s.Gap)
		}
	default:
		return fmt.Errorf("%w: kind %q: want tumbling, sliding or session", ErrSpec, s.Kind)
	}
	if s.AllowedLateness < 0 {
		return fmt.Errorf("%w: allowedLateness must not be negative, got %dms", ErrSpec, s.AllowedLateness)
	}
	return nil
}

// Window is the event-time interval [Start, End) in milliseconds.
type Window struct{ Start, End int64 }

// maxTimestamp is the last instant inside the window.
func (w Window) maxTimestamp() int64 { return w.End - 1 }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// assign returns the tumbling or sliding windows that hold ts, earliest
// first.
func (s Spec) assign(ts int64) []Window {
	if s.Kind == Tumbling {
		start := floorDiv(ts, s.Size) * s.Size
		return []Window{{start, start + s.Size}}
	}
	last := floorDiv(ts, s.Slide) * s.Slide
	var out []Window
	for start := last; start > ts-s.Size; start -= s.Slide {
		out = append(out, Window{start, start + s.Size})
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Watermark tracks a bounded-out-of-orderness watermark: events may be
// up to Delay ms older than the newest seen, so the watermark is the
// newest timestamp minus Delay minus one.
type Watermark struct {
	Delay int64
	max   int64
	seen  bool
}

// Observe notes an event time.
func (w *Watermark) Observe(ts int64) {
	if !w.seen || ts > w.max {
		w.max, w.seen = ts, true
	}
}

// Max is the newest event time seen, and whether there was one.
func (w *Watermark) Max() (int64, bool) { return w.max, w.seen }

// Current is the watermark; math.MinInt64 before any event.
func (w *Watermark) Current() int64 {
	if !w.seen {
		return math.MinInt64
	}
	return w.max - w.Delay - 1
}

// Result is a fired window.
type Result struct {
	Key    string
	Window Window
	Value  any
	// Update marks a window fired again because a late event, within the
	// allowed lateness, changed it.
	Update bool
}

type pane struct {
	key   string
	w     Window
	acc   agg.Accumulator
	fired bool
}

type paneKey struct {
	key string
	w   Window
}

// Operator is keyed event-time windows with one aggregate.
type Operator struct {
	spec   Spec
	newAcc agg.Factory
	wm     int64
	panes  map[paneKey]*pane  // tumbling and sliding
	sess   map[string][]*pane // session windows per key, by start
	// due is a lower bound on the watermark at which some pane fires or
	// expires: below it, Advance has nothing to do and skips the scan.
	due int64
}

// NewOperator validates spec and returns an operator with no state.
func NewOperator(spec Spec, newAcc agg.Factory) (*Operator, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return &Operator{spec: spec, newAcc: newAcc, wm: math.MinInt64, panes: map[paneKey]*pane{}, sess: map[string][]*pane{}, due: math.MaxInt64}, nil
}

// Watermark is the last watermark Advance took.
func (o *Operator) Watermark() int64 { return o.wm }

// expired reports whether w's state is past its allowed lateness.
func (o *Operator) expired(w Window) bool {
	return o.wm != math.MinInt64 && w.maxTimestamp()+o.spec.AllowedLateness <= o.wm
}

// Add feeds one event. It returns the windows fired again because the
// event landed in them after they fired, and late=true when the event
// belongs to no window still kept (the side output's business).
func (o *Operator) Add(key string, ts int64, in agg.Input) (updates []Result, late bool) {
	if o.spec.Kind == Session {
		return o.addSession(key, ts, in)
	}
	accepted := false
	for _, w := range o.spec.assign(ts) {
		if o.expired(w) {
			continue
		}
		accepted = true
		o.due = min(o.due, w.maxTimestamp())
		k := paneKey{key, w}
		p := o.panes[k]
		if p == nil {
			p = &pane{key: key, w: w, acc: o.newAcc()}
			o.panes[k] = p
		}
		p.acc.Add(in)
		if p.fired {
			updates = append(updates, Result{Key: key, Window: w, Value: p.acc.Result(), Update: true})
		}
	}
	return updates, !accepted
}

func (o *Operator) addSession(key string, ts int64, in agg.Input) ([]Result, bool) {
	w := Window{ts, ts + o.spec.Gap}
	if o.expired(w) {
		return nil, true
	}
	np := &pane{key: key, w: w, acc: o.newAcc()}
	np.acc.Add(in)
	// Merge every session that touches the new one, as Flink does
	// (adjacent sessions merge too), until none is left to merge: a merge
	// widens the session, which can reach another.
	ps := o.sess[key]
	for merged := true; merged; {
		merged = false
		for i, p := range ps {
			if p.w.Start <= np.w.End && np.w.Start <= p.w.End {
				p.acc.Merge(np.acc)
				p.w.Start = min(p.w.Start, np.w.Start)
				p.w.End = max(p.w.End, np.w.End)
				p.fired = p.fired || np.fired
				np = p
				ps = append(ps[:i:i], ps[i+1:]...)
				merged = true
				break
			}
		}
	}
	o.due = min(o.due, np.w.maxTimestamp())
	keep := append(ps, np)
	sort.Slice(keep, func(i, j int) bool { return keep[i].w.Start < keep[j].w.Start })
	o.sess[key] = keep
	if np.fired && np.w.maxTimestamp() <= o.wm {
		return []Result{{Key: key, Window: np.w, Value: np.acc.Result(), Update: true}}, false
	}
	// A merge can move a fired session's end past the watermark: it
	// fires again when the watermark gets there.
	if np.fired {
		np.fired = false
	}
	return nil, false
}

// Advance moves the watermark to wm (a lower one is ignored) and returns
// the windows it fires, by end, key and start. State past its allowed
// lateness is dropped.
func (o *Operator) Advance(wm int64) []Result {
	if wm <= o.wm {
		return nil
	}
	o.wm = wm
	if wm < o.due {
		return nil
	}
	due := int64(math.MaxInt64)
	var out []Result
	fire := func(p *pane) {
		if !p.fired && p.w.maxTimestamp() <= wm {
			p.fired = true
			out = append(out, Result{Key: p.key, Window: p.w, Value: p.acc.Result()})
		}
	}
	kept := func(p *pane) {
		if p.fired {
			due = min(due, p.w.maxTimestamp()+o.spec.AllowedLateness)
		} else {
			due = min(due, p.w.maxTimestamp())
		}
	}
	for k, p := range o.panes {
		fire(p)
		if o.expired(p.w) {
			delete(o.panes, k)
		} else {
			kept(p)
		}
	}
	for key, ps := range o.sess {
		var keep []*pane
		for _, p := range ps {
			fire(p)
			if !o.expired(p.w) {
				keep = append(keep, p)
				kept(p)
			}
		}
		if len(keep) == 0 {
			delete(o.sess, key)
		} else {
			o.sess[key] = keep
		}
	}
	o.due = due
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Window.End != b.Window.End {
			return a.Window.End < b.Window.End
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.Window.Start < b.Window.Start
	})
	return out
}

// Panes is the number of windows holding state: what a checkpoint saves.
func (o *Operator) Panes() int {
	n := len(o.panes)
	for _, ps := range o.sess {
		n += len(ps)
	}
	return n
}
