package storage

import (
	"container/list"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"mecha/internal/fsutil"
)

// SegmentFiles bounds the segment files held open across the partitions
// that share it: a file is opened when a read or write needs it and, once
// no one is using it, stays open in a least-recently-used list until room
// is needed for another. Without it the broker would hold a descriptor per
// segment of every partition, and a few thousand partitions would exhaust
// the process's descriptors, leaving none for connections.
//
// The bound is soft: files in use are never closed, so when more than max
// are in use at once (a read or write on each), more are open, and the
// extra ones are closed as soon as they are released. A file evicted with
// writes not yet fsynced is fsynced before it is closed: a writeback error
// must reach the partition (as ErrLogFailed on its next fsync), and would
// be lost with the last descriptor of the file. That fsync runs in
// whichever request needed the room, so a log whose active segments
// outnumber max pays for it in latency; size max above the partitions
// written at once.
type SegmentFiles struct {
	max int // 0: no bound

	// tailReads and fileReads count the reads of its partitions served
	// from their tail caches and from the files.
	tailReads, fileReads atomic.Int64

	mu   sync.Mutex // guards open, lru and the state of every segFile
	open int        // files open, including those being closed
	lru  list.List  // of *segFile open and unused, least recently used first
}

// NewSegmentFiles returns a SegmentFiles holding at most max files open
// (beyond those in use); max <= 0 means no bound.
func NewSegmentFiles(max int) *SegmentFiles {
	if max < 0 {
		max = 0
	}
	return &SegmentFiles{max: max}
}

// Open reports how many segment files are open now.
func (c *SegmentFiles) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// Max reports the bound, 0 for none.
func (c *SegmentFiles) Max() int { return c.max }

// OpenPartition opens (or creates) the partition log in dir with its
// segment files held through c. Open is OpenPartition on a SegmentFiles
// of its own, without a bound.
func (c *SegmentFiles) OpenPartition(dir string, cfg Config) (*Partition, error) {
	return open(dir, cfg, c)
}

// errFileRetired is a segment file used after its segment was deleted or
// its partition closed; the partition lock keeps that from happening.
var errFileRetired = errors.New("segment file retired")

// segFile is one segment's .log file. A user takes it with acquire (which
// opens it when it is closed) and gives it back with release. Every field
// but path is guarded by c.mu.
type segFile struct {
	c    *SegmentFiles
	path string

	f    *os.File      // nil while closed
	refs int           // users between acquire and release
	elem *list.Element // in c.lru while open and unused
	// dirty: written since the last fsync through this handle, so an
	// eviction must fsync before it closes.
	dirty bool
	// syncErr is a failed fsync at an eviction, for the next sync to
	// report.
	syncErr error
	// retired: the segment is gone or its partition closed. The file is
	// never opened again and is closed when its last user releases it.
	retired bool
}

// openFile opens path with flag and returns it acquired: the caller
// releases it.
func (c *SegmentFiles) openFile(path string, flag int) (*segFile, *os.File, error) {
	c.makeRoom()
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		c.mu.Lock()
		c.open--
		c.mu.Unlock()
		return nil, nil, err
	}
	return &segFile{c: c, path: path, f: f, refs: 1}, f, nil
}

// evicted is a file taken out of the list to be closed.
type evicted struct {
	sf    *segFile
	f     *os.File
	dirty bool
}

// makeRoom counts a file about to be opened, first closing the least
// recently used unused files while the bound is reached.
func (c *SegmentFiles) makeRoom() {
	c.mu.Lock()
	var out []evicted
	for c.max > 0 && c.open >= c.max && c.lru.Len() > 0 {
		out = append(out, c.evictLocked(c.lru.Front().Value.(*segFile)))
	}
	c.open++
	c.mu.Unlock()
	for _, e := range out {
		c.closeEvicted(e)
	}
}

