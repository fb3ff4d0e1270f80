package storage

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// The hooks are package globals: tests that swap them must not run in
// parallel with other tests of this package (none here call t.Parallel).

func swapWrite(t *testing.T, fn func(*os.File, []byte, int64) (int, error)) (restore func()) {
	t.Helper()
	old := writeFn
	writeFn = fn
	restore = func() { writeFn = old }
	t.Cleanup(restore)
	return restore
}

func swapSync(t *testing.T, fn func(*os.File) error) (restore func()) {
	t.Helper()
	old := syncFn
	syncFn = fn
	restore = func() { syncFn = old }
	t.Cleanup(restore)
	return restore
}

// diskFull writes half of b, as a filling disk does, then fails.
func diskFull(f *os.File, b []byte, off int64) (int, error) {
	n, _ := f.WriteAt(b[:len(b)/2], off)
	return n, syscall.ENOSPC
}

func TestWriteFailureTakesBackThePartialWrite(t *testing.T) {
	cases := []struct {
		name      string
		segBytes  int64
		sync      bool
		fail      func(*os.File, []byte, int64) (int, error)
		wantErrIs error
	}{
		{"enospc", 1 << 20, false, diskFull, syscall.ENOSPC},
		{"enospc with fsync", 1 << 20, true, diskFull, syscall.ENOSPC},
		{"enospc into a new segment", 250, false, diskFull, syscall.ENOSPC},
		{"short write", 1 << 20, false, func(f *os.File, b []byte, off int64) (int, error) {
			return f.WriteAt(b[:len(b)-1], off)
		}, nil},
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

			restore := swapWrite(t, tc.fail)
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
	eio := func(*os.File) error { return syscall.EIO }
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

			restore := swapSync(t, eio)
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
	restore := swapWrite(t, diskFull)
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
