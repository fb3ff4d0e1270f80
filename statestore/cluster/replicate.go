package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	mathbits "math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"mecha/internal/backoff"
	"mecha/internal/clustermap"
	"mecha/internal/muxconn"
	"mecha/internal/replica"
	"mecha/statestore"
)

// ReplicationConfig turns replication on for a Server's stores: each
// slot's leader logs its records into the slot's replica.Leader, and the
// slot's other replicas follow it (replica.Follower) by fetching over
// the internal port.
type ReplicationConfig struct {
	// Clients reach the other members.
	Clients *Clients
	// Propose sends a leader's in-sync set to the control plane (an
	// ISRChange); called on its own goroutine.
	Propose func(ctx context.Context, c clustermap.ISRChange) error
	// Replica tunes the state machines; DefaultReplicaConfig when zero.
	Replica replica.Config
	// FetchWait is how long a leader holds a fetch with nothing new
	// (500 ms when zero).
	FetchWait time.Duration
	// TailBytes is how much of each slot's newest records a replica
	// keeps in memory for its followers (256 KiB when zero).
	TailBytes int
}

// DefaultReplicaConfig is Crux's replication tuning: a follower out of
// touch for 5 s leaves the in-sync set, a strong write needs 2 copies
// and gives up after 10 s.
func DefaultReplicaConfig() replica.Config {
	c := replica.DefaultConfig()
	c.MaxLag = 5 * time.Second
	c.MinISR = 2
	c.AckTimeout = 10 * time.Second
	c.FetchTimeout = 2 * time.Second
	c.ProposalRetry = time.Second
	return c
}

// ReplicaID is a member's replica id: a hash of its member id.
func ReplicaID(member string) replica.ReplicaID {
	h := fnv.New32a()
	h.Write([]byte(member))
	return replica.ReplicaID(h.Sum32())
}

// Replica roles of a slot.
const (
	roleNone = iota
	roleLeader
	roleFollower
)

// replSlot is one slot's replication on this member, guarded by the
// engine's slot lock.
type replSlot struct {
	role     int
	epoch    uint64
	leaderID string // the member followed
	leader   *replica.Leader
	follower *replica.Follower
	log      *slotLog
	isr      []string // the committed ISR the leader knows
	replicas []string // the replicas it leads (a move changes them)
	isrMap   uint64   // the map version it came from
	// refusedAt is when the control plane last refused an ISR proposal
	// of this leader: the next waits ProposalRetry.
	refusedAt time.Time
	// waiters are the strong writes awaiting their acknowledgement, by
	// base offset.
	waiters map[int64]waiter
	// carried are strong writes this member logged as leader and was
	// deposed before they committed: they succeed once this member, as
	// a follower, sees the new leader's high watermark pass them with
	// its log unchanged below their end, and fail if that log loses them.
	carried []carriedWrite
	events  []replica.Event
	// barrier is the read barrier the leader puts in its answers, one
	// higher for each strong read (GetConfirmed); echoed holds the
	// largest barrier each follower echoed at this epoch in a fetch that
	// passed the tail check.
	barrier    uint64
	echoed     map[replica.ReplicaID]uint64
	confirming int
	// held are the followers' standing fetches that had nothing to
	// answer yet: each is answered in its follower's next batch once
	// the slot has news (a write, a confirm, a change of role).
	held []heldFetch
}

// heldFetch is what a leader keeps of one follower session's fetches
// of a slot: its standing fetch, if one waits, and the high watermark
// its last answer carried (a follower hears of a newer one even when the
// slot has nothing else new).
type heldFetch struct {
	sess     *fetchSession
	req      replica.FetchRequest
	standing bool
	hwSent   int64 // -1: never answered
}

// fetchSession is a follower's fetch session on this leader, as Kafka's
// incremental fetch sessions (KIP-227): a batch carries only the slots
// whose last fetch was answered, the others stay standing here, and an
// answer carries only the slots with news. Followers holding hundreds of
// quiet slots thus cost nothing per round; each still sends a fresh
// fetch of every slot at least every FetchTimeout, which keeps it in
// the in-sync set.
type fetchSession struct {
	dirty  [statestore.NumSlots / 64]atomic.Uint64
	signal chan struct{} // one pending wake of the session's held batch
}

// mark says the slot has news for the session's standing fetch.
func (fs *fetchSession) mark(slot int) {
	fs.dirty[slot/64].Or(1 << (slot % 64))
	select {
	case fs.signal <- struct{}{}:
	default:
	}
}

// take appends the slots marked since the last take to dst.
func (fs *fetchSession) take(dst []int) []int {
	for w := range fs.dirty {
		for bits := fs.dirty[w].Swap(0); bits != 0; bits &= bits - 1 {
			dst = append(dst, w*64+mathbits.TrailingZeros64(bits))
		}
	}
	return dst
}

// nudgeHeld marks the slot for every standing fetch of it: something
// changed that they should hear of.
func (s *replSlot) nudgeHeld(slot int) {
	for _, h := range s.held {
		if h.standing {
			h.sess.mark(slot)
		}
	}
}

// heldOf is sess's entry for the slot, made on first use.
func (s *replSlot) heldOf(sess *fetchSession) *heldFetch {
	for i := range s.held {
		if s.held[i].sess == sess {
			return &s.held[i]
		}
	}
	s.held = append(s.held, heldFetch{sess: sess, hwSent: -1})
	return &s.held[len(s.held)-1]
}

// waiter is a strong write awaiting its acknowledgement: its answer and
// its log end.
type waiter struct {
	ch  chan error
	end int64
}

