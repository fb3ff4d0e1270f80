// Package replica is the replication core both of mecha's stores share:
// Crux replicates each slot's log of (slot, seq) records with it, the
// broker each partition's log. It is Kafka's replication model, written
// as deterministic state machines fed requests, answers and the time —
// no goroutines, no sockets, no clock — so that it can be tested by
// simulation and wrapped by any transport.
//
// # Model
//
// A log has replicas; the control plane (a raft group, elsewhere) names
// one the leader at an epoch, newer than every epoch before, and keeps
// the committed in-sync set (ISR) with a version. The store implements
// Log over its records: opaque batches, each with a record count, a byte
// size and the epoch of the leader that wrote it, plus the epoch history
// ((epoch, start offset) pairs, Kafka's leader-epoch checkpoint).
//
//   - Leader appends writes at its log end, stamped with its epoch, and
//     answers followers' fetches. A fetch carries the follower's log end
//     and the epoch of its last record; the leader checks that tail
//     against its history (Kafka's OffsetsForLeaderEpoch, done on every
//     fetch) and answers with records, or "diverging: your records past
//     offset X are not mine". Only a checked fetch counts: the leader
//     then knows the follower holds its log up to that offset.
//   - The in-sync set: a follower is in sync while it caught up to the
//     leader's log end within MaxLag (replica.lag.time.max.ms). The
//     leader proposes shrinks and expansions to the control plane
//     (EventISRProposal, stamped with its epoch and the ISR version it
//     replaces) and applies the answer (CommitISR). A follower joins
//     only when it holds everything committed and everything written
//     before this leader's epoch.
//   - The high watermark (HW) is the smallest log end over the ISR —
//     the committed one and the pending proposal's members together,
//     a superset of any ISR the control plane can hold — and never goes
//     down. Records below it are committed; readers (consumers, Crux
//     reads on any replica) see only those (ReadCommitted).
//   - Follower fetches one request at a time, appends what comes,
//     truncates a divergent tail (and asks again, until its tail is the
//     leader's), and follows the leader's HW, never above the part of
//     its log the leader checked.
//   - Retention trims a log from its start (Log.TrimTo), on the leader
//     only below its HW; a follower's log start follows the leader's,
//     and a follower that ends below it starts over there (EventReset).
//
// # Guarantees
//
// With the control plane electing only from the ISR:
//
//   - A Strong write is acknowledged (EventAcked) once the HW passes it
//     and the committed ISR has at least MinISR members; then every ISR
//     member holds it, so every future leader does, at the same offset:
//     it is never lost or reordered. If the HW passes it with too small
//     an ISR it fails with ErrNotEnoughReplicas (its records may stay).
//   - Replicas agree on every record below their HW, and a follower's
//     records that the current leader lacks are truncated once it
//     fetches (a returning old leader included).
//   - A leader that learns a newer epoch (ObserveEpoch, or a follower's
//     fetch naming it) is fenced: every pending and later write fails
//     with ErrFenced and nothing more is acknowledged. Before it learns,
//     it can acknowledge only what its new leader already holds: the new
//     leader was in its ISR and stopped fetching from it.
//
// An Eventual write is acknowledged when the leader's log has it. It is
// lost if the leader dies (or is fenced) before the follower that
// becomes leader fetched it: the new leader's log is the truth, and the
// write is truncated from the old leader when it returns as a follower.
// The same happens to any write not yet committed, Strong ones included,
// but those were not acknowledged.
//
// # What the users do
//
// The owner of a Leader or Follower is one goroutine: it feeds the
// machine (Append, HandleFetch, HandleResponse, Tick, CommitISR,
// ObserveEpoch, SetLeader), drains its Events, and does the I/O: the
// transport carries fetches (a compact frame: AppendFetchRequest,
// DecodeFetchResponse, …), the control plane takes proposals and
// publishes epochs and ISRs. A replica changes role by building the
// other machine over the same Log, passing on its high watermark:
// NewLeader when the control plane names it leader at a new epoch,
// NewFollower when its Leader reports EventFenced. Readers read through
// ReadCommitted. Idempotence and de-duplication of producer writes, and
// what a store builds from its log (Crux's key map), are the store's:
// EventTruncated and EventReset tell it when its log lost a tail or
// restarted.
//
// A Log must keep across a crash what its replica reported in a fetch
// (see Log); a replica that lost its log must rejoin out of the ISR.
package replica
