package membership

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"mecha/internal/apicatalog"
	"mecha/internal/backoff"
)

// ErrClosed is returned by calls on a node that was shut down.
var ErrClosed = errors.New("membership node closed")

const (
	// maxBroadcast is the largest message that goes through gossip
	// piggybacking (UDP, about 1,400 bytes a packet with memberlist's own
	// messages first). Larger ones go over TCP to every member.
	maxBroadcast = 1000
	// minViewGap spaces a gateway's view publications when its DC churns.
	minViewGap = 250 * time.Millisecond
	// wantGrace is how long a peer's newer entry may take to arrive by
	// broadcast before it is asked for directly.
	wantGrace = time.Second
	// tombstoneTTL keeps a departed node's version to reject its stale
	// broadcasts.
	tombstoneTTL = time.Minute
)

type pool int

const (
	lanPool pool = iota
	wanPool
)

func (p pool) String() string {
	if p == wanPool {
		return "wan"
	}
	return "lan"
}

// outMsg is a message for the sender goroutine: to one member by name,
// or to every member of the pool when to is empty.
type outMsg struct {
	pool pool
	to   string
	msg  []byte
}

// Node is one runtime's membership: its DC's LAN pool, on gateways the
// WAN pool, the catalog those feed, and the catalog's disk cache.
//
// Goroutines: Start starts the tick loop (catalog clock, view
// publication, want requests, cache writes), the sender (TCP sends), the
// meta updater, and one joiner per pool with a join list; Shutdown stops
// them all. memberlist's own goroutines call the delegates, which take mu
// and never call into memberlist while holding it (memberlist calls the
// event delegate with its node lock held).
type Node struct {
	cfg  Config
	log  *slog.Logger
	name string
	addr string // advertised IP
	// incarnation names this run of the node: it changes at every start.
	incarnation uint64
	lanPort     int
	wanPort     int
	lan, wan    *memberlist.Memberlist // set by Start, then read-only
	lanQ        *memberlist.TransmitLimitedQueue
	wanQ        *memberlist.TransmitLimitedQueue
	meta        atomic.Pointer[[]byte] // what NodeMeta returns
	lanSize     atomic.Int32           // LAN members, for the retransmit limit
	wanSize     atomic.Int32

	// peersMu guards peers: each pool's live members as the event
	// delegate last saw them, copied. The sender sends to these copies:
	// memberlist updates the Node values Members returns in place, under
	// its own lock, so reading them later races with it.
	peersMu sync.Mutex
	peers   [2]map[string]memberlist.Node

	outbox chan outMsg   // drained by the sender
	metaCh chan struct{} // wakes the meta updater
	// reclaimCh wakes reclaimLoop: the LAN pool holds this node's name
	// at another address (its life before a restart).
	reclaimCh chan struct{}
	joined    chan struct{}   // closed when the LAN join succeeded
	ctx       context.Context // cancelled by Shutdown
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	once      sync.Once

	// leaveMu orders meta updates, Leave and the pools' shutdown: an
	// UpdateNode after Leave would queue an alive message that replaces
	// the leave broadcast, and a Leave after shutdown panics.
	leaveMu sync.Mutex
	leaving bool // guarded by leaveMu

	mu sync.Mutex
	// cat is the catalog; mu serialises it. The fields below are the tick
	// loop's bookkeeping, also under mu.
	cat          *Catalog
	wake         chan struct{} // closed and replaced when cat changes
	changedAt    time.Time
	joinedOnce   bool
	viewSeq      uint64
	viewLANVer   uint64 // cat.lanVersion at the last publication
	viewAt       time.Time
	savedVersion uint64
	dirtySince   time.Time
}