// carriedWrite is a strong write awaiting the new leader's commit.
type carriedWrite struct {
	ch       chan error
	end      int64
	deadline time.Time
}

// Replication replicates one store's slots on this member.
type Replication struct {
	store  string
	member string
	self   replica.ReplicaID
	e      *statestore.Engine
	maps   MapSource
	cfg    ReplicationConfig
	log    *slog.Logger

	slots [statestore.NumSlots]replSlot
	// proposing marks the slots with an ISR proposal on its way to the
	// control plane: the leader sends an unanswered proposal again every
	// ProposalRetry, and one that is still waiting for the control plane
	// is not sent a second time beside it.
	proposing [statestore.NumSlots]atomic.Bool

	// notify wakes the strong reads awaiting their confirmation (closed
	// and replaced when a fetch of a slot they wait on was answered).
	notifyMu sync.Mutex
	notify   chan struct{}

	mu       sync.Mutex
	fetches  map[string]bool // leaders a fetch loop runs for
	wanted   map[string]bool // leaders a reconcile found followed while their loop ran
	sessions map[string]*fetchSession

	// roles counts the reconciles: a fetch loop looks at every slot
	// again when it moved.
	roles atomic.Uint64

	// isrVersion numbers the in-sync sets given to this member's
	// leaders: each one newer than the last.
	isrVersion atomic.Uint64

	// onStoreFailure is the Server's OnStoreFailure for this store.
	onStoreFailure func(error)

	// Counters for metrics.
	Copies    atomic.Uint64 // slot copies installed here
	Fetched   atomic.Uint64 // records appended from leaders
	Proposals atomic.Uint64 // ISR proposals sent

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newReplication(store, member string, e *statestore.Engine, maps MapSource, cfg ReplicationConfig, log *slog.Logger) *Replication {
	if cfg.Replica == (replica.Config{}) {
		cfg.Replica = DefaultReplicaConfig()
	}
	if cfg.FetchWait <= 0 {
		cfg.FetchWait = 500 * time.Millisecond
	}
	if cfg.TailBytes <= 0 {
		cfg.TailBytes = 256 << 10
	}
	r := &Replication{store: store, member: member, self: ReplicaID(member), e: e, maps: maps, cfg: cfg, log: log.With("store", store),
		notify: make(chan struct{}), fetches: map[string]bool{}, wanted: map[string]bool{}, sessions: map[string]*fetchSession{}}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	for i := range r.slots {
		e.WithSlot(i, func(t statestore.SlotTx) { r.slots[i].log = newSlotLog(t.Seq(), cfg.TailBytes) })
	}
	return r
}

// start follows the map and ticks the leaders.
func (r *Replication) start() {
	r.e.SetReplicator(r)
	r.wg.Add(2)
	go func() { defer r.wg.Done(); r.followMap() }()
	go func() { defer r.wg.Done(); r.tickLoop() }()
}

// stop ends the replication; pending strong writes fail.
func (r *Replication) stop() {
	// Cancelled under mu: a goroutine started after (a proposal from a
	// fetch still being answered) sees it and does not start.
	r.mu.Lock()
	r.cancel()
	r.mu.Unlock()
	r.wg.Wait()
	r.e.SetReplicator(nil)
	for i := range r.slots {
		r.e.WithSlot(i, func(statestore.SlotTx) { r.becomeNone(i, &r.slots[i]) })
	}
}

// errNotLeading refuses a write on a member that does not lead the slot
// (yet, or any more).
func notLeading(slot int, why string) error {
	return &UnavailableError{Slot: slot, Reason: why}
}

// Admit implements statestore.Replicator.
func (r *Replication) Admit(t statestore.SlotTx, strong bool) error {
	slot := t.Slot()
	s := &r.slots[slot]
	if s.role != roleLeader || s.leader.Fenced() {
		// The map may say more than the last reconcile did: a member
		// made leader serves as soon as its map says so.
		m := r.maps.Map()
		if g := m.Slot(slot); g != nil && g.Leader == r.member && g.Epoch >= s.epoch {
			r.lead(slot, t, s, g, m.Version, time.Now())
		}
	}
	// Refused before anything is logged, as "moved": the router waits
	// for the newer map and sends the write to the slot's leader.
	switch {
	case s.role != roleLeader:
		g := r.maps.Map().Slot(slot)
		if g == nil || g.Leader == r.member {
			return &Error{Code: CodeRetry, Msg: fmt.Sprintf("crux cluster: slot %d: member %q does not lead the slot's replicas yet", slot, r.member)}
		}
		return &Error{Code: CodeMoved, Slot: slot, Epoch: g.Epoch, Leader: g.Leader}
	case s.leader.Fenced():
		return &Error{Code: CodeMoved, Slot: slot, Epoch: s.epoch + 1}
	}
	if isr, _ := s.leader.ISR(); strong && len(isr) < r.cfg.Replica.MinISR {
		return notLeading(slot, fmt.Sprintf("strong write refused: %d in sync, %d required", len(isr), r.cfg.Replica.MinISR))
	}
	return nil
}

// Logged implements statestore.Replicator.
func (r *Replication) Logged(slot int, first uint64, n int, rec []byte, strong bool) func() error {
	s := &r.slots[slot]
	c := replica.Eventual
	if strong {
		c = replica.Strong
	}
	if want := int64(first) - 1; want != s.log.end {
		// Cannot happen while Admit and Logged share the slot lock. The
		// engine is the leader's truth: its log restarts after this
		// record, and followers behind it install copies.
		r.log.Error("crux replication: a slot's log fell out of step with its records; followers will copy the slot", "slot", slot, "seq", first, "log_end", s.log.end)
		end := first + uint64(n) - 1
		s.log.restart(end, replica.EpochHistory{{Epoch: replica.Epoch(s.epoch), Start: int64(end)}})
		if strong {
			err := &UnavailableError{Slot: slot, Reason: "strong write: the slot's replication restarted"}
			return func() error { return err }
		}
		return nil
	}
	base, err := s.leader.Append(replica.Batch{Count: int32(n), Data: rec}, c, time.Now())
	if err != nil {
		s.log.needCopy = true
		if errors.Is(err, replica.ErrNotEnoughReplicas) {
			err = &UnavailableError{Slot: slot, Reason: "strong write: " + err.Error()}
		}
		return func() error { return err }
	}
	var ch chan error
	if strong {
		ch = make(chan error, 1)
		if s.waiters == nil {
			s.waiters = map[int64]waiter{}
		}
		s.waiters[base] = waiter{ch: ch, end: base + int64(n)}
	}
	r.drain(slot, s)
	s.nudgeHeld(slot)
	if ch == nil {
		return nil
	}
	return func() error { return <-ch }
}

func (r *Replication) wake() {
	r.notifyMu.Lock()
	close(r.notify)
	r.notify = make(chan struct{})
	r.notifyMu.Unlock()
}

// drain acts on the events of the slot's machine: acknowledgements and
// ISR proposals.
func (r *Replication) drain(slot int, s *replSlot) {
	switch {
	case s.leader != nil:
		s.events = s.leader.Events(s.events[:0])
	case s.follower != nil:
		s.events = s.follower.Events(s.events[:0])
	default:
		return
	}
	for _, ev := range s.events {
		switch ev.Kind {
		case replica.EventAcked, replica.EventWriteFailed:
			if w, ok := s.waiters[ev.Offset]; ok {
				ch := w.ch
				delete(s.waiters, ev.Offset)
				err := ev.Err
				if errors.Is(err, replica.ErrFenced) {
					// Deposed: the new leader may hold and commit it.
					s.carried = append(s.carried, carriedWrite{ch: ch, end: ev.End, deadline: time.Now().Add(r.cfg.Replica.AckTimeout)})
					continue
				}
				if err != nil {
					err = &UnavailableError{Slot: slot, Reason: "strong write not acknowledged by the in-sync replicas", Err: err}
				}
				ch <- err
			}
		case replica.EventISRProposal:
			r.propose(slot, ev)
		case replica.EventHighWatermark:
			// As a follower, or as the leader at a newer epoch.
			s.settleCarried(slot, func(c carriedWrite) (bool, error) { return c.end <= ev.Offset, nil })
		case replica.EventTruncated:
			// Certainly lost: the new leader's log parts from this one
			// below the write's end, and no leader will hold it.
			s.settleCarried(slot, func(c carriedWrite) (bool, error) {
				return c.end > ev.Offset, errCarriedLost
			})
		case replica.EventReset:
			s.settleCarried(slot, func(c carriedWrite) (bool, error) {
				return c.end > ev.Offset, errCarriedUnknown
			})
		}
	}
	clear(s.events)
	if s.log.needCopy {
		s.settleCarried(slot, func(carriedWrite) (bool, error) { return true, errCarriedUnknown })
	}
}

// errCarriedLost fails a strong write a deposed leader logged that its
// successor does not hold: nothing of it was written, and the router
// sends it again (CodeRetry). errCarriedUnknown fails one whose fate
// this member cannot tell (it starts over from a copy of the slot).
var (
	errCarriedLost    = errors.New("strong write lost with its leader's leadership")
	errCarriedUnknown = errors.New("strong write not known to have survived its leader's leadership")
)

// settleCarried answers the carried writes done says are settled, with
// its error (wrapped as unavailable) or success.
func (s *replSlot) settleCarried(slot int, done func(carriedWrite) (bool, error)) {
	keep := s.carried[:0]
	for _, c := range s.carried {
		ok, err := done(c)
		if !ok {
			keep = append(keep, c)
			continue
		}
		switch {
		case errors.Is(err, errCarriedLost):
			err = &Error{Code: CodeRetry, Msg: fmt.Sprintf("crux cluster: slot %d: %v", slot, err)}
		case err != nil:
			err = &UnavailableError{Slot: slot, Reason: "strong write not acknowledged", Err: err}
		}
		c.ch <- err
	}
	clear(s.carried[len(keep):])
	s.carried = keep
}

// propose sends an ISR proposal to the control plane.
func (r *Replication) propose(slot int, ev replica.Event) {
	g := r.maps.Map().Slot(slot)
	if g == nil {
		return
	}
	var isr []string
	for _, id := range g.Replicas {
		if slices.Contains(ev.ISR, ReplicaID(id)) {
			isr = append(isr, id)
		}
	}
	s := &r.slots[slot] // drain calls this under the slot's lock
	if time.Since(s.refusedAt) < r.cfg.Replica.ProposalRetry {
		// Refused a moment ago (a member the map holds dead, say): the
		// leader sends its proposal again after ProposalRetry.
		return
	}
	c := clustermap.ISRChange{Ref: clustermap.SlotRef(slot), ISR: isr, Epoch: uint64(ev.Epoch), From: slices.Clone(s.isr)}
	if !r.proposing[slot].CompareAndSwap(false, true) {
		return
	}
	if !r.goAdd() {
		r.proposing[slot].Store(false)
		return
	}
	r.Proposals.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.proposing[slot].Store(false)
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		defer cancel()
		err := r.cfg.Propose(ctx, c)
		if err == nil || r.ctx.Err() != nil {
			return
		}
		r.log.Debug("crux replication: ISR proposal not applied", "slot", slot, "isr", isr, "err", err)
		if !clustermap.IsRefusal(err) {
			// It may still apply: the leader keeps counting its members
			// and sends it again after ProposalRetry.
			return
		}
		// Refused for good: settle it with the map's set, so that the
		// leader does not count a refused proposal's members for ever.
		r.e.WithSlot(slot, func(statestore.SlotTx) {
			s := &r.slots[slot]
			s.refusedAt = time.Now()
			g := r.maps.Map().Slot(slot)
			if s.role == roleLeader && uint64(ev.Epoch) == s.epoch && g != nil && g.Epoch == s.epoch {
				s.isr = slices.Clone(g.ISR)
				_ = s.leader.CommitISR(ids(g.ISR), r.isrVersion.Add(1), time.Now())
				r.drain(slot, s)
			}
		})
	}()
}

