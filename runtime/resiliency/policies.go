package resiliency

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure how policies run.
type Options struct {
	// AppID is this runtime's app-id: documents whose scopes do not list
	// it are skipped, as in Dapr. Empty loads every document.
	AppID string
	// Clock is the time source (default SystemClock).
	Clock Clock
	// Rand returns uniform numbers in [0, 1) for retry jitter and random
	// early drop; it must be safe for concurrent use (default
	// math/rand/v2.Float64).
	Rand func() float64
	// OnBreakerChange, if set, is called on every circuit breaker state
	// change (for logs and metrics). instance is "" for a target-wide
	// breaker. It runs under the breaker's lock: it must not block or
	// call back into the Runner.
	OnBreakerChange func(target, instance string, from, to State)
}

// Direction is the direction of a component call.
type Direction string

// Component directions, as in spec.targets.components.<name>.
const (
	// Outbound is the runtime calling the component (save state, publish).
	Outbound Direction = "Outbound"
	// Inbound is the component's events going to the app (subscriptions,
	// input bindings).
	Inbound Direction = "Inbound"
)

// resolved is a target's policies with the references looked up.
type resolved struct {
	timeoutName string
	timeout     time.Duration
	retry       *retryPolicy
	breaker     *breakerPolicy
	cacheSize   int
	bulkhead    *bulkheadPolicy
	rate        *rateLimitPolicy
	adaptive    *adaptivePolicy
	drop        *dropPolicy
}

func (r *resolved) empty() bool {
	return r.timeout == 0 && r.retry == nil && r.breaker == nil && r.bulkhead == nil &&
		r.rate == nil && r.adaptive == nil && r.drop == nil
}

type componentKey struct {
	name, typ string
	dir       Direction
}

// Policies are the policies of a set of Resiliency documents, resolved
// per target, with the state (breakers, bulkheads, buckets, limits) of
// each target's Runner. Build with New; swap at runtime with a Store.
type Policies struct {
	opts   Options
	clock  Clock
	rnd    func() float64
	states *stateRegistry

	docs       []string
	timeouts   map[string]time.Duration
	retries    map[string]*retryPolicy
	breakers   map[string]*breakerPolicy
	bulkheads  map[string]*bulkheadPolicy
	rateLimits map[string]*rateLimitPolicy
	adaptive   map[string]*adaptivePolicy
	drops      map[string]*dropPolicy

	apps          map[string]resolved
	appDefaults   resolved
	noAppDefaults bool
	components    map[string][2]resolved // [inbound, outbound]

	// mu serializes writers of the runner caches; readers load the
	// copy-on-write maps without locking.
	mu          sync.Mutex
	appRunners  atomic.Pointer[map[string]*Runner]
	compRunners atomic.Pointer[map[componentKey]*Runner]
}

// New resolves docs into Policies. Policy names form one namespace across
// the documents (as in Dapr); defining a policy or a target twice is an
// error, and so is a target that names an unknown policy. Documents
// scoped to other app-ids (Options.AppID) are skipped.
func New(opts Options, docs ...*Document) (*Policies, error) {
	return build(opts, newStateRegistry(), docs...)
}

