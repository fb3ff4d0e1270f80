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

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"mecha/internal/clustermap"
	"mecha/internal/dirlock"
	"mecha/internal/fsutil"
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
	lock *dirlock.Lock
	maps *mapState

	mu        sync.Mutex
	servers   map[string]string // name → address
	names     map[uint64]string // raft id → name
	serversCh chan struct{}     // signalled when servers change

	leader      atomic.Uint64
	leaderReady atomic.Bool // leader with its term's first entry applied
	voters      atomic.Pointer[[]uint64]
	term        atomic.Uint64
	commit      atomic.Uint64
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
	done   chan struct{} // closed when the node stops or fails
	once   sync.Once

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
		done:      make(chan struct{}),
		pending:   map[uint64]*proposal{},
	}
	n.addServers([]Peer{{Name: cfg.ID, Addr: cfg.Addr}})
	n.addServers(cfg.Servers)
	var b [8]byte
	_, _ = rand.Read(b[:])
	n.idBase = binary.BigEndian.Uint64(b[:])
	return n, nil
}

// Start locks Dir (internal/dirlock), opens the storage in it and starts
// the node: at once when Dir holds raft state, else once BootstrapExpect
// servers are known (or as a joiner when BootstrapExpect is 0). It fails
// when Dir is in use, corrupt, or holds another cluster's state. ctx
// gives its values only: Stop stops the node.
func (n *Node) Start(ctx context.Context) error {
	lock, err := dirlock.Acquire(n.cfg.Dir)
	if err != nil {
		return fmt.Errorf("controlplane: %s: %w", n.cfg.Dir, err)
	}
	if err := n.start(ctx); err != nil {
		if n.cancel != nil {
			n.cancel()
		}
		if n.st != nil {
			n.st.close()
		}
		lock.Release()
		return err
	}
	n.lock = lock
	return nil
}

func (n *Node) start(ctx context.Context) error {
	if err := n.checkClusterID(); err != nil {
		return err
	}
	exists, err := storageExists(n.cfg.Dir)
	if err != nil {
		return err
	}
	if n.st, err = openStorage(n.cfg.Dir); err != nil {
		return err
	}
	snap, _ := n.st.ms.Snapshot()
	if !raft.IsEmptySnap(snap) {
		m, err := clustermap.DecodeMap(snap.Data)
		if err != nil {
			return fmt.Errorf("controlplane: snapshot in %s: %w", n.cfg.Dir, err)
		}
		if n.cfg.ClusterID != "" && m.ClusterID != "" && m.ClusterID != n.cfg.ClusterID {
			return fmt.Errorf("%w: %s holds cluster %q, this node is configured for cluster %q", ErrClusterID, n.cfg.Dir, m.ClusterID, n.cfg.ClusterID)
		}
		n.cur, n.applied, n.snapIndex = m, snap.Metadata.Index, snap.Metadata.Index
		n.setConf(snap.Metadata.ConfState)
	} else {
		n.cur = clustermap.New()
	}
	n.maps.setApplied(n.cur, n.applied)
	peers, err := readPeers(n.cfg.Dir)
	if err != nil {
		return err
	}
	n.addServers(peers)
	n.ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if exists {
		rn, err := raft.NewRawNode(n.raftConfig())
		if err != nil {
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
	if n.lock != nil {
		n.lock.Release()
		n.lock = nil
	}
	n.once.Do(func() { close(n.done) })
	return n.Err()
}

// Done is closed when the node stops: Stop, or a failure (see Err) that
// the runtime should treat as fatal to the control plane.
func (n *Node) Done() <-chan struct{} { return n.done }

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
	n.once.Do(func() { close(n.done) })
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

// WaitNewer waits until the applied map's Version is above version (then
// Map returns it), or ctx ends (then it returns ctx's error). With Map it
// makes Node a statestore/cluster MapSource.
func (n *Node) WaitNewer(ctx context.Context, version uint64) error {
	_, err := n.maps.waitNewer(ctx, version)
	return err
}

// Status is a node's raft state, for operators and metrics.
type Status struct {
	// ID is this server's member name.
	ID string `json:"id"`
	// Leader is the leader's name ("" when none is known).
	Leader string `json:"leader"`
	// Term, Commit and Applied are raft's term, commit index and the
	// index applied to the map here.
	Term    uint64 `json:"term"`
	Commit  uint64 `json:"commit"`
	Applied uint64 `json:"applied"`
	// Voters are the servers of the raft configuration, by name.
	Voters []string `json:"voters"`
	// MapVersion is the applied map's version.
	MapVersion uint64 `json:"map_version"`
}

// Status returns the node's raft state.
func (n *Node) Status() Status {
	n.maps.mu.Lock()
	applied, version := n.maps.index, n.maps.m.Version
	n.maps.mu.Unlock()
	return Status{
		ID: n.cfg.ID, Leader: n.Leader(),
		Term: n.term.Load(), Commit: n.commit.Load(), Applied: applied,
		Voters: n.Voters(), MapVersion: version,
	}
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
