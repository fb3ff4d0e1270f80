package clustermap

import (
	"fmt"
	"maps"
	"slices"
)

// Apply returns the map after c. It is deterministic: the same map and
// command give the same result on every runtime, which is what lets raft
// order commands and leave the deciding to each replica.
//
// A refused command returns m itself and an error naming what is wrong;
// a command that changes nothing (a heartbeat of a live member) returns m
// and nil; otherwise the new map has Version m.Version+1. m is never
// modified: the new map shares the parts c did not touch.
func Apply(m *Map, c Command) (*Map, error) {
	if m == nil {
		m = New()
	}
	if c == nil {
		return m, fmt.Errorf("nil command: %w", ErrBadCommand)
	}
	if _, ok := c.(Bootstrap); !ok && !m.Bootstrapped() {
		return m, fmt.Errorf("%v: %w", c.Kind(), ErrNotBootstrapped)
	}
	t := &txn{m: new(Map), own: make(map[any]struct{})}
	*t.m = *m
	var err error
	switch c := c.(type) {
	case Bootstrap:
		err = t.bootstrap(c)
	case MemberJoin:
		err = t.memberJoin(c)
	case MemberAlive:
		err = t.memberAlive(c)
	case MemberDead:
		err = t.memberDead(c)
	case MemberDrain:
		err = t.memberDrain(c)
	case MemberLeave:
		err = t.memberLeave(c)
	case Tick:
		t.tick(c)
	case AssignSlots:
		err = t.assignSlots(c)
	case ISRChange:
		err = t.isrChange(c)
	case MoveStart:
		err = t.moveStart(c)
	case MoveProgress:
		err = t.moveProgress(c)
	case MoveDone:
		err = t.moveDone(c)
	case MoveAbort:
		err = t.moveAbort(c)
	case LeaderTransfer:
		err = t.leaderTransfer(c)
	case ElectLeaders:
		err = t.electLeaders(c)
	case RemoveReplica:
		err = t.removeReplica(c)
	case CreateTopic:
		err = t.createTopic(c)
	case DeleteTopic:
		err = t.deleteTopic(c)
	case ReassignPartition:
		err = t.reassignPartition(c)
	case SetTopicConfig:
		err = t.setTopicConfig(c)
	case AddPartitions:
		err = t.addPartitions(c)
	default:
		err = fmt.Errorf("command %T: %w", c, ErrBadCommand)
	}
	if err != nil {
		return m, err
	}
	if !t.changed {
		return m, nil
	}
	t.forgetLeft(c)
	t.m.Version = m.Version + 1
	return t.m, nil
}

// txn builds the next map copy-on-write: slices and structs are cloned
// the first time a command writes to them, so a command touching one
// slot copies one group and the slot table's pointers, not the map.
type txn struct {
	m       *Map
	changed bool
	// ownMembers, ownSlots and ownTopics say the top-level slice was
	// already cloned in this transaction.
	ownMembers, ownSlots, ownTopics bool
	// own holds the members, groups and topics cloned in this transaction.
	own map[any]struct{}
}

func (t *txn) member(id string) *Member { return t.m.Member(id) }

// memberW returns a writable copy of member index i.
func (t *txn) memberW(i int) *Member {
	t.changed = true
	if !t.ownMembers {
		t.m.Members = slices.Clone(t.m.Members)
		t.ownMembers = true
	}
	mb := t.m.Members[i]
	if _, ok := t.own[mb]; !ok {
		mb = mb.clone()
		t.m.Members[i] = mb
		t.own[mb] = struct{}{}
	}
	return mb
}

// topicW returns a writable copy of topic index i (its partition slice
// cloned, the partitions themselves not).
func (t *txn) topicW(i int) *Topic {
	t.changed = true
	if !t.ownTopics {
		t.m.Topics = slices.Clone(t.m.Topics)
		t.ownTopics = true
	}
	tp := t.m.Topics[i]
	if _, ok := t.own[tp]; !ok {
		tp = tp.clone()
		t.m.Topics[i] = tp
		t.own[tp] = struct{}{}
	}
	return tp
}

// groupW returns a writable copy of the group r names, which must exist.
func (t *txn) groupW(r Ref) *Group {
	t.changed = true
	var slot **Group
	if r.Topic == "" {
		if !t.ownSlots {
			t.m.slots = slices.Clone(t.m.slots)
			t.ownSlots = true
		}
		ci := r.Index / slotChunkSize
		c := t.m.slots[ci]
		if _, ok := t.own[c]; !ok {
			cc := *c
			c = &cc
			t.m.slots[ci] = c
			t.own[c] = struct{}{}
		}
		slot = &c[r.Index%slotChunkSize]
	} else {
		i, _ := t.m.topicIndex(r.Topic)
		slot = &t.topicW(i).Partitions[r.Index]
	}
	g := *slot
	if _, ok := t.own[g]; !ok {
		g = g.clone()
		*slot = g
		t.own[g] = struct{}{}
	}
	return g
}

// group returns the group r names (read-only), refusing unknown refs.
func (t *txn) group(r Ref) (*Group, error) { return t.m.Group(r) }

