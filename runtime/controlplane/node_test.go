package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mecha/internal/clustermap"
	"mecha/internal/dirlock"
	"mecha/internal/muxconn"
	"mecha/internal/poll"
)

// memNet is an in-memory Transport: addresses are node names. A node
// calls through from(its name), so that isolate can cut it off.
type memNet struct {
	mu       sync.Mutex
	nodes    map[string]*Node
	isolated map[string]bool
}

func (m *memNet) Call(ctx context.Context, addr string, method uint16, body []byte) ([]byte, error) {
	return m.call(ctx, "", addr, method, body)
}

func (m *memNet) call(ctx context.Context, from, addr string, method uint16, body []byte) ([]byte, error) {
	m.mu.Lock()
	n := m.nodes[addr]
	cut := m.isolated[from] || m.isolated[addr]
	m.mu.Unlock()
	if n == nil || cut {
		return nil, fmt.Errorf("%w: %s is down", muxconn.ErrUnreachable, addr)
	}
	return n.Handle(ctx, method, bytes.Clone(body))
}

// from is the transport of node name.
func (m *memNet) from(name string) Transport { return memFrom{m, name} }

type memFrom struct {
	net  *memNet
	name string
}

func (f memFrom) Call(ctx context.Context, addr string, method uint16, body []byte) ([]byte, error) {
	return f.net.call(ctx, f.name, addr, method, body)
}

// isolate cuts name off from every other node (or heals it).
func (m *memNet) isolate(name string, cut bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isolated == nil {
		m.isolated = map[string]bool{}
	}
	m.isolated[name] = cut
}

func (m *memNet) set(addr string, n *Node) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.nodes == nil {
		m.nodes = map[string]*Node{}
	}
	if n == nil {
		delete(m.nodes, addr)
	} else {
		m.nodes[addr] = n
	}
}

func testLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("CONTROLPLANE_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// mapSource is statestore/cluster's MapSource: Node and Client serve as one.
type mapSource interface {
	Map() *clustermap.Map
	WaitNewer(ctx context.Context, version uint64) error
}

var (
	_ mapSource = (*Node)(nil)
	_ mapSource = (*Client)(nil)
)

var names3 = []string{"srv-a", "srv-b", "srv-c"}

func testConfig(name, dir string, tr Transport, tick time.Duration) Config {
	return Config{
		ID:                 name,
		Addr:               name,
		BootstrapExpect:    3,
		Dir:                dir,
		ClusterID:          "cluster-x",
		TickInterval:       tick,
		ElectionTick:       10,
		HeartbeatTick:      1,
		ControllerInterval: 2 * tick,
		Transport:          tr,
		Logger:             testLogger(),
	}
}

// startMem starts the nodes of names on net with dirs, each told of all
// the servers as gossip would.
func startMem(t *testing.T, net *memNet, dirs []string, tick time.Duration, tune func(*Config)) []*Node {
	t.Helper()
	var peers []Peer
	for _, name := range names3 {
		peers = append(peers, Peer{Name: name, Addr: name})
	}
	nodes := make([]*Node, len(names3))
	for i, name := range names3 {
		cfg := testConfig(name, dirs[i], net.from(name), tick)
		if tune != nil {
			tune(&cfg)
		}
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		net.set(name, n)
		nodes[i] = n
	}
	for _, n := range nodes {
		n.SetServers(peers)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = n.Stop()
		}
	})
	return nodes
}

func tempDirs(t *testing.T) []string {
	base := t.TempDir()
	dirs := make([]string, len(names3))
	for i, name := range names3 {
		dirs[i] = filepath.Join(base, name)
	}
	return dirs
}

func leaderOf(nodes []*Node) *Node {
	for _, n := range nodes {
		if n != nil && n.IsLeader() {
			return n
		}
	}
	return nil
}

func followerOf(nodes []*Node) *Node {
	for _, n := range nodes {
		if n != nil && !n.IsLeader() {
			return n
		}
	}
	return nil
}

