package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"mecha/internal/fsutil"
)

// Config is a partition's log configuration, from the topic's configs.
type Config struct {
	// SegmentBytes rolls a new segment when the active one would pass it
	// (segment.bytes). At most 2 GiB, as index positions are 32-bit.
	SegmentBytes int64
	// RetentionMs deletes sealed segments whose newest record is older
	// (retention.ms); negative keeps them forever.
	RetentionMs int64
	// RetentionBytes deletes the oldest sealed segments while the log is
	// larger (retention.bytes); negative means no bound.
	RetentionBytes int64
	// MaxBatchBytes bounds one record batch (max.message.bytes).
	MaxBatchBytes int
	// SyncEveryWrite fsyncs before Append returns; otherwise Flush runs
	// periodically, as Kafka relies on the page cache.
	SyncEveryWrite bool
	// IndexIntervalBytes is the log distance between offset index entries.
	IndexIntervalBytes int64
	// TailCacheBytes is the size of the partition's tail cache: its
	// newest batches, kept in memory for the readers at the tail, while
	// reads of older data go to the files and leave the page cache (0:
	// no cache, every read from the files).
	TailCacheBytes int
}

// DefaultConfig is Kafka's defaults: 1 GiB segments, 7 days, no size
// bound, 1 MiB batches, 4 KiB index interval.
func DefaultConfig() Config {
	return Config{SegmentBytes: 1 << 30, RetentionMs: 7 * 24 * 3600 * 1000, RetentionBytes: -1,
		MaxBatchBytes: 1048588, IndexIntervalBytes: 4096}
}

// Validate reports the first bad field by its Kafka config name.
func (c Config) Validate() error {
	switch {
	case c.SegmentBytes < 14 || c.SegmentBytes > 1<<31-1:
		return fmt.Errorf("segment.bytes: %d is outside [14, 2147483647]", c.SegmentBytes)
	case c.RetentionMs < -1:
		return fmt.Errorf("retention.ms: %d is below -1", c.RetentionMs)
	case c.RetentionBytes < -1:
		return fmt.Errorf("retention.bytes: %d is below -1", c.RetentionBytes)
	case c.MaxBatchBytes < 0:
		return fmt.Errorf("max.message.bytes: %d is negative", c.MaxBatchBytes)
	case c.IndexIntervalBytes < 0:
		return fmt.Errorf("index.interval.bytes: %d is negative", c.IndexIntervalBytes)
	}
	return nil
}

// producerBatch is one of the last batches an idempotent producer wrote,
// kept to answer a retried batch with its original offset.
type producerBatch struct {
	firstSeq, lastSeq int32
	base              int64
}

// producerState tracks one idempotent producer on one partition.
type producerState struct {
	epoch   int16
	lastSeq int32
	recent  [5]producerBatch // ring of the last five batches, as Kafka keeps
	n       int
}

// AppendResult says where a produce landed.
type AppendResult struct {
	// Base is the offset of the first record.
	Base int64
	// Duplicate is set when the batch was a retry of one already in the
	// log: nothing was written and Base is the original offset.
	Duplicate bool
}

// ReadResult is the answer to a fetch of one partition.
type ReadResult struct {
	// Batches holds whole record batches, the first one containing the
	// requested offset; empty at the end of the log.
	Batches       []byte
	HighWatermark int64
	LogStart      int64
}

// Partition is one partition's log.
type Partition struct {
	dir   string
	files *SegmentFiles // holds the segments' open files

	// syncMu serializes fsyncs (see sync).
	syncMu sync.Mutex

	// mu guards everything below. Appends take it exclusively; reads take
	// it shared only to find where to read, then read the file without it.
	mu        sync.RWMutex
	cfg       Config
	segs      []*segment // by base offset; the last one is active
	next      int64      // log end offset
	logStart  int64
	producers map[int64]*producerState
	waiters   []chan struct{}
	hint      readHint
	tail      tailCache // the newest batches, in memory
	failed    error     // set by a failed fsync or write: the log takes no more writes
	closed    bool
	size      int64 // bytes in all segments
	// epoch stamps the batches Append writes (the partition leader
	// epoch); epochs is the log's leader-epoch history, rebuilt from the
	// batch headers on open (replica.go).
	epoch  int32
	epochs []EpochStart
	// epochGen counts changes of epochs (EpochsSince).
	epochGen uint64
	// hw is the high watermark: readers see records below it. It is the
	// log end unless the partition is replicated (SetReplicated), when
	// the replication sets it.
	hw         int64
	replicated bool
}

