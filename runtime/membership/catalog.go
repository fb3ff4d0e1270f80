package membership

import (
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"mecha/internal/apicatalog"
)

// InstanceID names one run of a node: its name and its incarnation, so
// that a runtime started again (with a new incarnation) is a new
// instance, and a call naming the old one finds it gone.
func InstanceID(node string, incarnation uint64) string {
	return node + "@" + strconv.FormatUint(incarnation, 36)
}

// Instance is one runtime hosting an app-id, as the catalog knows it.
type Instance struct {
	AppID string
	Node  string
	// ID is the run of the node that hosts it (InstanceID).
	ID           string
	DC           string
	Region       string
	Addr         string
	InternalPort int
	Healthy      bool
	// Gateways are the host:port (internal port) of the gateways that
	// front a remote-DC instance; empty for the local DC.
	Gateways []string
	// Stale means the instance comes from the disk cache (or the last
	// thing seen before the node lost all its peers) and gossip has not
	// confirmed it yet.
	Stale bool
}

// Member is a live member of this node's LAN pool.
type Member struct {
	Name string
	Addr string
	Meta Meta
}

// CatalogConfig tunes the catalog's timers.
type CatalogConfig struct {
	// ViewTTL drops a remote DC's view that was not refreshed.
	ViewTTL time.Duration
	// TombstoneTTL is how long the entry of a departed node is kept to
	// reject its stale broadcasts still in flight.
	TombstoneTTL time.Duration
	// WantGrace is how long a node waits for a broadcast after a peer's
	// meta announced a newer entry before it asks the peer directly.
	WantGrace time.Duration
	// KeepWhenIsolated keeps serving (as stale) the entries of nodes that
	// failed when their failure leaves this node with no live peer: then
	// this node's network is the likelier culprit.
	KeepWhenIsolated bool
	// SelfAPI is this node's app-facing API, listed in the disk cache
	// beside the live members' (Snapshot.APIs).
	SelfAPI apicatalog.Endpoint
}

// Event is one input of the catalog state machine.
type Event interface{ isEvent() }

// NodeJoined says the LAN pool has a live member (new, or back).
type NodeJoined struct {
	Name, Addr string
	Meta       Meta
}

// NodeUpdated says a LAN member's meta changed.
type NodeUpdated struct {
	Name, Addr string
	Meta       Meta
}

// NodeLeft says a LAN member left (Dead false) or was declared dead.
type NodeLeft struct {
	Name string
	Dead bool
}

// EntryReceived carries a node entry from a broadcast or a push/pull.
type EntryReceived struct{ Entry NodeEntry }

// ViewReceived carries a remote DC's view from the WAN or a relay.
type ViewReceived struct{ View DCView }

// LocalApps replaces this node's apps.
type LocalApps struct{ Apps []App }

// LocalTraffic sets a traffic rule from this node (an operator's).
type LocalTraffic struct{ Rule TrafficRule }

// Tick advances the catalog's clock: it expires views and tombstones and
// says which peers to ask for their entries.
type Tick struct{ Now time.Time }

// Synced says a LAN push/pull completed: this node sees the pool, so
// cached entries of nodes that are not members are gone.
type Synced struct{}

// CacheLoaded feeds the disk cache at start; its entries are stale.
type CacheLoaded struct{ Snapshot Snapshot }

func (NodeJoined) isEvent()    {}
func (NodeUpdated) isEvent()   {}
func (NodeLeft) isEvent()      {}
func (EntryReceived) isEvent() {}
func (ViewReceived) isEvent()  {}
func (LocalApps) isEvent()     {}
func (LocalTraffic) isEvent()  {}
func (Tick) isEvent()          {}
func (Synced) isEvent()        {}
func (CacheLoaded) isEvent()   {}

// Effect is what applying an event asks of the caller.
type Effect struct {
	// Changed means the catalog changed and its version moved.
	Changed bool
	// Fresh means the event brought news: spread it further.
	Fresh bool
	// Want lists members whose newer entry should be asked for.
	Want []string
	// SelfChanged means this node's own entry changed: spread it.
	SelfChanged bool
}

type member struct {
	Member
	behindSince time.Time // when its meta announced an entry we lack
	askedAt     time.Time
}

type entry struct {
	NodeEntry
	stale bool
	// gone is when the node stopped being a member (zero while it is
	// one); a gone entry is a tombstone, not served.
	gone time.Time
}

type viewKey struct{ dc, origin string }

type view struct {
	DCView
	stale    bool
	received time.Time // zero for a cached view: it does not expire
}

