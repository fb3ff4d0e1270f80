package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"mecha/internal/clustermap"
	"mecha/internal/fsutil"
	"mecha/internal/muxconn"
)

// Defaults of Config.
const (
	DefaultTickInterval       = 100 * time.Millisecond
	DefaultElectionTick       = 10
	DefaultHeartbeatTick      = 1
	DefaultControllerInterval = time.Second
	DefaultSnapshotEvery      = 10000
	// peerQueue bounds the raft messages waiting for one peer.
	peerQueue = 256
	// maxLongPoll bounds a MethodGetMap wait.
	maxLongPoll = time.Minute
)

var (
	// ErrNotLeader: the node is not the raft leader (a forwarded proposal
	// reached a node that lost the leadership).
	ErrNotLeader = errors.New("controlplane: not the raft leader")
	// ErrLeaderChanged: the leader stepped down with the proposal under
	// way; it may or may not be applied.
	ErrLeaderChanged = errors.New("controlplane: leader changed, proposal outcome unknown")
	// ErrStopped: the node is stopped (or not started).
	ErrStopped = errors.New("controlplane: node stopped")
	// ErrClusterID: the data dir belongs to another cluster.
	ErrClusterID = errors.New("controlplane: cluster id mismatch")
)

// Peer is a server of the control plane: its member name and internal
// address.
type Peer struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

// Config configures a Node.
type Config struct {
	// ID is the member name (the clustermap member id).
	ID string
	// Addr is this node's internal address (where Handle is served).
	Addr string
	// Servers are the servers known from the start (others come through
	// SetServers).
	Servers []Peer
	// BootstrapExpect is how many servers a fresh node waits for before
	// it starts raft with them (the first BootstrapExpect by name); 0
	// joins a running group instead. Ignored when Dir holds raft state.
	BootstrapExpect int
	// Dir holds the raft log, snapshot, initial peers and cluster id.
	Dir string
	// ClusterID, when set, is the cluster this node belongs to: a Dir of
	// another cluster is refused, and the leader bootstraps with it. When
	// empty the bootstrapping leader makes one up (a UUID).
	ClusterID string
	// Replicas and RebuildAfter go into Bootstrap (0: clustermap's
	// defaults).
	Replicas     int
	RebuildAfter time.Duration
	// Raft timing: a tick every TickInterval; a follower campaigns after
	// ElectionTick to 2×ElectionTick−1 ticks without a leader; the leader
	// heartbeats every HeartbeatTick ticks.
	TickInterval  time.Duration
	ElectionTick  int
	HeartbeatTick int
	// ControllerInterval is how often the leader's controller plans.
	ControllerInterval time.Duration
	// Plan paces the planner.
	Plan clustermap.PlanConfig
	// SnapshotEvery is how many applied entries trigger a snapshot and
	// a compaction of the log.
	SnapshotEvery uint64
	// Transport reaches the other servers.
	Transport Transport
	// Logger is the wiring's (component=controlplane set there).
	Logger *slog.Logger
}

// snapshotKeep is how many entries before a snapshot stay in the log
// for followers slightly behind (a variable for tests).
var snapshotKeep uint64 = 1000

// Node is one server of the control plane's raft group.
type Node struct {
	cfg  Config
	log  *slog.Logger
	id   uint64
	st   *diskStorage
	maps *mapState

	mu        sync.Mutex
	servers   map[string]string // name → address
	names     map[uint64]string // raft id → name
	serversCh chan struct{}     // signalled when servers change

	leader      atomic.Uint64
	leaderReady atomic.Bool // leader with its term's first entry applied
	voters      atomic.Pointer[[]uint64]
	running     atomic.Bool
	idBase      uint64
	seq         atomic.Uint64

	propc     chan *proposal
	recvc     chan raftpb.Message
	reportc   chan report
	kick      chan struct{}
	transferc chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error

	// Loop state.
	senders     map[uint64]chan raftpb.Message
	pending     map[uint64]*proposal
	confState   raftpb.ConfState
	applied     uint64
	snapIndex   uint64
	leaderStart uint64
	cur         *clustermap.Map
}

type proposal struct {
	id   uint64
	data []byte
	cc   *raftpb.ConfChange // a configuration change instead of data
	done chan result
}

// setConf records the raft configuration (loop only); Voters reads it.
func (n *Node) setConf(cs raftpb.ConfState) {
	n.confState = cs
	v := slices.Clone(cs.Voters)
	n.voters.Store(&v)
}

// Voters returns the member names of raft's voters as this node last
// applied them.
func (n *Node) Voters() []string {
	v := n.voters.Load()
	if v == nil {
		return nil
	}
	names := make([]string, 0, len(*v))
	for _, id := range *v {
		if name := n.nameOf(id); name != "" {
			names = append(names, name)
		} else {
			names = append(names, fmt.Sprintf("%#x", id))
		}
	}
	slices.Sort(names)
	return names
}

