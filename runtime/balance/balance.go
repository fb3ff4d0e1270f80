// Package balance picks an instance of a target app for each call, over an
// instance set that changes as the cluster catalog does.
//
// Four policies share one API, shaped for the invoke path:
//
//		inst, done, err := b.Pick(key)   // ErrNoInstance when the set is empty
//		... call inst.Addr ...
//		done(err, latency)               // exactly once per successful Pick
//
//	  - RoundRobin: in turn, weighted by Instance.Weight (smooth weighted
//	    round robin, precomputed so Pick is one atomic add).
//	  - LeastOutstanding: the instance with the fewest calls in flight per
//	    unit of weight (an exact scan up to 16 instances, power of two
//	    choices above).
//	  - Rendezvous: highest-random-weight hashing of a request key, so a key
//	    sticks to an instance and, when instances come and go, only the
//	    keys of the changed instances move.
//	  - Weighted: as Tencent MSEC routes, an instance's share of traffic
//	    falls as its recent error rate and latency rise (time-decayed
//	    averages); an instance that keeps failing is ejected until a probe
//	    passes, and a floor keeps every live instance in the rotation so its
//	    statistics stay fresh.
//
// Update replaces the set atomically; instances that stay keep their
// statistics (in-flight counts, latency, ejection). Every balancer is safe
// for concurrent use, and Pick and Done do not allocate.
package balance

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// ErrNoInstance is returned by Pick when the target has no instance.
var ErrNoInstance = errors.New("no instance available")

// ErrUnknownPolicy is returned by New for a policy name it does not know.
var ErrUnknownPolicy = errors.New("unknown load balancing policy")

// Instance is one runtime hosting the target app, as the catalog
// describes it.
type Instance struct {
	// ID identifies the instance across updates (node name and app-id);
	// statistics follow it.
	ID string
	// Addr is where to reach it (host:port of the runtime's internal
	// endpoint).
	Addr string
	// DC is the instance's data center.
	DC string
	// Weight is its static share relative to the others (≤ 0 means 1).
	Weight int
}

func (i Instance) weight() int {
	if i.Weight <= 0 {
		return 1
	}
	return i.Weight
}

// Done reports how a picked call ended: its error (nil on success) and
// its latency. Call it exactly once per successful Pick.
type Done func(err error, latency time.Duration)

// Balancer picks instances of one target app.
type Balancer interface {
	// Pick chooses an instance for a call. key is the request's affinity
	// key; only Rendezvous uses it.
	Pick(key string) (Instance, Done, error)
	// Update replaces the instance set. Instances with an empty ID are
	// ignored, and of several with one ID the last wins.
	Update(instances []Instance)
}

// Source is a source of random numbers (math/rand/v2's PCG and ChaCha8
// fit). It must be safe for concurrent use if Pick is called
// concurrently; tests pass a seeded one.
type Source interface {
	Uint64() uint64
}

// Clock tells the time; tests inject a manual one.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

// Now implements Clock.
func (systemClock) Now() time.Time { return time.Now() }

// runtimeSource is math/rand/v2's global generator: per-thread state, no
// lock.
type runtimeSource struct{}

// Uint64 implements Source.
func (runtimeSource) Uint64() uint64 { return rand.Uint64() }

// Policy names a load balancing policy, as configuration spells it.
type Policy string

// The policies.
const (
	PolicyRoundRobin       Policy = "roundRobin"
	PolicyLeastOutstanding Policy = "leastOutstanding"
	PolicyRendezvous       Policy = "rendezvous"
	PolicyWeighted         Policy = "weighted"
)

// Options configure New.
type Options struct {
	// Rand defaults to math/rand/v2's global generator.
	Rand Source
	// Clock defaults to the system clock (Weighted only).
	Clock Clock
	// Weighted tunes the Weighted policy.
	Weighted WeightedConfig
}

// New returns a balancer of the named policy.
func New(p Policy, o Options) (Balancer, error) {
	switch p {
	case PolicyRoundRobin:
		return NewRoundRobin(), nil
	case PolicyLeastOutstanding:
		return NewLeastOutstanding(o.Rand), nil
	case PolicyRendezvous:
		return NewRendezvous(), nil
	case PolicyWeighted:
		return NewWeighted(o.Weighted, o.Clock, o.Rand)
	}
	return nil, fmt.Errorf("%w %q (want %s, %s, %s or %s)", ErrUnknownPolicy, string(p),
		PolicyRoundRobin, PolicyLeastOutstanding, PolicyRendezvous, PolicyWeighted)
}

// normalize drops instances without an ID and keeps the last of each ID,
// in the order of first appearance.
func normalize(in []Instance) []Instance {
	out := make([]Instance, 0, len(in))
	at := make(map[string]int, len(in))
	for _, i := range in {
		if i.ID == "" {
			continue
		}
		if k, ok := at[i.ID]; ok {
			out[k] = i
			continue
		}
		at[i.ID] = len(out)
		out = append(out, i)
	}
	return out
}

// noDone is the Done of balancers that keep no statistics.
var noDone Done = func(error, time.Duration) {}

// uniform returns a float64 in [0, 1).
func uniform(s Source) float64 { return float64(s.Uint64()>>11) / (1 << 53) }
