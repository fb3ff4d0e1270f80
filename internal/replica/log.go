package replica

import (
	"fmt"
	"sort"
)

// Epoch is a leader epoch: the control plane bumps it every time it
// chooses a leader, so at most one leader holds any epoch. Zero means
// "none": the first leader has epoch 1, and a log whose history is empty
// reports epoch 0 as its last.
type Epoch uint64

// ReplicaID names a replica of one log: the control plane's member id.
type ReplicaID uint32

// Batch is an opaque run of Count records at offsets [Base, Base+Count),
// written by the leader of Epoch. The package never looks inside Data:
// idempotence, de-duplication and the record format are the store's.
type Batch struct {
	// Base is the offset of the batch's first record.
	Base int64
	// Epoch is the epoch of the leader that wrote the batch.
	Epoch Epoch
	// Count is the number of records, at least 1.
	Count int32
	// Data is the records, in the store's format.
	Data []byte
}

// End is the offset after the batch's last record.
func (b Batch) End() int64 { return b.Base + int64(b.Count) }

// Size is the batch's byte size, what fetch budgets count.
func (b Batch) Size() int { return len(b.Data) }

// Log is what a store implements for one replicated log (a Crux slot, a
// broker partition). Offsets are dense: every record has one, and batch
// boundaries are the same on every replica because followers append the
// leader's batches unchanged. The Log is called from the goroutine that
// owns the Leader or Follower over it; it need not lock for them.
//
// Durability: a follower reports its EndOffset to the leader as what it
// holds, and the leader counts it towards the high watermark. A Log must
// therefore keep, across a crash, every record that was in it when
// EndOffset was read for a fetch, or the replica must come back as a new
// member (out of the in-sync set) — Kafka makes the same assumption.
type Log interface {
	// StartOffset is the first offset the log still holds; retention
	// moves it up, always to a batch boundary.
	StartOffset() int64
	// EndOffset is the log end offset (LEO): the offset the next record
	// gets.
	EndOffset() int64
	// Append adds batches at EndOffset in order: the first one's Base
	// is EndOffset and each starts where the one before ends (else
	// ErrNotContiguous), and epochs never go down (else
	// ErrEpochRegress). A batch whose epoch is newer than the history's
	// last adds (Epoch, Base) to the history. The log may keep Data
	// only until Append returns: it copies what it keeps.
	Append(batches []Batch) error
	// Read appends to dst whole batches from the one holding offset,
	// while their sizes fit maxBytes, and always at least one so that a
	// batch larger than the budget still moves. It returns dst
	// unchanged at EndOffset, and ErrOffsetOutOfRange outside
	// [StartOffset, EndOffset]. Data may alias the log's memory: the
	// caller does not modify it.
	Read(offset int64, maxBytes int, dst []Batch) ([]Batch, error)
	// Truncate removes every record at or above offset, in
	// [StartOffset, EndOffset], and the history entries that start
	// there or later. A batch holding offset goes whole (as in Kafka),
	// so the log may end below offset: callers read EndOffset after.
	Truncate(offset int64) error
	// TrimTo removes every record below offset, at most EndOffset
	// (retention; and a follower's log start follows the leader's). A
	// batch holding offset goes whole, so the log may start above it.
	// The history keeps the entry covering the new start.
	TrimTo(offset int64) error
	// Reset empties the log and restarts it at offset, with an empty
	// history: a follower whose log ends below the leader's start.
	Reset(offset int64) error
	// Epochs is the leader-epoch history (Kafka's leader-epoch
	// checkpoint). The slice is the log's: callers read it before the
	// next call that changes the log and never modify it.
	Epochs() EpochHistory
}

// EpochStart is one entry of an epoch history: the records from Start on
// (up to the next entry's Start) were written by the leader of Epoch.
type EpochStart struct {
	// Epoch is the leader epoch.
	Epoch Epoch
	// Start is the offset of the epoch's first record.
	Start int64
}

