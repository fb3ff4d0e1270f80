package clustermap

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

// fleetOn returns a fleet over base's map (a, b, c, d; RebuildAfter one
// minute; the fleet ticks a second a round).
func fleetOn(t *testing.T, cfg PlanConfig) *fleet {
	t.Helper()
	m := base(t)
	// Ten seconds a round: the one-minute rebuild delay passes in six.
	return &fleet{tb: t, m: m, cfg: cfg, deep: true, now: 1_000, tick: 10 * time.Second}
}

func wantSet(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	got = slices.Sorted(slices.Values(got))
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q in any order", what, got, want)
	}
}

// ended asserts that every move started has finished or was aborted and
// the map converged.
func (f *fleet) ended() {
	f.tb.Helper()
	if f.started != f.done+f.aborted {
		f.tb.Fatalf("%d moves started, %d done, %d aborted", f.started, f.done, f.aborted)
	}
	if rep := f.m.Report(); !rep.Converged() {
		f.tb.Fatalf("not converged: %+v", rep)
	}
}

// TestMoveInterrupted is the deterministic test of the control plane
// state machine with a member dying, returning, joining or leaving while
// a move is in progress. Slot 0 ([a b c], led by a) starts moving from a
// to d; then something happens; then the fleet runs until the map
// converges, and every move must have ended.
func TestMoveInterrupted(t *testing.T) {
	start := MoveStart{Ref: s0, From: "a", To: "d"}
	inSync := func(f *fleet) { // d caught up; not yet switched
		f.must(MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseTailing},
			ISRChange{Ref: s0, ISR: []string{"a", "b", "c", "d"}, Epoch: 1})
	}
	switched := func(f *fleet) {
		inSync(f)
		f.must(MoveProgress{Ref: s0, From: "a", To: "d", Phase: PhaseSwitching})
	}
	tests := []struct {
		name   string
		during func(f *fleet)
		check  func(t *testing.T, f *fleet)
	}{
		{
			name: "new replica dies while copying, returns later",
			during: func(f *fleet) {
				f.must(MemberDead{ID: "d", At: f.now})
				f.round()
				if g := slot(f.m, 0); g.Move != nil || g.HasReplica("d") {
					t.Fatalf("move not aborted: %+v", g)
				}
				f.must(MemberAlive{ID: "d", At: f.now})
			},
			check: func(t *testing.T, f *fleet) { want(t, "aborted", f.aborted, 1) },
		},
		{
			name: "new replica dies after the switch, while it leads",
			during: func(f *fleet) {
				switched(f)
				want(t, "leader", slot(f.m, 0).Leader, "d")
				f.must(MemberDead{ID: "d", At: f.now})
				g := slot(f.m, 0)
				want(t, "failover to an in-sync replica", g.Leader, "b")
				want(t, "epoch", g.Epoch, 3)
				f.round()
				g = slot(f.m, 0)
				wantIDs(t, "abort gives a its place back", g.Replicas, "a", "b", "c")
				f.round()
				want(t, "and the preferred leader its leadership", slot(f.m, 0).Leader, "a")
			},
			check: func(t *testing.T, f *fleet) {
				if f.m.Member("d").State != StateGone {
					t.Errorf("d is %v", f.m.Member("d").State)
				}
			},
		},
		{
			name: "old replica, the leader, dies while copying",
			during: func(f *fleet) {
				f.must(MemberDead{ID: "a", At: f.now})
				g := slot(f.m, 0)
				want(t, "leader", g.Leader, "b")
				if g.Move == nil {
					t.Fatal("the move stopped: it copies from the leader, whoever that is")
				}
			},
			check: func(t *testing.T, f *fleet) {
				g := slot(f.m, 0)
				if g.HasReplica("a") || !g.HasReplica("d") {
					t.Errorf("slot 0 on %q", g.Replicas)
				}
				want(t, "no abort", f.aborted, 0)
			},
		},
		{
			name: "old replica dies and returns while the move goes on",
			during: func(f *fleet) {
				f.must(MemberDead{ID: "a", At: f.now})
				f.round()
				f.must(MemberAlive{ID: "a", At: f.now})
				f.round()
			},
			check: func(t *testing.T, f *fleet) {
				wantSet(t, "replicas", slot(f.m, 0).Replicas, "b", "c", "d")
				want(t, "no abort", f.aborted, 0)
			},
		},
		{
			name: "a member joins while the move is in sync",
			during: func(f *fleet) {
				inSync(f)
				f.join("e")
			},
			check: func(t *testing.T, f *fleet) {
				if slot(f.m, 0).HasReplica("a") {
					t.Error("the move did not finish")
				}
				if rep := f.m.Report(); rep.Slots.Members != 5 || rep.Slots.MinReplicas == 0 {
					t.Errorf("e got nothing: %+v", rep.Slots)
				}
			},
		},
		{
			name: "old replica leaves while the move is in sync",
			during: func(f *fleet) {
				inSync(f)
				f.must(MemberLeave{ID: "a", At: f.now})
			},
			check: func(t *testing.T, f *fleet) {
				if f.m.Member("a") != nil {
					t.Error("a is still in the map: its replicas were not all rebuilt")
				}
				wantSet(t, "replicas", slot(f.m, 0).Replicas, "b", "c", "d")
			},
		},
		{
			name: "new replica leaves after the switch",
			during: func(f *fleet) {
				switched(f)
				f.must(MemberLeave{ID: "d", At: f.now})
			},
			check: func(t *testing.T, f *fleet) {
				if f.m.Member("d") != nil {
					t.Error("d is still in the map")
				}
				wantSet(t, "replicas", slot(f.m, 0).Replicas, "a", "b", "c")
			},
		},
		{
			name: "new replica starts draining",
			during: func(f *fleet) {
				f.must(MemberDrain{ID: "d"})
				f.round()
				if slot(f.m, 0).HasReplica("d") {
					t.Fatal("move to a draining member not aborted")
				}
			},
			check: func(t *testing.T, f *fleet) {
				if leadsAny(f.m, "d") {
					t.Error("drained d still leads")
				}
				f.m.eachGroup(func(r Ref, g *Group) {
					if g.HasReplica("d") {
						t.Fatalf("drained d holds %v", r)
					}
				})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fleetOn(t, PlanConfig{MaxMoves: 4})
			f.must(start)
			f.started = 1
			tt.during(f)
			// A 4-member cluster moves hundreds of slots per change:
			// converge at a faster pace, checking less.
			f.cfg.MaxMoves, f.deep = 64, false
			f.converge(500)
			f.ended()
			tt.check(t, f)
		})
	}
}