// failWaiters fails every pending strong write of the slot.
func failWaiters(slot int, s *replSlot, why string) {
	for off, w := range s.waiters {
		w.ch <- &UnavailableError{Slot: slot, Reason: why}
		delete(s.waiters, off)
	}
	s.settleCarried(slot, func(carriedWrite) (bool, error) { return true, errors.New(why) })
}

func (r *Replication) becomeNone(slot int, s *replSlot) {
	failWaiters(-1, s, "this member no longer leads the slot")
	s.nudgeHeld(slot)
	s.role, s.leader, s.follower, s.leaderID = roleNone, nil, nil, ""
}

// followMap reconciles every slot's role with each new map.
func (r *Replication) followMap() {
	var seen uint64
	for r.ctx.Err() == nil {
		m := r.maps.Map()
		if m.Version != seen || seen == 0 {
			seen = m.Version
			r.reconcile(m)
		}
		_ = r.maps.WaitNewer(r.ctx, seen)
	}
}

// ids maps member ids to replica ids.
func ids(members []string) []replica.ReplicaID {
	out := make([]replica.ReplicaID, len(members))
	for i, m := range members {
		out[i] = ReplicaID(m)
	}
	return out
}

// reconcile gives each slot the role the map says.
func (r *Replication) reconcile(m *clustermap.Map) {
	now := time.Now()
	leaders := map[string]bool{}
	for i := range r.slots {
		g := m.Slot(i)
		if g == nil {
			continue
		}
		r.e.WithSlot(i, func(t statestore.SlotTx) {
			s := &r.slots[i]
			switch {
			case g.Leader == r.member:
				r.lead(i, t, s, g, m.Version, now)
			case g.HasReplica(r.member) && g.Leader != "":
				r.follow(i, t, s, g)
				leaders[g.Leader] = true
			default:
				if s.role == roleLeader && g.Epoch > s.epoch {
					s.leader.ObserveEpoch(replica.Epoch(g.Epoch))
					r.drain(i, s)
				}
				held := s.role != roleNone
				if held {
					r.becomeNone(i, s)
				}
				if held && !g.HasReplica(r.member) && len(g.Replicas) > 0 {
					// The slot moved away: its keys here are nobody's
					// copy any more. Should it come back, it comes as a
					// copy of its leader's.
					if err := t.Install(0, nil); err != nil {
						r.log.Warn("crux replication: dropping a slot that moved away", "slot", i, "err", err)
					}
					s.log.restart(0, nil)
				}
			}
		})
	}
	r.roles.Add(1)
	r.mu.Lock()
	for l := range leaders {
		if r.fetches[l] {
			r.wanted[l] = true // a loop about to end for want of slots goes on
			continue
		}
		if r.ctx.Err() != nil {
			break
		}
		r.fetches[l] = true
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.fetchLoop(l) }()
	}
	r.mu.Unlock()
}

