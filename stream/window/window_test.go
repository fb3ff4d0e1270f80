package window

import (
	"fmt"
	"math/rand"
	"reflect"
	"sort"
	"strings"
	"testing"

	"mecha/stream/agg"
)

// step is one input of a scripted run: an event (key, ts) or, when wm is
// set, a watermark.
type step struct {
	key string
	ts  int64
	wm  *int64
}

func ev(key string, ts int64) step { return step{key: key, ts: ts} }
func wm(t int64) step              { return step{wm: &t} }

// run feeds steps to a counting operator and renders what fired, in
// order, as "key[start,end)=count" ("+" for an update) and late events as
// "late key@ts".
func run(t *testing.T, spec Spec, steps []step) []string {
	t.Helper()
	f, err := agg.NewFactory(agg.Spec{Kind: agg.Count})
	if err != nil {
		t.Fatal(err)
	}
	op, err := NewOperator(spec, f)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	render := func(rs []Result) {
		for _, r := range rs {
			mark := ""
			if r.Update {
				mark = "+"
			}
			out = append(out, fmt.Sprintf("%s%s[%d,%d)=%v", mark, r.Key, r.Window.Start, r.Window.End, r.Value))
		}
	}
	for _, s := range steps {
		if s.wm != nil {
			render(op.Advance(*s.wm))
			continue
		}
		ups, late := op.Add(s.key, s.ts, agg.Input{Num: 1})
		if late {
			out = append(out, fmt.Sprintf("late %s@%d", s.key, s.ts))
		}
		render(ups)
	}
	return out
}

