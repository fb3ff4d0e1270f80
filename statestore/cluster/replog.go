package cluster

import (
	"fmt"
	"sort"

	"mecha/internal/replica"
	"mecha/statestore"
)

// slotLog is a slot's replica.Log: the tail of the slot's records, in
// memory, over the engine, which holds the slot's state (and, durably,
// every record). Offsets are the slot's seqs: the record of seq s is at
// offset s-1, and the log ends at the slot's seq.
//
// The log keeps the newest records only (maxBytes, and never below the
// high watermark on a leader): a follower that needs older ones gets a
// copy of the slot instead. After a restart the log is empty at the
// slot's seq with no epoch history: such a follower is not "based" and
// starts from a copy too, because nothing proves its records are its
// leader's.
//
// All of it is guarded by the slot's lock (statestore.Engine.WithSlot).
type slotLog struct {
	start, end int64
	batches    []replica.Batch // owned copies, contiguous from start
	bytes      int
	history    replica.EpochHistory
	maxBytes   int
	// keepFrom bounds trimming: records at or above it stay (the
	// leader's high watermark).
	keepFrom int64
	// tx is set while a follower applies a fetch: Append then logs the
	// records into the engine. A leader's Append only keeps them (the
	// engine logged them already).
	tx *statestore.SlotTx
	// needCopy: the engine's slot no longer matches the log (a
	// divergent tail was cut, the log was reset, or a write could not be
	// logged here): the follower installs a copy of its leader's slot
	// before it fetches again.
	needCopy bool
}

func newSlotLog(seq uint64, maxBytes int) *slotLog {
	return &slotLog{start: int64(seq), end: int64(seq), maxBytes: maxBytes}
}

func (l *slotLog) StartOffset() int64           { return l.start }
func (l *slotLog) EndOffset() int64             { return l.end }
func (l *slotLog) Epochs() replica.EpochHistory { return l.history }

func (l *slotLog) Append(batches []replica.Batch) error {
	for _, b := range batches {
		if b.Base != l.end {
			return fmt.Errorf("%w: batch at %d, log ends at %d", replica.ErrNotContiguous, b.Base, l.end)
		}
		if b.Epoch < l.history.Last() {
			return fmt.Errorf("%w: batch of epoch %d after %d", replica.ErrEpochRegress, b.Epoch, l.history.Last())
		}
		if l.tx != nil {
			if got := int64(l.tx.Seq()); got != l.end {
				l.needCopy = true
				return fmt.Errorf("%w: slot %d is at seq %d, its log at %d", statestore.ErrNotContiguous, l.tx.Slot(), got, l.end)
			}
			n, err := l.tx.ApplyRecord(b.Data)
			if err != nil {
				l.needCopy = true
				return err
			}
			if n != int(b.Count) {
				l.needCopy = true
				return fmt.Errorf("%w: batch of %d records holds %d ops", statestore.ErrNotContiguous, b.Count, n)
			}
		}
		if err := l.history.Assign(b.Epoch, b.Base); err != nil {
			l.needCopy = l.needCopy || l.tx != nil // the engine holds a record the log does not
			return err
		}
		b.Data = append([]byte(nil), b.Data...)
		l.batches = append(l.batches, b)
		l.bytes += len(b.Data)
		l.end = b.End()
	}
	l.trim()
	return nil
}

// trim drops the oldest batches past maxBytes, below keepFrom.
func (l *slotLog) trim() {
	i := 0
	for l.bytes > l.maxBytes && i < len(l.batches)-1 && l.batches[i].End() <= l.keepFrom {
		l.bytes -= len(l.batches[i].Data)
		i++
	}
	if i > 0 {
		l.dropFront(i)
		l.history.TrimTo(l.start)
	}
}

func (l *slotLog) dropFront(i int) {
	clear(l.batches[:i])
	l.batches = l.batches[i:]
	if len(l.batches) > 0 {
		l.start = l.batches[0].Base
	} else {
		l.start = l.end
	}
}

// find is the index of the batch holding offset.
func (l *slotLog) find(offset int64) int {
	return sort.Search(len(l.batches), func(i int) bool { return l.batches[i].End() > offset })
}

func (l *slotLog) Read(offset int64, maxBytes int, dst []replica.Batch) ([]replica.Batch, error) {
	if offset < l.start || offset > l.end {
		return dst, fmt.Errorf("%w: %d not in [%d, %d]", replica.ErrOffsetOutOfRange, offset, l.start, l.end)
	}
	size := 0
	for i := l.find(offset); i < len(l.batches); i++ {
		b := l.batches[i]
		if size > 0 && size+len(b.Data) > maxBytes {
			break
		}
		size += len(b.Data)
		dst = append(dst, b)
	}
	return dst, nil
}

// Truncate cuts the tail. The engine cannot take records back, so a
// follower whose applied records are cut installs a copy next.
func (l *slotLog) Truncate(offset int64) error {
	if offset < l.start || offset > l.end {
		return fmt.Errorf("%w: truncate to %d, log [%d, %d]", replica.ErrOffsetOutOfRange, offset, l.start, l.end)
	}
	if offset == l.end {
		return nil
	}
	i := l.find(offset)
	for _, b := range l.batches[i:] {
		l.bytes -= len(b.Data)
	}
	clear(l.batches[i:])
	l.batches = l.batches[:i]
	l.end = l.start
	if i > 0 {
		l.end = l.batches[i-1].End()
	}
	l.history.TruncateFrom(l.end)
	l.needCopy = true
	return nil
}

func (l *slotLog) TrimTo(offset int64) error {
	if offset > l.end {
		return fmt.Errorf("%w: trim to %d past the end %d", replica.ErrOffsetOutOfRange, offset, l.end)
	}
	i := l.find(offset)
	for _, b := range l.batches[:i] {
		l.bytes -= len(b.Data)
	}
	if i > 0 {
		l.dropFront(i)
	}
	if l.start < offset && len(l.batches) == 0 {
		l.start = offset
	}
	l.history.TrimTo(l.start)
	return nil
}

// Reset restarts the log at offset. The slot's state below offset must
// come from a copy of the leader's.
func (l *slotLog) Reset(offset int64) error {
	clear(l.batches)
	l.batches, l.bytes, l.history = l.batches[:0], 0, nil
	l.start, l.end = offset, offset
	l.needCopy = true
	return nil
}

// restart empties the log at seq with history h: the slot's state is
// whole at seq (a copy was installed, or this member leads from its
// engine).
func (l *slotLog) restart(seq uint64, h replica.EpochHistory) {
	clear(l.batches)
	l.batches, l.bytes = l.batches[:0], 0
	l.start, l.end = int64(seq), int64(seq)
	l.history = append(replica.EpochHistory(nil), h...)
	l.needCopy = false
}
