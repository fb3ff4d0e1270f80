package invoke

import (
	"context"
	"errors"
	"testing"

	"mecha/runtime/appchannel"
	"mecha/runtime/membership"
)

type fakeCatalog struct {
	dc    string
	insts map[string][]membership.Instance
}

func (f *fakeCatalog) Instances(id string) []membership.Instance { return f.insts[id] }
func (f *fakeCatalog) DC() string                                { return f.dc }

func addrOf(t *testing.T, c *Cluster, app string) string {
	t.Helper()
	tg, err := c.Resolve(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	if !tg.Remote {
		t.Fatalf("target of %s is not remote", app)
	}
	for a, ch := range c.channels {
		if tg.Channel.(*appchannel.HTTP) == ch {
			return a
		}
	}
	t.Fatal("channel not pooled")
	return ""
}

// TestClusterPick: the local DC's healthy fresh instances first, round
// robin; another DC only through its gateways and only when this DC has
// none; instances from the cache last; unhealthy ones never.
func TestClusterPick(t *testing.T) {
	cat := &fakeCatalog{dc: "a", insts: map[string][]membership.Instance{
		"svc": {
			{AppID: "svc", DC: "a", Addr: "10.0.0.1", InternalPort: 1, Healthy: true},
			{AppID: "svc", DC: "a", Addr: "10.0.0.2", InternalPort: 1, Healthy: true},
			{AppID: "svc", DC: "a", Addr: "10.0.0.3", InternalPort: 1, Healthy: false},
			{AppID: "svc", DC: "b", Addr: "10.1.0.1", InternalPort: 1, Healthy: true, Gateways: []string{"10.1.0.9:1"}},
		},
		"far": {
			{AppID: "far", DC: "b", Addr: "10.1.0.1", InternalPort: 1, Healthy: true, Gateways: []string{"10.1.0.9:1"}},
			{AppID: "far", DC: "a", Addr: "10.0.0.7", InternalPort: 1, Healthy: true, Stale: true},
		},
		"sick": {{AppID: "sick", DC: "a", Addr: "10.0.0.5", InternalPort: 1}},
	}}
	c := &Cluster{Local: &Local{AppID: "me"}, Catalog: cat}
	seen := map[string]int{}
	for range 10 {
		seen[addrOf(t, c, "svc")]++
	}
	if seen["10.0.0.1:1"] != 5 || seen["10.0.0.2:1"] != 5 || len(seen) != 2 {
		t.Fatalf("svc picks %v, want 5 each on the two healthy local instances", seen)
	}
	if a := addrOf(t, c, "far"); a != "10.1.0.9:1" {
		t.Fatalf("far went to %s, want dc b's gateway before a cached local instance", a)
	}
	if _, err := c.Resolve(context.Background(), "sick"); !errors.Is(err, ErrAppNotFound) {
		t.Fatalf("an app with no healthy instance: %v", err)
	}
	if _, err := c.Resolve(context.Background(), "nobody"); !errors.Is(err, ErrAppNotFound) {
		t.Fatalf("an unknown app: %v", err)
	}
	if ch, err := c.ResolveLocalDC("far"); err != nil || ch == nil {
		t.Fatalf("a gateway resolving far in its own DC: %v (the cached instance is still one)", err)
	}
	cat.insts["far"] = cat.insts["far"][:1]
	if _, err := c.ResolveLocalDC("far"); !errors.Is(err, ErrAppNotFound) {
		t.Fatalf("a gateway must not send a cross-DC call on to another DC: %v", err)
	}
}
