package controlplane

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	"mecha/internal/backoff"
	"mecha/internal/clustermap"
)

// DefaultPollWait is how long a Client's long poll waits at a server.
const DefaultPollWait = 30 * time.Second

// Client follows the map from the servers, for runtimes that are not
// servers: it long-polls MethodGetMap on one server after another and
// offers the same Map / Watch / WaitNewer as Node.
type Client struct {
	// Servers returns the servers' addresses to poll (the runtime's gossip
	// view); called before each poll.
	Servers func() []string
	// Transport reaches them.
	Transport Transport
	// PollWait is how long a server may hold a poll (DefaultPollWait when
	// zero).
	PollWait time.Duration
	// ClusterID, when set, is the cluster this runtime belongs to: a
	// server answering with another cluster's map is skipped, and the
	// mismatch (ErrClusterID, naming both ids) is logged and given to
	// OnProblem.
	ClusterID string
	// OnProblem, when set, hears why no map could be taken from the
	// servers (a cluster id mismatch), and nil once a map is taken.
	OnProblem func(error)
	// Logger is the wiring's.
	Logger *slog.Logger

	maps *mapState
}

// NewClient returns a Client holding the empty map; Run fills it.
func NewClient(servers func() []string, t Transport) *Client {
	return &Client{Servers: servers, Transport: t, maps: newMapState(clustermap.New())}
}

// Run polls until ctx ends.
func (c *Client) Run(ctx context.Context) {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	wait := c.PollWait
	if wait <= 0 {
		wait = DefaultPollWait
	}
	bo := backoff.Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second}.New()
	next := 0
	for ctx.Err() == nil {
		servers := c.Servers()
		if len(servers) == 0 {
			if bo.Wait(ctx) != nil {
				return
			}
			continue
		}
		addr := servers[next%len(servers)]
		m, err := c.poll(ctx, addr, wait)
		if err == nil && c.ClusterID != "" && m.Bootstrapped() && m.ClusterID != c.ClusterID {
			err = fmt.Errorf("%w: server %s is in cluster %q, this runtime is configured for cluster %q (--cluster-id)", ErrClusterID, addr, m.ClusterID, c.ClusterID)
			if c.OnProblem != nil {
				c.OnProblem(err)
			}
			log.Error("the cluster map", "err", err)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Debug("polling the cluster map", "addr", addr, "err", err)
			next++
			if bo.Wait(ctx) != nil {
				return
			}
			continue
		}
		bo.Reset()
		if c.OnProblem != nil {
			c.OnProblem(nil)
		}
		c.maps.set(m)
	}
}

func (c *Client) poll(ctx context.Context, addr string, wait time.Duration) (*clustermap.Map, error) {
	body := make([]byte, 12)
	binary.BigEndian.PutUint64(body, c.maps.get().Version)
	binary.BigEndian.PutUint32(body[8:], uint32(wait/time.Millisecond))
	cctx, cancel := context.WithTimeout(ctx, wait+5*time.Second)
	defer cancel()
	b, err := c.Transport.Call(cctx, addr, MethodGetMap, body)
	if err != nil {
		return nil, err
	}
	return clustermap.DecodeMap(b)
}

// Propose has a server apply c (MethodSubmit: the server proposes it
// through the leader), trying the servers in turn until one answers or ctx
// ends. It returns nil once c is applied on that server, or Apply's
// refusal (matching clustermap's errors with errors.Is); the map this
// Client holds follows at its next poll.
func (c *Client) Propose(ctx context.Context, cmd clustermap.Command) error {
	body, err := clustermap.Encode(cmd)
	if err != nil {
		return err
	}
	bo := backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second}.New()
	for i := 0; ; i++ {
		servers := c.Servers()
		if len(servers) > 0 {
			b, err := c.Transport.Call(ctx, servers[i%len(servers)], MethodSubmit, body)
			if err == nil {
				if len(b) < 9 {
					return fmt.Errorf("controlplane: short submit answer from %s", servers[i%len(servers)])
				}
				if b[8] == statusRefused {
					return refusal(string(b[9:]))
				}
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if err := bo.Wait(ctx); err != nil {
			return err
		}
	}
}

// Map returns the newest map fetched. It is immutable.
func (c *Client) Map() *clustermap.Map { return c.maps.get() }

// Watch returns a channel closed at the next change of the map.
func (c *Client) Watch() <-chan struct{} { return c.maps.watch() }

// WaitNewer waits until the map's Version is above version (then Map
// returns it), or ctx ends (then it returns ctx's error). With Map it
// makes Client a statestore/cluster MapSource.
func (c *Client) WaitNewer(ctx context.Context, version uint64) error {
	_, err := c.maps.waitNewer(ctx, version)
	return err
}