// Start binds the pools, loads the cache and starts gossiping. It does
// not wait for the join: the join list is retried in the background
// (WaitJoined waits for it) and cached entries are served meanwhile.
func Start(cfg Config, logger *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	key, _ := cfg.key()
	cfg.Roles, cfg.Join, cfg.WANJoin = slices.Clone(cfg.Roles), slices.Clone(cfg.Join), slices.Clone(cfg.WANJoin)
	n := &Node{
		cfg:       cfg,
		log:       logger,
		outbox:    make(chan outMsg, 256),
		metaCh:    make(chan struct{}, 1),
		reclaimCh: make(chan struct{}, 1),
		joined:    make(chan struct{}),
		wake:      make(chan struct{}),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			n.cancel()
		}
	}()

	lanT, err := bindTransport(cfg.BindAddress, cfg.GossipPort, n.stdLogger(lanPool))
	if err != nil {
		return nil, fmt.Errorf("membership: gossip port %s:%d: %w (--gossip-port, --gossip-bind-address; 0 picks a free port)", cfg.BindAddress, cfg.GossipPort, err)
	}
	n.lanPort = lanT.GetAutoBindPort()
	n.name = cfg.NodeName
	if n.name == "" {
		n.name = defaultName(n.lanPort)
	}
	// From here on the log names the node (the transport keeps its logger).
	n.log = n.log.With("node", n.name, "dc", cfg.DC)
	ip, _, err := lanT.FinalAdvertiseAddr(cfg.AdvertiseAddress, n.lanPort)
	if err != nil {
		_ = lanT.Shutdown()
		return nil, fmt.Errorf("membership: advertise address: %w (set --advertise-address to the address other runtimes reach this one at, or --gossip-bind-address to one address of this host)", err)
	}
	n.addr = ip.String()
	now := time.Now()
	n.incarnation = uint64(now.UnixNano())
	n.cat = NewCatalog(NodeEntry{
		Node: n.name, DC: cfg.DC, Region: cfg.Region, Addr: ip.String(),
		InternalPort: cfg.InternalPort, Gateway: cfg.Gateway,
		Incarnation: n.incarnation,
	}, now, CatalogConfig{ViewTTL: cfg.ViewTTL, TombstoneTTL: tombstoneTTL, WantGrace: wantGrace, KeepWhenIsolated: true,
		SelfAPI: apicatalog.Endpoint{Node: n.name, Addr: ip.String(), HTTPPort: cfg.HTTPPort, GRPCPort: cfg.GRPCPort}})
	if cfg.DataDir != "" {
		if snap, err := loadCache(cfg.DataDir); err != nil {
			n.log.Warn("ignoring the catalog cache", "dir", cfg.DataDir, "err", err)
		} else if len(snap.Entries)+len(snap.Views) > 0 {
			n.cat.Apply(CacheLoaded{Snapshot: snap})
			n.log.Info("serving the cached catalog until gossip confirms it", "entries", len(snap.Entries), "views", len(snap.Views), "saved", snap.Saved)
		}
		n.savedVersion = n.cat.Version()
	}
	n.lanSize.Store(1)
	n.wanSize.Store(1)
	n.updateMetaLocked()

	lanCfg := memberlist.DefaultLANConfig()
	lanCfg.ProbeInterval = cfg.ProbeInterval
	lanCfg.ProbeTimeout = cfg.ProbeTimeout
	lanCfg.SuspicionMult = cfg.SuspicionMult
	lanCfg.SuspicionMaxTimeoutMult = 2
	lanCfg.GossipInterval = cfg.GossipInterval
	lanCfg.PushPullInterval = cfg.PushPullInterval
	lanCfg.TCPTimeout = 5 * time.Second
	// Each message goes out RetransmitMult × log10(N+1) times per node.
	// memberlist's 4 leaves about one node in 50 missing one join until
	// push/pull repairs it (every 30 s at 50 nodes); 6 makes that rare.
	lanCfg.RetransmitMult = 6
	lanCfg.Label = "mecha-lan/" + cfg.DC
	// A runtime that restarts under its name (a Crux cluster member keeps
	// one) comes back on new ports: once its old life is declared dead,
	// the new address takes its place (memberlist refuses it forever
	// otherwise).
	lanCfg.DeadNodeReclaimTime = time.Millisecond
	n.lanQ = &memberlist.TransmitLimitedQueue{RetransmitMult: lanCfg.RetransmitMult, NumNodes: func() int { return int(n.lanSize.Load()) }}
	n.lan, err = n.createPool(lanPool, lanCfg, lanT, ip, key)
	if err != nil {
		return nil, err
	}
	if cfg.Gateway {
		wanT, err := bindTransport(cfg.BindAddress, cfg.WANPort, n.stdLogger(wanPool))
		if err != nil {
			_ = n.lan.Shutdown()
			return nil, fmt.Errorf("membership: wan port %d: %w (--wan-port; 0 picks a free port)", cfg.WANPort, err)
		}
		n.wanPort = wanT.GetAutoBindPort()
		wanCfg := memberlist.DefaultWANConfig()
		wanCfg.PushPullInterval = 30 * time.Second
		wanCfg.Label = "mecha-wan"
		n.wanQ = &memberlist.TransmitLimitedQueue{RetransmitMult: wanCfg.RetransmitMult, NumNodes: func() int { return int(n.wanSize.Load()) }}
		n.wan, err = n.createPool(wanPool, wanCfg, wanT, ip, key)
		if err != nil {
			_ = n.lan.Shutdown()
			return nil, err
		}
	}

	n.log.Info("gossip started", "lan_port", n.lanPort, "wan_port", n.wanPort, "addr", ip.String(), "encrypted", key != nil)
	n.goFunc(n.tickLoop)
	n.goFunc(n.sender)
	n.goFunc(n.metaUpdater)
	n.goFunc(n.reclaimLoop)
	if len(cfg.Join) > 0 {
		n.goFunc(func() { n.joinLoop(lanPool, cfg.Join) })
	} else {
		n.markJoined()
	}
	if n.wan != nil && len(cfg.WANJoin) > 0 {
		n.goFunc(func() { n.joinLoop(wanPool, cfg.WANJoin) })
	}
	ok = true
	return n, nil
}