// TestDrainLeadershipsFirst checks the order of a drain: the first plan
// only transfers leaderships, the replicas follow, and the member ends
// holding nothing, after which it can leave.
func TestDrainLeadershipsFirst(t *testing.T) {
	f := fleetOn(t, PlanConfig{MaxMoves: 64})
	f.deep = false
	f.must(MemberDrain{ID: "a"})
	plan := Plan(f.m, f.cfg)
	if len(plan) == 0 {
		t.Fatal("nothing planned")
	}
	for _, c := range plan {
		tr, ok := c.(LeaderTransfer)
		if !ok {
			t.Fatalf("first plan has %T %+v: leaderships go first", c, c)
		}
		if tr.To == "a" {
			t.Fatalf("transfer to the draining member: %+v", tr)
		}
	}
	f.must(plan...)
	if leadsAny(f.m, "a") {
		t.Fatal("a still leads after the first plan")
	}
	moves := 0
	for _, c := range Plan(f.m, f.cfg) {
		if mv, ok := c.(MoveStart); ok && mv.From == "a" {
			moves++
		}
	}
	if moves == 0 {
		t.Fatal("no replica moves once a leads nothing")
	}
	f.converge(2000)
	f.ended()
	f.m.eachGroup(func(r Ref, g *Group) {
		if g.HasReplica("a") {
			t.Fatalf("drained a holds %v", r)
		}
	})
	f.must(MemberLeave{ID: "a", At: f.now})
	if f.m.Member("a") != nil {
		t.Fatal("a drained member that left is still in the map")
	}
}