// readHint remembers where the last read ended, so a consumer reading on
// does not search the index.
type readHint struct {
	seg    *segment
	offset int64
	pos    int64
}

// Open opens (or creates) the partition log in dir, recovering the active
// segment: every CRC is checked and a torn tail cut. Its segment files are
// held open without a bound; SegmentFiles.OpenPartition shares a bound
// among partitions.
func Open(dir string, cfg Config) (*Partition, error) {
	return open(dir, cfg, NewSegmentFiles(0))
}

func open(dir string, cfg Config, files *SegmentFiles) (*Partition, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := &Partition{dir: dir, files: files, cfg: cfg, producers: map[int64]*producerState{}, tail: tailCache{max: cfg.TailCacheBytes}}
	p.logStart = p.readLogStart()
	bases, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	for i, b := range bases {
		last := i == len(bases)-1
		s, err := openSegment(dir, b, last, cfg.IndexIntervalBytes, files)
		if err != nil {
			_ = p.closeFiles()
			return nil, fmt.Errorf("open partition %s: %w", dir, err)
		}
		if n := len(p.segs); n > 0 && p.segs[n-1].next > s.base {
			_ = s.file.retire()
			_ = p.closeFiles()
			return nil, fmt.Errorf("open partition %s: segment %d overlaps the one before it, which ends at %d", dir, s.base, p.segs[n-1].next)
		}
		p.segs = append(p.segs, s)
		p.size += s.size
	}
	if len(p.segs) == 0 {
		s, err := createSegment(dir, p.logStart, files)
		if err != nil {
			return nil, err
		}
		p.segs = append(p.segs, s)
	}
	active := p.segs[len(p.segs)-1]
	p.next = active.next
	if first := p.segs[0].base; p.logStart < first {
		p.logStart = first
	}
	if p.logStart > p.next {
		// The saved log start is past the recovered end: DeleteRecords
		// reached the disk and the records before it did not (a crash
		// without fsync). Every record is below the log start, so the log
		// starts over there, as Kafka's does. Moving the log start back
		// instead would hand out offsets again that the next open, reading
		// the saved log start, would hide.
		for _, s := range p.segs {
			s.remove()
		}
		s, err := createSegment(dir, p.logStart, files)
		if err != nil {
			return nil, err
		}
		p.segs, p.size, p.next = []*segment{s}, 0, p.logStart
	}
	if err := p.rebuildFromHeaders(); err != nil {
		_ = p.closeFiles()
		return nil, fmt.Errorf("open partition %s: %w", dir, err)
	}
	p.hw = p.next
	return p, nil
}

// rebuildFromHeaders restores idempotent producer state and the
// leader-epoch history from the batch headers of every segment, oldest
// first, so a producer retrying across a broker restart is still
// de-duplicated even when its last batches were rolled into sealed
// segments by other producers' writes. (Kafka keeps a producer snapshot
// per segment and a leader-epoch checkpoint to bound this scan; this log
// has neither.)
func (p *Partition) rebuildFromHeaders() error {
	clear(p.producers)
	p.epochs = p.epochs[:0]
	p.epochGen++
	hdr := make([]byte, batchHeaderLen)
	for _, s := range p.segs {
		f, err := s.file.acquire()
		if err != nil {
			return err
		}
		for pos := int64(0); pos < s.size; {
			if _, err := f.ReadAt(hdr, pos); err != nil {
				break
			}
			base, info, ok := scanBatch(hdr, false)
			if !ok {
				break
			}
			if info.ProducerID >= 0 {
				p.remember(info, base)
			}
			p.noteEpoch(info.LeaderEpoch, base)
			pos += int64(info.Size)
		}
		s.file.release()
	}
	return nil
}