func (n *Node) goFunc(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// bindTransport binds a memberlist transport. With port 0 the kernel
// picks a TCP port that may be taken for UDP: retry a few times, as
// memberlist does.
func bindTransport(addr string, port int, logger *log.Logger) (*memberlist.NetTransport, error) {
	var err error
	for range 10 {
		var t *memberlist.NetTransport
		t, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: port, Logger: logger})
		if err == nil {
			return t, nil
		}
		if port != 0 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func (n *Node) createPool(p pool, c *memberlist.Config, t *memberlist.NetTransport, ip net.IP, key []byte) (*memberlist.Memberlist, error) {
	port := t.GetAutoBindPort()
	c.Name = n.name
	c.BindAddr = n.cfg.BindAddress
	c.BindPort = port
	c.AdvertiseAddr = ip.String()
	c.AdvertisePort = port
	c.Transport = t
	c.SecretKey = key
	c.Delegate = &delegate{n: n, p: p}
	c.Events = &events{n: n, p: p}
	if p == lanPool {
		c.Conflict = conflicts{n}
	}
	c.Logger = n.stdLogger(p)
	ml, err := memberlist.Create(c)
	if err != nil {
		_ = t.Shutdown()
		return nil, fmt.Errorf("membership: %s pool: %w", p, err)
	}
	return ml, nil
}

// Name is the node's name in its pools.
func (n *Node) Name() string { return n.name }

// InstanceID is this run of the node as apps name it to reach the app it
// hosts (InstanceID of its name and incarnation).
func (n *Node) InstanceID() string { return InstanceID(n.name, n.incarnation) }

// DC is the node's data center.
func (n *Node) DC() string { return n.cfg.DC }

// GossipPort is the LAN pool's bound port (the one chosen for port 0).
func (n *Node) GossipPort() int { return n.lanPort }

// WANPort is the WAN pool's bound port, 0 on a node that is no gateway.
func (n *Node) WANPort() int { return n.wanPort }

// GossipAddr is the LAN address (host:port) other nodes join.
func (n *Node) GossipAddr() string { return net.JoinHostPort(n.addr, strconv.Itoa(n.lanPort)) }

// WANAddr is the WAN address (host:port) of a gateway, "" otherwise.
func (n *Node) WANAddr() string {
	if n.wan == nil {
		return ""
	}
	return net.JoinHostPort(n.addr, strconv.Itoa(n.wanPort))
}

// WaitJoined waits until the node joined its LAN pool (at once for a node
// without a join list).
func (n *Node) WaitJoined(ctx context.Context) error {
	select {
	case <-n.joined:
		return nil
	case <-n.ctx.Done():
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *Node) markJoined() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.joinedOnce {
		n.joinedOnce = true
		close(n.joined)
	}
}

// SetLocalApps publishes this node's apps and their health.
func (n *Node) SetLocalApps(apps []App) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.applyLocked(LocalApps{Apps: apps})
}

