package replica

import (
	"fmt"
	"slices"
	"time"
)

// Consistency is what a write waits for before it is acknowledged:
// Dapr's consistency metadata, Kafka's acks.
type Consistency uint8

const (
	// Eventual acknowledges once the leader's log has the write (Dapr
	// "eventual", Kafka acks=1). Such a write is lost if the leader
	// dies before a follower that becomes leader fetched it.
	Eventual Consistency = iota
	// Strong acknowledges once the high watermark passes the write and
	// the in-sync set has at least MinISR members (Dapr "strong", Kafka
	// acks=all with min.insync.replicas).
	Strong
)

// Assignment is what the control plane says about a log when it makes a
// replica its leader.
type Assignment struct {
	// Self is the replica becoming leader.
	Self ReplicaID
	// Epoch is its leader epoch, newer than any before for this log.
	Epoch Epoch
	// Replicas are all of the log's replicas, Self included.
	Replicas []ReplicaID
	// ISR is the committed in-sync set, Self included: the control
	// plane chose Self from it.
	ISR []ReplicaID
	// ISRVersion is the version of ISR; proposals compare-and-set it.
	ISRVersion uint64
}

// followerState is the leader's view of one follower in this leadership.
type followerState struct {
	id ReplicaID
	// pos is the follower's log end as of its newest fetch that passed
	// the tail check; -1 until one did. Records below pos are the
	// leader's, on the follower. It only grows: a follower never
	// truncates below a checked offset within one epoch, so a late,
	// lower fetch says nothing new.
	pos int64
	// lastCaughtUp is the newest time the follower was known to hold
	// the whole log (zero: never in this leadership).
	lastCaughtUp time.Time
	// lastFetch and lastFetchEnd are when its previous fetch came and
	// where the log ended then: a fetch that reaches lastFetchEnd proves
	// the follower was caught up at lastFetch (Kafka's rule).
	lastFetch    time.Time
	lastFetchEnd int64
	fetched      bool
	// outSince is when the control plane last took it out of the
	// in-sync set: fetches received before then prove nothing more.
	outSince time.Time
	// inISR: in the committed in-sync set; inProposal: in the proposal
	// awaiting the control plane.
	inISR, inProposal bool
}

// pendingWrite is a strong write awaiting the high watermark.
type pendingWrite struct {
	base, end int64
	deadline  time.Time // zero: none
}

// Leader is the replication state machine of a log's leader at one
// epoch: it appends writes, answers followers' fetches, keeps the in-sync
// set and the high watermark, and acknowledges writes. It does no I/O and
// reads no clock; one goroutine owns it (and its Log) and calls it.
type Leader struct {
	cfg        Config
	log        Log
	self       ReplicaID
	epoch      Epoch
	epochStart int64 // the log end when this leadership began
	hw         int64
	fenced     bool
	followers  []followerState

	isr        []ReplicaID // committed, in Replicas order
	isrVersion uint64
	// proposal is the ISR sent to the control plane and not answered
	// yet (nil: none). It never changes while pending: the control
	// plane may still apply any copy of it, so the high watermark counts
	// its members until a newer ISR version arrives.
	proposal     []ReplicaID
	proposalSent time.Time

	writes []pendingWrite // FIFO by offset (and by deadline)
	head   int
	events []Event
	one    [1]Batch // Append's argument to Log.Append, without allocating
}

// NewLeader makes the replica a.Self the leader of log at a.Epoch. hw is
// the high watermark it knew (as a follower, or from a checkpoint): a
// committed offset, which the new leader never goes below. Followers
// in the ISR get MaxLag from now to fetch before they count as lagging.
func NewLeader(log Log, cfg Config, a Assignment, hw int64, now time.Time) (*Leader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if a.Epoch == 0 {
		return nil, fmt.Errorf("%w: leader epoch 0", ErrInvalid)
	}
	if last := log.Epochs().Last(); last > a.Epoch {
		return nil, fmt.Errorf("%w: log has epoch %d, leader epoch %d", ErrEpochRegress, last, a.Epoch)
	}
	if !slices.Contains(a.Replicas, a.Self) || !slices.Contains(a.ISR, a.Self) {
		return nil, fmt.Errorf("%w: leader %d must be among the replicas %v and the ISR %v", ErrInvalid, a.Self, a.Replicas, a.ISR)
	}
	l := &Leader{
		cfg:        cfg,
		log:        log,
		self:       a.Self,
		epoch:      a.Epoch,
		epochStart: log.EndOffset(),
		hw:         min(max(hw, log.StartOffset()), log.EndOffset()),
		isrVersion: a.ISRVersion,
	}
	for i, id := range a.Replicas {
		if slices.Contains(a.Replicas[:i], id) {
			return nil, fmt.Errorf("%w: replica %d twice in %v", ErrInvalid, id, a.Replicas)
		}
		if id == a.Self {
			continue
		}
		f := followerState{id: id, pos: -1, inISR: slices.Contains(a.ISR, id)}
		if f.inISR {
			f.lastCaughtUp = now
		}
		l.followers = append(l.followers, f)
	}
	for _, id := range a.ISR {
		if !slices.Contains(a.Replicas, id) {
			return nil, fmt.Errorf("%w: ISR member %d not among the replicas %v", ErrUnknownReplica, id, a.Replicas)
		}
	}
	l.isr = l.members(func(f *followerState) bool { return f.inISR })
	l.advance()
	return l, nil
}

