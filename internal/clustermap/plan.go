package clustermap

import (
	"cmp"
	"slices"
)

// Defaults of PlanConfig.
const (
	// DefaultMaxMoves bounds the moves in progress cluster-wide: each
	// copies a snapshot and tails a log, and too many at once would take
	// the bandwidth and disk the traffic needs.
	DefaultMaxMoves = 8
	// DefaultMaxTransfers bounds the leader transfers one plan makes for
	// balance (a transfer is a short pause of writes to its group).
	DefaultMaxTransfers = 64
)

// PlanConfig tunes the planner. It is the controller leader's, not the
// map's: any plan is valid, a different bound only paces it differently.
type PlanConfig struct {
	// MaxMoves is the most moves in progress at once; 0 means
	// DefaultMaxMoves.
	MaxMoves int
	// MaxTransfers is the most leader transfers a plan makes to balance
	// leaderships; 0 means DefaultMaxTransfers. Transfers away from a
	// draining member are not bounded.
	MaxTransfers int
	// MinMembers holds the slots' first assignment until this many data
	// members are eligible, so that a cluster started with N members
	// spreads its slots over all N rather than over the first to join.
	MinMembers int
	// NoMoves plans no replica moves (and no surplus removals): for
	// members that cannot copy a slot yet. The first assignment, failback
	// and leader transfers along in-sync replicas are still planned.
	NoMoves bool
}

// Plan returns the commands that move m towards a balanced, fully
// replicated map, for the controller leader to propose. It is a pure
// function of m: whichever server leads plans the same.
//
// Applied in order to m, every command of a plan is accepted; applied to
// a later map (other commands got in between), some may be refused, and
// the next plan, made on the newer map, tries again. Planning again
// before the last plan is applied repeats it: the controller should plan
// once per applied map.
//
// What it plans, in order of urgency:
//   - the slots' first assignment, once there are data members (alone);
//   - moves in flight: abort those whose new replica died or started
//     draining, switch those whose new replica is in sync, finish those
//     that switched;
//   - operator reassignments (ReassignPartition), one replica at a time;
//   - preferred leader elections where the preferred leader is back;
//   - leaderships off draining members, to their least loaded in-sync
//     replica;
//   - new replicas for those on gone or departed members, for groups
//     below their replication factor, and for draining members once they
//     lead nothing; surplus replicas removed;
//   - replica balance: moves from the most to the least loaded member
//     until every member is within 10% of the mean (or 1 replica when
//     the mean is small);
//   - leader balance: leader transfers along in-sync replicas until
//     every member's leader count is within the same bound.
//
// New moves are bounded by MaxMoves (counting those in progress).
func Plan(m *Map, cfg PlanConfig) []Command {
	if !m.Bootstrapped() {
		return nil
	}
	if cfg.MaxMoves <= 0 {
		cfg.MaxMoves = DefaultMaxMoves
	}
	if cfg.MaxTransfers <= 0 {
		cfg.MaxTransfers = DefaultMaxTransfers
	}
	p := newPlanner(m, cfg)
	if p.assignSlots() {
		return p.out
	}
	p.advanceMoves()
	for _, pl := range p.pools {
		pl.count(p)
	}
	if !cfg.NoMoves {
		p.reassign()
	}
	p.failback()
	p.drainLeaders()
	if !cfg.NoMoves {
		p.repair()
		for _, pl := range p.pools {
			p.balanceReplicas(pl)
		}
	}
	for _, pl := range p.pools {
		p.balanceLeaders(pl)
	}
	return p.out
}

// planner holds one planning pass. Members are referred to by their index
// in m.Members; -1 is none.
type planner struct {
	m   *Map
	cfg PlanConfig
	out []Command
	idx map[string]int
	// Per member: alive; eligible (may take replicas and leaderships);
	// draining (alive but must shed everything: draining or not a data
	// member); lost (gone or left: its replicas are rebuilt).
	alive, eligible, draining, lost []bool
	// leads counts each member's leaderships in the map, across pools:
	// a draining member's replicas move only once it leads nothing.
	leads    []int
	pools    []*pool
	moves    int // moves in progress after this plan
	capacity int
	// Scratch of the chain searches: seen[mi] == gen marks a member
	// visited in the current search; prev and via record how.
	seen, prev, via []int
	gen             int
}

