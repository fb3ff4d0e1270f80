package storage

// What a replicated partition needs of its log (Kafka's replication; the
// broker adapts it to internal/replica's Log): the leader epoch stamped on
// each batch and the history of epochs, a high watermark apart from the
// log end, a follower's append of the leader's batches as they are, and
// truncation of a divergent tail.

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"mecha/internal/fsutil"
)

// EpochStart is one entry of the leader-epoch history: the records from
// Start on were written by the leader of Epoch (Kafka's leader-epoch
// checkpoint).
type EpochStart struct {
	Epoch int32
	Start int64
}

// noteEpoch adds (epoch, base) to the history when epoch is newer than
// its last entry. The caller holds mu.
func (p *Partition) noteEpoch(epoch int32, base int64) {
	if n := len(p.epochs); n == 0 || epoch > p.epochs[n-1].Epoch {
		p.epochs = append(p.epochs, EpochStart{Epoch: epoch, Start: base})
		p.epochGen++
	}
}

// SetLeaderEpoch makes Append stamp its batches with epoch: the replica
// leads the partition at that epoch.
func (p *Partition) SetLeaderEpoch(epoch int32) {
	p.mu.Lock()
	p.epoch = epoch
	p.mu.Unlock()
}

// Epochs returns a copy of the leader-epoch history, oldest first.
func (p *Partition) Epochs() []EpochStart {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return slices.Clone(p.epochs)
}

// EpochsSince returns the history and its generation when it changed
// since gen (a caller's cached copy stays good otherwise: changed false).
func (p *Partition) EpochsSince(gen uint64) (h []EpochStart, now uint64, changed bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if gen == p.epochGen && gen != 0 {
		return nil, gen, false
	}
	return slices.Clone(p.epochs), p.epochGen, true
}

// EndOffset is the log end offset: the offset the next record gets.
func (p *Partition) EndOffset() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.next
}

// SetReplicated says whether replication owns the high watermark. Off
// (the default), it is the log end; on, it moves only by
// SetHighWatermark.
func (p *Partition) SetReplicated(on bool) {
	p.mu.Lock()
	p.replicated = on
	if !on {
		p.hw = p.next
	}
	p.mu.Unlock()
}

// SetHighWatermark sets the high watermark (at most the log end) and wakes
// the readers waiting for it.
func (p *Partition) SetHighWatermark(hw int64) {
	p.mu.Lock()
	hw = min(hw, p.next)
	if hw == p.hw {
		p.mu.Unlock()
		return
	}
	p.hw = hw
	waiters := p.waiters
	p.waiters = nil
	p.mu.Unlock()
	wake(waiters)
}