// Epoch is the leader's epoch.
func (l *Leader) Epoch() Epoch { return l.epoch }

// HighWatermark is the offset below which records are committed: every
// member of the in-sync set has them. Readers see only records below it.
func (l *Leader) HighWatermark() int64 { return l.hw }

// EndOffset is the leader's log end.
func (l *Leader) EndOffset() int64 { return l.log.EndOffset() }

// ISR is the committed in-sync set and its version; the slice is the
// leader's, valid until the next call.
func (l *Leader) ISR() ([]ReplicaID, uint64) { return l.isr, l.isrVersion }

// Voters are the replicas the high watermark counts: the committed
// in-sync set and the pending proposal's members, the leader first. The
// control plane can elect a new leader only among them, so a read that
// every one of them confirmed (a fetch at this epoch sent after the read)
// was served by the one leader. The slice is fresh.
func (l *Leader) Voters() []ReplicaID {
	return l.members(func(f *followerState) bool { return f.inISR || f.inProposal })
}

// Fenced says whether the leader learned a newer epoch.
func (l *Leader) Fenced() bool { return l.fenced }

// Pending is how many strong writes await the high watermark.
func (l *Leader) Pending() int { return len(l.writes) - l.head }

// FollowerStatus is the leader's view of a follower, for metrics and the
// control plane's reassignment decisions.
type FollowerStatus struct {
	// Offset is the follower's checked log end (-1: unknown yet).
	Offset int64
	// LastCaughtUp is when it last held the whole log (zero: not in
	// this leadership).
	LastCaughtUp time.Time
	// InISR says whether it is in the committed in-sync set.
	InISR bool
}

// Follower reports the leader's view of follower id.
func (l *Leader) Follower(id ReplicaID) (FollowerStatus, bool) {
	f := l.follower(id)
	if f == nil {
		return FollowerStatus{}, false
	}
	return FollowerStatus{Offset: f.pos, LastCaughtUp: f.lastCaughtUp, InISR: f.inISR}, true
}

// Events appends the events queued since the last call to dst and
// clears the queue.
func (l *Leader) Events(dst []Event) []Event {
	dst = append(dst, l.events...)
	clear(l.events)
	l.events = l.events[:0]
	return dst
}

// Append writes b (Count and Data; the leader sets Base and Epoch) at
// the log end and returns its base offset. An Eventual write is
// acknowledged when Append returns nil. A Strong one is refused with
// ErrNotEnoughReplicas when the in-sync set is below MinISR; otherwise
// its outcome comes later as EventAcked or EventWriteFailed with this
// base offset.
func (l *Leader) Append(b Batch, c Consistency, now time.Time) (int64, error) {
	if err := l.Admit(c); err != nil {
		return 0, err
	}
	if b.Count < 1 {
		return 0, fmt.Errorf("%w: batch of %d records", ErrInvalid, b.Count)
	}
	b.Base, b.Epoch = l.log.EndOffset(), l.epoch
	l.one[0] = b
	err := l.log.Append(l.one[:])
	l.one[0] = Batch{}
	if err != nil {
		return 0, fmt.Errorf("replica: append at %d: %w", b.Base, err)
	}
	l.Appended(b.Base, b.End(), c, now)
	return b.Base, nil
}

// Admit says whether a write of consistency c may be appended now: not
// when the leader is fenced (ErrFenced), nor a Strong one while the
// in-sync set is below MinISR (ErrNotEnoughReplicas, Kafka's check
// before it appends an acks=all produce).
func (l *Leader) Admit(c Consistency) error {
	if l.fenced {
		return ErrFenced
	}
	if c == Strong && len(l.isr) < l.cfg.MinISR {
		return fmt.Errorf("%w: %d in sync, %d required", ErrNotEnoughReplicas, len(l.isr), l.cfg.MinISR)
	}
	return nil
}