// lead makes (or keeps) this member the slot's leader at g's epoch.
func (r *Replication) lead(slot int, t statestore.SlotTx, s *replSlot, g *clustermap.Group, version uint64, now time.Time) {
	if s.role == roleLeader && s.epoch == g.Epoch && sameMembers(s.replicas, g.Replicas) {
		if s.isrMap != version {
			s.isrMap = version
			// A new in-sync set settles a pending proposal: applied,
			// or never to apply (proposals compare and set the set they
			// change). A map that changed elsewhere settles nothing: a
			// proposal still on its way may yet apply, so the leader
			// keeps counting its members.
			if !slices.Equal(s.isr, g.ISR) {
				s.isr = slices.Clone(g.ISR)
				if err := s.leader.CommitISR(ids(g.ISR), r.isrVersion.Add(1), time.Now()); err != nil {
					r.log.Warn("crux replication: the map's in-sync set", "slot", slot, "err", err)
				}
				r.drain(slot, s)
			}
		}
		return
	}
	var hw int64
	switch s.role {
	case roleLeader:
		hw = s.leader.HighWatermark()
	case roleFollower:
		hw = s.follower.HighWatermark()
	}
	if s.role == roleLeader && s.epoch == g.Epoch {
		// A move added or dropped a replica: the same leadership, with
		// the new followers; pending strong writes stay pending.
		if err := s.leader.SetReplicas(ids(g.Replicas), ids(g.ISR), r.isrVersion.Add(1), now); err == nil {
			s.replicas, s.isr, s.isrMap = slices.Clone(g.Replicas), slices.Clone(g.ISR), version
			r.drain(slot, s)
			s.nudgeHeld(slot) // a dropped replica's standing fetch is refused
			return
		} else { //nolint:revive // the error is logged, then the leader is rebuilt
			r.log.Warn("crux replication: the slot's new replicas", "slot", slot, "err", err)
			failWaiters(slot, s, "the slot's replicas changed")
		}
	}
	restarted := int64(t.Seq()) != s.log.end || s.log.needCopy || s.log.history.Last() > replica.Epoch(g.Epoch)
	if restarted {
		// The engine is the truth of a leader: its log restarts there,
		// and followers whose tails differ install copies.
		s.log.restart(t.Seq(), nil)
	}
	s.log.keepFrom = hw
	if s.role == roleLeader && !restarted {
		// Leading again at a newer epoch over the same log: its pending
		// strong writes stay in it, and succeed once this leadership's
		// high watermark passes them.
		for base, w := range s.waiters {
			s.carried = append(s.carried, carriedWrite{ch: w.ch, end: w.end, deadline: now.Add(r.cfg.Replica.AckTimeout)})
			delete(s.waiters, base)
		}
	}
	failWaiters(slot, s, "the slot's leadership changed")
	a := replica.Assignment{Self: r.self, Epoch: replica.Epoch(g.Epoch), Replicas: ids(g.Replicas), ISR: ids(g.ISR), ISRVersion: r.isrVersion.Add(1)}
	l, err := replica.NewLeader(s.log, r.cfg.Replica, a, hw, now)
	if err != nil {
		r.log.Error("crux replication: cannot lead the slot", "slot", slot, "epoch", g.Epoch, "err", err)
		r.becomeNone(slot, s)
		return
	}
	if s.epoch != g.Epoch {
		s.echoed = nil // a reconfiguration at one epoch (a move) keeps them
	}
	s.role, s.epoch, s.leader, s.follower, s.leaderID = roleLeader, g.Epoch, l, nil, r.member
	s.isr, s.isrMap, s.replicas = slices.Clone(g.ISR), version, slices.Clone(g.Replicas)
	r.drain(slot, s)
	s.nudgeHeld(slot) // standing fetches of the last epoch are answered
}

