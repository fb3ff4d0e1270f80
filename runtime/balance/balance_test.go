package balance

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

func instances(n int) []Instance {
	out := make([]Instance, n)
	for i := range out {
		out[i] = Instance{ID: fmt.Sprintf("node-%d/orders", i), Addr: fmt.Sprintf("10.0.0.%d:50002", i+1), DC: "dc1"}
	}
	return out
}

func seeded() Source { return rand.NewPCG(1, 2) }

type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func newManualClock() *manualClock { return &manualClock{now: time.Unix(1_700_000_000, 0)} }

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func allPolicies(t *testing.T) map[Policy]Balancer {
	t.Helper()
	out := map[Policy]Balancer{}
	for _, p := range []Policy{PolicyRoundRobin, PolicyLeastOutstanding, PolicyRendezvous, PolicyWeighted} {
		b, err := New(p, Options{Rand: seeded(), Clock: newManualClock()})
		if err != nil {
			t.Fatal(err)
		}
		out[p] = b
	}
	return out
}

func TestNoInstance(t *testing.T) {
	for p, b := range allPolicies(t) {
		if _, _, err := b.Pick("k"); !errors.Is(err, ErrNoInstance) {
			t.Errorf("%s: empty Pick = %v, want ErrNoInstance", p, err)
		}
		b.Update(instances(2))
		if _, done, err := b.Pick("k"); err != nil {
			t.Errorf("%s: Pick = %v", p, err)
		} else {
			done(nil, time.Millisecond)
		}
		b.Update(nil)
		if _, _, err := b.Pick("k"); !errors.Is(err, ErrNoInstance) {
			t.Errorf("%s: Pick after Update(nil) = %v, want ErrNoInstance", p, err)
		}
	}
	if _, err := New("random", Options{}); !errors.Is(err, ErrUnknownPolicy) {
		t.Errorf("New(random) = %v", err)
	}
}

func TestUpdateNormalizes(t *testing.T) {
	b := NewRoundRobin()
	b.Update([]Instance{{ID: "a", Addr: "1"}, {ID: ""}, {ID: "b"}, {ID: "a", Addr: "2"}})
	seen := map[string]string{}
	for range 4 {
		in, _, _ := b.Pick("")
		seen[in.ID] = in.Addr
	}
	if len(seen) != 2 || seen["a"] != "2" {
		t.Fatalf("picked %v, want a (last definition, addr 2) and b only", seen)
	}
}

func TestRoundRobinFairness(t *testing.T) {
	b := NewRoundRobin()
	b.Update(instances(5))
	counts := map[string]int{}
	for range 5000 {
		in, done, _ := b.Pick("")
		done(nil, 0)
		counts[in.ID]++
	}
	for id, n := range counts {
		if n != 1000 {
			t.Errorf("%s got %d of 5000 picks, want exactly 1000", id, n)
		}
	}
}

func TestRoundRobinWeightedIsSmooth(t *testing.T) {
	b := NewRoundRobin()
	b.Update([]Instance{{ID: "a", Weight: 5}, {ID: "b", Weight: 1}, {ID: "c", Weight: 1}})
	var order []string
	for range 14 {
		in, _, _ := b.Pick("")
		order = append(order, in.ID)
	}
	// nginx's smooth weighted round robin for 5:1:1.
	if got := strings.Join(order, ""); got != "aabacaaaabacaa" {
		t.Fatalf("order = %s, want aabacaa twice", got)
	}
	// Large weights are scaled to a bounded schedule, proportions kept.
	b.Update([]Instance{{ID: "x", Weight: 300000}, {ID: "y", Weight: 100000}, {ID: "z", Weight: 7}})
	counts := map[string]int{}
	for range 40960 {
		in, _, _ := b.Pick("")
		counts[in.ID]++
	}
	if counts["x"] < 3*counts["y"]-100 || counts["x"] > 3*counts["y"]+100 || counts["z"] == 0 {
		t.Fatalf("scaled weights counts = %v, want x ≈ 3y and z > 0", counts)
	}
}

func TestLeastOutstandingPicksTheIdle(t *testing.T) {
	b := NewLeastOutstanding(seeded())
	b.Update(instances(4))
	held := map[string]Done{}
	for range 3 {
		in, done, _ := b.Pick("")
		if _, dup := held[in.ID]; dup {
			t.Fatalf("picked busy %s while others were idle", in.ID)
		}
		held[in.ID] = done
	}
	in, done, _ := b.Pick("")
	if _, busy := held[in.ID]; busy {
		t.Fatalf("4th pick %s is busy; the idle one was free", in.ID)
	}
	held[in.ID] = done
	// All have one in flight; finish one and it becomes the idle one.
	var freed string
	for id, d := range held {
		freed = id
		d(nil, 0)
		break
	}
	if in, _, _ := b.Pick(""); in.ID != freed {
		t.Fatalf("picked %s, want the just-freed %s", in.ID, freed)
	}
}

func TestLeastOutstandingWeightsAndUpdate(t *testing.T) {
	b := NewLeastOutstanding(seeded())
	b.Update([]Instance{{ID: "small", Weight: 1}, {ID: "big", Weight: 3}})
	counts := map[string]int{}
	for range 40 {
		in, _, _ := b.Pick("")
		counts[in.ID]++
	}
	if counts["small"] != 10 || counts["big"] != 30 {
		t.Fatalf("held picks = %v, want 10 and 30 (in flight per unit of weight)", counts)
	}
	b.Update([]Instance{{ID: "big", Weight: 3}, {ID: "new"}})
	if got := b.InFlight("big"); got != 30 {
		t.Fatalf("in-flight of a kept instance = %d after Update, want 30", got)
	}
	if in, _, _ := b.Pick(""); in.ID != "new" {
		t.Fatalf("picked %s, want the new idle instance", in.ID)
	}
}