// Appended tells the leader that records [base, end) were written at its
// log end, stamped with its epoch, by the store itself (Append's second
// half, for a store that assigns offsets and de-duplicates retries in
// its own log, as the broker's does): a Strong write's outcome comes
// later as EventAcked or EventWriteFailed with base. Admit first.
func (l *Leader) Appended(base, end int64, c Consistency, now time.Time) {
	if c == Strong {
		w := pendingWrite{base: base, end: end}
		if l.cfg.AckTimeout > 0 {
			w.deadline = now.Add(l.cfg.AckTimeout)
		}
		l.writes = append(l.writes, w)
	}
	l.advance()
}

// HandleFetch answers a follower's fetch into resp (whose Batches array
// it reuses). The answer is records from req.FetchOffset; or Diverging
// when the follower's tail is not in the leader's history; or a code.
// A fetch with a newer epoch than the leader's fences the leader. When
// the answer has no records the transport may hold the request and call
// again when the log end or the high watermark moves (long polling):
// handling a request twice is harmless when req.Received says when it
// came. The error is the log's, when a
// read fails; resp is then still an answer (no records) the follower
// can take.
func (l *Leader) HandleFetch(req *FetchRequest, now time.Time, resp *FetchResponse) error {
	resp.reset()
	resp.Corr, resp.FetchOffset, resp.Epoch = req.Corr, req.FetchOffset, l.epoch
	if req.Epoch > l.epoch {
		// Only the control plane hands out epochs: the follower has
		// heard of a newer leader, so this one is done.
		l.fence(req.Epoch)
	}
	if l.fenced {
		resp.Code = CodeFenced
		return nil
	}
	start, end := l.log.StartOffset(), l.log.EndOffset()
	resp.HighWatermark, resp.LogStart, resp.LogEnd = l.hw, start, end
	if req.Epoch < l.epoch {
		resp.Code = CodeStaleEpoch
		return nil
	}
	f := l.follower(req.Replica)
	if f == nil {
		resp.Code = CodeUnknownReplica
		return nil
	}
	if req.LastEpoch > 0 {
		e, epochEnd, ok := l.log.Epochs().EndOffsetFor(req.LastEpoch, end)
		if ok && (e < req.LastEpoch || epochEnd < req.FetchOffset) {
			// The follower has records of an epoch the leader lacks,
			// or more of its last epoch than the leader: everything
			// from where the leader's matching records end may
			// differ. Its position is not counted.
			resp.Diverging, resp.DivergingEpoch, resp.DivergingEnd = true, e, epochEnd
			return nil
		}
	}
	if req.FetchOffset < start || req.FetchOffset > end {
		resp.Code = CodeOutOfRange
		return nil
	}
	// The follower's log matches the leader's up to FetchOffset.
	if req.FetchOffset > f.pos {
		f.pos = req.FetchOffset
	}
	// at is when the fetch came: a held fetch answered again later
	// shows the follower as it was then.
	at := req.Received
	if at.IsZero() || at.After(now) {
		at = now
	}
	if at.After(f.outSince) && !req.Partial {
		// (One received before the control plane took the follower
		// out is no sign of life since; a partial one lacks records.)
		switch {
		case req.FetchOffset >= end:
			f.lastCaughtUp = later(f.lastCaughtUp, at)
		case f.fetched && req.FetchOffset >= f.lastFetchEnd:
			f.lastCaughtUp = later(f.lastCaughtUp, f.lastFetch)
		}
		f.lastFetch, f.lastFetchEnd, f.fetched = at, end, true
	}
	l.advance()
	l.propose(now)
	resp.HighWatermark = l.hw
	var err error
	resp.Batches, err = l.log.Read(req.FetchOffset, int(req.MaxBytes), resp.Batches)
	if err != nil {
		resp.Batches = resp.Batches[:0]
		return fmt.Errorf("replica: read at %d for replica %d: %w", req.FetchOffset, req.Replica, err)
	}
	return nil
}

// Tick moves time on: strong writes past their deadline fail, followers
// that lag longer than MaxLag are proposed out of the in-sync set, and an
// unanswered proposal is sent again.
func (l *Leader) Tick(now time.Time) {
	if l.fenced {
		return
	}
	for l.head < len(l.writes) {
		w := l.writes[l.head]
		if w.deadline.IsZero() || now.Before(w.deadline) {
			break
		}
		l.done(Event{Kind: EventWriteFailed, Offset: w.base, End: w.end, Err: ErrTimeout})
	}
	l.propose(now)
}