// follow makes (or keeps) this member a follower of g's leader.
func (r *Replication) follow(slot int, t statestore.SlotTx, s *replSlot, g *clustermap.Group) {
	if s.role == roleFollower && s.epoch >= g.Epoch {
		return
	}
	var hw int64
	if s.role == roleLeader {
		// Fenced: its pending strong writes are carried (drain) until
		// the new leader's high watermark shows whether they survived.
		s.leader.ObserveEpoch(replica.Epoch(g.Epoch))
		r.drain(slot, s)
		hw = s.leader.HighWatermark()
	}
	if s.role == roleFollower {
		hw = s.follower.HighWatermark()
	}
	if s.role == roleNone && s.follower == nil && s.leader == nil {
		// A replica this process has not followed yet: nothing proves
		// the engine's records are the leader's.
		s.log.needCopy = true
	}
	f, err := replica.NewFollower(s.log, r.cfg.Replica, r.self, hw)
	if err != nil {
		r.log.Error("crux replication: cannot follow the slot", "slot", slot, "err", err)
		r.becomeNone(slot, s)
		return
	}
	f.SetLeader(ReplicaID(g.Leader), replica.Epoch(g.Epoch))
	s.role, s.epoch, s.leader, s.follower, s.leaderID = roleFollower, g.Epoch, nil, f, g.Leader
	s.log.keepFrom = 0
	s.nudgeHeld(slot) // this member leads the slot no more
}

// tickLoop moves the leaders' time on: ISR shrinks and strong write
// timeouts.
func (r *Replication) tickLoop() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for i := range r.slots {
			r.e.WithSlot(i, func(statestore.SlotTx) {
				s := &r.slots[i]
				if s.role == roleLeader {
					s.leader.Tick(now)
					s.log.keepFrom = s.leader.HighWatermark()
					r.drain(i, s)
				}
				if len(s.carried) > 0 {
					s.settleCarried(i, func(c carriedWrite) (bool, error) {
						return !now.Before(c.deadline), replica.ErrTimeout
					})
				}
			})
		}
	}
}

// scanEvery is how often a fetch loop looks at every slot it follows
// (for fetches due again after FetchTimeout, slots to copy, and whether
// it follows any); between scans it sends only the fetches of slots its
// last answer carried.
const scanEvery = 500 * time.Millisecond

