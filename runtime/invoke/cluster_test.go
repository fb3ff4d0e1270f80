package invoke

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mecha/internal/poll"

	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/membership"
)

type fakeCatalog struct {
	dc    string
	insts map[string][]membership.Instance
	rules map[string]membership.TrafficRule
	ver   uint64 // bumped by tests that change insts
}

func (f *fakeCatalog) Instances(id string) []membership.Instance { return f.insts[id] }
func (f *fakeCatalog) DC() string                                { return f.dc }
func (f *fakeCatalog) Version() uint64                           { return f.ver }
func (f *fakeCatalog) Traffic(app string) (membership.TrafficRule, bool) {
	r, ok := f.rules[app]
	return r, ok && len(r.Spec) > 0
}

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
	if tg, err := c.ResolveLocalDC("far", ""); err != nil || tg.Channel == nil {
		t.Fatalf("a gateway resolving far in its own DC: %v (the cached instance is still one)", err)
	}
	cat.insts["far"] = cat.insts["far"][:1]
	cat.ver++
	if _, err := c.ResolveLocalDC("far", ""); !errors.Is(err, ErrAppNotFound) {
		t.Fatalf("a gateway must not send a cross-DC call on to another DC: %v", err)
	}
}

// TestTrafficShiftAndPreference: a 70/30 shift from dc a sends exactly
// 70 of 100 calls to dc a's instances and 30 to dc b's gateway; a shifted
// share whose DC has no healthy instance stays home; dcPreference orders
// the failover; rendezvous keeps a key on one instance.
func TestTrafficShiftAndPreference(t *testing.T) {
	cat := &fakeCatalog{dc: "a", rules: map[string]membership.TrafficRule{}, insts: map[string][]membership.Instance{
		"svc": {
			{AppID: "svc", Node: "n1", DC: "a", Addr: "10.0.0.1", InternalPort: 1, Healthy: true},
			{AppID: "svc", Node: "n2", DC: "a", Addr: "10.0.0.2", InternalPort: 1, Healthy: true},
			{AppID: "svc", Node: "n3", DC: "b", Addr: "10.1.0.1", InternalPort: 1, Healthy: true, Gateways: []string{"10.1.0.9:1"}},
			{AppID: "svc", Node: "n4", DC: "c", Addr: "10.2.0.1", InternalPort: 1, Healthy: true, Gateways: []string{"10.2.0.9:1"}},
		},
	}}
	c := &Cluster{Local: &Local{AppID: "me"}, Catalog: cat}
	setRule := func(stamp uint64, spec string) {
		if _, err := ParseTraffic([]byte(spec)); err != nil {
			t.Fatal(err)
		}
		cat.rules["svc"] = membership.TrafficRule{App: "svc", Stamp: stamp, Spec: []byte(spec)}
	}
	count := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			got[addrOf(t, c, "svc")]++
		}
		return got
	}
	if got := count(10); got["10.0.0.1:1"] != 5 || got["10.0.0.2:1"] != 5 {
		t.Fatalf("no rule: %v, want the local DC only, round robin", got)
	}
	setRule(1, `{"app":"svc","shift":[{"fromDC":"a","to":{"a":70,"b":30}}]}`)
	got := count(100)
	if got["10.1.0.9:1"] != 30 || got["10.0.0.1:1"]+got["10.0.0.2:1"] != 70 {
		t.Fatalf("70/30 shift: %v", got)
	}
	setRule(2, `{"app":"svc","shift":[{"fromDC":"b","to":{"c":100}}]}`)
	if got := count(10); got["10.2.0.9:1"] != 0 {
		t.Fatalf("a shift for dc b's callers moved dc a's: %v", got)
	}
	// dc a loses its instances: failover in preference order.
	insts := cat.insts["svc"]
	cat.insts["svc"] = insts[2:]
	cat.ver++
	setRule(3, `{"app":"svc","dcPreference":["c","b"]}`)
	if got := count(5); got["10.2.0.9:1"] != 5 {
		t.Fatalf("failover with dcPreference c, b: %v", got)
	}
	setRule(4, `{"app":"svc"}`)
	if got := count(5); got["10.1.0.9:1"] != 5 {
		t.Fatalf("failover without a preference: %v, want b (by name)", got)
	}
	cat.insts["svc"] = insts
	cat.ver++
	// Rendezvous: one key, one instance.
	setRule(5, `{"app":"svc","loadBalancer":"rendezvous","hashHeader":"x-user"}`)
	for _, user := range []string{"u1", "u2", "u3"} {
		ctx := WithHeaders(context.Background(), func(h string) string {
			if h == "x-user" {
				return user
			}
			return ""
		})
		first := ""
		for range 10 {
			tg, err := c.Resolve(ctx, "svc")
			if err != nil {
				t.Fatal(err)
			}
			tg.Finish(nil, 0)
			a := tg.Channel.(*appchannel.HTTP).Addr()
			if first == "" {
				first = a
			} else if a != first {
				t.Fatalf("user %s went to %s and %s", user, first, a)
			}
		}
	}
}