// assigned returns the group r names, refusing an unassigned slot.
func (t *txn) assigned(r Ref) (*Group, error) {
	g, err := t.group(r)
	if err != nil {
		return nil, err
	}
	if len(g.Replicas) == 0 {
		return nil, fmt.Errorf("%v: %w", r, ErrUnassigned)
	}
	return g, nil
}

func checkID(what, id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%s %q: must be 1 to %d bytes: %w", what, id, maxIDLen, ErrBadCommand)
	}
	return nil
}

// knownMember returns the member id, refusing unknown and left members.
func (t *txn) knownMember(id string) (int, *Member, error) {
	if err := checkID("member id", id); err != nil {
		return 0, nil, err
	}
	i, ok := t.m.memberIndex(id)
	if !ok {
		return 0, nil, fmt.Errorf("member %q: %w", id, ErrUnknownMember)
	}
	mb := t.m.Members[i]
	if mb.State == StateLeft {
		return 0, nil, fmt.Errorf("member %q: %w", id, ErrMemberLeft)
	}
	return i, mb, nil
}

// eligible refuses a member that may not take a new replica or leadership.
func (t *txn) eligible(id string) error {
	_, mb, err := t.knownMember(id)
	if err != nil {
		return err
	}
	switch {
	case !mb.Alive():
		return fmt.Errorf("member %q is %v: %w", id, mb.State, ErrMemberNotAlive)
	case mb.Draining:
		return fmt.Errorf("member %q: %w", id, ErrMemberDraining)
	case !mb.HasRole(RoleData):
		return fmt.Errorf("member %q: %w", id, ErrNotDataMember)
	}
	return nil
}

// checkReplicaList refuses a replica list that is empty, too long,
// repeats a member or names one that may not take a replica.
func (t *txn) checkReplicaList(what string, ids []string) error {
	if len(ids) == 0 || len(ids) > maxReplicas {
		return fmt.Errorf("%s: %d replicas, want 1 to %d: %w", what, len(ids), maxReplicas, ErrBadAssignment)
	}
	for i, id := range ids {
		if slices.Contains(ids[:i], id) {
			return fmt.Errorf("%s: member %q twice: %w", what, id, ErrBadAssignment)
		}
		if err := t.eligible(id); err != nil {
			return fmt.Errorf("%s: %w: %w", what, ErrBadAssignment, err)
		}
	}
	return nil
}

func (t *txn) bootstrap(c Bootstrap) error {
	if t.m.Bootstrapped() {
		return fmt.Errorf("cluster %q: %w", t.m.ClusterID, ErrBootstrapped)
	}
	if err := checkID("cluster id", c.ClusterID); err != nil {
		return err
	}
	s := Settings{Replicas: c.Replicas, RebuildAfter: c.RebuildAfter}
	if s.Replicas == 0 {
		s.Replicas = DefaultReplicas
	}
	if s.RebuildAfter == 0 {
		s.RebuildAfter = DefaultRebuildAfter
	}
	if s.Replicas < 1 || s.Replicas > maxReplicas {
		return fmt.Errorf("replicas %d, want 1 to %d: %w", c.Replicas, maxReplicas, ErrBadConfig)
	}
	if s.RebuildAfter < 0 {
		return fmt.Errorf("rebuild after %v: %w", c.RebuildAfter, ErrBadConfig)
	}
	t.m.ClusterID = c.ClusterID
	t.m.Settings = s
	groups := make([]Group, NumSlots)
	chunks := make([]slotChunk, NumSlots/slotChunkSize)
	t.m.slots = make([]*slotChunk, len(chunks))
	for i := range groups {
		chunks[i/slotChunkSize][i%slotChunkSize] = &groups[i]
	}
	for i := range chunks {
		t.m.slots[i] = &chunks[i]
	}
	t.changed = true
	return nil
}

