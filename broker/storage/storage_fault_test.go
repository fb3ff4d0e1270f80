package storage

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"mecha/internal/fsutil"
)

// The fault hooks are process-wide: tests that set them must not run in
// parallel with other tests of this package (none here call t.Parallel),
// and they only touch the files under their own directory.

// writeFault decides what a write under a test's directory does: how
// many bytes reach the file and the error it fails with.
type writeFault func(b []byte) (int, error)

func swapWrite(t *testing.T, dir string, fn writeFault) (restore func()) {
	t.Helper()
	restore = fsutil.SetFaults(fsutil.Faults{Write: func(name string, b []byte, _ int64) (int, error) {
		if !strings.HasPrefix(name, dir) {
			return len(b), nil
		}
		return fn(b)
	}})
	t.Cleanup(restore)
	return restore
}

func swapSync(t *testing.T, dir string, fn func(name string) error) (restore func()) {
	t.Helper()
	restore = fsutil.SetFaults(fsutil.Faults{Sync: func(name string) error {
		if !strings.HasPrefix(name, dir) {
			return nil
		}
		return fn(name)
	}})
	t.Cleanup(restore)
	return restore
}

// diskFull writes half of b, as a filling disk does, then fails.
func diskFull(b []byte) (int, error) { return len(b) / 2, syscall.ENOSPC }

func eio(string) error { return syscall.EIO }

func TestWriteFailureTakesBackThePartialWrite(t *testing.T) {
	cases := []struct {
		name      string
		segBytes  int64
		sync      bool
		fail      writeFault
		wantErrIs error
	}{
		{"enospc", 1 << 20, false, diskFull, syscall.ENOSPC},
		{"enospc with fsync", 1 << 20, true, diskFull, syscall.ENOSPC},
		{"enospc into a new segment", 250, false, diskFull, syscall.ENOSPC},
		{"short write", 1 << 20, false, func(b []byte) (int, error) { return len(b) - 1, nil }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.SegmentBytes = tc.segBytes
			cfg.SyncEveryWrite = tc.sync
			dir := t.TempDir()
			p := openT(t, dir, cfg)
			for i := 0; i < 4; i++ {
				appendT(t, p, makeBatch(spec{n: 2, tag: byte(i)}))
			}
			acked := readAll(t, p)
			_, end := p.Offsets()
			size := p.Size()

			restore := swapWrite(t, dir, tc.fail)
			_, err := appendRaw(p, makeBatch(spec{n: 3, tag: 50}))
			if err == nil {
				t.Fatal("append succeeded on a failing disk")
			}
			if tc.wantErrIs != nil && !errors.Is(err, tc.wantErrIs) {
				t.Fatalf("err %v, want %v", err, tc.wantErrIs)
			}
			if errors.Is(err, ErrLogFailed) {
				t.Fatalf("a write taken back should not fail the log: %v", err)
			}
			if _, e := p.Offsets(); e != end || p.Size() != size {
				t.Fatalf("after the failed write end %d size %d, want %d %d", e, p.Size(), end, size)
			}
			var onDisk int64
			bases, _ := listSegments(dir)
			for _, b := range bases {
				onDisk += fileSize(t, segPath(dir, b, ".log"))
			}
			if onDisk != size {
				t.Fatalf("%d bytes of log files after the failed write, want %d", onDisk, size)
			}
			if got := readAll(t, p); len(got) != len(acked) {
				t.Fatalf("%d batches readable, want %d", len(got), len(acked))
			}

			restore()
			b := makeBatch(spec{n: 3, tag: 60})
			if res := appendT(t, p, b); res.Base != end {
				t.Fatalf("append after the disk recovered at %d, want %d", res.Base, end)
			}
			acked = append(acked, stored{end, 3, payload(b)})
			_ = p.Close()
			p = openT(t, dir, cfg)
			got := readAll(t, p)
			if len(got) != len(acked) {
				t.Fatalf("after reopen %d batches, want %d", len(got), len(acked))
			}
			for i := range acked {
				if got[i] != acked[i] {
					t.Fatalf("batch %d differs after reopen", i)
				}
			}
		})
	}
}

