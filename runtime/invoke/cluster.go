package invoke

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"mecha/runtime/appchannel"
	"mecha/runtime/balance"
	"mecha/runtime/membership"
)

// Catalog is what the cluster resolver reads of membership: the
// instances of an app-id, in this DC and (through their gateways) in
// others, and the traffic rule for calls to it.
type Catalog interface {
	Instances(appID string) []membership.Instance
	DC() string
	Traffic(app string) (membership.TrafficRule, bool)
	// Version moves whenever the catalog changes.
	Version() uint64
}

// Cluster resolves the runtime's own app locally and every other app-id
// through the gossip catalog, to the internal port of a runtime that
// hosts it (or, in another DC, of a gateway of that DC). The DC is
// chosen first: a traffic shift for the caller's DC when one applies and
// its DC has a healthy instance; else the caller's own DC; else the other
// DCs in the traffic policy's dcPreference order, then by name.
// Instances known only from the disk cache (gossip has not confirmed
// them) are used when there is nothing fresher. Within the DC the app's
// load balancer picks (round robin unless its traffic policy says
// otherwise).
type Cluster struct {
	// Local is the app Resolve serves itself; nil resolves every app-id
	// through the catalog (For gives each hosted app its own).
	Local   *Local
	Catalog Catalog
	// MaxResponseBytes caps what a remote runtime may answer.
	MaxResponseBytes int
	// PeerToken, when set, is sent to other runtimes' internal ports
	// (mecha-peer-token), which refuse calls without it.
	PeerToken string
	// TLS, when set, is the cluster's mutual TLS for connections to other
	// runtimes' internal ports.
	TLS *tls.Config
	// Self is this runtime's instance id (membership.InstanceID): a call
	// naming it (HeaderInstance) is for the app hosted here.
	Self string

	mu       sync.Mutex // guards channels and apps
	channels map[string]*appchannel.HTTP
	apps     map[string]*appRouting
}

// appRouting is what the resolver keeps per target app.
type appRouting struct {
	calls atomic.Uint64 // for traffic shift shares

	mu        sync.Mutex // guards the fields below
	stamp     uint64
	raw       string       // the rule's spec as received
	spec      *TrafficSpec // nil without a (valid) rule
	groups    *groups      // the last catalog version's instances
	balancers map[string]*groupBalancer
}

// groups are an app's usable instances by DC, fresh and from the cache,
// as of one catalog version: resolving reuses them until the catalog
// changes, rather than copying and sorting the catalog's list per call.
type groups struct {
	version      uint64
	all          int // instances in the catalog, usable or not
	fresh, stale map[string][]membership.Instance
}

// groupsFor returns the app's groups for the catalog as it is; a
// gateway's local-only view is built afresh each time (it is rare).
func (st *appRouting) groupsFor(cat Catalog, appID, dc string, localOnly bool) *groups {
	v := cat.Version()
	if !localOnly {
		st.mu.Lock()
		g := st.groups
		st.mu.Unlock()
		if g != nil && g.version == v {
			return g
		}
	}
	all := cat.Instances(appID)
	g := &groups{version: v, all: len(all), fresh: map[string][]membership.Instance{}, stale: map[string][]membership.Instance{}}
	for _, in := range all {
		if !in.Healthy || in.InternalPort == 0 {
			continue
		}
		d := in.DC
		if d == "" {
			d = dc
		}
		if localOnly && d != dc {
			continue
		}
		if in.Stale {
			g.stale[d] = append(g.stale[d], in)
		} else {
			g.fresh[d] = append(g.fresh[d], in)
		}
	}
	if !localOnly {
		st.mu.Lock()
		st.groups = g
		st.mu.Unlock()
	}
	return g
}

// groupBalancer balances over one candidate group (a DC's instances, or
// its gateways).
type groupBalancer struct {
	b     balance.Balancer
	addrs []string
}

type headersKey struct{}

// WithHeaders gives the resolver the request's headers (for a rendezvous
// load balancer's hash header).
func WithHeaders(ctx context.Context, get func(name string) string) context.Context {
	return context.WithValue(ctx, headersKey{}, get)
}

// For is the resolver of one app hosted here: its own app-id resolves
// to its channel, every other one through the cluster (sharing its
// connections and balancers).
func (c *Cluster) For(l *Local) Resolver { return localFirst{l, c} }

type localFirst struct {
	l *Local
	c *Cluster
}

func (r localFirst) Resolve(ctx context.Context, appID string) (Target, error) {
	if r.l.IsSelf(appID) && r.c.here(InstanceOf(ctx)) {
		return r.l.Resolve(ctx, appID)
	}
	return r.c.remote(ctx, appID)
}

// Resolve implements Resolver.
func (c *Cluster) Resolve(ctx context.Context, appID string) (Target, error) {
	if c.Local != nil && c.Local.IsSelf(appID) && c.here(InstanceOf(ctx)) {
		return c.Local.Resolve(ctx, appID)
	}
	return c.remote(ctx, appID)
}