// fetchLoop fetches, for every slot this member follows from leader,
// until it follows none from it. It keeps one batch at a time at the
// leader: the batch carries the fetches due (the slots answered last
// time, and on a scan every slot whose fetch is not standing), and the
// leader answers it with every slot of this member's session that has
// news, held up to FetchWait while none has.
func (r *Replication) fetchLoop(leader string) {
	defer func() {
		if r.ctx.Err() != nil {
			r.mu.Lock()
			delete(r.fetches, leader)
			r.mu.Unlock()
		}
	}()
	var (
		bo       backoff.Backoff
		reqs     []SlotFetch
		copies   []int
		buf      []byte
		idle     int
		next     []int // the slots the last answer carried
		visit    []int
		scanned  time.Time
		roles    uint64
		follows  bool
		all      = make([]int, statestore.NumSlots)
		epochs   = map[int]uint64{}
		waitFor  = uint32(r.cfg.FetchWait / time.Millisecond)
		answered []int
	)
	for i := range all {
		all[i] = i
	}
	for r.ctx.Err() == nil {
		now := time.Now()
		reqs, copies, buf = reqs[:0], copies[:0], buf[:0]
		clear(epochs)
		visit = next
		scan := now.Sub(scanned) >= scanEvery || r.roles.Load() != roles
		if scan {
			visit, scanned, roles, follows = all, now, r.roles.Load(), false
		}
		for _, i := range visit {
			r.e.WithSlot(i, func(statestore.SlotTx) {
				s := &r.slots[i]
				if s.role != roleFollower || s.leaderID != leader {
					return
				}
				follows = true
				if s.log.needCopy {
					copies = append(copies, i)
					epochs[i] = s.epoch
					return
				}
				if req, ok := s.follower.Fetch(now); ok {
					start := len(buf)
					buf = replica.AppendFetchRequest(buf, &req)
					reqs = append(reqs, SlotFetch{Slot: i, Frame: buf[start:len(buf):len(buf)]})
				}
			})
		}
		next = next[:0]
		if !follows {
			if idle++; idle > 3 {
				// Ends unless a reconcile wanted this leader since the
				// loop last looked: decided under mu, where reconcile
				// decides to start a loop.
				r.mu.Lock()
				if !r.wanted[leader] {
					delete(r.fetches, leader)
					r.mu.Unlock()
					return
				}
				delete(r.wanted, leader)
				r.mu.Unlock()
				idle = 0
			}
			scanned = time.Time{}
			r.sleep(100 * time.Millisecond)
			continue
		}
		idle = 0
		failed := false
		for _, slot := range copies {
			if err := r.copySlot(leader, slot, epochs[slot]); err != nil {
				if r.ctx.Err() == nil {
					r.log.Debug("crux replication: slot copy failed", "slot", slot, "leader", leader, "err", err)
				}
				failed = true
				break
			}
			next = append(next, slot) // its first fetch goes in the next batch
		}
		if !failed {
			var err error
			// Sent even with no fetch due: it carries the answers of the
			// standing ones.
			sent := time.Now()
			if answered, err = r.fetch(leader, reqs, waitFor, answered[:0]); err != nil {
				if r.ctx.Err() == nil {
					r.log.Debug("crux replication: fetch failed", "leader", leader, "err", err)
				}
				failed = true
			}
			next = append(next, answered...)
			if len(reqs) == 0 && len(answered) == 0 && time.Since(sent) < r.cfg.FetchWait/2 {
				// Not held: the leader keeps no session for this
				// member (it does not know it yet).
				r.sleep(20 * time.Millisecond)
			}
		}
		if failed {
			r.sleep(bo.Next())
			scanned = time.Time{}
		} else {
			bo.Reset()
		}
	}
}

func (r *Replication) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
	case <-t.C:
	}
}

// call sends a replication request to member.
func (r *Replication) call(member string, method uint16, body []byte, timeout time.Duration) ([]byte, error) {
	cl, err := r.cfg.Clients.client(r.maps.Map(), member)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	return cl.Call(ctx, method, body)
}

// fetch sends one batch of fetches and applies the answers; it appends
// the slots answered to answered.
func (r *Replication) fetch(leader string, reqs []SlotFetch, waitMs uint32, answered []int) ([]int, error) {
	body := AppendFetchBatch(nil, &FetchBatch{Store: r.store, Member: r.member, WaitMs: waitMs, Slots: reqs})
	out, err := r.call(leader, MethodReplicaFetch, body, time.Duration(waitMs)*time.Millisecond+5*time.Second)
	if err != nil {
		return answered, err
	}
	resps, err := DecodeSlotFetches(out)
	if err != nil {
		return answered, err
	}
	now := time.Now()
	var resp replica.FetchResponse
	defer func() {
		// The records applied are written before the next fetch reports
		// them to the leader: one write for the whole answer. Written
		// whenever an answer was applied, even if no log moved: a record
		// the engine buffered before its slot's log refused the batch
		// would otherwise hold up every writer waiting on the log.
		if len(resps) == 0 {
			return
		}
		err := r.e.FlushLog()
		if err == nil {
			return
		}
		// Not durable: these replicas must not report them. They start
		// over from copies, which fail while the store cannot write, so
		// the leader drops them from the in-sync set.
		for _, sf := range resps {
			r.e.WithSlot(sf.Slot, func(statestore.SlotTx) { r.slots[sf.Slot].log.needCopy = true })
		}
		if r.onStoreFailure != nil && DiskFailure(err) {
			r.onStoreFailure(err)
		}
	}()
	for _, sf := range resps {
		if err := replica.DecodeFetchResponse(sf.Frame, &resp); err != nil {
			return answered, fmt.Errorf("slot %d: %w", sf.Slot, err)
		}
		answered = append(answered, sf.Slot)
		r.e.WithSlot(sf.Slot, func(t statestore.SlotTx) {
			s := &r.slots[sf.Slot]
			if s.role != roleFollower || s.leaderID != leader {
				return
			}
			end := s.log.end
			s.log.tx = &t
			err := s.follower.HandleResponse(&resp, now)
			s.log.tx = nil
			if n := s.log.end - end; n > 0 {
				r.Fetched.Add(uint64(n))
			}
			// A follower keeps a tail too, for when it leads.
			s.log.keepFrom = s.follower.HighWatermark()
			if err != nil && DiskFailure(err) && r.onStoreFailure != nil {
				r.onStoreFailure(err)
			}
			if err != nil && !s.log.needCopy && r.ctx.Err() == nil {
				r.log.Debug("crux replication: fetch answer", "slot", sf.Slot, "leader", leader, "err", err)
			}
			r.drain(sf.Slot, s)
		})
	}
	return answered, nil
}