// TestRestartKeepsReplicas: a member stopping for a restart (a drain of
// its leaderships only) hands its leaderships over and keeps every
// replica while it is away, so no slot runs on fewer copies; back and
// undrained, it leads its share again.
func TestRestartKeepsReplicas(t *testing.T) {
	f := fleetOn(t, PlanConfig{MaxMoves: 64})
	f.deep = false
	held := 0
	f.m.eachGroup(func(r Ref, g *Group) {
		if g.HasReplica("a") {
			held++
		}
	})
	f.must(MemberDrain{ID: "a", Leaders: true})
	f.converge(2000)
	f.ended()
	if leadsAny(f.m, "a") {
		t.Fatal("a restarting member still leads")
	}
	f.must(MemberDead{ID: "a", At: f.now}) // it stops, for less than RebuildAfter
	for range 3 {
		f.round()
	}
	f.must(MemberJoin{ID: "a", Addr: "a:1", Roles: []string{RoleData}, At: f.now}) // it returns
	f.converge(2000)
	n := 0
	f.m.eachGroup(func(r Ref, g *Group) {
		if g.HasReplica("a") {
			n++
		}
		if len(g.Replicas) != f.m.Settings.Replicas {
			t.Fatalf("%v has %d replicas while a restarts, want %d", r, len(g.Replicas), f.m.Settings.Replicas)
		}
	})
	if n != held {
		t.Fatalf("a holds %d groups after its restart, %d before", n, held)
	}
	f.must(MemberDrain{ID: "a", Cancel: true})
	f.converge(2000)
	f.ended()
	if !leadsAny(f.m, "a") {
		t.Fatal("a leads nothing once undrained")
	}
}

// TestRebuildAfterDelay checks that a dead member's replicas stay put
// until RebuildAfter has passed, then move elsewhere.
func TestRebuildAfterDelay(t *testing.T) {
	f := fleetOn(t, PlanConfig{MaxMoves: 64})
	f.deep = false
	f.join("e")
	f.converge(2000)
	f.must(MemberDead{ID: "a", At: f.now})
	for i := 0; f.m.Member("a").State == StateDead; i++ {
		for _, c := range Plan(f.m, f.cfg) {
			if mv, ok := c.(MoveStart); ok && mv.From == "a" {
				t.Fatalf("round %d: a's replica moved before the rebuild delay: %+v", i, mv)
			}
		}
		f.round()
		if i > 7 {
			t.Fatal("a never became gone")
		}
	}
	f.converge(2000)
	f.ended()
	f.m.eachGroup(func(r Ref, g *Group) {
		if g.HasReplica("a") {
			t.Fatalf("gone a still holds %v", r)
		}
		if len(g.Replicas) != 3 {
			t.Fatalf("%v has %d replicas", r, len(g.Replicas))
		}
	})
	// It comes back empty-handed and gets its share again.
	f.must(MemberAlive{ID: "a", At: f.now})
	f.converge(2000)
	if rep := f.m.Report(); rep.Slots.Members != 5 || rep.Slots.MinLeaders == 0 {
		t.Fatalf("a got nothing back: %+v", rep.Slots)
	}
}

// TestGrowFromOneMember: the slots start with one replica on the first
// data member and grow to three as members join.
func TestGrowFromOneMember(t *testing.T) {
	f := newFleet(t, PlanConfig{MaxMoves: 64}, Bootstrap{ClusterID: "c"})
	f.deep = false
	f.join("a")
	f.converge(10)
	if n := len(slot(f.m, 0).Replicas); n != 1 {
		t.Fatalf("slot 0 has %d replicas", n)
	}
	f.must(CreateTopic{Name: "t", Partitions: 3})
	want(t, "rf of a topic made on one member", f.m.Topic("t").Config.ReplicationFactor, 1)
	f.join("b", "c")
	f.converge(2000)
	f.ended()
	f.m.eachGroup(func(r Ref, g *Group) {
		if r.IsSlot() && len(g.Replicas) != 3 {
			t.Fatalf("%v has %q", r, g.Replicas)
		}
	})
}

// TestTopicReplicationFactorChange grows and shrinks a topic.
func TestTopicReplicationFactorChange(t *testing.T) {
	f := fleetOn(t, PlanConfig{MaxMoves: 8})
	f.must(SetTopicConfig{Name: "t", ReplicationFactor: 4})
	f.converge(500)
	for _, g := range f.m.Topic("t").Partitions {
		want(t, "replicas", len(g.Replicas), 4)
	}
	f.must(SetTopicConfig{Name: "t", ReplicationFactor: 2})
	f.converge(500)
	f.ended()
	for _, g := range f.m.Topic("t").Partitions {
		want(t, "replicas", len(g.Replicas), 2)
		want(t, "isr", len(g.ISR), 2)
	}
}

