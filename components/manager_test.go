package components_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"mecha/internal/poll"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/components-contrib/state"
	inmemorystate "github.com/dapr/components-contrib/state/in-memory"
	"github.com/dapr/kit/logger"
	"github.com/google/uuid"

	"mecha/components"
)

// recordingStore is an in-memory state store that remembers the metadata it
// was initialized with and whether it was closed.
type recordingStore struct {
	state.Store
	name   string
	props  map[string]string
	closed atomic.Bool
}

func (s *recordingStore) Init(ctx context.Context, md state.Metadata) error {
	s.name = md.Name
	s.props = maps.Clone(md.Properties)
	return s.Store.Init(ctx, md)
}

func (s *recordingStore) Close() error {
	s.closed.Store(true)
	return s.Store.(io.Closer).Close()
}

// recorder collects every recordingStore the registry built.
type recorder struct {
	mu     sync.Mutex
	stores []*recordingStore
}

func (r *recorder) factory(l logger.Logger) any {
	s := &recordingStore{Store: inmemorystate.NewInMemoryStateStore(l)}
	r.mu.Lock()
	r.stores = append(r.stores, s)
	r.mu.Unlock()
	return s
}

// initialized returns the stores whose Init ran, oldest first.
func (r *recorder) initialized(name string) []*recordingStore {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*recordingStore
	for _, s := range r.stores {
		if s.name == name {
			out = append(out, s)
		}
	}
	return out
}

// last returns the newest initialized store of that name.
func (r *recorder) last(t *testing.T, name string) *recordingStore {
	t.Helper()
	all := r.initialized(name)
	if len(all) == 0 {
		t.Fatalf("no recording store named %q was initialized", name)
	}
	return all[len(all)-1]
}

// failingStore fails its Init.
type failingStore struct{ state.Store }

func (failingStore) Init(context.Context, state.Metadata) error {
	return errors.New("failing store refuses to start")
}

// slowStore blocks in Init until its context ends.
type slowStore struct{ state.Store }

func (slowStore) Init(ctx context.Context, _ state.Metadata) error {
	<-ctx.Done()
	return ctx.Err()
}

