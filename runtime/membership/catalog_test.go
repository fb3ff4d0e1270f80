package membership

import (
	"reflect"
	"strconv"
	"testing"
	"time"

	"mecha/internal/apicatalog"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testCatalog() *Catalog {
	return NewCatalog(NodeEntry{Node: "self", DC: "dc1", Addr: "10.0.0.1", InternalPort: 7000, Incarnation: 1},
		t0, CatalogConfig{ViewTTL: 30 * time.Second, TombstoneTTL: time.Minute, WantGrace: time.Second, KeepWhenIsolated: true})
}

func metaAt(inc, ver uint64) Meta { return Meta{DC: "dc1", Incarnation: inc, Version: ver} }

func nodeEntry(name string, inc, ver uint64, appIDs ...string) NodeEntry {
	return NodeEntry{Node: name, DC: "dc1", Addr: "10.0.0.9", InternalPort: 7000, Incarnation: inc, Version: ver, Apps: apps(appIDs...)}
}

// served lists "node" for each instance of appID.
func served(c *Catalog, appID string) string { return nodesOf(c.Instances(appID)) }

func TestCatalogEntryAndJoinInEitherOrder(t *testing.T) {
	for _, order := range []string{"join-first", "entry-first"} {
		t.Run(order, func(t *testing.T) {
			c := testCatalog()
			join := NodeJoined{Name: "b", Addr: "10.0.0.9:7946", Meta: metaAt(1, 2)}
			ent := EntryReceived{Entry: nodeEntry("b", 1, 2, "orders")}
			if order == "join-first" {
				c.Apply(join)
				if served(c, "orders") != "" {
					t.Fatal("served before the entry arrived")
				}
				if eff := c.Apply(ent); !eff.Fresh || !eff.Changed {
					t.Fatalf("entry effect %+v", eff)
				}
			} else {
				c.Apply(ent)
				if served(c, "orders") != "" {
					t.Fatal("an entry of a non-member is served")
				}
				c.Apply(join)
			}
			if got := served(c, "orders"); got != "b" {
				t.Fatalf("orders on %q", got)
			}
		})
	}
}

func TestCatalogStaleUpdatesLose(t *testing.T) {
	c := testCatalog()
	c.Apply(NodeJoined{Name: "b", Meta: metaAt(5, 3)})
	c.Apply(EntryReceived{Entry: nodeEntry("b", 5, 3, "new")})
	for _, tc := range []struct {
		name  string
		entry NodeEntry
		fresh bool
	}{
		{"same version", nodeEntry("b", 5, 3, "dup"), false},
		{"older version", nodeEntry("b", 5, 2, "old"), false},
		{"older incarnation, higher version", nodeEntry("b", 4, 99, "previous-life"), false},
		{"newer version", nodeEntry("b", 5, 4, "newer"), true},
		{"newer incarnation, lower version", nodeEntry("b", 6, 1, "restarted"), true},
	} {
		v := c.Version()
		eff := c.Apply(EntryReceived{Entry: tc.entry})
		if eff.Fresh != tc.fresh || eff.Changed != tc.fresh || (c.Version() != v) != tc.fresh {
			t.Errorf("%s: effect %+v, version %d -> %d", tc.name, eff, v, c.Version())
		}
	}
	if got := served(c, "restarted"); got != "b" {
		t.Fatalf("the newest entry is not served: %q", got)
	}
	for _, app := range []string{"new", "dup", "old", "previous-life", "newer"} {
		if served(c, app) != "" {
			t.Errorf("%s still served", app)
		}
	}
}

func TestCatalogIgnoresOwnAndForeignEntries(t *testing.T) {
	c := testCatalog()
	other := nodeEntry("x", 1, 1, "a")
	other.DC = "dc2"
	for _, ev := range []Event{
		EntryReceived{Entry: nodeEntry("self", 99, 99, "hijack")},
		EntryReceived{Entry: other},
		NodeJoined{Name: "self", Meta: metaAt(1, 1)},
		NodeJoined{Name: "y", Meta: Meta{DC: "dc2"}},
		NodeLeft{Name: "never-seen", Dead: true},
		ViewReceived{View: DCView{DC: "dc1", Origin: "gw", Nodes: []NodeEntry{nodeEntry("z", 1, 1, "a")}}},
	} {
		if eff := c.Apply(ev); !reflect.DeepEqual(eff, Effect{}) {
			t.Errorf("%T %+v: effect %+v", ev, ev, eff)
		}
	}
	if c.Version() != 1 || len(c.Members()) != 0 {
		t.Fatalf("version %d, members %v", c.Version(), c.Members())
	}
}

func TestCatalogLeaveAndTombstone(t *testing.T) {
	c := testCatalog()
	for _, n := range []string{"b", "c"} {
		c.Apply(NodeJoined{Name: n, Meta: metaAt(1, 1)})
		c.Apply(EntryReceived{Entry: nodeEntry(n, 1, 1, "app")})
	}
	if got := served(c, "app"); got != "b,c" {
		t.Fatalf("app on %q", got)
	}
	if eff := c.Apply(NodeLeft{Name: "c", Dead: true}); !eff.Changed {
		t.Fatal("a dead member changes nothing")
	}
	if got := served(c, "app"); got != "b" {
		t.Fatalf("after c died: %q", got)
	}
	// c's broadcast still in flight must not bring it back, nor count as news.
	if eff := c.Apply(EntryReceived{Entry: nodeEntry("c", 1, 1, "app")}); eff.Fresh {
		t.Fatal("a stale broadcast of a dead node is news")
	}
	// A newer entry of the dead node is held but not served.
	c.Apply(EntryReceived{Entry: nodeEntry("c", 1, 2, "app")})
	if got := served(c, "app"); got != "b" {
		t.Fatalf("a dead node's entry is served: %q", got)
	}
	// The tombstone goes after its TTL; then the node can come back.
	c.Apply(Tick{Now: t0.Add(2 * time.Minute)})
	if _, ok := c.entries["c"]; ok {
		t.Fatal("tombstone kept past its TTL")
	}
	c.Apply(NodeJoined{Name: "c", Meta: metaAt(2, 1)})
	c.Apply(EntryReceived{Entry: nodeEntry("c", 2, 1, "app")})
	if got := served(c, "app"); got != "b,c" {
		t.Fatalf("restarted c: %q", got)
	}
}

func TestCatalogKeepsEntriesWhenIsolated(t *testing.T) {
	c := testCatalog()
	for _, n := range []string{"b", "c"} {
		c.Apply(NodeJoined{Name: n, Meta: metaAt(1, 1)})
		c.Apply(EntryReceived{Entry: nodeEntry(n, 1, 1, "app")})
	}
	c.Apply(NodeLeft{Name: "b", Dead: true})
	// c is the last peer: when it fails too, this node is the likelier
	// culprit, and c is kept, stale.
	c.Apply(NodeLeft{Name: "c", Dead: true})
	in := c.Instances("app")
	if len(in) != 1 || in[0].Node != "c" || !in[0].Stale {
		t.Fatalf("isolated node serves %+v", in)
	}
	// c comes back with the same entry: confirmed.
	c.Apply(NodeJoined{Name: "c", Meta: metaAt(1, 1)})
	if in := c.Instances("app"); len(in) != 1 || in[0].Stale {
		t.Fatalf("after c came back: %+v", in)
	}

	// A graceful leave is not isolation.
	c.Apply(NodeLeft{Name: "c"})
	if got := served(c, "app"); got != "" {
		t.Fatalf("after c left: %q", got)
	}
}

func TestCatalogCacheIsStaleUntilGossipConfirms(t *testing.T) {
	c := testCatalog()
	snap := Snapshot{Format: snapshotFormat, DC: "dc1", Entries: []NodeEntry{
		nodeEntry("b", 1, 4, "app"),
		nodeEntry("gone", 1, 1, "app"),
		nodeEntry("self", 1, 9, "mine"), // this node's previous life: never from the cache
	}, Views: []DCView{{DC: "dc2", Origin: "gw2", Incarnation: 1, Seq: 1, Gateways: []string{"10.2.0.1:7000"}, Nodes: []NodeEntry{{Node: "r", DC: "dc2", Addr: "10.2.0.5", Apps: apps("app")}}}}}
	if eff := c.Apply(CacheLoaded{Snapshot: snap}); !eff.Changed {
		t.Fatal("cache changed nothing")
	}
	in := c.Instances("app")
	if nodesOf(in) != "b,gone,r" || !in[0].Stale || !in[1].Stale || !in[2].Stale {
		t.Fatalf("cached instances %+v", in)
	}
	if served(c, "mine") != "" {
		t.Fatal("own cached entry served")
	}
	// A cached view does not expire while gossip is down.
	c.Apply(Tick{Now: t0.Add(time.Hour)})
	if served(c, "app") != "b,gone,r" {
		t.Fatal("cache expired without gossip")
	}
	// b joins with the cached version: confirmed. The sync drops "gone".
	c.Apply(NodeJoined{Name: "b", Meta: metaAt(1, 4)})
	c.Apply(Synced{})
	in = c.Instances("app")
	if nodesOf(in) != "b,r" || in[0].Stale || !in[1].Stale {
		t.Fatalf("after sync %+v", in)
	}
	// The remote view, unconfirmed, now has ViewTTL to be refreshed.
	c.Apply(Tick{Now: t0.Add(time.Hour + 31*time.Second)})
	if served(c, "app") != "b" {
		t.Fatalf("unrefreshed cached view kept: %q", served(c, "app"))
	}
	// A cache of another DC is ignored.
	if eff := c.Apply(CacheLoaded{Snapshot: Snapshot{DC: "dc9", Entries: []NodeEntry{{Node: "q", DC: "dc9"}}}}); eff.Changed {
		t.Fatal("foreign cache applied")
	}
}

func TestCatalogCacheDoesNotOverrideGossip(t *testing.T) {
	c := testCatalog()
	c.Apply(NodeJoined{Name: "b", Meta: metaAt(1, 5)})
	c.Apply(EntryReceived{Entry: nodeEntry("b", 1, 5, "new")})
	c.Apply(CacheLoaded{Snapshot: Snapshot{DC: "dc1", Entries: []NodeEntry{nodeEntry("b", 1, 4, "old")}}})
	if served(c, "new") != "b" || served(c, "old") != "" {
		t.Fatal("an older cached entry replaced gossip")
	}
	// The same version from gossip confirms a cached entry without news.
	c = testCatalog()
	c.Apply(CacheLoaded{Snapshot: Snapshot{DC: "dc1", Entries: []NodeEntry{nodeEntry("b", 1, 4, "app")}}})
	if eff := c.Apply(EntryReceived{Entry: nodeEntry("b", 1, 4, "app")}); eff.Changed {
		t.Fatal("an entry confirmed a node that is no member")
	}
	c.Apply(NodeJoined{Name: "b", Meta: metaAt(1, 3)}) // its meta lags
	if in := c.Instances("app"); len(in) != 1 || !in[0].Stale {
		t.Fatalf("unconfirmed %+v", in)
	}
	if eff := c.Apply(EntryReceived{Entry: nodeEntry("b", 1, 4, "app")}); eff.Fresh || !eff.Changed {
		t.Fatalf("confirmation effect %+v", eff)
	}
	if in := c.Instances("app"); len(in) != 1 || in[0].Stale {
		t.Fatalf("confirmed %+v", in)
	}
}

func TestCatalogWantsMissingEntries(t *testing.T) {
	c := testCatalog()
	c.Apply(NodeJoined{Name: "b", Meta: metaAt(1, 3)})
	c.Apply(EntryReceived{Entry: nodeEntry("b", 1, 3)})
	c.Apply(NodeUpdated{Name: "b", Meta: metaAt(1, 4)}) // b changed; its broadcast is late
	if eff := c.Apply(Tick{Now: t0.Add(500 * time.Millisecond)}); len(eff.Want) != 0 {
		t.Fatalf("asked within the grace: %v", eff.Want)
	}
	if eff := c.Apply(Tick{Now: t0.Add(time.Second)}); !reflect.DeepEqual(eff.Want, []string{"b"}) {
		t.Fatalf("want %v", eff.Want)
	}
	if eff := c.Apply(Tick{Now: t0.Add(1500 * time.Millisecond)}); len(eff.Want) != 0 {
		t.Fatalf("asked again too soon: %v", eff.Want)
	}
	if eff := c.Apply(Tick{Now: t0.Add(2 * time.Second)}); !reflect.DeepEqual(eff.Want, []string{"b"}) {
		t.Fatalf("no second ask: %v", eff.Want)
	}
	c.Apply(EntryReceived{Entry: nodeEntry("b", 1, 4, "app")})
	if eff := c.Apply(Tick{Now: t0.Add(5 * time.Second)}); len(eff.Want) != 0 {
		t.Fatalf("asked after the entry came: %v", eff.Want)
	}
}

func TestCatalogViews(t *testing.T) {
	c := testCatalog()
	remote := func(dc, origin string, seq uint64, gws []string, nodes ...string) DCView {
		v := DCView{DC: dc, Origin: origin, Incarnation: 1, Seq: seq, Gateways: gws}
		for _, n := range nodes {
			v.Nodes = append(v.Nodes, NodeEntry{Node: n, DC: dc, Addr: "10.9.0.1", Apps: apps("pay")})
		}
		return v
	}
	if eff := c.Apply(ViewReceived{View: remote("dc2", "g1", 1, []string{"g1:7000", "g2:7000"}, "p1", "p2")}); !eff.Fresh {
		t.Fatal("first view is not news")
	}
	if eff := c.Apply(ViewReceived{View: remote("dc2", "g1", 1, nil)}); eff.Fresh || eff.Changed {
		t.Fatal("a repeated view is news")
	}
	c.Apply(ViewReceived{View: remote("dc3", "h1", 7, []string{"h1:7000"}, "q1")})
	c.Apply(NodeJoined{Name: "b", Meta: metaAt(1, 1)})
	c.Apply(EntryReceived{Entry: nodeEntry("b", 1, 1, "pay")})
	in := c.Instances("pay")
	if nodesOf(in) != "b,p1,p2,q1" {
		t.Fatalf("pay on %s", nodesOf(in))
	}
	if in[0].DC != "dc1" || in[0].Gateways != nil || in[1].DC != "dc2" || !reflect.DeepEqual(in[1].Gateways, []string{"g1:7000", "g2:7000"}) || in[3].DC != "dc3" {
		t.Fatalf("instances %+v", in)
	}
	if !reflect.DeepEqual(c.DCs(), []string{"dc2", "dc3"}) {
		t.Fatalf("dcs %v", c.DCs())
	}

	// g2 now speaks for dc2, with p2 gone: the newest view of a DC wins.
	c.Apply(Tick{Now: t0.Add(10 * time.Second)})
	c.Apply(ViewReceived{View: remote("dc2", "g2", 1, []string{"g2:7000"}, "p1")})
	if in := c.Instances("pay"); nodesOf(in) != "b,p1,q1" || !reflect.DeepEqual(in[1].Gateways, []string{"g2:7000"}) {
		t.Fatalf("after g2's view: %+v", in)
	}
	// dc3 is not refreshed within the TTL; dc2 is.
	c.Apply(Tick{Now: t0.Add(35 * time.Second)})
	c.Apply(ViewReceived{View: remote("dc2", "g2", 2, []string{"g2:7000"}, "p1")})
	c.Apply(Tick{Now: t0.Add(45 * time.Second)})
	if got := served(c, "pay"); got != "b,p1" {
		t.Fatalf("after dc3 expired: %s", got)
	}
}

func TestCatalogLocalApps(t *testing.T) {
	c := testCatalog()
	eff := c.Apply(LocalApps{Apps: []App{{ID: "b"}, {ID: "a", Healthy: true}, {ID: "b", Healthy: true}}})
	if !eff.Fresh || !eff.Changed || c.Local().Version != 2 {
		t.Fatalf("effect %+v, version %d", eff, c.Local().Version)
	}
	if want := []App{{ID: "a", Healthy: true}, {ID: "b", Healthy: true}}; !reflect.DeepEqual(c.Local().Apps, want) {
		t.Fatalf("apps %v", c.Local().Apps)
	}
	if eff := c.Apply(LocalApps{Apps: []App{{ID: "b", Healthy: true}, {ID: "a", Healthy: true}}}); eff.Changed {
		t.Fatal("the same apps changed the entry")
	}
	in := c.Instances("a")
	if len(in) != 1 || in[0].Node != "self" || in[0].ID != InstanceID("self", 1) || in[0].Addr != "10.0.0.1" || in[0].InternalPort != 7000 {
		t.Fatalf("own instance %+v", in)
	}
	s := c.state()
	if len(s.entries) != 1 || s.entries[0].Node != "self" {
		t.Fatalf("push/pull state %+v", s)
	}
	if snap := c.snapshot(); len(snap.Entries) != 0 {
		t.Fatal("the cache keeps this node's own entry")
	}
}

func TestCatalogRelayAndLocalView(t *testing.T) {
	gw := func(name string) *Catalog {
		return NewCatalog(NodeEntry{Node: name, DC: "dc1", Addr: "10.0.0.1", InternalPort: 7000, Gateway: true, Incarnation: 1}, t0, CatalogConfig{})
	}
	c := gw("gw-b")
	if !c.isRelay() {
		t.Fatal("a lone gateway does not relay")
	}
	other := nodeEntry("gw-a", 1, 1)
	other.Gateway = true
	other.Addr = "10.0.0.2"
	c.Apply(NodeJoined{Name: "gw-a", Meta: metaAt(1, 1)})
	c.Apply(EntryReceived{Entry: other})
	if c.isRelay() {
		t.Fatal("two relays")
	}
	v := c.localView(3)
	if v.DC != "dc1" || v.Origin != "gw-b" || v.Seq != 3 || len(v.Nodes) != 2 || !reflect.DeepEqual(v.Gateways, []string{"10.0.0.1:7000", "10.0.0.2:7000"}) {
		t.Fatalf("local view %+v", v)
	}
	c.Apply(NodeLeft{Name: "gw-a"})
	if !c.isRelay() {
		t.Fatal("the remaining gateway does not take over")
	}
}

func TestCatalogInstancesAreTheCallers(t *testing.T) {
	c := testCatalog()
	c.Apply(ViewReceived{View: DCView{DC: "dc2", Origin: "g", Seq: 1, Gateways: []string{"g:1"}, Nodes: []NodeEntry{{Node: "r", DC: "dc2", Addr: "h", Apps: apps("x")}}}})
	in := c.Instances("x")
	in[0].Node = "changed"
	in[0].Gateways[0] = "changed"
	if again := c.Instances("x"); again[0].Node != "r" || again[0].Gateways[0] != "g:1" {
		t.Fatalf("a caller changed the catalog: %+v", again)
	}
}

// BenchmarkInstances is the resolver's hot path: one app-id looked up in a
// catalog of 1,000 nodes with 5 apps each and two remote DCs.
func BenchmarkInstances(b *testing.B) {
	c := testCatalog()
	for i := range 1000 {
		name := "n" + strconv.Itoa(i)
		c.Apply(NodeJoined{Name: name, Meta: metaAt(1, 1)})
		var ids []string
		for j := range 5 {
			ids = append(ids, "app-"+strconv.Itoa((i+j)%200))
		}
		c.Apply(EntryReceived{Entry: nodeEntry(name, 1, 1, ids...)})
	}
	for _, dc := range []string{"dc2", "dc3"} {
		v := DCView{DC: dc, Origin: "g-" + dc, Seq: 1, Gateways: []string{"g:1"}}
		for i := range 500 {
			v.Nodes = append(v.Nodes, NodeEntry{Node: dc + "-" + strconv.Itoa(i), DC: dc, Addr: "h", Apps: apps("app-" + strconv.Itoa(i%200))})
		}
		c.Apply(ViewReceived{View: v})
	}
	if n := len(c.Instances("app-7")); n != 31 {
		b.Fatalf("%d instances", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Instances("app-7")
	}
}

// TestSnapshotAPIs: the disk cache lists the API endpoints of this node
// and of the live members of its DC (host only, sorted by node), for the
// SDK's fallback; a member that left is no longer listed.
func TestSnapshotAPIs(t *testing.T) {
	c := NewCatalog(NodeEntry{Node: "m", DC: "dc1", Addr: "10.0.0.1", InternalPort: 7000, Incarnation: 1}, t0,
		CatalogConfig{SelfAPI: apicatalog.Endpoint{Node: "m", Addr: "10.0.0.1", HTTPPort: 3500, GRPCPort: 50001}})
	c.Apply(NodeJoined{Name: "z", Addr: "10.0.0.3:7946", Meta: Meta{DC: "dc1", HTTPPort: 3501, GRPCPort: 50002, Incarnation: 1}})
	c.Apply(NodeJoined{Name: "a", Addr: "10.0.0.2:7946", Meta: Meta{DC: "dc1", GRPCPort: 50003, Incarnation: 1}})
	c.Apply(NodeJoined{Name: "noapi", Addr: "10.0.0.4:7946", Meta: Meta{DC: "dc1", Incarnation: 1}})
	c.Apply(LocalApps{Apps: []App{{ID: "gw", Healthy: true}}})
	c.Apply(EntryReceived{Entry: nodeEntry("z", 1, 1, "gw", "orders")})
	want := []apicatalog.Endpoint{
		{Node: "a", Addr: "10.0.0.2", GRPCPort: 50003},
		{Node: "m", Addr: "10.0.0.1", HTTPPort: 3500, GRPCPort: 50001, Apps: []string{"gw"}},
		{Node: "z", Addr: "10.0.0.3", HTTPPort: 3501, GRPCPort: 50002, Apps: []string{"gw", "orders"}},
	}
	if got := c.snapshot().APIs; !reflect.DeepEqual(got, want) {
		t.Fatalf("APIs %+v, want %+v", got, want)
	}
	c.Apply(NodeLeft{Name: "z"})
	if got := c.snapshot().APIs; len(got) != 2 || got[1].Node != "m" {
		t.Fatalf("after z left: %+v", got)
	}
	if got := want[2].GRPC(); got != "10.0.0.3:50002" {
		t.Fatalf("GRPC() = %s", got)
	}
	if !want[1].Serves("gw") || want[2].Serves("gw") || want[0].Serves("gw") || want[1].Serves("") {
		t.Fatal("Serves: only a runtime hosting the app alone serves it")
	}
}