// CommitISR is the control plane's answer to a proposal, or its own
// change (a member it found dead): the committed in-sync set at version.
// An older or equal version is old news and ignored. Any newer version
// settles the pending proposal (applied, or rejected and superseded);
// the leader proposes again from the new set if it still differs from
// what it sees. A member that is not among the replicas is an error and
// changes nothing: a reassignment is a new Assignment (NewLeader). now
// is when the leader learned of it: a member taken out rejoins only by
// fetches received after now.
func (l *Leader) CommitISR(isr []ReplicaID, version uint64, now time.Time) error {
	if l.fenced || version <= l.isrVersion {
		return nil
	}
	for _, id := range isr {
		if id != l.self && l.follower(id) == nil {
			return fmt.Errorf("%w: ISR member %d of version %d", ErrUnknownReplica, id, version)
		}
	}
	for i := range l.followers {
		f := &l.followers[i]
		in := slices.Contains(isr, f.id)
		if !in && (f.inISR || f.inProposal) {
			// Taken out (the control plane found it dead, or refused
			// to take it in): it joins again only on fetches made
			// after this, as in Kafka, where a follower rejoins when a
			// fetch reaches the high watermark. What it showed before
			// would have the leader propose a dead member back at once,
			// and again after each refusal.
			f.lastCaughtUp, f.fetched, f.outSince = time.Time{}, false, now
		}
		f.inISR, f.inProposal = in, false
	}
	l.isr = l.members(func(f *followerState) bool { return f.inISR })
	l.isrVersion = version
	l.proposal = nil
	l.advance()
	return nil
}

// SetReplicas is a reassignment at the leader's epoch (a move adds a
// replica, then drops one): replicas are the log's replicas now, isr the
// control plane's committed in-sync set at version. A follower kept keeps
// what the leader knows of it; a new one starts out of sync, at an
// unknown position; a dropped one no longer counts. Pending writes stay
// pending. Like CommitISR it settles a pending proposal.
func (l *Leader) SetReplicas(replicas, isr []ReplicaID, version uint64, now time.Time) error {
	if l.fenced {
		return ErrFenced
	}
	if !slices.Contains(replicas, l.self) || !slices.Contains(isr, l.self) {
		return fmt.Errorf("%w: leader %d must be among the replicas %v and the ISR %v", ErrInvalid, l.self, replicas, isr)
	}
	for _, id := range isr {
		if !slices.Contains(replicas, id) {
			return fmt.Errorf("%w: ISR member %d not among the replicas %v", ErrUnknownReplica, id, replicas)
		}
	}
	followers := make([]followerState, 0, len(replicas)-1)
	for i, id := range replicas {
		if slices.Contains(replicas[:i], id) {
			return fmt.Errorf("%w: replica %d twice in %v", ErrInvalid, id, replicas)
		}
		if id == l.self {
			continue
		}
		f := followerState{id: id, pos: -1}
		if old := l.follower(id); old != nil {
			f = *old
		}
		f.inISR, f.inProposal = slices.Contains(isr, id), false
		if f.inISR && f.lastCaughtUp.IsZero() {
			f.lastCaughtUp = now
		}
		followers = append(followers, f)
	}
	l.followers = followers
	l.isr = l.members(func(f *followerState) bool { return f.inISR })
	l.isrVersion = max(l.isrVersion, version)
	l.proposal = nil
	l.advance()
	return nil
}

// ObserveEpoch tells the leader the control plane's current epoch for
// the log. A newer one than the leader's fences it: it fails every
// pending write with ErrFenced, queues EventFenced, and from then on
// refuses writes and fetches. It reports whether the leader is fenced.
func (l *Leader) ObserveEpoch(e Epoch) bool {
	if e > l.epoch {
		l.fence(e)
	}
	return l.fenced
}

// fence retires the leader.
func (l *Leader) fence(by Epoch) {
	if l.fenced {
		return
	}
	l.fenced = true
	l.proposal = nil
	l.events = append(l.events, Event{Kind: EventFenced, Epoch: by})
	for l.head < len(l.writes) {
		w := l.writes[l.head]
		l.done(Event{Kind: EventWriteFailed, Offset: w.base, End: w.end, Err: ErrFenced})
	}
}