// Catalog maps app-ids to instances across the LAN pool and the remote
// DCs. It is a plain state machine: Apply feeds it events, and nothing
// in it blocks, sleeps or reads the clock, so it is not safe for
// concurrent use; Node serialises access.
type Catalog struct {
	cfg     CatalogConfig
	self    NodeEntry
	now     time.Time
	version uint64
	// lanVersion moves with changes to what this DC's view would hold.
	lanVersion uint64
	members    map[string]*member
	entries    map[string]*entry
	views      map[viewKey]*view
	// index maps app-ids to instances; Instances builds it on first use
	// after a change, since resolving is far more frequent than gossip.
	index map[string][]Instance
}

// NewCatalog returns a catalog for the node self (Node, DC, Addr,
// InternalPort, Gateway and Incarnation set) at time now.
func NewCatalog(self NodeEntry, now time.Time, cfg CatalogConfig) *Catalog {
	self.Apps = normalizeApps(self.Apps)
	if self.Version == 0 {
		self.Version = 1
	}
	return &Catalog{
		cfg:     cfg,
		self:    self,
		now:     now,
		version: 1,
		members: map[string]*member{},
		entries: map[string]*entry{},
		views:   map[viewKey]*view{},
	}
}

// Version moves whenever the catalog changes, so callers can cache what
// they read from it.
func (c *Catalog) Version() uint64 { return c.version }

// Local returns this node's own entry.
func (c *Catalog) Local() NodeEntry {
	e := c.self
	e.Apps = slices.Clone(e.Apps)
	e.Traffic = slices.Clone(e.Traffic)
	return e
}

// Traffic is the newest rule for calls to app this node knows, and
// whether there is one (a cleared rule counts as none).
func (c *Catalog) Traffic(app string) (TrafficRule, bool) {
	for _, r := range c.self.Traffic {
		if r.App == app {
			return r, len(r.Spec) > 0
		}
	}
	return TrafficRule{}, false
}

// adoptRule puts r in this node's entry when it supersedes the rule held
// for its app, keeping the list sorted by app.
func (c *Catalog) adoptRule(r TrafficRule) bool {
	if r.App == "" || len(r.App) > maxName || len(r.Spec) > MaxRuleSpec {
		return false // it would not encode: the whole entry would be refused
	}
	i, found := slices.BinarySearchFunc(c.self.Traffic, r.App, func(x TrafficRule, app string) int { return strings.Compare(x.App, app) })
	if found {
		if !r.supersedes(c.self.Traffic[i]) {
			return false
		}
		c.self.Traffic = slices.Clone(c.self.Traffic)
		c.self.Traffic[i] = r
		return true
	}
	if len(c.self.Traffic) >= maxRules {
		return false
	}
	c.self.Traffic = slices.Insert(slices.Clone(c.self.Traffic), i, r)
	return true
}

// adoptRules takes in the newest rules of every entry and view known.
func (c *Catalog) adoptRules() bool {
	adopted := false
	for _, e := range c.entries {
		for _, r := range e.Traffic {
			adopted = c.adoptRule(r) || adopted
		}
	}
	for _, v := range c.views {
		for i := range v.Nodes {
			for _, r := range v.Nodes[i].Traffic {
				adopted = c.adoptRule(r) || adopted
			}
		}
	}
	return adopted
}

// Apply feeds one event to the catalog.
func (c *Catalog) Apply(ev Event) Effect {
	var eff Effect
	switch ev := ev.(type) {
	case NodeJoined:
		eff = c.memberAlive(ev.Name, ev.Addr, ev.Meta)
	case NodeUpdated:
		eff = c.memberAlive(ev.Name, ev.Addr, ev.Meta)
	case NodeLeft:
		eff = c.memberLeft(ev.Name, ev.Dead)
	case EntryReceived:
		eff = c.entryReceived(ev.Entry)
	case ViewReceived:
		eff = c.viewReceived(ev.View)
	case LocalApps:
		apps := normalizeApps(ev.Apps)
		if !slices.Equal(apps, c.self.Apps) {
			c.self.Apps = apps
			c.self.Version++
			c.lanVersion++
			eff = Effect{Changed: true, Fresh: true, SelfChanged: true}
		}
	case LocalTraffic:
		if c.adoptRule(ev.Rule) {
			c.self.Version++
			c.lanVersion++
			eff = Effect{Changed: true, Fresh: true, SelfChanged: true}
		}
	case Tick:
		eff = c.tick(ev.Now)
	case Synced:
		eff = c.synced()
	case CacheLoaded:
		eff = c.cacheLoaded(ev.Snapshot)
	}
	// Rules received with others' entries that supersede ours are
	// adopted, and our entry spreads them further.
	if _, local := ev.(LocalTraffic); eff.Changed && !local && c.adoptRules() {
		c.self.Version++
		c.lanVersion++
		eff.SelfChanged = true
	}
	if eff.Changed {
		c.version++
		c.index = nil
	}
	return eff
}

