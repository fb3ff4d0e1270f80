package agg

import (
	"encoding/json"
	"fmt"

	"github.com/RoaringBitmap/roaring/v2"
)

// Aggregator makes accumulators of one spec and turns them into bytes and
// back, for checkpoints. A Distinct aggregator owns the dictionary its
// accumulators share; it is checkpointed once, with DictionaryValues.
type Aggregator struct {
	spec Spec
	new  Factory
	dict *Dictionary
}

// NewAggregator validates spec.
func NewAggregator(spec Spec) (*Aggregator, error) {
	f, err := NewFactory(spec)
	if err != nil {
		return nil, err
	}
	a := &Aggregator{spec: spec, new: f}
	if spec.Kind == Distinct {
		// The factory's dictionary, reached through an accumulator.
		a.dict = f().(*distinct).dict
	}
	return a, nil
}

// New returns an empty accumulator.
func (a *Aggregator) New() Accumulator { return a.new() }

// accState is an accumulator's checkpoint form.
type accState struct {
	N      int64            `json:"n,omitempty"`
	S      float64          `json:"s,omitempty"`
	V      float64          `json:"v,omitempty"`
	Seen   bool             `json:"seen,omitempty"`
	Counts map[string]int64 `json:"counts,omitempty"`
	Bitmap []byte           `json:"bitmap,omitempty"`
}

// Encode returns acc's state.
func (a *Aggregator) Encode(acc Accumulator) ([]byte, error) {
	var st accState
	switch x := acc.(type) {
	case *count:
		st.N = x.n
	case *sum:
		st.S = x.s
	case *extreme:
		st.V, st.Seen = x.v, x.seen
	case *avg:
		st.S, st.N = x.s, x.n
	case *topN:
		st.Counts = x.counts
	case *distinct:
		b, err := x.bm.ToBytes()
		if err != nil {
			return nil, err
		}
		st.Bitmap = b
	default:
		return nil, fmt.Errorf("aggregate: cannot encode %T", acc)
	}
	return json.Marshal(st)
}

// Decode rebuilds an accumulator from Encode's bytes.
func (a *Aggregator) Decode(b []byte) (Accumulator, error) {
	var st accState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("aggregate state: %w", err)
	}
	acc := a.new()
	switch x := acc.(type) {
	case *count:
		x.n = st.N
	case *sum:
		x.s = st.S
	case *extreme:
		x.seen = st.Seen
		if st.Seen {
			x.v = st.V
		}
	case *avg:
		x.s, x.n = st.S, st.N
	case *topN:
		if st.Counts != nil {
			x.counts = st.Counts
		}
	case *distinct:
		x.bm = roaring.New()
		if len(st.Bitmap) > 0 {
			if err := x.bm.UnmarshalBinary(st.Bitmap); err != nil {
				return nil, fmt.Errorf("aggregate state: bitmap: %w", err)
			}
		}
	}
	return acc, nil
}

// DictionaryValues lists a Distinct aggregator's values by id (nil for
// the other kinds), for a checkpoint.
func (a *Aggregator) DictionaryValues() []string {
	if a.dict == nil {
		return nil
	}
	a.dict.mu.RLock()
	defer a.dict.mu.RUnlock()
	out := make([]string, len(a.dict.ids))
	for v, id := range a.dict.ids {
		out[id] = v
	}
	return out
}

// RestoreDictionary loads values by id into a fresh Distinct aggregator.
func (a *Aggregator) RestoreDictionary(values []string) error {
	if a.dict == nil {
		if len(values) > 0 {
			return fmt.Errorf("aggregate %s has no dictionary", a.spec.Kind)
		}
		return nil
	}
	a.dict.mu.Lock()
	defer a.dict.mu.Unlock()
	if len(a.dict.ids) > 0 {
		return fmt.Errorf("aggregate dictionary is not empty")
	}
	for id, v := range values {
		a.dict.ids[v] = uint32(id)
	}
	return nil
}
