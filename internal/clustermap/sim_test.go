package clustermap

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// TestSimulatedFleet grows a cluster from bootstrap to 1,000 data members
// in waves, then kills members (some return before the rebuild delay,
// the others' replicas are rebuilt), drains and removes others while new
// ones join, and checks after each phase that the map converges: every
// group led and fully in sync, leaders and replicas within 10% (or 1) of
// the mean, no move pending, and every move started has finished.
func TestSimulatedFleet(t *testing.T) {
	start := time.Now()
	f := newFleet(t, PlanConfig{MaxMoves: 64, MaxTransfers: 256}, Bootstrap{ClusterID: "sim", RebuildAfter: 30 * time.Second})
	// Check after every command costs more than the commands; the
	// property tests run it. Here the transitions are checked after
	// every command and the whole map every few rounds.
	f.deep = false
	rng := rand.New(rand.NewPCG(1, 2))
	phase := func(name string, limit int) {
		t.Helper()
		r := f.converge(limit)
		rep := f.m.Report()
		t.Logf("%-28s %4d rounds  members %4d  slots: leaders %d..%d replicas %d..%d  partitions: leaders %d..%d replicas %d..%d",
			name, r, rep.Slots.Members, rep.Slots.MinLeaders, rep.Slots.MaxLeaders, rep.Slots.MinReplicas, rep.Slots.MaxReplicas,
			rep.Partitions.MinLeaders, rep.Partitions.MaxLeaders, rep.Partitions.MinReplicas, rep.Partitions.MaxReplicas)
	}

	f.join(ids("m", 0, 100)...)
	phase("100 members", 50)
	f.must(CreateTopic{Name: "events", Partitions: 256}, CreateTopic{Name: "orders", Partitions: 64, Config: TopicConfig{ReplicationFactor: 3, MinInSyncReplicas: 2}})
	phase("topics created", 20)
	for _, w := range [][2]int{{100, 250}, {250, 500}, {500, 1000}} {
		f.join(ids("m", w[0], w[1])...)
		phase("wave to "+strconv.Itoa(w[1]), 2000)
	}

	alive := ids("m", 0, 1000)
	rng.Shuffle(len(alive), func(i, j int) { alive[i], alive[j] = alive[j], alive[i] })
	dead, back := alive[:20], alive[:10]
	for _, id := range dead {
		f.must(MemberDead{ID: id, At: f.now})
	}
	for range 5 {
		f.round()
	}
	for _, id := range back {
		f.must(MemberAlive{ID: id, At: f.now})
	}
	phase("20 dead, 10 back, 10 gone", 2000)

	drained := alive[20:40]
	for _, id := range drained {
		f.must(MemberDrain{ID: id})
	}
	for range 3 {
		f.round()
	}
	f.join(ids("n", 0, 40)...) // joins while the drain's moves are in flight
	phase("20 drained, 40 joined", 2000)
	for _, id := range drained {
		if leadsAny(f.m, id) {
			t.Fatalf("drained member %s still leads", id)
		}
		f.must(MemberLeave{ID: id, At: f.now})
	}
	for _, id := range dead[10:] {
		f.must(MemberLeave{ID: id, At: f.now})
	}
	phase("drained and gone left", 100)

	if f.started != f.done+f.aborted {
		t.Fatalf("%d moves started, %d done, %d aborted", f.started, f.done, f.aborted)
	}
	rep := f.m.Report()
	live := 0
	for _, mb := range f.m.Members {
		if mb.State == StateAlive {
			live++
		}
	}
	if live < 1000 || len(f.m.Members) != live {
		t.Fatalf("%d members, %d alive", len(f.m.Members), live)
	}
	t.Logf("members %d, rounds %d, commands %d, moves %d done %d aborted, leader transfers %d, preferred elections %d, most moves at once %d, largest plan %d, version %d, %v",
		live, f.rounds, f.commands, f.done, f.aborted, f.transfers, f.elections, f.maxMovesSeen, f.maxPerPlan, rep.Version, time.Since(start).Round(time.Millisecond))
}

func leadsAny(m *Map, id string) bool {
	found := false
	m.eachGroup(func(_ Ref, g *Group) { found = found || g.Leader == id })
	return found
}