func normalizeRoles(roles []string) ([]string, error) {
	if len(roles) > maxRoles {
		return nil, fmt.Errorf("%d roles, at most %d: %w", len(roles), maxRoles, ErrBadCommand)
	}
	out := slices.Clone(roles)
	for _, r := range out {
		if r == "" || len(r) > maxIDLen {
			return nil, fmt.Errorf("role %q: %w", r, ErrBadCommand)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (t *txn) memberJoin(c MemberJoin) error {
	if err := checkID("member id", c.ID); err != nil {
		return err
	}
	if c.Addr == "" || len(c.Addr) > maxAddrLen {
		return fmt.Errorf("member %q: address %q: %w", c.ID, c.Addr, ErrBadCommand)
	}
	if len(c.DC) > maxIDLen {
		return fmt.Errorf("member %q: dc of %d bytes: %w", c.ID, len(c.DC), ErrBadCommand)
	}
	roles, err := normalizeRoles(c.Roles)
	if err != nil {
		return fmt.Errorf("member %q: %w", c.ID, err)
	}
	i, ok := t.m.memberIndex(c.ID)
	if !ok {
		if !t.ownMembers {
			t.m.Members = slices.Clone(t.m.Members)
			t.ownMembers = true
		}
		mb := &Member{ID: c.ID, Addr: c.Addr, DC: c.DC, Roles: roles, State: StateAlive, Since: c.At, JoinedAt: c.At}
		t.m.Members = slices.Insert(t.m.Members, i, mb)
		t.own[mb] = struct{}{}
		t.changed = true
		return nil
	}
	old := t.m.Members[i]
	wasUp := old.Alive()
	same := old.Addr == c.Addr && old.DC == c.DC && slices.Equal(old.Roles, roles)
	if wasUp && same {
		return nil
	}
	mb := t.memberW(i)
	mb.Addr, mb.DC, mb.Roles = c.Addr, c.DC, roles
	if old.State == StateLeft {
		// A new life: a member that left is not draining any more.
		mb.Draining, mb.Restarting = false, false
		mb.JoinedAt = c.At
	}
	if !wasUp {
		mb.State = StateAlive
		mb.Since = c.At
		t.onUp(c.ID)
	}
	return nil
}

func (t *txn) memberAlive(c MemberAlive) error {
	i, mb, err := t.knownMember(c.ID)
	if err != nil {
		return err
	}
	if mb.Alive() {
		return nil
	}
	w := t.memberW(i)
	w.State = StateAlive
	w.Since = c.At
	t.onUp(c.ID)
	return nil
}

func (t *txn) memberDead(c MemberDead) error {
	if err := checkID("member id", c.ID); err != nil {
		return err
	}
	i, ok := t.m.memberIndex(c.ID)
	if !ok {
		return fmt.Errorf("member %q: %w", c.ID, ErrUnknownMember)
	}
	if !t.m.Members[i].Alive() {
		// Dead, gone or left already: a repeated report changes nothing.
		return nil
	}
	w := t.memberW(i)
	w.State = StateDead
	w.Since = c.At
	t.onDown(c.ID)
	return nil
}

func (t *txn) memberDrain(c MemberDrain) error {
	i, mb, err := t.knownMember(c.ID)
	if err != nil {
		return err
	}
	draining, restarting := !c.Cancel && !c.Leaders, !c.Cancel && c.Leaders
	if mb.Draining && restarting {
		return nil // a full drain goes on: its leaderships move anyway
	}
	if mb.Draining == draining && mb.Restarting == restarting {
		return nil
	}
	w := t.memberW(i)
	w.Draining, w.Restarting = draining, restarting
	return nil
}

func (t *txn) memberLeave(c MemberLeave) error {
	if err := checkID("member id", c.ID); err != nil {
		return err
	}
	i, ok := t.m.memberIndex(c.ID)
	if !ok {
		return fmt.Errorf("member %q: %w", c.ID, ErrUnknownMember)
	}
	mb := t.m.Members[i]
	if mb.State == StateLeft {
		return nil
	}
	wasUp := mb.Alive()
	w := t.memberW(i)
	w.State = StateLeft
	w.Since = c.At
	if wasUp {
		t.onDown(c.ID)
	}
	return nil
}

func (t *txn) tick(c Tick) {
	after := int64(t.m.Settings.RebuildAfter)
	for i, mb := range t.m.Members {
		if mb.State != StateDead || c.Now <= mb.Since {
			continue
		}
		// Now-Since can overflow for absurd clocks; a wrapped (negative)
		// difference is then the longest of absences.
		if d := c.Now - mb.Since; d >= after || d < 0 {
			t.memberW(i).State = StateGone
		}
	}
}

// onDown runs when member id stops being alive: its leaderships fail
// over and it leaves every in-sync set, except where it is the last
// in-sync replica of a group left leaderless (then it is the only clean
// candidate when it returns).
func (t *txn) onDown(id string) {
	t.m.eachGroup(func(r Ref, g *Group) {
		if !g.HasReplica(id) {
			return
		}
		switch {
		case g.Leader == id:
			t.failover(r)
		case g.Leader != "" && g.InSync(id):
			w := t.groupW(r)
			w.ISR = remove(w.ISR, id)
		}
	})
}

// onUp runs when member id is alive again: a leaderless group it is the
// last in-sync replica of gets it as leader (or, where unclean election
// is allowed, any leaderless group it holds). Elsewhere it stays out of
// sync until its leader reports it caught up.
func (t *txn) onUp(id string) {
	t.m.eachGroup(func(r Ref, g *Group) {
		if g.Leader != "" || !g.HasReplica(id) {
			return
		}
		if g.InSync(id) || t.m.unclean(r) {
			t.elect(r)
		}
	})
}

// failover replaces a leader that is no longer alive.
func (t *txn) failover(r Ref) {
	w := t.groupW(r)
	old := w.Leader
	w.Leader = ""
	w.Epoch++
	if next := t.candidate(w, w.ISR, old); next != "" {
		w.Leader = next
		w.ISR = remove(w.ISR, old)
		return
	}
	if t.m.unclean(r) {
		if next := t.candidate(w, w.Replicas, old); next != "" {
			w.Leader = next
			w.ISR = []string{next}
		}
	}
	// Otherwise leaderless, with the old leader kept in the in-sync set:
	// it holds every acknowledged write, and leads again when it returns.
}

// elect gives a leaderless group a leader if one is allowed: an in-sync
// replica that is alive, or with unclean election any live replica.
func (t *txn) elect(r Ref) {
	g, _ := t.group(r)
	next := t.candidate(g, g.ISR, "")
	unclean := false
	if next == "" && t.m.unclean(r) {
		next = t.candidate(g, g.Replicas, "")
		unclean = true
	}
	if next == "" {
		return
	}
	w := t.groupW(r)
	w.Leader = next
	w.Epoch++
	if unclean {
		w.ISR = []string{next}
	} else {
		w.ISR = t.aliveOf(w.ISR)
	}
}

// candidate picks a leader among ids (not except): a live member that is
// eligible if there is one, else a live draining one; in replica order,
// so the preferred leader wins ties.
func (t *txn) candidate(g *Group, ids []string, except string) string {
	fallback := ""
	for _, id := range g.Replicas {
		if id == except || !slices.Contains(ids, id) {
			continue
		}
		mb := t.member(id)
		if mb == nil || !mb.Alive() {
			continue
		}
		if mb.Eligible() {
			return id
		}
		if fallback == "" {
			fallback = id
		}
	}
	return fallback
}

func (t *txn) aliveOf(ids []string) []string {
	out := ids[:0:0]
	for _, id := range ids {
		if mb := t.member(id); mb != nil && mb.Alive() {
			out = append(out, id)
		}
	}
	return out
}

// inReplicaOrder returns the members of set in g's replica order, the
// canonical order of an in-sync set.
func inReplicaOrder(g *Group, set []string) []string {
	out := make([]string, 0, len(set))
	for _, id := range g.Replicas {
		if slices.Contains(set, id) {
			out = append(out, id)
		}
	}
	return out
}

func remove(ids []string, id string) []string {
	i := slices.Index(ids, id)
	if i < 0 {
		return ids
	}
	return slices.Delete(slices.Clone(ids), i, i+1)
}

func (t *txn) assignSlots(c AssignSlots) error {
	if len(c.Replicas) != NumSlots {
		return fmt.Errorf("assign slots: %d lists, want %d: %w", len(c.Replicas), NumSlots, ErrBadAssignment)
	}
	for i := range NumSlots {
		if len(t.m.Slot(i).Replicas) != 0 {
			return fmt.Errorf("assign slots: %w", ErrSlotsAssigned)
		}
	}
	for i, ids := range c.Replicas {
		if err := t.checkReplicaList(SlotRef(i).String(), ids); err != nil {
			return err
		}
	}
	for i, ids := range c.Replicas {
		w := t.groupW(SlotRef(i))
		*w = Group{Replicas: slices.Clone(ids), Leader: ids[0], Epoch: 1, ISR: slices.Clone(ids)}
	}
	return nil
}

func (t *txn) isrChange(c ISRChange) error {
	g, err := t.assigned(c.Ref)
	if err != nil {
		return err
	}
	if g.Leader == "" {
		return fmt.Errorf("%v: isr change: %w", c.Ref, ErrNoLeader)
	}
	if c.Epoch != g.Epoch {
		return fmt.Errorf("%v: isr change at epoch %d, current %d: %w", c.Ref, c.Epoch, g.Epoch, ErrStaleEpoch)
	}
	if c.From != nil && !sameSet(c.From, g.ISR) {
		return fmt.Errorf("%v: isr change from %v, current %v: %w", c.Ref, c.From, g.ISR, ErrStaleISR)
	}
	if len(c.ISR) == 0 || len(c.ISR) > len(g.Replicas) {
		return fmt.Errorf("%v: isr of %d members: %w", c.Ref, len(c.ISR), ErrBadISR)
	}
	for i, id := range c.ISR {
		switch {
		case slices.Contains(c.ISR[:i], id):
			return fmt.Errorf("%v: member %q twice: %w", c.Ref, id, ErrBadISR)
		case !g.HasReplica(id):
			return fmt.Errorf("%v: member %q is not a replica: %w", c.Ref, id, ErrBadISR)
		}
		// A member the control plane saw die cannot be in sync, whatever
		// a leader that has not noticed yet reports.
		if mb := t.member(id); mb == nil || !mb.Alive() {
			return fmt.Errorf("%v: member %q is not alive: %w", c.Ref, id, ErrBadISR)
		}
	}
	if !slices.Contains(c.ISR, g.Leader) {
		return fmt.Errorf("%v: leader %q missing: %w", c.Ref, g.Leader, ErrBadISR)
	}
	isr := inReplicaOrder(g, c.ISR)
	if slices.Equal(isr, g.ISR) {
		return nil
	}
	t.groupW(c.Ref).ISR = isr
	return nil
}

// sameSet says whether a and b hold the same members, in any order.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, id := range a {
		if !slices.Contains(b, id) {
			return false
		}
	}
	return true
}

// theMove returns the group and its move, refusing when the move in
// progress is not the one named (a late report about an earlier move).
func (t *txn) theMove(r Ref, from, to string) (*Group, error) {
	g, err := t.assigned(r)
	if err != nil {
		return nil, err
	}
	if g.Move == nil {
		return nil, fmt.Errorf("%v: %w", r, ErrNoSuchMove)
	}
	if g.Move.From != from || g.Move.To != to {
		return nil, fmt.Errorf("%v: move %q->%q, in progress %q->%q: %w", r, from, to, g.Move.From, g.Move.To, ErrNoSuchMove)
	}
	return g, nil
}

func (t *txn) moveStart(c MoveStart) error {
	g, err := t.assigned(c.Ref)
	if err != nil {
		return err
	}
	if g.Move != nil {
		return fmt.Errorf("%v: %w", c.Ref, ErrMoveInProgress)
	}
	// The new replica copies from the leader: without one it cannot start.
	if g.Leader == "" {
		return fmt.Errorf("%v: move: %w", c.Ref, ErrNoLeader)
	}
	if c.From != "" && !g.HasReplica(c.From) {
		return fmt.Errorf("%v: move from %q, not a replica: %w", c.Ref, c.From, ErrBadAssignment)
	}
	if c.From == "" && len(g.Replicas) >= maxReplicas {
		return fmt.Errorf("%v: %d replicas already: %w", c.Ref, len(g.Replicas), ErrBadAssignment)
	}
	if err := checkID("move target", c.To); err != nil {
		return err
	}
	if g.HasReplica(c.To) {
		return fmt.Errorf("%v: move to %q, already a replica: %w", c.Ref, c.To, ErrBadAssignment)
	}
	if err := t.eligible(c.To); err != nil {
		return fmt.Errorf("%v: move to: %w", c.Ref, err)
	}
	w := t.groupW(c.Ref)
	w.Replicas = append(w.Replicas, c.To)
	if c.FromLatest && c.Ref.IsSlot() {
		return fmt.Errorf("%v: a slot's new replica copies the slot: %w", c.Ref, ErrBadCommand)
	}
	w.Move = &Move{From: c.From, To: c.To, Phase: PhaseCopying, FromLatest: c.FromLatest}
	return nil
}

func (t *txn) moveProgress(c MoveProgress) error {
	if c.Phase < PhaseCopying || c.Phase > PhaseSwitching {
		return fmt.Errorf("%v: phase %d: %w", c.Ref, c.Phase, ErrBadPhase)
	}
	g, err := t.theMove(c.Ref, c.From, c.To)
	if err != nil {
		return err
	}
	switch {
	case c.Phase == g.Move.Phase:
		return nil // a repeated report
	case c.Phase < g.Move.Phase:
		return fmt.Errorf("%v: move back from %v to %v: %w", c.Ref, g.Move.Phase, c.Phase, ErrBadPhase)
	case c.Phase == PhaseSwitching:
		if !g.InSync(c.To) {
			return fmt.Errorf("%v: switch to %q: %w", c.Ref, c.To, ErrNotInSync)
		}
	}
	w := t.groupW(c.Ref)
	w.Move.Phase = c.Phase
	if c.Phase != PhaseSwitching || c.From == "" {
		return nil
	}
	// To takes From's place in the preference order (so a preferred
	// leader election keeps To) and From waits at the end for MoveDone.
	swapToEnd(w, c.From, c.To)
	if w.Leader == c.From {
		w.Leader = c.To
		w.Epoch++
	}
	w.ISR = inReplicaOrder(w, w.ISR)
	return nil
}

// swapToEnd puts b where a is and a at the end.
func swapToEnd(w *Group, a, b string) {
	reps := remove(w.Replicas, b)
	i := slices.Index(reps, a)
	reps[i] = b
	w.Replicas = append(reps, a)
}

func (t *txn) moveDone(c MoveDone) error {
	g, err := t.theMove(c.Ref, c.From, c.To)
	if err != nil {
		return err
	}
	if g.Move.Phase != PhaseSwitching {
		return fmt.Errorf("%v: done while %v: %w", c.Ref, g.Move.Phase, ErrBadPhase)
	}
	if !g.InSync(c.To) {
		return fmt.Errorf("%v: done with %q: %w", c.Ref, c.To, ErrNotInSync)
	}
	w := t.groupW(c.Ref)
	w.Move = nil
	if c.From != "" {
		w.Replicas = remove(w.Replicas, c.From)
		w.ISR = remove(w.ISR, c.From)
		if w.Leader == c.From {
			// From won the leadership back by failover after the switch;
			// To is in sync and takes it.
			w.Leader = c.To
			w.Epoch++
		}
	}
	t.finishReassign(c.Ref)
	return nil
}

func (t *txn) moveAbort(c MoveAbort) error {
	g, err := t.theMove(c.Ref, c.From, c.To)
	if err != nil {
		return err
	}
	if slices.Equal(g.ISR, []string{c.To}) {
		return fmt.Errorf("%v: abort would drop %q: %w", c.Ref, c.To, ErrLastInSync)
	}
	w := t.groupW(c.Ref)
	if w.Move.Phase == PhaseSwitching && c.From != "" {
		// Give From its place back (To's, since the switch).
		w.Replicas = remove(w.Replicas, c.From)
		w.Replicas[slices.Index(w.Replicas, c.To)] = c.From
	}
	w.Move = nil
	w.Replicas = remove(w.Replicas, c.To)
	w.ISR = inReplicaOrder(w, remove(w.ISR, c.To))
	if w.Leader == c.To {
		t.failover(c.Ref)
	}
	return nil
}

func (t *txn) leaderTransfer(c LeaderTransfer) error {
	g, err := t.assigned(c.Ref)
	if err != nil {
		return err
	}
	if g.Leader == "" {
		return fmt.Errorf("%v: transfer: %w", c.Ref, ErrNoLeader)
	}
	if c.Epoch != g.Epoch {
		return fmt.Errorf("%v: transfer at epoch %d, current %d: %w", c.Ref, c.Epoch, g.Epoch, ErrStaleEpoch)
	}
	if g.Move != nil {
		return fmt.Errorf("%v: transfer: %w", c.Ref, ErrMoveInProgress)
	}
	if err := checkID("transfer target", c.To); err != nil {
		return err
	}
	if !g.InSync(c.To) {
		return fmt.Errorf("%v: transfer to %q: %w", c.Ref, c.To, ErrNotInSync)
	}
	if err := t.eligible(c.To); err != nil {
		return fmt.Errorf("%v: transfer to: %w", c.Ref, err)
	}
	if g.Leader == c.To {
		return nil
	}
	w := t.groupW(c.Ref)
	w.Leader = c.To
	w.Epoch++
	reps := remove(w.Replicas, c.To)
	w.Replicas = append([]string{c.To}, reps...)
	w.ISR = inReplicaOrder(w, w.ISR)
	return nil
}

func (t *txn) electLeaders(c ElectLeaders) error {
	if len(c.Refs) > maxElectRefs {
		return fmt.Errorf("elect leaders: %d refs: %w", len(c.Refs), ErrBadCommand)
	}
	for _, r := range c.Refs {
		if _, err := t.group(r); err != nil {
			return fmt.Errorf("elect leaders: %w", err)
		}
	}
	try := func(r Ref, g *Group) {
		if len(g.Replicas) == 0 || g.Move != nil {
			return
		}
		if g.Leader == "" {
			t.elect(r)
			return
		}
		p := g.Replicas[0]
		if p == g.Leader || !g.InSync(p) {
			return
		}
		if mb := t.member(p); mb == nil || !mb.Eligible() {
			return
		}
		w := t.groupW(r)
		w.Leader = p
		w.Epoch++
	}
	if len(c.Refs) == 0 {
		t.m.eachGroup(try)
		return nil
	}
	for _, r := range c.Refs {
		g, _ := t.group(r)
		try(r, g)
	}
	return nil
}

func (t *txn) removeReplica(c RemoveReplica) error {
	g, err := t.assigned(c.Ref)
	if err != nil {
		return err
	}
	switch {
	case !g.HasReplica(c.Member):
		return fmt.Errorf("%v: remove %q, not a replica: %w", c.Ref, c.Member, ErrBadAssignment)
	case g.Move != nil:
		return fmt.Errorf("%v: remove: %w", c.Ref, ErrMoveInProgress)
	case len(g.Replicas) == 1:
		return fmt.Errorf("%v: remove the only replica: %w", c.Ref, ErrBadAssignment)
	case g.Leader == c.Member:
		return fmt.Errorf("%v: remove %q: %w", c.Ref, c.Member, ErrIsLeader)
	case slices.Equal(g.ISR, []string{c.Member}):
		return fmt.Errorf("%v: remove %q: %w", c.Ref, c.Member, ErrLastInSync)
	}
	w := t.groupW(c.Ref)
	w.Replicas = remove(w.Replicas, c.Member)
	w.ISR = remove(w.ISR, c.Member)
	t.finishReassign(c.Ref)
	return nil
}

// finishReassign ends a reassignment once the replica set is the
// target's: the target's order becomes the preference order.
func (t *txn) finishReassign(r Ref) {
	g, _ := t.group(r)
	if g.Target == nil || g.Move != nil || len(g.Target) != len(g.Replicas) {
		return
	}
	for _, id := range g.Target {
		if !g.HasReplica(id) {
			return
		}
	}
	w := t.groupW(r)
	w.Replicas = w.Target
	w.Target, w.TargetFromLatest = nil, false
	w.ISR = inReplicaOrder(w, w.ISR)
}

func checkTopicName(name string) error {
	if name == "" || len(name) > maxTopicNameLen || name == "." || name == ".." {
		return fmt.Errorf("topic name %q: %w", name, ErrBadCommand)
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			return fmt.Errorf("topic name %q: character %q: %w", name, ch, ErrBadCommand)
		}
	}
	return nil
}