func TestLeastOutstandingPowerOfTwoChoices(t *testing.T) {
	b := NewLeastOutstanding(seeded())
	b.Update(instances(40))
	for range 4000 {
		b.Pick("")
	}
	lo, hi := int64(1<<62), int64(0)
	for _, in := range instances(40) {
		n := b.InFlight(in.ID)
		lo, hi = min(lo, n), max(hi, n)
	}
	// Two random choices keep the spread within a few calls of the mean
	// (100); one random choice would spread it by tens.
	if hi-lo > 6 {
		t.Fatalf("in-flight spread %d..%d over 40 instances", lo, hi)
	}
}

func owners(b *Rendezvous, keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		in, _, _ := b.Pick(k)
		out[i] = in.ID
	}
	return out
}

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("user-%d", i)
	}
	return out
}

func TestRendezvousStability(t *testing.T) {
	const n, nkeys = 10, 100_000
	ks := keys(nkeys)
	insts := instances(n)
	b := NewRendezvous()
	b.Update(insts)
	before := owners(b, ks)

	// Balance: each instance owns about a tenth. (The expected 10,000
	// has a standard deviation of about 95; ±1,000 is over 10σ, and the
	// hash is fixed, so the result never changes anyway.)
	per := map[string]int{}
	for _, o := range before {
		per[o]++
	}
	for id, c := range per {
		if c < 9000 || c > 11000 {
			t.Errorf("%s owns %d keys, want about 10,000", id, c)
		}
	}

	// The same keys map the same way in another process that lists the
	// instances in another order.
	other := NewRendezvous()
	rev := append([]Instance(nil), insts...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	other.Update(rev)
	for i, o := range owners(other, ks) {
		if o != before[i] {
			t.Fatalf("key %s: %s here, %s with the instances reordered", ks[i], before[i], o)
		}
	}

	// Remove one instance: only its keys move.
	removed := insts[3].ID
	b.Update(append(append([]Instance(nil), insts[:3]...), insts[4:]...))
	after := owners(b, ks)
	moved := 0
	for i := range ks {
		if after[i] != before[i] {
			moved++
			if before[i] != removed {
				t.Fatalf("key %s moved from %s, which stayed", ks[i], before[i])
			}
		} else if before[i] == removed {
			t.Fatalf("key %s still maps to the removed instance", ks[i])
		}
	}
	if f := float64(moved) / nkeys; f < 0.08 || f > 0.12 {
		t.Errorf("removing 1 of %d moved %.3f of the keys, want about 1/%d", n, f, n)
	}

	// Add one: keys move only to the newcomer.
	b.Update(append(append([]Instance(nil), insts...), Instance{ID: "node-new/orders"}))
	grown := owners(b, ks)
	moved = 0
	for i := range ks {
		if grown[i] != before[i] {
			moved++
			if grown[i] != "node-new/orders" {
				t.Fatalf("key %s moved to %s, not to the new instance", ks[i], grown[i])
			}
		}
	}
	if f := float64(moved) / nkeys; f < 0.07 || f > 0.11 {
		t.Errorf("adding an 11th instance moved %.3f of the keys, want about 1/11", f)
	}
}

func TestRendezvousWeightsAndEmptyKey(t *testing.T) {
	b := NewRendezvous()
	b.Update([]Instance{{ID: "a"}, {ID: "b"}, {ID: "c", Weight: 2}})
	per := map[string]int{}
	for _, o := range owners(b, keys(100_000)) {
		per[o]++
	}
	if per["c"] < 48_000 || per["c"] > 52_000 || per["a"] < 23_000 || per["a"] > 27_000 {
		t.Fatalf("weighted ownership = %v, want 25/25/50%%", per)
	}
	// No key: round robin.
	seen := map[string]int{}
	for range 30 {
		in, _, _ := b.Pick("")
		seen[in.ID]++
	}
	if seen["a"] != 10 || seen["b"] != 10 || seen["c"] != 10 {
		t.Fatalf("empty-key picks = %v, want round robin", seen)
	}
}

// TestConcurrentPickDoneUpdate exercises every balancer from several
// goroutines while the set changes (run with -race).
func TestConcurrentPickDoneUpdate(t *testing.T) {
	for p := range allPolicies(t) {
		b, err := New(p, Options{}) // shared-safe defaults
		if err != nil {
			t.Fatal(err)
		}
		b.Update(instances(8))
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 2000 {
					in, done, err := b.Pick(fmt.Sprint(i))
					if err != nil {
						t.Error(err)
						return
					}
					if in.ID == "" {
						t.Error("picked an instance without ID")
						return
					}
					var e error
					if (i+w)%7 == 0 {
						e = errors.New("x")
					}
					done(e, time.Duration(i%5)*time.Millisecond)
				}
			}()
		}
		for i := range 200 {
			b.Update(instances(4 + i%5))
			if wb, ok := b.(*Weighted); ok {
				for _, in := range wb.DueProbes(nil) {
					wb.ReportProbe(in.ID, i%2 == 0)
				}
				_ = wb.Stats()
			}
		}
		wg.Wait()
	}
}