// evictLocked takes sf's file out of use; the caller closes it with
// closeEvicted after dropping c.mu. The count drops at once, so that
// concurrent evictions do not close more than needed.
func (c *SegmentFiles) evictLocked(sf *segFile) evicted {
	if sf.elem != nil {
		c.lru.Remove(sf.elem)
		sf.elem = nil
	}
	e := evicted{sf: sf, f: sf.f, dirty: sf.dirty}
	sf.f, sf.dirty = nil, false
	c.open--
	return e
}

func (c *SegmentFiles) closeEvicted(e evicted) {
	if e.dirty {
		if err := fsutil.Sync(e.f); err != nil {
			c.mu.Lock()
			if e.sf.syncErr == nil {
				e.sf.syncErr = fmt.Errorf("fsync %s before closing it: %w", e.sf.path, err)
			}
			c.mu.Unlock()
		}
	}
	_ = e.f.Close()
}

// acquire returns the open file, opening it when it was evicted. The
// caller must hold its partition's lock (shared is enough), so that the
// segment cannot be deleted meanwhile.
func (sf *segFile) acquire() (*os.File, error) {
	c := sf.c
	c.mu.Lock()
	if sf.retired {
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", sf.path, errFileRetired)
	}
	sf.refs++
	if sf.elem != nil {
		c.lru.Remove(sf.elem)
		sf.elem = nil
	}
	if f := sf.f; f != nil {
		c.mu.Unlock()
		return f, nil
	}
	c.mu.Unlock()
	c.makeRoom()
	f, err := os.OpenFile(sf.path, os.O_RDWR, 0o644)
	c.mu.Lock()
	if err != nil {
		c.open--
		c.mu.Unlock()
		sf.release()
		return nil, fmt.Errorf("reopen segment: %w", err)
	}
	if sf.f != nil {
		// Another user reopened it meanwhile: keep theirs.
		c.open--
		mine := f
		f = sf.f
		c.mu.Unlock()
		_ = mine.Close()
		return f, nil
	}
	sf.f = f
	c.mu.Unlock()
	return f, nil
}

// release gives back a file from acquire or openFile. The last user of a
// retired file closes it; otherwise the file joins the unused list, or is
// closed at once when the bound was passed while it was in use.
func (sf *segFile) release() {
	c := sf.c
	c.mu.Lock()
	sf.refs--
	if sf.refs > 0 || sf.f == nil {
		c.mu.Unlock()
		return
	}
	if sf.retired || (c.max > 0 && c.open > c.max) {
		e := c.evictLocked(sf)
		c.mu.Unlock()
		c.closeEvicted(e)
		return
	}
	sf.elem = c.lru.PushBack(sf)
	c.mu.Unlock()
}

// markDirty records a write (or truncation) through the acquired file.
func (sf *segFile) markDirty() {
	sf.c.mu.Lock()
	sf.dirty = true
	sf.c.mu.Unlock()
}

// sync fsyncs f, acquired from sf, and reports a failed fsync of an
// eviction since the last sync first: the pages it covered may be gone.
func (sf *segFile) sync(f *os.File) error {
	sf.c.mu.Lock()
	prev := sf.syncErr
	sf.syncErr, sf.dirty = nil, false
	sf.c.mu.Unlock()
	if prev != nil {
		return prev
	}
	return fsutil.Sync(f)
}

// retire closes the file once its last user releases it (at once when it
// has none) and refuses new users: its segment was deleted, or its
// partition closed. A failed fsync of an eviction not yet reported is
// returned.
func (sf *segFile) retire() error {
	c := sf.c
	c.mu.Lock()
	if sf.retired {
		c.mu.Unlock()
		return nil
	}
	sf.retired = true
	err := sf.syncErr
	sf.syncErr = nil
	if sf.refs > 0 || sf.f == nil {
		c.mu.Unlock()
		return err
	}
	e := c.evictLocked(sf)
	c.mu.Unlock()
	c.closeEvicted(e)
	return err
}

// Reads returns how many reads of its partitions their tail caches served
// and how many went to the files.
func (f *SegmentFiles) Reads() (tail, file int64) { return f.tailReads.Load(), f.fileReads.Load() }