func (t *txn) createTopic(c CreateTopic) error {
	if err := checkTopicName(c.Name); err != nil {
		return err
	}
	i, exists := t.m.topicIndex(c.Name)
	if exists {
		return fmt.Errorf("topic %q: %w", c.Name, ErrTopicExists)
	}
	parts, cfg := c.Partitions, c.Config
	if len(c.Assignment) > 0 {
		if parts != 0 && parts != len(c.Assignment) {
			return fmt.Errorf("topic %q: %d partitions, %d assigned: %w", c.Name, parts, len(c.Assignment), ErrBadAssignment)
		}
		parts = len(c.Assignment)
		if cfg.ReplicationFactor == 0 {
			cfg.ReplicationFactor = len(c.Assignment[0])
		}
	}
	if parts < 1 || parts > maxPartitions {
		return fmt.Errorf("topic %q: %d partitions, want 1 to %d: %w", c.Name, parts, maxPartitions, ErrBadConfig)
	}
	elig := t.eligibleMembers()
	if cfg.ReplicationFactor == 0 {
		cfg.ReplicationFactor = min(t.m.Settings.Replicas, len(elig))
	}
	if cfg.MinInSyncReplicas == 0 {
		cfg.MinInSyncReplicas = min(defaultMinInSync, cfg.ReplicationFactor)
	}
	if len(elig) == 0 {
		return fmt.Errorf("topic %q: %w", c.Name, ErrNotEnoughMembers)
	}
	if err := checkTopicConfig(c.Name, cfg); err != nil {
		return err
	}
	if err := checkOverrides(c.Name, c.Overrides); err != nil {
		return err
	}
	assign, err := t.assignPartitions(c.Name, 0, parts, cfg.ReplicationFactor, c.Assignment, elig)
	if err != nil {
		return err
	}
	tp := &Topic{Name: c.Name, ID: t.m.Version + 1, Config: cfg, Overrides: maps.Clone(c.Overrides)}
	tp.Partitions = newPartitions(assign)
	if !t.ownTopics {
		t.m.Topics = slices.Clone(t.m.Topics)
		t.ownTopics = true
	}
	t.m.Topics = slices.Insert(t.m.Topics, i, tp)
	t.own[tp] = struct{}{}
	for _, g := range tp.Partitions {
		t.own[g] = struct{}{}
	}
	t.changed = true
	return nil
}

