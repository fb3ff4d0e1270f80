package clustermap

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// fleet is an in-memory cluster for tests: a map, a controller that
// applies Plan's commands, and replicas that act as the real ones would
// (a new replica copies, then tails, then the leader counts it in sync; a
// returning replica catches up). Nothing runs concurrently and time is a
// counter, so every run is the same.
type fleet struct {
	tb  failer
	m   *Map
	cfg PlanConfig
	now int64
	// deep runs Check after every command and verifies that Apply did
	// not write to the map it was given; without it, only the cheap
	// transition checks run (epochs, leaders from the in-sync set) and
	// converge runs Check every few rounds.
	deep bool
	// Figures of the run.
	// tick is how far the clock moves each round; 0 means a second.
	tick                     time.Duration
	rounds, commands         int
	started, done, aborted   int
	transfers, elections     int
	maxMovesSeen, maxPerPlan int
}

// sentinels are the errors a refusal may wrap.
var sentinels = []error{ErrNotBootstrapped, ErrBootstrapped, ErrBadCommand, ErrUnknownMember, ErrMemberLeft,
	ErrMemberNotAlive, ErrMemberDraining, ErrNotDataMember, ErrUnknownSlot, ErrUnknownTopic, ErrUnknownPartition,
	ErrTopicExists, ErrUnassigned, ErrSlotsAssigned, ErrStaleEpoch, ErrBadISR, ErrBadAssignment, ErrNotEnoughMembers,
	ErrNoLeader, ErrIsLeader, ErrLastInSync, ErrNotInSync, ErrMoveInProgress, ErrNoSuchMove, ErrBadPhase, ErrBadConfig}

// failer is what the fleet needs of testing.TB, which *rapid.T has too.
type failer interface {
	Helper()
	Fatalf(format string, args ...any)
}

func newFleet(tb failer, cfg PlanConfig, boot Bootstrap) *fleet {
	f := &fleet{tb: tb, m: New(), cfg: cfg, now: time.Unix(1_700_000_000, 0).UnixNano(), deep: true}
	f.must(boot)
	return f
}

// apply applies c and, on success, checks the new map against the old.
func (f *fleet) apply(c Command) error {
	f.tb.Helper()
	old := f.m
	var oldPrint uint64
	if f.deep {
		oldPrint = fingerprint(old)
	}
	next, err := Apply(old, c)
	if f.deep && fingerprint(old) != oldPrint {
		f.tb.Fatalf("%T %+v modified the map it was applied to", c, c)
	}
	if err != nil {
		if next != old {
			f.tb.Fatalf("%T refused (%v) but returned a different map", c, err)
		}
		if !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
			f.tb.Fatalf("%T refused with %v, which wraps no sentinel", c, err)
		}
		return err
	}
	f.commands++
	switch c := c.(type) {
	case MoveStart:
		f.started++
	case MoveDone:
		f.done++
	case MoveAbort:
		f.aborted++
	case LeaderTransfer:
		f.transfers++
	case ElectLeaders:
		f.elections += len(c.Refs)
	}
	checkTransition(f.tb, old, next, c, f.deep)
	f.m = next
	return nil
}

func (f *fleet) must(cs ...Command) {
	f.tb.Helper()
	for _, c := range cs {
		if err := f.apply(c); err != nil {
			f.tb.Fatalf("%T %+v: %v", c, c, err)
		}
	}
}

func (f *fleet) join(ids ...string) {
	f.tb.Helper()
	for _, id := range ids {
		f.must(MemberJoin{ID: id, Addr: id + ":7000", Roles: []string{RoleData}, At: f.now})
	}
}

// round is one controller round: plan and apply, then the replicas'
// reports, then a tick of a second. It returns how many commands it
// applied.
func (f *fleet) round() int {
	f.tb.Helper()
	f.rounds++
	before := f.commands
	plan := Plan(f.m, f.cfg)
	f.maxPerPlan = max(f.maxPerPlan, len(plan))
	for _, c := range plan {
		if err := f.apply(c); err != nil {
			f.tb.Fatalf("round %d: planned %T %+v refused: %v", f.rounds, c, c, err)
		}
	}
	moving := 0
	for _, c := range f.replicaReports() {
		if err := f.apply(c); err != nil {
			f.tb.Fatalf("round %d: replica report %T %+v refused: %v", f.rounds, c, c, err)
		}
	}
	f.m.eachGroup(func(_ Ref, g *Group) {
		if g.Move != nil {
			moving++
		}
	})
	f.maxMovesSeen = max(f.maxMovesSeen, moving)
	if moving > f.cfg.MaxMoves && f.cfg.MaxMoves > 0 {
		f.tb.Fatalf("round %d: %d moves in progress, bound %d", f.rounds, moving, f.cfg.MaxMoves)
	}
	f.now += int64(cmp.Or(f.tick, time.Second))
	f.must(Tick{Now: f.now})
	return f.commands - before
}

// replicaReports is what the replicas say after a round: a copying
// replica has its snapshot (tailing), a tailing one or a returned one
// has caught up and its leader adds it to the in-sync set.
func (f *fleet) replicaReports() []Command {
	var out []Command
	f.m.eachGroup(func(r Ref, g *Group) {
		if len(g.Replicas) == 0 || g.Leader == "" {
			return
		}
		if mv := g.Move; mv != nil && mv.Phase == PhaseCopying && f.m.Member(mv.To).Alive() {
			out = append(out, MoveProgress{Ref: r, From: mv.From, To: mv.To, Phase: PhaseTailing})
			return
		}
		isr := slices.Clone(g.ISR)
		for _, id := range g.Replicas {
			if !g.InSync(id) && f.m.Member(id).Alive() {
				isr = append(isr, id)
			}
		}
		if len(isr) != len(g.ISR) {
			out = append(out, ISRChange{Ref: r, ISR: isr, Epoch: g.Epoch})
		}
	})
	return out
}

