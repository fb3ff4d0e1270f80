package components

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dapr/components-contrib/bindings"
	contribmeta "github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/components-contrib/secretstores"
	"github.com/dapr/components-contrib/state"
	"github.com/fsnotify/fsnotify"
	"github.com/google/uuid"
)

// Categories of components, the part of spec.type before the first dot.
const (
	CategoryState    = "state"
	CategoryPubSub   = "pubsub"
	CategoryBindings = "bindings"
	CategorySecrets  = "secretstores"
)

// ErrInit is wrapped by errors from a component's Init.
var ErrInit = errors.New("component init failed")

// Options configure a Manager.
type Options struct {
	// AppID is the runtime's app (--app-id): it substitutes {appID} tags
	// of shared components and is the view Snapshot returns.
	AppID string
	// Apps are the other apps the runtime hosts (--app): components
	// scoped to any of them load too, and each app has its own View.
	Apps []string
	// Paths are the resources folders.
	Paths []string
	// Defaults are the embedded components: each is loaded unless a
	// component of the resources folders has its name (that one wins).
	Defaults []*Component
	// Registry maps types to factories.
	Registry *Registry
	// Logger receives the manager's and the components' logs.
	Logger *slog.Logger
	// Debounce is how long the watcher waits for a burst of file events to
	// settle before reloading; 100ms when zero.
	Debounce time.Duration
	// DrainTimeout bounds how long a reload waits for the calls in flight
	// on an instance it replaces or removes before closing it; 30 s when
	// zero.
	DrainTimeout time.Duration
}

// Exclusive is implemented by components that hold a resource only one
// instance may hold at a time (state.crux's data directory lock): a
// reload closes the old instance before it starts the new one, and
// starts the old configuration again when the new one fails.
type Exclusive interface {
	// ExclusiveResource names the resource, for logs.
	ExclusiveResource() string
}

// perApp reports whether a category gets an instance per app rather
// than one shared by the apps of the runtime. A pubsub or binding is
// each app's own, as with a Dapr sidecar per app: its consumer group
// (consumerID) and {appID} tags are the app's, so two apps on one
// runtime each receive every event. State and secret stores are shared
// (a store such as Crux may be opened only once), and keep the apps'
// keys apart by prefix.
func perApp(category string) bool {
	return category == CategoryPubSub || category == CategoryBindings
}

// Change says what happened to one component during a reload.
type Change struct {
	Category string
	Name     string
	Op       ChangeOp
	// App is the app of a per-app instance (pubsub, bindings), or "" for
	// a shared one.
	App string
}

// ChangeOp is the kind of a Change.
type ChangeOp int

// Change operations.
const (
	Added ChangeOp = iota + 1
	Updated
	Removed
)

// String names the operation.
func (o ChangeOp) String() string {
	switch o {
	case Added:
		return "added"
	case Updated:
		return "updated"
	case Removed:
		return "removed"
	}
	return "unknown"
}

// ChangeSet is what a reload did, plus every non-Component document now on
// disk (Subscriptions and others) for their own consumers.
type ChangeSet struct {
	Changes []Change
	Docs    []Document
}

type instance struct {
	comp *Component
	// app is the app a per-app instance serves; "" for a shared one.
	app string
	// props are the resolved metadata it was initialized with, to start
	// it again when its replacement fails.
	props map[string]string
	value any
	// key is the canonical JSON of the manifest plus resolved metadata:
	// when it changes the component is re-created.
	key  string
	gate *Gate
}

// View is one app's view of the live components.
type View struct {
	app string
	cur atomic.Pointer[Snapshot]
}

// Snapshot returns the app's current immutable view.
func (v *View) Snapshot() *Snapshot { return v.cur.Load() }

// App is the app whose view this is.
func (v *View) App() string { return v.app }

// Manager owns the live components. Reads go through a View's Snapshot,
// an immutable view swapped atomically, so the request path takes no
// lock.
type Manager struct {
	opts  Options
	log   *slog.Logger
	views map[string]*View // by app-id; fixed at construction
	apps  []string         // the primary first

	// mu serializes loads, reloads and Close; it guards the fields below.
	mu        sync.Mutex
	instances map[string]*instance // category/name[@app] -> instance
	listeners []func(ChangeSet)
	closed    bool
	// overrideLogged remembers the defaults already said to be replaced.
	overrideLogged map[string]bool
}