func testRegistry(rec *recorder) *components.Registry {
	reg := components.NewRegistry()
	components.RegisterContrib(reg)
	reg.Register("state.recording", "v1", rec.factory)
	reg.Register("state.failing", "v1", func(l logger.Logger) any {
		return failingStore{inmemorystate.NewInMemoryStateStore(l)}
	})
	reg.Register("state.slow", "v1", func(l logger.Logger) any {
		return slowStore{inmemorystate.NewInMemoryStateStore(l)}
	})
	return reg
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// withMecha adds mecha's own components (state.crux, the default state
// store) with their data in a temporary folder.
func withMecha(t *testing.T, r *components.Registry) *components.Registry {
	components.RegisterMecha(r, components.MechaOptions{DataDir: t.TempDir(), Logger: quietLogger()})
	return r
}

// newManager returns a manager over the given folder (none: the embedded
// defaults) that is closed at the end of the test.
func newManager(t *testing.T, rec *recorder, appID string, paths ...string) *components.Manager {
	t.Helper()
	var defaults []*components.Component
	if len(paths) == 0 {
		defaults = components.EmbeddedDefaults(false) // TestDefaultsStay covers both together
	}
	m := components.NewManager(components.Options{
		AppID:    appID,
		Paths:    paths,
		Defaults: defaults,
		Registry: withMecha(t, testRegistry(rec)),
		Logger:   quietLogger(),
		Debounce: 20 * time.Millisecond,
	})
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func component(name, typ string, extra string) string {
	return "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: " + name + "\nspec:\n  type: " + typ + "\n  version: v1\n" + extra
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func names[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func TestLoadDefaults(t *testing.T) {
	m := newManager(t, &recorder{}, "app")
	docs, err := m.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 0 {
		t.Errorf("defaults returned %d documents, want none", len(docs))
	}
	snap := m.Snapshot()
	if got := names(snap.State); !slices.Equal(got, []string{"statestore"}) {
		t.Errorf("state stores = %v, want [statestore]", got)
	}
	if got := names(snap.PubSub); !slices.Equal(got, []string{"pubsub"}) {
		t.Errorf("pubsubs = %v, want [pubsub]", got)
	}
	var infos []string
	for _, in := range snap.Infos {
		infos = append(infos, in.Name+"="+in.Type+"@"+in.Version)
	}
	if want := []string{"pubsub=pubsub.in-memory@v1", "statestore=state.crux@v1"}; !slices.Equal(infos, want) {
		t.Errorf("Infos = %v, want %v", infos, want)
	}
	ss := snap.State["statestore"]
	if ss.Txn == nil || !ss.HasFeature(state.FeatureETag) {
		t.Errorf("in-memory store should be transactional with ETags: txn=%v features=%v", ss.Txn, ss.Store.Features())
	}
	// The store is initialized: it serves a round trip.
	if err := ss.Store.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	got, err := ss.Store.Get(t.Context(), &state.GetRequest{Key: "k"})
	if err != nil || string(got.Data) != "v" {
		t.Fatalf("Get = %v, %v; want v", got, err)
	}
}

func TestLoadFromFolder(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "state.yaml"), component("mystate", "state.in-memory", ""))
	write(t, filepath.Join(dir, "pubsub.yaml"), component("mypubsub", "pubsub.in-memory", "")+
		"---\napiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nspec: {pubsubname: mypubsub, topic: t, routes: {default: /t}}\n")
	write(t, filepath.Join(dir, "secrets.yml"), component("mysecrets", "secretstores.local.env", ""))
	write(t, filepath.Join(dir, "ignored.txt"), component("ignored", "state.in-memory", ""))
	m := newManager(t, &recorder{}, "app", dir)
	docs, err := m.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 || docs[0].Kind != "Subscription" || docs[0].Where() != filepath.Join(dir, "pubsub.yaml")+" (document 2)" {
		t.Errorf("documents = %+v, want the one Subscription", docs)
	}
	snap := m.Snapshot()
	if got := names(snap.State); !slices.Equal(got, []string{"mystate"}) {
		t.Errorf("state stores = %v, want [mystate] (embedded defaults must not load with a path)", got)
	}
	if got := names(snap.PubSub); !slices.Equal(got, []string{"mypubsub"}) {
		t.Errorf("pubsubs = %v", got)
	}
	if got := names(snap.Secrets); !slices.Equal(got, []string{"mysecrets"}) {
		t.Errorf("secret stores = %v", got)
	}
}

func TestLoadScopes(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), component("mine", "state.in-memory", "scopes: [other, app]\n"))
	write(t, filepath.Join(dir, "b.yaml"), component("theirs", "state.in-memory", "scopes: [other]\n"))
	write(t, filepath.Join(dir, "c.yaml"), component("everyone", "state.in-memory", ""))
	// A component scoped away is not even created, so it cannot fail.
	write(t, filepath.Join(dir, "d.yaml"), component("broken", "state.failing", "scopes: [other]\n"))
	m := newManager(t, &recorder{}, "app", dir)
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := names(m.Snapshot().State); !slices.Equal(got, []string{"everyone", "mine"}) {
		t.Errorf("state stores = %v, want [everyone mine]", got)
	}
}

