package window

import (
	"fmt"
	"math"
	"sort"

	"mecha/stream/agg"
)

// PaneState is one window's state in a checkpoint.
type PaneState struct {
	Key   string `json:"key"`
	Start int64  `json:"start"`
	End   int64  `json:"end"`
	Fired bool   `json:"fired,omitempty"`
	Acc   []byte `json:"acc"`
}

// State is an operator's checkpoint: its watermark and every window that
// holds state.
type State struct {
	Watermark int64       `json:"watermark"`
	Panes     []PaneState `json:"panes"`
}

// Snapshot returns the operator's state, panes in a stable order.
func (o *Operator) Snapshot(encode func(agg.Accumulator) ([]byte, error)) (State, error) {
	st := State{Watermark: o.wm}
	add := func(p *pane) error {
		b, err := encode(p.acc)
		if err != nil {
			return err
		}
		st.Panes = append(st.Panes, PaneState{Key: p.key, Start: p.w.Start, End: p.w.End, Fired: p.fired, Acc: b})
		return nil
	}
	for _, p := range o.panes {
		if err := add(p); err != nil {
			return st, err
		}
	}
	for _, ps := range o.sess {
		for _, p := range ps {
			if err := add(p); err != nil {
				return st, err
			}
		}
	}
	sort.Slice(st.Panes, func(i, j int) bool {
		a, b := st.Panes[i], st.Panes[j]
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.Start < b.Start
	})
	return st, nil
}

// Restore replaces the operator's state with a snapshot's.
func (o *Operator) Restore(st State, decode func([]byte) (agg.Accumulator, error)) error {
	panes := map[paneKey]*pane{}
	sess := map[string][]*pane{}
	for _, ps := range st.Panes {
		if ps.End <= ps.Start {
			return fmt.Errorf("window state: pane %q [%d,%d) is empty", ps.Key, ps.Start, ps.End)
		}
		acc, err := decode(ps.Acc)
		if err != nil {
			return err
		}
		p := &pane{key: ps.Key, w: Window{ps.Start, ps.End}, acc: acc, fired: ps.Fired}
		if o.spec.Kind == Session {
			sess[p.key] = append(sess[p.key], p)
		} else {
			panes[paneKey{p.key, p.w}] = p
		}
	}
	o.wm, o.panes, o.sess, o.due = st.Watermark, panes, sess, math.MinInt64
	return nil
}