func encode(t *testing.T, m *clustermap.Map) []byte {
	t.Helper()
	b, err := clustermap.EncodeMap(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameMaps waits until the nodes hold identical maps at version ≥ min and
// returns the map.
func sameMaps(t *testing.T, nodes []*Node, minVersion uint64) *clustermap.Map {
	t.Helper()
	var m *clustermap.Map
	poll.Until(t, 10*time.Second, "identical maps on every node", func() bool {
		m = nodes[0].Map()
		if m.Version < minVersion {
			return false
		}
		b := encode(t, m)
		for _, n := range nodes[1:] {
			if !bytes.Equal(encode(t, n.Map()), b) {
				return false
			}
		}
		return true
	})
	return m
}

func waitBootstrapped(t *testing.T, nodes []*Node) {
	t.Helper()
	poll.Until(t, 10*time.Second, "a leader and a bootstrapped map everywhere", func() bool {
		if leaderOf(nodes) == nil {
			return false
		}
		for _, n := range nodes {
			if !n.Map().Bootstrapped() {
				return false
			}
		}
		return true
	})
}

func joinCmd(id string) clustermap.MemberJoin {
	return clustermap.MemberJoin{ID: id, Addr: id + ":1", Roles: []string{clustermap.RoleData}, At: 1}
}

func TestBootstrapExpectAndProposeFromFollower(t *testing.T) {
	net := &memNet{}
	nodes := startMem(t, net, tempDirs(t), 50*time.Millisecond, nil)
	waitBootstrapped(t, nodes)
	m := sameMaps(t, nodes, 1)
	// A second node on the same dir is kept out.
	second, _ := New(testConfig(names3[0], nodes[0].cfg.Dir, net.from("x"), 50*time.Millisecond))
	if err := second.Start(context.Background()); !errors.Is(err, dirlock.ErrLocked) {
		t.Fatalf("a second Start on a dir in use = %v, want dirlock.ErrLocked", err)
	}
	if m.ClusterID != "cluster-x" || m.Version != 1 {
		t.Fatalf("after bootstrap: cluster %q version %d, want cluster-x at version 1 (Bootstrap applied once)", m.ClusterID, m.Version)
	}
	if got := nodes[0].Leader(); got == "" || leaderOf(nodes).cfg.ID != got {
		t.Fatalf("Leader() = %q, leader is %s", got, leaderOf(nodes).cfg.ID)
	}
	f := followerOf(nodes)
	st := f.Status()
	if st.ID != f.cfg.ID || st.Leader != leaderOf(nodes).cfg.ID || st.Term == 0 || st.Applied == 0 || st.Commit < st.Applied ||
		!slices.Equal(st.Voters, names3) || st.MapVersion != 1 {
		t.Fatalf("follower status %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Propose(ctx, joinCmd("data-1")); err != nil {
		t.Fatal(err)
	}
	// Applied here when Propose returns.
	if f.Map().Member("data-1") == nil {
		t.Fatal("the follower's map lacks the member its Propose returned for")
	}
	// A refusal comes back through the leader as clustermap's error.
	err := f.Propose(ctx, clustermap.MemberAlive{ID: "nobody", At: 2})
	if !errors.Is(err, clustermap.ErrUnknownMember) {
		t.Fatalf("Propose(MemberAlive of an unknown member) = %v, want ErrUnknownMember", err)
	}
	// The controller assigns the slots to the data member; all agree.
	poll.Until(t, 10*time.Second, "slots assigned by the controller", func() bool {
		s := leaderOf(nodes).Map().Slot(0)
		return s != nil && len(s.Replicas) > 0
	})
	m = sameMaps(t, nodes, leaderOf(nodes).Map().Version)
	if m.Member("data-1") == nil || m.Slot(0).Leader != "data-1" {
		t.Fatalf("map: member %v, slot 0 leader %q", m.Member("data-1"), m.Slot(0).Leader)
	}
	// Every node logged the Bootstrap in its Dir.
	for _, n := range nodes {
		b, err := os.ReadFile(filepath.Join(n.cfg.Dir, clusterFile))
		if err != nil || strings.TrimSpace(string(b)) != "cluster-x" {
			t.Fatalf("%s: cluster id file %q, %v", n.cfg.ID, b, err)
		}
	}
}

func TestMemberAliveAndDead(t *testing.T) {
	net := &memNet{}
	nodes := startMem(t, net, tempDirs(t), 50*time.Millisecond, func(c *Config) { c.RebuildAfter = 300 * time.Millisecond })
	waitBootstrapped(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f := followerOf(nodes)
	if err := f.MemberAlive(ctx, "d1", "d1:7", []string{clustermap.RoleData}); err != nil {
		t.Fatal(err)
	}
	if mb := f.Map().Member("d1"); mb == nil || !mb.Alive() || mb.Addr != "d1:7" {
		t.Fatalf("after MemberAlive: %+v", mb)
	}
	if err := f.MemberDead(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if mb := f.Map().Member("d1"); mb.State != clustermap.StateDead {
		t.Fatalf("after MemberDead: state %v", mb.State)
	}
	if err := f.MemberAlive(ctx, "d1", "d1:7", []string{clustermap.RoleData}); err != nil {
		t.Fatal(err)
	}
	if mb := f.Map().Member("d1"); !mb.Alive() {
		t.Fatalf("after MemberAlive again: state %v", mb.State)
	}
	// Dead past RebuildAfter: the controller's Tick makes it gone.
	if err := f.MemberDead(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "the dead member gone after RebuildAfter", func() bool {
		return f.Map().Member("d1").State == clustermap.StateGone
	})
	// The idle cluster writes nothing more: the version stays.
	v := leaderOf(nodes).Map().Version
	l := leaderOf(nodes)
	wctx, wcancel := context.WithTimeout(ctx, 10*l.cfg.ControllerInterval)
	defer wcancel()
	if err := l.WaitNewer(wctx, v); err == nil {
		t.Fatalf("an idle cluster's map changed to version %d", l.Map().Version)
	}
}

func TestLeaderFailover(t *testing.T) {
	net := &memNet{}
	nodes := startMem(t, net, tempDirs(t), 100*time.Millisecond, nil)
	waitBootstrapped(t, nodes)
	old := leaderOf(nodes)
	// A crash: from now on the leader is unreachable (its graceful
	// leadership transfer cannot happen).
	start := time.Now()
	net.set(old.cfg.ID, nil)
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	var rest []*Node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	poll.Until(t, 5*time.Second, "a new leader", func() bool {
		l := leaderOf(rest)
		return l != nil && l != old
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rest[0].Propose(ctx, joinCmd("after-failover")); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	t.Logf("failover: new leader %s, proposal applied %v after the leader stopped", leaderOf(rest).cfg.ID, elapsed)
	if elapsed > 3*time.Second {
		t.Fatalf("failover took %v, want ≤ 3s", elapsed)
	}
	sameMaps(t, rest, rest[0].Map().Version)
}

func TestPartitionedLeaderStepsDown(t *testing.T) {
	net := &memNet{}
	nodes := startMem(t, net, tempDirs(t), 50*time.Millisecond, nil)
	waitBootstrapped(t, nodes)
	old := leaderOf(nodes)
	var rest []*Node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	net.isolate(old.cfg.ID, true)
	// CheckQuorum: the cut-off leader steps down; the majority elects.
	poll.Until(t, 5*time.Second, "the isolated leader to step down and the majority to elect", func() bool {
		return !old.IsLeader() && leaderOf(rest) != nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rest[0].Propose(ctx, joinCmd("during-partition")); err != nil {
		t.Fatal(err)
	}
	// Its proposals wait for a leader and fail with ctx meanwhile.
	sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer scancel()
	if err := old.Propose(sctx, joinCmd("isolated")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Propose on the isolated node = %v, want the deadline", err)
	}
	// Healed, it follows the new leader (PreVote: it does not depose it)
	// and catches up.
	newLeader := leaderOf(rest)
	net.isolate(old.cfg.ID, false)
	sameMaps(t, nodes, rest[0].Map().Version)
	if l := leaderOf(nodes); l != newLeader {
		t.Fatalf("leader after healing is %v, want %s still", l, newLeader.cfg.ID)
	}
	if old.Map().Member("isolated") != nil {
		t.Fatal("the isolated node's proposal was applied")
	}
}

func TestStopHandsOverLeadership(t *testing.T) {
	net := &memNet{}
	nodes := startMem(t, net, tempDirs(t), 100*time.Millisecond, nil)
	waitBootstrapped(t, nodes)
	old := leaderOf(nodes)
	start := time.Now()
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	net.set(old.cfg.ID, nil)
	var rest []*Node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	poll.Until(t, 5*time.Second, "a new leader", func() bool { return leaderOf(rest) != nil })
	elapsed := time.Since(start)
	t.Logf("graceful stop: %s leads %v after the stop began", leaderOf(rest).cfg.ID, elapsed)
	// Well under an election timeout (1 to 2 s at these ticks).
	if elapsed > 900*time.Millisecond {
		t.Fatalf("leadership moved after %v: no transfer, an election", elapsed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rest[1].Propose(ctx, joinCmd("after-handover")); err != nil {
		t.Fatal(err)
	}
}

func TestJoinRunningGroup(t *testing.T) {
	net := &memNet{}
	dirs := tempDirs(t)
	nodes := startMem(t, net, dirs, 50*time.Millisecond, func(c *Config) { c.SnapshotEvery = 4 })
	waitBootstrapped(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 6 { // past a snapshot: the new server may need it
		c := joinCmd(fmt.Sprintf("m%d", i))
		c.Roles = nil
		if err := nodes[0].Propose(ctx, c); err != nil {
			t.Fatal(err)
		}
	}

	// A fourth server with an empty dir and no BootstrapExpect joins.
	cfg := testConfig("srv-d", filepath.Join(filepath.Dir(dirs[0]), "srv-d"), net.from("srv-d"), 50*time.Millisecond)
	cfg.BootstrapExpect = 0
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	net.set("srv-d", d)
	var peers []Peer
	for _, name := range append(names3, "srv-d") {
		peers = append(peers, Peer{Name: name, Addr: name})
	}
	d.SetServers(peers)
	// Gossip reports it alive with the server role: the leader adds it.
	if err := nodes[1].MemberAlive(ctx, "srv-d", "srv-d", []string{clustermap.RoleServer}); err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(nodes), d)
	poll.Until(t, 10*time.Second, "srv-d a voter on every server", func() bool {
		for _, n := range all {
			if !slices.Contains(n.Voters(), "srv-d") || len(n.Voters()) != 4 {
				return false
			}
		}
		return true
	})
	sameMaps(t, all, leaderOf(nodes).Map().Version)

	// It counts in the quorum: with the old leader gone, 3 of 4 go on.
	old := leaderOf(all)
	net.set(old.cfg.ID, nil)
	_ = old.Stop()
	var rest []*Node
	for _, n := range all {
		if n != old {
			rest = append(rest, n)
		}
	}
	if err := d.Propose(ctx, joinCmd("after-join")); err != nil {
		t.Fatal(err)
	}
	sameMaps(t, rest, d.Map().Version)
}

func TestRestartFromDir(t *testing.T) {
	t.Run("log only", func(t *testing.T) { testRestart(t, 0) })
	t.Run("snapshots", func(t *testing.T) { testRestart(t, 5) })
}

func testRestart(t *testing.T, snapshotEvery uint64) {
	dirs := tempDirs(t)
	net := &memNet{}
	small := func(c *Config) { c.SnapshotEvery = snapshotEvery }
	nodes := startMem(t, net, dirs, 50*time.Millisecond, small)
	waitBootstrapped(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 12 {
		c := joinCmd(fmt.Sprintf("d%02d", i))
		c.Roles = nil
		if err := nodes[i%3].Propose(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// Members without the data role: the planner has nothing to do, so
	// the map stays as the proposals left it.
	before := sameMaps(t, nodes, 13)
	for i, n := range nodes {
		net.set(names3[i], nil)
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, snapFile)); (err == nil) != (snapshotEvery != 0) {
			t.Fatalf("snapshot in %s after %d entries with SnapshotEvery %d: %v", d, before.Version, snapshotEvery, err)
		}
	}
	// Restart: no BootstrapExpect needed, the servers come from Dir.
	nodes = startMem(t, net, dirs, 50*time.Millisecond, func(c *Config) { small(c); c.BootstrapExpect = 0 })
	after := sameMaps(t, nodes, before.Version)
	if !bytes.Equal(encode(t, after), encode(t, before)) {
		t.Fatal("the map after restart differs from the map before")
	}
	poll.Until(t, 10*time.Second, "a leader after restart", func() bool { return leaderOf(nodes) != nil })
	if err := followerOf(nodes).Propose(ctx, joinCmd("after-restart")); err != nil {
		t.Fatal(err)
	}
	sameMaps(t, nodes, before.Version+1)
	for i, n := range nodes {
		net.set(names3[i], nil)
		_ = n.Stop()
	}

	// Another cluster's node refuses this dir.
	cfg := testConfig(names3[0], dirs[0], net, 50*time.Millisecond)
	cfg.ClusterID = "cluster-y"
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if !errors.Is(err, ErrClusterID) || !strings.Contains(err.Error(), "cluster-x") || !strings.Contains(err.Error(), "cluster-y") {
		t.Fatalf("Start on another cluster's dir = %v, want ErrClusterID naming cluster-x and cluster-y", err)
	}
}

func TestLaggingFollowerGetsSnapshot(t *testing.T) {
	defer func(k uint64) { snapshotKeep = k }(snapshotKeep)
	snapshotKeep = 0
	dirs := tempDirs(t)
	net := &memNet{}
	nodes := startMem(t, net, dirs, 50*time.Millisecond, func(c *Config) { c.SnapshotEvery = 4 })
	waitBootstrapped(t, nodes)
	lag := followerOf(nodes)
	var rest []*Node
	for _, n := range nodes {
		if n != lag {
			rest = append(rest, n)
		}
	}
	net.set(lag.cfg.ID, nil)
	if err := lag.Stop(); err != nil {
		t.Fatal(err)
	}
	lagApplied := lag.applied
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 10 {
		c := joinCmd(fmt.Sprintf("lag%02d", i))
		c.Roles = nil
		if err := rest[i%2].Propose(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	first, _ := leaderOf(rest).st.ms.FirstIndex()
	if first < 5 {
		t.Fatalf("the leader's log starts at %d: not compacted past the lagging node", first)
	}
	cfg := lag.cfg
	cfg.BootstrapExpect = 0
	cfg.SnapshotEvery = 1 << 40 // no snapshot of its own
	back, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = back.Stop() })
	net.set(cfg.ID, back)
	sameMaps(t, append(rest, back), rest[0].Map().Version)
	// It caught up from the leader's snapshot, which it keeps: a restart
	// loads it.
	if err := back.Stop(); err != nil {
		t.Fatal(err)
	}
	s, err := openStorage(cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	snap, _ := s.ms.Snapshot()
	if snap.Metadata.Index <= lagApplied {
		t.Fatalf("snapshot at %d, not past the %d applied before the stop: caught up without the leader's snapshot", snap.Metadata.Index, lagApplied)
	}
}

// serveMux runs a muxconn server with token on a loopback listener whose
// handler is set later (the node needs the address first).
func serveMux(t *testing.T, token string) (addr string, setHandler func(muxconn.Handler)) {
	t.Helper()
	return serveMuxLimited(t, token, 0)
}

// serveMuxLimited is serveMux with at most maxInFlight requests under
// way per connection (muxconn's default when 0).
func serveMuxLimited(t *testing.T, token string, maxInFlight int) (addr string, setHandler func(muxconn.Handler)) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var h muxconn.Handler
	srv := &muxconn.Server{Token: token, Handler: func(ctx context.Context, method uint16, body []byte) ([]byte, error) {
		mu.Lock()
		hh := h
		mu.Unlock()
		if hh == nil {
			return nil, muxconn.ErrUnknownMethod
		}
		return hh(ctx, method, body)
	}, MaxInFlight: maxInFlight}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := make([]byte, len(muxconn.Preface))
				if _, err := io.ReadFull(c, p); err != nil || string(p) != muxconn.Preface {
					c.Close()
					return
				}
				srv.ServeConn(context.Background(), c, nil)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		_ = srv.Shutdown(context.Background())
		wg.Wait()
	})
	return l.Addr().String(), func(hh muxconn.Handler) { mu.Lock(); h = hh; mu.Unlock() }
}

func TestClusterOverMuxconn(t *testing.T) {
	const token = "peer-secret"
	tr := &MuxTransport{Token: token}
	t.Cleanup(func() { tr.Close() })
	var peers []Peer
	var setters []func(muxconn.Handler)
	for _, name := range names3 {
		addr, set := serveMux(t, token)
		peers = append(peers, Peer{Name: name, Addr: addr})
		setters = append(setters, set)
	}
	base := t.TempDir()
	var nodes []*Node
	for i, p := range peers {
		cfg := testConfig(p.Name, filepath.Join(base, p.Name), tr, 50*time.Millisecond)
		cfg.Addr = p.Addr
		cfg.Servers = peers // known from the start: no SetServers needed
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		setters[i](n.Handle)
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Stop() })
		nodes = append(nodes, n)
	}
	waitBootstrapped(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := followerOf(nodes).Propose(ctx, joinCmd("over-mux")); err != nil {
		t.Fatal(err)
	}
	m := sameMaps(t, nodes, 2)
	if m.Member("over-mux") == nil {
		t.Fatal("member missing")
	}
	// A wrong token is kept out.
	bad := &MuxTransport{Token: "wrong"}
	defer bad.Close()
	if _, err := bad.Call(ctx, peers[0].Addr, MethodGetMap, make([]byte, 12)); err == nil {
		t.Fatal("a call with the wrong token succeeded")
	}
}

// Raft's messages do not queue behind calls that wait (forwarded
// proposals, map polls): with every request slot of a connection taken
// by waiting calls, a heartbeat still gets through. Sharing one
// connection, a failover's burst of proposals had the peer refuse the
// heartbeats' answers, and the raft leader stepped down for want of a
// quorum, again and again.
func TestRaftMessagesOwnConnection(t *testing.T) {
	const token = "peer-secret"
	const limit = 4
	addr, set := serveMuxLimited(t, token, limit)
	release := make(chan struct{})
	var waiting sync.WaitGroup
	set(func(ctx context.Context, method uint16, body []byte) ([]byte, error) {
		if method == MethodRaft {
			return nil, nil
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	tr := &MuxTransport{Token: token}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var started atomic.Int32
	for range limit {
		waiting.Add(1)
		go func() {
			defer waiting.Done()
			started.Add(1)
			_, _ = tr.Call(ctx, addr, MethodPropose, nil)
		}()
	}
	defer func() { close(release); waiting.Wait() }()
	// Until the waiting calls hold every slot, one more is refused busy.
	poll.Until(t, 5*time.Second, "the connection's request slots to fill", func() bool {
		if started.Load() < limit {
			return false
		}
		cctx, ccancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer ccancel()
		_, err := tr.Call(cctx, addr, MethodGetMap, nil)
		return err != nil && !errors.Is(err, context.DeadlineExceeded)
	})
	for i := range 20 {
		if _, err := tr.Call(ctx, addr, MethodRaft, []byte{}); err != nil {
			t.Fatalf("raft message %d behind waiting calls: %v", i, err)
		}
	}
}

func TestClientLongPoll(t *testing.T) {
	net := &memNet{}
	nodes := startMem(t, net, tempDirs(t), 50*time.Millisecond, nil)
	waitBootstrapped(t, nodes)
	c := NewClient(func() []string { return []string{"down", names3[0], names3[1]} }, net)
	c.PollWait = 2 * time.Second
	c.Logger = testLogger()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	err := c.WaitNewer(wctx, 0)
	m := c.Map()
	if err != nil || !m.Bootstrapped() {
		t.Fatalf("first map: %v (bootstrapped %v)", err, m.Bootstrapped())
	}
	v := m.Version
	watch := c.Watch()
	if err := nodes[2].Propose(wctx, joinCmd("polled")); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNewer(wctx, v); err != nil {
		t.Fatal(err)
	}
	m = c.Map()
	select {
	case <-watch:
	default:
		t.Fatal("Watch channel not closed after a newer map")
	}
	poll.Until(t, 10*time.Second, "the client's map to hold the new member", func() bool {
		return c.Map().Member("polled") != nil
	})
	// The client proposes through any server; refusals come back.
	if err := c.Propose(wctx, joinCmd("from-client")); err != nil {
		t.Fatal(err)
	}
	if err := c.Propose(wctx, clustermap.MemberAlive{ID: "nobody", At: 1}); !errors.Is(err, clustermap.ErrUnknownMember) {
		t.Fatalf("Client.Propose of a refused command = %v, want ErrUnknownMember", err)
	}
	err = c.WaitNewer(wctx, m.Version)
	for err == nil && c.Map().Member("from-client") == nil {
		err = c.WaitNewer(wctx, c.Map().Version)
	}
	if err != nil {
		t.Fatalf("the client's map never held the member it proposed: %v", err)
	}
}