func (p *Partition) readLogStart() int64 {
	b, err := os.ReadFile(filepath.Join(p.dir, "log-start-offset"))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// Config is the configuration in use.
func (p *Partition) Config() Config {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cfg
}

// SetConfig changes the configuration (an altered topic).
func (p *Partition) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	p.cfg = cfg
	if cfg.TailCacheBytes != p.tail.max {
		p.tail = tailCache{max: cfg.TailCacheBytes}
	}
	p.mu.Unlock()
	return nil
}

// Append writes validated batches (from ValidateBatches on buf) at the end
// of the log, assigning offsets. With SyncEveryWrite it returns only after
// fsync. An idempotent producer's retry of a batch already written is
// answered with the original offset and not written again.
func (p *Partition) Append(buf []byte, infos []BatchInfo) (AppendResult, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return AppendResult{}, ErrClosed
	}
	if p.failed != nil {
		err := p.failed
		p.mu.Unlock()
		return AppendResult{}, err
	}
	if res, dup, err := p.checkProducers(infos); err != nil || dup {
		p.mu.Unlock()
		return res, err
	}
	// A batch claims its record count in its header, up to 2^31-1 each.
	// Index entries hold offsets relative to the segment base in 32 bits,
	// so one request spans at most 2^31-1 offsets and a segment rolls
	// before its span would pass that, as Kafka's does.
	var span int64
	for _, in := range infos {
		span += int64(in.LastOffsetDelta) + 1
	}
	if span > math.MaxInt32 {
		p.mu.Unlock()
		return AppendResult{}, fmt.Errorf("%w: %d records in one append", ErrCorruptBatch, span)
	}
	seg := p.segs[len(p.segs)-1]
	if seg.size > 0 && (seg.size+int64(len(buf)) > p.cfg.SegmentBytes || p.next+span-1-seg.base > math.MaxInt32) {
		var err error
		if seg, err = p.roll(); err != nil {
			p.mu.Unlock()
			return AppendResult{}, err
		}
	}
	base := p.next
	off := base
	for _, in := range infos {
		binary.BigEndian.PutUint64(buf[in.Pos:], uint64(off))
		binary.BigEndian.PutUint32(buf[in.Pos+epochOffset:], uint32(p.epoch))
		off += int64(in.LastOffsetDelta) + 1
	}
	return p.write(seg, buf, infos, base, p.epoch)
}

// write puts buf (batches at base on) at the end of seg, the active
// segment, and accounts for them; epoch is their leader epoch, or -1 for
// each batch's own. The caller holds mu; write releases it.
func (p *Partition) write(seg *segment, buf []byte, infos []BatchInfo, base int64, epoch int32) (AppendResult, error) {
	pos := seg.size
	f, err := seg.file.acquire()
	if err != nil {
		p.mu.Unlock()
		return AppendResult{}, fmt.Errorf("append to %s: %w", p.dir, err)
	}
	n, err := fsutil.WriteAt(f, buf, pos)
	seg.file.markDirty()
	if err != nil || n != len(buf) {
		// Take back a partial write so the log never holds half a batch.
		if terr := f.Truncate(pos); terr != nil {
			p.failed = fmt.Errorf("%w: write failed (%v) and truncate failed (%v)", ErrLogFailed, err, terr)
		}
		seg.file.release()
		p.mu.Unlock()
		if err == nil {
			err = fmt.Errorf("short write: %d of %d bytes", n, len(buf))
		}
		return AppendResult{}, fmt.Errorf("append to %s: %w", p.dir, err)
	}
	seg.file.release()
	off := base
	for _, in := range infos {
		seg.account(pos+int64(in.Pos), off, in, p.cfg.IndexIntervalBytes)
		if in.ProducerID >= 0 {
			p.remember(in, off)
		}
		e := epoch
		if e < 0 {
			e = in.LeaderEpoch
		}
		p.noteEpoch(e, off)
		off += int64(in.LastOffsetDelta) + 1
	}
	seg.size += int64(len(buf))
	p.size += int64(len(buf))
	p.tail.add(buf, infos, base)
	p.next = off
	if !p.replicated {
		p.hw = off
	}
	waiters := p.waiters
	p.waiters = nil
	syncNow := p.cfg.SyncEveryWrite
	p.mu.Unlock()
	for _, w := range waiters {
		select {
		case w <- struct{}{}:
		default:
		}
	}
	if syncNow {
		if err := p.sync(seg); err != nil {
			return AppendResult{}, err
		}
	}
	return AppendResult{Base: base}, nil
}