// EpochHistory is a log's epoch history, oldest first, with epochs and
// starts strictly increasing. It is what lets a leader tell a follower
// where their logs part (Kafka's OffsetsForLeaderEpoch). Stores keep one
// beside their log and update it with Assign, TruncateFrom and TrimTo;
// MemLog shows how.
type EpochHistory []EpochStart

// Last is the epoch of the newest entry, 0 when the history is empty.
func (h EpochHistory) Last() Epoch {
	if len(h) == 0 {
		return 0
	}
	return h[len(h)-1].Epoch
}

// Assign records that the leader of e wrote from start on. An epoch not
// newer than the last is already covered and changes nothing; a start
// below the last entry's cannot happen in a well-formed log and is an
// error.
func (h *EpochHistory) Assign(e Epoch, start int64) error {
	s := *h
	if n := len(s); n > 0 {
		last := s[n-1]
		if e < last.Epoch {
			return fmt.Errorf("%w: epoch %d after %d", ErrEpochRegress, e, last.Epoch)
		}
		if e == last.Epoch {
			return nil
		}
		if start < last.Start {
			return fmt.Errorf("%w: epoch %d starts at %d, before epoch %d at %d", ErrNotContiguous, e, start, last.Epoch, last.Start)
		}
		if start == last.Start {
			// The previous epoch wrote nothing: its entry covers no
			// record, and keeping it would make its end offset wrong.
			s[n-1] = EpochStart{Epoch: e, Start: start}
			return nil
		}
	}
	*h = append(s, EpochStart{Epoch: e, Start: start})
	return nil
}

// TruncateFrom drops the entries for records at or above offset: the log
// was truncated there.
func (h *EpochHistory) TruncateFrom(offset int64) {
	s := *h
	i := sort.Search(len(s), func(i int) bool { return s[i].Start >= offset })
	*h = s[:i]
}

// TrimTo drops what retention removed below offset, keeping the entry
// that covers offset (its start moved up to offset).
func (h *EpochHistory) TrimTo(offset int64) {
	s := *h
	// The last entry starting at or below offset covers it.
	i := sort.Search(len(s), func(i int) bool { return s[i].Start > offset }) - 1
	if i < 0 {
		return
	}
	n := copy(s, s[i:])
	s = s[:n]
	s[0].Start = offset
	*h = s
}

// EndOffsetFor answers Kafka's OffsetsForLeaderEpoch for epoch e on a log
// ending at logEnd: the largest epoch in the history not above e, and the
// offset where the records of that epoch end (the next entry's start, or
// logEnd for the newest). ok is false when e is 0 or the history is
// empty: there is nothing to compare. An e older than every entry gets
// (e, first start): nothing of e survives here.
func (h EpochHistory) EndOffsetFor(e Epoch, logEnd int64) (epoch Epoch, end int64, ok bool) {
	if e == 0 || len(h) == 0 {
		return 0, 0, false
	}
	// First entry newer than e.
	i := sort.Search(len(h), func(i int) bool { return h[i].Epoch > e })
	switch {
	case i == 0:
		return e, h[0].Start, true
	case i == len(h):
		return h[i-1].Epoch, logEnd, true
	default:
		return h[i-1].Epoch, h[i].Start, true
	}
}

// ReadCommitted reads like Log.Read but stops below hw, the high
// watermark: records above it are not committed and no reader — a
// consumer, a Crux read on a follower — sees them. It is the one read
// path for readers, so the rule lives in one place.
func ReadCommitted(l Log, offset int64, maxBytes int, hw int64, dst []Batch) ([]Batch, error) {
	if offset >= hw {
		if offset > l.EndOffset() || offset < l.StartOffset() {
			return dst, fmt.Errorf("%w: %d not in [%d, %d]", ErrOffsetOutOfRange, offset, l.StartOffset(), l.EndOffset())
		}
		return dst, nil
	}
	n := len(dst)
	out, err := l.Read(offset, maxBytes, dst)
	if err != nil {
		return out, err
	}
	// The high watermark is a batch boundary (every replica's log end
	// is), so whole batches are either below it or above it.
	i := n
	for i < len(out) && out[i].End() <= hw {
		i++
	}
	return out[:i], nil
}