func TestFsyncFailureStopsThePartition(t *testing.T) {
	cases := []struct {
		name string
		cfg  func(*Config)
		// fail makes the log fail, with the sync hook failing.
		fail func(t *testing.T, p *Partition) error
	}{
		{"fsync after write", func(c *Config) { c.SyncEveryWrite = true }, func(t *testing.T, p *Partition) error {
			_, err := appendRaw(p, makeBatch(spec{tag: 99}))
			return err
		}},
		{"periodic flush", func(*Config) {}, func(t *testing.T, p *Partition) error {
			appendT(t, p, makeBatch(spec{tag: 99})) // not acknowledged as durable until a flush
			return p.Flush()
		}},
		{"fsync at roll", func(c *Config) { c.SegmentBytes = 250 }, func(t *testing.T, p *Partition) error {
			_, err := appendRaw(p, makeBatch(spec{n: 2, valueLen: 100, tag: 99}))
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.cfg(&cfg)
			dir := t.TempDir()
			p := openT(t, dir, cfg)
			for i := 0; i < 3; i++ {
				appendT(t, p, makeBatch(spec{n: 2, tag: byte(i)}))
			}
			if err := p.Flush(); err != nil {
				t.Fatal(err)
			}
			acked := readAll(t, p)

			restore := swapSync(t, dir, eio)
			err := tc.fail(t, p)
			if !errors.Is(err, ErrLogFailed) {
				t.Fatalf("err %v, want ErrLogFailed", err)
			}
			restore()
			// Even with the disk answering again, the log takes no more
			// writes: the kernel may have dropped the dirty pages.
			_, err = appendRaw(p, makeBatch(spec{}))
			wantErr(t, err, ErrLogFailed)
			if got := readAll(t, p); len(got) < len(acked) {
				t.Fatalf("%d batches readable after the failure, want at least %d", len(got), len(acked))
			}
			if err := p.Close(); err != nil {
				t.Fatalf("Close of a failed log: %v", err)
			}

			p = openT(t, dir, cfg)
			got := readAll(t, p)
			if len(got) < len(acked) {
				t.Fatalf("after reopen %d batches, want at least %d", len(got), len(acked))
			}
			for i := range acked {
				if got[i] != acked[i] {
					t.Fatalf("acknowledged batch %d differs after reopen", i)
				}
			}
			_, end := p.Offsets()
			if res, err := appendRaw(p, makeBatch(spec{})); err != nil || res.Base != end {
				t.Fatalf("append after reopen: %+v, %v", res, err)
			}
		})
	}
}

func TestOffsetStoreWriteFailure(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenOffsetStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := OffsetKey{"g", "t", 0}
	if err := s.Commit(map[OffsetKey]Committed{k: {Offset: 5}}, true); err != nil {
		t.Fatal(err)
	}
	size := fileSize(t, dir+"/offsets.log")
	restore := swapWrite(t, dir, diskFull)
	err = s.Commit(map[OffsetKey]Committed{k: {Offset: 9, Metadata: "some metadata to make the record longer"}}, true)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err %v, want ENOSPC", err)
	}
	if c, _ := s.Get(k); c.Offset != 5 {
		t.Fatalf("failed commit visible: %+v", c)
	}
	if got := fileSize(t, dir+"/offsets.log"); got != size {
		t.Fatalf("offsets.log %d bytes after the failed write, want %d", got, size)
	}
	restore()
	if err := s.Commit(map[OffsetKey]Committed{k: {Offset: 11}}, true); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s, err = OpenOffsetStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := s.Get(k); !ok || c.Offset != 11 {
		t.Fatalf("after reopen %+v %v, want 11", c, ok)
	}
}

// commitUntilCompacted commits offsets with long metadata to one key until
// a commit returns an error or the file shrinks (it was compacted), and
// returns that commit's error and the offset it committed.
func commitUntilCompacted(t *testing.T, s *OffsetStore, path string, k OffsetKey) (int64, error) {
	t.Helper()
	meta := strings.Repeat("m", maxOffsetString)
	for i := int64(100); i < 100+64; i++ {
		before := fileSize(t, path)
		if err := s.Commit(map[OffsetKey]Committed{k: {Offset: i, Metadata: meta}}, false); err != nil {
			return i, err
		}
		if fileSize(t, path) < before {
			return i, nil
		}
	}
	t.Fatal("64 commits of 64 KiB to one key never compacted the file")
	return 0, nil
}

