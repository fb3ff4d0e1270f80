package statestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"mecha/internal/fsutil"
)

// FsyncPolicy says when the log reaches the disk.
type FsyncPolicy int

// Fsync policies.
//
//   - FsyncAlways: a write is acknowledged after the group commit that
//     holds it is fsynced. A crash loses no acknowledged write.
//   - FsyncInterval (default): a write is acknowledged once it is in the
//     log buffer; a group commit writes and fsyncs the buffer at least
//     every interval (10 ms). A crash of the machine loses at most the
//     writes of the last interval plus the commit under way; a crash of
//     the process alone loses at most the buffer not yet written (the
//     same window).
//   - FsyncNever: the buffer is written to the OS every interval and
//     never fsynced. A process crash loses at most one interval; a machine
//     crash loses whatever the OS had not written back.
const (
	FsyncInterval FsyncPolicy = iota
	FsyncAlways
	FsyncNever
)

// ParseFsyncPolicy reads "always", "interval" or "never".
func ParseFsyncPolicy(s string) (FsyncPolicy, error) {
	switch strings.ToLower(s) {
	case "", "interval":
		return FsyncInterval, nil
	case "always":
		return FsyncAlways, nil
	case "never":
		return FsyncNever, nil
	}
	return 0, fmt.Errorf("fsync policy %q is not always, interval or never", s)
}

// String names the policy as the fsync metadata spells it.
func (p FsyncPolicy) String() string {
	switch p {
	case FsyncAlways:
		return "always"
	case FsyncNever:
		return "never"
	}
	return "interval"
}

// ErrCorrupt is wrapped by recovery errors about a damaged log record that
// is not a torn tail: recovery stops there and names the file and offset.
var ErrCorrupt = errors.New("corrupt log record")

// segment file names: wal-<start LSN, 20 digits>.log, where the LSN is the
// byte position in the whole log.
const (
	segPrefix = "wal-"
	segSuffix = ".log"
)

func segName(start uint64) string { return fmt.Sprintf("%s%020d%s", segPrefix, start, segSuffix) }

// listSegments returns the start LSNs of the segments in dir, sorted.
func listSegments(dir string) ([]uint64, error) { return listNumbered(dir, segPrefix, segSuffix) }

// listNumbered returns the numbers of the files in dir named
// <prefix><number><suffix>, sorted.
func listNumbered(dir, prefix, suffix string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, suffix) {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, prefix), suffix), 10, 64)
		if err == nil {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// preallocChunk is how far ahead of the write position the segment is
// allocated. Allocating before a record is accepted is what makes a full
// disk fail the write instead of losing an acknowledged one later.
const preallocChunk = 16 << 20

// wal is the write-ahead log: an append buffer flushed by group commit.
type wal struct {
	dir      string
	policy   FsyncPolicy
	segBytes int64

	// ioMu serializes file writes, syncs and rotation. Lock order: ioMu,
	// then mu.
	ioMu sync.Mutex

	// mu guards the fields below; cond waits on it for durability.
	mu        sync.Mutex
	cond      *sync.Cond
	buf       []byte
	spare     []byte
	appended  uint64 // LSN after the last appended record
	durable   uint64 // LSN up to which the log is written (and fsynced unless never)
	failed    error  // set after a write or fsync error; the log takes no more
	flushing  bool
	f         *os.File
	segStart  uint64 // LSN of the first byte of f
	fileOff   int64  // next write offset in f
	allocated int64  // bytes of f allocated
	noFalloc  bool   // the filesystem does not support fallocate
	closed    bool
}

// openWAL opens the log for appending at LSN end, in segment segStart whose
// valid data ends at fileOff.
func openWAL(dir string, policy FsyncPolicy, segBytes int64, segStart uint64, fileOff int64) (*wal, error) {
	w := &wal{dir: dir, policy: policy, segBytes: segBytes, segStart: segStart, fileOff: fileOff,
		appended: segStart + uint64(fileOff), durable: segStart + uint64(fileOff)}
	w.cond = sync.NewCond(&w.mu)
	f, err := os.OpenFile(filepath.Join(dir, segName(segStart)), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	w.f, w.allocated = f, st.Size()
	if err := fsutil.SyncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// append adds a record to the buffer and returns the LSN after it. It
// fails without side effects when the log has failed or the disk cannot
// hold the record.
func (w *wal) append(rec []byte) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, ErrClosed
	}
	if w.failed != nil {
		return 0, fmt.Errorf("%w: %v", ErrFailed, w.failed)
	}
	need := w.fileOff + int64(len(w.buf)) + int64(len(rec))
	if need > w.allocated && !w.noFalloc {
		size := need + preallocChunk
		if err := fsutil.Allocate(w.f, w.allocated, size-w.allocated); err != nil {
			if errors.Is(err, fsutil.ErrNotSupported) {
				w.noFalloc = true
			} else {
				return 0, fmt.Errorf("%w: allocating log space: %v", ErrNoSpace, err)
			}
		} else {
			w.allocated = size
		}
	}
	w.buf = append(w.buf, rec...)
	w.appended += uint64(len(rec))
	return w.appended, nil
}

// flush writes the buffer and, unless the policy is never, fsyncs it.
func (w *wal) flush() error {
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	return w.flushLocked()
}

func (w *wal) flushLocked() error {
	w.mu.Lock()
	if w.failed != nil {
		err := w.failed
		w.mu.Unlock()
		return err
	}
	data, end, f, off := w.buf, w.appended, w.f, w.fileOff
	w.buf, w.spare = w.spare[:0], nil
	w.fileOff += int64(len(data))
	w.mu.Unlock()

	var err error
	if len(data) > 0 {
		_, err = fsutil.WriteAt(f, data, off)
	}
	if err == nil && w.policy != FsyncNever && len(data) > 0 {
		err = fsutil.DataSync(f)
	}
	w.mu.Lock()
	if err != nil {
		w.failed = err
	} else if end > w.durable {
		w.durable = end
	}
	// Keep the written buffer for reuse while it is about the size the
	// load needs; after a burst, a mostly empty big buffer is dropped
	// rather than kept forever.
	if cap(data) <= 1<<20 || cap(data) <= 4*len(data) {
		w.spare = data
	}
	w.cond.Broadcast()
	w.mu.Unlock()
	return err
}

// waitDurable blocks until the log is durable up to lsn. One waiter at a
// time leads a group commit; the others wait for it and find their records
// included (group commit).
func (w *wal) waitDurable(lsn uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.durable < lsn {
		if w.failed != nil {
			return fmt.Errorf("%w: %v", ErrFailed, w.failed)
		}
		if w.closed {
			return ErrClosed
		}
		if w.flushing {
			w.cond.Wait()
			continue
		}
		w.flushing = true
		w.mu.Unlock()
		err := w.flush()
		w.mu.Lock()
		w.flushing = false
		w.cond.Broadcast()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrFailed, err)
		}
	}
	return nil
}