// SetTraffic sets a cluster-wide traffic rule from this node; every node
// adopts it unless it holds a newer one for the same app.
func (n *Node) SetTraffic(r TrafficRule) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.applyLocked(LocalTraffic{Rule: r})
}

// Traffic is the newest rule for calls to app this node knows.
func (n *Node) Traffic(app string) (TrafficRule, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cat.Traffic(app)
}

// spreadSelfLocked publishes this node's entry after it changed.
func (n *Node) spreadSelfLocked() {
	n.updateMetaLocked()
	local := n.cat.Local()
	n.spreadLocked(lanPool, "e/"+local.Node, encodeEntry(&local), true)
	select {
	case n.metaCh <- struct{}{}:
	default:
	}
}

// Instances returns the instances of appID: this DC's first, then the
// other DCs' (with the gateways that front them). Unhealthy and stale
// instances are included and marked.
func (n *Node) Instances(appID string) []Instance {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cat.Instances(appID)
}

// Members returns the live LAN members other than this node.
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cat.Members()
}

// DCs returns the remote data centers the catalog knows.
func (n *Node) DCs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cat.DCs()
}

// Version moves whenever the catalog changes.
func (n *Node) Version() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cat.Version()
}

// Wait blocks until the catalog's version passes after and returns the
// new version.
func (n *Node) Wait(ctx context.Context, after uint64) (uint64, error) {
	for {
		n.mu.Lock()
		v, wake := n.cat.Version(), n.wake
		n.mu.Unlock()
		if v > after {
			return v, nil
		}
		select {
		case <-wake:
		case <-n.ctx.Done():
			return v, ErrClosed
		case <-ctx.Done():
			return v, ctx.Err()
		}
	}
}

// Leave tells the pools this node is leaving, so its instances go at
// once instead of after failure detection, then shuts the node down.
func (n *Node) Leave(ctx context.Context) error {
	timeout := 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	n.leaveMu.Lock()
	if n.leaving {
		n.leaveMu.Unlock()
		return ErrClosed
	}
	n.leaving = true
	var errs []error
	if err := n.lan.Leave(timeout); err != nil {
		errs = append(errs, fmt.Errorf("membership: lan leave: %w", err))
	}
	if n.wan != nil {
		if err := n.wan.Leave(timeout); err != nil {
			errs = append(errs, fmt.Errorf("membership: wan leave: %w", err))
		}
	}
	n.leaveMu.Unlock()
	return errors.Join(append(errs, n.Shutdown())...)
}

// Shutdown stops gossip without leaving: the others find this node dead,
// as if it had crashed. It writes the cache a last time.
func (n *Node) Shutdown() error {
	var errs []error
	n.once.Do(func() {
		n.cancel()
		n.leaveMu.Lock()
		n.leaving = true
		if err := n.lan.Shutdown(); err != nil {
			errs = append(errs, err)
		}
		if n.wan != nil {
			if err := n.wan.Shutdown(); err != nil {
				errs = append(errs, err)
			}
		}
		n.leaveMu.Unlock()
		n.wg.Wait()
		if n.cfg.DataDir != "" {
			n.mu.Lock()
			dirty := n.cat.Version() != n.savedVersion
			snap := n.cat.snapshot()
			n.mu.Unlock()
			if dirty {
				snap.Saved = time.Now().UTC()
				if err := saveCache(n.cfg.DataDir, snap); err != nil {
					errs = append(errs, fmt.Errorf("membership: cache: %w", err))
				}
			}
		}
		n.log.Info("gossip stopped")
	})
	return errors.Join(errs...)
}

// applyLocked feeds the catalog and wakes waiters on change.
func (n *Node) applyLocked(ev Event) Effect {
	eff := n.cat.Apply(ev)
	if eff.SelfChanged {
		n.spreadSelfLocked()
	}
	if eff.Changed {
		close(n.wake)
		n.wake = make(chan struct{})
		n.changedAt = time.Now()
		n.lanSize.Store(int32(len(n.cat.members) + 1))
	}
	return eff
}

