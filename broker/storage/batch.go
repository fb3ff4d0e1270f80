// Package storage is the broker's partition log: segment files holding
// Kafka v2 record batches exactly as producers sent them (only the base
// offset and leader epoch are rewritten), a sparse offset index and a time
// index per segment, retention by time and size, and crash recovery that
// checks CRCs and cuts a torn tail.
//
// The on-disk layout follows Kafka's: a partition is a directory of
// <base offset>.log, .index and .timeindex files, named by the 20-digit
// offset of their first record.
//
// A Partition is written by one leader. Everything a follower needs later
// (read batches by offset, append batches that already carry offsets) is
// here, so replication adds a caller, not a new log.
package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/twmb/franz-go/pkg/kmsg"

	"mecha/internal/fsutil"
)

// Sentinel errors the protocol layer maps to Kafka error codes.
var (
	// ErrCorruptBatch: the batch is malformed or its CRC does not match
	// (CORRUPT_MESSAGE).
	ErrCorruptBatch = errors.New("corrupt record batch")
	// ErrUnsupportedMagic: a message set older than v2 (UNSUPPORTED_FOR_MESSAGE_FORMAT).
	ErrUnsupportedMagic = errors.New("record batch magic below 2")
	// ErrBatchTooLarge: a batch above the topic's max.message.bytes (MESSAGE_TOO_LARGE).
	ErrBatchTooLarge = errors.New("record batch too large")
	// ErrOffsetOutOfRange: a read below the log start or above the end.
	ErrOffsetOutOfRange = errors.New("offset out of range")
	// ErrNotContiguous: a follower's batches do not start at the log
	// end, or leave a gap.
	ErrNotContiguous = errors.New("replica batches not contiguous")
	// ErrEpochRegress: a follower's batch has an older leader epoch than
	// one before it.
	ErrEpochRegress = errors.New("replica batch leader epoch goes back")
	// ErrLogFailed: a write or fsync failed; the partition takes no more
	// writes until it is reopened (KAFKA_STORAGE_ERROR).
	ErrLogFailed = errors.New("partition log failed")
	// ErrClosed: the partition was closed or deleted.
	ErrClosed = errors.New("partition closed")
	// ErrOutOfOrderSequence: an idempotent producer skipped a sequence number.
	ErrOutOfOrderSequence = errors.New("out of order sequence number")
	// ErrDuplicateSequence: a sequence number older than the cached batches.
	ErrDuplicateSequence = errors.New("duplicate sequence number")
	// ErrInvalidProducerEpoch: an epoch older than the one the log has seen.
	ErrInvalidProducerEpoch = errors.New("invalid producer epoch")
	// ErrUnknownProducerID: a new producer whose first sequence is not 0.
	ErrUnknownProducerID = errors.New("unknown producer id")
)

// batchHeaderLen is the fixed part of a v2 record batch, up to and
// including the record count.
const batchHeaderLen = 61

// The offsets of the fields this package rewrites or reads without a full
// decode. The CRC covers bytes from crcStart to the end of the batch, so
// rewriting the base offset or the leader epoch keeps it valid.
const (
	lengthOffset = 8  // int32 batch length (bytes after this field)
	epochOffset  = 12 // int32 partition leader epoch
	magicOffset  = 16
	crcOffset    = 17
	crcStart     = 21
	logOverhead  = 12 // base offset + length
)

// BatchInfo is what the log keeps of a batch: enough to index it, to answer
// ListOffsets and to track idempotent producers.
type BatchInfo struct {
	Pos             int   // position of the batch within the validated buffer
	Size            int   // whole batch, log overhead included
	LastOffsetDelta int32 // records in the batch minus one
	FirstTimestamp  int64
	MaxTimestamp    int64
	ProducerID      int64
	ProducerEpoch   int16
	BaseSequence    int32
	NumRecords      int32
	Transactional   bool
	LeaderEpoch     int32 // the partition leader epoch the batch was written in
}

// ValidateBatches checks the records field of a produce request: one or
// more v2 record batches, each complete, with a matching CRC-32C and a
// record count that agrees with its offset delta. maxBatch bounds each
// batch (0 = no bound). It returns one BatchInfo per batch.
func ValidateBatches(buf []byte, maxBatch int) ([]BatchInfo, error) {
	if len(buf) == 0 {
		return nil, fmt.Errorf("%w: empty records", ErrCorruptBatch)
	}
	var out []BatchInfo
	for pos := 0; pos < len(buf); {
		info, err := validateOne(buf[pos:], maxBatch)
		if err != nil {
			return nil, err
		}
		info.Pos = pos
		out = append(out, info)
		pos += info.Size
	}
	return out, nil
}

