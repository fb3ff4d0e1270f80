package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// openLogFDs counts this process's descriptors open on .log files under
// dir, deleted ones included.
func openLogFDs(t testing.TB, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("needs /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		target = strings.TrimSuffix(target, " (deleted)")
		if strings.HasPrefix(target, dir+string(filepath.Separator)) && strings.HasSuffix(target, ".log") {
			n++
		}
	}
	return n
}

func openShared(t testing.TB, files *SegmentFiles, dir string, cfg Config) *Partition {
	t.Helper()
	p, err := files.OpenPartition(dir, cfg)
	if err != nil {
		t.Fatalf("OpenPartition: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Partitions sharing a SegmentFiles hold at most its bound of segment
// files open between operations, however many segments they have, and
// read and write them all correctly: files are reopened on demand.
func TestSegmentFilesBounded(t *testing.T) {
	for _, tc := range []struct {
		max, partitions int
	}{
		{1, 6}, {2, 6}, {3, 8}, {16, 4},
	} {
		t.Run(fmt.Sprintf("%d files for %d partitions", tc.max, tc.partitions), func(t *testing.T) {
			root := t.TempDir()
			files := NewSegmentFiles(tc.max)
			cfg := testConfig()
			cfg.SegmentBytes = 400 // a few batches per segment
			var parts []*Partition
			for i := 0; i < tc.partitions; i++ {
				parts = append(parts, openShared(t, files, filepath.Join(root, strconv.Itoa(i)), cfg))
			}
			want := make([][]stored, tc.partitions)
			check := func(when string) {
				t.Helper()
				if n := openLogFDs(t, root); n > tc.max {
					t.Fatalf("%s: %d segment files open, bound %d", when, n, tc.max)
				}
				if n := files.Open(); n > tc.max {
					t.Fatalf("%s: Open() %d, bound %d", when, n, tc.max)
				}
			}
			for round := 0; round < 12; round++ {
				for i, p := range parts {
					batch := makeBatch(spec{n: 2, tag: byte(10*i + round)})
					res := appendT(t, p, batch)
					want[i] = append(want[i], stored{base: res.Base, n: 2, payload: string(batch[crcStart:])})
				}
				check(fmt.Sprintf("after append round %d", round))
				for i, p := range parts {
					got := readAll(t, p)
					if len(got) != len(want[i]) {
						t.Fatalf("partition %d: %d batches, want %d", i, len(got), len(want[i]))
					}
					for j := range got {
						if got[j] != want[i][j] {
							t.Fatalf("partition %d batch %d: base %d, want %d, or other records", i, j, got[j].base, want[i][j].base)
						}
					}
				}
				check(fmt.Sprintf("after read round %d", round))
			}
			if len(parts[0].segs) < 3 {
				t.Fatalf("%d segments per partition; the test wants several", len(parts[0].segs))
			}
			// Closed partitions hold nothing, and reopen with the same
			// bound, recovery included.
			for _, p := range parts {
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if n := openLogFDs(t, root); n != 0 || files.Open() != 0 {
				t.Fatalf("after Close: %d files open (Open() %d)", n, files.Open())
			}
			for i := range parts {
				p := openShared(t, files, filepath.Join(root, strconv.Itoa(i)), cfg)
				if got := readAll(t, p); len(got) != len(want[i]) {
					t.Fatalf("partition %d reopened: %d batches, want %d", i, len(got), len(want[i]))
				}
			}
			check("after reopening")
		})
	}
}

// An active segment evicted with unsynced writes is fsynced before it is
// closed. If that fsync fails, the partition learns it on its next fsync
// and takes no more writes, as after any failed fsync.
func TestEvictionFsyncsUnsyncedWrites(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failSync bool
	}{
		{"fsync succeeds", false},
		{"fsync fails", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			files := NewSegmentFiles(1)
			a := openShared(t, files, filepath.Join(root, "a"), testConfig())
			b := openShared(t, files, filepath.Join(root, "b"), testConfig())
			aLog := segPath(filepath.Join(root, "a"), 0, ".log")
			var mu sync.Mutex
			var synced []string
			swapSync(t, root, func(name string) error {
				if !strings.HasSuffix(name, ".log") {
					return nil // directory fsyncs
				}
				mu.Lock()
				synced = append(synced, name)
				mu.Unlock()
				if tc.failSync && name == aLog {
					return syscall.EIO
				}
				return nil
			})
			appendT(t, a, makeBatch(spec{}))
			appendT(t, b, makeBatch(spec{})) // a's file makes room for b's
			mu.Lock()
			got := strings.Join(synced, " ")
			mu.Unlock()
			if got != aLog {
				t.Fatalf("fsyncs %q, want a's log before it was closed", got)
			}
			err := a.Flush()
			if tc.failSync {
				wantErr(t, err, ErrLogFailed)
				_, err := appendRaw(a, makeBatch(spec{}))
				wantErr(t, err, ErrLogFailed)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			appendT(t, a, makeBatch(spec{}))
			if got := readAll(t, a); len(got) != 2 {
				t.Fatalf("a holds %d batches, want 2", len(got))
			}
		})
	}
}

// Files in use are never closed, even past the bound; one opened past
// the bound is closed when it is released.
func TestSegmentFilesInUseAreNotClosed(t *testing.T) {
	root := t.TempDir()
	files := NewSegmentFiles(1)
	a := openShared(t, files, filepath.Join(root, "a"), testConfig())
	b := openShared(t, files, filepath.Join(root, "b"), testConfig())
	appendT(t, a, makeBatch(spec{tag: 1}))
	appendT(t, b, makeBatch(spec{tag: 2}))
	acquire := func(p *Partition) *os.File {
		p.mu.RLock()
		defer p.mu.RUnlock()
		f, err := p.segs[0].file.acquire()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	fa := acquire(a)
	// b's write needs b's file: a's is in use, so b's opens past the
	// bound and closes when the write is done.
	appendT(t, b, makeBatch(spec{tag: 3}))
	if n := files.Open(); n != 1 {
		t.Fatalf("%d files open after b's write, want 1 (a's, in use)", n)
	}
	fb := acquire(b)
	if n, fds := files.Open(), openLogFDs(t, root); n != 2 || fds != 2 {
		t.Fatalf("%d files open (%d descriptors), want 2: both in use", n, fds)
	}
	buf := make([]byte, batchHeaderLen)
	for _, f := range []*os.File{fa, fb} {
		if _, err := f.ReadAt(buf, 0); err != nil {
			t.Fatalf("a file in use was closed: %v", err)
		}
	}
	a.segs[0].file.release()
	b.segs[0].file.release()
	if n, fds := files.Open(), openLogFDs(t, root); n != 1 || fds != 1 {
		t.Fatalf("%d files open (%d descriptors) after the releases, want 1", n, fds)
	}
	if len(readAll(t, a)) != 1 || len(readAll(t, b)) != 2 {
		t.Fatal("records lost")
	}
	if err := errors.Join(a.Close(), b.Close()); err != nil {
		t.Fatal(err)
	}
}

// fdsOn counts this process's descriptors open on path, deleted or not.
func fdsOn(t testing.TB, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("needs /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.TrimSuffix(target, " (deleted)") == path {
			n++
		}
	}
	return n
}

// A deleted segment's file is closed as soon as no read uses it: at once
// when none does, else when the last read in progress is done, which
// reads the deleted segment whole.
func TestDeletedSegmentClosedAfterLastRead(t *testing.T) {
	for _, tc := range []struct {
		name        string
		readRunning bool
		deleteFirst func(p *Partition) error
	}{
		{"DeleteRecords, no read", false, func(p *Partition) error { _, err := p.DeleteRecords(p.segs[1].base); return err }},
		{"DeleteRecords during a read", true, func(p *Partition) error { _, err := p.DeleteRecords(p.segs[1].base); return err }},
		{"retention, no read", false, func(p *Partition) error { p.EnforceRetention(time.Now()); return nil }},
		{"retention during a read", true, func(p *Partition) error { p.EnforceRetention(time.Now()); return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.SegmentBytes = 300
			dir := t.TempDir()
			p := openT(t, dir, cfg)
			var first []byte
			for i := 0; i < 20; i++ {
				b := makeBatch(spec{n: 2, tag: byte(i)})
				appendT(t, p, b)
				if i == 0 {
					first = b
				}
			}
			if len(p.segs) < 3 {
				t.Fatalf("%d segments, want several", len(p.segs))
			}
			// Retention by size deletes the first segment only.
			p.cfg.RetentionBytes = p.size - p.segs[0].size
			path := segPath(dir, p.segs[0].base, ".log")
			if fdsOn(t, path) != 1 {
				t.Fatalf("the first segment's file is not open")
			}
			inRead, release := make(chan struct{}), make(chan struct{})
			readDone := make(chan error, 1)
			if tc.readRunning {
				var once sync.Once
				swapRead(t, func(f *os.File, b []byte, off int64) (int, error) {
					if f.Name() == path {
						once.Do(func() { close(inRead); <-release })
					}
					return f.ReadAt(b, off)
				})
				go func() {
					res, err := p.Read(0, 1)
					if err == nil && string(res.Batches[crcStart:]) != string(first[crcStart:]) {
						err = fmt.Errorf("the read of the deleted segment returned other records")
					}
					readDone <- err
				}()
				<-inRead
			}
			if err := tc.deleteFirst(p); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the first segment was not deleted: %v", err)
			}
			if tc.readRunning {
				if n := fdsOn(t, path); n != 1 {
					t.Fatalf("%d descriptors on the deleted file during the read, want 1", n)
				}
				close(release)
				if err := <-readDone; err != nil {
					t.Fatalf("the read in progress: %v", err)
				}
			}
			if n := fdsOn(t, path); n != 0 {
				t.Fatalf("%d descriptors still open on the deleted segment", n)
			}
		})
	}
}

func swapRead(t *testing.T, fn func(*os.File, []byte, int64) (int, error)) {
	t.Helper()
	old := readAtFn
	readAtFn = fn
	t.Cleanup(func() { readAtFn = old })
}
