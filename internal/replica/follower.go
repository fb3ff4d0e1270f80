package replica

import (
	"fmt"
	"time"
)

// Follower is the fetch state machine of a log's follower: it builds the
// next fetch from its log, applies the leader's answers (append, or
// truncate a divergent tail), and follows the leader's high watermark. It
// keeps one fetch in flight. It does no I/O and reads no clock; one
// goroutine owns it (and its Log) and calls it.
type Follower struct {
	cfg  Config
	log  Log
	self ReplicaID

	leader    ReplicaID
	epoch     Epoch
	hasLeader bool
	hw        int64

	// The fetch in flight: its correlation id, log end and send time.
	corr     uint64
	inflight bool
	fetchAt  int64
	sentAt   time.Time
	// notBefore holds fetches back after an error answer.
	notBefore time.Time
	// barrier is the leader's largest read barrier taken at this epoch,
	// echoed in every fetch.
	barrier uint64
	// latest: the next fetch asks where the leader's log is, and the
	// log starts there (StartFromLatest). partialFrom, when not -1, is
	// where a log started that way begins: it is partial until the
	// leader's log starts there too.
	latest      bool
	partialFrom int64

	events []Event
}

// NewFollower makes replica self a follower over log, with hw the high
// watermark it knew (a committed offset: as leader, or from a
// checkpoint; 0 when it knows none). It fetches nothing until SetLeader.
func NewFollower(log Log, cfg Config, self ReplicaID, hw int64) (*Follower, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Follower{cfg: cfg, log: log, self: self, hw: min(max(hw, log.StartOffset()), log.EndOffset()), partialFrom: -1}, nil
}

// StartFromLatest makes a new replica start from the leader's high
// watermark instead of copying the leader's history (Kuaishou's smooth
// expansion, KAFKA-8328): an empty log is reset there on the first
// answer. Until the leader's log starts no lower than this one's (its
// retention has dropped what this replica never copied) the follower
// tells the leader it is partial, and is not counted in sync. A log that
// holds records already is taken as started that way (a restart during
// the move).
func (f *Follower) StartFromLatest() {
	start := f.log.StartOffset()
	if start == f.log.EndOffset() && start == 0 {
		f.latest = true
		return
	}
	if f.partialFrom < 0 && start > 0 {
		f.partialFrom = start
	}
}

// Partial reports whether the log lacks records the leader still holds
// (StartFromLatest): the follower is not counted in sync until then.
func (f *Follower) Partial() bool { return f.latest || f.partialFrom >= 0 }

// SetLeader is the control plane's news of the log's leader at epoch; it
// reports whether that is now the leader the follower fetches from. An
// older epoch than the follower's is stale news and changes nothing, as
// does its own epoch once it has a leader. A new leader drops the fetch
// in flight; the first fetch to it carries the follower's last epoch, so
// the leader checks the tail before anything is appended or counted.
func (f *Follower) SetLeader(leader ReplicaID, epoch Epoch) bool {
	if epoch < f.epoch || (epoch == f.epoch && f.hasLeader) {
		return epoch == f.epoch && leader == f.leader
	}
	f.leader, f.epoch, f.hasLeader = leader, epoch, true
	f.inflight, f.barrier = false, 0
	f.notBefore = time.Time{}
	return true
}

// Leader is the leader the follower fetches from and its epoch; ok is
// false until SetLeader.
func (f *Follower) Leader() (leader ReplicaID, epoch Epoch, ok bool) {
	return f.leader, f.epoch, f.hasLeader
}

// HighWatermark is the offset below which the follower's records are
// committed: readers on this replica see only records below it
// (ReadCommitted).
func (f *Follower) HighWatermark() int64 { return f.hw }

// Events appends the events queued since the last call to dst and
// clears the queue.
func (f *Follower) Events(dst []Event) []Event {
	dst = append(dst, f.events...)
	clear(f.events)
	f.events = f.events[:0]
	return dst
}

// Fetch returns the next request to send to the leader, when one is due:
// a leader is known, no fetch is in flight (or the one in flight is
// older than FetchTimeout: given up, its answer will be dropped), and no
// error backoff holds. The caller sends it to Leader().
func (f *Follower) Fetch(now time.Time) (FetchRequest, bool) {
	if !f.hasLeader || now.Before(f.notBefore) {
		return FetchRequest{}, false
	}
	if f.inflight && now.Sub(f.sentAt) < f.cfg.FetchTimeout {
		return FetchRequest{}, false
	}
	f.corr++
	f.inflight, f.sentAt, f.fetchAt = true, now, f.log.EndOffset()
	if f.latest {
		// Below any log start: the answer is out of range, and says
		// where the leader's log is.
		f.fetchAt = -1
	}
	return FetchRequest{
		Replica:     f.self,
		Epoch:       f.epoch,
		Corr:        f.corr,
		FetchOffset: f.fetchAt,
		LastEpoch:   f.log.Epochs().Last(),
		MaxBytes:    int32(min(f.cfg.FetchMaxBytes, 1<<31-1)),
		Barrier:     f.barrier,
		Partial:     f.Partial(),
	}, true
}