// NewManager returns a manager with an empty snapshot.
func NewManager(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Debounce == 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	m := &Manager{opts: opts, log: opts.Logger, instances: map[string]*instance{}, views: map[string]*View{}, overrideLogged: map[string]bool{}}
	for _, app := range append([]string{opts.AppID}, opts.Apps...) {
		if _, dup := m.views[app]; dup {
			continue
		}
		m.apps = append(m.apps, app)
		m.views[app] = &View{app: app}
	}
	m.publishLocked()
	return m
}

// Snapshot returns the current immutable view of the runtime's app
// (Options.AppID).
func (m *Manager) Snapshot() *Snapshot { return m.views[m.opts.AppID].Snapshot() }

// View returns app's view, or nil when the manager does not serve app.
func (m *Manager) View(app string) *View { return m.views[app] }

// OnChange registers fn to be called after every successful reload.
func (m *Manager) OnChange(fn func(ChangeSet)) {
	m.mu.Lock()
	m.listeners = append(m.listeners, fn)
	m.mu.Unlock()
}

// Load reads the resources paths (or the embedded defaults) and initializes
// every component. It fails on the first invalid file, unknown type or
// failed init, naming the file and field, unless the component sets
// ignoreErrors. It returns the non-Component documents.
func (m *Manager) Load(ctx context.Context) ([]Document, error) {
	comps, docs, err := m.read()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.apply(ctx, comps, true); err != nil {
		m.closeAllLocked()
		return nil, err
	}
	return docs, nil
}

// read loads and decodes the component documents from disk.
func (m *Manager) read() ([]*Component, []Document, error) {
	if len(m.opts.Paths) == 0 {
		return m.opts.Defaults, nil, nil
	}
	comps, docs, err := m.readPaths()
	if err != nil {
		return nil, nil, err
	}
	named := map[string]string{}
	for _, c := range comps {
		named[c.Metadata.Name] = c.File
	}
	for _, d := range m.opts.Defaults {
		if file, ok := named[d.Metadata.Name]; ok {
			if !m.overrideLogged[d.Metadata.Name] {
				m.log.Info("a component of the resources path replaces the embedded default", "name", d.Metadata.Name, "file", file, "default_type", d.Spec.Type)
				m.overrideLogged[d.Metadata.Name] = true
			}
			continue
		}
		comps = append(comps, d)
	}
	return comps, docs, nil
}

// readPaths loads and decodes the documents of the resources folders.
func (m *Manager) readPaths() ([]*Component, []Document, error) {
	docs, err := ReadDocuments(m.opts.Paths)
	if err != nil {
		return nil, nil, err
	}
	var comps []*Component
	var rest []Document
	seen := map[string]string{}
	for _, d := range docs {
		if d.Kind != "Component" {
			rest = append(rest, d)
			continue
		}
		c, err := DecodeComponent(d)
		if err != nil {
			return nil, nil, err
		}
		if !slices.ContainsFunc(m.apps, c.inScope) {
			continue
		}
		key := c.Category() + "/" + c.Metadata.Name
		if prev, dup := seen[key]; dup {
			return nil, nil, fmt.Errorf("%w: %s: metadata.name: component %q is already declared in %s", ErrInvalidResource, d.Where(), c.Metadata.Name, prev)
		}
		seen[key] = d.Where()
		comps = append(comps, c)
	}
	return comps, rest, nil
}

func (c *Component) inScope(appID string) bool {
	if len(c.Scopes) == 0 {
		return true
	}
	for _, s := range c.Scopes {
		if s == appID {
			return true
		}
	}
	return false
}

