package components

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/components-contrib/secretstores"
	"github.com/dapr/components-contrib/state"
)

// Snapshot is an immutable view of the live components, swapped as a whole
// on every (re)load. Never modify one.
type Snapshot struct {
	State          map[string]*StateStore
	PubSub         map[string]*PubSub
	OutputBindings map[string]OutputBinding
	InputBindings  map[string]bindings.InputBinding
	Secrets        map[string]SecretStore
	// Infos describes every component, sorted by name, for the metadata API.
	Infos []Info
}

// Info describes a loaded component.
type Info struct {
	Name         string
	Type         string
	Version      string
	Capabilities []string
}

// StateStore is a loaded state store with what the API needs to use it.
type StateStore struct {
	Name  string
	Store state.Store
	// Txn is nil when the store is not transactional.
	Txn state.TransactionalStore
	// MultiMaxSize is the most operations one transaction may hold; 0 means
	// no limit.
	MultiMaxSize int
	// Gate counts the calls in flight, for a reload to drain.
	Gate *Gate
	// prefix is what stored keys start with before "||", or "" for none.
	prefix   string
	noPrefix bool
}

// PubSub is a loaded pubsub component.
type PubSub struct {
	Name string
	PS   pubsub.PubSub
	// Bulk is nil when the component has no native bulk publish.
	Bulk pubsub.BulkPublisher
	// BulkSub is nil when the component has no native bulk subscribe.
	BulkSub pubsub.BulkSubscriber
	// Gate counts the publishes in flight, for a reload to drain.
	Gate *Gate
}

// OutputBinding is a loaded output binding.
type OutputBinding struct {
	bindings.OutputBinding
	// Gate counts the calls in flight, for a reload to drain.
	Gate *Gate
}

// SecretStore is a loaded secret store.
type SecretStore struct {
	secretstores.SecretStore
	// Gate counts the calls in flight, for a reload to drain.
	Gate *Gate
}

// KeyPrefixInvalid is returned by Key for keys that contain the separator.
type KeyPrefixInvalid struct{ Key string }

// Error implements error.
func (e *KeyPrefixInvalid) Error() string {
	return fmt.Sprintf("input key/keyPrefix '%s' can't contain '||'", e.Key)
}

// Key returns the key as stored: "prefix||key" where the prefix follows the
// component's keyPrefix metadata exactly as Dapr 1.14 does (appid by
// default, name, namespace, none, or a literal), so data written by daprd
// stays readable. Keys containing "||" are refused under every strategy.
func (s *StateStore) Key(key string) (string, error) {
	if strings.Contains(key, "||") {
		return "", &KeyPrefixInvalid{Key: key}
	}
	if s.noPrefix {
		return key, nil
	}
	return s.prefix + "||" + key, nil
}

// OriginalKey strips the prefix Key added.
func (s *StateStore) OriginalKey(stored string) string {
	if s.noPrefix {
		return stored
	}
	if i := strings.Index(stored, "||"); i >= 0 {
		rest := stored[i+2:]
		// Dapr splits in at most three parts and keeps the second.
		if j := strings.Index(rest, "||"); j >= 0 {
			return rest[:j]
		}
		return rest
	}
	return stored
}

// HasFeature reports whether the store advertises f.
func (s *StateStore) HasFeature(f state.Feature) bool {
	for _, x := range s.Store.Features() {
		if x == f {
			return true
		}
	}
	return false
}

// buildSnapshot is app's view of the instances: the shared ones in its
// scope and its own per-app ones, with state keys prefixed for app.
func buildSnapshot(app string, instances map[string]*instance) *Snapshot {
	s := &Snapshot{
		State:          map[string]*StateStore{},
		PubSub:         map[string]*PubSub{},
		OutputBindings: map[string]OutputBinding{},
		InputBindings:  map[string]bindings.InputBinding{},
		Secrets:        map[string]SecretStore{},
	}
	for _, inst := range instances {
		c := inst.comp
		if inst.app != "" && inst.app != app || inst.app == "" && !c.inScope(app) {
			continue
		}
		name := c.Metadata.Name
		info := Info{Name: name, Type: c.Spec.Type, Version: versionOf(c)}
		switch c.Category() {
		case CategoryState:
			st := inst.value.(state.Store)
			ss := &StateStore{Name: name, Store: st, Gate: inst.gate}
			ss.prefix, ss.noPrefix = keyPrefix(c, app)
			if t, ok := st.(state.TransactionalStore); ok {
				ss.Txn = t
				if mm, ok := st.(state.TransactionalStoreMultiMaxSize); ok {
					ss.MultiMaxSize = mm.MultiMaxSize()
				}
			}
			for _, f := range st.Features() {
				info.Capabilities = append(info.Capabilities, string(f))
			}
			s.State[name] = ss
		case CategoryPubSub:
			p := inst.value.(pubsub.PubSub)
			ps := &PubSub{Name: name, PS: p, Gate: inst.gate}
			ps.Bulk, _ = p.(pubsub.BulkPublisher)
			ps.BulkSub, _ = p.(pubsub.BulkSubscriber)
			for _, f := range p.Features() {
				info.Capabilities = append(info.Capabilities, string(f))
			}
			s.PubSub[name] = ps
		case CategoryBindings:
			if b, ok := inst.value.(bindings.OutputBinding); ok {
				s.OutputBindings[name] = OutputBinding{OutputBinding: b, Gate: inst.gate}
				info.Capabilities = append(info.Capabilities, "OUTPUT_BINDING")
			}
			if b, ok := inst.value.(bindings.InputBinding); ok {
				s.InputBindings[name] = b
				info.Capabilities = append(info.Capabilities, "INPUT_BINDING")
			}
		case CategorySecrets:
			st := inst.value.(secretstores.SecretStore)
			for _, f := range st.Features() {
				info.Capabilities = append(info.Capabilities, string(f))
			}
			s.Secrets[name] = SecretStore{SecretStore: st, Gate: inst.gate}
		}
		s.Infos = append(s.Infos, info)
	}
	sort.Slice(s.Infos, func(i, j int) bool { return s.Infos[i].Name < s.Infos[j].Name })
	return s
}

// keyPrefix reads the keyPrefix metadata the way Dapr does: the strategy
// is lowercased; appid (the default), name, namespace (NAMESPACE.appid, or
// appid when NAMESPACE is unset), none, or any other literal.
func keyPrefix(c *Component, appID string) (string, bool) {
	mode := strategy(c)
	switch mode {
	case "appid":
		if appID == "" {
			return "", true
		}
		return appID, false
	case "name":
		return c.Metadata.Name, false
	case "namespace":
		if appID == "" {
			return "", true
		}
		if ns := os.Getenv("NAMESPACE"); ns != "" {
			return ns + "." + appID, false
		}
		return appID, false
	case "none":
		return "", true
	}
	return mode, false
}

func strategy(c *Component) string {
	for _, m := range c.Spec.Metadata {
		if strings.EqualFold(m.Name, "keyPrefix") {
			return strings.ToLower(m.Value.S)
		}
	}
	return "appid"
}