type result struct {
	index uint64
	err   error
}

type report struct {
	id   uint64
	snap bool
	ok   bool
}

// RaftID returns the raft id of a member name: its FNV-64a hash, never 0.
func RaftID(name string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	if id := h.Sum64(); id != 0 {
		return id
	}
	return 1
}

// New returns a node; Start starts it.
func New(cfg Config) (*Node, error) {
	if cfg.ID == "" || cfg.Dir == "" || cfg.Transport == nil {
		return nil, errors.New("controlplane: Config needs ID, Dir and Transport")
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = DefaultTickInterval
	}
	if cfg.ElectionTick <= 0 {
		cfg.ElectionTick = DefaultElectionTick
	}
	if cfg.HeartbeatTick <= 0 {
		cfg.HeartbeatTick = DefaultHeartbeatTick
	}
	if cfg.ControllerInterval <= 0 {
		cfg.ControllerInterval = DefaultControllerInterval
	}
	if cfg.SnapshotEvery == 0 {
		cfg.SnapshotEvery = DefaultSnapshotEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger,
		id:        RaftID(cfg.ID),
		maps:      newMapState(clustermap.New()),
		servers:   map[string]string{},
		names:     map[uint64]string{},
		serversCh: make(chan struct{}, 1),
		propc:     make(chan *proposal),
		recvc:     make(chan raftpb.Message, 256),
		reportc:   make(chan report, 256),
		kick:      make(chan struct{}, 1),
		transferc: make(chan struct{}),
		senders:   map[uint64]chan raftpb.Message{},
		pending:   map[uint64]*proposal{},
	}
	n.addServers([]Peer{{Name: cfg.ID, Addr: cfg.Addr}})
	n.addServers(cfg.Servers)
	var b [8]byte
	_, _ = rand.Read(b[:])
	n.idBase = binary.BigEndian.Uint64(b[:])
	return n, nil
}

// Start opens the storage in Dir and starts the node: at once when Dir
// holds raft state, else once BootstrapExpect servers are known. It
// fails when Dir is corrupt or holds another cluster's state.
func (n *Node) Start(ctx context.Context) error {
	if err := os.MkdirAll(n.cfg.Dir, 0o755); err != nil {
		return err
	}
	if err := n.checkClusterID(); err != nil {
		return err
	}
	exists, err := storageExists(n.cfg.Dir)
	if err != nil {
		return err
	}
	st, err := openStorage(n.cfg.Dir)
	if err != nil {
		return err
	}
	n.st = st
	snap, _ := st.ms.Snapshot()
	if !raft.IsEmptySnap(snap) {
		m, err := clustermap.DecodeMap(snap.Data)
		if err != nil {
			st.close()
			return fmt.Errorf("controlplane: snapshot in %s: %w", n.cfg.Dir, err)
		}
		if n.cfg.ClusterID != "" && m.ClusterID != "" && m.ClusterID != n.cfg.ClusterID {
			st.close()
			return fmt.Errorf("%w: %s holds cluster %q, this node is configured for cluster %q", ErrClusterID, n.cfg.Dir, m.ClusterID, n.cfg.ClusterID)
		}
		n.cur, n.applied, n.snapIndex = m, snap.Metadata.Index, snap.Metadata.Index
		n.setConf(snap.Metadata.ConfState)
	} else {
		n.cur = clustermap.New()
	}
	n.maps.setApplied(n.cur, n.applied)
	if peers, err := readPeers(n.cfg.Dir); err != nil {
		st.close()
		return err
	} else {
		n.addServers(peers)
	}
	n.ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if exists {
		rn, err := raft.NewRawNode(n.raftConfig())
		if err != nil {
			st.close()
			return err
		}
		n.log.Info("raft restarting from storage", "dir", n.cfg.Dir, "applied", n.applied)
		n.startLoop(rn)
		return nil
	}
	if n.cfg.BootstrapExpect < 1 {
		return n.join()
	}
	n.wg.Add(1)
	go n.waitBootstrap()
	return nil
}

// join starts raft with no peers and an empty log: the node waits for the
// leader, which adds it to the group (the controller does, for a live
// server member of the map) and sends it the log or a snapshot.
func (n *Node) join() error {
	rn, err := raft.NewRawNode(n.raftConfig())
	if err != nil {
		return err
	}
	n.log.Info("raft joining: waiting for the leader to add this server")
	n.startLoop(rn)
	return nil
}

func (n *Node) raftConfig() *raft.Config {
	return &raft.Config{
		ID:              n.id,
		ElectionTick:    n.cfg.ElectionTick,
		HeartbeatTick:   n.cfg.HeartbeatTick,
		Storage:         n.st.ms,
		Applied:         n.applied,
		MaxSizePerMsg:   1 << 20,
		MaxInflightMsgs: 256,
		CheckQuorum:     true,
		PreVote:         true,
		Logger:          raftLogger{n.log},
	}
}

