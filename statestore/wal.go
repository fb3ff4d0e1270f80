package statestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"mecha/internal/fsutil"
)

// FsyncPolicy says when the log reaches the disk. Under every policy a
// write is acknowledged only once its log record is written to the OS
// (write(2) returned): a crash of the process alone (kill -9, a panic, the
// OOM killer) loses no acknowledged write. The policies differ in what a
// crash of the machine (power loss, kernel panic) may lose.
type FsyncPolicy int

// Fsync policies.
//
//   - FsyncAlways: a write is acknowledged after the group commit that
//     holds it is written and fsynced. A machine crash loses no
//     acknowledged write.
//   - FsyncInterval (default): a write is acknowledged after the group
//     commit that holds it is written; a background fsync runs every
//     interval (10 ms), as Redis's appendfsync everysec does. A machine
//     crash loses at most the writes of the last interval (plus the
//     fsync under way).
//   - FsyncNever: as interval, without the fsync: a machine crash loses
//     whatever the OS had not written back yet.
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
// allocated (Options.preallocBytes, for tests, aside). Allocating before
// a record is accepted is what makes a full disk fail the write instead
// of losing an acknowledged one later.
const preallocChunk = 16 << 20

// wal is the write-ahead log: records are appended to a buffer, and a
// group commit writes all that is buffered with one write(2), for every
// writer waiting on it.
//
// The records appended between two commits form a batch. The writer
// whose record opens a batch leads its commit: it waits for the commit
// under way (ioMu), then writes everything appended meanwhile, its own
// record and those of the writers that came after it. While one batch is
// written the next one fills, so the more writers wait, the more records
// each write(2) carries.
type wal struct {
	dir    string
	policy FsyncPolicy
	// prealloc is how far ahead of the write position the segment is
	// allocated.
	prealloc int64

	// ioMu serializes group commits (file writes) and rotation. Lock
	// order: ioMu, then syncMu, then mu.
	ioMu sync.Mutex
	// syncMu keeps the interval fsync, which does not take ioMu (group
	// commits go on writing while the disk syncs), off a file that
	// rotation or close is closing.
	syncMu sync.Mutex

	// mu guards the fields below.
	mu  sync.Mutex
	cur *batch // the batch buf holds
	// unled says buf holds only records appended by appendUnled: the
	// next writer that waits leads the batch's commit.
	unled    bool
	buf      []byte
	spare    []byte
	appended uint64 // LSN after the last appended record
	written  uint64 // LSN up to which the log is written to the OS: it survives a process crash
	synced   uint64 // LSN up to which the log is fsynced: it survives a machine crash
	// failed is set after a write or fsync error, and the log takes no
	// more records: after a failed fsync the kernel may have dropped the
	// dirty pages and marked them clean, so what the file holds is
	// unknown until recovery reads it again.
	failed    error
	f         *os.File
	segStart  uint64 // LSN of the first byte of f
	fileOff   int64  // next write offset in f
	allocated int64  // bytes of f allocated
	noFalloc  bool   // the filesystem does not support fallocate
	closed    bool
}