// assignPartitions returns the replica lists of partitions first to
// first+n-1 of topic name: assign checked, or spread over elig.
func (t *txn) assignPartitions(name string, first, n, rf int, assign [][]string, elig []string) ([][]string, error) {
	if len(assign) == 0 {
		if rf > len(elig) {
			return nil, fmt.Errorf("topic %q: replication factor %d, %d data members: %w", name, rf, len(elig), ErrNotEnoughMembers)
		}
		order, load := t.m.byLoad(elig)
		assign = spread(order, n, rf, load)
	}
	for p, ids := range assign {
		what := PartitionRef(name, first+p).String()
		if len(ids) != rf {
			return nil, fmt.Errorf("%s: %d replicas, replication factor %d: %w", what, len(ids), rf, ErrBadAssignment)
		}
		if err := t.checkReplicaList(what, ids); err != nil {
			return nil, err
		}
	}
	return assign, nil
}

// newPartitions makes the groups of new partitions: each led by its
// first replica, all in sync, at epoch 1.
func newPartitions(assign [][]string) []*Group {
	groups := make([]Group, len(assign))
	out := make([]*Group, len(assign))
	for p, ids := range assign {
		groups[p] = Group{Replicas: slices.Clone(ids), Leader: ids[0], Epoch: 1, ISR: slices.Clone(ids)}
		out[p] = &groups[p]
	}
	return out
}