func (c *Catalog) memberAlive(name, addr string, meta Meta) Effect {
	if name == c.self.Node || meta.DC != c.self.DC {
		return Effect{}
	}
	changed := false
	m := c.members[name]
	if m == nil {
		m = &member{}
		c.members[name] = m
		changed = true
	} else if m.Addr != addr || !sameMeta(m.Meta, meta) {
		changed = true
	}
	m.Member = Member{Name: name, Addr: addr, Meta: meta}
	m.Meta.Roles = slices.Clone(meta.Roles)
	e := c.entries[name]
	if e != nil {
		if !e.gone.IsZero() {
			e.gone = time.Time{}
			changed = true
		}
		if e.stale && e.Incarnation == meta.Incarnation && e.Version == meta.Version {
			e.stale = false // the meta confirms the cached entry
			changed = true
		}
	}
	if e == nil || newer(meta.Incarnation, meta.Version, e.Incarnation, e.Version) {
		if m.behindSince.IsZero() {
			m.behindSince = c.now
		}
	} else {
		m.behindSince = time.Time{}
	}
	if changed {
		c.lanVersion++
	}
	return Effect{Changed: changed}
}

func sameMeta(a, b Meta) bool {
	return slices.Equal(a.Roles, b.Roles) && a.DC == b.DC && a.Region == b.Region && a.Gateway == b.Gateway &&
		a.HTTPPort == b.HTTPPort && a.GRPCPort == b.GRPCPort && a.InternalPort == b.InternalPort && a.BrokerPort == b.BrokerPort &&
		a.Incarnation == b.Incarnation && a.Version == b.Version
}

func (c *Catalog) memberLeft(name string, dead bool) Effect {
	if _, ok := c.members[name]; !ok {
		return Effect{}
	}
	delete(c.members, name)
	c.lanVersion++
	if e := c.entries[name]; e != nil {
		if dead && len(c.members) == 0 && c.cfg.KeepWhenIsolated {
			e.stale = true
		} else {
			e.gone = c.now
		}
	}
	return Effect{Changed: true}
}

func (c *Catalog) entryReceived(n NodeEntry) Effect {
	if n.DC != c.self.DC || n.Node == c.self.Node {
		return Effect{}
	}
	e := c.entries[n.Node]
	switch {
	case e == nil || n.newerThan(&e.NodeEntry):
		ne := &entry{NodeEntry: n}
		ne.Apps = normalizeApps(n.Apps)
		if _, ok := c.members[n.Node]; !ok {
			if e != nil && !e.gone.IsZero() {
				ne.gone = e.gone
			} else {
				ne.gone = c.now // not a member (yet): held, not served
			}
		}
		c.entries[n.Node] = ne
		if m := c.members[n.Node]; m != nil && !newer(m.Meta.Incarnation, m.Meta.Version, n.Incarnation, n.Version) {
			m.behindSince = time.Time{}
		}
		c.lanVersion++
		return Effect{Changed: true, Fresh: true}
	case e.stale && e.Incarnation == n.Incarnation && e.Version == n.Version && c.members[n.Node] != nil:
		e.stale = false // confirmed; a non-member's stays stale until Synced
		return Effect{Changed: true}
	}
	return Effect{}
}

func (c *Catalog) viewReceived(v DCView) Effect {
	if v.DC == c.self.DC {
		return Effect{}
	}
	k := viewKey{v.DC, v.Origin}
	old := c.views[k]
	switch {
	case old == nil || newer(v.Incarnation, v.Seq, old.Incarnation, old.Seq):
		c.views[k] = &view{DCView: cloneView(v), received: c.now}
		return Effect{Changed: true, Fresh: true}
	case old.stale && old.Incarnation == v.Incarnation && old.Seq == v.Seq:
		old.stale = false
		old.received = c.now
		return Effect{Changed: true}
	}
	return Effect{}
}

func (c *Catalog) tick(now time.Time) Effect {
	var eff Effect
	c.now = now
	for name, e := range c.entries {
		if !e.gone.IsZero() && !e.stale && now.Sub(e.gone) > c.cfg.TombstoneTTL {
			delete(c.entries, name)
		}
	}
	for k, v := range c.views {
		if !v.received.IsZero() && now.Sub(v.received) > c.cfg.ViewTTL {
			delete(c.views, k)
			eff.Changed = true
		}
	}
	for _, name := range sortedKeys(c.members) {
		m := c.members[name]
		if m.behindSince.IsZero() || now.Sub(m.behindSince) < c.cfg.WantGrace || now.Sub(m.askedAt) < c.cfg.WantGrace {
			continue
		}
		m.askedAt = now
		eff.Want = append(eff.Want, name)
	}
	return eff
}

