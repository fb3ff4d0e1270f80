package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"mecha/internal/fsutil"
)

// indexEntry maps an offset (relative to the segment base) to the byte
// position of the batch that holds it; timeEntry maps a timestamp to the
// first offset at or after it. Both are sparse: one entry every
// IndexIntervalBytes of log.
type indexEntry struct {
	rel uint32
	pos uint32
}

type timeEntry struct {
	ts  int64
	rel uint32
}

const (
	indexEntrySize = 8
	timeEntrySize  = 12
)

// readAtFn is the read of fetches; tests swap it to hold a read open.
var readAtFn = func(f *os.File, b []byte, off int64) (int, error) { return f.ReadAt(b, off) }

// segment is one .log file and its indexes. The partition's mutex guards
// every field except file, which guards itself; its *os.File is safe for
// concurrent ReadAt.
type segment struct {
	dir  string
	base int64
	file *segFile // acquired (under the partition's lock) for each use

	size     int64 // bytes of whole batches in the file
	next     int64 // offset after the last batch
	maxTs    int64 // largest batch max timestamp, -1 when empty
	modTime  time.Time
	index    []indexEntry
	tindex   []timeEntry
	sinceIdx int64 // bytes appended since the last index entry
	flushed  int64 // bytes known to be fsynced
	// indexSaved counts the entries already written to the index files.
	indexSaved, tindexSaved int
}

func segPath(dir string, base int64, ext string) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", base, ext))
}