// checkProducers applies Kafka's idempotence rules to the batches of one
// produce. A lone batch that repeats one of the producer's last five is a
// duplicate, answered with its first offset.
func (p *Partition) checkProducers(infos []BatchInfo) (AppendResult, bool, error) {
	// A batch follows the same producer's batch before it in this
	// request, when there is one, rather than what the log holds.
	type seen struct {
		epoch   int16
		lastSeq int32
	}
	var inRequest map[int64]seen
	for i, in := range infos {
		if in.ProducerID < 0 {
			continue
		}
		st, ok := p.producers[in.ProducerID]
		prev, again := inRequest[in.ProducerID]
		if inRequest == nil {
			inRequest = map[int64]seen{}
		}
		inRequest[in.ProducerID] = seen{in.ProducerEpoch, in.BaseSequence + in.LastOffsetDelta}
		switch {
		case again:
			switch {
			case in.ProducerEpoch < prev.epoch:
				return AppendResult{}, false, fmt.Errorf("%w: producer %d epoch %d after %d in one request", ErrInvalidProducerEpoch, in.ProducerID, in.ProducerEpoch, prev.epoch)
			case in.ProducerEpoch > prev.epoch:
				if in.BaseSequence != 0 {
					return AppendResult{}, false, fmt.Errorf("%w: producer %d new epoch %d starts at sequence %d", ErrOutOfOrderSequence, in.ProducerID, in.ProducerEpoch, in.BaseSequence)
				}
			case in.BaseSequence != prev.lastSeq+1 && !(prev.lastSeq == 1<<31-1 && in.BaseSequence == 0):
				if in.BaseSequence <= prev.lastSeq {
					return AppendResult{}, false, fmt.Errorf("%w: producer %d sequence %d after %d in one request", ErrDuplicateSequence, in.ProducerID, in.BaseSequence, prev.lastSeq)
				}
				return AppendResult{}, false, fmt.Errorf("%w: producer %d sequence %d, expected %d", ErrOutOfOrderSequence, in.ProducerID, in.BaseSequence, prev.lastSeq+1)
			}
		case !ok:
			if in.BaseSequence != 0 {
				return AppendResult{}, false, fmt.Errorf("%w: producer %d starts at sequence %d", ErrUnknownProducerID, in.ProducerID, in.BaseSequence)
			}
		case in.ProducerEpoch < st.epoch:
			return AppendResult{}, false, fmt.Errorf("%w: producer %d epoch %d, log has %d", ErrInvalidProducerEpoch, in.ProducerID, in.ProducerEpoch, st.epoch)
		case in.ProducerEpoch > st.epoch:
			if in.BaseSequence != 0 {
				return AppendResult{}, false, fmt.Errorf("%w: producer %d new epoch %d starts at sequence %d", ErrOutOfOrderSequence, in.ProducerID, in.ProducerEpoch, in.BaseSequence)
			}
		default:
			last := in.BaseSequence + in.LastOffsetDelta
			for _, b := range st.recent[:st.n] {
				if b.firstSeq == in.BaseSequence && b.lastSeq == last {
					if len(infos) == 1 && i == 0 {
						return AppendResult{Base: b.base, Duplicate: true}, true, nil
					}
					return AppendResult{}, false, fmt.Errorf("%w: producer %d sequence %d", ErrDuplicateSequence, in.ProducerID, in.BaseSequence)
				}
			}
			if in.BaseSequence != st.lastSeq+1 && !(st.lastSeq == 1<<31-1 && in.BaseSequence == 0) {
				if in.BaseSequence <= st.lastSeq {
					return AppendResult{}, false, fmt.Errorf("%w: producer %d sequence %d, last was %d", ErrDuplicateSequence, in.ProducerID, in.BaseSequence, st.lastSeq)
				}
				return AppendResult{}, false, fmt.Errorf("%w: producer %d sequence %d, expected %d", ErrOutOfOrderSequence, in.ProducerID, in.BaseSequence, st.lastSeq+1)
			}
		}
	}
	return AppendResult{}, false, nil
}