// openWAL opens the log for appending at LSN end, in segment segStart whose
// valid data ends at fileOff.
func openWAL(dir string, policy FsyncPolicy, prealloc int64, segStart uint64, fileOff int64) (*wal, error) {
	end := segStart + uint64(fileOff)
	w := &wal{dir: dir, policy: policy, prealloc: prealloc, segStart: segStart, fileOff: fileOff,
		appended: end, written: end, synced: end, cur: newBatch()}
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

// batch is the records appended between two group commits.
type batch struct {
	// done is closed by the commit that writes the batch, after it set
	// err.
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// ticket is what append hands the writer of a record: the batch that
// holds it, whether the writer leads that batch's commit, and the LSN
// after the record.
type ticket struct {
	b    *batch
	lead bool
	lsn  uint64
}

// append adds a record to the buffer. It fails without side effects when
// the log has failed or the disk cannot hold the record.
func (w *wal) append(rec []byte) (ticket, error) {
	return w.appendRec(rec, true)
}

// appendUnled adds a record that its writer commits later, with others
// (Engine.FlushLog), and does not wait for: it never leads a batch, so a
// writer that appends after it and waits commits the batch. (A leader
// that never commits would leave that writer waiting, maybe while it
// holds a lock the flusher needs.)
func (w *wal) appendUnled(rec []byte) error {
	_, err := w.appendRec(rec, false)
	return err
}

func (w *wal) appendRec(rec []byte, leads bool) (ticket, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ticket{}, ErrClosed
	}
	if w.failed != nil {
		return ticket{}, fmt.Errorf("%w: %w", ErrFailed, w.failed)
	}
	if need := w.fileOff + int64(len(w.buf)) + int64(len(rec)); need > w.allocated && !w.noFalloc {
		if err := w.allocate(need); err != nil {
			return ticket{}, err
		}
	}
	t := ticket{b: w.cur}
	switch {
	case !leads:
		w.unled = w.unled || len(w.buf) == 0
	case len(w.buf) == 0 || w.unled:
		t.lead, w.unled = true, false
	}
	w.buf = append(w.buf, rec...)
	w.appended += uint64(len(rec))
	t.lsn = w.appended
	return t, nil
}

// allocate grows the segment's allocation to hold need bytes, a chunk
// ahead when the disk has room for it. With less room than that it tries
// a sixteenth of a chunk ahead, then only need: a write still gets the
// space it needs itself, and the store goes on until the disk is really
// full. mu is held.
func (w *wal) allocate(need int64) error {
	var err error
	for _, ahead := range []int64{w.prealloc, w.prealloc / 16, 0} {
		size := need + ahead
		err = fsutil.Allocate(w.f, w.allocated, size-w.allocated)
		if err == nil {
			w.allocated = size
			return nil
		}
		if errors.Is(err, fsutil.ErrNotSupported) {
			w.noFalloc = true
			return nil
		}
		if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
			break
		}
	}
	return fmt.Errorf("%w: allocating log space: %w", ErrNoSpace, err)
}

// commit is one group commit: it writes everything buffered and, with
// sync, fsyncs the file.
func (w *wal) commit(sync bool) error {
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	return w.commitLocked(sync)
}

func (w *wal) commitLocked(sync bool) error {
	w.mu.Lock()
	if w.closed {
		// Nothing is buffered: close committed it, and takes no more.
		w.mu.Unlock()
		return ErrClosed
	}
	b, data, end, f, off := w.cur, w.buf, w.appended, w.f, w.fileOff
	if len(data) > 0 {
		w.cur = newBatch()
		w.buf, w.spare = w.spare[:0], nil
		w.unled = false
	}
	if w.failed != nil {
		err := w.failed
		w.mu.Unlock()
		if len(data) > 0 {
			b.err = err
			close(b.done)
		}
		return err
	}
	w.fileOff += int64(len(data))
	sync = sync && w.synced < end
	w.mu.Unlock()

	var err error
	if len(data) > 0 {
		if _, err = fsutil.WriteAt(f, data, off); err != nil {
			err = fmt.Errorf("writing %s: %w", f.Name(), err)
		}
	}
	if err == nil && sync {
		if err = fsutil.DataSync(f); err != nil {
			err = fmt.Errorf("fsync: %w", err)
		}
	}
	w.mu.Lock()
	switch {
	case err != nil:
		w.failed = err
	case w.failed != nil:
		// The interval fsync failed meanwhile: the log takes no more
		// records, and acknowledges none.
		err = w.failed
	default:
		w.written = max(w.written, end)
		if sync {
			w.synced = max(w.synced, end)
		}
	}
	if len(data) == 0 {
		// Nothing was swapped out: data is still the buffer appends go
		// to, and must not become the spare.
		w.mu.Unlock()
		return err
	}
	// Keep the written buffer for reuse while it is about the size the
	// load needs; after a burst, a mostly empty big buffer is dropped
	// rather than kept forever.
	if cap(data) <= 1<<20 || cap(data) <= 4*len(data) {
		w.spare = data
	}
	w.mu.Unlock()
	b.err = err
	close(b.done)
	return err
}

