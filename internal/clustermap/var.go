package clustermap

import (
	"context"
	"sync"
)

// Source gives the newest cluster map this runtime knows (the
// control plane's applied map), and lets a caller wait for a newer one.
type Source interface {
	// Map returns the current map; never nil (an empty map before the
	// first one arrives). The map is immutable.
	Map() *Map
	// WaitNewer blocks until the map's Version is above version, or ctx
	// ends (then it returns ctx's error).
	WaitNewer(ctx context.Context, version uint64) error
}

// Var is a Source the runtime stores each applied map into.
type Var struct {
	mu      sync.Mutex
	m       *Map
	changed chan struct{} // closed and replaced by each Store
	problem error
}

// SetProblem records why no map has come (nil clears it): requests made
// before the first map name it.
func (v *Var) SetProblem(err error) {
	v.mu.Lock()
	v.problem = err
	v.mu.Unlock()
}

// Problem is the last SetProblem's error.
func (v *Var) Problem() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.problem
}

// NewVar returns a Var holding m (New() when nil).
func NewVar(m *Map) *Var {
	if m == nil {
		m = New()
	}
	return &Var{m: m, changed: make(chan struct{})}
}

// Store publishes m; a map not newer than the current one is ignored.
func (v *Var) Store(m *Map) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m == nil || m.Version <= v.m.Version && v.m.Bootstrapped() {
		return
	}
	v.m = m
	close(v.changed)
	v.changed = make(chan struct{})
}

// Map implements Source.
func (v *Var) Map() *Map {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.m
}

// WaitNewer implements Source.
func (v *Var) WaitNewer(ctx context.Context, version uint64) error {
	for {
		v.mu.Lock()
		m, ch := v.m, v.changed
		v.mu.Unlock()
		if m.Version > version {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