// remember records a producer's batch written at base.
func (p *Partition) remember(in BatchInfo, base int64) {
	st, ok := p.producers[in.ProducerID]
	if !ok || in.ProducerEpoch != st.epoch {
		st = &producerState{epoch: in.ProducerEpoch}
		p.producers[in.ProducerID] = st
	}
	last := in.BaseSequence + in.LastOffsetDelta
	st.lastSeq = last
	copy(st.recent[1:], st.recent[:len(st.recent)-1])
	st.recent[0] = producerBatch{firstSeq: in.BaseSequence, lastSeq: last, base: base}
	if st.n < len(st.recent) {
		st.n++
	}
}

// roll seals the active segment (fsync, index files) and starts a new one.
// The caller holds mu.
func (p *Partition) roll() (*segment, error) {
	old := p.segs[len(p.segs)-1]
	f, err := old.file.acquire()
	if err != nil {
		return nil, fmt.Errorf("seal segment %d of %s: %w", old.base, p.dir, err)
	}
	err = old.file.sync(f)
	old.file.release()
	if err != nil {
		p.failed = fmt.Errorf("%w: fsync %s: %v", ErrLogFailed, p.dir, err)
		return nil, p.failed
	}
	old.flushed = old.size
	if err := old.saveIndexes(); err != nil {
		return nil, fmt.Errorf("seal segment %d of %s: %w", old.base, p.dir, err)
	}
	s, err := createSegment(p.dir, p.next, p.files)
	if err != nil {
		return nil, fmt.Errorf("roll %s: %w", p.dir, err)
	}
	p.segs = append(p.segs, s)
	return s, nil
}

// sync fsyncs seg if it has unflushed bytes. A failed fsync stops the
// partition: the kernel may have dropped the dirty pages, so nothing after
// it can be acknowledged.
func (p *Partition) sync(seg *segment) error {
	// One fsync at a time per partition, and a success counts only when
	// no other fsync failed meanwhile: Linux reports a writeback error to
	// one fsync only, so a later one can succeed over lost pages.
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	p.mu.RLock()
	size := seg.size
	done := seg.flushed >= size
	failed := p.failed
	closed := p.closed
	var f *os.File
	var err error
	if failed == nil && !done && !closed {
		// Under the lock: the segment cannot be deleted meanwhile.
		f, err = seg.file.acquire()
	}
	p.mu.RUnlock()
	switch {
	case failed != nil:
		return failed
	case done:
		return nil
	case closed:
		return ErrClosed
	case err != nil:
		return fmt.Errorf("fsync %s: %w", p.dir, err)
	}
	err = seg.file.sync(f)
	seg.file.release()
	if err != nil {
		p.mu.Lock()
		p.failed = fmt.Errorf("%w: fsync %s: %v", ErrLogFailed, p.dir, err)
		p.mu.Unlock()
		return p.failed
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed != nil {
		return p.failed
	}
	if size > seg.flushed {
		seg.flushed = size
	}
	return nil
}

// Flush fsyncs the active segment: the periodic flush.
func (p *Partition) Flush() error {
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return nil
	}
	seg := p.segs[len(p.segs)-1]
	p.mu.RUnlock()
	return p.sync(seg)
}

// Offsets returns the log start offset and the high watermark (the log
// end, unless the partition is replicated: a single node's log is
// committed as soon as it is written).
func (p *Partition) Offsets() (logStart, hw int64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.logStart, p.hw
}

// Size returns the bytes in the partition's segments.
func (p *Partition) Size() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.size
}

// Read returns whole batches starting with the one that holds offset, up to
// maxBytes; the first batch is returned whole even when it is larger
// (KIP-74), so a consumer always makes progress.
func (p *Partition) Read(offset int64, maxBytes int) (ReadResult, error) {
	return p.ReadInto(offset, maxBytes, nil)
}

