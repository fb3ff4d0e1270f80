package clustermap

import (
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestProperties applies random sequences of joins, deaths, returns,
// drains, leaves, ticks, in-sync reports (some stale), move progress,
// hand-made commands (most of them refused) and planned commands, and
// checks after every one (fleet.apply with deep checks):
//
//   - a refused command returns the map it was given, unwritten, and
//     its error wraps one of the package's sentinels;
//   - an accepted one that changes something bumps the version by one
//     and never writes to the map it was applied to;
//   - the map passes Check: replicas distinct, in-sync set a non-empty
//     subset of the replicas, a leader in the in-sync set and alive with
//     every in-sync member alive, or no leader and no live in-sync member;
//   - epochs never go down; a leader change bumps the epoch; a new
//     leader was in sync unless the topic allows unclean election;
//   - Report lists exactly the leaderless groups;
//   - every command of a plan is accepted when applied in order;
//   - once the chaos stops and every member is back, the map converges
//     and every move ends.
func TestProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		pool := []string{"a", "b", "c", "d", "e", "f"}
		boot := Bootstrap{
			ClusterID:    "p",
			Replicas:     rapid.IntRange(1, 3).Draw(rt, "replicas"),
			RebuildAfter: time.Duration(rapid.IntRange(1, 30).Draw(rt, "rebuildAfter")) * time.Second,
		}
		f := newFleet(rt, PlanConfig{MaxMoves: rapid.IntRange(1, 6).Draw(rt, "maxMoves"), MaxTransfers: 8}, boot)
		for _, id := range pool[:rapid.IntRange(1, 4).Draw(rt, "initial")] {
			f.join(id)
		}
		f.must(Plan(f.m, f.cfg)...)
		f.must(CreateTopic{Name: "t", Partitions: 3, Config: TopicConfig{UncleanLeaderElection: rapid.Bool().Draw(rt, "unclean")}})

		member := rapid.SampledFrom(pool)
		// Most random commands aim at a few slots and the topic's
		// partitions, so that they meet each other.
		ref := func() Ref {
			if rapid.Bool().Draw(rt, "partition") {
				if tp := f.m.Topic("t"); tp != nil {
					return PartitionRef("t", rapid.IntRange(0, len(tp.Partitions)-1).Draw(rt, "p"))
				}
			}
			return SlotRef(rapid.IntRange(0, 3).Draw(rt, "slot"))
		}
		group := func(r Ref) *Group {
			g, err := f.m.Group(r)
			if err != nil {
				return nil
			}
			return g
		}
		try := func(c Command) { _ = f.apply(c) } // refusals are checked by apply
		steps := rapid.IntRange(1, 50).Draw(rt, "steps")
		for range steps {
			switch rapid.IntRange(0, 15).Draw(rt, "action") {
			case 0:
				roles := []string{RoleData}
				if rapid.IntRange(0, 5).Draw(rt, "serverOnly") == 0 {
					roles = []string{RoleServer}
				}
				try(MemberJoin{ID: member.Draw(rt, "id"), Addr: "h", Roles: roles, At: f.now})
			case 1:
				try(MemberDead{ID: member.Draw(rt, "id"), At: f.now})
			case 2:
				try(MemberAlive{ID: member.Draw(rt, "id"), At: f.now})
			case 3:
				try(MemberDrain{ID: member.Draw(rt, "id"), Cancel: rapid.Bool().Draw(rt, "cancel")})
			case 4:
				if rapid.IntRange(0, 2).Draw(rt, "leave") == 0 {
					try(MemberLeave{ID: member.Draw(rt, "id"), At: f.now})
				}
			case 5:
				f.now += int64(rapid.IntRange(1, 20).Draw(rt, "seconds")) * int64(time.Second)
				try(Tick{Now: f.now})
			case 6:
				r := ref()
				g := group(r)
				if g == nil || len(g.Replicas) == 0 {
					continue
				}
				isr := rapid.SliceOfNDistinct(rapid.SampledFrom(g.Replicas), 0, len(g.Replicas), rapid.ID[string]).Draw(rt, "isr")
				epoch := g.Epoch - uint64(rapid.IntRange(0, 1).Draw(rt, "stale"))
				try(ISRChange{Ref: r, ISR: isr, Epoch: epoch})
			case 7:
				r := ref()
				if g := group(r); g != nil && g.Move != nil {
					phase := MovePhase(rapid.IntRange(1, 3).Draw(rt, "phase"))
					try(MoveProgress{Ref: r, From: g.Move.From, To: g.Move.To, Phase: phase})
				}
			case 8, 9, 10:
				plan := Plan(f.m, f.cfg)
				n := rapid.IntRange(0, min(len(plan), 12)).Draw(rt, "prefix")
				for _, c := range plan[:n] {
					if err := f.apply(c); err != nil {
						rt.Fatalf("planned %T %+v refused: %v", c, c, err)
					}
				}
			case 11:
				// Some of the replicas' reports (all of them after a
				// member returns would be hundreds of commands).
				reports := f.replicaReports()
				n := rapid.IntRange(0, min(len(reports), 12)).Draw(rt, "reports")
				f.must(reports[:n]...)
			case 12:
				r := ref()
				g := group(r)
				if g == nil || len(g.Replicas) == 0 {
					continue
				}
				switch rapid.IntRange(0, 5).Draw(rt, "manual") {
				case 0:
					from := ""
					if rapid.Bool().Draw(rt, "replace") {
						from = rapid.SampledFrom(g.Replicas).Draw(rt, "from")
					}
					try(MoveStart{Ref: r, From: from, To: member.Draw(rt, "to")})
				case 1:
					if g.Move != nil {
						try(MoveAbort{Ref: r, From: g.Move.From, To: g.Move.To})
					}
				case 2:
					if g.Move != nil {
						try(MoveDone{Ref: r, From: g.Move.From, To: g.Move.To})
					}
				case 3:
					try(LeaderTransfer{Ref: r, To: rapid.SampledFrom(g.Replicas).Draw(rt, "to"), Epoch: g.Epoch})
				case 4:
					try(ElectLeaders{Refs: []Ref{r}})
				case 5:
					try(RemoveReplica{Ref: r, Member: rapid.SampledFrom(g.Replicas).Draw(rt, "member")})
				}
			case 13:
				try(SetTopicConfig{Name: "t", UncleanLeaderElection: ptr(rapid.Bool().Draw(rt, "unclean")), ReplicationFactor: rapid.IntRange(0, 3).Draw(rt, "rf")})
			case 14:
				if f.m.Topic("t") != nil && rapid.IntRange(0, 3).Draw(rt, "delete") == 0 {
					try(DeleteTopic{Name: "t"})
				} else if tp := f.m.Topic("t"); tp != nil {
					try(AddPartitions{Name: "t", Count: len(tp.Partitions) + rapid.IntRange(0, 2).Draw(rt, "more")})
				} else {
					try(CreateTopic{Name: "t", Partitions: rapid.IntRange(1, 4).Draw(rt, "partitions")})
				}
			case 15:
				if tp := f.m.Topic("t"); tp != nil {
					reps := rapid.SliceOfNDistinct(member, tp.Config.ReplicationFactor, tp.Config.ReplicationFactor, rapid.ID[string]).Draw(rt, "target")
					try(ReassignPartition{Topic: "t", Partition: 0, Replicas: reps})
				}
			}
			checkLeaderlessReport(rt, f.m)
		}

		// Liveness: every member still in the map comes back (one that
		// left may hold the last in-sync copy of a group) and stops
		// draining; the planner must then bring the map to rest. It costs
		// thousands of moves on a small cluster, so one run in three.
		if rapid.IntRange(0, 2).Draw(rt, "liveness") != 0 {
			return
		}
		f.deep = false
		for _, mb := range slices.Clone(f.m.Members) {
			f.must(MemberJoin{ID: mb.ID, Addr: mb.Addr, Roles: []string{RoleData}, At: f.now}, MemberDrain{ID: mb.ID, Cancel: true})
		}
		if f.m.Report().Slots.Members == 0 {
			return // every data member left: nothing to converge to
		}
		f.cfg.MaxMoves = 256
		// Moves in flight count as started.
		f.started, f.done, f.aborted = len(f.m.Report().Moving), 0, 0
		f.converge(400)
		if f.started != f.done+f.aborted {
			rt.Fatalf("%d moves started, %d done, %d aborted", f.started, f.done, f.aborted)
		}
	})
}

func checkLeaderlessReport(tb failer, m *Map) {
	tb.Helper()
	var want []Ref
	m.eachGroup(func(r Ref, g *Group) {
		if len(g.Replicas) > 0 && g.Leader == "" {
			want = append(want, r)
		}
	})
	if got := m.Report().Leaderless; !slices.Equal(got, want) {
		tb.Fatalf("report leaderless %v, map %v", got, want)
	}
}