func validateOne(b []byte, maxBatch int) (BatchInfo, error) {
	if len(b) < magicOffset+1 {
		return BatchInfo{}, fmt.Errorf("%w: %d bytes, shorter than a batch header", ErrCorruptBatch, len(b))
	}
	if m := int8(b[magicOffset]); m != 2 {
		return BatchInfo{}, fmt.Errorf("%w: magic %d", ErrUnsupportedMagic, m)
	}
	if len(b) < batchHeaderLen {
		return BatchInfo{}, fmt.Errorf("%w: %d bytes, shorter than a batch header", ErrCorruptBatch, len(b))
	}
	length := int64(int32(binary.BigEndian.Uint32(b[lengthOffset:])))
	size := length + logOverhead
	if length < batchHeaderLen-logOverhead {
		return BatchInfo{}, fmt.Errorf("%w: batch length %d", ErrCorruptBatch, length)
	}
	if size > int64(len(b)) {
		return BatchInfo{}, fmt.Errorf("%w: batch length %d runs past the %d bytes sent", ErrCorruptBatch, length, len(b))
	}
	if maxBatch > 0 && size > int64(maxBatch) {
		return BatchInfo{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBatchTooLarge, size, maxBatch)
	}
	whole := b[:size]
	want := binary.BigEndian.Uint32(whole[crcOffset:])
	if got := crc32.Checksum(whole[crcStart:], fsutil.Castagnoli); got != want {
		return BatchInfo{}, fmt.Errorf("%w: crc %08x, computed %08x", ErrCorruptBatch, want, got)
	}
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(whole); err != nil {
		return BatchInfo{}, fmt.Errorf("%w: %v", ErrCorruptBatch, err)
	}
	if rb.NumRecords <= 0 || rb.LastOffsetDelta != rb.NumRecords-1 {
		return BatchInfo{}, fmt.Errorf("%w: %d records with last offset delta %d", ErrCorruptBatch, rb.NumRecords, rb.LastOffsetDelta)
	}
	return BatchInfo{
		Size:            int(size),
		LastOffsetDelta: rb.LastOffsetDelta,
		FirstTimestamp:  rb.FirstTimestamp,
		MaxTimestamp:    rb.MaxTimestamp,
		ProducerID:      rb.ProducerID,
		ProducerEpoch:   rb.ProducerEpoch,
		BaseSequence:    rb.FirstSequence,
		NumRecords:      rb.NumRecords,
		Transactional:   rb.Attributes&0x10 != 0,
		LeaderEpoch:     rb.PartitionLeaderEpoch,
	}, nil
}

// scanBatch reads the batch header at the start of b as stored in a
// segment, checking the CRC when b holds the whole batch and check is set.
// It returns the batch's base offset, whole size and info; ok is false
// when b does not start with an intact batch (a torn or corrupt tail).
func scanBatch(b []byte, check bool) (base int64, info BatchInfo, ok bool) {
	if len(b) < batchHeaderLen || b[magicOffset] != 2 {
		return 0, info, false
	}
	length := int64(int32(binary.BigEndian.Uint32(b[lengthOffset:])))
	if length < batchHeaderLen-logOverhead || length+logOverhead > int64(len(b)) && check {
		return 0, info, false
	}
	size := length + logOverhead
	if check {
		if crc32.Checksum(b[crcStart:size], fsutil.Castagnoli) != binary.BigEndian.Uint32(b[crcOffset:]) {
			return 0, info, false
		}
	}
	base = int64(binary.BigEndian.Uint64(b))
	info = BatchInfo{
		Size:            int(size),
		LastOffsetDelta: int32(binary.BigEndian.Uint32(b[23:])),
		FirstTimestamp:  int64(binary.BigEndian.Uint64(b[27:])),
		MaxTimestamp:    int64(binary.BigEndian.Uint64(b[35:])),
		ProducerID:      int64(binary.BigEndian.Uint64(b[43:])),
		ProducerEpoch:   int16(binary.BigEndian.Uint16(b[51:])),
		BaseSequence:    int32(binary.BigEndian.Uint32(b[53:])),
		NumRecords:      int32(binary.BigEndian.Uint32(b[57:])),
		Transactional:   binary.BigEndian.Uint16(b[21:])&0x10 != 0,
		LeaderEpoch:     int32(binary.BigEndian.Uint32(b[epochOffset:])),
	}
	if info.LastOffsetDelta < 0 {
		return 0, info, false
	}
	// Recovery keeps only batches ValidateBatches would have let in; the
	// CRC alone does not make a header agree with itself.
	if check && info.NumRecords != info.LastOffsetDelta+1 {
		return 0, info, false
	}
	return base, info, true
}