func (c *Catalog) synced() Effect {
	var eff Effect
	for name, e := range c.entries {
		if _, ok := c.members[name]; e.stale && !ok {
			delete(c.entries, name)
			c.lanVersion++
			eff.Changed = true
		}
	}
	for _, v := range c.views {
		if v.stale && v.received.IsZero() {
			v.received = c.now // from now on it must be refreshed
		}
	}
	return eff
}

func (c *Catalog) cacheLoaded(s Snapshot) Effect {
	var eff Effect
	if s.DC != c.self.DC {
		return eff
	}
	for _, n := range s.Entries {
		if n.DC != c.self.DC || n.Node == c.self.Node {
			continue
		}
		if e := c.entries[n.Node]; e != nil && !n.newerThan(&e.NodeEntry) {
			continue
		}
		ne := &entry{NodeEntry: n, stale: true}
		ne.Apps = normalizeApps(n.Apps)
		c.entries[n.Node] = ne
		c.lanVersion++
		eff.Changed = true
	}
	for _, v := range s.Views {
		if v.DC == c.self.DC {
			continue
		}
		k := viewKey{v.DC, v.Origin}
		if old := c.views[k]; old != nil && !newer(v.Incarnation, v.Seq, old.Incarnation, old.Seq) {
			continue
		}
		c.views[k] = &view{DCView: cloneView(v), stale: true}
		eff.Changed = true
	}
	return eff
}

// served reports whether e's apps are resolvable.
func (c *Catalog) served(e *entry) bool {
	_, member := c.members[e.Node]
	return member || e.stale
}

// Instances returns the instances of appID: this DC's first, then the
// other DCs', each sorted by node name. The result is the caller's.
func (c *Catalog) Instances(appID string) []Instance {
	if c.index == nil {
		c.index = c.buildIndex()
	}
	in := slices.Clone(c.index[appID])
	for i := range in {
		in[i].Gateways = slices.Clone(in[i].Gateways)
	}
	return in
}

func (c *Catalog) buildIndex() map[string][]Instance {
	idx := map[string][]Instance{}
	add := func(n *NodeEntry, stale bool, gws []string) {
		for _, a := range n.Apps {
			idx[a.ID] = append(idx[a.ID], Instance{
				AppID: a.ID, Node: n.Node, ID: InstanceID(n.Node, n.Incarnation), DC: n.DC, Region: n.Region, Addr: n.Addr,
				InternalPort: n.InternalPort, Healthy: a.Healthy, Gateways: gws, Stale: stale,
			})
		}
	}
	// Sorted local entries (this node's among them), then the remote
	// views by DC with their nodes sorted: every list comes out sorted.
	local := []*entry{{NodeEntry: c.self}}
	for _, e := range c.entries {
		if c.served(e) {
			local = append(local, e)
		}
	}
	slices.SortFunc(local, func(a, b *entry) int { return strings.Compare(a.Node, b.Node) })
	for _, e := range local {
		add(&e.NodeEntry, e.stale, nil)
	}
	for _, v := range c.currentViews() {
		nodes := make([]*NodeEntry, len(v.Nodes))
		for i := range v.Nodes {
			nodes[i] = &v.Nodes[i]
		}
		slices.SortStableFunc(nodes, func(a, b *NodeEntry) int { return strings.Compare(a.Node, b.Node) })
		for _, n := range nodes {
			add(n, v.stale, v.Gateways)
		}
	}
	return idx
}

// currentViews returns, for each remote DC, the view received last: every
// view is a whole picture of its DC, so the newest one wins.
func (c *Catalog) currentViews() []*view {
	best := map[string]*view{}
	for _, k := range sortedViewKeys(c.views) {
		v := c.views[k]
		if b := best[k.dc]; b == nil || v.received.After(b.received) || (v.received.Equal(b.received) && b.stale && !v.stale) {
			best[k.dc] = v
		}
	}
	out := make([]*view, 0, len(best))
	for _, dc := range sortedKeys(best) {
		out = append(out, best[dc])
	}
	return out
}

// Members returns the live LAN members other than this node, by name.
func (c *Catalog) Members() []Member {
	out := make([]Member, 0, len(c.members))
	for _, name := range sortedKeys(c.members) {
		m := c.members[name].Member
		m.Meta.Roles = slices.Clone(m.Meta.Roles)
		out = append(out, m)
	}
	return out
}