// rotate flushes and starts a new segment; it returns the new segment's
// start LSN. Records appended from then on go to the new segment.
func (w *wal) rotate() (uint64, error) {
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	if err := w.flushLocked(); err != nil {
		return 0, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fileOff == 0 {
		// The current segment is empty: it already starts here.
		return w.segStart, nil
	}
	// Appends that raced in after the flush are still buffered: they
	// belong to the new segment, which starts where the old one ends.
	start := w.segStart + uint64(w.fileOff)
	f, err := os.OpenFile(filepath.Join(w.dir, segName(start)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	if err := fsutil.SyncDir(w.dir); err != nil {
		f.Close()
		return 0, err
	}
	old := w.f
	// Give back the old segment's unused preallocation.
	_ = old.Truncate(w.fileOff)
	_ = old.Close()
	w.f, w.segStart, w.fileOff, w.allocated = f, start, 0, 0
	return start, nil
}

// size is how many bytes the current segment holds.
func (w *wal) size() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fileOff + int64(len(w.buf))
}

// run flushes every interval until done is closed. It is the log's
// background goroutine, owned by the engine.
func (w *wal) run(interval time.Duration, done <-chan struct{}, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		w.mu.Lock()
		pending := len(w.buf) > 0
		w.mu.Unlock()
		if pending {
			if err := w.flush(); err != nil {
				onErr(err)
			}
		}
	}
}

// close flushes what is buffered and closes the file.
func (w *wal) close() error {
	err := w.flush()
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	f := w.f
	w.mu.Unlock()
	if terr := f.Truncate(w.fileOff); terr != nil && err == nil {
		err = terr
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// scanSegment reads the records of one segment, calling fn with each op
// list. It returns the offset where valid data ends. A damaged record is a
// torn tail, and is truncated by the caller, when it is in the last
// segment and nothing but zeros follows it; otherwise it is corruption.
func scanSegment(path string, last bool, fn func(ops []op) error) (end int64, torn bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false, err
	}
	lastNonZero := len(data) - 1
	for lastNonZero >= 0 && data[lastNonZero] == 0 {
		lastNonZero--
	}
	off := 0
	for {
		if off+recordHeader > len(data) {
			if off <= lastNonZero {
				return classify(path, off, last, "truncated record header")
			}
			return int64(off), false, nil
		}
		n := binary.BigEndian.Uint32(data[off:])
		if n == 0 {
			if off <= lastNonZero {
				return classify(path, off, last && !validRecordAfter(data, off+1), "zero length record followed by data")
			}
			return int64(off), false, nil
		}
		// A damaged record is a torn tail only when no intact record
		// follows it: a crash tears the last write, it does not leave
		// good records behind a bad one.
		if n > maxRecord || off+recordHeader+int(n) > len(data) {
			return classify(path, off, last && !validRecordAfter(data, off+1), fmt.Sprintf("record length %d runs past the end of the segment", n))
		}
		payload := data[off+recordHeader : off+recordHeader+int(n)]
		if crc32.Checksum(payload, fsutil.Castagnoli) != binary.BigEndian.Uint32(data[off+4:]) {
			torn := last && off+recordHeader+int(n) > lastNonZero && !validRecordAfter(data, off+1)
			return classify(path, off, torn, "checksum mismatch")
		}
		ops, derr := decodePayload(payload)
		if derr != nil {
			return 0, false, fmt.Errorf("%w: %s at offset %d: %v", ErrCorrupt, path, off, derr)
		}
		if err := fn(ops); err != nil {
			return 0, false, err
		}
		off += recordHeader + int(n)
	}
}

// validRecordAfter reports whether an intact record (sane length, matching
// checksum, decodable payload) starts anywhere at or after from. It only
// runs when recovery met a damaged record.
func validRecordAfter(data []byte, from int) bool {
	for off := from; off+recordHeader <= len(data); off++ {
		n := int(binary.BigEndian.Uint32(data[off:]))
		if n == 0 || n > maxRecord || off+recordHeader+n > len(data) {
			continue
		}
		payload := data[off+recordHeader : off+recordHeader+n]
		if crc32.Checksum(payload, fsutil.Castagnoli) != binary.BigEndian.Uint32(data[off+4:]) {
			continue
		}
		if _, err := decodePayload(payload); err == nil {
			return true
		}
	}
	return false
}

func classify(path string, off int, torn bool, why string) (int64, bool, error) {
	if torn {
		return int64(off), true, nil
	}
	return 0, false, fmt.Errorf("%w: %s at offset %d: %s", ErrCorrupt, path, off, why)
}
