package controlplane

import (
	"context"
	"sync"

	"mecha/internal/clustermap"
)

// mapState holds the current map and wakes those waiting for a newer
// one. Node and Client share it.
type mapState struct {
	mu      sync.Mutex
	m       *clustermap.Map
	index   uint64        // the raft index applied (Node only)
	changed chan struct{} // closed and replaced when m or index changes
}

func newMapState(m *clustermap.Map) *mapState {
	return &mapState{m: m, changed: make(chan struct{})}
}

func (s *mapState) get() *clustermap.Map {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}

// set installs m if it is newer than the current map.
func (s *mapState) set(m *clustermap.Map) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m != nil && m.Version <= s.m.Version && s.m.ClusterID == m.ClusterID {
		return
	}
	s.m = m
	close(s.changed)
	s.changed = make(chan struct{})
}

// setApplied installs m (the map after raft index index) and wakes the
// waiters when either changed.
func (s *mapState) setApplied(m *clustermap.Map, index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == m && s.index == index {
		return
	}
	s.m, s.index = m, index
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitIndex waits until raft index index is applied, or ctx ends.
func (s *mapState) waitIndex(ctx context.Context, index uint64) error {
	for {
		s.mu.Lock()
		i, ch := s.index, s.changed
		s.mu.Unlock()
		if i >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// watch returns a channel closed at the next change.
func (s *mapState) watch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// waitNewer returns the first map whose version is above version, or the
// current map and ctx's error when ctx ends first.
func (s *mapState) waitNewer(ctx context.Context, version uint64) (*clustermap.Map, error) {
	for {
		s.mu.Lock()
		m, ch := s.m, s.changed
		s.mu.Unlock()
		if m.Version > version {
			return m, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return m, ctx.Err()
		}
	}
}
