package cluster

import "sync/atomic"

// Stats counts a runtime's routing decisions, for its metrics. Its
// methods are safe on a nil *Stats (no counting).
type Stats struct {
	// Local counts slot operations served by this member's engine, in
	// process.
	Local atomic.Int64
	// Remote counts slot operations sent to another member.
	Remote atomic.Int64
	// Moved counts "moved" answers: the router's map was behind.
	Moved atomic.Int64
	// Unavailable counts operations refused at once because their slot
	// had no leader (or there was no map yet).
	Unavailable atomic.Int64
}

func (s *Stats) routed(local bool) {
	switch {
	case s == nil:
	case local:
		s.Local.Add(1)
	default:
		s.Remote.Add(1)
	}
}

func (s *Stats) moved() {
	if s != nil {
		s.Moved.Add(1)
	}
}

func (s *Stats) unavailable() {
	if s != nil {
		s.Unavailable.Add(1)
	}
}