// checkClusterID refuses a Dir whose recorded cluster id is not the
// configured one.
func (n *Node) checkClusterID() error {
	b, err := os.ReadFile(filepath.Join(n.cfg.Dir, clusterFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	have := strings.TrimSpace(string(b))
	if n.cfg.ClusterID != "" && have != n.cfg.ClusterID {
		return fmt.Errorf("%w: %s holds cluster %q, this node is configured for cluster %q", ErrClusterID, n.cfg.Dir, have, n.cfg.ClusterID)
	}
	return nil
}

// waitBootstrap waits until BootstrapExpect servers are known, then
// starts raft with the first BootstrapExpect of them by name as its
// initial peers.
func (n *Node) waitBootstrap() {
	defer n.wg.Done()
	for {
		peers := n.knownServers()
		if len(peers) >= n.cfg.BootstrapExpect {
			peers = peers[:n.cfg.BootstrapExpect]
			if slices.ContainsFunc(peers, func(p Peer) bool { return p.Name == n.cfg.ID }) {
				if err := n.bootstrap(peers); err != nil {
					n.fail(err)
				}
				return
			}
			// Not among the first servers: the others bootstrap, and
			// this one joins their group.
			if err := n.join(); err != nil {
				n.fail(err)
			}
			return
		}
		select {
		case <-n.serversCh:
		case <-n.ctx.Done():
			return
		}
	}
}

func (n *Node) bootstrap(peers []Peer) error {
	rps := make([]raft.Peer, len(peers))
	seen := map[uint64]string{}
	for i, p := range peers {
		id := RaftID(p.Name)
		if other, ok := seen[id]; ok {
			return fmt.Errorf("controlplane: servers %q and %q have the same raft id", other, p.Name)
		}
		seen[id] = p.Name
		rps[i] = raft.Peer{ID: id}
	}
	b, err := json.Marshal(peers)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFile(filepath.Join(n.cfg.Dir, peersFile), b); err != nil {
		return err
	}
	rn, err := raft.NewRawNode(n.raftConfig())
	if err != nil {
		return err
	}
	if err := rn.Bootstrap(rps); err != nil {
		return err
	}
	names := make([]string, len(peers))
	for i, p := range peers {
		names[i] = p.Name
	}
	n.log.Info("raft bootstrapping", "servers", strings.Join(names, ","))
	n.startLoop(rn)
	return nil
}

func readPeers(dir string) ([]Peer, error) {
	b, err := os.ReadFile(filepath.Join(dir, peersFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var peers []Peer
	if err := json.Unmarshal(b, &peers); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, filepath.Join(dir, peersFile), err)
	}
	return peers, nil
}

func (n *Node) startLoop(rn *raft.RawNode) {
	n.running.Store(true)
	n.wg.Add(2)
	go n.run(rn)
	go n.controller()
}

// Stop stops the node and closes its storage; it returns the error that
// stopped it early, if any.
//
// A leader first hands its leadership to its most caught-up follower
// (raft's leader transfer), waiting at most an election timeout, so that
// a planned restart costs the group a heartbeat rather than an election
// timeout.
func (n *Node) Stop() error {
	if n.cancel == nil {
		return nil
	}
	if n.IsLeader() {
		select {
		case n.transferc <- struct{}{}:
		case <-n.ctx.Done():
		}
		deadline := time.NewTimer(n.cfg.TickInterval * time.Duration(n.cfg.ElectionTick))
		defer deadline.Stop()
		t := time.NewTicker(n.cfg.TickInterval / 4)
		defer t.Stop()
	wait:
		for n.leader.Load() == n.id {
			select {
			case <-t.C:
			case <-deadline.C:
				break wait
			case <-n.ctx.Done():
				break wait
			}
		}
	}
	n.cancel()
	n.wg.Wait()
	n.running.Store(false)
	n.leaderReady.Store(false)
	n.leader.Store(0)
	if n.st != nil {
		_ = n.st.close()
	}
	return n.Err()
}

// Err returns the error that stopped the node (a storage failure), or nil.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

func (n *Node) fail(err error) {
	n.errMu.Lock()
	if n.err == nil {
		n.err = err
	}
	n.errMu.Unlock()
	n.log.Error("control plane node stopped", "err", err)
	n.cancel()
}

// SetServers adds the servers the runtime discovered (by gossip); a fresh
// node bootstraps once it knows BootstrapExpect of them.
func (n *Node) SetServers(peers []Peer) {
	n.addServers(peers)
	select {
	case n.serversCh <- struct{}{}:
	default:
	}
}

func (n *Node) addServers(peers []Peer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range peers {
		if p.Name == "" {
			continue
		}
		if p.Addr != "" || n.servers[p.Name] == "" {
			n.servers[p.Name] = p.Addr
		}
		n.names[RaftID(p.Name)] = p.Name
	}
}

// knownServers returns the servers known, sorted by name.
func (n *Node) knownServers() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	peers := make([]Peer, 0, len(n.servers))
	for name, addr := range n.servers {
		peers = append(peers, Peer{Name: name, Addr: addr})
	}
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return peers
}

// addrOf returns the address of raft id id: from the servers known,
// else from the map's member of that name.
func (n *Node) addrOf(id uint64) string {
	n.mu.Lock()
	name := n.names[id]
	addr := n.servers[name]
	n.mu.Unlock()
	if addr == "" && name != "" {
		if mb := n.maps.get().Member(name); mb != nil {
			addr = mb.Addr
		}
	}
	return addr
}

// Map returns the map as last applied here. It is immutable.
func (n *Node) Map() *clustermap.Map { return n.maps.get() }

// Watch returns a channel closed at the next change of the map (or of
// the applied index).
func (n *Node) Watch() <-chan struct{} { return n.maps.watch() }

// WaitNewer returns the first applied map whose Version is above version;
// when ctx ends first, the current map and ctx's error.
func (n *Node) WaitNewer(ctx context.Context, version uint64) (*clustermap.Map, error) {
	return n.maps.waitNewer(ctx, version)
}

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.running.Load() && n.leader.Load() == n.id }

