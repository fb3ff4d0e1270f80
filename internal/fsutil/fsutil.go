// Package fsutil holds the file system steps every store of mecha shares
// (Crux, the broker's logs and offsets, the catalog cache, stream
// checkpoints): replacing a file whole, positional writes, fsync and
// fdatasync, directory fsync, space allocation, and the CRC-32C table of
// their on-disk checksums.
//
// Every call goes through one place so that tests can make it fail: see
// SetFaults. What a failure means is the caller's to decide; the rule the
// stores follow is that a failed fsync is sticky (after it, the kernel may
// have dropped the dirty pages and marked them clean, so the file's
// content is unknown and the file takes no more writes).
package fsutil

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
)

// Castagnoli is the CRC-32C table of every checksum mecha writes to disk:
// Crux log records and snapshot blocks, broker record batches (the Kafka
// format's own choice) and the committed-offsets file. Hardware
// accelerated on amd64 and arm64.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrDirNotSynced is wrapped by the error of Replace (and WriteFile) when
// only the directory fsync failed: the new file is in place under its
// name, but the rename may not survive a power loss. A caller that keeps
// the file open (an append-only log compacted by replacing it) must
// reopen it either way.
var ErrDirNotSynced = errors.New("the new file is in place but the directory fsync failed")

// ErrNotSupported is returned by Allocate when the file system cannot
// preallocate; the caller then writes without preallocation.
var ErrNotSupported = errors.New("preallocation not supported by the file system")

// Faults replaces the outcome of file system calls, for tests. A nil
// field leaves its calls alone. Each hook is called with the name the file
// was opened with (a path), before the real call; the calls are made from
// the stores' own goroutines, so a hook must be safe for concurrent use.
type Faults struct {
	// Write is asked before each WriteAt (and each write of Replace):
	// it returns how many bytes of b reach the file and the error the
	// write then fails with. Returning len(b), nil lets the write
	// through; fewer bytes with a nil error is a short write.
	Write func(name string, b []byte, off int64) (int, error)
	// Sync is asked before each Sync, DataSync and SyncDir (name is the
	// directory's); an error fails the call and nothing is synced.
	Sync func(name string) error
	// Rename is asked before each Rename; an error fails it and nothing
	// is renamed.
	Rename func(oldpath, newpath string) error
	// Allocate is asked before each Allocate; an error fails it (return
	// syscall.ENOSPC for a full disk) and nothing is allocated.
	Allocate func(name string, off, n int64) error
}

// faults is read on every call from any goroutine, and set by tests
// while stores run: an atomic pointer keeps that race free.
var faults atomic.Pointer[Faults]

// SetFaults installs f for every store in the process and returns the
// function that puts the previous hooks back (once; later calls do
// nothing); tests call it as t.Cleanup(fsutil.SetFaults(...)). The hooks
// are process-wide: a test that sets them must not run in parallel with
// other tests of its package, and should match the names of its own
// files only.
func SetFaults(f Faults) (restore func()) {
	old := faults.Swap(&f)
	// Restoring twice (explicitly, then from a cleanup) must not undo
	// hooks set in between.
	var once sync.Once
	return func() { once.Do(func() { faults.Store(old) }) }
}

// WriteAt writes b at off in f, all of it or an error.
func WriteAt(f *os.File, b []byte, off int64) (int, error) {
	if h := faults.Load(); h != nil && h.Write != nil {
		if n, err := h.Write(f.Name(), b, off); n != len(b) || err != nil {
			return faultyWrite(f, b, off, n, err)
		}
	}
	return f.WriteAt(b, off)
}

// faultyWrite carries out the part of a write a fault hook let through.
func faultyWrite(f *os.File, b []byte, off int64, n int, err error) (int, error) {
	n = min(max(n, 0), len(b))
	if n > 0 {
		if _, werr := f.WriteAt(b[:n], off); werr != nil {
			return 0, werr
		}
	}
	if err == nil {
		err = io.ErrShortWrite
	}
	return n, err
}

// Sync fsyncs f: its data and all of its metadata.
func Sync(f *os.File) error {
	if err := syncFault(f.Name()); err != nil {
		return err
	}
	return f.Sync()
}

// DataSync fdatasyncs f: its data and the metadata needed to read it back
// (its size), not its times. That is all a log whose length is known from
// its content needs, and it saves a journal commit per sync.
func DataSync(f *os.File) error {
	if err := syncFault(f.Name()); err != nil {
		return err
	}
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

func syncFault(name string) error {
	if h := faults.Load(); h != nil && h.Sync != nil {
		if err := h.Sync(name); err != nil {
			return &os.PathError{Op: "fsync", Path: name, Err: err}
		}
	}
	return nil
}

// SyncDir fsyncs a directory, which makes the names created, renamed or
// removed in it durable: without it a new file's data can survive a power
// loss while its name does not. File systems that cannot fsync a
// directory (EINVAL) order those operations themselves, and are let be.
func SyncDir(dir string) error {
	if err := syncFault(dir); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// Rename renames oldpath to newpath (replacing it), as os.Rename does;
// the caller fsyncs the directory to make it durable.
func Rename(oldpath, newpath string) error {
	if h := faults.Load(); h != nil && h.Rename != nil {
		if err := h.Rename(oldpath, newpath); err != nil {
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
		}
	}
	return os.Rename(oldpath, newpath)
}

// Allocate reserves the bytes [off, off+n) of f on the disk, growing the
// file (with zeros) when that runs past its end, so that later writes
// there cannot fail for want of space. It returns ErrNotSupported on file
// systems that cannot preallocate, and an error wrapping syscall.ENOSPC
// when the disk is full.
func Allocate(f *os.File, off, n int64) error {
	var err error
	if h := faults.Load(); h != nil && h.Allocate != nil {
		err = h.Allocate(f.Name(), off, n)
	}
	for err == nil {
		if err = syscall.Fallocate(int(f.Fd()), 0, off, n); err != syscall.EINTR {
			break
		}
		err = nil
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS):
		return fmt.Errorf("%s: %w", f.Name(), ErrNotSupported)
	}
	return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
}

// WriteFile replaces the file at path with b whole: see Replace.
func WriteFile(path string, b []byte) error {
	return Replace(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// Replace replaces the file at path with what fill writes: the content
// goes to path+".tmp", which is fsynced, renamed over path, and the
// directory fsynced, so a crash at any point leaves the old file or the
// new one whole, never a mix. fill may be called for large content: what
// it writes goes to the file unbuffered, so it should buffer itself when
// it writes in small pieces. On an error the temporary file is removed
// and path is untouched, unless the error wraps ErrDirNotSynced.
func Replace(path string, fill func(w io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	err = fill(&fileWriter{f: f})
	if err == nil {
		err = Sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("replace %s: %w: %w", path, ErrDirNotSynced, err)
	}
	return nil
}

// fileWriter writes a file sequentially through WriteAt, so that the
// fault hooks see the writes of Replace too.
type fileWriter struct {
	f   *os.File
	off int64
}

func (w *fileWriter) Write(b []byte) (int, error) {
	n, err := WriteAt(w.f, b, w.off)
	w.off += int64(n)
	return n, err
}