// here reports whether a call naming instance (or none) may be served
// by the app hosted here.
func (c *Cluster) here(instance string) bool { return instance == "" || instance == c.Self }

// remote resolves appID through the catalog.
func (c *Cluster) remote(ctx context.Context, appID string) (Target, error) {
	id := appID
	if i := strings.LastIndexByte(id, '.'); i > 0 && len(c.Catalog.Instances(id)) == 0 {
		id = id[:i] // "app.namespace"
	}
	if inst := InstanceOf(ctx); inst != "" {
		addr, direct, err := c.pickInstance(id, inst, false)
		if err != nil {
			return Target{}, err
		}
		return Target{AppID: id, Channel: c.channel(addr), Remote: true, Instance: direct}, nil
	}
	get, _ := ctx.Value(headersKey{}).(func(string) string)
	addr, done, err := c.pick(id, false, get)
	if err != nil {
		return Target{}, err
	}
	return Target{AppID: id, Channel: c.channel(addr), Remote: true, Done: done}, nil
}

// ResolveLocalDC is a gateway's resolution of a call from another DC:
// only instances of its own DC, never another gateway. instance, when
// set, is the one instance the call names.
func (c *Cluster) ResolveLocalDC(appID, instance string) (Target, error) {
	if instance != "" {
		addr, _, err := c.pickInstance(appID, instance, true)
		if err != nil {
			return Target{}, err
		}
		return Target{AppID: appID, Channel: c.channel(addr), Remote: true, Instance: true}, nil
	}
	addr, done, err := c.pick(appID, true, nil)
	if err != nil {
		return Target{}, err
	}
	return Target{AppID: appID, Channel: c.channel(addr), Remote: true, Done: done}, nil
}

// routing is appID's state, with its traffic rule brought up to date.
func (c *Cluster) routing(appID string) *appRouting {
	c.mu.Lock()
	if c.apps == nil {
		c.apps = map[string]*appRouting{}
	}
	st := c.apps[appID]
	if st == nil {
		st = &appRouting{balancers: map[string]*groupBalancer{}}
		c.apps[appID] = st
	}
	c.mu.Unlock()
	rule, ok := c.Catalog.Traffic(appID)
	st.mu.Lock()
	defer st.mu.Unlock()
	if !ok {
		rule = membership.TrafficRule{}
	}
	if rule.Stamp != st.stamp || string(rule.Spec) != st.raw {
		st.stamp, st.raw, st.spec = rule.Stamp, string(rule.Spec), nil
		if ok {
			// A rule this runtime cannot read (a newer one's) is ignored.
			if spec, err := ParseTraffic(rule.Spec); err == nil {
				st.spec = &spec
			}
		}
		st.balancers = map[string]*groupBalancer{} // the policy may have changed
	}
	return st
}

// pick chooses the address of a runtime (or gateway) to send appID's
// call to, and the balancer's completion callback.
func (c *Cluster) pick(appID string, localOnly bool, header func(string) string) (string, balance.Done, error) {
	st := c.routing(appID)
	dc := c.Catalog.DC()
	g := st.groupsFor(c.Catalog, appID, dc, localOnly)
	all, fresh, stale := g.all, g.fresh, g.stale
	st.mu.Lock()
	spec := st.spec
	st.mu.Unlock()
	var chosen []membership.Instance
	group := ""
	if dcs, cum := spec.shiftFor(dc); !localOnly && dcs != nil {
		if d := shiftDC(dcs, cum, st.calls.Add(1)); len(fresh[d]) > 0 {
			chosen, group = fresh[d], d
		}
	}
	for _, pool := range []map[string][]membership.Instance{fresh, stale} {
		if chosen != nil {
			break
		}
		if len(pool[dc]) > 0 {
			chosen, group = pool[dc], dc
			break
		}
		var have []string
		for d := range pool {
			have = append(have, d)
		}
		for _, d := range spec.preference(dc, have) {
			chosen, group = pool[d], d
			break
		}
	}
	if chosen == nil {
		if all > 0 {
			return "", nil, fmt.Errorf("%w: %q has %d instances and none is healthy", ErrAppNotFound, appID, all)
		}
		return "", nil, fmt.Errorf("%w: couldn't find service: %s", ErrAppNotFound, appID)
	}
	var cands []balance.Instance
	for _, in := range chosen {
		if group == dc {
			a := net.JoinHostPort(in.Addr, strconv.Itoa(in.InternalPort))
			cands = append(cands, balance.Instance{ID: a, Addr: a, DC: group})
			continue
		}
		for _, g := range in.Gateways {
			if !slices.ContainsFunc(cands, func(x balance.Instance) bool { return x.Addr == g }) {
				cands = append(cands, balance.Instance{ID: g, Addr: g, DC: group})
			}
		}
	}
	if len(cands) == 0 {
		return "", nil, fmt.Errorf("%w: %q runs in %s, which has no gateway", ErrAppNotFound, appID, group)
	}
	key := ""
	if spec != nil && spec.HashHeader != "" && header != nil {
		key = header(spec.HashHeader)
	}
	inst, done, err := st.balancer(group, spec, cands).Pick(key)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: %v", ErrAppNotFound, appID, err)
	}
	return inst.Addr, done, nil
}