// ReadInto is Read with the read buffers taken from alloc (nil: make), so
// a caller can recycle them once the batches are sent. alloc may return a
// larger slice; Batches is a part of one buffer it returned. It reads
// only below the high watermark, as consumers do.
func (p *Partition) ReadInto(offset int64, maxBytes int, alloc func(n int) []byte) (ReadResult, error) {
	return p.read(offset, maxBytes, alloc, false)
}

// read reads from offset to the high watermark, or with uncommitted to
// the log end (a follower's fetch).
func (p *Partition) read(offset int64, maxBytes int, alloc func(n int) []byte, uncommitted bool) (ReadResult, error) {
	if alloc == nil {
		alloc = func(n int) []byte { return make([]byte, n) }
	}
	p.mu.RLock()
	res := ReadResult{HighWatermark: p.hw, LogStart: p.logStart}
	if p.closed {
		p.mu.RUnlock()
		return res, ErrClosed
	}
	stop := p.hw
	if uncommitted {
		stop = p.next
	}
	if offset < p.logStart || offset > p.next {
		p.mu.RUnlock()
		return res, fmt.Errorf("%w: %d not in [%d, %d]", ErrOffsetOutOfRange, offset, p.logStart, p.next)
	}
	if offset >= stop || maxBytes <= 0 {
		p.mu.RUnlock()
		return res, nil
	}
	if data, ok := p.tail.read(offset, stop, maxBytes, alloc); ok {
		p.mu.RUnlock()
		p.files.tailReads.Add(1)
		res.Batches = data
		return res, nil
	}
	// Older than the tail: a lagging reader's read, which leaves the page
	// cache after it when there is a tail cache.
	cold := p.tail.max > 0
	i := sort.Search(len(p.segs), func(i int) bool { return p.segs[i].base > offset }) - 1
	if i < 0 {
		i = 0
	}
	for i < len(p.segs)-1 && p.segs[i].next <= offset {
		i++
	}
	seg := p.segs[i]
	var pos int64
	if h := p.hint; h.seg == seg && h.offset == offset {
		pos = h.pos
	} else {
		pos = seg.lookup(offset)
	}
	limit := seg.size
	interval := p.cfg.IndexIntervalBytes
	// Taken under the lock, so the segment cannot be deleted before the
	// read holds its file; the read itself runs without the lock.
	f, err := seg.file.acquire()
	p.mu.RUnlock()
	if err != nil {
		return res, fmt.Errorf("read %s: %w", p.dir, err)
	}
	data, end, endOffset, err := readFrom(seg, f, offset, pos, limit, stop, maxBytes, interval, alloc)
	if cold && err == nil {
		dropFromPageCache(f, pos, end-pos)
	}
	seg.file.release()
	p.files.fileReads.Add(1)
	if err != nil || len(data) == 0 {
		return res, err
	}
	res.Batches = data
	p.mu.Lock()
	p.hint = readHint{seg: seg, offset: endOffset, pos: end}
	p.mu.Unlock()
	return res, nil
}

