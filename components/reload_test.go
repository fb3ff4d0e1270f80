package components_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	inmemorypubsub "github.com/dapr/components-contrib/pubsub/in-memory"
	"github.com/dapr/components-contrib/state"
	inmemorystate "github.com/dapr/components-contrib/state/in-memory"
	"github.com/dapr/kit/logger"

	"mecha/components"
	"mecha/internal/poll"
)

// A reload that replaces a component lets the calls in flight on the old
// instance finish before it closes it, while new calls already go to the
// new instance.
func TestReloadDrainsCallsInFlight(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a.yaml")
	write(t, file, component("a", "state.recording", "  metadata:\n  - {name: v, value: one}\n"))
	rec := &recorder{}
	m := newManager(t, rec, "app", dir)
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	old := m.Snapshot().State["a"]
	if !old.Gate.Enter() {
		t.Fatal("Enter refused a call on a live instance")
	}
	write(t, file, component("a", "state.recording", "  metadata:\n  - {name: v, value: two}\n"))
	reloaded := make(chan error, 1)
	go func() { reloaded <- m.Reload(context.Background()) }()

	// The new instance serves new calls while the old one drains.
	poll.Until(t, 5*time.Second, "the new instance in the snapshot", func() bool { return m.Snapshot().State["a"].Store != old.Store })
	select {
	case err := <-reloaded:
		t.Fatalf("Reload returned (%v) with a call in flight on the old instance", err)
	case <-time.After(50 * time.Millisecond):
	}
	if rec.initialized("a")[0].closed.Load() {
		t.Fatal("the old instance was closed with a call in flight")
	}
	old.Gate.Leave()
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	if !rec.initialized("a")[0].closed.Load() {
		t.Error("the old instance was not closed once its call finished")
	}
}

// exclusiveStore holds a lock, like Crux's data directory lock: a second
// instance on the same lock fails Init until the first closes.
type exclusiveStore struct {
	state.Store
	locks  *sync.Map
	lock   string
	v      string
	closed atomic.Bool
}

func (s *exclusiveStore) Init(ctx context.Context, md state.Metadata) error {
	if md.Properties["fail"] == "true" {
		return errors.New("bad configuration")
	}
	s.lock, s.v = md.Properties["lock"], md.Properties["v"]
	if _, held := s.locks.LoadOrStore(s.lock, s); held {
		return errors.New("lock " + s.lock + " is in use")
	}
	return s.Store.Init(ctx, md)
}

func (s *exclusiveStore) Close() error {
	if s.closed.CompareAndSwap(false, true) && s.lock != "" {
		s.locks.CompareAndDelete(s.lock, s)
	}
	return nil
}

func (s *exclusiveStore) ExclusiveResource() string { return "lock " + s.lock }

// A component that holds an exclusive resource is closed before its new
// configuration starts (else the new one could never take the resource),
// calls that arrive meanwhile wait and go to the new instance, and a new
// configuration that fails is rolled back to the old one.
func TestReloadExclusive(t *testing.T) {
	locks := &sync.Map{}
	reg := testRegistry(&recorder{})
	reg.Register("state.exclusive", "v1", func(l logger.Logger) any {
		return &exclusiveStore{Store: inmemorystate.NewInMemoryStateStore(l), locks: locks}
	})
	dir := t.TempDir()
	file := filepath.Join(dir, "x.yaml")
	meta := func(v string, fail bool) string {
		f := "false"
		if fail {
			f = "true"
		}
		return component("x", "state.exclusive", "  metadata:\n  - {name: lock, value: L}\n  - {name: v, value: "+v+"}\n  - {name: fail, value: \""+f+"\"}\n")
	}
	write(t, file, meta("one", false))
	m := components.NewManager(components.Options{AppID: "app", Paths: []string{dir}, Registry: reg, Logger: quietLogger()})
	t.Cleanup(func() { _ = m.Close() })
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	cur := func() *exclusiveStore { return m.Snapshot().State["x"].Store.(*exclusiveStore) }
	first := cur()

	// A call in flight holds the swap; a call that arrives during the
	// swap waits for it and reaches the new instance.
	if !m.Snapshot().State["x"].Gate.Enter() {
		t.Fatal("Enter refused a call on a live instance")
	}
	write(t, file, meta("two", false))
	reloaded := make(chan error, 1)
	go func() { reloaded <- m.Reload(context.Background()) }()
	poll.Until(t, 5*time.Second, "the swap to start", func() bool { return draining(m) })
	late := make(chan *exclusiveStore, 1)
	go func() {
		for {
			s := m.Snapshot().State["x"]
			if s.Gate.Enter() {
				late <- s.Store.(*exclusiveStore)
				s.Gate.Leave()
				return
			}
		}
	}()
	if first.closed.Load() {
		t.Fatal("the old instance closed with a call in flight")
	}
	m.Snapshot().State["x"].Gate.Leave()
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	if got := <-late; got.v != "two" {
		t.Errorf("a call made during the swap reached the instance with v=%q, want the new one", got.v)
	}
	if !first.closed.Load() || cur().v != "two" || cur().closed.Load() {
		t.Fatalf("after the reload: old closed=%v, serving v=%q closed=%v", first.closed.Load(), cur().v, cur().closed.Load())
	}

	// A failing configuration: the previous one is started again.
	second := cur()
	write(t, file, meta("three", true))
	if err := m.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !second.closed.Load() {
		t.Error("the running instance was not closed before the new configuration was tried")
	}
	if got := cur(); got == second || got.v != "two" || got.closed.Load() {
		t.Errorf("after a failed reload the store serves v=%q (same instance %v, closed %v), want a fresh instance of v=two", got.v, got == second, got.closed.Load())
	}
}

