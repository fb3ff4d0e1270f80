package clustermap

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// base is the map the table tests start from: members a, b, c, d (data
// role), slot i holding rotation i%4 of [a b c], [b c d], [c d a],
// [d a b], led by its first replica at epoch 1, and topic "t" with
// partitions laid out the same way.
func base(tb testing.TB) *Map {
	tb.Helper()
	f := newFleet(tb, PlanConfig{}, Bootstrap{ClusterID: "c1", RebuildAfter: time.Minute})
	f.join("a", "b", "c", "d")
	rot := [][]string{{"a", "b", "c"}, {"b", "c", "d"}, {"c", "d", "a"}, {"d", "a", "b"}}
	slots := make([][]string, NumSlots)
	for i := range slots {
		slots[i] = rot[i%4]
	}
	f.must(AssignSlots{Replicas: slots})
	f.must(CreateTopic{Name: "t", Assignment: rot})
	return f.m
}

func slot(m *Map, i int) *Group { return m.Slot(i) }

func part(m *Map, topic string, p int) *Group { return m.Topic(topic).Partitions[p] }

func want[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func wantIDs(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

var (
	s0 = SlotRef(0)
	s1 = SlotRef(1)
	p0 = PartitionRef("t", 0)
)

func ptr[T any](v T) *T { return &v }

// TestApply runs each command on base (after prep), checking the error
// it returns, that a refusal leaves the map as it was, and the result.
// A nil check with no error means "changes nothing".
func TestApply(t *testing.T) {
	tests := []struct {
		name  string
		prep  []Command
		cmd   Command
		err   error
		check func(t *testing.T, old, m *Map)
	}{
		// Bootstrap and members.
		{name: "bootstrap twice", cmd: Bootstrap{ClusterID: "c2"}, err: ErrBootstrapped},
		{name: "join", cmd: MemberJoin{ID: "bb", Addr: "h:1", Roles: []string{"data", "server", "data"}, At: 5}, check: func(t *testing.T, old, m *Map) {
			mb := m.Member("bb")
			want(t, "state", mb.State, StateAlive)
			wantIDs(t, "roles", mb.Roles, "data", "server")
			want(t, "joined", mb.JoinedAt, 5)
			want(t, "position", m.Members[2], mb)
		}},
		{name: "join again unchanged", cmd: MemberJoin{ID: "a", Addr: "a:7000", Roles: []string{"data"}, At: 9}},
		{name: "join with a new address", cmd: MemberJoin{ID: "a", Addr: "a:7001", Roles: []string{"data"}}, check: func(t *testing.T, old, m *Map) {
			want(t, "addr", m.Member("a").Addr, "a:7001")
			want(t, "slot 0 untouched", slot(m, 0), slot(old, 0))
		}},
		{name: "join empty id", cmd: MemberJoin{Addr: "h:1"}, err: ErrBadCommand},
		{name: "join empty address", cmd: MemberJoin{ID: "e"}, err: ErrBadCommand},
		{name: "join empty role", cmd: MemberJoin{ID: "e", Addr: "h", Roles: []string{""}}, err: ErrBadCommand},
		{name: "dead member joins again", prep: []Command{MemberDead{ID: "a", At: 1}}, cmd: MemberJoin{ID: "a", Addr: "a:7000", Roles: []string{"data"}, At: 2}, check: func(t *testing.T, old, m *Map) {
			want(t, "state", m.Member("a").State, StateAlive)
			want(t, "since", m.Member("a").Since, 2)
		}},
		{name: "alive unknown", cmd: MemberAlive{ID: "zz"}, err: ErrUnknownMember},
		{name: "alive when alive", cmd: MemberAlive{ID: "a"}},
		{name: "dead unknown", cmd: MemberDead{ID: "zz"}, err: ErrUnknownMember},
		{name: "dead leader fails over to the next in-sync replica", cmd: MemberDead{ID: "a", At: 7}, check: func(t *testing.T, old, m *Map) {
			want(t, "state", m.Member("a").State, StateDead)
			want(t, "since", m.Member("a").Since, 7)
			g := slot(m, 0) // [a b c]
			want(t, "leader", g.Leader, "b")
			want(t, "epoch", g.Epoch, 2)
			wantIDs(t, "isr", g.ISR, "b", "c")
			wantIDs(t, "replicas kept", g.Replicas, "a", "b", "c")
			g = slot(m, 2) // [c d a]: a follows
			want(t, "follower's group leader", g.Leader, "c")
			want(t, "follower's group epoch", g.Epoch, 1)
			wantIDs(t, "follower's group isr", g.ISR, "c", "d")
			want(t, "slot 1 untouched", slot(m, 1), slot(old, 1))
			want(t, "partition 0 leader", part(m, "t", 0).Leader, "b")
		}},
		{name: "dead twice", prep: []Command{MemberDead{ID: "a", At: 7}}, cmd: MemberDead{ID: "a", At: 8}},
		{name: "last in-sync leader dies: leaderless, never an out-of-sync leader",
			prep: []Command{ISRChange{Ref: s0, ISR: []string{"a"}, Epoch: 1}},
			cmd:  MemberDead{ID: "a"},
			check: func(t *testing.T, old, m *Map) {
				g := slot(m, 0)
				want(t, "leader", g.Leader, "")
				want(t, "epoch", g.Epoch, 2)
				wantIDs(t, "isr keeps the last in-sync replica", g.ISR, "a")
				if rep := m.Report(); !slices.Contains(rep.Leaderless, s0) {
					t.Errorf("report leaderless %v lacks slot 0", rep.Leaderless)
				}
			}},
		{name: "last in-sync replica returns and leads",
			prep: []Command{ISRChange{Ref: s0, ISR: []string{"a"}, Epoch: 1}, MemberDead{ID: "a"}},
			cmd:  MemberAlive{ID: "a", At: 9},
			check: func(t *testing.T, old, m *Map) {
				g := slot(m, 0)
				want(t, "leader", g.Leader, "a")
				want(t, "epoch", g.Epoch, 3)
			}},
		{name: "an out-of-sync replica returning does not lead",
			prep: []Command{ISRChange{Ref: s0, ISR: []string{"a"}, Epoch: 1}, MemberDead{ID: "b"}, MemberDead{ID: "a"}},
			cmd:  MemberAlive{ID: "b"},
			check: func(t *testing.T, old, m *Map) {
				want(t, "leader", slot(m, 0).Leader, "")
			}},
		{name: "unclean election when the topic allows it",
			prep: []Command{SetTopicConfig{Name: "t", UncleanLeaderElection: ptr(true)}, ISRChange{Ref: p0, ISR: []string{"a"}, Epoch: 1}},
			cmd:  MemberDead{ID: "a"},
			check: func(t *testing.T, old, m *Map) {
				g := part(m, "t", 0)
				want(t, "leader", g.Leader, "b")
				wantIDs(t, "isr", g.ISR, "b")
			}},
		{name: "no unclean election by default",
			prep: []Command{ISRChange{Ref: p0, ISR: []string{"a"}, Epoch: 1}},
			cmd:  MemberDead{ID: "a"},
			check: func(t *testing.T, old, m *Map) {
				want(t, "leader", part(m, "t", 0).Leader, "")
			}},
		{name: "unclean election turned on elects", prep: []Command{ISRChange{Ref: p0, ISR: []string{"a"}, Epoch: 1}, MemberDead{ID: "a"}},
			cmd: SetTopicConfig{Name: "t", UncleanLeaderElection: ptr(true)},
			check: func(t *testing.T, old, m *Map) {
				want(t, "leader", part(m, "t", 0).Leader, "b")
				want(t, "epoch", part(m, "t", 0).Epoch, 3)
			}},
		{name: "a draining replica leads only when nothing else can",
			prep: []Command{MemberDrain{ID: "b"}},
			cmd:  MemberDead{ID: "a"},
			check: func(t *testing.T, old, m *Map) {
				want(t, "leader", slot(m, 0).Leader, "c") // [a b c], b draining
			}},
		{name: "drain", cmd: MemberDrain{ID: "a"}, check: func(t *testing.T, old, m *Map) {
			want(t, "draining", m.Member("a").Draining, true)
			want(t, "leader stays until the planner moves it", slot(m, 0).Leader, "a")
		}},
		{name: "drain twice", prep: []Command{MemberDrain{ID: "a"}}, cmd: MemberDrain{ID: "a"}},
		{name: "drain cancelled", prep: []Command{MemberDrain{ID: "a"}}, cmd: MemberDrain{ID: "a", Cancel: true}, check: func(t *testing.T, old, m *Map) {
			want(t, "draining", m.Member("a").Draining, false)
		}},
		{name: "restart drain", cmd: MemberDrain{ID: "a", Leaders: true}, check: func(t *testing.T, old, m *Map) {
			want(t, "restarting", m.Member("a").Restarting, true)
			want(t, "draining", m.Member("a").Draining, false)
			want(t, "eligible", m.Member("a").Eligible(), false)
		}},
		{name: "a full drain stays full", prep: []Command{MemberDrain{ID: "a"}}, cmd: MemberDrain{ID: "a", Leaders: true}},
		{name: "restart drain cancelled", prep: []Command{MemberDrain{ID: "a", Leaders: true}}, cmd: MemberDrain{ID: "a", Cancel: true}, check: func(t *testing.T, old, m *Map) {
			want(t, "restarting", m.Member("a").Restarting, false)
			want(t, "eligible", m.Member("a").Eligible(), true)
		}},
		{name: "drain unknown", cmd: MemberDrain{ID: "zz"}, err: ErrUnknownMember},
		{name: "leave fails over", cmd: MemberLeave{ID: "a", At: 3}, check: func(t *testing.T, old, m *Map) {
			want(t, "state", m.Member("a").State, StateLeft)
			want(t, "leader", slot(m, 0).Leader, "b")
		}},
		{name: "a member holding nothing is forgotten when it leaves",
			prep: []Command{MemberJoin{ID: "e", Addr: "e", Roles: []string{"data"}}},
			cmd:  MemberLeave{ID: "e"},
			check: func(t *testing.T, old, m *Map) {
				if m.Member("e") != nil {
					t.Error("e still in the map")
				}
			}},
		{name: "alive after leaving", prep: []Command{MemberLeave{ID: "a"}}, cmd: MemberAlive{ID: "a"}, err: ErrMemberLeft},
		{name: "tick before the rebuild delay", prep: []Command{MemberDead{ID: "a", At: 100}}, cmd: Tick{Now: 100 + int64(time.Minute) - 1}},
		{name: "tick after the rebuild delay", prep: []Command{MemberDead{ID: "a", At: 100}}, cmd: Tick{Now: 100 + int64(time.Minute)}, check: func(t *testing.T, old, m *Map) {
			want(t, "state", m.Member("a").State, StateGone)
		}},

		// Slots.
		{name: "assign slots twice", cmd: AssignSlots{Replicas: Spread([]string{"a"}, NumSlots, 1)}, err: ErrSlotsAssigned},

		// In-sync sets.
		{name: "isr shrink", cmd: ISRChange{Ref: s0, ISR: []string{"c", "a"}, Epoch: 1}, check: func(t *testing.T, old, m *Map) {
			wantIDs(t, "isr in replica order", slot(m, 0).ISR, "a", "c")
		}},
		{name: "isr unchanged", cmd: ISRChange{Ref: s0, ISR: []string{"c", "b", "a"}, Epoch: 1}},
		{name: "isr change from the current set", cmd: ISRChange{Ref: s0, ISR: []string{"a", "b"}, Epoch: 1, From: []string{"c", "a", "b"}}, check: func(t *testing.T, old, m *Map) {
			if g := m.Slot(0); !slices.Equal(g.ISR, []string{"a", "b"}) {
				t.Fatalf("isr %v", g.ISR)
			}
		}},
		{name: "isr change from a set the map no longer holds", prep: []Command{ISRChange{Ref: s0, ISR: []string{"a", "b"}, Epoch: 1}},
			cmd: ISRChange{Ref: s0, ISR: []string{"a", "b", "c"}, Epoch: 1, From: []string{"a", "b", "c"}}, err: ErrStaleISR},
		{name: "isr stale epoch", prep: []Command{MemberDead{ID: "a"}}, cmd: ISRChange{Ref: s0, ISR: []string{"a", "b"}, Epoch: 1}, err: ErrStaleEpoch},
		{name: "isr without leader", cmd: ISRChange{Ref: s0, ISR: []string{"b"}, Epoch: 1}, err: ErrBadISR},
		{name: "isr with a non-replica", cmd: ISRChange{Ref: s0, ISR: []string{"a", "d"}, Epoch: 1}, err: ErrBadISR},
		{name: "isr with a dead member", prep: []Command{MemberDead{ID: "c"}}, cmd: ISRChange{Ref: s0, ISR: []string{"a", "c"}, Epoch: 1}, err: ErrBadISR},
		{name: "isr twice", cmd: ISRChange{Ref: s0, ISR: []string{"a", "a"}, Epoch: 1}, err: ErrBadISR},
		{name: "isr empty", cmd: ISRChange{Ref: s0, Epoch: 1}, err: ErrBadISR},
		{name: "isr unknown slot", cmd: ISRChange{Ref: SlotRef(NumSlots), ISR: []string{"a"}, Epoch: 1}, err: ErrUnknownSlot},
		{name: "isr negative slot", cmd: ISRChange{Ref: SlotRef(-1), ISR: []string{"a"}, Epoch: 1}, err: ErrUnknownSlot},
		{name: "isr unknown topic", cmd: ISRChange{Ref: PartitionRef("x", 0), ISR: []string{"a"}, Epoch: 1}, err: ErrUnknownTopic},
		{name: "isr unknown partition", cmd: ISRChange{Ref: PartitionRef("t", 4), ISR: []string{"a"}, Epoch: 1}, err: ErrUnknownPartition},
		{name: "isr of a leaderless slot", prep: []Command{ISRChange{Ref: s0, ISR: []string{"a"}, Epoch: 1}, MemberDead{ID: "a"}},
			cmd: ISRChange{Ref: s0, ISR: []string{"b"}, Epoch: 2}, err: ErrNoLeader},

		// Moves.
		{name: "move start", cmd: MoveStart{Ref: s0, From: "a", To: "d"}, check: func(t *testing.T, old, m *Map) {
			g := slot(m, 0)
			wantIDs(t, "replicas", g.Replicas, "a", "b", "c", "d")
			wantIDs(t, "isr", g.ISR, "a", "b", "c")
			want(t, "move", *g.Move, Move{From: "a", To: "d", Phase: PhaseCopying})
		}},
		{name: "move to a replica", cmd: MoveStart{Ref: s0, From: "a", To: "b"}, err: ErrBadAssignment},
		{name: "move from a non-replica", cmd: MoveStart{Ref: s0, From: "d", To: "d"}, err: ErrBadAssignment},
		{name: "move to unknown", cmd: MoveStart{Ref: s0, From: "a", To: "zz"}, err: ErrUnknownMember},
		{name: "move to draining", prep: []Command{MemberDrain{ID: "d"}}, cmd: MoveStart{Ref: s0, From: "a", To: "d"}, err: ErrMemberDraining},
		{name: "move to dead", prep: []Command{MemberDead{ID: "d"}}, cmd: MoveStart{Ref: s0, From: "a", To: "d"}, err: ErrMemberNotAlive},
		{name: "move to non-data", prep: []Command{MemberJoin{ID: "s", Addr: "s", Roles: []string{"server"}}}, cmd: MoveStart{Ref: s0, From: "a", To: "s"}, err: ErrNotDataMember},
		{name: "second move", prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}}, cmd: MoveStart{Ref: s0, From: "b", To: "d"}, err: ErrMoveInProgress},
		{name: "move without leader", prep: []Command{ISRChange{Ref: s0, ISR: []string{"a"}, Epoch: 1}, MemberDead{ID: "a"}},
			cmd: MoveStart{Ref: s0, From: "a", To: "d"}, err: ErrNoLeader},
		{name: "progress without move", cmd: MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseTailing}, err: ErrNoSuchMove},
		{name: "progress of another move", prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}},
			cmd: MoveProgress{Ref: s0, From: "b", To: "d", Phase: PhaseTailing}, err: ErrNoSuchMove},
		{name: "progress backwards", prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}, MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseTailing}},
			cmd: MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseCopying}, err: ErrBadPhase},
		{name: "progress repeated", prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}, MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseTailing}},
			cmd: MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseTailing}},
		{name: "progress to an unknown phase", prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}},
			cmd: MoveProgress{Ref: s0, From: "a", To: "d", Phase: 9}, err: ErrBadPhase},
		{name: "switch before in sync", prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}},
			cmd: MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseSwitching}, err: ErrNotInSync},
		{name: "switch hands the leadership over",
			prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}, ISRChange{Ref: s0, ISR: []string{"a", "b", "c", "d"}, Epoch: 1}},
			cmd:  MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseSwitching},
			check: func(t *testing.T, old, m *Map) {
				g := slot(m, 0)
				want(t, "leader", g.Leader, "d")
				want(t, "epoch", g.Epoch, 2)
				wantIDs(t, "replicas", g.Replicas, "d", "b", "c", "a")
				wantIDs(t, "isr", g.ISR, "d", "b", "c", "a")
			}},
		{name: "done before switching", prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}}, cmd: MoveDone{Ref: s0, From: "a", To: "d"}, err: ErrBadPhase},
		{name: "done",
			prep: []Command{MoveStart{Ref: s0, From: "b", To: "d"}, ISRChange{Ref: s0, ISR: []string{"a", "b", "c", "d"}, Epoch: 1}, MoveProgress{Ref: s0, From: "b", To: "d", Phase: PhaseSwitching}},
			cmd:  MoveDone{Ref: s0, From: "b", To: "d"},
			check: func(t *testing.T, old, m *Map) {
				g := slot(m, 0)
				wantIDs(t, "replicas", g.Replicas, "a", "d", "c")
				wantIDs(t, "isr", g.ISR, "a", "d", "c")
				want(t, "leader", g.Leader, "a")
				want(t, "epoch", g.Epoch, 1)
				if g.Move != nil {
					t.Error("move still set")
				}
			}},
		{name: "abort while copying", prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}}, cmd: MoveAbort{Ref: s0, From: "a", To: "d"},
			check: func(t *testing.T, old, m *Map) {
				g := slot(m, 0)
				wantIDs(t, "replicas", g.Replicas, "a", "b", "c")
				if g.Move != nil {
					t.Error("move still set")
				}
			}},
		{name: "abort after the switch gives the place and leadership back",
			prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}, ISRChange{Ref: s0, ISR: []string{"a", "b", "c", "d"}, Epoch: 1}, MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseSwitching}},
			cmd:  MoveAbort{Ref: s0, From: "a", To: "d"},
			check: func(t *testing.T, old, m *Map) {
				g := slot(m, 0)
				wantIDs(t, "replicas", g.Replicas, "a", "b", "c")
				want(t, "leader", g.Leader, "a")
				want(t, "epoch", g.Epoch, 3)
			}},
		{name: "abort dropping the last in-sync replica",
			prep: []Command{MoveStart{Ref: s0, From: "a", To: "d"}, ISRChange{Ref: s0, ISR: []string{"a", "d"}, Epoch: 1},
				MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseSwitching}, ISRChange{Ref: s0, ISR: []string{"d"}, Epoch: 2}},
			cmd: MoveAbort{Ref: s0, From: "a", To: "d"}, err: ErrLastInSync},
		{name: "add a replica", prep: []Command{MoveStart{Ref: s0, To: "d"}, ISRChange{Ref: s0, ISR: []string{"a", "b", "c", "d"}, Epoch: 1},
			MoveProgress{Ref: s0, To: "d", Phase: PhaseSwitching}},
			cmd: MoveDone{Ref: s0, To: "d"},
			check: func(t *testing.T, old, m *Map) {
				wantIDs(t, "replicas", slot(m, 0).Replicas, "a", "b", "c", "d")
			}},

		// Leaderships.
		{name: "transfer", cmd: LeaderTransfer{Ref: s0, To: "c", Epoch: 1}, check: func(t *testing.T, old, m *Map) {
			g := slot(m, 0)
			want(t, "leader", g.Leader, "c")
			want(t, "epoch", g.Epoch, 2)
			wantIDs(t, "replicas: the new leader is preferred", g.Replicas, "c", "a", "b")
			wantIDs(t, "isr in replica order", g.ISR, "c", "a", "b")
		}},
		{name: "transfer stale", prep: []Command{LeaderTransfer{Ref: s0, To: "c", Epoch: 1}}, cmd: LeaderTransfer{Ref: s0, To: "b", Epoch: 1}, err: ErrStaleEpoch},
		{name: "transfer out of sync", prep: []Command{ISRChange{Ref: s0, ISR: []string{"a", "b"}, Epoch: 1}}, cmd: LeaderTransfer{Ref: s0, To: "c", Epoch: 1}, err: ErrNotInSync},
		{name: "transfer to draining", prep: []Command{MemberDrain{ID: "c"}}, cmd: LeaderTransfer{Ref: s0, To: "c", Epoch: 1}, err: ErrMemberDraining},
		{name: "transfer during a move", prep: []Command{MoveStart{Ref: s0, From: "b", To: "d"}}, cmd: LeaderTransfer{Ref: s0, To: "c", Epoch: 1}, err: ErrMoveInProgress},
		{name: "preferred leader election", prep: []Command{MemberDead{ID: "a"}, MemberAlive{ID: "a"}, ISRChange{Ref: s0, ISR: []string{"a", "b", "c"}, Epoch: 2}},
			cmd: ElectLeaders{Refs: []Ref{s0, s1}},
			check: func(t *testing.T, old, m *Map) {
				want(t, "leader", slot(m, 0).Leader, "a")
				want(t, "epoch", slot(m, 0).Epoch, 3)
				want(t, "slot 1 untouched", slot(m, 1), slot(old, 1))
			}},
		{name: "preferred leader election out of sync", prep: []Command{MemberDead{ID: "a"}, MemberAlive{ID: "a"}}, cmd: ElectLeaders{}},
		{name: "elect unknown", cmd: ElectLeaders{Refs: []Ref{PartitionRef("x", 0)}}, err: ErrUnknownTopic},
		{name: "remove a follower", cmd: RemoveReplica{Ref: s0, Member: "c"}, check: func(t *testing.T, old, m *Map) {
			wantIDs(t, "replicas", slot(m, 0).Replicas, "a", "b")
			wantIDs(t, "isr", slot(m, 0).ISR, "a", "b")
		}},
		{name: "remove the leader", cmd: RemoveReplica{Ref: s0, Member: "a"}, err: ErrIsLeader},
		{name: "remove a non-replica", cmd: RemoveReplica{Ref: s0, Member: "d"}, err: ErrBadAssignment},
		{name: "remove during a move", prep: []Command{MoveStart{Ref: s0, From: "b", To: "d"}}, cmd: RemoveReplica{Ref: s0, Member: "c"}, err: ErrMoveInProgress},
		{name: "remove the last in-sync replica",
			prep: []Command{ISRChange{Ref: s0, ISR: []string{"a"}, Epoch: 1}, MemberDead{ID: "a"}},
			cmd:  RemoveReplica{Ref: s0, Member: "a"}, err: ErrLastInSync},

		// Topics.
		{name: "create", cmd: CreateTopic{Name: "u", Partitions: 8}, check: func(t *testing.T, old, m *Map) {
			tp := m.Topic("u")
			want(t, "rf", tp.Config.ReplicationFactor, 3)
			want(t, "min isr", tp.Config.MinInSyncReplicas, 1)
			want(t, "id", tp.ID, m.Version)
			leads := map[string]int{}
			for _, g := range tp.Partitions {
				leads[g.Leader]++
				want(t, "epoch", g.Epoch, 1)
				wantIDs(t, "isr", g.ISR, g.Replicas...)
			}
			for _, id := range []string{"a", "b", "c", "d"} {
				want(t, "leaderships of "+id, leads[id], 2)
			}
		}},
		{name: "create existing", cmd: CreateTopic{Name: "t", Partitions: 1}, err: ErrTopicExists},
		{name: "create bad name", cmd: CreateTopic{Name: "a/b", Partitions: 1}, err: ErrBadCommand},
		{name: "create no partitions", cmd: CreateTopic{Name: "u"}, err: ErrBadConfig},
		{name: "create too many partitions", cmd: CreateTopic{Name: "u", Partitions: maxPartitions + 1}, err: ErrBadConfig},
		{name: "create rf above members", cmd: CreateTopic{Name: "u", Partitions: 1, Config: TopicConfig{ReplicationFactor: 5}}, err: ErrNotEnoughMembers},
		{name: "create min isr above rf", cmd: CreateTopic{Name: "u", Partitions: 1, Config: TopicConfig{ReplicationFactor: 2, MinInSyncReplicas: 3}}, err: ErrBadConfig},
		{name: "create assignment repeats", cmd: CreateTopic{Name: "u", Assignment: [][]string{{"a", "a"}}}, err: ErrBadAssignment},
		{name: "create assignment uneven", cmd: CreateTopic{Name: "u", Assignment: [][]string{{"a", "b"}, {"c"}}}, err: ErrBadAssignment},
		{name: "create assignment to dead", prep: []Command{MemberDead{ID: "b"}}, cmd: CreateTopic{Name: "u", Assignment: [][]string{{"a", "b"}}}, err: ErrMemberNotAlive},
		{name: "delete", cmd: DeleteTopic{Name: "t"}, check: func(t *testing.T, old, m *Map) {
			if m.Topic("t") != nil {
				t.Error("t still there")
			}
		}},
		{name: "delete unknown", cmd: DeleteTopic{Name: "x"}, err: ErrUnknownTopic},
		{name: "reassign", cmd: ReassignPartition{Topic: "t", Partition: 0, Replicas: []string{"d", "b", "c"}}, check: func(t *testing.T, old, m *Map) {
			wantIDs(t, "target", part(m, "t", 0).Target, "d", "b", "c")
			wantIDs(t, "replicas until moved", part(m, "t", 0).Replicas, "a", "b", "c")
		}},
		{name: "reassign reorder only", cmd: ReassignPartition{Topic: "t", Partition: 0, Replicas: []string{"c", "b", "a"}}, check: func(t *testing.T, old, m *Map) {
			g := part(m, "t", 0)
			wantIDs(t, "replicas", g.Replicas, "c", "b", "a")
			if g.Target != nil {
				t.Error("target left set")
			}
		}},
		{name: "reassign from latest", cmd: ReassignPartition{Topic: "t", Partition: 0, Replicas: []string{"d", "b", "c"}, FromLatest: true}, check: func(t *testing.T, old, m *Map) {
			g := part(m, "t", 0)
			if !g.TargetFromLatest {
				t.Error("from latest not kept with the target")
			}
			cmds := Plan(m, PlanConfig{})
			var start *MoveStart
			for _, c := range cmds {
				if ms, ok := c.(MoveStart); ok && ms.Ref == PartitionRef("t", 0) {
					start = &ms
				}
			}
			if start == nil || start.To != "d" || !start.FromLatest {
				t.Fatalf("planned %v, want a move to d from the latest offset", cmds)
			}
			m2, err := Apply(m, *start)
			if err != nil {
				t.Fatal(err)
			}
			if mv := part(m2, "t", 0).Move; mv == nil || !mv.FromLatest {
				t.Fatalf("move %+v, want from latest", mv)
			}
		}},
		{name: "reassign cancel clears from latest", prep: []Command{ReassignPartition{Topic: "t", Partition: 0, Replicas: []string{"d", "b", "c"}, FromLatest: true}},
			cmd: ReassignPartition{Topic: "t", Partition: 0}, check: func(t *testing.T, old, m *Map) {
				if g := part(m, "t", 0); g.Target != nil || g.TargetFromLatest {
					t.Errorf("target %v from latest %v left", g.Target, g.TargetFromLatest)
				}
			}},
		{name: "slot move from latest", cmd: MoveStart{Ref: SlotRef(0), To: "d", FromLatest: true}, err: ErrBadCommand},
		{name: "reassign wrong length", cmd: ReassignPartition{Topic: "t", Partition: 0, Replicas: []string{"a", "b"}}, err: ErrBadAssignment},
		{name: "reassign to unknown", cmd: ReassignPartition{Topic: "t", Partition: 0, Replicas: []string{"a", "b", "zz"}}, err: ErrUnknownMember},
		{name: "reassign cancel", prep: []Command{ReassignPartition{Topic: "t", Partition: 0, Replicas: []string{"d", "b", "c"}}},
			cmd: ReassignPartition{Topic: "t", Partition: 0}, check: func(t *testing.T, old, m *Map) {
				if part(m, "t", 0).Target != nil {
					t.Error("target left set")
				}
			}},
		{name: "config", cmd: SetTopicConfig{Name: "t", MinInSyncReplicas: 2}, check: func(t *testing.T, old, m *Map) {
			want(t, "min isr", m.Topic("t").Config.MinInSyncReplicas, 2)
		}},
		{name: "config unchanged", cmd: SetTopicConfig{Name: "t", MinInSyncReplicas: 1}},
		{name: "config unknown", cmd: SetTopicConfig{Name: "x", MinInSyncReplicas: 2}, err: ErrUnknownTopic},
		{name: "config min isr above rf", cmd: SetTopicConfig{Name: "t", MinInSyncReplicas: 4}, err: ErrBadConfig},
		{name: "config rf above members", cmd: SetTopicConfig{Name: "t", ReplicationFactor: 5}, err: ErrNotEnoughMembers},
		{name: "config overrides", cmd: SetTopicConfig{Name: "t", ReplaceOverrides: true, Overrides: map[string]string{"retention.ms": "5"}}, check: func(t *testing.T, old, m *Map) {
			want(t, "retention.ms", m.Topic("t").Overrides["retention.ms"], "5")
			want(t, "min isr kept", m.Topic("t").Config.MinInSyncReplicas, old.Topic("t").Config.MinInSyncReplicas)
		}},
		{name: "config overrides cleared", prep: []Command{SetTopicConfig{Name: "t", ReplaceOverrides: true, Overrides: map[string]string{"retention.ms": "5"}}},
			cmd: SetTopicConfig{Name: "t", ReplaceOverrides: true}, check: func(t *testing.T, old, m *Map) {
				want(t, "overrides", len(m.Topic("t").Overrides), 0)
			}},
		{name: "config overrides kept without replace", prep: []Command{SetTopicConfig{Name: "t", ReplaceOverrides: true, Overrides: map[string]string{"retention.ms": "5"}}},
			cmd: SetTopicConfig{Name: "t", MinInSyncReplicas: 2}, check: func(t *testing.T, old, m *Map) {
				want(t, "retention.ms", m.Topic("t").Overrides["retention.ms"], "5")
			}},
		{name: "config overrides unchanged", prep: []Command{SetTopicConfig{Name: "t", ReplaceOverrides: true, Overrides: map[string]string{"retention.ms": "5"}}},
			cmd: SetTopicConfig{Name: "t", ReplaceOverrides: true, Overrides: map[string]string{"retention.ms": "5"}}},
		{name: "config override too long", cmd: SetTopicConfig{Name: "t", ReplaceOverrides: true, Overrides: map[string]string{"x": strings.Repeat("v", maxOverrideValueLen+1)}}, err: ErrBadConfig},
		{name: "create with overrides", cmd: CreateTopic{Name: "u", Partitions: 1, Overrides: map[string]string{"retention.ms": "7"}}, check: func(t *testing.T, old, m *Map) {
			want(t, "retention.ms", m.Topic("u").Overrides["retention.ms"], "7")
		}},
		{name: "add partitions", cmd: AddPartitions{Name: "t", Count: 12}, check: func(t *testing.T, old, m *Map) {
			tp := m.Topic("t")
			want(t, "partitions", len(tp.Partitions), 12)
			for p, g := range tp.Partitions[len(old.Topic("t").Partitions):] {
				want(t, fmt.Sprintf("replicas of new partition %d", p), len(g.Replicas), tp.Config.ReplicationFactor)
				want(t, "leader", g.Leader, g.Replicas[0])
				want(t, "epoch", g.Epoch, 1)
				wantIDs(t, "isr", g.ISR, g.Replicas...)
			}
			for p := range old.Topic("t").Partitions {
				if tp.Partitions[p] != old.Topic("t").Partitions[p] {
					t.Errorf("partition %d changed", p)
				}
			}
		}},
		{name: "add partitions assigned", cmd: AddPartitions{Name: "t", Count: 5, Assignment: [][]string{{"d", "c", "b"}}}, check: func(t *testing.T, old, m *Map) {
			wantIDs(t, "replicas", part(m, "t", 4).Replicas, "d", "c", "b")
		}},
		{name: "add partitions not more", cmd: AddPartitions{Name: "t", Count: 4}, err: ErrBadConfig},
		{name: "add partitions unknown", cmd: AddPartitions{Name: "x", Count: 9}, err: ErrUnknownTopic},
		{name: "add partitions assignment count", cmd: AddPartitions{Name: "t", Count: 6, Assignment: [][]string{{"d", "c", "b"}}}, err: ErrBadAssignment},
		{name: "add partitions assignment rf", cmd: AddPartitions{Name: "t", Count: 5, Assignment: [][]string{{"d", "c"}}}, err: ErrBadAssignment},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fleet{tb: t, m: base(t), deep: true}
			f.must(tt.prep...)
			old := f.m
			before := fingerprint(old)
			m, err := Apply(old, tt.cmd)
			if fingerprint(old) != before {
				t.Fatal("the map applied to was modified")
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				if m != old {
					t.Fatal("refused, but returned another map")
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if tt.check == nil {
				if m != old {
					t.Fatalf("a command that changes nothing returned a new map (version %d)", m.Version)
				}
				return
			}
			if m.Version != old.Version+1 {
				t.Errorf("version %d after %d", m.Version, old.Version)
			}
			checkTransition(t, old, m, tt.cmd, true)
			tt.check(t, old, m)
		})
	}
}