// pool is the slots, or the partitions of every topic: each is balanced
// on its own, since each has its own load.
type pool struct {
	refs   []Ref
	groups []*Group
	reps   [][]int // replicas as member indexes, in order
	// sync has bit j set when replica j is in the in-sync set.
	sync []uint32
	// touched: a command of this plan names the group (so later steps
	// leave it alone and every command stays valid against its epoch).
	touched []bool
	// aborted: this plan aborts the group's move.
	aborted []bool
	// leader is the eventual leader index (after a move in flight
	// switches), updated as the plan transfers leaderships.
	leader []int
	// rc and lc count each member's eventual replicas and leaderships
	// in this pool, kept current as the plan adds commands.
	rc, lc []int
}

func newPlanner(m *Map, cfg PlanConfig) *planner {
	n := len(m.Members)
	p := &planner{
		m: m, cfg: cfg, idx: make(map[string]int, n),
		alive: make([]bool, n), eligible: make([]bool, n), draining: make([]bool, n), lost: make([]bool, n),
		leads: make([]int, n), capacity: m.capacity(),
		seen: make([]int, n), prev: make([]int, n), via: make([]int, n),
	}
	for i, mb := range m.Members {
		p.idx[mb.ID] = i
		p.alive[i] = mb.Alive()
		p.eligible[i] = mb.Eligible()
		p.draining[i] = mb.Alive() && !mb.Eligible()
		p.lost[i] = mb.State == StateGone || mb.State == StateLeft
	}
	slots := &pool{}
	m.eachSlot(func(r Ref, g *Group) {
		slots.refs = append(slots.refs, r)
		slots.groups = append(slots.groups, g)
	})
	parts := &pool{}
	for _, tp := range m.Topics {
		for i, g := range tp.Partitions {
			parts.refs = append(parts.refs, PartitionRef(tp.Name, i))
			parts.groups = append(parts.groups, g)
		}
	}
	p.pools = []*pool{slots, parts}
	for _, pl := range p.pools {
		k := len(pl.groups)
		pl.reps = make([][]int, k)
		pl.sync = make([]uint32, k)
		pl.touched = make([]bool, k)
		pl.aborted = make([]bool, k)
		pl.leader = make([]int, k)
		pl.rc = make([]int, n)
		pl.lc = make([]int, n)
		total := 0
		for _, g := range pl.groups {
			total += len(g.Replicas)
		}
		backing := make([]int, total)
		for gi, g := range pl.groups {
			reps := backing[:len(g.Replicas):len(g.Replicas)]
			backing = backing[len(g.Replicas):]
			k := 0 // the in-sync set is in replica order: one pass
			for j, id := range g.Replicas {
				reps[j] = p.idx[id]
				if k < len(g.ISR) && g.ISR[k] == id {
					pl.sync[gi] |= 1 << j
					k++
				}
			}
			pl.reps[gi] = reps
			if g.Leader != "" {
				p.leads[p.idx[g.Leader]]++
			}
		}
	}
	return p
}

// inSync reports whether replica j of group gi is in sync.
func (pl *pool) inSync(gi, j int) bool { return pl.sync[gi]&(1<<j) != 0 }

func (p *planner) index(id string) int {
	if i, ok := p.idx[id]; ok {
		return i
	}
	return -1
}

// count fills the eventual view: a move in flight counts as done (its
// new replica holds it, and the leadership if the old one had it), one
// this plan aborts as never started.
func (pl *pool) count(p *planner) {
	for gi, g := range pl.groups {
		pl.leader[gi] = -1
		if len(g.Replicas) == 0 {
			continue
		}
		from, to := -1, -1
		if g.Move != nil {
			to = p.index(g.Move.To)
			from = p.index(g.Move.From)
		}
		for _, mi := range pl.reps[gi] {
			if g.Move != nil && ((!pl.aborted[gi] && mi == from) || (pl.aborted[gi] && mi == to)) {
				continue
			}
			pl.rc[mi]++
		}
		if g.Leader == "" {
			continue
		}
		l := p.index(g.Leader)
		switch {
		case g.Move != nil && !pl.aborted[gi] && l == from:
			l = to
		case g.Move != nil && pl.aborted[gi] && l == to:
			l = from
		}
		pl.leader[gi] = l
		pl.lc[l]++
	}
}