func (n *Node) updateMetaLocked() {
	l := n.cat.Local()
	b, err := EncodeMeta(n.cfg.meta(l.Incarnation, l.Version))
	if err != nil { // Validate checked the sizes
		n.log.Error("node meta", "err", err)
		return
	}
	n.meta.Store(&b)
}

func (n *Node) queue(p pool) *memberlist.TransmitLimitedQueue {
	if p == wanPool {
		return n.wanQ
	}
	return n.lanQ
}

// spreadLocked sends msg on pool p: small messages by gossip, where every
// node that finds them new gossips them again; large ones over TCP to
// every member, but only by their origin (origin true), since everyone
// got them then.
func (n *Node) spreadLocked(p pool, name string, msg []byte, origin bool) {
	if p == wanPool && n.wan == nil {
		return
	}
	if len(msg) <= maxBroadcast {
		n.queue(p).QueueBroadcast(&broadcast{name: name, msg: msg})
		return
	}
	if origin {
		n.sendLocked(outMsg{pool: p, msg: msg})
	}
}

func (n *Node) sendLocked(m outMsg) {
	select {
	case n.outbox <- m:
	default:
		n.log.Warn("gossip outbox full: message dropped, push/pull will repair", "pool", m.pool, "to", m.to)
	}
}

// tickLoop drives the catalog's clock and the work that hangs off it.
func (n *Node) tickLoop() {
	every := min(100*time.Millisecond, n.cfg.CacheDebounce/2)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case now := <-t.C:
			n.tick(now)
		}
	}
}

func (n *Node) tick(now time.Time) {
	n.mu.Lock()
	eff := n.applyLocked(Tick{Now: now})
	for _, name := range eff.Want {
		n.sendLocked(outMsg{pool: lanPool, to: name, msg: encodeWant(n.name)})
	}
	if n.wan != nil {
		due := now.Sub(n.viewAt) >= n.cfg.ViewRefresh
		if changed := n.cat.lanVersion != n.viewLANVer; due || (changed && now.Sub(n.viewAt) >= minViewGap) {
			n.viewSeq++
			n.viewLANVer = n.cat.lanVersion
			n.viewAt = now
			v := n.cat.localView(n.viewSeq)
			n.spreadLocked(wanPool, "v/"+v.DC+"/"+v.Origin, encodeView(&v), true)
		}
	}
	var snap *Snapshot
	if n.cfg.DataDir != "" && n.cat.Version() != n.savedVersion {
		if n.dirtySince.IsZero() {
			n.dirtySince = now
		}
		if now.Sub(n.changedAt) >= n.cfg.CacheDebounce || now.Sub(n.dirtySince) >= 5*n.cfg.CacheDebounce {
			s := n.cat.snapshot()
			snap = &s
			n.savedVersion = n.cat.Version()
			n.dirtySince = time.Time{}
		}
	}
	n.mu.Unlock()
	if snap != nil {
		snap.Saved = now.UTC()
		if err := saveCache(n.cfg.DataDir, *snap); err != nil {
			n.log.Warn("writing the catalog cache", "dir", n.cfg.DataDir, "err", err)
		}
	}
}

// setPeer records (or, with gone, forgets) a pool's member as the event
// delegate sees it, under memberlist's lock: a copy of its name and
// address.
func (n *Node) setPeer(p pool, node *memberlist.Node, gone bool) {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if n.peers[p] == nil {
		n.peers[p] = map[string]memberlist.Node{}
	}
	if gone {
		delete(n.peers[p], node.Name)
		return
	}
	n.peers[p][node.Name] = memberlist.Node{Name: node.Name, Addr: slices.Clone(node.Addr), Port: node.Port}
}

// peersOf is a copy of the pool's live members (this node not among
// them).
func (n *Node) peersOf(p pool) []memberlist.Node {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	out := make([]memberlist.Node, 0, len(n.peers[p]))
	for _, node := range n.peers[p] {
		out = append(out, node)
	}
	return out
}

// sender makes the TCP sends, which block, off the gossip goroutines.
func (n *Node) sender() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case m := <-n.outbox:
			ml := n.lan
			if m.pool == wanPool {
				ml = n.wan
			}
			for _, node := range n.peersOf(m.pool) {
				if m.to != "" && node.Name != m.to {
					continue
				}
				if err := ml.SendReliable(&node, m.msg); err != nil && n.ctx.Err() == nil {
					n.log.Debug("gossip send failed", "pool", m.pool, "to", node.Name, "err", err)
				}
			}
		}
	}
}