// TestApplyBootstrap covers the first command.
func TestApplyBootstrap(t *testing.T) {
	m0 := New()
	if _, err := Apply(m0, MemberJoin{ID: "a", Addr: "a"}); !errors.Is(err, ErrNotBootstrapped) {
		t.Fatalf("join before bootstrap: %v", err)
	}
	for _, c := range []struct {
		cmd Bootstrap
		err error
	}{
		{Bootstrap{}, ErrBadCommand},
		{Bootstrap{ClusterID: "c", Replicas: maxReplicas + 1}, ErrBadConfig},
		{Bootstrap{ClusterID: "c", Replicas: -1}, ErrBadConfig},
		{Bootstrap{ClusterID: "c", RebuildAfter: -1}, ErrBadConfig},
	} {
		if m, err := Apply(m0, c.cmd); !errors.Is(err, c.err) || m != m0 {
			t.Errorf("%+v: %v, want %v", c.cmd, err, c.err)
		}
	}
	m, err := Apply(m0, Bootstrap{ClusterID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	want(t, "version", m.Version, 1)
	want(t, "replicas", m.Settings.Replicas, DefaultReplicas)
	want(t, "rebuild after", m.Settings.RebuildAfter, DefaultRebuildAfter)
	if m.Slot(NumSlots-1) == nil || m.Slot(NumSlots) != nil {
		t.Error("not NumSlots slots")
	}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	if len(Plan(m, PlanConfig{})) != 0 {
		t.Error("a plan with no members")
	}
	// Slots wait for data members: a server-only member gets none.
	m, _ = Apply(m, MemberJoin{ID: "s", Addr: "s", Roles: []string{RoleServer}})
	if len(Plan(m, PlanConfig{})) != 0 {
		t.Error("slots planned on a server-only member")
	}
	bad := [][]string{{"s"}}
	if _, err := Apply(m, AssignSlots{Replicas: bad}); !errors.Is(err, ErrBadAssignment) {
		t.Errorf("short assignment: %v", err)
	}
	bad = Spread([]string{"s"}, NumSlots, 1)
	if _, err := Apply(m, AssignSlots{Replicas: bad}); !errors.Is(err, ErrNotDataMember) {
		t.Errorf("assignment to a server-only member: %v", err)
	}
}

// TestSpread checks the first assignment's balance: leaders differ by at
// most one, replicas spread evenly, no member twice in a group.
func TestSpread(t *testing.T) {
	for _, c := range []struct{ members, groups, rf int }{{1, NumSlots, 1}, {2, NumSlots, 2}, {3, NumSlots, 3}, {7, NumSlots, 3}, {100, NumSlots, 3}, {1000, NumSlots, 3}, {5, 3, 3}, {10, 64, 5}} {
		ms := ids("m", 0, c.members)
		out := Spread(ms, c.groups, c.rf)
		leads, reps := map[string]int{}, map[string]int{}
		for _, g := range out {
			if len(g) != c.rf {
				t.Fatalf("%+v: group %q", c, g)
			}
			for i, id := range g {
				if slices.Contains(g[:i], id) {
					t.Fatalf("%+v: group %q repeats", c, g)
				}
				reps[id]++
			}
			leads[g[0]]++
		}
		lmin, lmax, rmin, rmax := c.groups, 0, c.groups*c.rf, 0
		for _, id := range ms {
			lmin, lmax = min(lmin, leads[id]), max(lmax, leads[id])
			rmin, rmax = min(rmin, reps[id]), max(rmax, reps[id])
		}
		if lmax-lmin > 1 {
			t.Errorf("%+v: leaders %d..%d", c, lmin, lmax)
		}
		lo, hi := band(c.groups*c.rf, c.members)
		if float64(rmin) < lo || float64(rmax) > hi {
			t.Errorf("%+v: replicas %d..%d, band %.1f..%.1f", c, rmin, rmax, lo, hi)
		}
	}
}
