package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"mecha/broker"
	"mecha/internal/clustermap"
	"mecha/internal/fsutil"
	"mecha/internal/muxconn"
	"mecha/runtime/controlplane"
	"mecha/runtime/membership"
	"mecha/statestore/cluster"
)

// Crux across runtimes. A runtime's state.crux components store through
// a cluster.Node, whose map says which member leads each slot:
//
//   - alone, or the owner of a data dir (datadir.go): a fixed one-member
//     map (hostMap); every slot is served in-process, and the internal
//     port serves them to the data dir's guests;
//   - a guest of such an owner: the same map; it opens no engine and
//     sends every key to the owner;
//   - with --bootstrap-expect (the Crux cluster): the control plane's
//     map (runtime/controlplane, a raft group of the servers), which
//     spreads the slots over the servers; each serves the slots it leads
//     and routes the others. A client (--crux-client) and a guest of a
//     cluster runtime hold no slots: they poll the map from the servers
//     gossip shows (a controlplane.Client) and route every key.
//
// In the cluster each slot has --crux-replicas copies (3 by default): its
// leader serves it and its followers tail its records (statestore/cluster
// replicate.go); when a member dies the control plane makes an in-sync
// follower the leader. The control plane's planner also moves replicas
// and leaderships: to a member that joins (the new replica copies the
// slot, tails it, joins the in-sync set, and takes the old one's place),
// away from a draining member, and off a member gone for longer than the
// rebuild delay.

// cruxMaxMoves bounds the slot moves in flight: a move is a copy of one
// slot (a few hundred KiB for a session store) and a tail, cheap enough
// to run many at once.
const cruxMaxMoves = 64

// hostOwnerID is the owner's member id in the map of a host.
const hostOwnerID = "owner"

// nodeNameFile keeps a cluster member's name in its data dir: the slots
// it leads are its data, so the name must outlive a restart.
const nodeNameFile = "node-name"

// hostMap is the cluster map of one host's data dir: its owner, at addr,
// leads every slot. The owner and its guests build it alike, so that
// their epochs agree.
func hostMap(addr string) (*clustermap.Map, error) {
	m := clustermap.New()
	cmds := []clustermap.Command{
		clustermap.Bootstrap{ClusterID: "host", Replicas: 1},
		clustermap.MemberJoin{ID: hostOwnerID, Addr: addr, Roles: []string{clustermap.RoleData}, At: 1},
	}
	for len(cmds) > 0 {
		var err error
		if m, err = clustermap.Apply(m, cmds[0]); err != nil {
			return nil, fmt.Errorf("the host's Crux map: %T: %w", cmds[0], err)
		}
		cmds = cmds[1:]
		if len(cmds) == 0 {
			cmds = clustermap.Plan(m, clustermap.PlanConfig{})
		}
	}
	if m.Slot(0).Leader != hostOwnerID {
		return nil, fmt.Errorf("the host's Crux map leaves slot 0 to %q", m.Slot(0).Leader)
	}
	return m, nil
}

// clustered reports whether this runtime is in the Crux cluster: a
// server (--bootstrap-expect), a client (--crux-client), or a guest of a
// server.
func (r *Runtime) clustered() bool {
	return r.cfg.BootstrapExpect > 0 || r.cfg.CruxClient || r.guestOf != nil && r.guestOf.Cluster
}

// cruxStores reports whether this runtime holds Crux data: not a client
// of the cluster, nor a guest of a data dir.
func (r *Runtime) cruxStores() bool { return r.guestOf == nil && !r.cfg.CruxClient }

