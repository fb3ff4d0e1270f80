package balance

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// sim drives a Weighted balancer with synthetic instances: each call
// takes the instance's latency and fails with its error rate (decided by
// a deterministic counter, not randomness), and the clock advances a
// fixed step per call.
type sim struct {
	t       *testing.T
	b       *Weighted
	clock   *manualClock
	latency map[string]time.Duration
	errEach map[string]int // fail one call in errEach (1 = always)
	calls   map[string]int
	step    time.Duration
}

func newSim(t *testing.T, cfg WeightedConfig, ids ...string) *sim {
	t.Helper()
	clock := newManualClock()
	b, err := NewWeighted(cfg, clock, seeded())
	if err != nil {
		t.Fatal(err)
	}
	var insts []Instance
	s := &sim{t: t, b: b, clock: clock, latency: map[string]time.Duration{}, errEach: map[string]int{}, calls: map[string]int{}, step: time.Millisecond}
	for _, id := range ids {
		insts = append(insts, Instance{ID: id})
		s.latency[id] = 10 * time.Millisecond
	}
	b.Update(insts)
	return s
}

var errCall = errors.New("call failed")

// run makes n calls and returns the share each instance got.
func (s *sim) run(n int) map[string]float64 {
	got := map[string]int{}
	for range n {
		in, done, err := s.b.Pick("")
		if err != nil {
			s.t.Fatal(err)
		}
		got[in.ID]++
		s.calls[in.ID]++
		var e error
		if k := s.errEach[in.ID]; k > 0 && s.calls[in.ID]%k == 0 {
			e = errCall
		}
		s.clock.Advance(s.step)
		done(e, s.latency[in.ID])
	}
	shares := map[string]float64{}
	for id, c := range got {
		shares[id] = float64(c) / float64(n)
	}
	return shares
}

func TestWeightedShiftsAwayFromSlowAndBack(t *testing.T) {
	s := newSim(t, WeightedConfig{DecayTime: 2 * time.Second}, "a", "b", "c")
	if sh := s.run(3000); sh["c"] < 0.28 || sh["c"] > 0.39 {
		t.Fatalf("equal instances: shares %v, want about a third each", sh)
	}
	// c becomes five times slower: weights 1/10 : 1/10 : 1/50, so c's
	// share heads for 1/11 ≈ 0.09.
	s.latency["c"] = 50 * time.Millisecond
	s.run(10_000) // 10s of traffic: five decay times
	sh := s.run(5000)
	if sh["c"] < 0.06 || sh["c"] > 0.13 {
		t.Fatalf("slow instance share = %.3f, want about 0.09 (shares %v)", sh["c"], sh)
	}
	if sh["a"] < 0.40 || sh["b"] < 0.40 {
		t.Fatalf("fast instances did not take the load: %v", sh)
	}
	// c recovers: its share comes back to about a third.
	s.latency["c"] = 10 * time.Millisecond
	s.run(15_000)
	if sh := s.run(5000); sh["c"] < 0.28 || sh["c"] > 0.39 {
		t.Fatalf("after recovery c's share = %.3f, want about a third (shares %v)", sh["c"], sh)
	}
}

func TestWeightedPenalizesErrors(t *testing.T) {
	s := newSim(t, WeightedConfig{DecayTime: 2 * time.Second}, "a", "b")
	s.errEach["b"] = 5 // 20% errors: weight × 0.8⁴ ≈ 0.41, share ≈ 0.29
	s.run(10_000)
	sh := s.run(5000)
	if sh["b"] < 0.22 || sh["b"] > 0.36 {
		t.Fatalf("share of an instance failing 20%% = %.3f, want about 0.29", sh["b"])
	}
	for _, st := range s.b.Stats() {
		if st.Ejected {
			t.Fatalf("%s ejected at a 20%% error rate (threshold 50%%)", st.Instance.ID)
		}
	}
}

func TestWeightedFloorKeepsSlowInstanceAlive(t *testing.T) {
	s := newSim(t, WeightedConfig{}, "fast", "glacial")
	s.latency["fast"] = time.Millisecond
	s.latency["glacial"] = 10 * time.Second
	s.run(20_000)
	sh := s.run(20_000)
	// Weight ratio 1e-4, floored at 5% of the mean weight: about 2.4%.
	if sh["glacial"] < 0.01 || sh["glacial"] > 0.04 {
		t.Fatalf("glacial share = %.4f, want the floor (about 0.024)", sh["glacial"])
	}
}