// A failed fsync of the offsets file, wherever it happens, fails the store
// for good: commits are refused with ErrOffsetsFailed even once the disk
// answers again, Flush keeps reporting it (the commits are never counted
// as clean), and a reopen finds every commit acknowledged before the
// failure. A compaction whose temporary file fails is not such a failure:
// the live file is untouched.
func TestOffsetStoreFsyncFailure(t *testing.T) {
	k := OffsetKey{"g", "t", 0}
	cases := []struct {
		name string
		// failing reports whether a sync of name (a file or the
		// directory) fails.
		failing func(dir, name string) bool
		// fail runs the operation that meets the failing fsync; it
		// returns the offset it tried to commit to k.
		fail   func(t *testing.T, s *OffsetStore, dir string) (int64, error)
		sticky bool
	}{
		{"periodic flush", func(dir, name string) bool { return name == filepath.Join(dir, "offsets.log") },
			func(t *testing.T, s *OffsetStore, dir string) (int64, error) {
				if err := s.Commit(map[OffsetKey]Committed{k: {Offset: 7}}, false); err != nil {
					t.Fatal(err)
				}
				return 7, s.Flush()
			}, true},
		{"commit with fsync", func(dir, name string) bool { return name == filepath.Join(dir, "offsets.log") },
			func(t *testing.T, s *OffsetStore, dir string) (int64, error) {
				err := s.Commit(map[OffsetKey]Committed{k: {Offset: 7}}, true)
				if c, _ := s.Get(k); c.Offset != 5 {
					t.Fatalf("a commit whose fsync failed is visible: %+v", c)
				}
				return 7, err
			}, true},
		{"directory fsync of a compaction", func(dir, name string) bool { return name == dir },
			func(t *testing.T, s *OffsetStore, dir string) (int64, error) {
				return commitUntilCompacted(t, s, filepath.Join(dir, "offsets.log"), k)
			}, true},
		{"fsync of a compaction's temporary file", func(dir, name string) bool { return strings.HasSuffix(name, ".tmp") },
			func(t *testing.T, s *OffsetStore, dir string) (int64, error) {
				return commitUntilCompacted(t, s, filepath.Join(dir, "offsets.log"), k)
			}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := OpenOffsetStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Commit(map[OffsetKey]Committed{k: {Offset: 5}}, true); err != nil {
				t.Fatal(err)
			}
			restore := swapSync(t, dir, func(name string) error {
				if tc.failing(dir, name) {
					return syscall.EIO
				}
				return nil
			})
			want, err := tc.fail(t, s, dir)
			if err == nil || !errors.Is(err, syscall.EIO) {
				t.Fatalf("err %v, want one wrapping EIO", err)
			}
			if errors.Is(err, ErrOffsetsFailed) != tc.sticky {
				t.Fatalf("err %v: wraps ErrOffsetsFailed %v, want %v", err, !tc.sticky, tc.sticky)
			}
			restore()
			next := map[OffsetKey]Committed{k: {Offset: 1000}}
			if !tc.sticky {
				// The store goes on: the commit that met the failure
				// stands, and later ones are taken and kept.
				if err := s.Commit(next, true); err != nil {
					t.Fatalf("commit after a failed compaction: %v", err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if c, ok := openOffsetsT(t, dir).Get(k); !ok || c.Offset != 1000 {
					t.Fatalf("after reopen %+v %v, want 1000", c, ok)
				}
				if _, err := os.Stat(filepath.Join(dir, "offsets.log.tmp")); !os.IsNotExist(err) {
					t.Fatalf("temporary file left behind: %v", err)
				}
				return
			}
			// Even with the disk answering again: the kernel may have
			// dropped the dirty pages, so nothing is written after them.
			if err := s.Commit(next, true); !errors.Is(err, ErrOffsetsFailed) {
				t.Fatalf("commit after the failure: %v, want ErrOffsetsFailed", err)
			}
			if err := s.Flush(); !errors.Is(err, ErrOffsetsFailed) {
				t.Fatalf("Flush after the failure: %v, want ErrOffsetsFailed (the commits are not clean)", err)
			}
			if err := s.Close(); !errors.Is(err, ErrOffsetsFailed) {
				t.Fatalf("Close of a failed store: %v, want its failure", err)
			}
			// The fault was injected, so the page cache holds what was
			// written: the reopened store has everything written before
			// the failure (whether the commit that met it is applied is
			// not promised), and never the refused commit.
			c, ok := openOffsetsT(t, dir).Get(k)
			if !ok || (c.Offset != 5 && c.Offset != want) {
				t.Fatalf("after reopen %+v %v, want 5 or %d", c, ok, want)
			}
		})
	}
}
