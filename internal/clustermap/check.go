package clustermap

import (
	"fmt"
	"slices"
)

// Check verifies the invariants every map Apply returns keeps, and
// returns the first one broken (wrapping ErrCorrupt). DecodeMap runs it
// on snapshots; tests run it after every command.
//
//   - members are sorted by id, distinct, with a valid state; a member
//     that left still holds a replica or is in a reassignment target;
//   - a bootstrapped map has exactly NumSlots slots; topics are sorted,
//     distinct, valid, with at least one partition;
//   - an unassigned slot has nothing else set; every other group has
//     distinct replicas that are known members, an epoch of at least 1,
//     and a non-empty in-sync set that is a subset of the replicas, in
//     replica order;
//   - a group with a leader has it in the in-sync set, and every in-sync
//     member alive; a leaderless group has no live in-sync member (else
//     it would have one elected) and, where unclean election is on, no
//     live replica at all;
//   - a move names two different replicas (or only To, for an added
//     replica) and a valid phase.
func (m *Map) Check() error {
	if m == nil {
		return fmt.Errorf("nil map: %w", ErrCorrupt)
	}
	if !m.Bootstrapped() {
		if m.Version != 0 || len(m.Members) != 0 || len(m.slots) != 0 || len(m.Topics) != 0 {
			return fmt.Errorf("not bootstrapped but not empty: %w", ErrCorrupt)
		}
		return nil
	}
	if m.Settings.Replicas < 1 || m.Settings.Replicas > maxReplicas || m.Settings.RebuildAfter < 0 {
		return fmt.Errorf("settings %+v: %w", m.Settings, ErrCorrupt)
	}
	for i, mb := range m.Members {
		if mb == nil || mb.ID == "" {
			return fmt.Errorf("member %d missing: %w", i, ErrCorrupt)
		}
		if i > 0 && m.Members[i-1].ID >= mb.ID {
			return fmt.Errorf("members %q, %q out of order: %w", m.Members[i-1].ID, mb.ID, ErrCorrupt)
		}
		if mb.State < StateAlive || mb.State > StateLeft {
			return fmt.Errorf("member %q: state %d: %w", mb.ID, mb.State, ErrCorrupt)
		}
		if !slices.IsSorted(mb.Roles) || len(slices.Compact(slices.Clone(mb.Roles))) != len(mb.Roles) {
			return fmt.Errorf("member %q: roles %q: %w", mb.ID, mb.Roles, ErrCorrupt)
		}
	}
	if len(m.slots) != NumSlots/slotChunkSize || slices.Contains(m.slots, nil) {
		return fmt.Errorf("slot table of %d chunks: %w", len(m.slots), ErrCorrupt)
	}
	for i, tp := range m.Topics {
		if tp == nil {
			return fmt.Errorf("topic %d missing: %w", i, ErrCorrupt)
		}
		if i > 0 && m.Topics[i-1].Name >= tp.Name {
			return fmt.Errorf("topics %q, %q out of order: %w", m.Topics[i-1].Name, tp.Name, ErrCorrupt)
		}
		if err := checkTopicName(tp.Name); err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if err := checkTopicConfig(tp.Name, tp.Config); err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if len(tp.Partitions) == 0 || len(tp.Partitions) > maxPartitions {
			return fmt.Errorf("topic %q: %d partitions: %w", tp.Name, len(tp.Partitions), ErrCorrupt)
		}
	}
	members := make(map[string]*Member, len(m.Members))
	for _, mb := range m.Members {
		members[mb.ID] = mb
	}
	held := make(map[string]bool, len(m.Members))
	var err error
	m.eachGroup(func(r Ref, g *Group) {
		if err == nil {
			err = m.checkGroup(r, g, members, held)
		}
	})
	if err != nil {
		return err
	}
	for _, mb := range m.Members {
		if mb.State == StateLeft && !held[mb.ID] {
			return fmt.Errorf("member %q left and holds nothing: %w", mb.ID, ErrCorrupt)
		}
	}
	return nil
}

func (m *Map) checkGroup(r Ref, g *Group, members map[string]*Member, held map[string]bool) error {
	if g == nil {
		return fmt.Errorf("%v missing: %w", r, ErrCorrupt)
	}
	if len(g.Replicas) == 0 {
		if r.Topic != "" || g.Leader != "" || g.Epoch != 0 || len(g.ISR) != 0 || g.Move != nil || g.Target != nil {
			return fmt.Errorf("%v: unassigned but %+v: %w", r, *g, ErrCorrupt)
		}
		return nil
	}
	if len(g.Replicas) > maxReplicas+1 {
		return corrupt(r, "%d replicas", len(g.Replicas))
	}
	for i, id := range g.Replicas {
		if slices.Contains(g.Replicas[:i], id) {
			return corrupt(r, "replica %q twice", id)
		}
		if members[id] == nil {
			return corrupt(r, "replica %q is not a member", id)
		}
		held[id] = true
	}
	for _, id := range g.Target {
		if members[id] == nil {
			return corrupt(r, "target %q is not a member", id)
		}
		held[id] = true
	}
	if g.Epoch == 0 {
		return corrupt(r, "epoch 0")
	}
	if len(g.ISR) == 0 {
		return corrupt(r, "empty in-sync set")
	}
	// The in-sync set is a subsequence of the replicas: one pass.
	k := 0
	for _, id := range g.Replicas {
		if k < len(g.ISR) && g.ISR[k] == id {
			k++
		}
	}
	if k != len(g.ISR) {
		return corrupt(r, "in-sync set %q not a subset of replicas %q in their order", g.ISR, g.Replicas)
	}
	aliveISR := 0
	for _, id := range g.ISR {
		if members[id].Alive() {
			aliveISR++
		}
	}
	if g.Leader != "" {
		if !g.InSync(g.Leader) {
			return corrupt(r, "leader %q not in sync %q", g.Leader, g.ISR)
		}
		if aliveISR != len(g.ISR) {
			return corrupt(r, "in-sync set %q has a member that is not alive", g.ISR)
		}
	} else {
		if aliveISR > 0 {
			return corrupt(r, "leaderless with a live in-sync member %q", g.ISR)
		}
		if m.unclean(r) {
			for _, id := range g.Replicas {
				if members[id].Alive() {
					return corrupt(r, "leaderless with unclean election on and live replica %q", id)
				}
			}
		}
	}
	if mv := g.Move; mv != nil {
		if mv.Phase < PhaseCopying || mv.Phase > PhaseSwitching {
			return corrupt(r, "move phase %d", mv.Phase)
		}
		if !g.HasReplica(mv.To) || mv.From == mv.To || (mv.From != "" && !g.HasReplica(mv.From)) {
			return corrupt(r, "move %q->%q with replicas %q", mv.From, mv.To, g.Replicas)
		}
	} else if len(g.Replicas) > maxReplicas {
		return corrupt(r, "%d replicas", len(g.Replicas))
	}
	return nil
}

func corrupt(r Ref, format string, args ...any) error {
	return fmt.Errorf("%v: %s: %w", r, fmt.Sprintf(format, args...), ErrCorrupt)
}