// apply brings the live set to comps. Secret stores go first so that other
// components can resolve secretKeyRef against them. With strict set, the
// first error aborts; otherwise (hot reload) a bad component is logged and
// its previous instance, if any, stays.
func (m *Manager) apply(ctx context.Context, comps []*Component, strict bool) ([]Change, error) {
	comps = append([]*Component(nil), comps...)
	sort.SliceStable(comps, func(i, j int) bool {
		return comps[i].Category() == CategorySecrets && comps[j].Category() != CategorySecrets
	})
	wanted := map[string]bool{}
	var changes []Change
	for _, c := range comps {
		targets := []string{""}
		if perApp(c.Category()) {
			targets = targets[:0]
			for _, app := range m.apps {
				if c.inScope(app) {
					targets = append(targets, app)
				}
			}
		}
		for _, app := range targets {
			key := c.Category() + "/" + c.Metadata.Name
			if app != "" {
				key += "@" + app
			}
			wanted[key] = true
			ch, err := m.applyOne(ctx, key, app, c)
			if err != nil {
				if err = m.failed(c, err, strict); err != nil {
					return changes, err
				}
				continue
			}
			if ch != nil {
				changes = append(changes, *ch)
			}
		}
	}
	for key, inst := range m.instances {
		if !wanted[key] {
			delete(m.instances, key)
			m.publishLocked()
			m.retire(inst)
			changes = append(changes, Change{Category: inst.comp.Category(), Name: inst.comp.Metadata.Name, Op: Removed, App: inst.app})
			m.log.Info("component removed", "name", inst.comp.Metadata.Name, "type", inst.comp.Spec.Type, "app", inst.app)
		}
	}
	m.publishLocked()
	return changes, nil
}

// applyOne starts the instance key of c, or replaces the running one when
// its configuration changed. A replaced instance takes no new calls, and
// closes once those in flight are done. One holding an exclusive resource
// is closed first, and started again with its old configuration when the
// new one fails.
func (m *Manager) applyOne(ctx context.Context, key, app string, c *Component) (*Change, error) {
	tagApp := app
	if tagApp == "" {
		tagApp = m.opts.AppID
	}
	props, err := m.resolveMetadata(ctx, c, tagApp)
	if err != nil {
		return nil, err
	}
	canon := canonical(c, props)
	old := m.instances[key]
	if old != nil && old.key == canon {
		return nil, nil
	}
	next := &instance{comp: c, app: app, props: props, key: canon, gate: newGate()}
	if ex, ok := old.exclusive(); ok {
		m.log.Info("component holds an exclusive resource; closing it before starting its new configuration",
			"name", c.Metadata.Name, "resource", ex)
		m.drain(old)
		closeComponent(old.value, m.log)
		v, err := m.create(ctx, c, props, tagApp)
		if err != nil {
			// Roll back: the old configuration takes its resource again.
			back := &instance{comp: old.comp, app: app, props: old.props, key: old.key, gate: newGate()}
			if back.value, _ = m.create(ctx, old.comp, old.props, tagApp); back.value != nil {
				m.instances[key] = back
				m.log.Error("component reload failed; its previous configuration was started again", "name", c.Metadata.Name, "err", err)
			} else {
				delete(m.instances, key)
				m.log.Error("component reload failed, and so did starting its previous configuration again; it is unloaded", "name", c.Metadata.Name, "err", err)
			}
			m.publishLocked()
			old.gate.release()
			if back.value == nil {
				return &Change{Category: c.Category(), Name: c.Metadata.Name, Op: Removed, App: app}, nil
			}
			return nil, nil
		}
		next.value = v
		m.instances[key] = next
		m.publishLocked()
		old.gate.release()
		m.log.Info("component loaded", "name", c.Metadata.Name, "type", c.Spec.Type, "version", versionOf(c), "op", Updated.String(), "app", app, "file", c.where())
		return &Change{Category: c.Category(), Name: c.Metadata.Name, Op: Updated, App: app}, nil
	}
	v, err := m.create(ctx, c, props, tagApp)
	if err != nil {
		return nil, err
	}
	next.value = v
	m.instances[key] = next
	// Publish at once, so later components see earlier secret stores and
	// new calls go to the new instance while the old one drains.
	m.publishLocked()
	op := Added
	if old != nil {
		op = Updated
		m.retire(old)
	}
	m.log.Info("component loaded", "name", c.Metadata.Name, "type", c.Spec.Type, "version", versionOf(c), "op", op.String(), "app", app, "file", c.where())
	return &Change{Category: c.Category(), Name: c.Metadata.Name, Op: op, App: app}, nil
}

// exclusive reports whether the instance holds an exclusive resource.
func (inst *instance) exclusive() (string, bool) {
	if inst == nil {
		return "", false
	}
	if e, ok := inst.value.(Exclusive); ok {
		return e.ExclusiveResource(), true
	}
	return "", false
}

// drain stops an instance taking calls and waits for those in flight.
func (m *Manager) drain(inst *instance) {
	if !inst.gate.drain(m.opts.DrainTimeout) {
		m.log.Warn("component replaced with calls still in flight after the drain timeout; closing it anyway",
			"name", inst.comp.Metadata.Name, "in_flight", inst.gate.InFlight(), "timeout", m.opts.DrainTimeout)
	}
}

