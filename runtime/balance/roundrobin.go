package balance

import (
	"sync/atomic"
)

// maxSchedule bounds the precomputed weighted round-robin sequence; larger
// weight sums are scaled down proportionally.
const maxSchedule = 4096

// RoundRobin picks instances in turn. With unequal weights it follows the
// smooth weighted round-robin order (nginx's), which interleaves the
// heavier instances instead of sending them bursts; the order is computed
// on Update so Pick is one atomic add.
type RoundRobin struct {
	set  atomic.Pointer[rrSet]
	next atomic.Uint64
}

type rrSet struct {
	insts []Instance
	// order lists instance indexes in weighted order; nil when all weights
	// are equal.
	order []int32
}

// NewRoundRobin returns an empty round-robin balancer.
func NewRoundRobin() *RoundRobin {
	b := &RoundRobin{}
	b.set.Store(&rrSet{})
	return b
}

// Pick implements Balancer; key is ignored.
func (b *RoundRobin) Pick(string) (Instance, Done, error) {
	s := b.set.Load()
	if len(s.insts) == 0 {
		return Instance{}, nil, ErrNoInstance
	}
	n := b.next.Add(1) - 1
	if s.order == nil {
		return s.insts[n%uint64(len(s.insts))], noDone, nil
	}
	return s.insts[s.order[n%uint64(len(s.order))]], noDone, nil
}

// Update implements Balancer.
func (b *RoundRobin) Update(instances []Instance) {
	insts := normalize(instances)
	b.set.Store(&rrSet{insts: insts, order: smoothOrder(insts)})
}

// smoothOrder is one period of smooth weighted round robin: each step
// every instance gains its weight, the one with the most credit is chosen
// and pays the total. Weights are divided by their gcd first.
func smoothOrder(insts []Instance) []int32 {
	if len(insts) == 0 {
		return nil
	}
	w := make([]int, len(insts))
	g, total, equal := 0, 0, true
	for i, in := range insts {
		w[i] = in.weight()
		g = gcd(g, w[i])
		if w[i] != w[0] {
			equal = false
		}
	}
	if equal {
		return nil
	}
	for i := range w {
		w[i] /= g
		total += w[i]
	}
	if total > maxSchedule {
		scaled := 0
		for i := range w {
			w[i] = max(1, w[i]*maxSchedule/total)
			scaled += w[i]
		}
		total = scaled
	}
	order := make([]int32, 0, total)
	credit := make([]int, len(w))
	for range total {
		best := 0
		for i := range w {
			credit[i] += w[i]
			if credit[i] > credit[best] {
				best = i
			}
		}
		credit[best] -= total
		order = append(order, int32(best))
	}
	return order
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
