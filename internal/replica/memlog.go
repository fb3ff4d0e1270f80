package replica

import (
	"fmt"
	"sort"
)

// MemLog is an in-memory Log: the store of this package's tests and
// benchmarks, and the reference for how a store keeps its epoch history
// beside its records. It is not safe for concurrent use.
type MemLog struct {
	start, end int64
	batches    []Batch
	epochs     EpochHistory
	// arena holds the batches' data. It is only ever appended to, and a
	// truncation starts a new one, so a batch handed out by Read keeps
	// its bytes even after the log moves on.
	arena []byte
}

// NewMemLog returns an empty log starting at offset 0.
func NewMemLog() *MemLog { return &MemLog{} }

// StartOffset implements Log.
func (l *MemLog) StartOffset() int64 { return l.start }

// EndOffset implements Log.
func (l *MemLog) EndOffset() int64 { return l.end }

// Epochs implements Log.
func (l *MemLog) Epochs() EpochHistory { return l.epochs }

// Batches returns the log's batches, oldest first; the slice is the
// log's and valid until the next change.
func (l *MemLog) Batches() []Batch { return l.batches }

// Append implements Log. It checks the whole call before it changes
// anything, so a rejected append leaves the log as it was.
func (l *MemLog) Append(batches []Batch) error {
	end, last := l.end, l.epochs.Last()
	for _, b := range batches {
		switch {
		case b.Base != end:
			return fmt.Errorf("%w: batch at %d, log ends at %d", ErrNotContiguous, b.Base, end)
		case b.Count < 1:
			return fmt.Errorf("%w: batch at %d with %d records", ErrInvalid, b.Base, b.Count)
		case b.Epoch == 0:
			return fmt.Errorf("%w: batch at %d without an epoch", ErrInvalid, b.Base)
		case b.Epoch < last:
			return fmt.Errorf("%w: batch at %d of epoch %d after %d", ErrEpochRegress, b.Base, b.Epoch, last)
		}
		end, last = b.End(), b.Epoch
	}
	for _, b := range batches {
		if err := l.epochs.Assign(b.Epoch, b.Base); err != nil {
			return err // checked above: cannot happen
		}
		b.Data = l.keep(b.Data)
		l.batches = append(l.batches, b)
	}
	l.end = end
	return nil
}

// keep copies d into the arena.
func (l *MemLog) keep(d []byte) []byte {
	if cap(l.arena)-len(l.arena) < len(d) {
		// Chunks double up to 1 MiB: a log that appends and trims
		// forever keeps its chunks that size, not ever larger.
		l.arena = make([]byte, 0, max(min(2*cap(l.arena), 1<<20), len(d), 4096))
	}
	n := len(l.arena)
	l.arena = append(l.arena, d...)
	return l.arena[n:len(l.arena):len(l.arena)]
}

// find is the index of the batch holding offset (len when none does).
func (l *MemLog) find(offset int64) int {
	return sort.Search(len(l.batches), func(i int) bool { return l.batches[i].End() > offset })
}

// Read implements Log.
func (l *MemLog) Read(offset int64, maxBytes int, dst []Batch) ([]Batch, error) {
	if offset < l.start || offset > l.end {
		return dst, fmt.Errorf("%w: %d not in [%d, %d]", ErrOffsetOutOfRange, offset, l.start, l.end)
	}
	size := 0
	for i := l.find(offset); i < len(l.batches); i++ {
		b := l.batches[i]
		if size > 0 && size+b.Size() > maxBytes {
			break
		}
		size += b.Size()
		dst = append(dst, b)
		if size >= maxBytes {
			break
		}
	}
	return dst, nil
}

// Truncate implements Log.
func (l *MemLog) Truncate(offset int64) error {
	if offset < l.start || offset > l.end {
		return fmt.Errorf("%w: truncate to %d, log is [%d, %d]", ErrOffsetOutOfRange, offset, l.start, l.end)
	}
	i := l.find(offset)
	if i == len(l.batches) {
		return nil
	}
	end := l.batches[i].Base // offset, or the base of the batch holding it
	clear(l.batches[i:])
	l.batches = l.batches[:i]
	l.end = end
	l.epochs.TruncateFrom(end)
	l.arena = nil
	return nil
}

// TrimTo implements Log.
func (l *MemLog) TrimTo(offset int64) error {
	if offset > l.end {
		return fmt.Errorf("%w: trim to %d, log ends at %d", ErrOffsetOutOfRange, offset, l.end)
	}
	if offset <= l.start {
		return nil
	}
	i := l.find(offset)
	if i < len(l.batches) && l.batches[i].Base < offset {
		i++ // the batch holding offset goes whole
	}
	start := l.end
	if i < len(l.batches) {
		start = l.batches[i].Base
	}
	clear(l.batches[:i])
	l.batches = l.batches[i:]
	l.start = start
	l.epochs.TrimTo(start)
	return nil
}

// Reset implements Log.
func (l *MemLog) Reset(offset int64) error {
	if offset < 0 {
		return fmt.Errorf("%w: reset to %d", ErrInvalid, offset)
	}
	*l = MemLog{start: offset, end: offset}
	return nil
}