// addPartitions grows a topic.
func (t *txn) addPartitions(c AddPartitions) error {
	i, ok := t.m.topicIndex(c.Name)
	if !ok {
		return fmt.Errorf("topic %q: %w", c.Name, ErrUnknownTopic)
	}
	cur := t.m.Topics[i]
	have := len(cur.Partitions)
	if c.Count <= have || c.Count > maxPartitions {
		return fmt.Errorf("topic %q: %d partitions, want more than %d and at most %d: %w", c.Name, c.Count, have, maxPartitions, ErrBadConfig)
	}
	if len(c.Assignment) > 0 && len(c.Assignment) != c.Count-have {
		return fmt.Errorf("topic %q: %d new partitions, %d assigned: %w", c.Name, c.Count-have, len(c.Assignment), ErrBadAssignment)
	}
	assign, err := t.assignPartitions(c.Name, have, c.Count-have, cur.Config.ReplicationFactor, c.Assignment, t.eligibleMembers())
	if err != nil {
		return err
	}
	tp := t.topicW(i)
	tp.Partitions = append(tp.Partitions, newPartitions(assign)...)
	for _, g := range tp.Partitions[have:] {
		t.own[g] = struct{}{}
	}
	return nil
}

// Limits of a topic's overrides: Kafka's config names are short, and the
// map is in every runtime's memory.
const (
	maxOverrides        = 64
	maxOverrideNameLen  = 255
	maxOverrideValueLen = 1024
)