func build(opts Options, states *stateRegistry, docs ...*Document) (*Policies, error) {
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	p := &Policies{
		opts: opts, clock: opts.Clock, rnd: opts.Rand, states: states,
		timeouts:   map[string]time.Duration{},
		retries:    map[string]*retryPolicy{},
		breakers:   map[string]*breakerPolicy{},
		bulkheads:  map[string]*bulkheadPolicy{},
		rateLimits: map[string]*rateLimitPolicy{},
		adaptive:   map[string]*adaptivePolicy{},
		drops:      map[string]*dropPolicy{},
		apps:       map[string]resolved{},
		components: map[string][2]resolved{},
	}
	p.appRunners.Store(&map[string]*Runner{})
	p.compRunners.Store(&map[componentKey]*Runner{})

	var compiled []*compiledDoc
	for _, d := range docs {
		if d == nil {
			continue
		}
		c := d.compiled
		if c == nil {
			var err error
			if c, err = compileDoc(d); err != nil {
				return nil, err
			}
		}
		if opts.AppID != "" && len(c.scopes) > 0 && !slices.Contains(c.scopes, opts.AppID) {
			continue
		}
		compiled = append(compiled, c)
		p.docs = append(p.docs, c.name)
	}

	// Merge the policy namespaces.
	owner := map[string]string{}
	claim := func(c *compiledDoc, kind, name string) error {
		key := kind + "." + name
		if prev, ok := owner[key]; ok {
			return fieldErr(c.name, "spec.policies."+key, "already defined by resiliency %q", prev)
		}
		owner[key] = c.name
		return nil
	}
	for _, c := range compiled {
		if err := mergeKind(c, "timeouts", c.timeouts, p.timeouts, claim); err != nil {
			return nil, err
		}
		if err := mergeKind(c, "retries", c.retries, p.retries, claim); err != nil {
			return nil, err
		}
		if err := mergeKind(c, "circuitBreakers", c.breakers, p.breakers, claim); err != nil {
			return nil, err
		}
		if err := mergeKind(c, "bulkheads", c.bulkheads, p.bulkheads, claim); err != nil {
			return nil, err
		}
		if err := mergeKind(c, "rateLimits", c.rateLimits, p.rateLimits, claim); err != nil {
			return nil, err
		}
		if err := mergeKind(c, "adaptiveConcurrency", c.adaptive, p.adaptive, claim); err != nil {
			return nil, err
		}
		if err := mergeKind(c, "overloadDrop", c.drops, p.drops, claim); err != nil {
			return nil, err
		}
	}

	// Resolve the targets.
	targetOwner := map[string]string{}
	for _, c := range compiled {
		for _, id := range sortedKeys(c.apps) {
			path := "spec.targets.apps." + id
			if prev, ok := targetOwner[path]; ok {
				return nil, fieldErr(c.name, path, "already defined by resiliency %q", prev)
			}
			targetOwner[path] = c.name
			t := c.apps[id]
			r, err := p.resolve(c.name, path, t.PolicyRefs)
			if err != nil {
				return nil, err
			}
			r.cacheSize = t.CircuitBreakerCacheSize
			p.apps[id] = r
		}
		for _, name := range sortedKeys(c.components) {
			path := "spec.targets.components." + name
			if prev, ok := targetOwner[path]; ok {
				return nil, fieldErr(c.name, path, "already defined by resiliency %q", prev)
			}
			targetOwner[path] = c.name
			t := c.components[name]
			in, err := p.resolve(c.name, path+".inbound", t.Inbound)
			if err != nil {
				return nil, err
			}
			out, err := p.resolve(c.name, path+".outbound", t.Outbound)
			if err != nil {
				return nil, err
			}
			p.components[name] = [2]resolved{in, out}
		}
		for _, typ := range sortedKeys(c.actors) {
			path := "spec.targets.actors." + typ
			if prev, ok := targetOwner[path]; ok {
				return nil, fieldErr(c.name, path, "already defined by resiliency %q", prev)
			}
			targetOwner[path] = c.name
			a := c.actors[typ]
			if _, err := p.resolve(c.name, path, PolicyRefs{Timeout: a.Timeout, Retry: a.Retry, CircuitBreaker: a.CircuitBreaker}); err != nil {
				return nil, err
			}
		}
	}
	p.appDefaults = p.defaults([]string{"App"})
	p.noAppDefaults = p.appDefaults.empty()
	return p, nil
}

func hasKey[V any](m map[string]V) func(string) bool {
	return func(n string) bool {
		_, ok := m[n]
		return ok
	}
}

func mergeKind[V any](c *compiledDoc, kind string, from, into map[string]V, claim func(*compiledDoc, string, string) error) error {
	for _, name := range sortedKeys(from) {
		if err := claim(c, kind, name); err != nil {
			return err
		}
		into[name] = from[name]
	}
	return nil
}

