// Package agg holds the stream engine's aggregates: count, sum, min, max,
// avg, top-N and exact count-distinct. Each is an Accumulator a window
// pane feeds one input at a time; panes of merging windows (sessions) are
// combined with Merge.
//
// Count-distinct is exact: values are dictionary-encoded to uint32 ids
// (one Dictionary shared by every pane of an operator) and each pane keeps
// a roaring bitmap of the ids it saw, as the seed counts UV by deviceId.
package agg

import (
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/RoaringBitmap/roaring/v2"
)

// Input is one value fed to an accumulator: Num for the numeric
// aggregates, Str for top-N and count-distinct; Record and Right carry a
// whole record for accumulators that keep records (a join's sides).
type Input struct {
	Num    float64
	Str    string
	Record map[string]any
	Right  bool
}

// Accumulator folds inputs into a result.
type Accumulator interface {
	Add(in Input)
	// Merge folds another accumulator of the same kind into this one.
	Merge(other Accumulator)
	// Result is the aggregate's current value.
	Result() any
}

// Kind names an aggregate.
type Kind string

// The aggregates.
const (
	Count    Kind = "count"
	Sum      Kind = "sum"
	Min      Kind = "min"
	Max      Kind = "max"
	Avg      Kind = "avg"
	TopN     Kind = "topN"
	Distinct Kind = "countDistinct"
)

// Spec describes an aggregate; N is top-N's N.
type Spec struct {
	Kind Kind
	N    int
}

// Factory makes empty accumulators of one kind. A Distinct factory owns
// the dictionary its accumulators share.
type Factory func() Accumulator

// NewFactory validates spec and returns its factory.
func NewFactory(spec Spec) (Factory, error) {
	switch spec.Kind {
	case Count:
		return func() Accumulator { return &count{} }, nil
	case Sum:
		return func() Accumulator { return &sum{} }, nil
	case Min:
		return func() Accumulator { return &extreme{min: true, v: math.Inf(1)} }, nil
	case Max:
		return func() Accumulator { return &extreme{v: math.Inf(-1)} }, nil
	case Avg:
		return func() Accumulator { return &avg{} }, nil
	case TopN:
		if spec.N <= 0 {
			return nil, fmt.Errorf("aggregate topN: n must be positive, got %d", spec.N)
		}
		return func() Accumulator { return &topN{n: spec.N, counts: map[string]int64{}} }, nil
	case Distinct:
		d := NewDictionary()
		return func() Accumulator { return &distinct{dict: d, bm: roaring.New()} }, nil
	}
	return nil, fmt.Errorf("aggregate %q: want one of count, sum, min, max, avg, topN, countDistinct", spec.Kind)
}

type count struct{ n int64 }

func (c *count) Add(Input)           { c.n++ }
func (c *count) Merge(o Accumulator) { c.n += o.(*count).n }
func (c *count) Result() any         { return c.n }

type sum struct{ s float64 }

func (s *sum) Add(in Input)        { s.s += in.Num }
func (s *sum) Merge(o Accumulator) { s.s += o.(*sum).s }
func (s *sum) Result() any         { return s.s }

type extreme struct {
	min  bool
	seen bool
	v    float64
}

func (e *extreme) Add(in Input) {
	e.seen = true
	if (e.min && in.Num < e.v) || (!e.min && in.Num > e.v) {
		e.v = in.Num
	}
}

func (e *extreme) Merge(o Accumulator) {
	x := o.(*extreme)
	if x.seen {
		e.Add(Input{Num: x.v})
	}
}

func (e *extreme) Result() any {
	if !e.seen {
		return nil
	}
	return e.v
}

type avg struct {
	s float64
	n int64
}

func (a *avg) Add(in Input) { a.s += in.Num; a.n++ }
func (a *avg) Merge(o Accumulator) {
	x := o.(*avg)
	a.s += x.s
	a.n += x.n
}

func (a *avg) Result() any {
	if a.n == 0 {
		return nil
	}
	return a.s / float64(a.n)
}

// Item is one entry of a top-N result.
type Item struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

type topN struct {
	n      int
	counts map[string]int64
}

func (t *topN) Add(in Input) { t.counts[in.Str]++ }
func (t *topN) Merge(o Accumulator) {
	for k, v := range o.(*topN).counts {
		t.counts[k] += v
	}
}

// Result is the n most frequent items, by count then key.
func (t *topN) Result() any {
	items := make([]Item, 0, len(t.counts))
	for k, v := range t.counts {
		items = append(items, Item{k, v})
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].Count != items[j].Count {
			return items[i].Count > items[j].Count
		}
		return items[i].Key < items[j].Key
	})
	if len(items) > t.n {
		items = items[:t.n]
	}
	return items
}

// Dictionary maps distinct values to dense uint32 ids, so that a window's
// set of values is a compact roaring bitmap. It is safe for concurrent use.
type Dictionary struct {
	mu  sync.RWMutex // guards ids
	ids map[string]uint32
}

// NewDictionary returns an empty dictionary.
func NewDictionary() *Dictionary { return &Dictionary{ids: map[string]uint32{}} }

// ID returns v's id, assigning the next one on first sight.
func (d *Dictionary) ID(v string) uint32 {
	d.mu.RLock()
	id, ok := d.ids[v]
	d.mu.RUnlock()
	if ok {
		return id
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if id, ok := d.ids[v]; ok {
		return id
	}
	id = uint32(len(d.ids))
	d.ids[v] = id
	return id
}

// Len is the number of distinct values seen.
func (d *Dictionary) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.ids)
}

type distinct struct {
	dict *Dictionary
	bm   *roaring.Bitmap
}

func (d *distinct) Add(in Input)        { d.bm.Add(d.dict.ID(in.Str)) }
func (d *distinct) Merge(o Accumulator) { d.bm.Or(o.(*distinct).bm) }
func (d *distinct) Result() any         { return int64(d.bm.GetCardinality()) }