func TestWeightedEjectionAndProbes(t *testing.T) {
	s := newSim(t, WeightedConfig{ProbeInterval: 5 * time.Second, MaxProbeInterval: 15 * time.Second}, "a", "b", "c")
	s.run(300)
	s.errEach["c"] = 1 // c fails every call
	s.run(300)
	stats := map[string]InstanceStats{}
	for _, st := range s.b.Stats() {
		stats[st.Instance.ID] = st
	}
	if !stats["c"].Ejected || stats["c"].Share != 0 {
		t.Fatalf("c after consecutive failures: %+v, want ejected with no share", stats["c"])
	}
	before := s.calls["c"]
	if sh := s.run(1000); sh["c"] != 0 || s.calls["c"] != before {
		t.Fatal("an ejected instance got traffic")
	}
	// Ejected at some point in the last ~1.3s of clock: not due yet.
	if due := s.b.DueProbes(nil); len(due) != 0 {
		t.Fatalf("due %v before the probe interval", due)
	}
	s.clock.Advance(5 * time.Second)
	due := s.b.DueProbes(nil)
	if len(due) != 1 || due[0].ID != "c" {
		t.Fatalf("due = %v, want c", due)
	}
	if again := s.b.DueProbes(nil); len(again) != 0 {
		t.Fatal("a probe in progress must not be listed twice")
	}
	s.b.ReportProbe("c", false) // next wait doubles: 10s
	s.clock.Advance(9 * time.Second)
	if due := s.b.DueProbes(nil); len(due) != 0 {
		t.Fatal("due before the doubled interval")
	}
	s.clock.Advance(time.Second)
	if due := s.b.DueProbes(nil); len(due) != 1 {
		t.Fatal("not due after the doubled interval")
	}
	s.b.ReportProbe("c", true)
	s.errEach["c"] = 0
	sh := s.run(3000)
	if sh["c"] < 0.25 {
		t.Fatalf("recovered instance share = %.3f, want back near a third", sh["c"])
	}
}

func TestWeightedEjectsOnErrorRate(t *testing.T) {
	s := newSim(t, WeightedConfig{EjectConsecutiveFailures: -1}, "a", "b", "c")
	s.errEach["c"] = 1
	s.run(200)
	for _, st := range s.b.Stats() {
		if st.Instance.ID == "c" && !st.Ejected {
			t.Fatalf("c failing every call not ejected by error rate: %+v", st)
		}
	}
}

func TestWeightedEjectionCap(t *testing.T) {
	s := newSim(t, WeightedConfig{}, "a", "b")
	s.errEach["a"], s.errEach["b"] = 1, 1
	s.run(500)
	ejected := 0
	for _, st := range s.b.Stats() {
		if st.Ejected {
			ejected++
		}
	}
	if ejected != 1 {
		t.Fatalf("%d of 2 ejected, MaxEjectedFraction 0.5 allows 1", ejected)
	}
	lone := newSim(t, WeightedConfig{}, "only")
	lone.errEach["only"] = 1
	lone.run(100)
	if lone.b.Stats()[0].Ejected {
		t.Fatal("a lone instance must never be ejected")
	}
}

func TestWeightedUpdateKeepsStats(t *testing.T) {
	s := newSim(t, WeightedConfig{}, "a", "b", "c")
	s.errEach["c"] = 1
	s.run(300)
	s.b.Update([]Instance{{ID: "c"}, {ID: "b"}, {ID: "d"}})
	for _, st := range s.b.Stats() {
		if st.Instance.ID == "c" && !st.Ejected {
			t.Fatal("ejection lost across Update")
		}
	}
	s.errEach["c"] = 0
	sh := s.run(2000)
	if sh["c"] != 0 || sh["d"] < 0.3 {
		t.Fatalf("shares after Update = %v, want c still out, d in", sh)
	}
}

func TestWeightedConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  WeightedConfig
		want string
	}{
		{WeightedConfig{DecayTime: -1}, "DecayTime: must be > 0"},
		{WeightedConfig{MinShare: 2}, "MinShare: must be within (0, 1], got 2"},
		{WeightedConfig{MaxEjectedFraction: 1}, "MaxEjectedFraction: must be within (0, 1), got 1"},
		{WeightedConfig{ProbeInterval: time.Minute, MaxProbeInterval: time.Second}, "MaxProbeInterval: must be ≥ ProbeInterval (1m0s), got 1s"},
		{WeightedConfig{ErrorExponent: -1}, "ErrorExponent: must be > 0, got -1"},
		{WeightedConfig{EjectErrorRate: 1.5}, "EjectErrorRate: must be within (0, 1], got 1.5"},
	} {
		_, err := NewWeighted(tc.cfg, nil, nil)
		if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewWeighted(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