// pickInstance is the address to send a call for one instance of appID
// to: the internal port of its runtime in this DC (direct), or a gateway
// of its DC, in turn (which resolves the instance again, in its DC
// only). An instance that gossip confirms wins over one known only from
// the disk cache. No balancer is involved: there is one target.
func (c *Cluster) pickInstance(appID, instance string, localOnly bool) (addr string, direct bool, err error) {
	dc := c.Catalog.DC()
	var found *membership.Instance
	for _, in := range c.Catalog.Instances(appID) {
		if in.ID == instance && (found == nil || found.Stale && !in.Stale) {
			found = &in
		}
	}
	if found == nil {
		return "", false, fmt.Errorf("%w: no runtime hosts %q as instance %q", ErrInstanceNotFound, appID, instance)
	}
	if !found.Healthy || found.InternalPort == 0 {
		return "", false, fmt.Errorf("%w: instance %q of %q is not healthy", ErrInstanceNotFound, instance, appID)
	}
	d := found.DC
	if d == "" || d == dc {
		return net.JoinHostPort(found.Addr, strconv.Itoa(found.InternalPort)), true, nil
	}
	if localOnly {
		return "", false, fmt.Errorf("%w: instance %q of %q runs in %s, not in this DC", ErrInstanceNotFound, instance, appID, d)
	}
	if len(found.Gateways) == 0 {
		return "", false, fmt.Errorf("%w: %q runs in %s, which has no gateway", ErrAppNotFound, appID, d)
	}
	n := c.routing(appID).calls.Add(1)
	return found.Gateways[n%uint64(len(found.Gateways))], false, nil
}

// balancer is the group's balancer, its instance set brought up to date.
func (st *appRouting) balancer(group string, spec *TrafficSpec, cands []balance.Instance) balance.Balancer {
	st.mu.Lock()
	defer st.mu.Unlock()
	gb := st.balancers[group]
	if gb == nil {
		policy := balance.PolicyRoundRobin
		if spec != nil && spec.LoadBalancer != "" {
			policy = balance.Policy(spec.LoadBalancer)
		}
		b, err := balance.New(policy, balance.Options{})
		if err != nil { // Validate checked the name
			b = balance.NewRoundRobin()
		}
		gb = &groupBalancer{b: b}
		st.balancers[group] = gb
	}
	addrs := make([]string, len(cands))
	for i, c := range cands {
		addrs[i] = c.ID
	}
	if !slices.Equal(addrs, gb.addrs) {
		gb.b.Update(cands)
		gb.addrs = addrs
	}
	return gb.b
}

// ProbeLoop probes, every interval until ctx ends, the instances the
// weighted balancers ejected that are due a probe: the instance's runtime
// answers for its app (ProbeHeader), and a pass lets the balancer
// send it traffic again.
func (c *Cluster) ProbeLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.probeOnce(ctx)
	}
}

func (c *Cluster) probeOnce(ctx context.Context) {
	type due struct {
		app string
		w   *balance.Weighted
		in  balance.Instance
	}
	var list []due
	c.mu.Lock()
	for app, st := range c.apps {
		st.mu.Lock()
		for _, gb := range st.balancers {
			if w, ok := gb.b.(*balance.Weighted); ok {
				for _, in := range w.DueProbes(nil) {
					list = append(list, due{app, w, in})
				}
			}
		}
		st.mu.Unlock()
	}
	c.mu.Unlock()
	for _, d := range list {
		go func() {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			d.w.ReportProbe(d.in.ID, c.probe(pctx, d.in.Addr, d.app) == nil)
		}()
	}
}

// probe asks the runtime at addr whether it serves app.
func (c *Cluster) probe(ctx context.Context, addr, app string) error {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI("/")
	req.Header.Set(ProbeHeader, "1")
	req.Header.Set(HeaderCallee, app)
	if err := c.channel(addr).Do(ctx, req, resp); err != nil {
		return err
	}
	if resp.StatusCode() != fasthttp.StatusNoContent {
		return fmt.Errorf("probe of %s at %s: %d", app, addr, resp.StatusCode())
	}
	return nil
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
		opts := appchannel.HTTPOptions{Address: addr, MaxResponseBytes: c.MaxResponseBytes, TLS: c.TLS}
		if c.PeerToken != "" {
			opts.Headers = map[string]string{TokenHeader: c.PeerToken}
		}
		ch = appchannel.NewHTTP(opts)
		c.channels[addr] = ch
	}
	return ch
}
