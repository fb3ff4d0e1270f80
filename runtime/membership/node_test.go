package membership

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mecha/internal/poll"
)

// syncBuffer collects a test's logs; memberlist may still log from its
// goroutines after a node shut down, when t.Log would panic.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger logs at level into a buffer that is printed if the test fails.
func testLogger(t *testing.T, level slog.Level) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: level})), buf
}

func testConfig(name, dc string) Config {
	c := DefaultConfig()
	c.NodeName = name
	c.DC = dc
	c.BindAddress = "127.0.0.1"
	c.GossipPort = 0
	c.WANPort = 0
	c.RejoinInterval = 300 * time.Millisecond
	return c
}

type cluster struct {
	t   *testing.T
	log *slog.Logger
}

func newCluster(t *testing.T) *cluster {
	l, _ := testLogger(t, slog.LevelDebug)
	return &cluster{t: t, log: l}
}

func (c *cluster) start(cfg Config) *Node {
	c.t.Helper()
	n, err := Start(cfg, c.log)
	if err != nil {
		c.t.Fatalf("start %s: %v", cfg.NodeName, err)
	}
	c.t.Cleanup(func() { _ = n.Shutdown() })
	return n
}

func apps(ids ...string) []App {
	out := make([]App, len(ids))
	for i, id := range ids {
		out[i] = App{ID: id, Healthy: true}
	}
	return out
}

// nodesOf lists the node names of instances.
func nodesOf(in []Instance) string {
	var s []string
	for _, i := range in {
		s = append(s, i.Node)
	}
	return strings.Join(s, ",")
}

func TestStartPicksAFreePort(t *testing.T) {
	c := newCluster(t)
	n := c.start(testConfig("", "dc1"))
	if n.GossipPort() == 0 {
		t.Fatal("no port read back")
	}
	host, _ := os.Hostname()
	if want := host + "-" + strconv.Itoa(n.GossipPort()); n.Name() != want {
		t.Fatalf("name %q, want %q", n.Name(), want)
	}
	if _, port, _ := net.SplitHostPort(n.GossipAddr()); port != strconv.Itoa(n.GossipPort()) {
		t.Fatalf("gossip addr %s does not use port %d", n.GossipAddr(), n.GossipPort())
	}
	if err := n.WaitJoined(context.Background()); err != nil {
		t.Fatalf("a seed is joined at once: %v", err)
	}
}

