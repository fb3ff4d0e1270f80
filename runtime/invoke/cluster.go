package invoke

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"mecha/runtime/appchannel"
	"mecha/runtime/membership"
)

// Catalog is what the cluster resolver reads of membership: the
// instances of an app-id, in this DC and (through their gateways) in
// others.
type Catalog interface {
	Instances(appID string) []membership.Instance
	DC() string
}

// Cluster resolves the runtime's own app locally and every other app-id
// through the gossip catalog, to the internal port of a runtime that
// hosts it. Callers are served from their own DC first: a healthy
// instance here wins; only when this DC has none does the call go to
// another DC, through that DC's gateways. Among the candidates it picks
// round robin. Instances known only from the disk cache (gossip has not
// confirmed them) are used when there is nothing fresher.
type Cluster struct {
	Local   *Local
	Catalog Catalog
	// MaxResponseBytes caps what a remote runtime may answer.
	MaxResponseBytes int

	mu       sync.Mutex // guards channels and next
	channels map[string]*appchannel.HTTP
	next     map[string]*atomic.Uint64
}

// Resolve implements Resolver.
func (c *Cluster) Resolve(ctx context.Context, appID string) (Target, error) {
	if c.Local.IsSelf(appID) {
		return c.Local.Resolve(ctx, appID)
	}
	id := appID
	if i := strings.LastIndexByte(id, '.'); i > 0 && len(c.Catalog.Instances(id)) == 0 {
		id = id[:i] // "app.namespace"
	}
	addr, err := c.pick(id, false)
	if err != nil {
		return Target{}, err
	}
	return Target{AppID: id, Channel: c.channel(addr), Remote: true}, nil
}

// ResolveLocalDC is a gateway's resolution of a call from another DC:
// only instances of its own DC, never another gateway.
func (c *Cluster) ResolveLocalDC(appID string) (*appchannel.HTTP, error) {
	addr, err := c.pick(appID, true)
	if err != nil {
		return nil, err
	}
	return c.channel(addr), nil
}

// pick chooses the address of a runtime (or gateway) to send appID's
// call to.
func (c *Cluster) pick(appID string, localOnly bool) (string, error) {
	all := c.Catalog.Instances(appID)
	dc := c.Catalog.DC()
	var here, hereStale, away, awayStale []string
	for _, in := range all {
		if !in.Healthy || in.InternalPort == 0 {
			continue
		}
		if in.DC == dc || in.DC == "" {
			a := net.JoinHostPort(in.Addr, strconv.Itoa(in.InternalPort))
			if in.Stale {
				hereStale = append(hereStale, a)
			} else {
				here = append(here, a)
			}
			continue
		}
		if localOnly {
			continue
		}
		if in.Stale {
			awayStale = append(awayStale, in.Gateways...)
		} else {
			away = append(away, in.Gateways...)
		}
	}
	for _, cands := range [][]string{here, away, hereStale, awayStale} {
		if len(cands) > 0 {
			return cands[c.counter(appID).Add(1)%uint64(len(cands))], nil
		}
	}
	if len(all) > 0 {
		return "", fmt.Errorf("%w: %q has %d instances and none is healthy", ErrAppNotFound, appID, len(all))
	}
	return "", fmt.Errorf("%w: couldn't find service: %s", ErrAppNotFound, appID)
}

func (c *Cluster) counter(appID string) *atomic.Uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next == nil {
		c.next = map[string]*atomic.Uint64{}
	}
	n := c.next[appID]
	if n == nil {
		n = &atomic.Uint64{}
		c.next[appID] = n
	}
	return n
}

// channel is the pooled connection to a runtime's internal port.
func (c *Cluster) channel(addr string) *appchannel.HTTP {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.channels == nil {
		c.channels = map[string]*appchannel.HTTP{}
	}
	ch := c.channels[addr]
	if ch == nil {
		ch = appchannel.NewHTTP(appchannel.HTTPOptions{Address: addr, MaxResponseBytes: c.MaxResponseBytes})
		c.channels[addr] = ch
	}
	return ch
}
