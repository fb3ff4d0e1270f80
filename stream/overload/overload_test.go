package overload

import (
	"fmt"
	"strings"
	"testing"
)

// TestHalveThenRecover: an overloaded job's rate halves on each bad
// interval, then rises 10% per healthy one until the limit is released.
func TestHalveThenRecover(t *testing.T) {
	c := Controller{Thresholds: Thresholds{MaxBacklog: 1000}}
	steps := []struct {
		h    Health
		want float64
	}{
		{Health{Backlog: 10, InputRate: 8000}, 0},
		{Health{Backlog: 5000, InputRate: 8000}, 4000},
		{Health{Backlog: 3000, InputRate: 4000}, 2000},
		{Health{Backlog: 500, InputRate: 2000}, 2200},
		{Health{Backlog: 100, InputRate: 2200}, 2420},
	}
	for i, s := range steps {
		if got, _ := c.Observe(s.h); fmt.Sprintf("%.0f", got) != fmt.Sprintf("%.0f", s.want) {
			t.Fatalf("step %d: rate %.1f, want %.1f", i, got, s.want)
		}
	}
	// Healthy from here: 10% a step until past the 8000/s seen when the
	// overload began, then no limit at all.
	var reason string
	n := 0
	for c.Rate() != 0 {
		_, reason = c.Observe(Health{InputRate: c.Rate()})
		if n++; n > 50 {
			t.Fatal("the limit was never released")
		}
	}
	if n != 13 || !strings.Contains(reason, "released") {
		t.Fatalf("released after %d healthy steps (%q), want 13: 2420 * 1.1^13 > 8000", n, reason)
	}
}

func TestStaticLimitCaps(t *testing.T) {
	c := Controller{Thresholds: Thresholds{MaxLagMs: 100}, Static: 500}
	if c.Rate() != 500 {
		t.Fatalf("rate %v, want the static 500", c.Rate())
	}
	if r, why := c.Observe(Health{LagMs: 1000, InputRate: 500}); r != 250 || !strings.Contains(why, "lag 1000ms > 100ms") {
		t.Fatalf("rate %v (%q), want 250 for the lag", r, why)
	}
	for i := 0; i < 20; i++ {
		c.Observe(Health{InputRate: 250})
	}
	if c.Rate() != 500 {
		t.Fatalf("rate %v after recovery, want back at the static 500", c.Rate())
	}
}

func TestNeverStops(t *testing.T) {
	c := Controller{Thresholds: Thresholds{MaxCPU: 0.5}}
	for i := 0; i < 100; i++ {
		c.Observe(Health{CPU: 2, InputRate: 0})
	}
	if c.Rate() < minRate {
		t.Fatalf("rate %v fell below %d/s", c.Rate(), minRate)
	}
}

func TestBreach(t *testing.T) {
	th := Thresholds{MaxBacklog: 10, MaxLagMs: 10, MaxCPU: 1, MaxGCPauseMs: 5}
	for _, c := range []struct {
		h    Health
		want string
	}{
		{Health{}, ""},
		{Health{Backlog: 11}, "backlog"},
		{Health{LagMs: 11}, "lag"},
		{Health{CPU: 1.5}, "cpu"},
		{Health{GCPauseMs: 6}, "gc pause"},
	} {
		if got := th.Breach(c.h); !strings.HasPrefix(got, c.want) || (c.want == "" && got != "") {
			t.Errorf("%+v: breach %q, want %q", c.h, got, c.want)
		}
	}
	if err := (Thresholds{MaxCPU: -1}).Validate(); err == nil {
		t.Error("negative threshold accepted")
	}
}

// TestStaticLimitRecoversInSteps: under a static limit the controller
// halves from it and climbs back 10% per healthy interval to it, rather
// than jumping back at the first healthy interval.
func TestStaticLimitRecoversInSteps(t *testing.T) {
	c := Controller{Thresholds: Thresholds{MaxLagMs: 1000}, Static: 1000}
	if got, _ := c.Observe(Health{LagMs: 5000}); got != 500 {
		t.Fatalf("rate %v after a breach, want 500 (half the static 1000)", got)
	}
	var seen []float64
	for c.Rate() < 1000 {
		r, _ := c.Observe(Health{LagMs: 10})
		seen = append(seen, r)
		if len(seen) > 20 {
			t.Fatalf("never back to the static limit: %v", seen)
		}
	}
	// 500 * 1.1^7 = 974, 1.1^8 = 1072: seven raises, then the release.
	if len(seen) != 8 || fmt.Sprintf("%.0f", seen[0]) != "550" || seen[7] != 1000 {
		t.Fatalf("recovery %v, want 550, 605, … then 1000 after 8 healthy intervals", seen)
	}
}
