package replica

import (
	"fmt"
	"time"
)

// EventKind says what an Event reports.
type EventKind uint8

// The events a Leader or Follower reports. The state machines do no I/O:
// they queue events, and the goroutine that owns them drains the queue
// (Leader.Events, Follower.Events) after each call and acts — answers a
// producer, sends a proposal to the control plane, wakes a consumer.
const (
	// EventAcked (leader): the strong write [Offset, End) is committed
	// and acknowledged.
	EventAcked EventKind = iota + 1
	// EventWriteFailed (leader): the strong write [Offset, End) is not
	// acknowledged, for Err (ErrNotEnoughReplicas, ErrTimeout,
	// ErrFenced). Its records may still be in the log, and may even
	// commit later: the producer retries, and de-duplication is the
	// store's.
	EventWriteFailed
	// EventHighWatermark (both): the high watermark moved up to Offset;
	// readers may see records below it.
	EventHighWatermark
	// EventISRProposal (leader): ask the control plane to set the
	// in-sync set to ISR if its ISR version is still Version, for the
	// leader of Epoch. The control plane rejects it when either moved
	// on, and answers with its current ISR and version
	// (Leader.CommitISR) either way.
	EventISRProposal
	// EventFenced (leader): the leader learned Epoch, newer than its
	// own. It is done; the owner makes the replica a follower (over the
	// same log) once it learns the new leader.
	EventFenced
	// EventTruncated (follower): the log's divergent tail was removed;
	// the log now ends at Offset. A store with state built from the log
	// drops what came from above Offset.
	EventTruncated
	// EventReset (follower): the log ended below the leader's start, so
	// it was emptied and restarted at Offset. A store whose state is
	// built from the log needs that state up to Offset from elsewhere
	// (a snapshot).
	EventReset
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventAcked:
		return "acked"
	case EventWriteFailed:
		return "write-failed"
	case EventHighWatermark:
		return "high-watermark"
	case EventISRProposal:
		return "isr-proposal"
	case EventFenced:
		return "fenced"
	case EventTruncated:
		return "truncated"
	case EventReset:
		return "reset"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is one report of a Leader or Follower. It is a plain struct, not
// an interface, so that queueing events allocates nothing on the write
// path; Kind says which fields are set.
type Event struct {
	// Kind says what happened, and so which fields are set.
	Kind EventKind
	// Offset is the write's first offset (Acked, WriteFailed), the new
	// high watermark, the log end after truncation or the start after
	// a reset.
	Offset int64
	// End is one past the write's last offset (Acked, WriteFailed).
	End int64
	// Err is why a write failed (WriteFailed).
	Err error
	// Epoch is the proposer's epoch (ISRProposal) or the newer epoch
	// learned (Fenced).
	Epoch Epoch
	// Version is the ISR version a proposal replaces (ISRProposal).
	Version uint64
	// ISR is the proposed in-sync set (ISRProposal); the event owns it.
	ISR []ReplicaID
}

// String is for logs and test failures.
func (e Event) String() string {
	switch e.Kind {
	case EventAcked:
		return fmt.Sprintf("acked [%d,%d)", e.Offset, e.End)
	case EventWriteFailed:
		return fmt.Sprintf("write-failed [%d,%d): %v", e.Offset, e.End, e.Err)
	case EventISRProposal:
		return fmt.Sprintf("isr-proposal epoch %d version %d %v", e.Epoch, e.Version, e.ISR)
	case EventFenced:
		return fmt.Sprintf("fenced by epoch %d", e.Epoch)
	}
	return fmt.Sprintf("%v %d", e.Kind, e.Offset)
}

// FetchRequest is a follower asking its leader for records (Kafka's
// replica Fetch with the last fetched epoch, KIP-320 and KIP-595 style:
// the tail check rides on every fetch, so no separate
// OffsetsForLeaderEpoch round trip is needed).
type FetchRequest struct {
	// Replica is the follower asking.
	Replica ReplicaID
	// Epoch is the leader epoch the follower follows. A leader with an
	// older one learns it is fenced; a newer one answers CodeStaleEpoch.
	Epoch Epoch
	// Corr is echoed in the response: the follower drops a response to
	// a request it no longer waits for (late, duplicated, reordered).
	Corr uint64
	// FetchOffset is the follower's log end: the first offset it wants.
	FetchOffset int64
	// LastEpoch is the epoch of the follower's last record (0 for an
	// empty log): the leader checks the follower's tail against its own
	// history before it counts FetchOffset.
	LastEpoch Epoch
	// MaxBytes is the record budget (one batch always goes).
	MaxBytes int32
	// Barrier echoes the largest FetchResponse.Barrier the follower took
	// from this leader at this epoch: a request carrying a barrier the
	// leader set after some moment was sent after it (a read index that
	// holds however late the network delivers older requests).
	Barrier uint64
	// Partial says the follower's log starts where it did not copy the
	// leader's (it started from the leader's high watermark, Kuaishou's
	// smooth expansion): it is not counted in sync until the leader's log
	// starts no lower than its own, so the in-sync set only ever holds
	// replicas with all of the leader's records.
	Partial bool
	// Received is when the leader's transport took the request in (not
	// on the wire; zero: when handled). A request held for long polling
	// and handled again keeps it, so it proves the follower caught up
	// only as of then.
	Received time.Time
}

// FetchResponse is the leader's answer to a FetchRequest.
type FetchResponse struct {
	// Corr echoes the request's: the follower takes the answer only to
	// the request it waits for.
	Corr uint64
	// FetchOffset echoes the request's: the answer is about the log
	// end the follower asked from, and a follower whose log moved since
	// (a new incarnation) drops it.
	FetchOffset int64
	// Epoch is the responder's epoch.
	Epoch Epoch
	// Code is the outcome; CodeOK with Diverging set means "truncate".
	Code Code
	// HighWatermark is the leader's, after counting this fetch.
	HighWatermark int64
	// LogStart and LogEnd are the leader's log bounds.
	LogStart, LogEnd int64
	// Barrier is the leader's read barrier when it answered, for the
	// follower to echo (FetchRequest.Barrier); the leader's owner sets
	// it.
	Barrier uint64
	// Diverging says the follower's tail is not in the leader's
	// history, so it truncates: to where its own records of epochs up
	// to DivergingEpoch end, at most DivergingEnd. Batches is empty.
	Diverging bool
	// DivergingEpoch is the leader's largest epoch not above the
	// follower's last.
	DivergingEpoch Epoch
	// DivergingEnd is where the leader's records of epochs up to
	// DivergingEpoch end.
	DivergingEnd int64
	// Batches are the records from FetchOffset. They alias the leader's
	// log or the decoded frame: the receiver copies what it keeps.
	Batches []Batch
}

// reset clears r for reuse, keeping Batches' backing array.
func (r *FetchResponse) reset() {
	// Cleared so that the old batches' data is not kept alive.
	clear(r.Batches)
	*r = FetchResponse{Batches: r.Batches[:0]}
}