// Leader returns the member name of the raft leader, or "" when none is
// known.
func (n *Node) Leader() string {
	id := n.leader.Load()
	if id == 0 {
		return ""
	}
	return n.nameOf(id)
}

// run is the raft loop: it ticks, steps messages and proposals, and
// handles every Ready (persist, send, apply, advance).
func (n *Node) run(rn *raft.RawNode) {
	defer n.wg.Done()
	defer n.failPending(ErrStopped)
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			rn.Tick()
		case m := <-n.recvc:
			_ = rn.Step(m)
			// Step what else arrived before persisting: one fsync for
			// the batch.
			for range cap(n.recvc) {
				select {
				case m := <-n.recvc:
					_ = rn.Step(m)
					continue
				default:
				}
				break
			}
		case <-n.transferc:
			n.transfer(rn)
		case p := <-n.propc:
			n.propose(rn, p)
		case r := <-n.reportc:
			if r.snap {
				st := raft.SnapshotFinish
				if !r.ok {
					st = raft.SnapshotFailure
				}
				rn.ReportSnapshot(r.id, st)
			} else {
				rn.ReportUnreachable(r.id)
			}
		}
		for rn.HasReady() {
			if err := n.ready(rn); err != nil {
				n.fail(err)
				return
			}
		}
	}
}

// transfer hands the leadership to the follower whose log matches the
// most of the leader's.
func (n *Node) transfer(rn *raft.RawNode) {
	st := rn.Status()
	if st.RaftState != raft.StateLeader {
		return
	}
	var to, match uint64
	for id, pr := range st.Progress {
		if id != n.id && pr.Match >= match {
			to, match = id, pr.Match
		}
	}
	if to != 0 {
		n.log.Info("raft leadership transfer", "to", n.nameOf(to))
		rn.TransferLeader(to)
	}
}

func (n *Node) nameOf(id uint64) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.names[id]
}

func (n *Node) propose(rn *raft.RawNode, p *proposal) {
	if rn.BasicStatus().RaftState != raft.StateLeader {
		p.done <- result{err: ErrNotLeader}
		return
	}
	var err error
	if p.cc != nil {
		p.cc.Context = binary.BigEndian.AppendUint64(nil, p.id)
		err = rn.ProposeConfChange(*p.cc)
	} else {
		err = rn.Propose(p.data)
	}
	if err != nil {
		p.done <- result{err: fmt.Errorf("controlplane: propose: %w", err)}
		return
	}
	n.pending[p.id] = p
}

func (n *Node) failPending(err error) {
	for id, p := range n.pending {
		p.done <- result{err: err}
		delete(n.pending, id)
	}
}