func checkOverrides(name string, o map[string]string) error {
	if len(o) > maxOverrides {
		return fmt.Errorf("topic %q: %d configs, at most %d: %w", name, len(o), maxOverrides, ErrBadConfig)
	}
	for k, v := range o {
		if k == "" || len(k) > maxOverrideNameLen || len(v) > maxOverrideValueLen {
			return fmt.Errorf("topic %q: config %.40q of %d bytes, value of %d: %w", name, k, len(k), len(v), ErrBadConfig)
		}
	}
	return nil
}

func checkTopicConfig(name string, cfg TopicConfig) error {
	if cfg.ReplicationFactor < 1 || cfg.ReplicationFactor > maxReplicas {
		return fmt.Errorf("topic %q: replication factor %d, want 1 to %d: %w", name, cfg.ReplicationFactor, maxReplicas, ErrBadConfig)
	}
	if cfg.MinInSyncReplicas < 1 || cfg.MinInSyncReplicas > cfg.ReplicationFactor {
		return fmt.Errorf("topic %q: min.insync.replicas %d, replication factor %d: %w", name, cfg.MinInSyncReplicas, cfg.ReplicationFactor, ErrBadConfig)
	}
	return nil
}

// eligibleMembers returns the ids of the members that may take replicas.
func (t *txn) eligibleMembers() []string {
	var out []string
	for _, mb := range t.m.Members {
		if mb.Eligible() {
			out = append(out, mb.ID)
		}
	}
	return out
}

