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
// follower the leader. Slots do not move yet (clustermap.PlanConfig
// NoMoves): a member that joins later gets no slots, and the replicas of
// a member gone for good are not rebuilt elsewhere.

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
		r.cruxMaps = cluster.NewMapVar(clustermap.New())
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
	r.cruxStats = &cluster.Stats{}
	r.crux = &cluster.Node{Member: member, Maps: r.cruxMaps, Clients: clients, Stats: r.cruxStats, Logger: log}
	r.metrics.AddCrux(r.cruxMetrics)
	if r.cruxStores() {
		r.crux.Server = cluster.NewServer(member, r.cruxMaps, log)
		if r.cfg.BootstrapExpect > 0 {
			rc := cluster.DefaultReplicaConfig()
			rc.MinISR = min(rc.MinISR, r.cruxReplicas())
			r.crux.Server.Replicate = &cluster.ReplicationConfig{Clients: clients, Propose: r.proposeISR, Replica: rc}
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
	node      *controlplane.Node // nil on a guest
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
		cp.wg.Add(1)
		go func() { defer cp.wg.Done(); c.Run(ctx) }()
	} else {
		n, err := controlplane.New(controlplane.Config{
			ID: r.cfg.Membership.NodeName, Addr: r.internalAddr(), BootstrapExpect: r.cfg.BootstrapExpect, ClusterID: r.cfg.ClusterID,
			Dir: filepath.Join(r.cfg.DataDir, "controlplane"), Replicas: r.cruxReplicas(),
			Plan:      clustermap.PlanConfig{MinMembers: r.cfg.BootstrapExpect, NoMoves: true},
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
	log.Info("Crux cluster", "member", r.crux.Member, "cluster_id", r.cfg.ClusterID, "bootstrap_expect", r.cfg.BootstrapExpect, "internal", r.internalAddr())
	return nil
}

// stopControlPlane stops the feed and the raft node (a leader first hands
// its leadership over).
func (r *Runtime) stopControlPlane(context.Context) {
	cp := r.cpRun
	if cp == nil {
		return
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
	case method >= controlplane.MethodFirst && method <= controlplane.MethodLast:
		if cp := r.cp.Load(); cp != nil {
			return cp.node.Handle(ctx, method, body)
		}
	}
	return nil, muxconn.ErrUnknownMethod
}