// clusterNodeName settles a cluster server's member name: --node-name,
// else the one kept in the data dir, else a new one (hostname and random
// hex) kept there. It is also its gossip node name.
func (r *Runtime) clusterNodeName() error {
	path := filepath.Join(r.cfg.DataDir, nodeNameFile)
	b, err := os.ReadFile(path)
	kept := strings.TrimSpace(string(b))
	switch {
	case r.cfg.Membership.NodeName != "":
		if kept != "" && kept != r.cfg.Membership.NodeName {
			return fmt.Errorf("--node-name %q: --data-dir %s holds the Crux slots of member %q (%s); give that name, or another --data-dir", r.cfg.Membership.NodeName, r.cfg.DataDir, kept, path)
		}
		kept = r.cfg.Membership.NodeName
	case err == nil && kept != "":
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("--data-dir %s: %w", r.cfg.DataDir, err)
	default:
		host, _ := os.Hostname()
		if host == "" {
			host = "mecha"
		}
		var rnd [4]byte
		_, _ = rand.Read(rnd[:])
		kept = host + "-" + hex.EncodeToString(rnd[:])
	}
	if err := fsutil.WriteFile(path, []byte(kept+"\n")); err != nil {
		return fmt.Errorf("--data-dir %s: %w", r.cfg.DataDir, err)
	}
	r.cfg.Membership.NodeName = kept
	for _, role := range []string{clustermap.RoleServer, clustermap.RoleData} {
		if !slices.Contains(r.cfg.Membership.Roles, role) {
			r.cfg.Membership.Roles = append(r.cfg.Membership.Roles, role)
		}
	}
	return nil
}

// startCrux builds the node state.crux components store through. In the
// cluster its map starts empty (every slot unavailable) and follows the
// control plane once it runs (startControlPlane).
func (r *Runtime) startCrux() error {
	clients := &cluster.Clients{Token: r.peerToken}
	if r.tls != nil {
		clients.TLS = r.tls.Client("")
	}
	member := hostOwnerID
	if r.clustered() {
		member = r.cfg.Membership.NodeName
		if r.cfg.CruxClient {
			member = "client-" + r.cfg.AppID
		}
		if r.cruxMaps == nil { // (the broker cluster made it already)
			r.cruxMaps = cluster.NewMapVar(clustermap.New())
		}
	} else {
		addr := "127.0.0.1:0" // the owner never calls itself
		if r.guestOf != nil {
			addr = r.guestOf.Internal
		}
		m, err := hostMap(addr)
		if err != nil {
			return err
		}
		r.cruxMaps = cluster.NewMapVar(m)
	}
	log := r.log.With("component", "crux")
	if r.guestOf != nil {
		member = "guest-" + r.cfg.AppID
	}
	r.cruxClients.Store(clients)
	r.cruxStats = &cluster.Stats{}
	r.crux = &cluster.Node{Member: member, Maps: r.cruxMaps, Clients: clients, Stats: r.cruxStats, Logger: log}
	r.metrics.AddCrux(r.cruxMetrics)
	if r.cruxStores() {
		r.crux.Server = cluster.NewServer(member, r.cruxMaps, log)
		if r.cfg.BootstrapExpect > 0 {
			rc := cluster.DefaultReplicaConfig()
			rc.MinISR = min(rc.MinISR, r.cruxReplicas())
			r.crux.Server.Replicate = &cluster.ReplicationConfig{Clients: clients, Propose: r.proposeISR, Replica: rc}
			r.crux.Server.OnStoreFailure = r.cruxStoreFailed
		}
	}
	return nil
}

// cruxReplicas is the replica count a new cluster bootstraps with.
func (r *Runtime) cruxReplicas() int {
	if r.cfg.CruxReplicas <= 0 {
		return 3
	}
	return r.cfg.CruxReplicas
}

// proposeISR sends a slot leader's in-sync set to the control plane.
func (r *Runtime) proposeISR(ctx context.Context, c clustermap.ISRChange) error {
	cp := r.cp.Load()
	if cp == nil {
		return errors.New("the control plane is not running yet")
	}
	return cp.node.Propose(ctx, c)
}

