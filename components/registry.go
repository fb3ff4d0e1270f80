package components

import (
	"fmt"
	"sort"
	"sync"

	"github.com/dapr/kit/logger"
)

// Factory builds a fresh, uninitialized component. The value must implement
// at least one contrib interface of its category (state.Store,
// pubsub.PubSub, bindings.InputBinding/OutputBinding,
// secretstores.SecretStore).
type Factory func(log logger.Logger) any

// Registry maps "spec.type@version" to a Factory. The zero value is not
// usable; use NewRegistry. Safe for concurrent use.
type Registry struct {
	mu        sync.RWMutex
	factories map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{factories: map[string]Factory{}} }

// Register adds a factory for typ (e.g. "state.redis") at version (e.g.
// "v1"). Registering the same key twice replaces the earlier factory, so a
// subsystem can take over a default.
func (r *Registry) Register(typ, version string, f Factory) {
	if version == "" {
		version = "v1"
	}
	r.mu.Lock()
	r.factories[typ+"@"+version] = f
	r.mu.Unlock()
}

// Lookup returns the factory for "type@version".
func (r *Registry) Lookup(typeVersion string) (Factory, bool) {
	r.mu.RLock()
	f, ok := r.factories[typeVersion]
	r.mu.RUnlock()
	return f, ok
}

// Types lists the registered "type@version" keys, sorted.
func (r *Registry) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.factories))
	for k := range r.factories {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (r *Registry) create(c *Component, log logger.Logger) (any, error) {
	f, ok := r.Lookup(c.TypeVersion())
	if tag, ok2 := tagged[c.TypeVersion()]; !ok && ok2 {
		return nil, fmt.Errorf("spec.type: %s is not in this build of mecha: it brings cloud SDKs with it, so it is built in only with "+
			"the build tag %q (or contrib_all): go build -tags %s ./cmd/mecha (README, \"Build\")", c.TypeVersion(), tag, tag)
	}
	if !ok {
		return nil, fmt.Errorf("spec.type: unknown component type %q version %q (registered: %v)", c.Spec.Type, versionOf(c), r.Types())
	}
	return f(log), nil
}

func versionOf(c *Component) string {
	if c.Spec.Version == "" {
		return "v1"
	}
	return c.Spec.Version
}