// follower finds id among the followers (few: a linear scan).
func (l *Leader) follower(id ReplicaID) *followerState {
	for i := range l.followers {
		if l.followers[i].id == id {
			return &l.followers[i]
		}
	}
	return nil
}

// members lists the leader and the followers for which in holds.
func (l *Leader) members(in func(*followerState) bool) []ReplicaID {
	s := []ReplicaID{l.self}
	for i := range l.followers {
		if in(&l.followers[i]) {
			s = append(s, l.followers[i].id)
		}
	}
	return s
}

// advance moves the high watermark to the smallest log end over the
// committed ISR and the pending proposal's members — a superset of any
// ISR the control plane can hold, so every member it may elect has what
// the watermark covers — and settles the writes it passes.
func (l *Leader) advance() {
	if l.fenced {
		return
	}
	hw := l.log.EndOffset()
	for i := range l.followers {
		f := &l.followers[i]
		if f.inISR || f.inProposal {
			hw = min(hw, f.pos) // -1 until it fetched: no progress
		}
	}
	if hw <= l.hw {
		return
	}
	l.hw = hw
	l.events = append(l.events, Event{Kind: EventHighWatermark, Offset: hw})
	for l.head < len(l.writes) && l.writes[l.head].end <= hw {
		w := l.writes[l.head]
		if len(l.isr) >= l.cfg.MinISR {
			l.done(Event{Kind: EventAcked, Offset: w.base, End: w.end})
		} else {
			l.done(Event{Kind: EventWriteFailed, Offset: w.base, End: w.end, Err: ErrNotEnoughReplicas})
		}
	}
}

// done reports the oldest pending write's outcome and drops it.
func (l *Leader) done(e Event) {
	l.events = append(l.events, e)
	l.writes[l.head] = pendingWrite{}
	l.head++
	if l.head == len(l.writes) {
		l.writes, l.head = l.writes[:0], 0
	} else if l.head >= 64 && l.head*2 >= len(l.writes) {
		// Slide the live part down so the array does not grow
		// while writes keep coming.
		n := copy(l.writes, l.writes[l.head:])
		l.writes, l.head = l.writes[:n], 0
	}
}

// inSync is the ISR rule: the follower held the whole log within MaxLag.
func (l *Leader) inSync(f *followerState, now time.Time) bool {
	return !f.lastCaughtUp.IsZero() && now.Sub(f.lastCaughtUp) <= l.cfg.MaxLag
}

// canJoin says whether a follower outside the ISR may be proposed in: it
// is in sync, and it holds everything committed (so the high watermark
// stays true once it counts) and everything of earlier epochs (so it
// has what an old leader of this log might have acknowledged unfenced).
func (l *Leader) canJoin(f *followerState, now time.Time) bool {
	return l.inSync(f, now) && f.pos >= l.hw && f.pos >= l.epochStart
}

// propose sends the in-sync set the leader sees to the control plane
// when it differs from the committed one, or sends the pending proposal
// again when it went unanswered for ProposalRetry.
func (l *Leader) propose(now time.Time) {
	if l.fenced {
		return
	}
	if l.proposal != nil {
		if now.Sub(l.proposalSent) >= l.cfg.ProposalRetry {
			l.proposalSent = now
			l.emitProposal()
		}
		return
	}
	change := false
	for i := range l.followers {
		f := &l.followers[i]
		if f.inISR != l.keep(f, now) {
			change = true
			break
		}
	}
	if !change {
		return
	}
	for i := range l.followers {
		f := &l.followers[i]
		f.inProposal = l.keep(f, now)
	}
	l.proposal = l.members(func(f *followerState) bool { return f.inProposal })
	l.proposalSent = now
	l.emitProposal()
}

// keep says whether f belongs in the ISR the leader would propose now: a
// member stays until it lags past MaxLag, an outsider joins when it may.
func (l *Leader) keep(f *followerState, now time.Time) bool {
	if f.inISR {
		return l.inSync(f, now)
	}
	return l.canJoin(f, now)
}

func (l *Leader) emitProposal() {
	l.events = append(l.events, Event{Kind: EventISRProposal, Epoch: l.epoch, Version: l.isrVersion, ISR: slices.Clone(l.proposal)})
}

// later is the later of two times.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Refuse fills resp with code as the answer to req, for a replica that
// cannot serve it (CodeNotLeader: it leads nothing at that epoch).
func Refuse(req *FetchRequest, c Code, epoch Epoch, resp *FetchResponse) {
	resp.reset()
	resp.Corr, resp.FetchOffset, resp.Epoch, resp.Code = req.Corr, req.FetchOffset, epoch, c
}