// retire closes an instance that the published snapshot no longer
// serves, once its calls in flight are done.
func (m *Manager) retire(inst *instance) {
	m.drain(inst)
	inst.gate.release()
	closeComponent(inst.value, m.log)
}

// where names the file a component came from.
func (c *Component) where() string {
	if c.File == "" {
		return "embedded default"
	}
	return c.File
}

func (m *Manager) failed(c *Component, err error, strict bool) error {
	err = fmt.Errorf("%s: component %q (%s): %w", c.where(), c.Metadata.Name, c.TypeVersion(), err)
	if c.Spec.IgnoreErrors {
		m.log.Warn("component failed and is skipped (ignoreErrors)", "err", err)
		return nil
	}
	if strict {
		return err
	}
	m.log.Error("component reload failed; keeping the previous state", "err", err)
	return nil
}

// publishLocked swaps every app's view for one built from the instances.
func (m *Manager) publishLocked() {
	for _, v := range m.views {
		v.cur.Store(buildSnapshot(v.app, m.instances))
	}
}

func canonical(c *Component, props map[string]string) string {
	b, _ := json.Marshal(struct {
		T, V  string
		Props map[string]string
	}{c.Spec.Type, versionOf(c), props})
	return string(b)
}

// resolveMetadata turns spec.metadata into the properties map a component
// gets: values with tags substituted, envRef read from the environment and
// secretKeyRef looked up in auth.secretStore.
func (m *Manager) resolveMetadata(ctx context.Context, c *Component, app string) (map[string]string, error) {
	props := make(map[string]string, len(c.Spec.Metadata))
	for i, item := range c.Spec.Metadata {
		switch {
		case item.SecretKeyRef != nil:
			storeName := c.Auth.SecretStore
			if storeName == "" {
				return nil, fmt.Errorf("spec.metadata[%d] (%s): secretKeyRef needs auth.secretStore to name a secret store", i, item.Name)
			}
			inst, ok := m.instances[CategorySecrets+"/"+storeName]
			if !ok {
				return nil, fmt.Errorf("auth.secretStore: secret store %q is not loaded", storeName)
			}
			resp, err := inst.value.(secretstores.SecretStore).GetSecret(ctx, secretstores.GetSecretRequest{Name: item.SecretKeyRef.Name})
			if err != nil {
				return nil, fmt.Errorf("spec.metadata[%d] (%s): secretKeyRef %q: %v", i, item.Name, item.SecretKeyRef.Name, err)
			}
			k := item.SecretKeyRef.Key
			if k == "" {
				k = item.SecretKeyRef.Name
			}
			v, ok := resp.Data[k]
			if !ok {
				return nil, fmt.Errorf("spec.metadata[%d] (%s): secret %q has no key %q", i, item.Name, item.SecretKeyRef.Name, k)
			}
			props[item.Name] = v
		case item.EnvRef != "":
			props[item.Name] = os.Getenv(item.EnvRef)
		default:
			props[item.Name] = substituteTags(item.Value.S, app)
		}
	}
	return props, nil
}

// substituteTags replaces Dapr's metadata tags: {uuid}, {appID}, {podName}
// and {namespace}.
func substituteTags(v, appID string) string {
	if !strings.Contains(v, "{") {
		return v
	}
	for strings.Contains(v, "{uuid}") {
		v = strings.Replace(v, "{uuid}", uuid.NewString(), 1)
	}
	v = strings.ReplaceAll(v, "{appID}", appID)
	if strings.Contains(v, "{podName}") {
		pod := os.Getenv("POD_NAME")
		if pod == "" {
			pod, _ = os.Hostname()
		}
		v = strings.ReplaceAll(v, "{podName}", pod)
	}
	if strings.Contains(v, "{namespace}") {
		ns := os.Getenv("NAMESPACE")
		if ns == "" {
			ns = "default"
		}
		v = strings.ReplaceAll(v, "{namespace}", ns)
	}
	return v
}

