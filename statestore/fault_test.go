package statestore

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mecha/internal/fsutil"
	"mecha/internal/poll"
)

// withFaults installs fault hooks for one test. They are process-wide:
// no test of this package runs in parallel with another.
func withFaults(t *testing.T, f fsutil.Faults) {
	t.Cleanup(fsutil.SetFaults(f))
}

// A full disk is found when the log space is allocated, before the write
// is accepted: the write fails, nothing changes, and the store works again
// once there is space.
func TestDiskFullFailsTheWriteCleanly(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	defer e.Close()
	v, err := e.Set(Write{Key: "k", Value: []byte("before")})
	if err != nil {
		t.Fatal(err)
	}
	var full atomic.Bool
	full.Store(true)
	withFaults(t, fsutil.Faults{Allocate: func(string, int64, int64) error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return nil
	}})
	// Exhaust the space already allocated so the next write must allocate.
	big := make([]byte, preallocChunk/4)
	var failed error
	for i := 0; i < 8 && failed == nil; i++ {
		_, failed = e.Set(Write{Key: "filler", Value: big})
	}
	if !errors.Is(failed, ErrNoSpace) {
		t.Fatalf("write on a full disk: %v", failed)
	}
	if _, err := e.Set(Write{Key: "k", Value: big, ETag: ptr(ETag(v))}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("second write on a full disk: %v", err)
	}
	if it, ok, _ := e.Get("k"); !ok || string(it.Value) != "before" || it.Version != v {
		t.Fatalf("a refused write changed the store: %q v%d", it.Value, it.Version)
	}
	full.Store(false)
	if _, err := e.Set(Write{Key: "k", Value: []byte("after"), ETag: ptr(ETag(v))}); err != nil {
		t.Fatalf("write once space is back: %v", err)
	}
}

// A failing fsync under FsyncAlways fails the write, leaves memory
// unchanged, refuses later writes, and a reopen recovers a consistent
// store.
func TestFsyncFailure(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir, func(o *Options) { o.Fsync = FsyncAlways })
	if _, err := e.Set(Write{Key: "k", Value: []byte("durable")}); err != nil {
		t.Fatal(err)
	}
	restore := fsutil.SetFaults(fsutil.Faults{Sync: func(string) error { return syscall.EIO }})
	t.Cleanup(restore)
	if _, err := e.Set(Write{Key: "k", Value: []byte("lost")}); !errors.Is(err, ErrFailed) {
		t.Fatalf("write with a failing fsync: %v", err)
	}
	if it, _, _ := e.Get("k"); string(it.Value) != "durable" {
		t.Fatalf("unacknowledged value visible: %q", it.Value)
	}
	if _, err := e.Set(Write{Key: "other", Value: []byte("x")}); !errors.Is(err, ErrFailed) {
		t.Fatalf("write after the failure: %v", err)
	}
	e.Close()
	restore()
	e = open(t, dir, func(o *Options) { o.Fsync = FsyncAlways })
	defer e.Close()
	// The failed write may or may not have reached the file: it was never
	// acknowledged. What was acknowledged is there, and the store works.
	if it, ok, _ := e.Get("k"); !ok || (string(it.Value) != "durable" && string(it.Value) != "lost") {
		t.Fatalf("after reopen k = %q %v", it.Value, ok)
	}
	if _, ok, _ := e.Get("other"); ok {
		t.Fatal("a write refused after the failure came back")
	}
	if _, err := e.Set(Write{Key: "k2", Value: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
}

// A failed write or fsync of the log, under any policy, fails the write
// that met it (or, for the interval fsync, the writes after it) with
// ErrFailed, never makes a refused write visible, and is sticky: the
// store takes no more writes even once the disk answers again, while
// reads go on. A reopen finds every acknowledged write. Under never no
// write ever waits for an fsync.
func TestLogFailures(t *testing.T) {
	halfWrite := func(_ string, b []byte, _ int64) (int, error) { return len(b) / 2, syscall.ENOSPC }
	failSync := func(string) error { return syscall.EIO }
	cases := []struct {
		name   string
		policy FsyncPolicy
		faults fsutil.Faults
		cause  error // nil: no write fails
	}{
		{"always, write", FsyncAlways, fsutil.Faults{Write: halfWrite}, syscall.ENOSPC},
		{"always, fsync", FsyncAlways, fsutil.Faults{Sync: failSync}, syscall.EIO},
		{"interval, write", FsyncInterval, fsutil.Faults{Write: halfWrite}, syscall.ENOSPC},
		{"interval, background fsync", FsyncInterval, fsutil.Faults{Sync: failSync}, syscall.EIO},
		{"never, write", FsyncNever, fsutil.Faults{Write: halfWrite}, syscall.ENOSPC},
		{"never, fsync is never waited for", FsyncNever, fsutil.Faults{Sync: failSync}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mod := func(o *Options) { o.Fsync = tc.policy; o.FsyncInterval = time.Millisecond }
			e := open(t, dir, mod)
			var acked []string
			set := func() error {
				k := fmt.Sprint("k", len(acked))
				if _, err := e.Set(Write{Key: k, Value: []byte(k)}); err != nil {
					if _, ok, _ := e.Get(k); ok {
						t.Fatalf("the refused write of %s is visible", k)
					}
					return err
				}
				acked = append(acked, k)
				return nil
			}
			for range 10 {
				if err := set(); err != nil {
					t.Fatal(err)
				}
			}
			restore := fsutil.SetFaults(tc.faults)
			t.Cleanup(restore)
			var failed error
			if tc.cause == nil {
				for range 200 {
					if err := set(); err != nil {
						t.Fatalf("write under never with a failing fsync: %v", err)
					}
				}
			} else {
				// The interval fsync fails in the background: write until
				// the store notices.
				poll.Until(t, 10*time.Second, "a write to fail", func() bool {
					failed = set()
					return failed != nil
				})
				if !errors.Is(failed, ErrFailed) || !errors.Is(failed, tc.cause) {
					t.Fatalf("failed write: %v, want ErrFailed wrapping %v", failed, tc.cause)
				}
			}
			restore()
			if tc.cause != nil {
				if err := set(); !errors.Is(err, ErrFailed) {
					t.Fatalf("write once the disk answers again: %v, want ErrFailed", err)
				}
			}
			for _, k := range acked {
				if got, ok := mustGet(t, e, k); !ok || got != k {
					t.Fatalf("read of acknowledged %s after the failure: %q %v", k, got, ok)
				}
			}
			e.Close()
			e = open(t, dir, mod)
			defer e.Close()
			for _, k := range acked {
				if got, ok := mustGet(t, e, k); !ok || got != k {
					t.Fatalf("acknowledged %s after reopen: %q %v", k, got, ok)
				}
			}
			if _, err := e.Set(Write{Key: "after", Value: []byte("reopen")}); err != nil {
				t.Fatalf("write after reopen: %v", err)
			}
		})
	}
}
