package agg

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestAggregates(t *testing.T) {
	nums := []float64{4, -2, 9, 1}
	strs := []string{"b", "a", "b", "c", "b", "a"}
	cases := []struct {
		spec   Spec
		inputs []Input
		want   any
	}{
		{Spec{Kind: Count}, numInputs(nums), int64(4)},
		{Spec{Kind: Sum}, numInputs(nums), 12.0},
		{Spec{Kind: Min}, numInputs(nums), -2.0},
		{Spec{Kind: Max}, numInputs(nums), 9.0},
		{Spec{Kind: Avg}, numInputs(nums), 3.0},
		{Spec{Kind: Min}, nil, nil},
		{Spec{Kind: Avg}, nil, nil},
		{Spec{Kind: TopN, N: 2}, strInputs(strs), []Item{{"b", 3}, {"a", 2}}},
		{Spec{Kind: Distinct}, strInputs(strs), int64(3)},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%d", c.spec.Kind, len(c.inputs)), func(t *testing.T) {
			f, err := NewFactory(c.spec)
			if err != nil {
				t.Fatal(err)
			}
			// Feed half to one accumulator and half to another, then
			// merge: the result must equal feeding all to one.
			a, b, whole := f(), f(), f()
			for i, in := range c.inputs {
				whole.Add(in)
				if i%2 == 0 {
					a.Add(in)
				} else {
					b.Add(in)
				}
			}
			a.Merge(b)
			if got := whole.Result(); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("result %v, want %v", got, c.want)
			}
			if got := a.Result(); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("merged result %v, want %v", got, c.want)
			}
		})
	}
}

func TestFactoryErrors(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{Kind: "median"}, `aggregate "median"`},
		{Spec{Kind: TopN}, "topN: n must be positive"},
	} {
		if _, err := NewFactory(c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.spec, err, c.want)
		}
	}
}

// TestDistinctSharesDictionary: panes of one factory share the
// dictionary, so the same value gets the same id in every window.
func TestDistinctSharesDictionary(t *testing.T) {
	f, _ := NewFactory(Spec{Kind: Distinct})
	a, b := f(), f()
	for _, u := range []string{"u1", "u2", "u3"} {
		a.Add(Input{Str: u})
	}
	for _, u := range []string{"u3", "u4"} {
		b.Add(Input{Str: u})
	}
	a.Merge(b)
	if got := a.Result(); got != int64(4) {
		t.Fatalf("merged distinct = %v, want 4", got)
	}
	if n := a.(*distinct).dict.Len(); n != 4 {
		t.Fatalf("dictionary holds %d values, want 4", n)
	}
}

func numInputs(v []float64) []Input {
	out := make([]Input, len(v))
	for i, x := range v {
		out[i] = Input{Num: x}
	}
	return out
}

func strInputs(v []string) []Input {
	out := make([]Input, len(v))
	for i, x := range v {
		out[i] = Input{Str: x}
	}
	return out
}