// draining reports whether the store x refuses new calls (a swap is
// under way): a probe call that Enter admits would be counted.
func draining(m *components.Manager) bool {
	g := m.Snapshot().State["x"].Gate
	done := make(chan bool, 1)
	go func() { done <- g.Enter() }()
	select {
	case ok := <-done:
		if ok {
			g.Leave()
		}
		return false
	case <-time.After(20 * time.Millisecond):
		// Enter is waiting for the swap: it will return false later.
		return true
	}
}

// A changed state.crux (it locks its data directory) takes effect on a
// hot reload, and keeps its data.
func TestReloadCrux(t *testing.T) {
	dir := t.TempDir()
	data := t.TempDir()
	file := filepath.Join(dir, "crux.yaml")
	meta := func(max string) string {
		return component("sessions", "state.crux", "  metadata:\n  - {name: dataDir, value: "+data+"}\n  - {name: maxValueBytes, value: \""+max+"\"}\n")
	}
	write(t, file, meta("100"))
	m := newManager(t, &recorder{}, "app", dir)
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	store := func() state.Store { return m.Snapshot().State["sessions"].Store }
	big := make([]byte, 500)
	if err := store().Set(t.Context(), &state.SetRequest{Key: "k", Value: "small"}); err != nil {
		t.Fatal(err)
	}
	if err := store().Set(t.Context(), &state.SetRequest{Key: "big", Value: big}); err == nil {
		t.Fatal("a 500-byte value was taken with maxValueBytes 100")
	}
	write(t, file, meta("1000"))
	if err := m.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := store().Set(t.Context(), &state.SetRequest{Key: "big", Value: big}); err != nil {
		t.Fatalf("after raising maxValueBytes to 1000 by hot reload: %v", err)
	}
	got, err := store().Get(t.Context(), &state.GetRequest{Key: "k"})
	if err != nil || string(got.Data) != `"small"` {
		t.Fatalf("a key saved before the reload reads %q, %v", got.Data, err)
	}
}

// Each app of the runtime sees the components in its scope; state keys
// carry its own prefix, and its pubsub is its own instance whose
// consumer group is its app-id.
func TestViewsPerApp(t *testing.T) {
	var mu sync.Mutex
	props := map[string][]map[string]string{}
	reg := testRegistry(&recorder{})
	reg.Register("pubsub.recording", "v1", func(l logger.Logger) any {
		return &namedPubSub{PubSub: inmemorypubsub.New(l), mu: &mu, props: props}
	})
	dir := t.TempDir()
	write(t, filepath.Join(dir, "s.yaml"), component("shared", "state.in-memory", ""))
	write(t, filepath.Join(dir, "b.yaml"), component("billing-only", "state.in-memory", "scopes: [billing]\n"))
	write(t, filepath.Join(dir, "p.yaml"), component("events", "pubsub.recording", ""))
	m := components.NewManager(components.Options{AppID: "orders", Apps: []string{"billing"}, Paths: []string{dir}, Registry: reg, Logger: quietLogger()})
	t.Cleanup(func() { _ = m.Close() })
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	orders, billing := m.View("orders").Snapshot(), m.View("billing").Snapshot()
	if got := names(orders.State); !slices.Equal(got, []string{"shared"}) {
		t.Errorf("orders sees stores %v, want [shared]", got)
	}
	if got := names(billing.State); !slices.Equal(got, []string{"billing-only", "shared"}) {
		t.Errorf("billing sees stores %v, want [billing-only shared]", got)
	}
	ko, _ := orders.State["shared"].Key("k")
	kb, _ := billing.State["shared"].Key("k")
	if ko != "orders||k" || kb != "billing||k" {
		t.Errorf("stored keys: orders %q, billing %q", ko, kb)
	}
	if orders.State["shared"].Store != billing.State["shared"].Store {
		t.Error("the apps got different instances of a shared state store")
	}
	if orders.PubSub["events"].PS == billing.PubSub["events"].PS {
		t.Error("the apps share one pubsub instance: they would share a consumer group")
	}
	mu.Lock()
	defer mu.Unlock()
	var groups []string
	for _, p := range props["events"] {
		groups = append(groups, p["consumerID"])
	}
	slices.Sort(groups)
	if !slices.Equal(groups, []string{"billing", "orders"}) {
		t.Errorf("pubsub consumer groups %v, want one per app", groups)
	}
	if m.View("nobody") != nil {
		t.Error("a view for an app the runtime does not host")
	}
}

type namedPubSub struct {
	pubsub.PubSub
	mu    *sync.Mutex
	props map[string][]map[string]string
}

func (p *namedPubSub) Init(ctx context.Context, md pubsub.Metadata) error {
	p.mu.Lock()
	p.props[md.Name] = append(p.props[md.Name], md.Properties)
	p.mu.Unlock()
	return p.PubSub.Init(ctx, md)
}