// resolve looks up a target's policy names; path names the target.
func (p *Policies) resolve(doc, path string, refs PolicyRefs) (resolved, error) {
	var r resolved
	unknown := func(field, kind, name string) error {
		return fieldErr(doc, path+"."+field, "unknown %s policy %q", kind, name)
	}
	if n := refs.Timeout; n != "" {
		d, ok := p.timeouts[n]
		if !ok {
			return r, unknown("timeout", "timeout", n)
		}
		r.timeoutName, r.timeout = n, d
	}
	var ok bool
	if n := refs.Retry; n != "" {
		if r.retry, ok = p.retries[n]; !ok {
			return r, unknown("retry", "retry", n)
		}
	}
	if n := refs.CircuitBreaker; n != "" {
		if r.breaker, ok = p.breakers[n]; !ok {
			return r, unknown("circuitBreaker", "circuit breaker", n)
		}
	}
	if n := refs.Bulkhead; n != "" {
		if r.bulkhead, ok = p.bulkheads[n]; !ok {
			return r, unknown("bulkhead", "bulkhead", n)
		}
	}
	if n := refs.RateLimit; n != "" {
		if r.rate, ok = p.rateLimits[n]; !ok {
			return r, unknown("rateLimit", "rate limit", n)
		}
	}
	if n := refs.AdaptiveConcurrency; n != "" {
		if r.adaptive, ok = p.adaptive[n]; !ok {
			return r, unknown("adaptiveConcurrency", "adaptive concurrency", n)
		}
	}
	if n := refs.OverloadDrop; n != "" {
		if r.drop, ok = p.drops[n]; !ok {
			return r, unknown("overloadDrop", "overload drop", n)
		}
	}
	return r, nil
}

// defaults finds Dapr's default policies for a target without its own
// entry: for each kind, the first of Default<level><Kind>Policy over the
// levels (most specific first), then Default<Kind>Policy. mecha's
// extension kinds follow the same pattern (DefaultAppBulkheadPolicy, ...).
func (p *Policies) defaults(levels []string) resolved {
	find := func(kind string, has func(string) bool) string {
		for _, l := range levels {
			if n := "Default" + l + kind + "Policy"; has(n) {
				return n
			}
		}
		if n := "Default" + kind + "Policy"; has(n) {
			return n
		}
		return ""
	}
	refs := PolicyRefs{
		Timeout:             find("Timeout", hasKey(p.timeouts)),
		Retry:               find("Retry", hasKey(p.retries)),
		CircuitBreaker:      find("CircuitBreaker", hasKey(p.breakers)),
		Bulkhead:            find("Bulkhead", hasKey(p.bulkheads)),
		RateLimit:           find("RateLimit", hasKey(p.rateLimits)),
		AdaptiveConcurrency: find("AdaptiveConcurrency", hasKey(p.adaptive)),
		OverloadDrop:        find("OverloadDrop", hasKey(p.drops)),
	}
	r, _ := p.resolve("", "", refs) // every name was just found
	return r
}

// Documents names the documents in force (metadata.name), in load order.
func (p *Policies) Documents() []string { return slices.Clone(p.docs) }

// HasApp reports whether spec.targets.apps names appID.
func (p *Policies) HasApp(appID string) bool {
	_, ok := p.apps[appID]
	return ok
}

// ForApp returns the Runner for service invocation of appID: its
// spec.targets.apps entry, else the default policies. Runners, and so
// their breakers and limits, are kept per app for the life of the
// Policies (and across Store.Replace where the policies did not change).
// A target with no policies gets a shared Runner that just calls op.
// It is safe for concurrent use and does not allocate once the app's
// Runner exists.
func (p *Policies) ForApp(appID string) *Runner {
	if p == nil {
		return noopRunner
	}
	if r, ok := (*p.appRunners.Load())[appID]; ok {
		return r
	}
	if p.noAppDefaults {
		if _, ok := p.apps[appID]; !ok {
			return noopRunner
		}
	}
	return p.appRunner(appID)
}

// appTarget resolves an app's policies: its entry, else the defaults.
func (p *Policies) appTarget(appID string) resolved {
	if t, ok := p.apps[appID]; ok {
		return t
	}
	return p.appDefaults
}