func (n *Node) ready(rn *raft.RawNode) error {
	rd := rn.Ready()
	if rd.SoftState != nil {
		was := n.leader.Load() == n.id
		n.leader.Store(rd.SoftState.Lead)
		isLeader := rd.SoftState.RaftState == raft.StateLeader
		if was && !isLeader {
			n.failPending(ErrLeaderChanged)
			n.leaderReady.Store(false)
		}
		if isLeader && !was {
			// Its term's first entry (raft appends an empty one) is
			// in rd.Entries: once applied, the map is up to date.
			n.leaderStart = 0
			for _, e := range rd.Entries {
				n.leaderStart = max(n.leaderStart, e.Index)
			}
			if n.leaderStart == 0 {
				n.leaderStart, _ = n.st.ms.LastIndex()
			}
			n.log.Info("raft leader", "term", rd.HardState.Term)
		}
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		m, err := clustermap.DecodeMap(rd.Snapshot.Data)
		if err != nil {
			return fmt.Errorf("controlplane: snapshot from the leader: %w", err)
		}
		if err := n.st.saveSnapshot(rd.Snapshot); err != nil {
			return err
		}
		n.cur, n.applied, n.snapIndex = m, rd.Snapshot.Metadata.Index, rd.Snapshot.Metadata.Index
		n.setConf(rd.Snapshot.Metadata.ConfState)
		n.onMap(m)
	}
	if err := n.st.save(rd.HardState, rd.Entries); err != nil {
		return err
	}
	var unreachable []raftpb.Message
	for _, m := range rd.Messages {
		if !n.send(m) {
			unreachable = append(unreachable, m)
		}
	}
	for i := range rd.CommittedEntries {
		if err := n.apply(rn, &rd.CommittedEntries[i]); err != nil {
			return err
		}
	}
	n.maps.setApplied(n.cur, n.applied)
	if n.applied-n.snapIndex >= n.cfg.SnapshotEvery {
		data, err := clustermap.EncodeMap(n.cur)
		if err != nil {
			return err
		}
		if err := n.st.compact(n.applied, n.confState, data, snapshotKeep); err != nil {
			return err
		}
		n.snapIndex = n.applied
		n.log.Debug("raft snapshot", "index", n.applied)
	}
	rn.Advance(rd)
	for _, m := range unreachable {
		rn.ReportUnreachable(m.To)
		if m.Type == raftpb.MsgSnap {
			rn.ReportSnapshot(m.To, raft.SnapshotFailure)
		}
	}
	ready := n.leader.Load() == n.id && n.applied >= n.leaderStart
	if ready && !n.leaderReady.Load() {
		n.leaderReady.Store(true)
		select {
		case n.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// send queues m for its peer's sender; false when the queue is full.
func (n *Node) send(m raftpb.Message) bool {
	q := n.senders[m.To]
	if q == nil {
		q = make(chan raftpb.Message, peerQueue)
		n.senders[m.To] = q
		n.wg.Add(1)
		go n.sender(m.To, q)
	}
	select {
	case q <- m:
		return true
	default:
		return false
	}
}

// sender sends one peer's raft messages in order.
func (n *Node) sender(to uint64, q chan raftpb.Message) {
	defer n.wg.Done()
	timeout := n.cfg.TickInterval * time.Duration(n.cfg.ElectionTick)
	for {
		var m raftpb.Message
		select {
		case <-n.ctx.Done():
			return
		case m = <-q:
		}
		err := ErrStopped
		if addr := n.addrOf(to); addr != "" {
			var b []byte
			if b, err = m.Marshal(); err == nil {
				ctx, cancel := context.WithTimeout(n.ctx, timeout)
				_, err = n.cfg.Transport.Call(ctx, addr, MethodRaft, b)
				cancel()
			}
		}
		var r []report
		if err != nil {
			r = append(r, report{id: to})
		}
		if m.Type == raftpb.MsgSnap {
			r = append(r, report{id: to, snap: true, ok: err == nil})
		}
		for _, r := range r {
			select {
			case n.reportc <- r:
			default:
			}
		}
	}
}

// apply applies one committed entry.
func (n *Node) apply(rn *raft.RawNode, e *raftpb.Entry) error {
	n.applied = e.Index
	switch e.Type {
	case raftpb.EntryConfChange:
		var cc raftpb.ConfChange
		if err := cc.Unmarshal(e.Data); err != nil {
			return fmt.Errorf("controlplane: entry %d: %w", e.Index, err)
		}
		n.setConf(*rn.ApplyConfChange(cc))
		n.log.Info("raft configuration changed", "change", cc.Type.String(), "server", n.nameOf(cc.NodeID), "voters", len(n.confState.Voters))
		if len(cc.Context) == 8 {
			if p := n.pending[binary.BigEndian.Uint64(cc.Context)]; p != nil {
				delete(n.pending, p.id)
				p.done <- result{index: e.Index}
			}
		}
		return nil
	case raftpb.EntryConfChangeV2:
		var cc raftpb.ConfChangeV2
		if err := cc.Unmarshal(e.Data); err != nil {
			return fmt.Errorf("controlplane: entry %d: %w", e.Index, err)
		}
		n.setConf(*rn.ApplyConfChange(cc))
		return nil
	}
	if len(e.Data) == 0 {
		return nil
	}
	var err error
	var id uint64
	if len(e.Data) < 8 {
		err = fmt.Errorf("%w: entry %d too short", clustermap.ErrBadCommand, e.Index)
	} else {
		id = binary.BigEndian.Uint64(e.Data)
		var c clustermap.Command
		if c, err = clustermap.Decode(e.Data[8:]); err == nil {
			var m *clustermap.Map
			m, err = clustermap.Apply(n.cur, c)
			if err == nil && m != n.cur {
				n.cur = m
				if b, ok := c.(clustermap.Bootstrap); ok {
					n.onBootstrap(b.ClusterID)
				}
				n.onMap(m)
			}
		}
	}
	if err != nil {
		n.log.Debug("command refused", "index", e.Index, "err", err)
	}
	if p := n.pending[id]; p != nil {
		delete(n.pending, id)
		p.done <- result{index: e.Index, err: err}
	}
	return nil
}

// onBootstrap records the cluster id in Dir.
func (n *Node) onBootstrap(clusterID string) {
	if n.cfg.ClusterID != "" && clusterID != n.cfg.ClusterID {
		n.log.Error("raft group bootstrapped with another cluster id", "cluster_id", clusterID, "expected", n.cfg.ClusterID)
	}
	if err := fsutil.WriteFile(filepath.Join(n.cfg.Dir, clusterFile), []byte(clusterID+"\n")); err != nil {
		n.log.Error("recording cluster id", "err", err)
	}
	n.log.Info("cluster bootstrapped", "cluster_id", clusterID)
}

// onMap learns the server members' addresses from a new map.
func (n *Node) onMap(m *clustermap.Map) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, mb := range m.Members {
		if mb.HasRole(clustermap.RoleServer) {
			n.names[RaftID(mb.ID)] = mb.ID
			if n.servers[mb.ID] == "" {
				n.servers[mb.ID] = mb.Addr
			}
		}
	}
}

// Propose has c applied: proposed here when this node leads, else
// forwarded to the leader (waiting for one to be known). It returns once
// c is applied here, with Apply's refusal if it was refused, or ctx's
// error.
func (n *Node) Propose(ctx context.Context, c clustermap.Command) error {
	data, err := clustermap.Encode(c)
	if err != nil {
		return err
	}
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	for {
		if !n.running.Load() && n.ctx != nil && n.ctx.Err() != nil {
			return ErrStopped
		}
		if n.IsLeader() {
			_, err := n.proposeLocal(ctx, data)
			if !errors.Is(err, ErrNotLeader) {
				return err
			}
		} else if leader := n.leader.Load(); leader != 0 {
			if addr := n.addrOf(leader); addr != "" {
				index, refusal, err := n.forward(ctx, addr, data)
				if err == nil {
					if werr := n.maps.waitIndex(ctx, index); werr != nil {
						return werr
					}
					return refusal
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				n.log.Debug("forwarding a proposal", "leader", addr, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// proposeLocal proposes data on this node's raft and waits for it to be
// applied here.
func (n *Node) proposeLocal(ctx context.Context, cmd []byte) (uint64, error) {
	if n.ctx == nil {
		return 0, ErrStopped
	}
	id := n.idBase + n.seq.Add(1)
	data := make([]byte, 8+len(cmd))
	binary.BigEndian.PutUint64(data, id)
	copy(data[8:], cmd)
	return n.submit(ctx, &proposal{id: id, data: data, done: make(chan result, 1)})
}

// submit hands p to the raft loop and waits for its outcome.
func (n *Node) submit(ctx context.Context, p *proposal) (uint64, error) {
	select {
	case n.propc <- p:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-n.ctx.Done():
		return 0, ErrStopped
	}
	select {
	case r := <-p.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Proposal answer statuses.
const (
	statusApplied   byte = 0
	statusRefused   byte = 1
	statusNotLeader byte = 2
)

// forward sends a proposal to the leader at addr: the raft index it was
// applied at and Apply's refusal, or the error that kept it from being
// proposed.
func (n *Node) forward(ctx context.Context, addr string, cmd []byte) (uint64, error, error) {
	b, err := n.cfg.Transport.Call(ctx, addr, MethodPropose, cmd)
	if err != nil {
		return 0, nil, err
	}
	if len(b) < 9 {
		return 0, nil, fmt.Errorf("controlplane: short propose answer from %s", addr)
	}
	index := binary.BigEndian.Uint64(b)
	switch b[8] {
	case statusApplied:
		return index, nil, nil
	case statusRefused:
		return index, refusal(string(b[9:])), nil
	default:
		return 0, nil, ErrNotLeader
	}
}

// sentinels are clustermap's errors, which a refusal that crossed the
// network wraps again so that callers can still branch with errors.Is.
var sentinels = []error{
	clustermap.ErrNotBootstrapped, clustermap.ErrBootstrapped, clustermap.ErrBadCommand,
	clustermap.ErrUnknownMember, clustermap.ErrMemberLeft, clustermap.ErrMemberNotAlive,
	clustermap.ErrMemberDraining, clustermap.ErrNotDataMember, clustermap.ErrUnknownSlot,
	clustermap.ErrUnknownTopic, clustermap.ErrUnknownPartition, clustermap.ErrTopicExists,
	clustermap.ErrUnassigned, clustermap.ErrSlotsAssigned, clustermap.ErrStaleEpoch,
	clustermap.ErrBadISR, clustermap.ErrBadAssignment, clustermap.ErrNotEnoughMembers,
	clustermap.ErrNoLeader, clustermap.ErrIsLeader, clustermap.ErrLastInSync,
	clustermap.ErrNotInSync, clustermap.ErrMoveInProgress, clustermap.ErrNoSuchMove,
	clustermap.ErrBadPhase, clustermap.ErrBadConfig, clustermap.ErrCorrupt,
}

// remoteRefusal is Apply's refusal as the leader reported it.
type remoteRefusal struct {
	msg      string
	sentinel error
}

func (e *remoteRefusal) Error() string { return e.msg }
func (e *remoteRefusal) Unwrap() error { return e.sentinel }

// isRefusal reports whether err is Apply's refusal (here or at the
// leader) rather than a failure to get the command applied.
func isRefusal(err error) bool {
	var r *remoteRefusal
	if errors.As(err, &r) {
		return true
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func refusal(msg string) error {
	e := &remoteRefusal{msg: msg}
	for _, s := range sentinels {
		if strings.Contains(msg, s.Error()) {
			e.sentinel = s
			break
		}
	}
	return e
}

// Handle serves the control plane's muxconn methods (MethodRaft,
// MethodPropose, MethodGetMap); the runtime's muxconn server dispatches
// the range 0x0100–0x01FF to it.
func (n *Node) Handle(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	switch method {
	case MethodRaft:
		if !n.running.Load() {
			return nil, ErrStopped
		}
		var m raftpb.Message
		if err := m.Unmarshal(body); err != nil {
			return nil, err
		}
		select {
		case n.recvc <- m:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-n.ctx.Done():
			return nil, ErrStopped
		}
	case MethodPropose:
		if _, err := clustermap.Decode(body); err != nil {
			return nil, err
		}
		ans := make([]byte, 9, 64)
		if !n.IsLeader() {
			ans[8] = statusNotLeader
			return ans, nil
		}
		pctx, cancel := context.WithTimeout(ctx, 10*n.cfg.TickInterval*time.Duration(n.cfg.ElectionTick))
		defer cancel()
		cmd := append([]byte(nil), body...)
		index, err := n.proposeLocal(pctx, cmd)
		switch {
		case errors.Is(err, ErrNotLeader):
			ans[8] = statusNotLeader
		case index != 0:
			binary.BigEndian.PutUint64(ans, index)
			if err != nil {
				ans[8] = statusRefused
				ans = append(ans, err.Error()...)
			}
		default:
			return nil, err
		}
		return ans, nil
	case MethodGetMap:
		return handleGetMap(ctx, n.maps, body)
	case MethodSubmit:
		c, err := clustermap.Decode(body)
		if err != nil {
			return nil, err
		}
		pctx, cancel := context.WithTimeout(ctx, 10*n.cfg.TickInterval*time.Duration(n.cfg.ElectionTick))
		defer cancel()
		err = n.Propose(pctx, c)
		ans := make([]byte, 9, 64)
		switch {
		case err == nil:
		case isRefusal(err):
			ans[8] = statusRefused
			ans = append(ans, err.Error()...)
		default:
			return nil, err
		}
		return ans, nil
	}
	return nil, muxconn.ErrUnknownMethod
}

// handleGetMap answers a MethodGetMap long poll from maps.
func handleGetMap(ctx context.Context, maps *mapState, body []byte) ([]byte, error) {
	if len(body) != 12 {
		return nil, fmt.Errorf("controlplane: get map: body of %d bytes, want 12", len(body))
	}
	version := binary.BigEndian.Uint64(body)
	wait := min(time.Duration(binary.BigEndian.Uint32(body[8:]))*time.Millisecond, maxLongPoll)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, _ := maps.waitNewer(wctx, version)
	return clustermap.EncodeMap(m)
}

// controller is the leader's planner: every ControllerInterval (and
// when this node becomes a ready leader) it bootstraps the map if
// needed, else proposes what clustermap.Plan returns, ignoring
// refusals (the next round plans on the newer map).
func (n *Node) controller() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ControllerInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		if n.leaderReady.Load() {
			n.controlRound()
		}
	}
}

func (n *Node) controlRound() {
	m := n.Map()
	var cmds []clustermap.Command
	if !m.Bootstrapped() {
		id := n.cfg.ClusterID
		if id == "" {
			id = uuid.NewString()
		}
		cmds = []clustermap.Command{clustermap.Bootstrap{ClusterID: id, Replicas: n.cfg.Replicas, RebuildAfter: n.cfg.RebuildAfter}}
	} else {
		// A Tick only when a dead member is due to be declared gone:
		// an idle cluster writes nothing to its log.
		now := time.Now().UnixNano()
		for _, mb := range m.Members {
			if mb.State == clustermap.StateDead && now-mb.Since >= int64(m.Settings.RebuildAfter) {
				cmds = append(cmds, clustermap.Tick{Now: now})
				break
			}
		}
		if n.reconcileVoters(m) {
			return
		}
		cmds = append(cmds, clustermap.Plan(m, n.cfg.Plan)...)
	}
	for _, c := range cmds {
		data, err := clustermap.Encode(c)
		if err != nil {
			n.log.Error("encoding a planned command", "err", err)
			return
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ControllerInterval*5)
		_, err = n.proposeLocal(ctx, data)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrLeaderChanged), errors.Is(err, ErrStopped), n.ctx.Err() != nil:
			return
		default:
			n.log.Debug("planned command refused", "kind", c.Kind().String(), "err", err)
		}
	}
}

// reconcileVoters makes raft's voters follow the map's server members:
// a live server member that is not a voter is added, a server member that
// left is removed (never this node). One change per round, waited for; it
// reports whether it proposed one.
func (n *Node) reconcileVoters(m *clustermap.Map) bool {
	var voters []uint64
	if v := n.voters.Load(); v != nil {
		voters = *v
	}
	for _, mb := range m.Members {
		if !mb.HasRole(clustermap.RoleServer) {
			continue
		}
		id := RaftID(mb.ID)
		voter := slices.Contains(voters, id)
		var cc *raftpb.ConfChange
		switch {
		case !voter && mb.Alive() && mb.Addr != "":
			cc = &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: id}
		case voter && mb.State == clustermap.StateLeft && id != n.id:
			cc = &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: id}
		default:
			continue
		}
		n.log.Info("raft configuration change", "change", cc.Type.String(), "server", mb.ID)
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ControllerInterval*5)
		_, err := n.submit(ctx, &proposal{id: n.idBase + n.seq.Add(1), cc: cc, done: make(chan result, 1)})
		cancel()
		if err != nil {
			n.log.Warn("raft configuration change", "server", mb.ID, "err", err)
		}
		return true
	}
	return false
}

// MemberAlive records that the failure detector sees member name at addr
// with roles: a MemberJoin when the map does not hold it (or holds it
// with another address or roles, or as left), a MemberAlive when it was
// dead or gone, nothing when it is alive already.
func (n *Node) MemberAlive(ctx context.Context, name, addr string, roles []string) error {
	mb := n.Map().Member(name)
	now := time.Now().UnixNano()
	rs := slices.Clone(roles)
	slices.Sort(rs)
	rs = slices.Compact(rs)
	switch {
	case mb == nil || mb.State == clustermap.StateLeft || mb.Addr != addr || !slices.Equal(mb.Roles, rs):
		return n.Propose(ctx, clustermap.MemberJoin{ID: name, Addr: addr, Roles: rs, At: now})
	case !mb.Alive():
		return n.Propose(ctx, clustermap.MemberAlive{ID: name, At: now})
	}
	return nil
}

// MemberDead records that the failure detector lost member name.
func (n *Node) MemberDead(ctx context.Context, name string) error {
	mb := n.Map().Member(name)
	if mb == nil || !mb.Alive() {
		return nil
	}
	return n.Propose(ctx, clustermap.MemberDead{ID: name, At: time.Now().UnixNano()})
}

// raftLogger sends raft's logs to slog.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...any)              { r.l.Debug("raft: " + fmt.Sprint(v...)) }
func (r raftLogger) Debugf(f string, v ...any)   { r.l.Debug("raft: " + fmt.Sprintf(f, v...)) }
func (r raftLogger) Info(v ...any)               { r.l.Debug("raft: " + fmt.Sprint(v...)) }
func (r raftLogger) Infof(f string, v ...any)    { r.l.Debug("raft: " + fmt.Sprintf(f, v...)) }
func (r raftLogger) Warning(v ...any)            { r.l.Warn("raft: " + fmt.Sprint(v...)) }
func (r raftLogger) Warningf(f string, v ...any) { r.l.Warn("raft: " + fmt.Sprintf(f, v...)) }
func (r raftLogger) Error(v ...any)              { r.l.Error("raft: " + fmt.Sprint(v...)) }
func (r raftLogger) Errorf(f string, v ...any)   { r.l.Error("raft: " + fmt.Sprintf(f, v...)) }
func (r raftLogger) Fatal(v ...any)              { r.Panic(v...) }
func (r raftLogger) Fatalf(f string, v ...any)   { r.Panicf(f, v...) }
func (r raftLogger) Panic(v ...any)              { s := fmt.Sprint(v...); r.l.Error("raft: " + s); panic(s) }
func (r raftLogger) Panicf(f string, v ...any) {
	s := fmt.Sprintf(f, v...)
	r.l.Error("raft: " + s)
	panic(s)
}