func TestLoadErrors(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		// want are substrings of the error; {dir} is the resources folder.
		want    []string
		wantIs  error
		maxTime time.Duration
	}{
		{
			name: "duplicate names in two files",
			files: map[string]string{
				"a.yaml": component("dup", "state.in-memory", ""),
				"b.yaml": component("dup", "state.in-memory", ""),
			},
			want:   []string{"{dir}/a.yaml", "{dir}/b.yaml", `"dup"`, "already declared"},
			wantIs: components.ErrInvalidResource,
		},
		{
			name: "duplicate names in one file",
			files: map[string]string{
				"a.yaml": component("dup", "state.in-memory", "") + "---\n" + component("dup", "state.in-memory", ""),
			},
			want:   []string{"{dir}/a.yaml (document 2)", "already declared in {dir}/a.yaml"},
			wantIs: components.ErrInvalidResource,
		},
		{
			name:   "unknown type",
			files:  map[string]string{"a.yaml": component("x", "state.nope", "")},
			want:   []string{"{dir}/a.yaml", "spec.type", `"state.nope"`},
			wantIs: nil,
		},
		{
			name:   "invalid component",
			files:  map[string]string{"a.yaml": component("x", "nodot", "")},
			want:   []string{"{dir}/a.yaml", "spec.type"},
			wantIs: components.ErrInvalidResource,
		},
		{
			name:   "failing init",
			files:  map[string]string{"a.yaml": component("x", "state.failing", "")},
			want:   []string{"{dir}/a.yaml", `"x"`, "failing store refuses to start"},
			wantIs: components.ErrInit,
		},
		{
			name:    "initTimeout",
			files:   map[string]string{"a.yaml": component("x", "state.slow", "  initTimeout: 200ms\n")},
			want:    []string{"{dir}/a.yaml", "initTimeout", "200ms"},
			wantIs:  components.ErrInit,
			maxTime: 3 * time.Second, // well under the 5s default
		},
		{
			name:  "secretKeyRef without auth.secretStore",
			files: map[string]string{"a.yaml": component("x", "state.in-memory", "  metadata:\n  - name: p\n    secretKeyRef: {name: s}\n")},
			want:  []string{"{dir}/a.yaml", "auth.secretStore"},
		},
		{
			name:  "secretKeyRef to a secret store that is not loaded",
			files: map[string]string{"a.yaml": component("x", "state.in-memory", "  metadata:\n  - name: p\n    secretKeyRef: {name: s}\nauth: {secretStore: vault}\n")},
			want:  []string{"{dir}/a.yaml", "auth.secretStore", `"vault"`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range c.files {
				write(t, filepath.Join(dir, name), content)
			}
			m := newManager(t, &recorder{}, "app", dir)
			start := time.Now()
			_, err := m.Load(t.Context())
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if c.maxTime > 0 && time.Since(start) > c.maxTime {
				t.Errorf("Load took %v, want less than %v", time.Since(start), c.maxTime)
			}
			if c.wantIs != nil && !errors.Is(err, c.wantIs) {
				t.Errorf("error %v does not wrap %v", err, c.wantIs)
			}
			for _, s := range c.want {
				s = strings.ReplaceAll(s, "{dir}/", dir+string(filepath.Separator))
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if n := len(m.Snapshot().State); n != 0 {
				t.Errorf("a failed Load left %d state stores in the snapshot", n)
			}
		})
	}
}

func TestLoadFailureClosesLoadedComponents(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), component("good", "state.recording", ""))
	write(t, filepath.Join(dir, "b.yaml"), component("bad", "state.failing", ""))
	rec := &recorder{}
	m := newManager(t, rec, "app", dir)
	if _, err := m.Load(t.Context()); !errors.Is(err, components.ErrInit) {
		t.Fatalf("Load error = %v, want ErrInit", err)
	}
	if !rec.last(t, "good").closed.Load() {
		t.Error("the component loaded before the failure was not closed")
	}
	if len(m.Snapshot().State) != 0 {
		t.Errorf("snapshot still has %v", names(m.Snapshot().State))
	}
}

func TestLoadIgnoreErrors(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), component("bad", "state.failing", "  ignoreErrors: true\n"))
	write(t, filepath.Join(dir, "b.yaml"), component("slow", "state.slow", "  ignoreErrors: true\n  initTimeout: 50ms\n"))
	write(t, filepath.Join(dir, "c.yaml"), component("good", "state.in-memory", ""))
	write(t, filepath.Join(dir, "d.yaml"), component("good-pubsub", "pubsub.in-memory", ""))
	m := newManager(t, &recorder{}, "app", dir)
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	snap := m.Snapshot()
	if got := names(snap.State); !slices.Equal(got, []string{"good"}) {
		t.Errorf("state stores = %v, want [good]", got)
	}
	if got := names(snap.PubSub); !slices.Equal(got, []string{"good-pubsub"}) {
		t.Errorf("pubsubs = %v, want [good-pubsub]", got)
	}
}