func TestThreeNodesConvergeAndSeeAppChanges(t *testing.T) {
	c := newCluster(t)
	a := c.start(testConfig("a", "dc1"))
	a.SetLocalApps(apps("orders"))
	nodes := []*Node{a}
	for _, name := range []string{"b", "c"} {
		cfg := testConfig(name, "dc1")
		cfg.Join = []string{a.GossipAddr()}
		n := c.start(cfg)
		n.SetLocalApps(apps("app-" + name))
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.WaitJoined(ctx); err != nil {
			t.Fatalf("%s: join: %v", n.Name(), err)
		}
		cancel()
	}
	for _, n := range nodes {
		poll.Until(t, 5*time.Second, n.Name()+" sees every app", func() bool {
			return nodesOf(n.Instances("orders")) == "a" && nodesOf(n.Instances("app-b")) == "b" && nodesOf(n.Instances("app-c")) == "c"
		})
		if got := len(n.Members()); got != 2 {
			t.Fatalf("%s has %d members, want 2", n.Name(), got)
		}
	}

	// c's app turns unhealthy and c starts hosting orders too.
	v := a.Version()
	nodes[2].SetLocalApps([]App{{ID: "app-c", Healthy: false}, {ID: "orders", Healthy: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Wait(ctx, v); err != nil {
		t.Fatalf("wait for a change: %v", err)
	}
	for _, n := range nodes {
		poll.Until(t, 5*time.Second, n.Name()+" sees c's change", func() bool {
			in := n.Instances("app-c")
			return nodesOf(n.Instances("orders")) == "a,c" && len(in) == 1 && !in[0].Healthy
		})
	}
	in := a.Instances("orders")[1]
	if in.DC != "dc1" || in.Addr != "127.0.0.1" || in.Stale || len(in.Gateways) != 0 {
		t.Fatalf("instance %+v", in)
	}
}

func TestCrashedNodeLeavesTheCatalogWithin5s(t *testing.T) {
	c := newCluster(t)
	a := c.start(testConfig("a", "dc1"))
	var nodes []*Node
	for _, name := range []string{"b", "c"} {
		cfg := testConfig(name, "dc1")
		cfg.Join = []string{a.GossipAddr()}
		n := c.start(cfg)
		n.SetLocalApps(apps("app-" + name))
		nodes = append(nodes, n)
	}
	b, crashed := nodes[0], nodes[1]
	for _, n := range []*Node{a, b} {
		poll.Until(t, 5*time.Second, n.Name()+" sees app-c", func() bool { return len(n.Instances("app-c")) == 1 })
	}
	start := time.Now()
	if err := crashed.Shutdown(); err != nil { // no Leave: a crash
		t.Fatal(err)
	}
	for _, n := range []*Node{a, b} {
		poll.Until(t, 5*time.Second-time.Since(start), n.Name()+" drops the crashed node", func() bool { return len(n.Instances("app-c")) == 0 })
	}
	t.Logf("crashed node gone from every catalog after %s", time.Since(start).Round(time.Millisecond))
	if got := len(a.Instances("app-b")); got != 1 {
		t.Fatalf("a lost b too: %d instances", got)
	}
}

func TestLeftNodeGoesAtOnce(t *testing.T) {
	c := newCluster(t)
	a := c.start(testConfig("a", "dc1"))
	cfg := testConfig("b", "dc1")
	cfg.Join = []string{a.GossipAddr()}
	b := c.start(cfg)
	b.SetLocalApps(apps("app-b"))
	// Both sides must know each other: a may merge b's join state before
	// b merged a's reply, and a node that knows nobody leaves silently.
	poll.Until(t, 5*time.Second, "a sees app-b and b sees a", func() bool {
		return len(a.Instances("app-b")) == 1 && len(b.Members()) == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	// A leave is no failure: a, now alone, must not keep b as stale.
	poll.Until(t, time.Second, "a drops app-b", func() bool { return len(a.Instances("app-b")) == 0 })
}

func TestWrongGossipKeyCannotJoin(t *testing.T) {
	c := newCluster(t)
	key := func(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }
	seedCfg := testConfig("seed", "dc1")
	seedCfg.GossipKey = key(1)
	seed := c.start(seedCfg)
	seed.SetLocalApps(apps("secret-app"))

	for _, tc := range []struct{ name, key string }{{"other-key", key(2)}, {"no-key", ""}} {
		cfg := testConfig(tc.name, "dc1")
		cfg.GossipKey = tc.key
		cfg.Join = []string{seed.GossipAddr()}
		n := c.start(cfg)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := n.WaitJoined(ctx)
		cancel()
		if err == nil {
			t.Fatalf("%s joined an encrypted pool", tc.name)
		}
		if got := n.Instances("secret-app"); len(got) != 0 {
			t.Fatalf("%s sees %v", tc.name, got)
		}
		_ = n.Shutdown()
	}
	if m := seed.Members(); len(m) != 0 {
		t.Fatalf("seed has members %v", m)
	}

	cfg := testConfig("same-key", "dc1")
	cfg.GossipKey = key(1)
	cfg.Join = []string{seed.GossipAddr()}
	n := c.start(cfg)
	poll.Until(t, 5*time.Second, "the right key joins and sees the app", func() bool { return len(n.Instances("secret-app")) == 1 })
}

func TestTwoDCsResolveThroughGateways(t *testing.T) {
	c := newCluster(t)
	gwCfg := func(name, dc string) Config {
		cfg := testConfig(name, dc)
		cfg.Gateway = true
		cfg.InternalPort = 6000 + int(name[len(name)-1])
		return cfg
	}
	gb := c.start(gwCfg("gw-b", "dc-b"))
	cfg := testConfig("b1", "dc-b")
	cfg.Join = []string{gb.GossipAddr()}
	cfg.InternalPort = 7001
	b1 := c.start(cfg)
	// Enough apps that b1's entry and dc-b's view exceed a gossip packet
	// and take the TCP paths (LAN entry, WAN view, relay into dc-a).
	filler := []string{"payments"}
	for i := range 80 {
		filler = append(filler, "filler-app-with-a-long-name-"+strconv.Itoa(i))
	}
	b1.SetLocalApps(apps(filler...))
	if e := b1.cat.Local(); len(encodeEntry(&e)) <= maxBroadcast {
		t.Fatalf("b1's entry is only %d bytes", len(encodeEntry(&e)))
	}

	ga := gwCfg("gw-a", "dc-a")
	ga.WANJoin = []string{gb.WANAddr()}
	gwA := c.start(ga)
	cfg = testConfig("a1", "dc-a")
	cfg.Join = []string{gwA.GossipAddr()}
	a1 := c.start(cfg)
	a1.SetLocalApps(apps("frontend"))

	poll.Until(t, 10*time.Second, "a1 resolves payments in dc-b", func() bool {
		in := a1.Instances("payments")
		return len(in) == 1 && in[0].Node == "b1"
	})
	in := a1.Instances("payments")[0]
	wantGw := net.JoinHostPort("127.0.0.1", strconv.Itoa(gb.cfg.InternalPort))
	if in.DC != "dc-b" || in.InternalPort != 7001 || len(in.Gateways) != 1 || in.Gateways[0] != wantGw || in.Stale {
		t.Fatalf("remote instance %+v, want dc-b via %s", in, wantGw)
	}
	if got := a1.Instances("frontend"); len(got) != 1 || got[0].DC != "dc-a" {
		t.Fatalf("local app %+v", got)
	}
	poll.Until(t, 10*time.Second, "b1 resolves frontend in dc-a", func() bool {
		in := b1.Instances("frontend")
		return len(in) == 1 && in[0].DC == "dc-a"
	})
	if dcs := a1.DCs(); len(dcs) != 1 || dcs[0] != "dc-b" {
		t.Fatalf("a1 knows DCs %v", dcs)
	}

	// A change in dc-b reaches dc-a.
	b1.SetLocalApps(apps(filler[1:]...))
	poll.Until(t, 10*time.Second, "a1 sees payments go", func() bool { return len(a1.Instances("payments")) == 0 })
	if got := len(a1.Instances("filler-app-with-a-long-name-7")); got != 1 {
		t.Fatalf("a1 lost the rest of b1's apps: %d", got)
	}
}

func TestCacheServesARestartedNodeBeforeItJoins(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	a := c.start(testConfig("a", "dc1"))
	a.SetLocalApps(apps("app-a"))
	cfg := testConfig("b", "dc1")
	cfg.Join = []string{a.GossipAddr()}
	cfg.DataDir = dir
	b := c.start(cfg)
	poll.Until(t, 5*time.Second, "the cache holds app-a", func() bool {
		s, err := loadCache(dir)
		return err == nil && len(s.Entries) == 1 && len(s.Entries[0].Apps) == 1
	})
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(); err != nil { // gossip is down: nobody to join
		t.Fatal(err)
	}

	b2 := c.start(cfg)
	in := b2.Instances("app-a")
	if len(in) != 1 || in[0].Node != "a" || !in[0].Stale {
		t.Fatalf("restarted node resolves %+v, want a stale app-a on a", in)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := b2.WaitJoined(ctx); err == nil {
		t.Fatal("joined a dead pool")
	}
	if _, err := os.Stat(filepath.Join(dir, CacheFile)); err != nil {
		t.Fatal(err)
	}
}

// TestTrafficRulesSpreadAndOutliveTheirAuthor: a rule set on one node
// reaches the others (within 2 s), the newest rule wins wherever it was
// set, and a rule stays after the node that set it is gone.
func TestTrafficRulesSpreadAndOutliveTheirAuthor(t *testing.T) {
	c := newCluster(t)
	a := c.start(testConfig("a", "dc1"))
	var nodes []*Node
	for _, name := range []string{"b", "c"} {
		cfg := testConfig(name, "dc1")
		cfg.Join = []string{a.GossipAddr()}
		nodes = append(nodes, c.start(cfg))
	}
	b, cc := nodes[0], nodes[1]
	for _, n := range []*Node{a, b, cc} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.WaitJoined(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	spec := func(n *Node, app string) string {
		r, ok := n.Traffic(app)
		if !ok {
			return ""
		}
		return string(r.Spec)
	}
	set := time.Now()
	a.SetTraffic(TrafficRule{App: "orders", Stamp: 100, Spec: []byte(`{"v":1}`)})
	poll.Until(t, 2*time.Second, "every node has a's rule within 2 s", func() bool {
		return spec(b, "orders") == `{"v":1}` && spec(cc, "orders") == `{"v":1}`
	})
	t.Logf("a rule reached every node in %v", time.Since(set).Round(time.Millisecond))
	// An older rule set elsewhere loses; a newer one wins everywhere.
	b.SetTraffic(TrafficRule{App: "orders", Stamp: 50, Spec: []byte(`{"v":0}`)})
	cc.SetTraffic(TrafficRule{App: "orders", Stamp: 200, Spec: []byte(`{"v":2}`)})
	poll.Until(t, 2*time.Second, "the newest rule everywhere", func() bool {
		return spec(a, "orders") == `{"v":2}` && spec(b, "orders") == `{"v":2}` && spec(cc, "orders") == `{"v":2}`
	})
	// c, which set it, crashes: the rule stays with the others.
	_ = cc.Shutdown()
	poll.Until(t, 6*time.Second, "c gone from a's pool", func() bool { return len(a.Members()) == 1 })
	if spec(a, "orders") != `{"v":2}` || spec(b, "orders") != `{"v":2}` {
		t.Fatalf("the rule went with its author: a %q, b %q", spec(a, "orders"), spec(b, "orders"))
	}
	// A cleared rule is no rule.
	a.SetTraffic(TrafficRule{App: "orders", Stamp: 300})
	poll.Until(t, 2*time.Second, "the rule cleared on b", func() bool { _, ok := b.Traffic("orders"); return !ok })
}