func (p *Policies) appRunner(appID string) *Runner {
	t := p.appTarget(appID)
	if t.empty() {
		return noopRunner
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.appRunners.Load()
	if r, ok := old[appID]; ok {
		return r
	}
	r := p.newRunner(fmt.Sprintf("app %q", appID), stateTarget{app: appID}, &t)
	m := make(map[string]*Runner, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[appID] = r
	p.appRunners.Store(&m)
	return r
}

// ForComponent returns the Runner for calls to or from a component.
// componentType is Dapr's level name used by default policies (Statestore,
// Pubsub, Binding, Secretstore, Configuration, Lock, Crypto), e.g.
// DefaultStatestoreComponentOutboundRetryPolicy.
func (p *Policies) ForComponent(name, componentType string, dir Direction) *Runner {
	if p == nil {
		return noopRunner
	}
	k := componentKey{name, componentType, dir}
	if r, ok := (*p.compRunners.Load())[k]; ok {
		return r
	}
	return p.componentRunner(k)
}

// componentTarget resolves a component's policies: its entry, else the
// defaults for its type and direction.
func (p *Policies) componentTarget(k componentKey) resolved {
	if c, ok := p.components[k.name]; ok {
		if k.dir == Inbound {
			return c[0]
		}
		return c[1]
	}
	return p.defaults([]string{k.typ + "Component" + string(k.dir), "Component" + string(k.dir), "Component"})
}

func (p *Policies) componentRunner(k componentKey) *Runner {
	t := p.componentTarget(k)
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.compRunners.Load()
	if r, ok := old[k]; ok {
		return r
	}
	// A component without policies is remembered too: resolving its
	// defaults builds names, and components are called on every state
	// and publish request. Callers name loaded components only, so the
	// map stays as small as the set of components.
	r := noopRunner
	if !t.empty() {
		r = p.newRunner(fmt.Sprintf("component %q %s", k.name, k.dir), stateTarget{comp: k}, &t)
	}
	m := make(map[componentKey]*Runner, len(old)+1)
	for kk, v := range old {
		m[kk] = v
	}
	m[k] = r
	p.compRunners.Store(&m)
	return r
}

// newRunner builds a target's Runner. Its stateful policies come from the
// state registry, so a Runner built by another Policies of the same Store
// for the same target and definitions shares them.
func (p *Policies) newRunner(target string, st stateTarget, t *resolved) *Runner {
	r := &Runner{target: target, clock: p.clock, rnd: p.rnd, timeout: t.timeout, retry: t.retry}
	perr := func(policy string, sentinel error) *PolicyError {
		return &PolicyError{Target: target, Policy: policy, Err: sentinel}
	}
	if t.timeout > 0 {
		r.deadlines = newDeadlineQueue(p.clock)
		r.errTimeout = perr("timeouts."+t.timeoutName, ErrTimeout)
		r.errTimeout.Detail = "after " + t.timeout.String()
	}
	if b := t.breaker; b != nil {
		size := cacheSizeOr(t.cacheSize)
		r.breakers = p.states.get(stateKey{st, kindBreaker, b.spec, size}, func() any {
			var notify func(string, State, State)
			if hook := p.opts.OnBreakerChange; hook != nil {
				notify = func(instance string, from, to State) { hook(target, instance, from, to) }
			}
			return newBreakerSet(b, size, notify)
		}).(*breakerSet)
		r.breakerPolicy = "circuitBreakers." + b.name
	}
	if b := t.bulkhead; b != nil {
		r.bulkhead = p.states.get(stateKey{st, kindBulkhead, b.spec, 0}, func() any { return newBulkhead(b) }).(*bulkhead)
		r.errBulkhead = perr("bulkheads."+b.name, ErrBulkheadFull)
		r.errBulkhead.Detail = fmt.Sprintf("%d calls in flight", b.maxConcurrent)
	}
	if l := t.rate; l != nil {
		r.limiter = p.states.get(stateKey{st, kindRateLimit, l.spec, 0}, func() any { return newRateLimiter(l) }).(*rateLimiter)
		r.errRate = perr("rateLimits."+l.name, ErrRateLimited)
	}
	if a := t.adaptive; a != nil {
		r.adaptive = p.states.get(stateKey{st, kindAdaptive, a.spec, 0}, func() any { return newAdaptiveLimiter(a) }).(*adaptiveLimiter)
		r.errConcurrency = perr("adaptiveConcurrency."+a.name, ErrConcurrencyLimit)
	}
	if d := t.drop; d != nil {
		r.drop = p.states.get(stateKey{st, kindDrop, d.spec, 0}, func() any { return newDropper(d) }).(*dropper)
		r.errDrop = perr("overloadDrop."+d.name, ErrOverloaded)
	}
	r.needsTime = r.timeout > 0 || r.limiter != nil || r.breakers != nil || r.adaptive != nil || (r.retry != nil && r.retry.exponential)
	return r
}

func cacheSizeOr(n int) int {
	if n <= 0 {
		return defaultBreakerCacheSize
	}
	return n
}

// stateTarget identifies a target in the state registry.
type stateTarget struct {
	app  string
	comp componentKey
}

type stateKind int

const (
	kindBreaker stateKind = iota
	kindBulkhead
	kindRateLimit
	kindAdaptive
	kindDrop
)

// stateKey is a target's stateful policy: its kind and definition (the
// spec as written, and the breaker cache size).
type stateKey struct {
	target stateTarget
	kind   stateKind
	spec   any // a comparable *Spec value
	size   int
}

// stateRegistry holds the state of stateful policies (breakers, bulkhead
// slots, token buckets, adaptive limits, in-flight counts) by target and
// definition. The Policies of one Store share it, so the state of a
// policy that a reload did not change carries over whichever Policies
// builds the target's Runner, and whenever.
type stateRegistry struct {
	// mu guards m.
	mu sync.Mutex
	m  map[stateKey]any
}

func newStateRegistry() *stateRegistry { return &stateRegistry{m: map[stateKey]any{}} }

func (r *stateRegistry) get(k stateKey, mk func() any) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.m[k]; ok {
		return v
	}
	v := mk()
	r.m[k] = v
	return v
}

// prune drops the state whose definition p no longer gives its target.
// Calls in flight keep theirs.
func (r *stateRegistry) prune(p *Policies) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.m {
		var t resolved
		if k.target.app != "" || k.target.comp == (componentKey{}) {
			t = p.appTarget(k.target.app)
		} else {
			t = p.componentTarget(k.target.comp)
		}
		if !t.has(k) {
			delete(r.m, k)
		}
	}
}

