package balance

import (
	"math"
	"sync/atomic"
)

// Rendezvous sends each key to the instance with the highest hash of
// (key, instance ID): the same key goes to the same instance from every
// caller, and when an instance leaves only its keys move (to their second
// choice), when one joins it takes only the keys it now wins. Unequal
// weights use the logarithmic method (score = -w / ln u), which keeps
// both properties. An empty key falls back to round robin.
//
// The hash is FNV-1a of the key mixed with each instance's hash by a
// 64-bit finalizer: stable across processes and versions, so callers on
// different hosts agree.
type Rendezvous struct {
	set  atomic.Pointer[hrwSet]
	next atomic.Uint64
}

type hrwSet struct {
	insts    []Instance
	hashes   []uint64
	weights  []float64
	weighted bool
}

// NewRendezvous returns an empty rendezvous-hashing balancer.
func NewRendezvous() *Rendezvous {
	b := &Rendezvous{}
	b.set.Store(&hrwSet{})
	return b
}

// Pick implements Balancer.
func (b *Rendezvous) Pick(key string) (Instance, Done, error) {
	s := b.set.Load()
	if len(s.insts) == 0 {
		return Instance{}, nil, ErrNoInstance
	}
	if key == "" {
		return s.insts[(b.next.Add(1)-1)%uint64(len(s.insts))], noDone, nil
	}
	return s.insts[s.owner(fnv64(key))], noDone, nil
}

func (s *hrwSet) owner(kh uint64) int {
	best := 0
	if !s.weighted {
		var top uint64
		for i, h := range s.hashes {
			if v := mix64(kh ^ h); i == 0 || v > top {
				best, top = i, v
			}
		}
		return best
	}
	top := math.Inf(-1)
	for i, h := range s.hashes {
		// u in (0, 1): the top 53 bits, offset by half a step.
		u := (float64(mix64(kh^h)>>11) + 0.5) / (1 << 53)
		if v := -s.weights[i] / math.Log(u); v > top {
			best, top = i, v
		}
	}
	return best
}

// Update implements Balancer.
func (b *Rendezvous) Update(instances []Instance) {
	insts := normalize(instances)
	s := &hrwSet{insts: insts, hashes: make([]uint64, len(insts)), weights: make([]float64, len(insts))}
	for i, in := range insts {
		s.hashes[i] = mix64(fnv64(in.ID))
		s.weights[i] = float64(in.weight())
		if i > 0 && s.weights[i] != s.weights[0] {
			s.weighted = true
		}
	}
	b.set.Store(s)
}

// fnv64 is FNV-1a, inline so it does not allocate.
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is the murmur3 / splitmix64 finalizer: every input bit affects
// every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
