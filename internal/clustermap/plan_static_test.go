package clustermap

import "testing"

// applyAll applies cmds in order, failing the test on a refusal.
func applyAll(t *testing.T, m *Map, cmds ...Command) *Map {
	t.Helper()
	for _, c := range cmds {
		var err error
		if m, err = Apply(m, c); err != nil {
			t.Fatalf("%T: %v", c, err)
		}
	}
	return m
}

func kinds(cmds []Command) map[Kind]int {
	k := map[Kind]int{}
	for _, c := range cmds {
		k[c.Kind()]++
	}
	return k
}

// MinMembers holds the first assignment until that many data members are
// eligible; NoMoves keeps the slots where they are when members join,
// die and return, and a slot with one replica is led again by its
// member when it returns.
func TestPlanMinMembersNoMoves(t *testing.T) {
	cfg := PlanConfig{MinMembers: 2, NoMoves: true}
	data := []string{RoleData}
	m := applyAll(t, New(), Bootstrap{ClusterID: "c", Replicas: 1},
		MemberJoin{ID: "a", Addr: "a:1", Roles: data, At: 1})
	if cmds := Plan(m, cfg); len(cmds) != 0 {
		t.Fatalf("one member of two: %v", kinds(cmds))
	}
	m = applyAll(t, m, MemberJoin{ID: "b", Addr: "b:1", Roles: data, At: 2})
	cmds := Plan(m, cfg)
	if k := kinds(cmds); len(cmds) != 1 || k[KindAssignSlots] != 1 {
		t.Fatalf("two members: %v", k)
	}
	m = applyAll(t, m, cmds...)
	leads := map[string]int{}
	for s := range NumSlots {
		g := m.Slot(s)
		if len(g.Replicas) != 1 || g.Leader != g.Replicas[0] {
			t.Fatalf("slot %d: %+v", s, g)
		}
		leads[g.Leader]++
	}
	if leads["a"] != NumSlots/2 || leads["b"] != NumSlots/2 {
		t.Fatalf("leaders %v", leads)
	}
	// A third member: moves without NoMoves, none with it.
	m = applyAll(t, m, MemberJoin{ID: "c", Addr: "c:1", Roles: data, At: 3})
	if k := kinds(Plan(m, PlanConfig{})); k[KindMoveStart] == 0 {
		t.Fatalf("without NoMoves the new member gets nothing: %v", k)
	}
	if cmds := Plan(m, cfg); len(cmds) != 0 {
		t.Fatalf("NoMoves, a member joined: %v", kinds(cmds))
	}
	// a dies: its slots have no leader, and nothing moves.
	m = applyAll(t, m, MemberDead{ID: "a", At: 4})
	s := 0
	for ; s < NumSlots && m.Slot(s).Replicas[0] != "a"; s++ {
	}
	if g := m.Slot(s); g.Leader != "" {
		t.Fatalf("slot %d of a dead member: %+v", s, g)
	}
	if cmds := Plan(m, cfg); len(cmds) != 0 {
		t.Fatalf("NoMoves, a member died: %v", kinds(cmds))
	}
	// a returns and leads its slots again.
	m = applyAll(t, m, MemberAlive{ID: "a", At: 5})
	if g := m.Slot(s); g.Leader != "a" {
		t.Fatalf("slot %d after a returned: %+v", s, g)
	}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
}