// has reports whether t still defines k's policy the same way.
func (t *resolved) has(k stateKey) bool {
	switch k.kind {
	case kindBreaker:
		return t.breaker != nil && t.breaker.spec == k.spec && cacheSizeOr(t.cacheSize) == k.size
	case kindBulkhead:
		return t.bulkhead != nil && t.bulkhead.spec == k.spec
	case kindRateLimit:
		return t.rate != nil && t.rate.spec == k.spec
	case kindAdaptive:
		return t.adaptive != nil && t.adaptive.spec == k.spec
	case kindDrop:
		return t.drop != nil && t.drop.spec == k.spec
	}
	return false
}

// Store holds the Policies in force and swaps them atomically on reload.
// Calls in flight finish under the Policies they started with.
type Store struct {
	opts   Options
	states *stateRegistry

	// mu serializes Replace.
	mu  sync.Mutex
	cur atomic.Pointer[Policies]
}

// NewStore returns a Store with no documents (every Runner just calls
// its op).
func NewStore(opts Options) *Store {
	s := &Store{opts: opts, states: newStateRegistry()}
	p, _ := build(opts, s.states)
	s.cur.Store(p)
	return s
}

// Replace resolves docs and puts them in force. On error the current
// Policies stay. Targets keep the state (breaker states and counts,
// bulkhead slots, token buckets, adaptive limits, in-flight counts) of
// every policy whose definition is unchanged; a changed policy starts
// afresh (calls in flight finish with the old state).
func (s *Store) Replace(docs ...*Document) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := build(s.opts, s.states, docs...)
	if err != nil {
		return err
	}
	s.states.prune(p)
	s.cur.Store(p)
	return nil
}

// Policies returns the Policies in force.
func (s *Store) Policies() *Policies { return s.cur.Load() }

// ForApp is s.Policies().ForApp(appID).
func (s *Store) ForApp(appID string) *Runner { return s.cur.Load().ForApp(appID) }

// ForComponent is s.Policies().ForComponent(name, componentType, dir).
func (s *Store) ForComponent(name, componentType string, dir Direction) *Runner {
	return s.cur.Load().ForComponent(name, componentType, dir)
}