// DCs returns the remote DCs the catalog knows, sorted.
func (c *Catalog) DCs() []string {
	var out []string
	for _, v := range c.currentViews() {
		out = append(out, v.DC)
	}
	return out
}

// state returns what push/pull sends: the confirmed entries this DC
// serves (this node's included) and the confirmed remote views.
func (c *Catalog) state() state {
	s := state{entries: []NodeEntry{c.Local()}}
	for _, name := range sortedKeys(c.entries) {
		if e := c.entries[name]; !e.stale && c.served(e) {
			s.entries = append(s.entries, e.NodeEntry)
		}
	}
	for _, k := range sortedViewKeys(c.views) {
		if v := c.views[k]; !v.stale {
			s.views = append(s.views, v.DCView)
		}
	}
	return s
}

// localView is this DC's view as this node (a gateway) publishes it.
func (c *Catalog) localView(seq uint64) DCView {
	v := DCView{DC: c.self.DC, Origin: c.self.Node, Incarnation: c.self.Incarnation, Seq: seq}
	for _, n := range c.state().entries {
		v.Nodes = append(v.Nodes, n)
		if n.Gateway {
			v.Gateways = append(v.Gateways, net.JoinHostPort(n.Addr, strconv.Itoa(n.InternalPort)))
		}
	}
	sort.Strings(v.Gateways)
	return v
}

// isRelay reports whether this node relays remote views into the LAN:
// the live gateway with the smallest name does, so a view enters the LAN
// once.
func (c *Catalog) isRelay() bool {
	if !c.self.Gateway {
		return false
	}
	for name, e := range c.entries {
		if _, ok := c.members[name]; ok && e.Gateway && !e.stale && name < c.self.Node {
			return false
		}
	}
	return true
}

// snapshot returns what the disk cache keeps: every entry served but
// this node's, and every view.
func (c *Catalog) snapshot() Snapshot {
	s := Snapshot{Format: snapshotFormat, Node: c.self.Node, DC: c.self.DC}
	for _, name := range sortedKeys(c.entries) {
		if e := c.entries[name]; c.served(e) {
			s.Entries = append(s.Entries, e.NodeEntry)
		}
	}
	for _, k := range sortedViewKeys(c.views) {
		s.Views = append(s.Views, c.views[k].DCView)
	}
	appIDs := func(apps []App) []string {
		if len(apps) == 0 {
			return nil
		}
		out := make([]string, len(apps))
		for i, a := range apps {
			out[i] = a.ID
		}
		return out
	}
	if c.cfg.SelfAPI.Node != "" {
		self := c.cfg.SelfAPI
		self.Apps = appIDs(c.self.Apps)
		s.APIs = append(s.APIs, self)
	}
	for _, name := range sortedKeys(c.members) {
		m := c.members[name]
		if m.Meta.DC == c.self.DC && (m.Meta.HTTPPort > 0 || m.Meta.GRPCPort > 0) {
			host, _, err := net.SplitHostPort(m.Addr)
			if err != nil {
				host = m.Addr
			}
			ep := apicatalog.Endpoint{Node: name, Addr: host, HTTPPort: m.Meta.HTTPPort, GRPCPort: m.Meta.GRPCPort}
			if e := c.entries[name]; e != nil {
				ep.Apps = appIDs(e.Apps)
			}
			s.APIs = append(s.APIs, ep)
		}
	}
	slices.SortFunc(s.APIs, func(a, b apicatalog.Endpoint) int { return strings.Compare(a.Node, b.Node) })
	return s
}

// normalizeApps sorts apps by id and keeps the last of duplicates.
func normalizeApps(apps []App) []App {
	if len(apps) == 0 {
		return nil
	}
	out := slices.Clone(apps)
	slices.SortStableFunc(out, func(a, b App) int { return strings.Compare(a.ID, b.ID) })
	w := 0
	for i := range out {
		if w > 0 && out[w-1].ID == out[i].ID {
			out[w-1] = out[i]
			continue
		}
		out[w] = out[i]
		w++
	}
	return out[:w]
}

func cloneView(v DCView) DCView {
	v.Gateways = slices.Clone(v.Gateways)
	v.Nodes = slices.Clone(v.Nodes)
	for i := range v.Nodes {
		v.Nodes[i].Apps = slices.Clone(v.Nodes[i].Apps)
	}
	return v
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedViewKeys(m map[viewKey]*view) []viewKey {
	keys := make([]viewKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].dc != keys[j].dc {
			return keys[i].dc < keys[j].dc
		}
		return keys[i].origin < keys[j].origin
	})
	return keys
}
