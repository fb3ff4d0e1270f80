package broker

// partitionLog is a partition's storage.Partition as internal/replica's
// Log: what the replication state machines (Leader, Follower) read and
// write. Its batches are Kafka record batches; replica epochs are the
// batches' partition leader epochs.

import (
	"encoding/binary"
	"errors"
	"fmt"

	"mecha/broker/storage"
	"mecha/internal/replica"
)

type partitionLog struct {
	p *storage.Partition
	// epochs mirrors the partition's leader-epoch history as of gen.
	epochs replica.EpochHistory
	gen    uint64
	start  int64  // the log start epochs was cut at
	empty  bool   // whether the log was empty then
	buf    []byte // Append's concatenation of the batches
}

func newPartitionLog(p *storage.Partition) *partitionLog { return &partitionLog{p: p} }

// StartOffset implements replica.Log.
func (l *partitionLog) StartOffset() int64 {
	start, _ := l.p.Offsets()
	return start
}

// EndOffset implements replica.Log.
func (l *partitionLog) EndOffset() int64 { return l.p.EndOffset() }

// Append implements replica.Log: the batches are Kafka record batches,
// written with their Base and Epoch (a follower's copy of its leader's,
// where they already hold them).
func (l *partitionLog) Append(batches []replica.Batch) error {
	if len(batches) == 0 {
		return nil
	}
	l.buf = l.buf[:0]
	for _, b := range batches {
		if len(b.Data) < 17 {
			return fmt.Errorf("%w: a batch of %d bytes", replica.ErrInvalid, len(b.Data))
		}
		if b.Epoch > 1<<31-1 {
			return fmt.Errorf("%w: epoch %d does not fit a record batch", replica.ErrInvalid, b.Epoch)
		}
		start := len(l.buf)
		l.buf = append(l.buf, b.Data...)
		// The CRC covers neither field.
		binary.BigEndian.PutUint64(l.buf[start:], uint64(b.Base))
		binary.BigEndian.PutUint32(l.buf[start+12:], uint32(b.Epoch))
	}
	infos, err := storage.ValidateBatches(l.buf, 0)
	if err != nil {
		return fmt.Errorf("%w: %v", replica.ErrInvalid, err)
	}
	for i, in := range infos {
		if in.LastOffsetDelta+1 != batches[i].Count {
			return fmt.Errorf("%w: batch at %d holds %d records, says %d", replica.ErrInvalid, batches[i].Base, in.LastOffsetDelta+1, batches[i].Count)
		}
	}
	return replicaErr(l.p.AppendReplica(l.buf, infos))
}

// Read implements replica.Log, up to the log end.
func (l *partitionLog) Read(offset int64, maxBytes int, dst []replica.Batch) ([]replica.Batch, error) {
	res, err := l.p.ReadUncommitted(offset, maxBytes, nil)
	if err != nil {
		return dst, replicaErr(err)
	}
	return splitBatches(res.Batches, dst)
}

// splitBatches cuts read data into replica batches.
func splitBatches(data []byte, dst []replica.Batch) ([]replica.Batch, error) {
	for len(data) > 0 {
		if len(data) < 61 {
			return dst, fmt.Errorf("broker: %d bytes left, shorter than a batch header", len(data))
		}
		size := int(int32(binary.BigEndian.Uint32(data[8:]))) + 12
		if size < 61 || size > len(data) {
			return dst, fmt.Errorf("broker: a batch of %d bytes in %d", size, len(data))
		}
		dst = append(dst, replica.Batch{
			Base:  int64(binary.BigEndian.Uint64(data)),
			Epoch: replica.Epoch(binary.BigEndian.Uint32(data[12:])),
			Count: int32(binary.BigEndian.Uint32(data[23:])) + 1,
			Data:  data[:size:size],
		})
		data = data[size:]
	}
	return dst, nil
}

// Truncate implements replica.Log.
func (l *partitionLog) Truncate(offset int64) error { return replicaErr(l.p.Truncate(offset)) }

// TrimTo implements replica.Log.
func (l *partitionLog) TrimTo(offset int64) error {
	_, err := l.p.TrimTo(offset)
	return replicaErr(err)
}

// Reset implements replica.Log.
func (l *partitionLog) Reset(offset int64) error { return replicaErr(l.p.Reset(offset)) }

// Epochs implements replica.Log: the partition's history from the entry
// covering the log start on. Epoch 0 is the single-node broker's, before
// any leader was elected: it is no epoch to replication.
func (l *partitionLog) Epochs() replica.EpochHistory {
	start, end := l.StartOffset(), l.EndOffset()
	h, gen, changed := l.p.EpochsSince(l.gen)
	if !changed && start == l.start && (start == end) == l.empty {
		return l.epochs
	}
	if !changed {
		h, gen, _ = l.p.EpochsSince(0)
	}
	l.epochs, l.gen, l.start, l.empty = l.epochs[:0], gen, start, start == end
	for i, e := range h {
		// (An entry whose records all went below the log start covers
		// nothing, as in Kafka's cache truncated at both ends.)
		if e.Epoch <= 0 || i+1 < len(h) && h[i+1].Start <= start || max(e.Start, start) >= end {
			continue
		}
		l.epochs = append(l.epochs, replica.EpochStart{Epoch: replica.Epoch(e.Epoch), Start: max(e.Start, start)})
	}
	return l.epochs
}

// replicaErr maps the log's errors onto replica's.
func replicaErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrOffsetOutOfRange):
		return fmt.Errorf("%w: %v", replica.ErrOffsetOutOfRange, err)
	case errors.Is(err, storage.ErrNotContiguous):
		return fmt.Errorf("%w: %v", replica.ErrNotContiguous, err)
	case errors.Is(err, storage.ErrEpochRegress):
		return fmt.Errorf("%w: %v", replica.ErrEpochRegress, err)
	}
	return err
}