func TestMetadataResolution(t *testing.T) {
	t.Setenv("MECHA_TEST_ENV_VALUE", "from-env")
	t.Setenv("MECHA_TEST_SECRET", "s3cr3t")
	dir := t.TempDir()
	// The consumer sorts before the secret store: secret stores must be
	// initialized first anyway.
	write(t, filepath.Join(dir, "a.yaml"), component("rec", "state.recording", `  metadata:
  - name: plain
    value: 42
  - name: env
    envRef: MECHA_TEST_ENV_VALUE
  - name: missingEnv
    envRef: MECHA_TEST_ENV_UNSET_XYZ
  - name: secret
    secretKeyRef:
      name: MECHA_TEST_SECRET
      key: MECHA_TEST_SECRET
  - name: secretDefaultKey
    secretKeyRef:
      name: MECHA_TEST_SECRET
  - name: app
    value: "{appID}-suffix"
  - name: id
    value: "{uuid}"
  - name: twoIDs
    value: "{uuid}/{uuid}"
auth:
  secretStore: envsecrets
`))
	write(t, filepath.Join(dir, "z.yaml"), component("envsecrets", "secretstores.local.env", ""))
	rec := &recorder{}
	m := newManager(t, rec, "myapp", dir)
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	props := rec.last(t, "rec").props
	for k, want := range map[string]string{
		"plain":            "42",
		"env":              "from-env",
		"missingEnv":       "",
		"secret":           "s3cr3t",
		"secretDefaultKey": "s3cr3t",
		"app":              "myapp-suffix",
	} {
		if got, ok := props[k]; !ok || got != want {
			t.Errorf("property %s = %q (present %v), want %q", k, got, ok, want)
		}
	}
	if _, err := uuid.Parse(props["id"]); err != nil {
		t.Errorf("{uuid} became %q, not a UUID", props["id"])
	}
	a, b, ok := strings.Cut(props["twoIDs"], "/")
	if _, err := uuid.Parse(a); err != nil || !ok {
		t.Errorf("twoIDs = %q", props["twoIDs"])
	} else if _, err := uuid.Parse(b); err != nil || a == b {
		t.Errorf("twoIDs = %q: want two different UUIDs", props["twoIDs"])
	}
}

func TestSecretKeyRefMissingKey(t *testing.T) {
	t.Setenv("MECHA_TEST_SECRET", "s3cr3t")
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), component("envsecrets", "secretstores.local.env", ""))
	write(t, filepath.Join(dir, "b.yaml"), component("rec", "state.recording",
		"  metadata:\n  - name: p\n    secretKeyRef: {name: MECHA_TEST_SECRET, key: other}\nauth: {secretStore: envsecrets}\n"))
	m := newManager(t, &recorder{}, "app", dir)
	_, err := m.Load(t.Context())
	if err == nil || !strings.Contains(err.Error(), `has no key "other"`) {
		t.Fatalf("Load error = %v, want one about the missing key", err)
	}
}

// changes collects the ChangeSets a manager reports.
type changes struct {
	mu   sync.Mutex
	sets []components.ChangeSet
}

func (c *changes) listen(cs components.ChangeSet) {
	c.mu.Lock()
	c.sets = append(c.sets, cs)
	c.mu.Unlock()
}

func (c *changes) all() []components.ChangeSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sets)
}