// copySlot installs a copy of the leader's slot.
func (r *Replication) copySlot(leader string, slot int, epoch uint64) error {
	out, err := r.call(leader, MethodSlotCopy, AppendCopyRequest(nil, &CopyRequest{Store: r.store, Slot: slot, Epoch: epoch}), 30*time.Second)
	if err != nil {
		return err
	}
	if len(out) == 0 || out[0] != 0 {
		if len(out) == 0 {
			return fmt.Errorf("%w: empty copy answer", ErrMalformed)
		}
		return errors.New(string(out[1:]))
	}
	c, err := DecodeSlotCopy(out[1:])
	if err != nil {
		return err
	}
	var ierr error
	r.e.WithSlot(slot, func(t statestore.SlotTx) {
		s := &r.slots[slot]
		if s.role != roleFollower || s.leaderID != leader || s.epoch != epoch {
			return // the map moved on while the copy came
		}
		if ierr = t.Install(c.Seq, c.Items); ierr != nil {
			return
		}
		s.settleCarried(slot, func(carriedWrite) (bool, error) { return true, errCarriedUnknown })
		s.log.restart(c.Seq, c.History)
		f, err := replica.NewFollower(s.log, r.cfg.Replica, r.self, min(c.HW, int64(c.Seq)))
		if err != nil {
			ierr = err
			return
		}
		f.SetLeader(ReplicaID(leader), replica.Epoch(epoch))
		s.follower = f
		r.Copies.Add(1)
	})
	return ierr
}

// session is member's fetch session, when member is one of the map's.
func (r *Replication) session(member string) *fetchSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fs := r.sessions[member]; fs != nil {
		return fs
	}
	if r.maps.Map().Member(member) == nil {
		return nil // no standing fetches for strangers
	}
	fs := &fetchSession{signal: make(chan struct{}, 1)}
	r.sessions[member] = fs
	return fs
}

