package procstat

import (
	"os"
	"testing"
	"time"
)

func TestMovesWithWork(t *testing.T) {
	before := CPU()
	x := 0
	for i := range 50_000_000 {
		x += i % 7
	}
	if CPU() <= before || x == 0 {
		t.Fatalf("CPU did not move with work: %v → %v", before, CPU())
	}
	if MaxRSS() <= 0 {
		t.Fatal("no peak RSS")
	}
}

// TestOf: this process read through /proc agrees with getrusage, and a
// missing process is an error.
func TestOf(t *testing.T) {
	x := 0
	for i := range 20_000_000 {
		x += i % 7
	}
	cpu, rss, peak, err := Of(os.Getpid())
	if err != nil || x == 0 {
		t.Fatal(err)
	}
	if self := CPU(); cpu <= 0 || cpu > self+20*time.Millisecond {
		t.Fatalf("CPU from /proc %v, from getrusage %v", cpu, self)
	}
	if rss <= 0 || peak < rss {
		t.Fatalf("rss %d, peak %d", rss, peak)
	}
	if _, _, _, err := Of(1 << 30); err == nil {
		t.Fatal("a missing process read without an error")
	}
}