// converge runs rounds until the plan is empty and the map converged;
// it fails the test after limit rounds. It returns the rounds it took.
func (f *fleet) converge(limit int) int {
	f.tb.Helper()
	for i := 1; i <= limit; i++ {
		n := f.round()
		done := n == 1 && f.m.Report().Converged() && len(Plan(f.m, f.cfg)) == 0
		if done || i%8 == 0 {
			if err := f.m.Check(); err != nil {
				f.tb.Fatalf("round %d: %v", f.rounds, err)
			}
		}
		if done {
			return i
		}
	}
	rep := f.m.Report()
	f.tb.Fatalf("no convergence in %d rounds: %d leaderless, %d under-replicated, %d moving, slots %+v, partitions %+v",
		limit, len(rep.Leaderless), len(rep.UnderReplicated), len(rep.Moving), rep.Slots, rep.Partitions)
	return limit
}

// checkTransition asserts what must hold between a map and the next:
// the version goes up by one; a group's epoch never goes down; a new
// leader comes with a new epoch and from the old in-sync set (unless
// the group is new or its topic allows unclean election).
func checkTransition(tb failer, old, next *Map, c Command, deep bool) {
	tb.Helper()
	if next == old {
		return
	}
	if next.Version != old.Version+1 {
		tb.Fatalf("%T: version %d -> %d", c, old.Version, next.Version)
	}
	if deep {
		if err := next.Check(); err != nil {
			tb.Fatalf("%T %+v: %v", c, c, err)
		}
	}
	cmpGroup := func(r Ref, a, b *Group, unclean bool) {
		if a == b {
			return // copy-on-write: untouched
		}
		if b.Epoch < a.Epoch {
			tb.Fatalf("%T: %v epoch %d -> %d", c, r, a.Epoch, b.Epoch)
		}
		if a.Leader != b.Leader {
			if b.Epoch == a.Epoch {
				tb.Fatalf("%T: %v leader %q -> %q at epoch %d", c, r, a.Leader, b.Leader, a.Epoch)
			}
			if b.Leader != "" && len(a.Replicas) > 0 && !a.InSync(b.Leader) && !unclean {
				tb.Fatalf("%T: %v out-of-sync leader %q (isr was %q)", c, r, b.Leader, a.ISR)
			}
		}
	}
	for ci, c := range old.slots {
		if c == next.slots[ci] {
			continue // copy-on-write: the whole chunk is untouched
		}
		for j, g := range c {
			i := ci*slotChunkSize + j
			cmpGroup(SlotRef(i), g, next.Slot(i), false)
		}
	}
	for _, tp := range next.Topics {
		otp := old.Topic(tp.Name)
		if otp == nil || otp.ID != tp.ID {
			continue
		}
		if len(tp.Partitions) < len(otp.Partitions) {
			tb.Fatalf("%T: topic %s shrank from %d partitions to %d", c, tp.Name, len(otp.Partitions), len(tp.Partitions))
		}
		for p := range otp.Partitions {
			cmpGroup(PartitionRef(tp.Name, p), otp.Partitions[p], tp.Partitions[p], otp.Config.UncleanLeaderElection || tp.Config.UncleanLeaderElection)
		}
	}
}

// fingerprint hashes everything in m, to tell that a map was not
// written to.
func fingerprint(m *Map) uint64 {
	// FNV-1a over the bytes, a word at a time for numbers (maphash is
	// several times slower under the race detector).
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	u := func(v uint64) {
		h = (h ^ v) * prime
		h ^= h >> 29
	}
	s := func(v string) {
		for i := 0; i < len(v); i++ {
			h = (h ^ uint64(v[i])) * prime
		}
		u(uint64(len(v)))
	}
	ss := func(v []string) {
		u(uint64(len(v)))
		for _, x := range v {
			s(x)
		}
	}
	s(m.ClusterID)
	u(m.Version)
	u(uint64(m.Settings.Replicas))
	u(uint64(m.Settings.RebuildAfter))
	u(uint64(len(m.Members)))
	for _, mb := range m.Members {
		s(mb.ID)
		s(mb.Addr)
		s(mb.DC)
		ss(mb.Roles)
		u(uint64(mb.State))
		u(uint64(b2i(mb.Draining)))
		u(uint64(mb.Since))
		u(uint64(mb.JoinedAt))
	}
	g := func(g *Group) {
		ss(g.Replicas)
		s(g.Leader)
		u(g.Epoch)
		ss(g.ISR)
		if g.Move != nil {
			s(g.Move.From)
			s(g.Move.To)
			u(uint64(g.Move.Phase))
			u(uint64(b2i(g.Move.FromLatest)))
		} else {
			u(0)
		}
		ss(g.Target)
		u(uint64(b2i(g.TargetFromLatest)))
	}
	m.eachSlot(func(_ Ref, sl *Group) { g(sl) })
	u(uint64(len(m.Topics)))
	for _, tp := range m.Topics {
		s(tp.Name)
		u(tp.ID)
		u(uint64(tp.Config.ReplicationFactor))
		u(uint64(tp.Config.MinInSyncReplicas))
		u(uint64(b2i(tp.Config.UncleanLeaderElection)))
		for _, k := range slices.Sorted(maps.Keys(tp.Overrides)) {
			s(k)
			s(tp.Overrides[k])
		}
		u(uint64(len(tp.Partitions)))
		for _, p := range tp.Partitions {
			g(p)
		}
	}
	return h
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%04d", prefix, i))
	}
	return out
}