func (c *changes) lastSet(t *testing.T) components.ChangeSet {
	t.Helper()
	all := c.all()
	if len(all) == 0 {
		t.Fatal("no ChangeSet was reported")
	}
	return all[len(all)-1]
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), component("a", "state.recording", "  metadata:\n  - {name: v, value: one}\n"))
	rec := &recorder{}
	m := newManager(t, rec, "app", dir)
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	var got changes
	m.OnChange(got.listen)

	steps := []struct {
		name   string
		do     func()
		want   []components.Change
		stores []string
		check  func(t *testing.T)
	}{
		{
			name: "nothing changed",
			do:   func() {},
			want: nil, stores: []string{"a"},
		},
		{
			name:   "add a file",
			do:     func() { write(t, filepath.Join(dir, "b.yaml"), component("b", "state.recording", "")) },
			want:   []components.Change{{Category: "state", Name: "b", Op: components.Added}},
			stores: []string{"a", "b"},
		},
		{
			name: "change metadata",
			do: func() {
				write(t, filepath.Join(dir, "a.yaml"), component("a", "state.recording", "  metadata:\n  - {name: v, value: two}\n"))
			},
			want:   []components.Change{{Category: "state", Name: "a", Op: components.Updated}},
			stores: []string{"a", "b"},
			check: func(t *testing.T) {
				all := rec.initialized("a")
				if len(all) != 2 {
					t.Fatalf("component a was initialized %d times, want 2", len(all))
				}
				if !all[0].closed.Load() {
					t.Error("the replaced instance of a was not closed")
				}
				if all[1].closed.Load() || all[1].props["v"] != "two" {
					t.Errorf("new instance: closed=%v props=%v", all[1].closed.Load(), all[1].props)
				}
				if m.Snapshot().State["a"].Store != state.Store(all[1]) {
					t.Error("the snapshot does not serve the new instance of a")
				}
			},
		},
		{
			name: "rewrite without a change keeps the instance",
			do: func() {
				write(t, filepath.Join(dir, "a.yaml"), component("a", "state.recording", "  metadata:\n  - {name: v, value: two}\n"))
			},
			want:   nil,
			stores: []string{"a", "b"},
			check: func(t *testing.T) {
				if n := len(rec.initialized("a")); n != 2 {
					t.Errorf("component a was initialized %d times, want still 2", n)
				}
			},
		},
		{
			name: "delete a file",
			do: func() {
				if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
					t.Fatal(err)
				}
			},
			want:   []components.Change{{Category: "state", Name: "b", Op: components.Removed}},
			stores: []string{"a"},
			check: func(t *testing.T) {
				if !rec.last(t, "b").closed.Load() {
					t.Error("the removed component was not closed")
				}
			},
		},
		{
			name: "a component that fails to start keeps its previous instance",
			do: func() {
				write(t, filepath.Join(dir, "a.yaml"), component("a", "state.failing", ""))
			},
			want:   nil,
			stores: []string{"a"},
			check: func(t *testing.T) {
				cur := rec.last(t, "a")
				if cur.closed.Load() || m.Snapshot().State["a"].Store != state.Store(cur) {
					t.Error("the running instance of a was replaced or closed by a failed reload")
				}
			},
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := len(got.all())
			s.do()
			if err := m.Reload(t.Context()); err != nil {
				t.Fatalf("Reload: %v", err)
			}
			if n := len(got.all()); n != before+1 {
				t.Fatalf("listener called %d times, want once", n-before)
			}
			if cs := got.lastSet(t); !slices.Equal(cs.Changes, s.want) {
				t.Errorf("changes = %+v, want %+v", cs.Changes, s.want)
			}
			if have := names(m.Snapshot().State); !slices.Equal(have, s.stores) {
				t.Errorf("state stores = %v, want %v", have, s.stores)
			}
			if s.check != nil {
				s.check(t)
			}
		})
	}
}

func TestReloadInvalidFileKeepsSnapshot(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), component("a", "state.in-memory", ""))
	m := newManager(t, &recorder{}, "app", dir)
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	var got changes
	m.OnChange(got.listen)
	before := m.Snapshot()
	bad := filepath.Join(dir, "b.yaml")
	write(t, bad, "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: b}\nspec: {type: state.in-memory, bogus: 1}\n")
	write(t, filepath.Join(dir, "c.yaml"), component("c", "state.in-memory", ""))
	err := m.Reload(t.Context())
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `unknown field "bogus"`) {
		t.Fatalf("Reload error = %v, want one naming %s and the unknown field", err, bad)
	}
	if m.Snapshot() != before {
		t.Error("a failed Reload replaced the snapshot")
	}
	if n := len(got.all()); n != 0 {
		t.Errorf("listeners were called %d times after a failed Reload", n)
	}
}