// TestReassignPartition follows an operator's reassignment to the end.
func TestReassignPartition(t *testing.T) {
	f := fleetOn(t, PlanConfig{MaxMoves: 64})
	f.deep = false
	f.join("e")
	f.must(ReassignPartition{Topic: "t", Partition: 0, Replicas: []string{"e", "d", "b"}})
	f.converge(500)
	f.ended()
	g := part(f.m, "t", 0)
	wantIDs(t, "replicas", g.Replicas, "e", "d", "b")
	want(t, "preferred leader", g.Leader, "e")
	if g.Target != nil {
		t.Error("target left set")
	}
	// A target on a member that then leaves is dropped.
	f.must(ReassignPartition{Topic: "t", Partition: 1, Replicas: []string{"a", "b", "e"}}, MemberLeave{ID: "e", At: f.now})
	f.converge(500)
	f.ended()
	if part(f.m, "t", 1).Target != nil {
		t.Error("target on a departed member kept")
	}
}

// TestMoveBound checks that a big join never has more moves in flight
// than MaxMoves (fleet.round fails the test otherwise), then lets it
// finish faster.
func TestMoveBound(t *testing.T) {
	f := fleetOn(t, PlanConfig{MaxMoves: 3})
	f.deep = false
	f.join(ids("n", 0, 8)...)
	for range 100 {
		f.round()
	}
	want(t, "most moves at once", f.maxMovesSeen, 3)
	if f.done < 50 {
		t.Fatalf("%d moves done in 100 rounds", f.done)
	}
	f.cfg.MaxMoves = 64
	f.converge(2000)
	f.ended()
}

// TestPlanDeterministic: the same map gives the same plan, including a
// map read back from its snapshot, and the plan is a plan of the map's
// own state (two controllers agree).
func TestPlanDeterministic(t *testing.T) {
	f := fleetOn(t, PlanConfig{})
	f.join("e", "f")
	f.must(MemberDrain{ID: "a"}, MemberDead{ID: "b", At: 1})
	f.round()
	p1 := Plan(f.m, f.cfg)
	if len(p1) == 0 {
		t.Fatal("empty plan")
	}
	snap, err := EncodeMap(f.m)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := DecodeMap(snap)
	if err != nil {
		t.Fatal(err)
	}
	if p2 := Plan(m2, f.cfg); !reflect.DeepEqual(p1, p2) {
		t.Fatal("plans differ")
	}
	// Both maps move the same way.
	a, b := f.m, m2
	for _, c := range p1 {
		var errA, errB error
		a, errA = Apply(a, c)
		b, errB = Apply(b, c)
		if errA != nil || errB != nil {
			t.Fatalf("%+v: %v, %v", c, errA, errB)
		}
	}
	if fingerprint(a) != fingerprint(b) {
		t.Fatal("the same commands gave different maps")
	}
}

// TestLeaderlessReported: a group whose in-sync replicas are all dead
// stays leaderless (the planner does not move it or elect out of sync)
// until one returns.
func TestLeaderlessReported(t *testing.T) {
	f := fleetOn(t, PlanConfig{})
	f.must(ISRChange{Ref: s0, ISR: []string{"a"}, Epoch: 1}, MemberDead{ID: "a", At: f.now})
	for range 10 {
		f.round()
		if g := slot(f.m, 0); g.Leader != "" || g.Move != nil {
			t.Fatalf("slot 0: %+v", g)
		}
	}
	if rep := f.m.Report(); !slices.Contains(rep.Leaderless, s0) || rep.Converged() {
		t.Fatalf("report: %+v", rep.Leaderless)
	}
	f.must(MemberAlive{ID: "a", At: f.now})
	want(t, "leader", slot(f.m, 0).Leader, "a")
	want(t, "epoch", slot(f.m, 0).Epoch, 3)
	f.deep = false
	f.converge(500)
}