func TestWindows(t *testing.T) {
	tumbling := Spec{Kind: Tumbling, Size: 10}
	cases := []struct {
		name  string
		spec  Spec
		steps []step
		want  []string
	}{
		{"tumbling in order", tumbling,
			[]step{ev("a", 1), ev("a", 5), ev("a", 12), wm(9), wm(19)},
			[]string{"a[0,10)=2", "a[10,20)=1"}},
		{"tumbling fires at end-1, not before", tumbling,
			[]step{ev("a", 3), wm(8), wm(9)},
			[]string{"a[0,10)=1"}},
		{"tumbling out of order within the watermark", tumbling,
			[]step{ev("a", 12), ev("a", 3), ev("b", 7), ev("a", 15), wm(9), ev("a", 11), wm(19)},
			[]string{"a[0,10)=1", "b[0,10)=1", "a[10,20)=3"}},
		{"late event is dropped to the side output", tumbling,
			[]step{ev("a", 3), wm(15), ev("a", 4), ev("a", 16), wm(25)},
			[]string{"a[0,10)=1", "late a@4", "a[10,20)=1"}},
		{"allowed lateness re-fires, then drops", Spec{Kind: Tumbling, Size: 10, AllowedLateness: 5},
			[]step{ev("a", 3), wm(9), ev("a", 4), wm(13), ev("a", 5), wm(14), ev("a", 6)},
			[]string{"a[0,10)=1", "+a[0,10)=2", "+a[0,10)=3", "late a@6"}},
		{"watermark going back is ignored", tumbling,
			[]step{ev("a", 3), wm(9), wm(2), ev("a", 5)},
			[]string{"a[0,10)=1", "late a@5"}},
		{"negative timestamps", tumbling,
			[]step{ev("a", -3), ev("a", -11), wm(-1)},
			[]string{"a[-20,-10)=1", "a[-10,0)=1"}},
		{"sliding: each event in size/slide windows", Spec{Kind: Sliding, Size: 10, Slide: 5},
			[]step{ev("a", 7), ev("a", 12), wm(9), wm(14), wm(19)},
			[]string{"a[0,10)=1", "a[5,15)=2", "a[10,20)=1"}},
		{"sliding late for one window, on time for the next", Spec{Kind: Sliding, Size: 10, Slide: 5},
			[]step{ev("a", 1), wm(9), ev("a", 6), wm(14)},
			[]string{"a[-5,5)=1", "a[0,10)=1", "a[5,15)=1"}},
		{"session windows merge and close after the gap", Spec{Kind: Session, Gap: 5},
			[]step{ev("a", 1), ev("a", 4), ev("a", 20), ev("b", 2), wm(8), wm(24)},
			[]string{"b[2,7)=1", "a[1,9)=2", "a[20,25)=1"}},
		{"session out of order bridges two sessions", Spec{Kind: Session, Gap: 5},
			[]step{ev("a", 1), ev("a", 10), ev("a", 5), wm(14)},
			[]string{"a[1,15)=3"}},
		{"session late within lateness updates", Spec{Kind: Session, Gap: 5, AllowedLateness: 10},
			[]step{ev("a", 1), wm(6), ev("a", 2), wm(20), ev("a", 3)},
			[]string{"a[1,6)=1", "+a[1,7)=2", "late a@3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := run(t, c.spec, c.steps)
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestSpecValidate(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{Kind: "hopping", Size: 1}, `kind "hopping"`},
		{Spec{Kind: Tumbling}, "size must be positive"},
		{Spec{Kind: Sliding, Size: 5, Slide: 10}, "slide 10ms is longer than size 5ms"},
		{Spec{Kind: Session}, "gap must be positive"},
		{Spec{Kind: Tumbling, Size: 1, AllowedLateness: -1}, "allowedLateness"},
	} {
		err := c.spec.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to say %q", c.spec, err, c.want)
		}
	}
}

func TestWatermark(t *testing.T) {
	w := Watermark{Delay: 5}
	w.Observe(100)
	w.Observe(90) // older events do not move it back
	if got := w.Current(); got != 94 {
		t.Fatalf("watermark %d, want 94 (max 100 - delay 5 - 1)", got)
	}
}

// TestExactUV counts distinct users per tumbling window through the
// operator and checks each window against a reference set count, with
// events shuffled within the out-of-orderness bound.
func TestExactUV(t *testing.T) {
	f, err := agg.NewFactory(agg.Spec{Kind: agg.Distinct})
	if err != nil {
		t.Fatal(err)
	}
	op, err := NewOperator(Spec{Kind: Tumbling, Size: 1000}, f)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	type key struct {
		item  string
		start int64
	}
	ref := map[key]map[string]bool{}
	const n = 200000
	// 20 events per ms over 10 s, each delayed by up to 400 ms: out of
	// order, but within the watermark's 500 ms.
	type event struct{ ts, arrival int64 }
	evs := make([]event, n)
	for i := range evs {
		ts := int64(i) / 20
		evs[i] = event{ts, ts + rng.Int63n(400)}
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].arrival < evs[j].arrival })
	events := make([]int64, n)
	for i, e := range evs {
		events[i] = e.ts
	}
	wmk := Watermark{Delay: 500}
	got := map[key]int64{}
	collect := func(rs []Result) {
		for _, r := range rs {
			got[key{r.Key, r.Window.Start}] = r.Value.(int64)
		}
	}
	for _, ts := range events {
		item := fmt.Sprintf("auction-%d", rng.Intn(5))
		user := fmt.Sprintf("user-%d", rng.Intn(3000))
		k := key{item, ts / 1000 * 1000}
		if ref[k] == nil {
			ref[k] = map[string]bool{}
		}
		ref[k][user] = true
		if _, late := op.Add(item, ts, agg.Input{Str: user}); late {
			t.Fatalf("event at %d late with watermark %d", ts, op.Watermark())
		}
		wmk.Observe(ts)
		collect(op.Advance(wmk.Current()))
	}
	collect(op.Advance(1 << 62))
	if len(got) != len(ref) {
		t.Fatalf("%d windows fired, want %d", len(got), len(ref))
	}
	for k, users := range ref {
		if got[k] != int64(len(users)) {
			t.Fatalf("%s at %d: UV %d, want %d", k.item, k.start, got[k], len(users))
		}
	}
	if op.Panes() != 0 {
		t.Fatalf("%d panes left after the final watermark", op.Panes())
	}
}