func TestOnChangeDocs(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), component("ps", "pubsub.in-memory", ""))
	m := newManager(t, &recorder{}, "app", dir)
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	var got changes
	m.OnChange(got.listen)
	write(t, filepath.Join(dir, "sub.yaml"), "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nspec: {pubsubname: ps, topic: orders, routes: {default: /orders}}\n"+
		"---\napiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: cfg}\nspec: {}\n")
	if err := m.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	cs := got.lastSet(t)
	var kinds []string
	for _, d := range cs.Docs {
		kinds = append(kinds, d.Kind)
	}
	if !slices.Equal(kinds, []string{"Subscription", "Configuration"}) {
		t.Fatalf("ChangeSet.Docs kinds = %v, want [Subscription Configuration]", kinds)
	}
	if !strings.Contains(string(cs.Docs[0].Raw), `"topic":"orders"`) {
		t.Errorf("Subscription raw = %s", cs.Docs[0].Raw)
	}
	if len(cs.Changes) != 0 {
		t.Errorf("changes = %+v, want none", cs.Changes)
	}
}

// waitFor polls cond until it holds, for at most 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, &recorder{}, "app", dir)
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	var reloads atomic.Int32
	m.OnChange(func(components.ChangeSet) { reloads.Add(1) })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Watch(ctx) }()

	// Touch a probe file until a reload proves the watcher is running:
	// there is no other signal that it has registered the folder.
	probe := filepath.Join(dir, "probe.txt")
	i := 0
	waitFor(t, "the watcher to reload after a probe write", func() bool {
		if i%20 == 0 {
			write(t, probe, time.Now().String())
		}
		i++
		return reloads.Load() > 0
	})

	write(t, filepath.Join(dir, "w.yaml"), component("watched", "state.in-memory", ""))
	waitFor(t, "the watched component to load", func() bool {
		_, ok := m.Snapshot().State["watched"]
		return ok
	})
	if err := os.Remove(filepath.Join(dir, "w.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watched component to unload", func() bool {
		_, ok := m.Snapshot().State["watched"]
		return !ok
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after its context was cancelled")
	}
}

func TestWatchWithoutPaths(t *testing.T) {
	m := newManager(t, &recorder{}, "app")
	done := make(chan error, 1)
	go func() { done <- m.Watch(t.Context()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch with no paths did not return at once")
	}
}

func TestStateStoreKeys(t *testing.T) {
	cases := []struct {
		name      string
		appID     string
		keyPrefix string // "" leaves the metadata out
		stored    string // what Key("k") returns
		allowSep  bool   // keys with "||" accepted
	}{
		{name: "default is the app id", appID: "app", stored: "app||k"},
		{name: "appid", appID: "app", keyPrefix: "appid", stored: "app||k"},
		{name: "appid is case-insensitive", appID: "app", keyPrefix: "AppID", stored: "app||k"},
		{name: "appid without an app id", appID: "", keyPrefix: "appid", stored: "k"},
		{name: "name", appID: "app", keyPrefix: "name", stored: "store||k"},
		{name: "none", appID: "app", keyPrefix: "none", stored: "k"},
		{name: "NONE", appID: "app", keyPrefix: "NONE", stored: "k"},
		{name: "custom literal is lowercased, as Dapr does", appID: "app", keyPrefix: "Shared", stored: "shared||k"},
		{name: "namespace without NAMESPACE falls back to the app id", appID: "app", keyPrefix: "namespace", stored: "app||k"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			comp := &components.Component{APIVersion: "dapr.io/v1alpha1", Kind: "Component",
				Metadata: components.ObjectMeta{Name: "store"},
				Spec:     components.ComponentSpec{Type: "state.in-memory", Version: "v1"}}
			if c.keyPrefix != "" {
				comp.Spec.Metadata = []components.MetadataItem{{Name: "keyPrefix", Value: components.DynamicValue{S: c.keyPrefix, Set: true}}}
			}
			m := components.NewManager(components.Options{AppID: c.appID, Defaults: []*components.Component{comp},
				Registry: testRegistry(&recorder{}), Logger: quietLogger()})
			t.Cleanup(func() { _ = m.Close() })
			if _, err := m.Load(t.Context()); err != nil {
				t.Fatal(err)
			}
			ss := m.Snapshot().State["store"]
			got, err := ss.Key("k")
			if err != nil || got != c.stored {
				t.Fatalf("Key(k) = %q, %v; want %q", got, err, c.stored)
			}
			if orig := ss.OriginalKey(got); orig != "k" {
				t.Errorf("OriginalKey(%q) = %q, want k", got, orig)
			}
			sep, err := ss.Key("a||b")
			if c.allowSep {
				if err != nil || sep != "a||b" {
					t.Errorf("Key(a||b) = %q, %v; want it unchanged", sep, err)
				}
				if orig := ss.OriginalKey("a||b"); orig != "a||b" {
					t.Errorf("OriginalKey(a||b) = %q, want it unchanged", orig)
				}
				return
			}
			var kp *components.KeyPrefixInvalid
			if !errors.As(err, &kp) || kp.Key != "a||b" || !strings.Contains(err.Error(), "can't contain '||'") {
				t.Errorf("Key(a||b) = %q, %v; want a *KeyPrefixInvalid", sep, err)
			}
		})
	}
}

func TestRegistry(t *testing.T) {
	reg := components.NewRegistry()
	reg.Register("state.x", "", func(logger.Logger) any { return "first" })
	reg.Register("state.x", "v2", func(logger.Logger) any { return "v2" })
	reg.Register("state.x", "v1", func(logger.Logger) any { return "replaced" })
	if got := reg.Types(); !slices.Equal(got, []string{"state.x@v1", "state.x@v2"}) {
		t.Errorf("Types = %v", got)
	}
	f, ok := reg.Lookup("state.x@v1")
	if !ok || f(nil) != "replaced" {
		t.Errorf("Lookup(state.x@v1) did not return the replacing factory")
	}
	if _, ok := reg.Lookup("state.y@v1"); ok {
		t.Error("Lookup of an unregistered type succeeded")
	}
}

func TestKeyPrefixNamespaceAndInvalidPrefix(t *testing.T) {
	t.Setenv("NAMESPACE", "prod")
	comp := &components.Component{APIVersion: "dapr.io/v1alpha1", Kind: "Component",
		Metadata: components.ObjectMeta{Name: "store"},
		Spec: components.ComponentSpec{Type: "state.in-memory", Version: "v1",
			Metadata: []components.MetadataItem{{Name: "keyPrefix", Value: components.DynamicValue{S: "namespace", Set: true}}}}}
	m := components.NewManager(components.Options{AppID: "app", Defaults: []*components.Component{comp},
		Registry: testRegistry(&recorder{}), Logger: quietLogger()})
	t.Cleanup(func() { _ = m.Close() })
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Snapshot().State["store"].Key("k"); got != "prod.app||k" {
		t.Fatalf("namespace strategy: Key(k) = %q, want prod.app||k", got)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s.yaml"), []byte("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.in-memory\n  metadata:\n  - name: keyPrefix\n    value: a||b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m2 := components.NewManager(components.Options{AppID: "app", Paths: []string{dir}, Registry: testRegistry(&recorder{}), Logger: quietLogger()})
	if _, err := m2.Load(t.Context()); err == nil || !strings.Contains(err.Error(), "keyPrefix") || !strings.Contains(err.Error(), "s.yaml") {
		t.Fatalf("a keyPrefix with || loaded: %v", err)
	}
}

// The embedded defaults stay when a resources path is given, unless a
// component there takes one's name.
func TestDefaultsStay(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), component("mine", "state.in-memory", ""))
	write(t, filepath.Join(dir, "b.yaml"), component("pubsub", "pubsub.in-memory", "  metadata:\n  - {name: x, value: y}\n"))
	m := components.NewManager(components.Options{AppID: "app", Paths: []string{dir}, Defaults: components.EmbeddedDefaults(false),
		Registry: withMecha(t, testRegistry(&recorder{})), Logger: quietLogger()})
	t.Cleanup(func() { _ = m.Close() })
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	snap := m.Snapshot()
	if got := names(snap.State); !slices.Equal(got, []string{"mine", "statestore"}) {
		t.Errorf("state stores %v, want the folder's and the embedded statestore", got)
	}
	for _, in := range snap.Infos {
		if in.Name == "statestore" && in.Type != "state.crux" || in.Name == "pubsub" && in.Type != "pubsub.in-memory" {
			t.Errorf("%s is %s", in.Name, in.Type)
		}
	}
}