// handleFetch answers a follower's fetch batch: its fetches with news at
// once, the others left standing, and any of the follower's standing
// fetches with news; it holds the batch up to its wait while there is
// none.
func (r *Replication) handleFetch(ctx context.Context, b *FetchBatch) []byte {
	sess := r.session(b.Member)
	received := time.Now()
	var (
		frames []SlotFetch
		fb     []byte
		resp   replica.FetchResponse
	)
	for _, sf := range b.Slots {
		req, err := replica.DecodeFetchRequest(sf.Frame)
		if err != nil {
			req = replica.FetchRequest{Replica: ReplicaID(b.Member)}
		}
		req.Received = received
		frames, fb = r.answerFetch(sess, sf.Slot, &req, false, &resp, frames, fb)
	}
	if sess == nil {
		return appendSlotFetches(nil, frames)
	}
	deadline := time.Now().Add(min(time.Duration(b.WaitMs)*time.Millisecond, maxWaitMs*time.Millisecond))
	var news []int
	for {
		news = sess.take(news[:0])
		for _, slot := range news {
			frames, fb = r.answerFetch(sess, slot, nil, true, &resp, frames, fb)
		}
		left := time.Until(deadline)
		if len(frames) > 0 || left <= 0 {
			return appendSlotFetches(nil, frames)
		}
		t := time.NewTimer(left)
		select {
		case <-sess.signal:
		case <-t.C:
		case <-ctx.Done():
		case <-r.ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil || r.ctx.Err() != nil {
			return appendSlotFetches(nil, frames)
		}
	}
}

// answerFetch runs a fetch of the slot through its leader: req, or with
// standing set sess's standing fetch (if any). An answer with news
// (records, a code, a divergence, or a strong read awaiting the
// follower's next fetch) is appended to frames; a fetch with none is
// left standing.
func (r *Replication) answerFetch(sess *fetchSession, slot int, req *replica.FetchRequest, standing bool, resp *replica.FetchResponse, frames []SlotFetch, fb []byte) ([]SlotFetch, []byte) {
	r.e.WithSlot(slot, func(statestore.SlotTx) {
		s := &r.slots[slot]
		var h *heldFetch
		if sess != nil {
			h = s.heldOf(sess)
		}
		if standing {
			if !h.standing {
				return
			}
			held := h.req
			req = &held
		}
		if s.role != roleLeader {
			replica.Refuse(req, replica.CodeNotLeader, replica.Epoch(s.epoch), resp)
		} else if err := s.leader.HandleFetch(req, time.Now(), resp); err != nil {
			r.log.Warn("crux replication: answering a fetch", "slot", slot, "err", err)
		} else if resp.Code == replica.CodeOK && !resp.Diverging {
			r.echo(s, req)
		}
		resp.Barrier = s.barrier
		news := resp.Code != replica.CodeOK || resp.Diverging || len(resp.Batches) > 0
		if s.confirming > 0 {
			// A read waits for the follower to echo its barrier: answer
			// now (the answer carries the barrier), and tell the read.
			// A standing fetch sent before the read echoes an older
			// barrier and confirms nothing.
			news = true
			r.wake()
		}
		if s.role == roleLeader {
			s.log.keepFrom = s.leader.HighWatermark()
			r.drain(slot, s)
		}
		if h != nil {
			if !news && resp.HighWatermark <= h.hwSent {
				h.req, h.standing = *req, true
				return
			}
			h.standing, h.hwSent = false, resp.HighWatermark
		}
		start := len(fb)
		fb = replica.AppendFetchResponse(fb, resp)
		frames = append(frames, SlotFetch{Slot: slot, Frame: fb[start:len(fb):len(fb)]})
	})
	return frames, fb
}

// handleCopy answers MethodSlotCopy: status 0 and the copy, or an error
// byte and message.
func (r *Replication) handleCopy(c *CopyRequest) []byte {
	var sc SlotCopy
	var refuse string
	r.e.WithSlot(c.Slot, func(t statestore.SlotTx) {
		s := &r.slots[c.Slot]
		if s.role != roleLeader || s.epoch != c.Epoch {
			refuse = fmt.Sprintf("crux replication: member %q does not lead slot %d at epoch %d", r.member, c.Slot, c.Epoch)
			return
		}
		sc.Seq, sc.HW = t.Seq(), s.leader.HighWatermark()
		// The leader's log ends at the slot's seq: its whole history
		// covers the copy.
		sc.History = slices.Clone(s.log.history)
		sc.Items = t.Items()
	})
	if refuse != "" {
		return append([]byte{1}, refuse...)
	}
	out := AppendSlotCopy([]byte{0}, &sc)
	if len(out) > muxconn.MaxFrame-64 {
		return append([]byte{1}, fmt.Sprintf("crux replication: slot %d holds %d bytes, more than one frame carries", c.Slot, len(out))...)
	}
	return out
}

// echo records the barrier a follower's checked fetch at the leader's
// epoch carries.
func (r *Replication) echo(s *replSlot, req *replica.FetchRequest) {
	if req.Barrier == 0 {
		return
	}
	if s.echoed == nil {
		s.echoed = map[replica.ReplicaID]uint64{}
	}
	s.echoed[req.Replica] = max(s.echoed[req.Replica], req.Barrier)
}

// ConfirmTimeout bounds how long a strong read waits for the in-sync
// replicas to confirm it.
const ConfirmTimeout = 3 * time.Second

// GetConfirmed reads key on this member, the leader of its slot, and
// answers once the read is confirmed: every replica the control plane
// could elect (the in-sync set and a pending proposal's members) sent a
// fetch at this leader's epoch after the read — so no other leader
// existed then — and the high watermark passed what the read saw, so no
// future leader lacks it. That makes the read linearizable. "Sent after
// the read" is proven by a barrier, not by counting fetches: the read
// raises the slot's barrier, answers carry it, and a follower's fetch
// echoes the largest it took, so a fetch echoing the read's barrier left
// the follower after the follower took an answer given after the read,
// however late the network delivers older fetches (a partition that
// heals delivers them all at once). It costs about two fetch round trips.
// A leader alone in its in-sync set answers at once.
func (r *Replication) GetConfirmed(ctx context.Context, key string) (statestore.Item, bool, error) {
	slot := statestore.SlotOf(key)
	var (
		it      statestore.Item
		found   bool
		err     error
		seq     int64
		epoch   uint64
		barrier uint64
	)
	r.e.WithSlot(slot, func(t statestore.SlotTx) {
		if err = r.Admit(t, false); err != nil {
			return
		}
		s := &r.slots[slot]
		it, found = t.Get(key)
		seq, epoch = int64(t.Seq()), s.epoch
		s.barrier++
		barrier = s.barrier
		s.confirming++
		s.nudgeHeld(slot) // standing fetches answer now
	})
	if err != nil {
		return it, found, err
	}
	defer r.e.WithSlot(slot, func(statestore.SlotTx) { r.slots[slot].confirming-- })
	timer := time.NewTimer(ConfirmTimeout)
	defer timer.Stop()
	for {
		r.notifyMu.Lock()
		ch := r.notify
		r.notifyMu.Unlock()
		done := false
		r.e.WithSlot(slot, func(statestore.SlotTx) {
			s := &r.slots[slot]
			if s.role != roleLeader || s.epoch != epoch || s.leader.Fenced() {
				err, done = notLeading(slot, "the slot's leader changed while a strong read was confirmed"), true
				return
			}
			if s.leader.HighWatermark() < seq {
				return
			}
			for _, id := range s.leader.Voters() {
				if id != r.self && s.echoed[id] < barrier {
					return
				}
			}
			done = true
		})
		if done {
			if err != nil {
				return statestore.Item{}, false, err
			}
			return it, found, nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return statestore.Item{}, false, notLeading(slot, "strong read: the in-sync replicas did not confirm this member's leadership in time")
		case <-ctx.Done():
			return statestore.Item{}, false, ctx.Err()
		}
	}
}

// SlotLag is how far a slot's followers trail its leader here: the most
// records any in-sync follower lacks, and for how long it has lacked
// them (since it last held the whole log).
type SlotLag struct {
	Slot    int
	Records int64
	Behind  time.Duration
}

// Lags reports the lag of every slot this member leads.
func (r *Replication) Lags(now time.Time) []SlotLag {
	var out []SlotLag
	for i := range r.slots {
		r.e.WithSlot(i, func(statestore.SlotTx) {
			s := &r.slots[i]
			if s.role != roleLeader {
				return
			}
			lag := SlotLag{Slot: i}
			end := s.leader.EndOffset()
			for _, id := range s.leader.Voters() {
				st, ok := s.leader.Follower(id)
				if !ok {
					continue // the leader itself
				}
				pos := max(st.Offset, 0)
				if end-pos > lag.Records {
					lag.Records = end - pos
				}
				if pos < end && !st.LastCaughtUp.IsZero() {
					lag.Behind = max(lag.Behind, now.Sub(st.LastCaughtUp))
				}
			}
			out = append(out, lag)
		})
	}
	return out
}

// Replications are the replicated stores on this member.
func (s *Server) Replications() []*Replication {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Replication, 0, len(s.repls))
	for _, r := range s.repls {
		out = append(out, r)
	}
	return out
}

// sameMembers says whether a and b hold the same members, in any order
// (a leader transfer or a move's switch reorders a slot's replicas).
func sameMembers(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, m := range a {
		if !slices.Contains(b, m) {
			return false
		}
	}
	return true
}

// goAdd counts a goroutine about to start in wg, unless the replication
// stopped.
func (r *Replication) goAdd() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return false
	}
	r.wg.Add(1)
	return true
}