func wake(waiters []chan struct{}) {
	for _, w := range waiters {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// ReadUncommitted reads as ReadInto, but up to the log end: a follower's
// fetch.
func (p *Partition) ReadUncommitted(offset int64, maxBytes int, alloc func(n int) []byte) (ReadResult, error) {
	return p.read(offset, maxBytes, alloc, true)
}

// AppendReplica writes a follower's copy of the leader's batches (from
// ValidateBatches on buf) as they are: their base offsets and leader
// epochs are the leader's. The first must start at the log end and each
// where the one before ends, and epochs never go down. Idempotent
// producer state follows the batches, so the follower de-duplicates
// retries once it leads.
func (p *Partition) AppendReplica(buf []byte, infos []BatchInfo) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if p.failed != nil {
		err := p.failed
		p.mu.Unlock()
		return err
	}
	if len(infos) == 0 {
		p.mu.Unlock()
		return nil
	}
	base := int64(binary.BigEndian.Uint64(buf[infos[0].Pos:]))
	if base != p.next {
		p.mu.Unlock()
		return fmt.Errorf("%w: replica batches start at %d, the log ends at %d", ErrNotContiguous, base, p.next)
	}
	off, last := base, int32(math.MinInt32)
	if n := len(p.epochs); n > 0 {
		last = p.epochs[n-1].Epoch
	}
	for _, in := range infos {
		b := int64(binary.BigEndian.Uint64(buf[in.Pos:]))
		switch {
		case b != off:
			p.mu.Unlock()
			return fmt.Errorf("%w: replica batch at %d, want %d", ErrNotContiguous, b, off)
		case in.LeaderEpoch < last:
			p.mu.Unlock()
			return fmt.Errorf("%w: replica batch at %d has epoch %d after %d", ErrEpochRegress, b, in.LeaderEpoch, last)
		}
		last = in.LeaderEpoch
		off += int64(in.LastOffsetDelta) + 1
	}
	seg := p.segs[len(p.segs)-1]
	if seg.size > 0 && (seg.size+int64(len(buf)) > p.cfg.SegmentBytes || off-1-seg.base > math.MaxInt32) {
		var err error
		if seg, err = p.roll(); err != nil {
			p.mu.Unlock()
			return err
		}
	}
	_, err := p.write(seg, buf, infos, base, -1)
	return err
}

// Truncate removes every record at or above offset (a follower's
// divergent tail). The batch holding offset goes whole, as in Kafka, so
// the log may end below offset. Producer state and the epoch history are
// rebuilt from what is left; the high watermark comes down with the end.
func (p *Partition) Truncate(offset int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return ErrClosed
	case p.failed != nil:
		return p.failed
	case offset >= p.next:
		return nil
	case offset < p.logStart:
		return fmt.Errorf("%w: truncate to %d, below the log start %d", ErrOffsetOutOfRange, offset, p.logStart)
	}
	// The segment holding offset, and the later ones go (newest first,
	// so a crash leaves a prefix of the log).
	i := len(p.segs) - 1
	for i > 0 && p.segs[i].base > offset {
		i--
	}
	for len(p.segs)-1 > i {
		p.dropLast()
	}
	seg := p.segs[i]
	f, err := seg.file.acquire()
	if err != nil {
		return fmt.Errorf("truncate %s: %w", p.dir, err)
	}
	defer seg.file.release()
	// Find the batch holding offset from the index entry before it.
	hdr := make([]byte, batchHeaderLen)
	pos := seg.lookup(offset)
	for pos < seg.size {
		if _, err := f.ReadAt(hdr, pos); err != nil {
			return fmt.Errorf("truncate %s at %d: %w", p.dir, pos, err)
		}
		base, info, ok := scanBatch(hdr, false)
		if !ok {
			return fmt.Errorf("truncate %s: no batch header at %d", p.dir, pos)
		}
		if base+int64(info.LastOffsetDelta) >= offset {
			break
		}
		pos += int64(info.Size)
	}
	if pos == 0 && i > 0 {
		p.dropLast()
	} else {
		if err := f.Truncate(pos); err != nil {
			p.failed = fmt.Errorf("%w: truncate %s: %v", ErrLogFailed, p.dir, err)
			return p.failed
		}
		if err := seg.file.sync(f); err != nil {
			p.failed = fmt.Errorf("%w: fsync %s: %v", ErrLogFailed, p.dir, err)
			return p.failed
		}
		p.size -= seg.size - pos
		// Rebuild its indexes from what is left; it is the active
		// segment now, whose index files are not kept.
		seg.next, seg.maxTs = seg.base, -1
		if err := seg.scan(f, pos, false, p.cfg.IndexIntervalBytes); err != nil {
			p.failed = fmt.Errorf("%w: %v", ErrLogFailed, err)
			return p.failed
		}
		seg.flushed, seg.indexSaved, seg.tindexSaved = seg.size, 0, 0
		for _, ext := range []string{".index", ".timeindex"} {
			_ = os.Remove(segPath(p.dir, seg.base, ext))
		}
	}
	active := p.segs[len(p.segs)-1]
	p.next = active.next
	p.hint = readHint{}
	p.tail.reset()
	if p.logStart > p.next {
		// The cut batch began before the log start (DeleteRecords mid
		// batch): the log now starts where it ends.
		if err := p.saveLogStart(p.next); err != nil {
			return err
		}
	}
	p.hw = min(p.hw, p.next)
	if !p.replicated {
		p.hw = p.next
	}
	return p.rebuildFromHeaders()
}

// dropLast deletes the newest segment. The caller holds mu.
func (p *Partition) dropLast() {
	s := p.segs[len(p.segs)-1]
	p.segs = p.segs[:len(p.segs)-1]
	p.size -= s.size
	if p.hint.seg == s {
		p.hint = readHint{}
	}
	s.remove()
	_ = fsutil.SyncDir(p.dir)
}

// Reset empties the log and restarts it at offset, with no history: a
// follower whose log ends below the leader's log start.
func (p *Partition) Reset(offset int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if offset < 0 {
		return fmt.Errorf("%w: reset to %d", ErrOffsetOutOfRange, offset)
	}
	if err := p.saveLogStart(offset); err != nil {
		return err
	}
	for len(p.segs) > 0 {
		s := p.segs[len(p.segs)-1]
		p.segs = p.segs[:len(p.segs)-1]
		s.remove()
	}
	s, err := createSegment(p.dir, offset, p.files)
	if err != nil {
		p.failed = fmt.Errorf("%w: reset %s: %v", ErrLogFailed, p.dir, err)
		return p.failed
	}
	p.segs, p.size, p.next, p.hw, p.hint = []*segment{s}, 0, offset, offset, readHint{}
	p.tail.reset()
	clear(p.producers)
	p.epochs = p.epochs[:0]
	p.epochGen++
	return nil
}

// saveLogStart persists the log start and sets it. The caller holds mu.
func (p *Partition) saveLogStart(offset int64) error {
	if err := fsutil.WriteFile(filepath.Join(p.dir, "log-start-offset"), []byte(strconv.FormatInt(offset, 10))); err != nil {
		return err
	}
	p.logStart = offset
	return nil
}