func (p *planner) emit(c Command) { p.out = append(p.out, c) }

// assignSlots plans the slots' first assignment. It returns true if it
// did: the rest of the plan waits for the slots to exist.
func (p *planner) assignSlots() bool {
	if len(p.m.Slot(0).Replicas) != 0 {
		return false
	}
	var elig []string
	for i, mb := range p.m.Members {
		if p.eligible[i] {
			elig = append(elig, mb.ID)
		}
	}
	if len(elig) == 0 || len(elig) < p.cfg.MinMembers {
		return false
	}
	rf := min(p.m.Settings.Replicas, len(elig))
	p.emit(AssignSlots{Replicas: Spread(elig, NumSlots, rf)})
	return true
}

// advanceMoves decides the moves in flight.
func (p *planner) advanceMoves() {
	for _, pl := range p.pools {
		for gi, g := range pl.groups {
			mv := g.Move
			if mv == nil {
				continue
			}
			r := pl.refs[gi]
			to := p.index(mv.To)
			inSync := g.InSync(mv.To)
			lastInSync := len(g.ISR) == 1 && inSync
			switch {
			case (!p.eligible[to] || (g.Leader == "" && !inSync)) && !lastInSync:
				// The new replica died or is draining, or it has no leader
				// to copy from: give the slot back its old shape; the move
				// is planned again, elsewhere if need be.
				p.emit(MoveAbort{Ref: r, From: mv.From, To: mv.To})
				pl.aborted[gi] = true
			case mv.Phase == PhaseSwitching && inSync:
				p.emit(MoveDone{Ref: r, From: mv.From, To: mv.To})
			case mv.Phase < PhaseSwitching && inSync && p.alive[to]:
				p.emit(MoveProgress{Ref: r, From: mv.From, To: mv.To, Phase: PhaseSwitching})
				p.moves++
			default:
				p.moves++
			}
			pl.touched[gi] = true
		}
	}
}

func (p *planner) budget() bool { return p.moves < p.cfg.MaxMoves }

// startMove plans moving group gi's replica on from (-1: add one) to to.
// A move towards a reassignment's target starts from the latest offset
// when the reassignment says so.
func (p *planner) startMove(pl *pool, gi, from, to int) {
	g := pl.groups[gi]
	c := MoveStart{Ref: pl.refs[gi], To: p.m.Members[to].ID, FromLatest: g.TargetFromLatest && slices.Contains(g.Target, p.m.Members[to].ID)}
	if from >= 0 {
		c.From = p.m.Members[from].ID
		pl.rc[from]--
		if pl.leader[gi] == from {
			pl.lc[from]--
			pl.lc[to]++
			pl.leader[gi] = to
		}
	}
	pl.rc[to]++
	pl.touched[gi] = true
	p.moves++
	p.emit(c)
}

// transfer plans moving group gi's leadership to to.
func (p *planner) transfer(pl *pool, gi, to int) {
	g := pl.groups[gi]
	if l := pl.leader[gi]; l >= 0 {
		pl.lc[l]--
	}
	pl.lc[to]++
	pl.leader[gi] = to
	pl.touched[gi] = true
	p.emit(LeaderTransfer{Ref: pl.refs[gi], To: p.m.Members[to].ID, Epoch: g.Epoch})
}

// removeReplica plans dropping group gi's replica on mi.
func (p *planner) removeReplica(pl *pool, gi, mi int) {
	pl.rc[mi]--
	pl.touched[gi] = true
	p.emit(RemoveReplica{Ref: pl.refs[gi], Member: p.m.Members[mi].ID})
}

// canRemove reports whether the replica on mi may be dropped now.
func canRemove(g *Group, id string) bool {
	return g.Leader != id && len(g.Replicas) > 1 && !slices.Equal(g.ISR, []string{id})
}

// target picks the member a new replica of group gi goes to: eligible,
// not already a replica, fewest replicas in the pool, then fewest
// leaderships, then first by id. -1 if there is none.
func (p *planner) target(pl *pool, gi int) int {
	best := -1
	for mi := range p.m.Members {
		if !p.eligible[mi] || slices.Contains(pl.reps[gi], mi) {
			continue
		}
		if best < 0 || pl.rc[mi] < pl.rc[best] || (pl.rc[mi] == pl.rc[best] && pl.lc[mi] < pl.lc[best]) {
			best = mi
		}
	}
	return best
}