func (t *txn) deleteTopic(c DeleteTopic) error {
	i, ok := t.m.topicIndex(c.Name)
	if !ok {
		return fmt.Errorf("topic %q: %w", c.Name, ErrUnknownTopic)
	}
	if !t.ownTopics {
		t.m.Topics = slices.Clone(t.m.Topics)
		t.ownTopics = true
	}
	t.m.Topics = slices.Delete(t.m.Topics, i, i+1)
	t.changed = true
	return nil
}

func (t *txn) reassignPartition(c ReassignPartition) error {
	r := PartitionRef(c.Topic, c.Partition)
	if c.Topic == "" {
		return fmt.Errorf("reassign: topic name empty: %w", ErrBadCommand)
	}
	g, err := t.group(r)
	if err != nil {
		return err
	}
	if len(c.Replicas) == 0 {
		if g.Target != nil {
			w := t.groupW(r)
			w.Target, w.TargetFromLatest = nil, false
		}
		return nil
	}
	rf := t.m.Topic(c.Topic).Config.ReplicationFactor
	if len(c.Replicas) != rf {
		return fmt.Errorf("%v: %d replicas, replication factor %d: %w", r, len(c.Replicas), rf, ErrBadAssignment)
	}
	if err := t.checkReplicaList(r.String(), c.Replicas); err != nil {
		return err
	}
	if slices.Equal(g.Replicas, c.Replicas) && g.Target == nil {
		return nil
	}
	w := t.groupW(r)
	w.Target, w.TargetFromLatest = slices.Clone(c.Replicas), c.FromLatest
	t.finishReassign(r)
	return nil
}

func (t *txn) setTopicConfig(c SetTopicConfig) error {
	i, ok := t.m.topicIndex(c.Name)
	if !ok {
		return fmt.Errorf("topic %q: %w", c.Name, ErrUnknownTopic)
	}
	old := t.m.Topics[i].Config
	cfg := old
	if c.ReplicationFactor != 0 {
		cfg.ReplicationFactor = c.ReplicationFactor
	}
	if c.MinInSyncReplicas != 0 {
		cfg.MinInSyncReplicas = c.MinInSyncReplicas
	}
	if c.UncleanLeaderElection != nil {
		cfg.UncleanLeaderElection = *c.UncleanLeaderElection
	}
	if err := checkTopicConfig(c.Name, cfg); err != nil {
		return err
	}
	if cfg.ReplicationFactor > old.ReplicationFactor && cfg.ReplicationFactor > t.m.capacity() {
		return fmt.Errorf("topic %q: replication factor %d, %d data members: %w", c.Name, cfg.ReplicationFactor, t.m.capacity(), ErrNotEnoughMembers)
	}
	overrides := t.m.Topics[i].Overrides
	if c.ReplaceOverrides {
		if err := checkOverrides(c.Name, c.Overrides); err != nil {
			return err
		}
		overrides = c.Overrides
	}
	if cfg == old && maps.Equal(overrides, t.m.Topics[i].Overrides) {
		return nil
	}
	tp := t.topicW(i)
	tp.Config = cfg
	tp.Overrides = maps.Clone(overrides)
	for p, g := range tp.Partitions {
		r := PartitionRef(c.Name, p)
		if g.Target != nil && len(g.Target) != cfg.ReplicationFactor {
			// A reassignment to the old factor no longer fits.
			w := t.groupW(r)
			w.Target, w.TargetFromLatest = nil, false
		}
		if cfg.UncleanLeaderElection && g.Leader == "" {
			t.elect(r)
		}
	}
	return nil
}

// forgetLeft drops the members that left and hold nothing more, so a
// fleet that churns through members does not grow the map forever.
// Only commands that drop a replica or a target (or a leave) can free a
// member, so only they pay for the scan.
func (t *txn) forgetLeft(c Command) {
	switch c.(type) {
	case MemberLeave, MoveDone, MoveAbort, RemoveReplica, DeleteTopic, ReassignPartition, SetTopicConfig:
	default:
		return
	}
	var left []string
	for _, mb := range t.m.Members {
		if mb.State == StateLeft {
			left = append(left, mb.ID)
		}
	}
	if len(left) == 0 {
		return
	}
	held := make([]bool, len(left))
	free := len(left)
	mark := func(ids []string) {
		for _, id := range ids {
			if i := slices.Index(left, id); i >= 0 && !held[i] {
				held[i] = true
				free--
			}
		}
	}
	t.m.eachGroup(func(_ Ref, g *Group) {
		if free > 0 {
			mark(g.Replicas)
			mark(g.Target)
		}
	})
	if free == 0 {
		return
	}
	keep := t.m.Members[:0:0]
	for _, mb := range t.m.Members {
		if i := slices.Index(left, mb.ID); i >= 0 && !held[i] {
			continue
		}
		keep = append(keep, mb)
	}
	t.m.Members = keep
	t.ownMembers = true
}