// metaUpdater re-advertises the node meta after the local entry changed.
func (n *Node) metaUpdater() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.metaCh:
			// A short timeout: the alive message is queued at once, and
			// waiting for it to go out gains nothing.
			n.leaveMu.Lock()
			if !n.leaving {
				_ = n.lan.UpdateNode(time.Millisecond)
				if n.wan != nil {
					_ = n.wan.UpdateNode(time.Millisecond)
				}
			}
			n.leaveMu.Unlock()
		}
	}
}

// conflicts hears of a member name at two addresses.
type conflicts struct{ n *Node }

// NotifyConflict wakes reclaimLoop when the name is this node's: it
// restarted on other ports under its name while the pool still holds its
// old life.
func (c conflicts) NotifyConflict(existing, other *memberlist.Node) {
	if existing.Name != c.n.name {
		return
	}
	select {
	case c.n.reclaimCh <- struct{}{}:
	default:
	}
}

// reclaimLoop takes this node's name back after a restart on other
// ports. The others refuse its new address while they hold the old life
// as alive or suspect, and meanwhile do not gossip with it, so it would
// hear of its old life's death only at the next push/pull (half a
// minute). From a conflict on, for reclaimWindow, it exchanges state
// with the others once a second: once they have declared the old life
// dead, an exchange gives them the new address (DeadNodeReclaimTime).
func (n *Node) reclaimLoop() {
	var until time.Time
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.reclaimCh:
			if until.IsZero() {
				n.log.Info("this node's name is held at its old address: exchanging state with the others until they take the new one")
			}
			until = time.Now().Add(reclaimWindow)
			continue
		case now := <-t.C:
			if until.IsZero() || now.After(until) {
				until = time.Time{}
				continue
			}
		}
		var addrs []string
		for _, m := range n.peersOf(lanPool) {
			addrs = append(addrs, m.Address())
		}
		if len(addrs) > 0 {
			_, _ = n.lan.Join(addrs)
		}
	}
}

// reclaimWindow is how long after a conflict reclaimLoop keeps
// exchanging state: past the others' suspicion timeout.
const reclaimWindow = 30 * time.Second

// joinLoop joins pool p through addrs, retrying with backoff, and joins
// again whenever the node finds itself alone (a healed partition
// otherwise stays split: memberlist gossips to dead nodes only a while).
func (n *Node) joinLoop(p pool, addrs []string) {
	ml := n.lan
	if p == wanPool {
		ml = n.wan
	}
	bo := backoff.Policy{Initial: 250 * time.Millisecond, Max: n.cfg.RejoinInterval}.New()
	wait := time.Duration(0)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-timer.C:
		}
		if ml.NumMembers() <= 1 {
			c, err := ml.Join(addrs)
			switch {
			case c > 0:
				n.log.Info("joined", "pool", p, "contacted", c)
				if p == lanPool {
					n.markJoined()
				}
				bo.Reset()
				wait = n.cfg.RejoinInterval
			case n.ctx.Err() != nil:
				return
			default:
				wait = bo.Next()
				n.log.Warn("join failed, retrying", "pool", p, "addrs", addrs, "retry_in", wait, "err", err)
			}
		} else {
			if p == lanPool {
				n.markJoined()
			}
			wait = n.cfg.RejoinInterval
		}
		timer.Reset(wait)
	}
}

// stdLogger adapts memberlist's log.Logger output to slog.
func (n *Node) stdLogger(p pool) *log.Logger {
	return log.New(logWriter{log: n.log.With("pool", p.String())}, "", 0)
}

type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(b []byte) (int, error) {
	msg := strings.TrimSpace(string(b))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if strings.HasPrefix(msg, prefix) {
			level = l
			msg = strings.TrimSpace(strings.TrimPrefix(msg, prefix))
			break
		}
	}
	msg = strings.TrimPrefix(msg, "memberlist: ")
	if strings.Contains(msg, "use of closed network connection") {
		level = slog.LevelDebug // a pool shutting down, not a fault
	}
	w.log.Log(context.Background(), level, msg)
	return len(b), nil
}