// wait blocks until the record of t is written to the OS and, with sync,
// fsynced. The writer that leads t's batch commits it, once the commit
// before it is done.
func (w *wal) wait(t ticket, sync bool) error {
	if t.lead {
		// Writers that are runnable now (woken by the last commit,
		// most of them) get to append to this batch first: with 16
		// writers on two cores that is several records per write(2)
		// instead of about one, for the cost of a yield.
		runtime.Gosched()
		w.ioMu.Lock()
		select {
		case <-t.b.done:
			// Rotation, close or Sync committed the batch already.
		default:
			// Batches are committed in order, under ioMu: a batch not
			// done is the one filling, and this commit seals it.
			_ = w.commitLocked(sync)
		}
		w.ioMu.Unlock()
	}
	<-t.b.done
	if errors.Is(t.b.err, ErrClosed) {
		return ErrClosed
	} else if t.b.err != nil {
		return fmt.Errorf("%w: %w", ErrFailed, t.b.err)
	}
	if sync {
		// Committed without an fsync (by rotation under never, say).
		w.mu.Lock()
		synced := w.synced
		w.mu.Unlock()
		if synced < t.lsn {
			if err := w.commit(true); err != nil {
				return fmt.Errorf("%w: %w", ErrFailed, err)
			}
		}
	}
	return nil
}

// syncWritten fsyncs what group commits have written since the last
// fsync: the interval fsync. It returns an error only when this fsync
// failed, so that a failure is reported once.
func (w *wal) syncWritten() error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.mu.Lock()
	end, f := w.written, w.f
	if w.failed != nil || w.closed || w.synced >= end {
		w.mu.Unlock()
		return nil
	}
	w.mu.Unlock()
	// Rotation fsyncs a segment before it seals it (under this policy),
	// so everything written and not yet synced is in f.
	err := fsutil.DataSync(f)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.failed == nil {
			w.failed = fmt.Errorf("fsync: %w", err)
		}
		return err
	}
	if w.failed == nil {
		w.synced = max(w.synced, end)
	}
	return nil
}