// readFrom reads batches of seg from pos (at or before offset's batch),
// skipping those wholly before offset and trimming to whole batches within
// maxBytes. It returns the file position and the offset after the data.
func readFrom(seg *segment, f *os.File, offset, pos, limit, stop int64, maxBytes int, interval int64, alloc func(int) []byte) (data []byte, end, endOffset int64, err error) {
	// At least a header, or a small maxBytes with a small index interval
	// would never see a whole header and never move on.
	want := max(int64(maxBytes)+interval, batchHeaderLen)
	if want > limit-pos {
		want = limit - pos
	}
	if want <= 0 {
		return nil, 0, 0, nil
	}
	buf := alloc(int(want))[:want]
	if _, err := readAtFn(f, buf, pos); err != nil {
		return nil, 0, 0, fmt.Errorf("read %s at %d: %w", segPath(seg.dir, seg.base, ".log"), pos, err)
	}
	// Skip batches that end before offset.
	skip := 0
	for skip+batchHeaderLen <= len(buf) {
		base, info, ok := scanBatch(buf[skip:], false)
		if !ok {
			return nil, 0, 0, fmt.Errorf("read %s at %d: no batch header", segPath(seg.dir, seg.base, ".log"), pos+int64(skip))
		}
		if base+int64(info.LastOffsetDelta) >= offset {
			break
		}
		skip += info.Size
	}
	if skip+batchHeaderLen > len(buf) {
		// The index pointed further back than maxBytes+interval covers
		// (a sparse index after huge batches): read again from here.
		if pos+int64(skip) >= limit {
			return nil, 0, 0, nil
		}
		if skip == 0 {
			return nil, 0, 0, fmt.Errorf("read %s at %d: %d bytes left, shorter than a batch header", segPath(seg.dir, seg.base, ".log"), pos, limit-pos)
		}
		return readFrom(seg, f, offset, pos+int64(skip), limit, stop, maxBytes, interval, alloc)
	}
	buf = buf[skip:]
	start := pos + int64(skip)
	// Keep whole batches within maxBytes, but always the first.
	n := 0
	for n+batchHeaderLen <= len(buf) {
		base, info, ok := scanBatch(buf[n:], false)
		if !ok || n+info.Size > len(buf) {
			break
		}
		if n > 0 && (n+info.Size > maxBytes || base >= stop) {
			break
		}
		n += info.Size
		endOffset = base + int64(info.LastOffsetDelta) + 1
	}
	if n == 0 {
		// The first batch is larger than what was read: read it whole.
		base, info, ok := scanBatch(buf, false)
		if !ok {
			return nil, 0, 0, fmt.Errorf("read %s at %d: no batch header where one should start", segPath(seg.dir, seg.base, ".log"), start)
		}
		if start+int64(info.Size) > limit {
			return nil, 0, 0, fmt.Errorf("read %s at %d: batch runs past the segment", segPath(seg.dir, seg.base, ".log"), start)
		}
		whole := alloc(info.Size)[:info.Size]
		if _, err := readAtFn(f, whole, start); err != nil {
			return nil, 0, 0, err
		}
		return whole, start + int64(info.Size), base + int64(info.LastOffsetDelta) + 1, nil
	}
	return buf[:n], start + int64(n), endOffset, nil
}

// Wait registers ch to be signalled (non-blocking send) by the next append
// or move of the high watermark and reports true, or reports false
// without registering when the high watermark is already past offset.
func (p *Partition) Wait(offset int64, ch chan struct{}) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hw > offset || p.closed {
		return false
	}
	p.waiters = append(p.waiters, ch)
	return true
}

// Unwait removes ch from the waiters (a fetch that timed out).
func (p *Partition) Unwait(ch chan struct{}) {
	p.mu.Lock()
	for i, w := range p.waiters {
		if w == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
}

// OffsetForTime returns the base offset and max timestamp of the first
// batch with a timestamp at or after ts, or (-1, -1) when there is none.
// Batches are the unit: a batch that straddles ts is returned whole by a
// fetch, and the client skips the earlier records.
func (p *Partition) OffsetForTime(ts int64) (offset, maxTs int64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, s := range p.segs {
		if s.maxTs >= ts {
			i := sort.Search(len(s.tindex), func(i int) bool { return s.tindex[i].ts >= ts })
			e := s.tindex[i]
			off := s.base + int64(e.rel)
			if off < p.logStart {
				off = p.logStart
			}
			return off, e.ts
		}
	}
	return -1, -1
}

// OffsetForMaxTimestamp returns the base offset and timestamp of the
// batch with the largest timestamp (ListOffsets -3), or (-1, -1) when the
// log is empty.
func (p *Partition) OffsetForMaxTimestamp() (offset, maxTs int64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	offset, maxTs = -1, -1
	for _, s := range p.segs {
		if n := len(s.tindex); n > 0 && s.tindex[n-1].ts > maxTs {
			offset, maxTs = s.base+int64(s.tindex[n-1].rel), s.tindex[n-1].ts
		}
	}
	if offset >= 0 && offset < p.logStart {
		offset = p.logStart
	}
	return offset, maxTs
}

// DeleteRecords moves the log start to offset (DeleteRecords API) and
// deletes the segments wholly before it. offset -1 means the high
// watermark, above which it may not go.
func (p *Partition) DeleteRecords(offset int64) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if offset == -1 {
		offset = p.hw
	}
	if offset < 0 || offset > p.hw {
		return p.logStart, fmt.Errorf("%w: %d not in [0, %d]", ErrOffsetOutOfRange, offset, p.hw)
	}
	return p.trimTo(offset)
}

