package statestore

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
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

// fakeDisk makes fallocate of the files under dir see a disk with free
// bytes left: an allocation larger than that fails with ENOSPC.
type fakeDisk struct {
	free  atomic.Int64
	calls atomic.Int64
}

func (d *fakeDisk) install(t *testing.T, dir string) {
	t.Cleanup(fsutil.SetFaults(fsutil.Faults{Allocate: func(name string, _, n int64) error {
		if !strings.HasPrefix(name, dir) {
			return nil
		}
		d.calls.Add(1)
		for {
			free := d.free.Load()
			if n > free {
				return syscall.ENOSPC
			}
			if d.free.CompareAndSwap(free, free-n) {
				return nil
			}
		}
	}}))
}

// The first writes after a restart, clean or not, go into the space the
// log had preallocated before it: on a disk that filled up meanwhile, the
// store does not need new space before it can save anything. Once that
// space is used up, a write fails with ErrNoSpace and changes nothing,
// and works again once the disk has room.
func TestRestartWritesIntoThePreallocatedTail(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "after a clean close", true: "after a crash"}[crash], func(t *testing.T) {
			dir := t.TempDir()
			const prealloc = 1 << 20
			small := func(o *Options) { o.preallocBytes = prealloc }
			e := open(t, dir, small)
			if _, err := e.Set(Write{Key: "before", Value: []byte("restart")}); err != nil {
				t.Fatal(err)
			}
			if crash {
				// What a kill leaves: the files as they are, the log
				// written to the OS and its preallocation in place.
				crashed := t.TempDir()
				if err := crashCopy(dir, crashed, "", 0); err != nil {
					t.Fatal(err)
				}
				e.Close()
				dir = crashed
			} else if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			disk := &fakeDisk{}
			disk.install(t, dir) // the disk is full
			e = open(t, dir, small)
			defer func() { e.Close() }()
			val := bytes.Repeat([]byte("v"), 1024)
			for i := range 64 {
				if _, err := e.Set(Write{Key: fmt.Sprint("k", i), Value: val}); err != nil {
					t.Fatalf("write %d after the restart, on a full disk: %v", i, err)
				}
			}
			if n := disk.calls.Load(); n != 0 {
				t.Fatalf("%d allocations for writes that fit the preallocated tail", n)
			}
			// More than the tail holds.
			big := make([]byte, prealloc)
			if _, err := e.Set(Write{Key: "big", Value: big}); !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("a write larger than the tail on a full disk: %v, want ErrNoSpace", err)
			}
			if _, ok := mustGet(t, e, "big"); ok {
				t.Fatal("the refused write is visible")
			}
			disk.free.Store(1 << 40)
			if _, err := e.Set(Write{Key: "big", Value: big}); err != nil {
				t.Fatalf("the same write once the disk has room: %v", err)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			e = open(t, dir, small)
			for _, k := range []string{"before", "k0", "k63", "big"} {
				if _, ok := mustGet(t, e, k); !ok {
					t.Fatalf("%s lost after reopen", k)
				}
			}
		})
	}
}

// On a disk with less room than a preallocation chunk, the log allocates
// in smaller steps, down to what each write needs: the store goes on
// until the disk is really full, then fails cleanly.
func TestAllocationStepsDownOnANearlyFullDisk(t *testing.T) {
	dir := t.TempDir()
	disk := &fakeDisk{}
	const room = 3 << 20 // more than a 1 MiB step, less than a 16 MiB chunk
	disk.free.Store(room)
	disk.install(t, dir)
	e := open(t, dir)
	if e.opts.preallocBytes != 16<<20 {
		t.Fatalf("preallocation %d, want the default 16 MiB", e.opts.preallocBytes)
	}
	defer e.Close()
	val := bytes.Repeat([]byte("v"), 64<<10)
	var written int64
	var err error
	for i := 0; err == nil; i++ {
		if _, err = e.Set(Write{Key: fmt.Sprint("k", i), Value: val}); err == nil {
			written += int64(len(val))
		}
		if written > 2*room {
			t.Fatal("writes go on past the disk's room")
		}
	}
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write on the full disk: %v, want ErrNoSpace", err)
	}
	// All but the last record's worth of the room holds records.
	if written < room-2*int64(len(val)) {
		t.Fatalf("%d bytes of values written into %d bytes of room", written, room)
	}
}

// A directory fsync that fails when rotation creates a segment fails the
// log for good, like a failed fsync of the log itself: the snapshot that
// rotated fails, writes are refused, and a reopen recovers every
// acknowledged write.
func TestRotationDirectoryFsyncFailure(t *testing.T) {
	for _, policy := range []FsyncPolicy{FsyncAlways, FsyncInterval, FsyncNever} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			mod := func(o *Options) { o.Fsync = policy }
			e := open(t, dir, mod)
			for i := range 10 {
				if _, err := e.Set(Write{Key: fmt.Sprint("k", i), Value: []byte("v")}); err != nil {
					t.Fatal(err)
				}
			}
			restore := fsutil.SetFaults(fsutil.Faults{Sync: func(name string) error {
				if name == dir {
					return syscall.EIO
				}
				return nil
			}})
			t.Cleanup(restore)
			if err := e.Snapshot(); !errors.Is(err, syscall.EIO) {
				t.Fatalf("snapshot with a failing directory fsync: %v", err)
			}
			restore()
			if _, err := e.Set(Write{Key: "after", Value: []byte("v")}); !errors.Is(err, ErrFailed) {
				t.Fatalf("write after the failed rotation: %v, want ErrFailed", err)
			}
			e.Close()
			e = open(t, dir, mod)
			defer e.Close()
			for i := range 10 {
				if _, ok := mustGet(t, e, fmt.Sprint("k", i)); !ok {
					t.Fatalf("k%d lost", i)
				}
			}
			if _, err := e.Set(Write{Key: "after", Value: []byte("v")}); err != nil {
				t.Fatalf("write after reopen: %v", err)
			}
			if err := e.Snapshot(); err != nil {
				t.Fatalf("snapshot after reopen: %v", err)
			}
		})
	}
}