// rotate writes what is buffered (and fsyncs it, unless the policy is
// never) and starts a new segment; it returns the new segment's start
// LSN. Records appended from then on go to the new segment.
func (w *wal) rotate() (uint64, error) {
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	if err := w.commitLocked(w.policy != FsyncNever); err != nil {
		return 0, err
	}
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fileOff == 0 {
		// The current segment is empty: it already starts here.
		return w.segStart, nil
	}
	// Appends that raced in after the commit are still buffered: they
	// belong to the new segment, which starts where the old one ends.
	start := w.segStart + uint64(w.fileOff)
	f, err := os.OpenFile(filepath.Join(w.dir, segName(start)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	if err := fsutil.SyncDir(w.dir); err != nil {
		// The new segment's name may or may not survive a power loss,
		// and a later rotation could not create it again: the log
		// stops here, as after a failed fsync. It ends where the new
		// segment starts, so recovery finds the two consistent.
		f.Close()
		w.failed = fmt.Errorf("creating segment %s: %w", segName(start), err)
		return 0, w.failed
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

// run fsyncs what was written every interval until done is closed,
// under FsyncInterval; under the other policies it has nothing to do. It
// is the log's background goroutine, owned by the engine.
func (w *wal) run(interval time.Duration, done <-chan struct{}, onErr func(error)) {
	if w.policy != FsyncInterval {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if err := w.syncWritten(); err != nil {
			onErr(err)
		}
	}
}

// close writes (and, unless the policy is never, fsyncs) what is buffered
// and closes the file. It keeps the file's preallocated tail (zeros, the
// end of the log for recovery): the first write after a restart goes
// there, without needing new space on a disk that may have filled up
// meanwhile.
func (w *wal) close() error {
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	err := w.commitLocked(w.policy != FsyncNever)
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.mu.Lock()
	w.closed = true
	f := w.f
	// Records appended after that commit are not written: their writers
	// hear the store closed, and nothing of them was applied.
	pending := len(w.buf) > 0
	b := w.cur
	w.buf = nil
	w.mu.Unlock()
	if pending {
		b.err = ErrClosed
		close(b.done)
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// scanSegment reads the records of one segment, calling fn with each op
// list. It returns the offset where valid data ends. A damaged record is a
// torn tail, and is cut off by the caller, when it is in the last segment
// and nothing but zeros follows it; otherwise it is corruption.
func scanSegment(path string, last bool, fn func(ops []op) error) (end int64, torn bool, err error) {
	seg, err := readSegment(path)
	if err != nil {
		return 0, false, err
	}
	lastNonZero := seg.nonZero - 1
	off := 0
	for {
		if off+recordHeader > seg.size {
			if off <= lastNonZero {
				return classify(path, off, last, "truncated record header")
			}
			return int64(off), false, nil
		}
		seg.upTo(off + recordHeader)
		n := binary.BigEndian.Uint32(seg.b[off:])
		if n == 0 {
			if off <= lastNonZero {
				return classify(path, off, last && !validRecordAfter(seg, off+1), "zero length record followed by data")
			}
			return int64(off), false, nil
		}
		// A damaged record is a torn tail only when no intact record
		// follows it: a crash tears the last write, it does not leave
		// good records behind a bad one.
		if n > maxRecord || off+recordHeader+int(n) > seg.size {
			return classify(path, off, last && !validRecordAfter(seg, off+1), fmt.Sprintf("record length %d runs past the end of the segment", n))
		}
		seg.upTo(off + recordHeader + int(n))
		payload := seg.b[off+recordHeader : off+recordHeader+int(n)]
		if crc32.Checksum(payload, fsutil.Castagnoli) != binary.BigEndian.Uint32(seg.b[off+4:]) {
			torn := last && off+recordHeader+int(n) > lastNonZero && !validRecordAfter(seg, off+1)
			return classify(path, off, torn, "checksum mismatch")
		}
		ops, derr := decodePayload(payload)
		if derr != nil {
			return 0, false, fmt.Errorf("%w: %s at offset %d: %w", ErrCorrupt, path, off, derr)
		}
		if err := fn(ops); err != nil {
			return 0, false, err
		}
		off += recordHeader + int(n)
	}
}

// segmentBytes is a segment read up to its last non-zero byte. The bytes
// after it, up to size, are zeros (mostly the preallocated tail, up to
// 16 MiB): they are only put in memory as far as a record reaches into
// them, which makes scanning them the same as scanning the whole file.
type segmentBytes struct {
	b       []byte
	nonZero int // bytes up to the last non-zero one: the first len(b) before any upTo
	size    int
}

// upTo makes b hold at least the first n bytes of the segment (n ≤ size).
func (s *segmentBytes) upTo(n int) {
	if n > len(s.b) {
		s.b = append(s.b, make([]byte, n-len(s.b))...)
	}
}

// readSegment reads the segment at path up to its last non-zero byte.
func readSegment(path string) (*segmentBytes, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	end, err := dataEnd(f, st.Size())
	if err != nil {
		return nil, err
	}
	b := make([]byte, end)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return &segmentBytes{b: b, nonZero: len(b), size: int(st.Size())}, nil
}

// dataEnd returns the offset after the last non-zero byte of the first
// size bytes of f, reading backwards a block at a time into one buffer,
// so that the preallocated zeros are never all in memory.
func dataEnd(f *os.File, size int64) (int64, error) {
	buf := make([]byte, min(size, 1<<20))
	for end := size; end > 0; {
		n := min(end, int64(len(buf)))
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return 0, fmt.Errorf("reading %s: %w", f.Name(), err)
		}
		if i := lastNonZeroByte(buf[:n]); i >= 0 {
			return end - n + int64(i) + 1, nil
		}
		end -= n
	}
	return 0, nil
}

// lastNonZeroByte returns the index of the last byte of data that is not
// zero, -1 when there is none; zeros are skipped a block at a time.
func lastNonZeroByte(data []byte) int {
	const block = 4096
	var zeros [block]byte
	end := len(data)
	for end >= block && bytes.Equal(data[end-block:end], zeros[:]) {
		end -= block
	}
	for end > 0 && data[end-1] == 0 {
		end--
	}
	return end - 1
}

// validRecordAfter reports whether an intact record (sane length, matching
// checksum, decodable payload) starts anywhere at or after from. It only
// runs when recovery met a damaged record. A record cannot start in the
// zeros after the last non-zero byte (its length would be 0).
func validRecordAfter(seg *segmentBytes, from int) bool {
	lastNonZero := seg.nonZero - 1
	for off := from; off <= lastNonZero && off+recordHeader <= seg.size; off++ {
		seg.upTo(off + recordHeader)
		n := int(binary.BigEndian.Uint32(seg.b[off:]))
		if n == 0 || n > maxRecord || off+recordHeader+n > seg.size {
			continue
		}
		seg.upTo(off + recordHeader + n)
		payload := seg.b[off+recordHeader : off+recordHeader+n]
		if crc32.Checksum(payload, fsutil.Castagnoli) != binary.BigEndian.Uint32(seg.b[off+4:]) {
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
