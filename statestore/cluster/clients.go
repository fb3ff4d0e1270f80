package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"

	"mecha/internal/clustermap"
	"mecha/internal/muxconn"
)

// Clients is the pool of muxconn clients to the other members, one per
// member, created at its first use and closed when the member leaves the
// map (or changes address). The runtime keeps one for all its routers.
type Clients struct {
	// Token and TLS are the muxconn client's (the peer token, the
	// cluster's mutual TLS).
	Token string
	TLS   *tls.Config

	mu      sync.Mutex
	m       map[string]*muxconn.Client // by member id
	version uint64                     // of the map last pruned against
	closed  bool
}

// client returns the client of member in m.
func (p *Clients) client(m *clustermap.Map, member string) (*muxconn.Client, error) {
	mb := m.Member(member)
	if mb == nil || mb.Addr == "" {
		return nil, fmt.Errorf("member %q is not in the cluster map (version %d)", member, m.Version)
	}
	var stale []*muxconn.Client
	defer func() {
		for _, cl := range stale { // calls in flight fail with muxconn.ErrClosed
			cl.Close()
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, muxconn.ErrClosed
	}
	if p.m == nil {
		p.m = map[string]*muxconn.Client{}
	}
	if m.Version > p.version {
		stale = p.pruneLocked(m)
	}
	cl := p.m[member]
	if cl != nil && cl.Addr != mb.Addr {
		stale = append(stale, cl)
		cl = nil
	}
	if cl == nil {
		cl = &muxconn.Client{Addr: mb.Addr, Token: p.Token, TLS: p.TLS}
		p.m[member] = cl
	}
	return cl, nil
}

// Call calls method on member, at the address m gives it (the broker
// cluster's replica fetches ride the same connections).
func (p *Clients) Call(ctx context.Context, m *clustermap.Map, member string, method uint16, body []byte) ([]byte, error) {
	cl, err := p.client(m, member)
	if err != nil {
		return nil, err
	}
	return cl.Call(ctx, method, body)
}

// pruneLocked takes out the clients of members m no longer holds, or
// holds as left, for the caller to close.
func (p *Clients) pruneLocked(m *clustermap.Map) []*muxconn.Client {
	p.version = m.Version
	var out []*muxconn.Client
	for id, cl := range p.m {
		if mb := m.Member(id); mb == nil || mb.State == clustermap.StateLeft {
			delete(p.m, id)
			out = append(out, cl)
		}
	}
	return out
}

// Prune closes the clients of members m no longer holds; the runtime
// may call it with each new map (routers also do, lazily).
func (p *Clients) Prune(m *clustermap.Map) {
	p.mu.Lock()
	var stale []*muxconn.Client
	if m.Version > p.version {
		stale = p.pruneLocked(m)
	}
	p.mu.Unlock()
	for _, cl := range stale {
		cl.Close()
	}
}

// Close closes every client.
func (p *Clients) Close() error {
	p.mu.Lock()
	cls := p.m
	p.m, p.closed = nil, true
	p.mu.Unlock()
	for _, cl := range cls {
		cl.Close()
	}
	return nil
}