// create builds and initializes one component within its initTimeout.
func (m *Manager) create(ctx context.Context, c *Component, props map[string]string, app string) (any, error) {
	clog := NewContribLogger(m.log.With("name", c.Metadata.Name))
	v, err := m.opts.Registry.create(c, clog)
	if err != nil {
		return nil, err
	}
	if perApp(c.Category()) && app != "" && strings.TrimSpace(props[pubsub.RuntimeConsumerIDKey]) == "" {
		// As daprd: a pubsub's consumer group defaults to the app-id,
		// so each app receives every event of a topic once. A binding
		// that reads a topic (bindings.mecha, bindings.kafka) takes the
		// same default.
		props = maps.Clone(props)
		props[pubsub.RuntimeConsumerIDKey] = app
	}
	base := contribmeta.Base{Name: c.Metadata.Name, Properties: props}
	ictx, cancel := context.WithTimeout(ctx, c.InitTimeoutDuration())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic during init: %v", r)
			}
		}()
		done <- initComponent(ictx, c.Category(), v, base)
	}()
	select {
	case err = <-done:
		if err != nil {
			closeComponent(v, m.log)
		}
	case <-ictx.Done():
		err = fmt.Errorf("init did not finish within spec.initTimeout (%s)", c.InitTimeoutDuration())
		// Init is still running; close the component once it returns,
		// never concurrently with it.
		go func() { <-done; closeComponent(v, m.log) }()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInit, err)
	}
	return v, nil
}

func initComponent(ctx context.Context, category string, v any, base contribmeta.Base) error {
	switch category {
	case CategoryState:
		s, ok := v.(state.Store)
		if !ok {
			return fmt.Errorf("spec.type: not a state store")
		}
		return s.Init(ctx, state.Metadata{Base: base})
	case CategoryPubSub:
		p, ok := v.(pubsub.PubSub)
		if !ok {
			return fmt.Errorf("spec.type: not a pubsub")
		}
		return p.Init(ctx, pubsub.Metadata{Base: base})
	case CategoryBindings:
		if b, ok := v.(bindings.InputBinding); ok {
			return b.Init(ctx, bindings.Metadata{Base: base})
		}
		if b, ok := v.(bindings.OutputBinding); ok {
			return b.Init(ctx, bindings.Metadata{Base: base})
		}
		return fmt.Errorf("spec.type: not a binding")
	case CategorySecrets:
		s, ok := v.(secretstores.SecretStore)
		if !ok {
			return fmt.Errorf("spec.type: not a secret store")
		}
		return s.Init(ctx, secretstores.Metadata{Base: base})
	}
	return fmt.Errorf("spec.type: unsupported building block %q", category)
}

// closeComponent closes v if it can be closed. Some contrib components
// panic when closed after a failed Init; that must not take mecha down.
func closeComponent(v any, log *slog.Logger) {
	defer func() {
		if r := recover(); r != nil {
			log.Debug("component panicked on close", "panic", r)
		}
	}()
	if c, ok := v.(io.Closer); ok {
		if err := c.Close(); err != nil {
			log.Warn("closing component", "err", err)
		}
	}
}

// Reload re-reads the resources paths and applies the difference: new
// components start, changed ones are re-created, deleted ones close. A bad
// file is logged and leaves the running set as it was.
func (m *Manager) Reload(ctx context.Context) error {
	comps, docs, err := m.read()
	if err != nil {
		m.log.Error("hot reload: resources not applied", "err", err)
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	changes, _ := m.apply(ctx, comps, false)
	listeners := append([]func(ChangeSet){}, m.listeners...)
	m.mu.Unlock()
	cs := ChangeSet{Changes: changes, Docs: docs}
	for _, fn := range listeners {
		fn(cs)
	}
	return nil
}

// Watch reloads whenever a file in the resources paths changes, until ctx
// ends. With no paths it returns at once.
func (m *Manager) Watch(ctx context.Context) error {
	if len(m.opts.Paths) == 0 {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching resources: %w", err)
	}
	defer w.Close()
	for _, p := range m.opts.Paths {
		if err := w.Add(p); err != nil {
			return fmt.Errorf("watching resources path %s: %w", p, err)
		}
	}
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(m.opts.Debounce)
			} else {
				timer.Reset(m.opts.Debounce)
			}
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			m.log.Warn("resources watcher", "err", err)
		case <-fire:
			fire = nil
			_ = m.Reload(ctx)
		}
	}
}

// Close closes every component.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.closeAllLocked()
	return nil
}

func (m *Manager) closeAllLocked() {
	insts := m.instances
	m.instances = map[string]*instance{}
	m.publishLocked()
	for _, inst := range insts {
		m.retire(inst)
	}
}