// controlPlane is what the cluster's wiring runs: the raft node on a
// server, the map's forwarding and the gossip feed.
type controlPlane struct {
	node      *controlplane.Node   // nil on a guest and a client
	client    *controlplane.Client // the map's poller of a guest or a client
	transport *controlplane.MuxTransport
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// startControlPlane starts the control plane of a cluster server (or a
// guest's client of its owner's), once the internal port serves.
func (r *Runtime) startControlPlane(ctx context.Context) error {
	if !r.clustered() {
		return nil
	}
	cp := &controlPlane{transport: &controlplane.MuxTransport{Token: r.peerToken}}
	if r.tls != nil {
		cp.transport.TLS = r.tls.Client("")
	}
	log := r.log.With("component", "controlplane")
	ctx, cp.cancel = context.WithCancel(context.WithoutCancel(ctx))
	var src interface {
		Map() *clustermap.Map
		WaitNewer(context.Context, uint64) error
	}
	if !r.cruxStores() {
		c := controlplane.NewClient(r.clusterServers, cp.transport)
		c.Logger = log
		c.ClusterID = r.cfg.ClusterID
		c.OnProblem = r.cruxMaps.SetProblem
		src = c
		cp.client = c
		cp.wg.Add(1)
		go func() { defer cp.wg.Done(); c.Run(ctx) }()
	} else {
		n, err := controlplane.New(controlplane.Config{
			ID: r.cfg.Membership.NodeName, Addr: r.internalAddr(), BootstrapExpect: r.cfg.BootstrapExpect, ClusterID: r.cfg.ClusterID,
			Dir: filepath.Join(r.cfg.DataDir, "controlplane"), Replicas: r.cruxReplicas(), RebuildAfter: r.cfg.CruxRebuildAfter,
			Plan:      clustermap.PlanConfig{MinMembers: r.cfg.BootstrapExpect, MaxMoves: cruxMaxMoves},
			Transport: cp.transport, Logger: log,
		})
		if err != nil {
			cp.cancel()
			return fmt.Errorf("control plane: %w", err)
		}
		if err := n.Start(ctx); err != nil {
			cp.cancel()
			return fmt.Errorf("control plane: %w", err)
		}
		cp.node = n
		src = n
		r.cp.Store(cp)
		cp.wg.Add(1)
		go func() { defer cp.wg.Done(); r.feedControlPlane(ctx, n) }()
	}
	cp.wg.Add(1)
	go func() {
		defer cp.wg.Done()
		prev := r.cruxMaps.Map()
		for {
			m := src.Map()
			r.cruxMaps.Store(m)
			r.cruxLeaderChanges.Add(leaderChanges(prev, m))
			prev = m
			if src.WaitNewer(ctx, m.Version) != nil {
				return
			}
		}
	}()
	r.cpRun = cp
	if cp.node != nil {
		cp.wg.Add(1)
		go func() { defer cp.wg.Done(); r.undrainAfterRestart(ctx) }()
	}
	log.Info("Crux cluster", "member", r.crux.Member, "cluster_id", r.cfg.ClusterID, "bootstrap_expect", r.cfg.BootstrapExpect, "internal", r.internalAddr())
	return nil
}

// stopControlPlane stops the feed and the raft node (a leader first hands
// its leadership over).
func (r *Runtime) stopControlPlane(grace context.Context) {
	cp := r.cpRun
	if cp == nil {
		return
	}
	if cp.node != nil {
		r.handOffLeaderships(grace)
	}
	cp.cancel()
	cp.wg.Wait()
	if cp.node != nil {
		_ = cp.node.Stop()
	}
	_ = cp.transport.Close()
}

// internalAddr is the address other runtimes reach this one's internal
// port at: the gossip advertise address with the internal port.
func (r *Runtime) internalAddr() string {
	host, _, _ := net.SplitHostPort(r.node.GossipAddr())
	return net.JoinHostPort(host, strconv.Itoa(port(r.internalLis.Addr())))
}

// feedControlPlane tells the control plane what gossip sees: the servers
// of the DC (for raft), and, on the leader, which members are alive. It
// is level-triggered: every change of the gossip view, and every second,
// the leader compares the map with the view and proposes the difference.
func (r *Runtime) feedControlPlane(ctx context.Context, n *controlplane.Node) {
	var seen uint64
	for ctx.Err() == nil {
		live := map[string]membership.Member{}
		var servers []controlplane.Peer
		for _, mb := range r.node.Members() {
			if !slices.Contains(mb.Meta.Roles, clustermap.RoleServer) && !slices.Contains(mb.Meta.Roles, clustermap.RoleData) {
				continue
			}
			live[mb.Name] = mb
			if slices.Contains(mb.Meta.Roles, clustermap.RoleServer) {
				servers = append(servers, controlplane.Peer{Name: mb.Name, Addr: memberInternal(mb)})
			}
		}
		n.SetServers(servers)
		if n.IsLeader() {
			r.reconcileMembers(ctx, n, live)
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		if v, err := r.node.Wait(wctx, seen); err == nil {
			seen = v
		}
		cancel()
	}
}

// reconcileMembers proposes what the map lacks of the gossip view: this
// server and the live members alive, the others dead. A departure
// (graceful or not) is a death, not a leave: the member's slots are its
// data, and wait for it.
func (r *Runtime) reconcileMembers(ctx context.Context, n *controlplane.Node, live map[string]membership.Member) {
	self := r.cfg.Membership.NodeName
	if err := n.MemberAlive(ctx, self, r.internalAddr(), r.cfg.Membership.Roles); err != nil && ctx.Err() == nil {
		r.log.Warn("control plane: recording this member", "err", err)
	}
	for name, mb := range live {
		if err := n.MemberAlive(ctx, name, memberInternal(mb), mb.Meta.Roles); err != nil && ctx.Err() == nil {
			r.log.Warn("control plane: recording a live member", "member", name, "err", err)
		}
	}
	for _, mb := range n.Map().Members {
		if mb.ID == self || !mb.Alive() {
			continue
		}
		if _, ok := live[mb.ID]; !ok {
			if err := n.MemberDead(ctx, mb.ID); err != nil && ctx.Err() == nil {
				r.log.Warn("control plane: recording a dead member", "member", mb.ID, "err", err)
			}
		}
	}
}

// clusterServers are the internal addresses of the control plane's
// servers that gossip shows: a client polls the map from them.
func (r *Runtime) clusterServers() []string {
	var addrs []string
	for _, mb := range r.node.Members() {
		if slices.Contains(mb.Meta.Roles, clustermap.RoleServer) {
			addrs = append(addrs, memberInternal(mb))
		}
	}
	return addrs
}

// memberInternal is a gossip member's internal address.
func memberInternal(mb membership.Member) string {
	host, _, _ := net.SplitHostPort(mb.Addr)
	return net.JoinHostPort(host, strconv.Itoa(mb.Meta.InternalPort))
}

// muxHandler serves the internal port's muxconn methods: Crux's and the
// control plane's.
func (r *Runtime) muxHandler(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	switch {
	case method >= cluster.MethodFirst && method <= cluster.MethodLast && r.crux.Server != nil:
		return r.crux.Server.Handle(ctx, method, body)
	case method == broker.MethodReplicaFetch && r.broker != nil:
		return r.broker.HandleReplicaFetch(ctx, body)
	case method >= controlplane.MethodFirst && method <= controlplane.MethodLast:
		if cp := r.cp.Load(); cp != nil {
			return cp.node.Handle(ctx, method, body)
		}
	}
	return nil, muxconn.ErrUnknownMethod
}

// proposeCrux sends a command to the Crux cluster's control plane: through
// this server's raft node, or a client's poller.
func (r *Runtime) proposeCrux(ctx context.Context, c clustermap.Command) error {
	cp := r.cpRun
	switch {
	case cp == nil:
		return errors.New("this runtime is not in a Crux cluster (--bootstrap-expect, --crux-client)")
	case cp.node != nil:
		return cp.node.Propose(ctx, c)
	case cp.client != nil:
		return cp.client.Propose(ctx, c)
	}
	return errors.New("the control plane is not running")
}

// drainedFile marks a data dir whose member drained itself on a graceful
// stop: it cancels that drain when it returns.
const drainedFile = "crux-drained-on-stop"

// handOffLeaderships runs on a graceful stop of a cluster server: it
// drains this member (the control plane moves its leaderships to in-sync
// replicas, each with a new epoch) and waits, within grace and at most
// 15 s, until it leads no slot, so that a rolling restart fails no
// request on its way down. A member alone, or whose slots have no other
// in-sync replica, stops at once: nobody could take them.
func (r *Runtime) handOffLeaderships(grace context.Context) {
	self := r.cfg.Membership.NodeName
	led := func(m *clustermap.Map) int {
		n := 0
		for i := range clustermap.NumSlots {
			if g := m.Slot(i); g != nil && g.Leader == self && len(g.ISR) > 1 {
				n++
			}
		}
		return n
	}
	m := r.cruxMaps.Map()
	if !m.Bootstrapped() || led(m) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(grace, 15*time.Second)
	defer cancel()
	log := r.log.With("component", "crux")
	if err := fsutil.WriteFile(filepath.Join(r.cfg.DataDir, drainedFile), []byte(self+"\n")); err != nil {
		log.Warn("crux: stopping without handing the leaderships over", "err", err)
		return
	}
	// Leaderships only: the member comes back, and its replicas stay
	// and count (a full drain would drop them to fewer copies).
	if err := r.proposeCrux(ctx, clustermap.MemberDrain{ID: self, Leaders: true}); err != nil {
		log.Warn("crux: stopping without handing the leaderships over", "err", err)
		return
	}
	start := time.Now()
	for {
		m = r.cruxMaps.Map()
		n := led(m)
		if n == 0 {
			log.Info("crux: handed every leadership over before stopping", "took", time.Since(start).Round(time.Millisecond))
			return
		}
		if r.cruxMaps.WaitNewer(ctx, m.Version) != nil {
			log.Warn("crux: stopping while still leading slots", "slots", n, "waited", time.Since(start).Round(time.Millisecond))
			return
		}
	}
}

// undrainAfterRestart cancels the drain this member's last graceful stop
// started, once the control plane has it alive again: its leaderships
// come back (the planner's failback) once it is in sync.
func (r *Runtime) undrainAfterRestart(ctx context.Context) {
	path := filepath.Join(r.cfg.DataDir, drainedFile)
	if _, err := os.Stat(path); err != nil {
		return
	}
	self := r.cfg.Membership.NodeName
	r.log.Info("crux: this member drained itself when it last stopped; the drain ends once the control plane has it alive", "component", "crux")
	for ctx.Err() == nil {
		m := r.cruxMaps.Map()
		// The cancel goes to the control plane's leader whatever this
		// member's own map shows (it may replay a log from before the
		// drain); cancelling a drain that is not on changes nothing.
		if mb := m.Member(self); mb != nil && mb.Alive() {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := r.proposeCrux(pctx, clustermap.MemberDrain{ID: self, Cancel: true})
			cancel()
			if err == nil {
				r.log.Info("crux: cancelled the drain of the last stop", "component", "crux")
				_ = os.Remove(path)
				return
			}
			r.log.Warn("crux: cancelling the drain of the last stop", "err", err, "component", "crux")
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = r.cruxMaps.WaitNewer(wctx, m.Version)
		cancel()
	}
}

// cruxStoreFailed runs when this member's store cannot write (a full or
// failing disk): rather than fail every write to its slots for ever, it
// drains itself, so that the control plane moves its leaderships (then
// its replicas) to members that can write. It acts at most every 10 s;
// the drain stays until an operator runs `mecha crux undrain` once the
// disk is fixed.
func (r *Runtime) cruxStoreFailed(store string, err error) {
	now := time.Now().UnixNano()
	last := r.cruxFailedAt.Load()
	if now-last < int64(10*time.Second) || !r.cruxFailedAt.CompareAndSwap(last, now) {
		return
	}
	self := r.cfg.Membership.NodeName
	r.log.Error("crux: this member's store cannot write; draining it so that its slots move to members that can (run `mecha crux undrain` once the disk is fixed)",
		"component", "crux", "store", store, "member", self, "err", err)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.proposeCrux(ctx, clustermap.MemberDrain{ID: self}); err != nil {
			r.log.Warn("crux: draining this member after a store failure", "component", "crux", "err", err)
		}
	}()
}

// brokerOf is the Kafka address of a member's broker, for the broker
// cluster's Metadata: its host as gossip shows it (this runtime's own
// broker's advertised host) and the broker port it gossips.
func (r *Runtime) brokerOf(member string) (string, int32, bool) {
	if member == r.cfg.Membership.NodeName && r.broker != nil {
		host, port, err := net.SplitHostPort(r.broker.Addr())
		p, _ := strconv.Atoi(port)
		return host, int32(p), err == nil
	}
	if r.node == nil {
		return "", 0, false
	}
	for _, mb := range r.node.Members() {
		if mb.Name == member && mb.Meta.BrokerPort > 0 {
			host, _, err := net.SplitHostPort(mb.Addr)
			return host, int32(mb.Meta.BrokerPort), err == nil
		}
	}
	return "", 0, false
}

// brokerReplicaFetch carries a broker replica fetch to a member's
// internal port.
func (r *Runtime) brokerReplicaFetch(ctx context.Context, member string, req []byte) ([]byte, error) {
	clients := r.cruxClients.Load()
	if clients == nil {
		return nil, errors.New("the cluster's connections are not up yet")
	}
	return clients.Call(ctx, r.cruxMaps.Map(), member, broker.MethodReplicaFetch, req)
}
