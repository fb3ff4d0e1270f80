package clustermap

// Report is what an operator (or a test) wants to know of a map: what is
// unavailable, what is at risk, what is moving, and how even the load is.
type Report struct {
	// Version is the map's version.
	Version uint64
	// Leaderless lists the groups with no leader: no in-sync replica is
	// alive (and, for a topic that allows it, no replica at all).
	// Writes and reads to them fail until one returns.
	Leaderless []Ref
	// UnderReplicated lists the groups with fewer in-sync replicas than
	// they should have.
	UnderReplicated []Ref
	// Moving lists the groups with a move in progress.
	Moving []Ref
	// Slots and Partitions are the balance of each pool.
	Slots, Partitions Balance
}

// Balance is the spread of one pool (the slots, or all partitions) over
// the eligible members (alive, data, not draining).
type Balance struct {
	// Members is the number of eligible members.
	Members int
	// Groups is the number of assigned groups in the pool.
	Groups int
	// MinLeaders and MaxLeaders bound the eligible members' leader counts.
	MinLeaders, MaxLeaders int
	// MinReplicas and MaxReplicas bound their replica counts.
	MinReplicas, MaxReplicas int
	// MeanLeaders and MeanReplicas are the counts' means.
	MeanLeaders, MeanReplicas float64
	// LeadersBalanced and ReplicasBalanced say every count is within 10%
	// of its mean, or within 1 when that is wider.
	LeadersBalanced, ReplicasBalanced bool
}

// Converged reports whether nothing is left to do: every group led and
// fully in sync, no move in progress, both pools balanced.
func (r Report) Converged() bool {
	return len(r.Leaderless) == 0 && len(r.UnderReplicated) == 0 && len(r.Moving) == 0 &&
		r.Slots.LeadersBalanced && r.Slots.ReplicasBalanced &&
		r.Partitions.LeadersBalanced && r.Partitions.ReplicasBalanced
}

// Report summarizes m.
func (m *Map) Report() Report {
	r := Report{Version: m.Version}
	if !m.Bootstrapped() {
		return r
	}
	capacity := m.capacity()
	m.eachGroup(func(ref Ref, g *Group) {
		if len(g.Replicas) == 0 {
			return
		}
		if g.Leader == "" {
			r.Leaderless = append(r.Leaderless, ref)
		}
		if len(g.ISR) < m.desiredReplicas(ref, capacity) || g.Leader == "" {
			r.UnderReplicated = append(r.UnderReplicated, ref)
		}
		if g.Move != nil {
			r.Moving = append(r.Moving, ref)
		}
	})
	slots := make([]*Group, 0, NumSlots)
	m.eachSlot(func(_ Ref, g *Group) { slots = append(slots, g) })
	r.Slots = m.balance(slots)
	var parts []*Group
	for _, tp := range m.Topics {
		parts = append(parts, tp.Partitions...)
	}
	r.Partitions = m.balance(parts)
	return r
}

func (m *Map) balance(groups []*Group) Balance {
	rc := make(map[string]int)
	lc := make(map[string]int)
	b := Balance{}
	for _, g := range groups {
		if len(g.Replicas) == 0 {
			continue
		}
		b.Groups++
		for _, id := range g.Replicas {
			rc[id]++
		}
		if g.Leader != "" {
			lc[g.Leader]++
		}
	}
	totalR, totalL := 0, 0
	first := true
	for _, mb := range m.Members {
		if !mb.Eligible() {
			continue
		}
		b.Members++
		r, l := rc[mb.ID], lc[mb.ID]
		totalR += r
		totalL += l
		if first {
			b.MinReplicas, b.MaxReplicas, b.MinLeaders, b.MaxLeaders = r, r, l, l
			first = false
		}
		b.MinReplicas, b.MaxReplicas = min(b.MinReplicas, r), max(b.MaxReplicas, r)
		b.MinLeaders, b.MaxLeaders = min(b.MinLeaders, l), max(b.MaxLeaders, l)
	}
	if b.Members == 0 {
		b.LeadersBalanced, b.ReplicasBalanced = b.Groups == 0, b.Groups == 0
		return b
	}
	b.MeanReplicas = float64(totalR) / float64(b.Members)
	b.MeanLeaders = float64(totalL) / float64(b.Members)
	lo, hi := band(totalR, b.Members)
	b.ReplicasBalanced = float64(b.MinReplicas) >= lo && float64(b.MaxReplicas) <= hi
	lo, hi = band(totalL, b.Members)
	b.LeadersBalanced = float64(b.MinLeaders) >= lo && float64(b.MaxLeaders) <= hi
	return b
}
