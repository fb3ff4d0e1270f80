package replica

import "errors"

// The package's sentinel errors. Callers test them with errors.Is; the
// API edges map them to Dapr and Kafka codes (NotEnoughReplicas,
// FencedLeaderEpoch, NotLeaderOrFollower, …).
var (
	// ErrFenced: the leader learned a newer epoch. It acknowledges
	// nothing more: every pending and new write fails with it.
	ErrFenced = errors.New("replica: leader fenced by a newer epoch")
	// ErrNotEnoughReplicas: a strong write met an in-sync set smaller
	// than MinISR, when it came or when the high watermark passed it.
	ErrNotEnoughReplicas = errors.New("replica: in-sync set smaller than the minimum")
	// ErrTimeout: a strong write was not committed within AckTimeout.
	// It may still commit later; it is not acknowledged.
	ErrTimeout = errors.New("replica: write not acknowledged in time")
	// ErrStaleEpoch: a fetch named an older epoch than the leader's;
	// the follower must learn the new assignment.
	ErrStaleEpoch = errors.New("replica: request from an older leader epoch")
	// ErrNotLeader: the replica asked is not a leader.
	ErrNotLeader = errors.New("replica: not the leader")
	// ErrUnknownReplica: an id that is not among the log's replicas.
	ErrUnknownReplica = errors.New("replica: unknown replica")
	// ErrOffsetOutOfRange: an offset outside the log's
	// [StartOffset, EndOffset].
	ErrOffsetOutOfRange = errors.New("replica: offset out of range")
	// ErrNotContiguous: an append that does not start at the log end,
	// or batches that leave gaps.
	ErrNotContiguous = errors.New("replica: batches not contiguous with the log")
	// ErrEpochRegress: a batch with an older epoch than the log's last.
	ErrEpochRegress = errors.New("replica: epoch older than the log's last")
	// ErrInvalid: a bad argument or configuration.
	ErrInvalid = errors.New("replica: invalid argument")
	// ErrMalformed is wrapped by every decoding error of the wire codec:
	// the frame is dropped.
	ErrMalformed = errors.New("replica: malformed frame")
)

// Code is a fetch response's outcome on the wire: each names one
// sentinel error, so a follower sees the same errors a local call gives.
type Code uint8

// The fetch response codes.
const (
	// CodeOK: the fetch was served (records, or a divergence to truncate).
	CodeOK Code = iota
	// CodeFenced: the replica asked was a leader and is fenced.
	CodeFenced
	// CodeStaleEpoch: the follower's epoch is older than the leader's.
	CodeStaleEpoch
	// CodeNotLeader: the replica asked leads nothing at that epoch.
	CodeNotLeader
	// CodeUnknownReplica: the follower is not among the replicas.
	CodeUnknownReplica
	// CodeOutOfRange: the fetch offset is outside the leader's log;
	// LogStart and LogEnd say where it is.
	CodeOutOfRange
	codeCount
)

// Err is the sentinel error the code stands for (nil for CodeOK).
func (c Code) Err() error {
	switch c {
	case CodeOK:
		return nil
	case CodeFenced:
		return ErrFenced
	case CodeStaleEpoch:
		return ErrStaleEpoch
	case CodeNotLeader:
		return ErrNotLeader
	case CodeUnknownReplica:
		return ErrUnknownReplica
	case CodeOutOfRange:
		return ErrOffsetOutOfRange
	}
	return ErrMalformed
}

// CodeOf is the code for err: the first sentinel it wraps, CodeNotLeader
// for anything else (the follower then asks the control plane again).
func CodeOf(err error) Code {
	switch {
	case err == nil:
		return CodeOK
	case errors.Is(err, ErrFenced):
		return CodeFenced
	case errors.Is(err, ErrStaleEpoch):
		return CodeStaleEpoch
	case errors.Is(err, ErrUnknownReplica):
		return CodeUnknownReplica
	case errors.Is(err, ErrOffsetOutOfRange):
		return CodeOutOfRange
	}
	return CodeNotLeader
}
