package balance

import (
	"sync"
	"sync/atomic"
	"time"
)

// exactScanMax is the largest set LeastOutstanding scans whole; above it,
// it compares two random instances (power of two choices).
const exactScanMax = 16

// LeastOutstanding sends each call to the instance with the fewest calls
// in flight per unit of weight. Ties go to a random one (the scan starts
// at a random offset), so idle instances share the load.
type LeastOutstanding struct {
	rnd Source
	set atomic.Pointer[loSet]

	// mu serializes Update.
	mu sync.Mutex
}

type loSet struct {
	insts []Instance
	stats []*loStats
	w     []int64
}

type loStats struct {
	inflight atomic.Int64
	done     Done
}

func newLoStats() *loStats {
	s := &loStats{}
	s.done = func(error, time.Duration) { s.inflight.Add(-1) }
	return s
}

// NewLeastOutstanding returns an empty least-outstanding balancer; rnd
// nil means math/rand/v2's global generator.
func NewLeastOutstanding(rnd Source) *LeastOutstanding {
	if rnd == nil {
		rnd = runtimeSource{}
	}
	b := &LeastOutstanding{rnd: rnd}
	b.set.Store(&loSet{})
	return b
}

// Pick implements Balancer; key is ignored.
func (b *LeastOutstanding) Pick(string) (Instance, Done, error) {
	s := b.set.Load()
	n := len(s.insts)
	if n == 0 {
		return Instance{}, nil, ErrNoInstance
	}
	r := b.rnd.Uint64()
	var best int
	if n <= exactScanMax {
		start := int(r % uint64(n))
		best = start
		bl := s.stats[best].inflight.Load() + 1
		for k := 1; k < n; k++ {
			i := start + k
			if i >= n {
				i -= n
			}
			l := s.stats[i].inflight.Load() + 1
			// l/w[i] < bl/w[best], without division.
			if l*s.w[best] < bl*s.w[i] {
				best, bl = i, l
			}
		}
	} else {
		i := int(r % uint64(n))
		j := int((r >> 32) % uint64(n-1))
		if j >= i {
			j++
		}
		li, lj := s.stats[i].inflight.Load()+1, s.stats[j].inflight.Load()+1
		best = i
		if lj*s.w[i] < li*s.w[j] {
			best = j
		}
	}
	st := s.stats[best]
	st.inflight.Add(1)
	return s.insts[best], st.done, nil
}

// Update implements Balancer. In-flight counts follow the instances that
// stay.
func (b *LeastOutstanding) Update(instances []Instance) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.set.Load()
	prev := make(map[string]*loStats, len(old.insts))
	for i, in := range old.insts {
		prev[in.ID] = old.stats[i]
	}
	insts := normalize(instances)
	s := &loSet{insts: insts, stats: make([]*loStats, len(insts)), w: make([]int64, len(insts))}
	for i, in := range insts {
		st, ok := prev[in.ID]
		if !ok {
			st = newLoStats()
		}
		s.stats[i] = st
		s.w[i] = int64(in.weight())
	}
	b.set.Store(s)
}

// InFlight reports the calls in flight to the instance with id.
func (b *LeastOutstanding) InFlight(id string) int64 {
	s := b.set.Load()
	for i, in := range s.insts {
		if in.ID == id {
			return s.stats[i].inflight.Load()
		}
	}
	return 0
}
