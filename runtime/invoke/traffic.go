package invoke

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"mecha/runtime/balance"
	"mecha/runtime/membership"
)

// ErrTraffic is wrapped by every invalid traffic policy.
var ErrTraffic = errors.New("invalid traffic policy")

// TrafficSpec is how calls to one app are balanced and routed, for every
// caller in the cluster. It is set by a TrafficPolicy document
// (mecha.io/v1alpha1) in a resources path or through the admin API, and
// spread by gossip; the newest setting wins.
type TrafficSpec struct {
	// App is the target app-id.
	App string `json:"app"`
	// LoadBalancer picks among the instances of the chosen DC:
	// roundRobin (default), leastOutstanding, rendezvous (by HashHeader)
	// or weighted (by recent errors and latency).
	LoadBalancer string `json:"loadBalancer,omitempty"`
	// HashHeader is the request header whose value keys rendezvous
	// hashing, so that one key keeps going to one instance.
	HashHeader string `json:"hashHeader,omitempty"`
	// DCPreference is the order of the other DCs to fail over to when the
	// caller's own DC has no healthy instance.
	DCPreference []string `json:"dcPreference,omitempty"`
	// Shift sends shares of some callers' calls to other DCs.
	Shift []Shift `json:"shift,omitempty"`
}

// Shift sends the calls of callers in FromDC ("*": any DC) to the DCs of
// To in those percentages (summing to 100). A share whose DC has no
// healthy instance falls back to the usual order.
type Shift struct {
	FromDC string         `json:"fromDC"`
	To     map[string]int `json:"to"`
}

// ParseTraffic decodes and validates a spec, naming the bad field.
func ParseTraffic(b []byte) (TrafficSpec, error) {
	var s TrafficSpec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("%w: %v", ErrTraffic, strings.TrimPrefix(err.Error(), "json: "))
	}
	return s, s.Validate()
}

// Validate names the first bad field.
func (s TrafficSpec) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w for %q: spec.%s: %s", ErrTraffic, s.App, field, fmt.Sprintf(format, args...))
	}
	if s.App == "" {
		return fmt.Errorf("%w: spec.app: must be set", ErrTraffic)
	}
	if len(s.App) > 128 {
		return fmt.Errorf("%w: spec.app: longer than 128 bytes", ErrTraffic)
	}
	if b, _ := json.Marshal(s); len(b) > membership.MaxRuleSpec {
		return fmt.Errorf("%w for %q: spec: %d bytes encoded, over the %d a rule may take", ErrTraffic, s.App, len(b), membership.MaxRuleSpec)
	}
	switch balance.Policy(s.LoadBalancer) {
	case "", balance.PolicyRoundRobin, balance.PolicyLeastOutstanding, balance.PolicyWeighted:
	case balance.PolicyRendezvous:
		if s.HashHeader == "" {
			return bad("hashHeader", "rendezvous needs the header to hash on")
		}
	default:
		return bad("loadBalancer", "want roundRobin, leastOutstanding, rendezvous or weighted, got %q", s.LoadBalancer)
	}
	for i, sh := range s.Shift {
		if sh.FromDC == "" {
			return bad(fmt.Sprintf("shift[%d].fromDC", i), "must be set (\"*\" for every DC)")
		}
		sum := 0
		for dc, p := range sh.To {
			if dc == "" || p < 0 {
				return bad(fmt.Sprintf("shift[%d].to", i), "%q: %d: want a DC and a percentage ≥ 0", dc, p)
			}
			sum += p
		}
		if sum != 100 {
			return bad(fmt.Sprintf("shift[%d].to", i), "the percentages add up to %d, want 100", sum)
		}
	}
	return nil
}

// shiftFor is the shift that applies to callers in dc, with its DCs in a
// fixed order and cumulative percentages.
func (s *TrafficSpec) shiftFor(dc string) (dcs []string, cum []int) {
	if s == nil {
		return nil, nil
	}
	for _, sh := range s.Shift {
		if sh.FromDC != dc && sh.FromDC != "*" {
			continue
		}
		for d := range sh.To {
			dcs = append(dcs, d)
		}
		sort.Strings(dcs)
		total := 0
		for _, d := range dcs {
			total += sh.To[d]
			cum = append(cum, total)
		}
		return dcs, cum
	}
	return nil, nil
}

// shiftDC chooses a shift's DC for the n-th call: over every 100 calls
// the shares are exact, interleaved rather than in runs.
func shiftDC(dcs []string, cum []int, n uint64) string {
	// Spread the 100 slots so that consecutive calls do not all go to
	// one DC: slot = n*37 mod 100 visits every slot once per 100 calls.
	slot := int(n*37%100) + 1
	for i, c := range cum {
		if slot <= c {
			return dcs[i]
		}
	}
	return dcs[len(dcs)-1]
}

// preference is the failover order of DCs after the caller's own.
func (s *TrafficSpec) preference(local string, have []string) []string {
	var out []string
	if s != nil {
		for _, d := range s.DCPreference {
			if d != local && slices.Contains(have, d) && !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
	}
	rest := []string{}
	for _, d := range have {
		if d != local && !slices.Contains(out, d) {
			rest = append(rest, d)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}