// free reports whether group gi may take a new command: untouched by
// this plan, no move in flight, assigned, with a leader to copy from.
func (pl *pool) free(gi int) bool {
	g := pl.groups[gi]
	return !pl.touched[gi] && g.Move == nil && len(g.Replicas) > 0 && g.Leader != ""
}

// reassign moves partitions towards their operator-requested replicas.
func (p *planner) reassign() {
	pl := p.pools[1]
	for gi, g := range pl.groups {
		if g.Target == nil || !pl.free(gi) {
			continue
		}
		cancel := false
		var add []int
		for _, id := range g.Target {
			mi := p.index(id)
			if mi < 0 || p.lost[mi] {
				cancel = true
			} else if !g.HasReplica(id) {
				add = append(add, mi)
			}
		}
		if cancel {
			// A target member is gone for good: the request cannot finish.
			r := pl.refs[gi]
			p.emit(ReassignPartition{Topic: r.Topic, Partition: r.Index})
			pl.touched[gi] = true
			continue
		}
		var rem []int
		for _, mi := range pl.reps[gi] {
			if !slices.Contains(g.Target, p.m.Members[mi].ID) {
				rem = append(rem, mi)
			}
		}
		// Drop a surplus replica that is not leading first, else move one.
		slices.SortStableFunc(rem, func(a, b int) int {
			return cmp.Compare(b2i(p.m.Members[a].ID == g.Leader), b2i(p.m.Members[b].ID == g.Leader))
		})
		switch {
		case len(add) > 0:
			to := -1
			for _, mi := range add {
				if p.eligible[mi] {
					to = mi
					break
				}
			}
			if to < 0 || !p.budget() {
				continue
			}
			from := -1
			if len(rem) > 0 && len(g.Replicas) >= len(g.Target) {
				from = rem[0]
			}
			p.startMove(pl, gi, from, to)
		case len(rem) > 0:
			id := p.m.Members[rem[0]].ID
			if canRemove(g, id) {
				p.removeReplica(pl, gi, rem[0])
				continue
			}
			for _, tid := range g.Target {
				if mi := p.index(tid); g.InSync(tid) && p.eligible[mi] && tid != g.Leader {
					p.transfer(pl, gi, mi)
					break
				}
			}
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// failback elects preferred leaders that are back in sync: after a
// failover the leadership sits wherever the election put it, and the
// preferred order is where the planner wants it.
func (p *planner) failback() {
	var refs []Ref
	for _, pl := range p.pools {
		for gi, g := range pl.groups {
			if !pl.free(gi) || g.Target != nil {
				continue
			}
			pref := pl.reps[gi][0]
			if pref == pl.leader[gi] || !p.eligible[pref] || !pl.inSync(gi, 0) {
				continue
			}
			pl.lc[pl.leader[gi]]--
			pl.lc[pref]++
			pl.leader[gi] = pref
			pl.touched[gi] = true
			refs = append(refs, pl.refs[gi])
		}
	}
	if len(refs) > 0 {
		p.emit(ElectLeaders{Refs: refs})
	}
}

// drainLeaders moves leaderships off draining members to their least
// loaded eligible in-sync replica. A group with no such replica keeps
// its leader until a move gives it one (repair).
func (p *planner) drainLeaders() {
	for _, pl := range p.pools {
		for gi := range pl.groups {
			l := pl.leader[gi]
			if !pl.free(gi) || l < 0 || !p.draining[l] {
				continue
			}
			best := -1
			for j, mi := range pl.reps[gi] {
				if mi == l || !p.eligible[mi] || !pl.inSync(gi, j) {
					continue
				}
				if best < 0 || pl.lc[mi] < pl.lc[best] {
					best = mi
				}
			}
			if best >= 0 {
				p.transfer(pl, gi, best)
			}
		}
	}
}

// repair plans the moves that restore replication, most urgent first:
// replicas on lost members, groups short of replicas, replicas on
// draining members; then drops surplus replicas.
func (p *planner) repair() {
	steps := []func(pl *pool, gi int){p.rebuildLost, p.grow, p.drainReplicas, p.shrink}
	for _, step := range steps {
		for _, pl := range p.pools {
			for gi := range pl.groups {
				if pl.free(gi) && pl.groups[gi].Target == nil {
					step(pl, gi)
				}
			}
		}
	}
}

// rebuildLost replaces a replica on a gone or departed member.
func (p *planner) rebuildLost(pl *pool, gi int) {
	g := pl.groups[gi]
	for j, mi := range pl.reps[gi] {
		if !p.lost[mi] {
			continue
		}
		if p.budget() {
			if to := p.target(pl, gi); to >= 0 {
				p.startMove(pl, gi, mi, to)
				return
			}
		}
		// Nowhere to rebuild it: drop it if the group has enough without.
		if len(g.Replicas) > p.m.desiredReplicas(pl.refs[gi], p.capacity) && canRemove(g, g.Replicas[j]) {
			p.removeReplica(pl, gi, mi)
		}
		return
	}
}

// grow adds a replica to a group short of its replication factor.
func (p *planner) grow(pl *pool, gi int) {
	if len(pl.groups[gi].Replicas) >= p.m.desiredReplicas(pl.refs[gi], p.capacity) || !p.budget() {
		return
	}
	if to := p.target(pl, gi); to >= 0 {
		p.startMove(pl, gi, -1, to)
	}
}

// drainReplicas moves a replica off a draining member that leads
// nothing any more (or leads this group with no one to hand it to:
// the move's switch then carries the leadership).
func (p *planner) drainReplicas(pl *pool, gi int) {
	g := pl.groups[gi]
	for j, mi := range pl.reps[gi] {
		if !p.draining[mi] || p.m.Members[mi].Restarting {
			continue // a restarting member keeps its replicas
		}
		leads := pl.leader[gi] == mi
		if p.leads[mi] > 0 && !leads {
			return // leaderships first
		}
		if p.budget() {
			if to := p.target(pl, gi); to >= 0 {
				p.startMove(pl, gi, mi, to)
				return
			}
		}
		if !leads && len(g.Replicas) > p.m.desiredReplicas(pl.refs[gi], p.capacity) && canRemove(g, g.Replicas[j]) {
			p.removeReplica(pl, gi, mi)
		}
		return
	}
}

// shrink drops a replica from a group above its replication factor (a
// topic's factor lowered): a dead one first, else an out-of-sync one,
// else the most loaded follower.
func (p *planner) shrink(pl *pool, gi int) {
	g := pl.groups[gi]
	if len(g.Replicas) <= p.m.desiredReplicas(pl.refs[gi], p.capacity) {
		return
	}
	best, bestRank := -1, -1
	for j, mi := range pl.reps[gi] {
		id := g.Replicas[j]
		if !canRemove(g, id) {
			continue
		}
		rank := pl.rc[mi]
		switch {
		case !p.alive[mi]:
			rank += 2 << 20
		case !g.InSync(id):
			rank += 1 << 20
		}
		if rank > bestRank {
			best, bestRank = mi, rank
		}
	}
	if best >= 0 {
		p.removeReplica(pl, gi, best)
	}
}

// band returns the bounds a member's count must be within: the mean
// plus or minus 10%, and never tighter than plus or minus 1.
func band(total, members int) (lo, hi float64) {
	mean := float64(total) / float64(members)
	d := max(mean/10, 1)
	return mean - d, mean + d
}

// balanceReplicas moves replicas from the most loaded eligible member to
// the least loaded one until all are within the band.
func (p *planner) balanceReplicas(pl *pool) {
	var elig []int
	total := 0
	for mi := range p.m.Members {
		if p.eligible[mi] {
			elig = append(elig, mi)
			total += pl.rc[mi]
		}
	}
	if len(elig) < 2 || total == 0 {
		return
	}
	lo, hi := band(total, len(elig))
	// held lists each member's free groups, to find one to move.
	held := make([][]int, len(p.m.Members))
	for gi := range pl.groups {
		if !pl.free(gi) || pl.groups[gi].Target != nil {
			continue
		}
		for _, mi := range pl.reps[gi] {
			if p.eligible[mi] {
				held[mi] = append(held[mi], gi)
			}
		}
	}
	stuck := make([]bool, len(p.m.Members)) // sources with nothing movable left
	for p.budget() {
		o, u := -1, -1
		for _, mi := range elig {
			if !stuck[mi] && (o < 0 || pl.rc[mi] > pl.rc[o]) {
				o = mi
			}
			if u < 0 || pl.rc[mi] < pl.rc[u] {
				u = mi
			}
		}
		if o < 0 || (float64(pl.rc[o]) <= hi && float64(pl.rc[u]) >= lo) {
			return
		}
		// Try the receivers from the least loaded up; a move must narrow
		// the gap, so the receiver has at least two fewer.
		recv := make([]int, 0, len(elig))
		for _, mi := range elig {
			if pl.rc[mi] <= pl.rc[o]-2 {
				recv = append(recv, mi)
			}
		}
		slices.SortStableFunc(recv, func(a, b int) int { return cmp.Compare(pl.rc[a], pl.rc[b]) })
		moved := false
		for _, to := range recv {
			if gi := p.pickGroup(pl, held[o], o, to); gi >= 0 {
				p.startMove(pl, gi, o, to)
				moved = true
				break
			}
		}
		if !moved {
			stuck[o] = true
		}
	}
}

// pickGroup chooses which of from's groups moves to to: one to does not
// hold, untouched. It carries from's leadership along when from leads
// more than to by two or more, and avoids it otherwise.
func (p *planner) pickGroup(pl *pool, groups []int, from, to int) int {
	wantLead := pl.lc[from] >= pl.lc[to]+2
	fallback := -1
	for _, gi := range groups {
		if pl.touched[gi] || slices.Contains(pl.reps[gi], to) {
			continue
		}
		if (pl.leader[gi] == from) == wantLead {
			return gi
		}
		if fallback < 0 {
			fallback = gi
		}
	}
	return fallback
}

// balanceLeaders transfers leaderships until every eligible member's
// count is within the band. A direct transfer from the most loaded
// member to one with two fewer is often impossible (it holds no replica
// of the right group), so it searches a chain: o leads g1 where w1 is in
// sync, w1 leads g2 where w2 is in sync, ... and shifts each leadership
// one step, which moves one leadership from o to the chain's end and
// leaves the members between unchanged.
func (p *planner) balanceLeaders(pl *pool) {
	var elig []int
	total := 0
	for mi := range p.m.Members {
		if p.eligible[mi] {
			elig = append(elig, mi)
			total += pl.lc[mi]
		}
	}
	if len(elig) < 2 || total == 0 {
		return
	}
	lo, hi := band(total, len(elig))
	// led[v] lists the groups v leads that may change leader; isr[w] the
	// groups where w is an eligible in-sync follower.
	led := make([][]int, len(p.m.Members))
	isr := make([][]int, len(p.m.Members))
	for gi, g := range pl.groups {
		l := pl.leader[gi]
		if !pl.free(gi) || g.Target != nil || l < 0 || !p.eligible[l] {
			continue
		}
		led[l] = append(led[l], gi)
		for j, mi := range pl.reps[gi] {
			if mi != l && p.eligible[mi] && pl.inSync(gi, j) {
				isr[mi] = append(isr[mi], gi)
			}
		}
	}
	stuck := make([]bool, len(p.m.Members))
	for n := 0; n < p.cfg.MaxTransfers; {
		o, u := -1, -1
		for _, mi := range elig {
			if stuck[mi] {
				continue
			}
			if o < 0 || pl.lc[mi] > pl.lc[o] {
				o = mi
			}
			if u < 0 || pl.lc[mi] < pl.lc[u] {
				u = mi
			}
		}
		if o < 0 {
			return
		}
		var path []int
		switch {
		case float64(pl.lc[o]) > hi:
			path = p.chainFrom(pl, o, led)
			if path == nil {
				stuck[o] = true
				continue
			}
		case float64(pl.lc[u]) < lo:
			path = p.chainTo(pl, u, isr)
			if path == nil {
				stuck[u] = true
				continue
			}
		default:
			return
		}
		// path alternates member, group, member, ...: hand each group to
		// the member after it. The groups are then touched, so no later
		// chain uses them and each transfer's epoch stays valid.
		for i := 1; i < len(path); i += 2 {
			p.transfer(pl, path[i], path[i+1])
			n++
		}
	}
}

// chainFrom searches, breadth first, from o along "leads a group where
// w is in sync" for a member with at least two fewer leaderships. It
// returns the path member, group, member, ..., or nil.
func (p *planner) chainFrom(pl *pool, o int, led [][]int) []int {
	p.gen++
	p.seen[o] = p.gen
	queue := []int{o}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		for _, gi := range led[v] {
			if pl.touched[gi] || pl.leader[gi] != v {
				continue
			}
			for j, w := range pl.reps[gi] {
				if p.seen[w] == p.gen || !p.eligible[w] || !pl.inSync(gi, j) {
					continue
				}
				p.seen[w], p.prev[w], p.via[w] = p.gen, v, gi
				if pl.lc[w] <= pl.lc[o]-2 {
					var path []int
					for x := w; x != o; x = p.prev[x] {
						path = append(path, x, p.via[x])
					}
					path = append(path, o)
					slices.Reverse(path)
					return path
				}
				queue = append(queue, w)
			}
		}
	}
	return nil
}

// chainTo searches backwards from u for a member with at least two more
// leaderships that can pass one along to u; the path is as chainFrom's.
func (p *planner) chainTo(pl *pool, u int, isr [][]int) []int {
	p.gen++
	p.seen[u] = p.gen
	queue := []int{u}
	for len(queue) > 0 {
		w := queue[0]
		queue = queue[1:]
		for _, gi := range isr[w] {
			v := pl.leader[gi]
			if pl.touched[gi] || v < 0 || !p.eligible[v] || p.seen[v] == p.gen {
				continue
			}
			p.seen[v], p.prev[v], p.via[v] = p.gen, w, gi
			if pl.lc[v] >= pl.lc[u]+2 {
				var path []int
				for x := v; x != u; x = p.prev[x] {
					path = append(path, x, p.via[x])
				}
				return append(path, u)
			}
			queue = append(queue, v)
		}
	}
	return nil
}

// Spread assigns n groups of rf replicas over members (in the order
// given: CreateTopic passes them least loaded first). The leaders go
// round the members, so leader counts differ by at most one; each
// follower goes to the member with the fewest replicas so far (leaders
// counted from the start), the tie broken by the ring order from a
// point after the leader that shifts every round, so that followers
// spread evenly and the groups a member shares with others vary.
// rf must be at most len(members).
func Spread(members []string, n, rf int) [][]string {
	return spread(members, n, rf, nil)
}

// spread is Spread with the members' replica counts so far (nil: none),
// so that a new topic's followers go to the least loaded members.
func spread(members []string, n, rf int, load []int) [][]string {
	k := len(members)
	out := make([][]string, n)
	backing := make([]string, n*rf)
	count := make([]int, k)
	copy(count, load)
	for g := range n {
		count[g%k]++
	}
	chosen := make([]int, 0, rf)
	for g := range n {
		lead := g % k
		chosen = append(chosen[:0], lead)
		reps := append(backing[g*rf:g*rf:(g+1)*rf], members[lead])
		for j := 1; j < rf; j++ {
			start := lead + j + g/k
			best := -1
			for d := range k {
				i := (start + d) % k
				if slices.Contains(chosen, i) {
					continue
				}
				if best < 0 || count[i] < count[best] {
					best = i
				}
			}
			chosen = append(chosen, best)
			count[best]++
			reps = append(reps, members[best])
		}
		out[g] = reps
	}
	return out
}

// byLoad orders ids by their load in the partitions (fewest leaderships,
// then fewest replicas, then id) and returns their replica counts in
// that order, for spread.
func (m *Map) byLoad(ids []string) ([]string, []int) {
	rc := make(map[string]int, len(ids))
	lc := make(map[string]int, len(ids))
	for _, tp := range m.Topics {
		for _, g := range tp.Partitions {
			for _, id := range g.Replicas {
				rc[id]++
			}
			if g.Leader != "" {
				lc[g.Leader]++
			}
		}
	}
	out := slices.Clone(ids)
	slices.SortStableFunc(out, func(a, b string) int {
		if c := cmp.Compare(lc[a], lc[b]); c != 0 {
			return c
		}
		if c := cmp.Compare(rc[a], rc[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	load := make([]int, len(out))
	for i, id := range out {
		load[i] = rc[id]
	}
	return out, load
}