// HandleResponse applies the leader's answer to the fetch in flight. An
// answer to another request (late, duplicated) or from another epoch is
// dropped. Records are appended and the high watermark follows the
// leader's, never above what the leader checked of this log; a
// divergence truncates the tail (EventTruncated); an offset out of the
// leader's range resets or truncates the log. The error is the code of
// an error answer (the follower backs off RetryBackoff; ErrStaleEpoch and
// ErrNotLeader mean the owner should ask the control plane who leads) or
// the log's.
func (f *Follower) HandleResponse(resp *FetchResponse, now time.Time) error {
	if !f.inflight || resp.Corr != f.corr || resp.FetchOffset != f.fetchAt {
		return nil
	}
	f.inflight = false
	switch resp.Code {
	case CodeOK:
		if resp.Epoch != f.epoch {
			return nil
		}
		f.barrier = max(f.barrier, resp.Barrier)
		if resp.Diverging {
			return f.truncate(resp.DivergingEpoch, resp.DivergingEnd)
		}
		if f.partialFrom >= 0 && resp.LogStart >= f.partialFrom {
			f.partialFrom = -1 // the leader holds nothing this log lacks
		}
		if resp.LogStart > f.log.StartOffset() {
			// The log start follows the leader's (as in Kafka):
			// records below it are gone there, and the leader
			// could not check them, so they may not even be its.
			if err := f.log.TrimTo(resp.LogStart); err != nil {
				f.notBefore = now.Add(f.cfg.RetryBackoff)
				return fmt.Errorf("replica: trim to the leader's start %d: %w", resp.LogStart, err)
			}
		}
		if len(resp.Batches) > 0 {
			if err := f.log.Append(resp.Batches); err != nil {
				f.notBefore = now.Add(f.cfg.RetryBackoff)
				return fmt.Errorf("replica: append of the fetch from %d at %d: %w", f.leader, f.fetchAt, err)
			}
		}
		// The leader checked this log up to fetchAt and sent what
		// follows, so the log matches the leader's to its end now.
		f.raise(min(resp.HighWatermark, f.log.EndOffset()))
		return nil
	case CodeOutOfRange:
		if f.latest {
			return f.startAt(resp.HighWatermark, resp.LogStart)
		}
		return f.outOfRange(resp.LogStart, resp.LogEnd)
	}
	f.notBefore = now.Add(f.cfg.RetryBackoff)
	return fmt.Errorf("replica: fetch from %d at epoch %d: %w", f.leader, f.epoch, resp.Code.Err())
}

// raise moves the high watermark up to hw.
func (f *Follower) raise(hw int64) {
	if hw > f.hw {
		f.hw = hw
		f.events = append(f.events, Event{Kind: EventHighWatermark, Offset: hw})
	}
}

// truncate cuts the divergent tail the leader reported: the leader's
// records of epochs up to epoch end at end. Records this log and the
// leader's share carry the same epoch, at most the follower's largest
// epoch not above the leader's, so they lie below where that epoch ends
// here and below end: cutting at the smaller never loses a shared
// record. If the two epochs differ, the next fetch carries the older
// epoch and the leader checks again (Kafka's truncation loop).
func (f *Follower) truncate(epoch Epoch, end int64) error {
	start, leo := f.log.StartOffset(), f.log.EndOffset()
	to := start // no epoch here at or below the leader's: nothing is shared
	if _, ownEnd, ok := f.log.Epochs().EndOffsetFor(epoch, leo); ok {
		to = min(end, ownEnd)
	}
	to = min(to, leo)
	return f.cut(to)
}

// outOfRange follows a leader whose log does not hold the fetch offset.
func (f *Follower) outOfRange(leaderStart, leaderEnd int64) error {
	leo := f.log.EndOffset()
	switch {
	case leo < leaderStart:
		// The records in between are gone from the leader
		// (retention): start over where it starts.
		if err := f.log.Reset(leaderStart); err != nil {
			return fmt.Errorf("replica: reset to %d: %w", leaderStart, err)
		}
		f.events = append(f.events, Event{Kind: EventReset, Offset: leaderStart})
		f.raise(leaderStart)
		return nil
	case leo > leaderEnd:
		// Only a log whose tail the leader could not check (an empty
		// history) gets here.
		return f.cut(leaderEnd)
	}
	return nil
}

// startAt resets the empty log of StartFromLatest at the leader's high
// watermark hw; it is partial if the leader's log starts below it.
func (f *Follower) startAt(hw, leaderStart int64) error {
	if err := f.log.Reset(hw); err != nil {
		return fmt.Errorf("replica: reset to the leader's high watermark %d: %w", hw, err)
	}
	f.latest = false
	if leaderStart < hw {
		f.partialFrom = hw
	}
	f.events = append(f.events, Event{Kind: EventReset, Offset: hw})
	f.raise(hw)
	return nil
}

// cut truncates the log to offset, or resets it there when offset is
// below its start.
func (f *Follower) cut(offset int64) error {
	if offset < f.log.StartOffset() {
		if err := f.log.Reset(offset); err != nil {
			return fmt.Errorf("replica: reset to %d: %w", offset, err)
		}
		f.events = append(f.events, Event{Kind: EventReset, Offset: offset})
	} else {
		if err := f.log.Truncate(offset); err != nil {
			return fmt.Errorf("replica: truncate to %d: %w", offset, err)
		}
		// A batch holding offset went whole.
		offset = f.log.EndOffset()
		f.events = append(f.events, Event{Kind: EventTruncated, Offset: offset})
	}
	// Committed records are on every possible leader, so a correct
	// cluster never cuts below the high watermark; an unclean one (a
	// lost disk) does, and the leader's log is the truth then.
	f.hw = min(f.hw, offset)
	return nil
}
