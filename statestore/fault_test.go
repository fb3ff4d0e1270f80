package statestore

import (
	"errors"
	"sync/atomic"
	"syscall"
	"testing"

	"mecha/internal/fsutil"
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
	defer restore()
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