func TestParseTrafficNamesField(t *testing.T) {
	for _, c := range []struct{ spec, want string }{
		{`{}`, "spec.app: must be set"},
		{`{"app":"s","loadBalancer":"random"}`, "spec.loadBalancer"},
		{`{"app":"s","loadBalancer":"rendezvous"}`, "spec.hashHeader"},
		{`{"app":"s","shift":[{"to":{"a":100}}]}`, "spec.shift[0].fromDC"},
		{`{"app":"s","shift":[{"fromDC":"a","to":{"a":70,"b":20}}]}`, "add up to 90"},
		{`{"app":"s","weights":1}`, "unknown field"},
	} {
		if _, err := ParseTraffic([]byte(c.spec)); err == nil || !errors.Is(err, ErrTraffic) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to say %q", c.spec, err, c.want)
		}
	}
}

// TestWeightedEjectsAndProbesBack: with the weighted balancer, an
// instance whose calls fail is ejected and gets no traffic; the probe
// loop asks its runtime, which answers the probe, and the instance gets
// traffic again.
func TestWeightedEjectsAndProbesBack(t *testing.T) {
	var probes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(ProbeHeader) != "" && r.Header.Get(HeaderCallee) == "svc" {
			probes.Add(1)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	host, portStr, _ := net.SplitHostPort(u.Host)
	port, _ := strconv.Atoi(portStr)
	bad := net.JoinHostPort(host, portStr)
	cat := &fakeCatalog{dc: "a", rules: map[string]membership.TrafficRule{
		"svc": {App: "svc", Stamp: 1, Spec: []byte(`{"app":"svc","loadBalancer":"weighted"}`)},
	}, insts: map[string][]membership.Instance{"svc": {
		{AppID: "svc", Node: "n1", DC: "a", Addr: host, InternalPort: port, Healthy: true},
		{AppID: "svc", Node: "n2", DC: "a", Addr: "10.0.0.2", InternalPort: 1, Healthy: true},
	}}}
	c := &Cluster{Local: &Local{AppID: "me"}, Catalog: cat}
	// Fail every call to the test server's instance until it is ejected.
	ejected := false
	for i := 0; i < 200 && !ejected; i++ {
		tg, err := c.Resolve(context.Background(), "svc")
		if err != nil {
			t.Fatal(err)
		}
		a := tg.Channel.(*appchannel.HTTP).Addr()
		if a == bad {
			tg.Finish(errors.New("boom"), time.Millisecond)
		} else {
			tg.Finish(nil, time.Millisecond)
		}
		ejected = i > 20 && func() bool {
			for range 50 {
				tg, _ := c.Resolve(context.Background(), "svc")
				tg.Finish(nil, time.Millisecond)
				if tg.Channel.(*appchannel.HTTP).Addr() == bad {
					return false
				}
			}
			return true
		}()
	}
	if !ejected {
		t.Fatal("the failing instance was never ejected")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.ProbeLoop(ctx, 20*time.Millisecond)
	poll.Until(t, 10*time.Second, "the ejected instance probed and back in rotation", func() bool {
		for range 50 {
			tg, _ := c.Resolve(context.Background(), "svc")
			tg.Finish(nil, time.Millisecond)
			if tg.Channel.(*appchannel.HTTP).Addr() == bad {
				return true
			}
		}
		return false
	})
	if probes.Load() == 0 {
		t.Fatal("no probe reached the instance's runtime")
	}
}

// TestClusterInstance: a call naming an instance goes to that instance
// only, that run of its runtime (n2@2 is not n2@1) (its runtime in this DC, its DC's gateway otherwise), the app
// hosted here when it names this runtime, and fails with
// ErrInstanceNotFound when no runtime hosts the app as that instance, is
// unhealthy, or (on a gateway) is in another DC.
func TestClusterInstance(t *testing.T) {
	cat := &fakeCatalog{dc: "a", insts: map[string][]membership.Instance{
		"gw": {
			{AppID: "gw", Node: "n1", ID: "n1@1", DC: "a", Addr: "10.0.0.1", InternalPort: 1, Healthy: true},
			{AppID: "gw", Node: "n2", ID: "n2@1", DC: "a", Addr: "10.0.0.2", InternalPort: 1, Healthy: true},
			{AppID: "gw", Node: "n2", ID: "n2@1", DC: "a", Addr: "10.0.0.9", InternalPort: 1, Healthy: true, Stale: true},
			{AppID: "gw", Node: "n3", ID: "n3@1", DC: "a", Addr: "10.0.0.3", InternalPort: 1, Healthy: false},
			{AppID: "gw", Node: "n4", ID: "n4@1", DC: "b", Addr: "10.1.0.1", InternalPort: 1, Healthy: true, Gateways: []string{"10.1.0.9:1"}},
			{AppID: "gw", Node: "me", ID: "me@1", DC: "a", Addr: "10.0.0.5", InternalPort: 1, Healthy: true},
		},
	}}
	local := &Local{AppID: "gw"}
	local.SetChannel(appchannel.NewHTTP(appchannel.HTTPOptions{Address: "127.0.0.1:1"}))
	c := &Cluster{Local: local, Catalog: cat, Self: "me@1"}
	r := c.For(local)
	resolve := func(inst string) (Target, string, error) {
		tg, err := r.Resolve(WithInstance(context.Background(), inst), "gw")
		if err != nil || !tg.Remote {
			return tg, "", err
		}
		for a, ch := range c.channels {
			if tg.Channel.(*appchannel.HTTP) == ch {
				return tg, a, nil
			}
		}
		t.Fatal("channel not pooled")
		return tg, "", nil
	}
	for range 3 {
		if _, a, err := resolve("n2@1"); err != nil || a != "10.0.0.2:1" {
			t.Fatalf("instance n2@1: %s, %v; want its fresh address 10.0.0.2:1 every time", a, err)
		}
	}
	if _, a, err := resolve("n4@1"); err != nil || a != "10.1.0.9:1" {
		t.Fatalf("instance n4@1 in dc b: %s, %v; want dc b's gateway", a, err)
	}
	if tg, _, err := resolve("me@1"); err != nil || tg.Remote {
		t.Fatalf("this runtime's own instance: remote %v, %v; want the local app", tg.Remote, err)
	}
	if tg, _, err := resolve(""); err != nil || tg.Remote {
		t.Fatalf("no instance: remote %v, %v; want the local app first", tg.Remote, err)
	}
	for _, inst := range []string{"n3@1", "n2@2", "gone"} {
		if _, _, err := resolve(inst); !errors.Is(err, ErrInstanceNotFound) {
			t.Fatalf("instance %s: %v, want ErrInstanceNotFound", inst, err)
		}
	}
	if _, err := c.ResolveLocalDC("gw", "n4@1"); !errors.Is(err, ErrInstanceNotFound) {
		t.Fatalf("a gateway must not send an instance call on to another DC: %v", err)
	}
	if _, err := c.ResolveLocalDC("gw", "n1@1"); err != nil {
		t.Fatalf("a gateway resolving an instance of its DC: %v", err)
	}
	// The pipeline names the instance to the resolver and maps the miss
	// to its own error code.
	inv := &Invoker{Resolver: r}
	_, err := inv.Do(context.Background(), &Call{AppID: "gw", Verb: "POST", Instance: "gone"}, func(context.Context, Target) (int, error) {
		t.Fatal("sent a call for a missing instance")
		return 0, nil
	})
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Code != "ERR_INSTANCE_NOT_FOUND" || ae.HTTP != http.StatusNotFound {
		t.Fatalf("a missing instance through the pipeline: %v, want ERR_INSTANCE_NOT_FOUND 404", err)
	}
}
