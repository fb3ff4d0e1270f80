package job

import (
	"encoding/json"
	"fmt"

	"mecha/stream/agg"
)

// joinAcc is a window pane of a join: the left and right records of one
// key in one window. Its result is every pair not yet emitted, so that a
// window fired again by a late record (within the allowed lateness)
// emits only the pairs that record makes.
type joinAcc struct {
	left, right []map[string]any
	// emittedL and emittedR are how many records of each side the pairs
	// emitted so far covered.
	emittedL, emittedR int
}

func (j *joinAcc) Add(in agg.Input) {
	if in.Right {
		j.right = append(j.right, in.Record)
	} else {
		j.left = append(j.left, in.Record)
	}
}

// Merge joins two sessions. The pairs already emitted by either are not
// tracked past a merge: a merged session that fires again emits the pairs
// that include a record of the other.
func (j *joinAcc) Merge(o agg.Accumulator) {
	x := o.(*joinAcc)
	j.left = append(j.left, x.left...)
	j.right = append(j.right, x.right...)
}

// Result returns the pairs not emitted yet and marks them emitted.
func (j *joinAcc) Result() any {
	var out []JoinPair
	for i, l := range j.left {
		for k, r := range j.right {
			if i < j.emittedL && k < j.emittedR {
				continue
			}
			out = append(out, JoinPair{Left: l, Right: r})
		}
	}
	j.emittedL, j.emittedR = len(j.left), len(j.right)
	return out
}

type joinState struct {
	Left     []map[string]any `json:"left,omitempty"`
	Right    []map[string]any `json:"right,omitempty"`
	EmittedL int              `json:"emittedL,omitempty"`
	EmittedR int              `json:"emittedR,omitempty"`
}

func encodeJoin(a agg.Accumulator) ([]byte, error) {
	j, ok := a.(*joinAcc)
	if !ok {
		return nil, fmt.Errorf("join: cannot encode %T", a)
	}
	return json.Marshal(joinState{j.left, j.right, j.emittedL, j.emittedR})
}

// decodeJoin reads encodeJoin's JSON back, its records with the same
// decoder as source records, so that a restored record has the values
// (int64 for whole numbers) it had when it was read.
func decodeJoin(b []byte) (agg.Accumulator, error) {
	var d decoder
	m, err := d.decode(b)
	if err != nil {
		return nil, fmt.Errorf("join state: %w", err)
	}
	side := func(k string) ([]map[string]any, error) {
		a, ok := m[k].([]any)
		if !ok && m[k] != nil {
			return nil, fmt.Errorf("join state: %s is a %T, not an array", k, m[k])
		}
		out := make([]map[string]any, 0, len(a))
		for _, e := range a {
			r, ok := e.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("join state: a %T among the %s records", e, k)
			}
			out = append(out, r)
		}
		return out, nil
	}
	count := func(k string) (int, error) {
		n, ok := m[k].(int64)
		if !ok && m[k] != nil {
			return 0, fmt.Errorf("join state: %s is %v, not a count", k, m[k])
		}
		return int(n), nil
	}
	var st joinState
	if st.Left, err = side("left"); err != nil {
		return nil, err
	}
	if st.Right, err = side("right"); err != nil {
		return nil, err
	}
	if st.EmittedL, err = count("emittedL"); err != nil {
		return nil, err
	}
	if st.EmittedR, err = count("emittedR"); err != nil {
		return nil, err
	}
	if st.EmittedL < 0 || st.EmittedL > len(st.Left) || st.EmittedR < 0 || st.EmittedR > len(st.Right) {
		return nil, fmt.Errorf("join state: %d/%d emitted of %d/%d records", st.EmittedL, st.EmittedR, len(st.Left), len(st.Right))
	}
	return &joinAcc{left: st.Left, right: st.Right, emittedL: st.EmittedL, emittedR: st.EmittedR}, nil
}
