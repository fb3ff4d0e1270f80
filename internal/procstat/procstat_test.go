package procstat

import "testing"

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
