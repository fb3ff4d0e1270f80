package membership

import (
	"syscall"
	"testing"

	"mecha/internal/fsutil"
)

// A cache write that fails at any step before its rename leaves the
// previous cache readable: a runtime that restarts then still resolves
// from it.
func TestSaveCacheFailureKeepsThePreviousCache(t *testing.T) {
	eio := func(string) error { return syscall.EIO }
	cases := []struct {
		name   string
		faults fsutil.Faults
	}{
		{"write", fsutil.Faults{Write: func(_ string, b []byte, _ int64) (int, error) { return len(b) / 2, syscall.ENOSPC }}},
		{"fsync", fsutil.Faults{Sync: eio}},
		{"rename", fsutil.Faults{Rename: func(string, string) error { return syscall.EIO }}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			old := Snapshot{Format: snapshotFormat, Node: "n1", DC: "dc1"}
			if err := saveCache(dir, old); err != nil {
				t.Fatal(err)
			}
			restore := fsutil.SetFaults(tc.faults)
			err := saveCache(dir, Snapshot{Format: snapshotFormat, Node: "n1", DC: "dc2"})
			restore()
			if err == nil {
				t.Fatal("saveCache succeeded on a failing disk")
			}
			got, err := loadCache(dir)
			if err != nil || got.DC != "dc1" {
				t.Fatalf("cache after the failed save: dc %q, %v; want the previous one (dc1)", got.DC, err)
			}
			if err := saveCache(dir, Snapshot{Format: snapshotFormat, Node: "n1", DC: "dc3"}); err != nil {
				t.Fatal(err)
			}
			if got, err := loadCache(dir); err != nil || got.DC != "dc3" {
				t.Fatalf("cache once the disk works: dc %q, %v", got.DC, err)
			}
		})
	}
}