// listSegments returns the base offsets of the .log files in dir, sorted.
func listSegments(dir string) ([]int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".log") || len(name) != 24 {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(name, ".log"), 10, 64)
		if err != nil || n < 0 {
			continue
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func createSegment(dir string, base int64, files *SegmentFiles) (*segment, error) {
	sf, _, err := files.openFile(segPath(dir, base, ".log"), os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return nil, err
	}
	defer sf.release()
	// The new file's name must survive a power loss with the records
	// fsynced into it.
	if err := fsutil.SyncDir(dir); err != nil {
		_ = sf.retire()
		return nil, err
	}
	for _, ext := range []string{".index", ".timeindex"} {
		_ = os.Remove(segPath(dir, base, ext))
	}
	return &segment{dir: dir, base: base, file: sf, next: base, maxTs: -1, modTime: time.Now()}, nil
}

// openSegment opens an existing segment. A sealed segment trusts its index
// files when they are sane and scans batch headers otherwise; the last
// segment (recover set) is scanned in full, every CRC checked, and cut at
// the first batch that is torn or corrupt.
func openSegment(dir string, base int64, recover bool, indexInterval int64, files *SegmentFiles) (*segment, error) {
	sf, f, err := files.openFile(segPath(dir, base, ".log"), os.O_RDWR)
	if err != nil {
		return nil, err
	}
	defer sf.release()
	st, err := f.Stat()
	if err != nil {
		_ = sf.retire()
		return nil, err
	}
	s := &segment{dir: dir, base: base, file: sf, next: base, maxTs: -1, modTime: st.ModTime()}
	if !recover && s.loadIndexes(st.Size()) {
		s.size = st.Size()
		s.flushed = s.size
		return s, nil
	}
	if err := s.scan(f, st.Size(), recover, indexInterval); err != nil {
		_ = sf.retire()
		return nil, err
	}
	s.flushed = s.size
	return s, nil
}

// scan walks the batches of the file, rebuilding the indexes. With check
// set it verifies each CRC and truncates the file after the last intact
// batch.
func (s *segment) scan(f *os.File, fileSize int64, check bool, indexInterval int64) error {
	s.index, s.tindex, s.sinceIdx = nil, nil, 0
	const chunk = 1 << 20
	buf := make([]byte, 0, chunk)
	var pos int64
	for pos < fileSize {
		need := int64(batchHeaderLen)
		hdr := make([]byte, batchHeaderLen)
		if n, err := f.ReadAt(hdr, pos); n < batchHeaderLen {
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			break
		}
		length := int64(int32(binary.BigEndian.Uint32(hdr[lengthOffset:])))
		size := length + logOverhead
		if length < batchHeaderLen-logOverhead || pos+size > fileSize {
			break
		}
		if check {
			need = size
			if int64(cap(buf)) < need {
				buf = make([]byte, need)
			}
			buf = buf[:need]
			if _, err := f.ReadAt(buf, pos); err != nil {
				return err
			}
		} else {
			buf = hdr
		}
		base, info, ok := scanBatch(buf, check)
		// The CRC does not cover the base offset. One that goes back, or
		// past the 2^31-1 offsets a segment spans (index entries are
		// relative and 32-bit), is as corrupt as a bad CRC.
		if !ok || base < s.next || base-s.base > math.MaxInt32-int64(info.LastOffsetDelta) {
			break
		}
		s.account(pos, base, info, indexInterval)
		pos += size
	}
	if pos < fileSize {
		if !check {
			return fmt.Errorf("segment %s: bad batch at position %d of %d in a sealed segment", segPath(s.dir, s.base, ".log"), pos, fileSize)
		}
		if err := f.Truncate(pos); err != nil {
			return fmt.Errorf("truncate torn tail of %s: %w", segPath(s.dir, s.base, ".log"), err)
		}
		s.file.markDirty()
	}
	s.size = pos
	return nil
}

// account records a batch written at pos in the indexes and totals.
func (s *segment) account(pos, base int64, info BatchInfo, indexInterval int64) {
	if len(s.index) == 0 || s.sinceIdx >= indexInterval {
		s.index = append(s.index, indexEntry{rel: uint32(base - s.base), pos: uint32(pos)})
		s.sinceIdx = 0
	}
	if info.MaxTimestamp > s.maxTs {
		s.maxTs = info.MaxTimestamp
		if len(s.tindex) == 0 || s.tindex[len(s.tindex)-1].ts < info.MaxTimestamp {
			s.tindex = append(s.tindex, timeEntry{ts: info.MaxTimestamp, rel: uint32(base - s.base)})
		}
	}
	s.sinceIdx += int64(info.Size)
	s.next = base + int64(info.LastOffsetDelta) + 1
}

// loadIndexes reads the index files of a sealed segment; it reports false
// when they are missing or do not fit the log, so the caller rebuilds them.
func (s *segment) loadIndexes(logSize int64) bool {
	ib, err1 := os.ReadFile(segPath(s.dir, s.base, ".index"))
	tb, err2 := os.ReadFile(segPath(s.dir, s.base, ".timeindex"))
	// The index file starts with the segment's next offset and max
	// timestamp, which a header scan would otherwise have to find.
	if err1 != nil || err2 != nil || len(ib) < 16 || (len(ib)-16)%indexEntrySize != 0 || len(tb)%timeEntrySize != 0 {
		return false
	}
	next := int64(binary.BigEndian.Uint64(ib))
	maxTs := int64(binary.BigEndian.Uint64(ib[8:]))
	if next < s.base || (logSize > 0 && len(ib) == 16) {
		return false
	}
	var idx []indexEntry
	for p := 16; p < len(ib); p += indexEntrySize {
		e := indexEntry{rel: binary.BigEndian.Uint32(ib[p:]), pos: binary.BigEndian.Uint32(ib[p+4:])}
		if int64(e.pos) >= logSize || int64(e.rel) >= next-s.base || (len(idx) > 0 && (e.rel <= idx[len(idx)-1].rel || e.pos <= idx[len(idx)-1].pos)) {
			return false
		}
		idx = append(idx, e)
	}
	var tidx []timeEntry
	for p := 0; p < len(tb); p += timeEntrySize {
		e := timeEntry{ts: int64(binary.BigEndian.Uint64(tb[p:])), rel: binary.BigEndian.Uint32(tb[p+8:])}
		if int64(e.rel) >= next-s.base || (len(tidx) > 0 && (e.ts <= tidx[len(tidx)-1].ts || e.rel <= tidx[len(tidx)-1].rel)) {
			return false
		}
		tidx = append(tidx, e)
	}
	// OffsetForTime searches the time index of a segment whose max
	// timestamp is at or after the target, so the last entry must be
	// that max (and there is none when no record had a timestamp).
	if maxTs < -1 || (maxTs == -1) != (len(tidx) == 0) || (len(tidx) > 0 && tidx[len(tidx)-1].ts != maxTs) {
		return false
	}
	s.index, s.tindex, s.next, s.maxTs = idx, tidx, next, maxTs
	s.indexSaved, s.tindexSaved = len(idx), len(tidx)
	return true
}

// saveIndexes writes the index files whole; it is called when a segment
// is sealed and on a clean close.
func (s *segment) saveIndexes() error {
	ib := make([]byte, 16, 16+len(s.index)*indexEntrySize)
	binary.BigEndian.PutUint64(ib, uint64(s.next))
	binary.BigEndian.PutUint64(ib[8:], uint64(s.maxTs))
	for _, e := range s.index {
		ib = binary.BigEndian.AppendUint32(ib, e.rel)
		ib = binary.BigEndian.AppendUint32(ib, e.pos)
	}
	tb := make([]byte, 0, len(s.tindex)*timeEntrySize)
	for _, e := range s.tindex {
		tb = binary.BigEndian.AppendUint64(tb, uint64(e.ts))
		tb = binary.BigEndian.AppendUint32(tb, e.rel)
	}
	if err := fsutil.WriteFile(segPath(s.dir, s.base, ".index"), ib); err != nil {
		return err
	}
	return fsutil.WriteFile(segPath(s.dir, s.base, ".timeindex"), tb)
}

// lookup returns the position of the last indexed batch at or before
// offset: where a scan for offset starts.
func (s *segment) lookup(offset int64) int64 {
	rel := offset - s.base
	i := sort.Search(len(s.index), func(i int) bool { return int64(s.index[i].rel) > rel })
	if i == 0 {
		return 0
	}
	return int64(s.index[i-1].pos)
}

// remove deletes the segment's files; the open file is closed once its
// last user is done.
func (s *segment) remove() {
	_ = s.file.retire()
	for _, ext := range []string{".log", ".index", ".timeindex"} {
		_ = os.Remove(segPath(s.dir, s.base, ext))
	}
}