// TrimTo moves the log start to offset, at most the log end, whatever
// the high watermark: a follower's log start follows its leader's.
func (p *Partition) TrimTo(offset int64) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if offset < 0 || offset > p.next {
		return p.logStart, fmt.Errorf("%w: %d not in [0, %d]", ErrOffsetOutOfRange, offset, p.next)
	}
	return p.trimTo(offset)
}

// trimTo moves the log start up to offset. The caller holds mu.
func (p *Partition) trimTo(offset int64) (int64, error) {
	if offset <= p.logStart {
		return p.logStart, nil
	}
	if err := p.saveLogStart(offset); err != nil {
		return p.logStart, err
	}
	p.dropBefore(offset)
	return offset, nil
}

// dropBefore deletes sealed segments that end at or before offset. The
// caller holds mu.
func (p *Partition) dropBefore(offset int64) {
	for len(p.segs) > 1 && p.segs[0].next <= offset {
		p.removeFirst()
	}
}

// removeFirst deletes the oldest segment. Its file is closed when the
// last read using it is done (at once when none is): reads take the file
// under mu, so none can start on it after this, and one that started
// before reads the unlinked file to its end.
func (p *Partition) removeFirst() {
	s := p.segs[0]
	p.segs = p.segs[1:]
	p.size -= s.size
	if p.hint.seg == s {
		p.hint = readHint{}
	}
	for _, ext := range []string{".log", ".index", ".timeindex"} {
		_ = os.Remove(segPath(s.dir, s.base, ext))
	}
	_ = s.file.retire() // sealed, so fsynced: no error to report
	if p.logStart < p.segs[0].base {
		p.logStart = p.segs[0].base
	}
}

// EnforceRetention deletes sealed segments past retention.ms or beyond
// retention.bytes. The active segment is never deleted.
func (p *Partition) EnforceRetention(now time.Time) (deleted int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0
	}
	for len(p.segs) > 1 {
		s := p.segs[0]
		byTime := p.cfg.RetentionMs >= 0 && s.maxTs >= 0 && now.UnixMilli()-s.maxTs > p.cfg.RetentionMs
		if p.cfg.RetentionMs >= 0 && s.maxTs < 0 {
			byTime = now.Sub(s.modTime).Milliseconds() > p.cfg.RetentionMs
		}
		bySize := p.cfg.RetentionBytes >= 0 && p.size-s.size >= p.cfg.RetentionBytes
		if !byTime && !bySize {
			break
		}
		p.removeFirst()
		deleted++
	}
	return deleted
}

// Close flushes the log and closes the files. The active segment's indexes
// are rebuilt by the scan that recovery runs on it anyway.
func (p *Partition) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	if p.failed == nil {
		active := p.segs[len(p.segs)-1]
		f, err := active.file.acquire()
		if err == nil {
			err = active.file.sync(f)
			active.file.release()
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.closeFiles(); err != nil && p.failed == nil {
		errs = append(errs, err)
	}
	for _, w := range p.waiters {
		select {
		case w <- struct{}{}:
		default:
		}
	}
	p.waiters = nil
	return errors.Join(errs...)
}

// closeFiles retires every segment file: each closes when its last read
// is done. It returns a failed fsync of an eviction not reported yet.
func (p *Partition) closeFiles() error {
	var errs []error
	for _, s := range p.segs {
		errs = append(errs, s.file.retire())
	}
	return errors.Join(errs...)
}

// Remove closes the partition and deletes its directory (a deleted topic).
func (p *Partition) Remove() error {
	_ = p.Close()
	return os.RemoveAll(p.dir)
}
