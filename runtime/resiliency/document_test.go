package resiliency

import (
	"errors"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// fromYAML decodes a YAML document as the loader would (YAML → JSON →
// Decode).
func fromYAML(t testing.TB, in string) (*Document, error) {
	t.Helper()
	raw, err := yaml.YAMLToJSON([]byte(in))
	if err != nil {
		t.Fatalf("test YAML: %v", err)
	}
	return Decode(raw)
}

func mustYAML(t testing.TB, in string) *Document {
	t.Helper()
	d, err := fromYAML(t, in)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return d
}

const fullDoc = `
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: full
  namespace: default
scopes: [checkout, orders]
spec:
  policies:
    timeouts:
      general: 5s
      fast: 250    # milliseconds, as in Dapr
    retries:
      serviceRetry:
        policy: constant
        duration: 1s
        maxRetries: 3
      forever:
        policy: exponential
        maxInterval: 15s
        maxRetries: -1
      only5xx:
        policy: constant
        duration: 100ms
        maxRetries: 2
        matching:
          httpStatusCodes: "429,500-504"
          gRPCStatusCodes: "1-4,14"
      tuned:
        policy: Exponential
        initialInterval: 100ms
        randomizationFactor: 0
        multiplier: 2
        maxInterval: 1s
        maxElapsedTime: 0
    circuitBreakers:
      serviceCB:
        maxRequests: 2
        interval: 8s
        timeout: 45s
        trip: consecutiveFailures > 8
      defaultish: {}
    bulkheads:
      small: {maxConcurrent: 4, maxWait: 50ms}
    rateLimits:
      perMethod: {rate: 100, burst: 20, per: method}
      whole: {rate: 2.5}
    adaptiveConcurrency:
      gradient: {minLimit: 2, maxLimit: 200, initialLimit: 10, tolerance: 2, smoothing: 0.5, sampleWindow: 100ms, minRTTWindow: 10s}
    overloadDrop:
      red: {lowWatermark: 100, highWatermark: 200}
  targets:
    apps:
      orders:
        timeout: general
        retry: serviceRetry
        circuitBreaker: serviceCB
        circuitBreakerCacheSize: 10
        bulkhead: small
        rateLimit: perMethod
        adaptiveConcurrency: gradient
        overloadDrop: red
    actors:
      cart:
        timeout: fast
        retry: forever
        circuitBreaker: serviceCB
        circuitBreakerScope: both
        circuitBreakerCacheSize: 5000
    components:
      statestore:
        outbound:
          timeout: general
          retry: only5xx
          circuitBreaker: defaultish
        inbound:
          retry: tuned
`

func TestDecodeFull(t *testing.T) {
	d := mustYAML(t, fullDoc)
	if d.Metadata.Name != "full" || d.Metadata.Namespace != "default" || len(d.Scopes) != 2 {
		t.Fatalf("metadata/scopes = %+v %v", d.Metadata, d.Scopes)
	}
	c := d.compiled
	if c.timeouts["general"] != 5*time.Second || c.timeouts["fast"] != 250*time.Millisecond {
		t.Errorf("timeouts = %v", c.timeouts)
	}
	if r := c.retries["serviceRetry"]; r.exponential || r.duration != time.Second || r.maxRetries != 3 {
		t.Errorf("serviceRetry = %+v", r)
	}
	f := c.retries["forever"]
	if !f.exponential || f.maxRetries != -1 || f.maxInterval != 15*time.Second ||
		f.initial != 500*time.Millisecond || f.multiplier != 1.5 || f.randomization != 0.5 || f.maxElapsed != 15*time.Minute {
		t.Errorf("forever = %+v, want Dapr's exponential defaults", f)
	}
	m := c.retries["only5xx"]
	for code, want := range map[int]bool{429: true, 500: true, 502: true, 504: true, 505: false, 404: false} {
		if m.http.matches(code) != want {
			t.Errorf("httpStatusCodes matches(%d) = %v, want %v", code, !want, want)
		}
	}
	for code, want := range map[int]bool{0: false, 1: true, 4: true, 5: false, 14: true} {
		if m.grpc.matches(code) != want {
			t.Errorf("gRPCStatusCodes matches(%d) = %v, want %v", code, !want, want)
		}
	}
	if tu := c.retries["tuned"]; !tu.exponential || tu.randomization != 0 || tu.multiplier != 2 || tu.maxElapsed != 0 {
		t.Errorf("tuned = %+v", tu)
	}
	if b := c.breakers["serviceCB"]; b.maxRequests != 2 || b.interval != 8*time.Second || b.timeout != 45*time.Second ||
		b.trip(Counts{ConsecutiveFailures: 8}) || !b.trip(Counts{ConsecutiveFailures: 9}) {
		t.Errorf("serviceCB = %+v", b)
	}
	if b := c.breakers["defaultish"]; b.maxRequests != 1 || b.interval != 0 || b.timeout != 60*time.Second ||
		b.trip(Counts{ConsecutiveFailures: 5}) || !b.trip(Counts{ConsecutiveFailures: 6}) {
		t.Errorf("defaultish = %+v, want gobreaker defaults", b)
	}
	if b := c.bulkheads["small"]; b.maxConcurrent != 4 || b.maxWait != 50*time.Millisecond {
		t.Errorf("small = %+v", b)
	}
	if l := c.rateLimits["perMethod"]; l.rate != 100 || l.burst != 20 || !l.perMethod {
		t.Errorf("perMethod = %+v", l)
	}
	if l := c.rateLimits["whole"]; l.burst != 3 || l.perMethod {
		t.Errorf("whole = %+v, want burst ceil(2.5)=3", l)
	}
	if a := c.adaptive["gradient"]; a.minLimit != 2 || a.maxLimit != 200 || a.initialLimit != 10 || a.tolerance != 2 ||
		a.smoothing != 0.5 || a.window != 100*time.Millisecond || a.minRTTWindow != 10*time.Second {
		t.Errorf("gradient = %+v", a)
	}
	if o := c.drops["red"]; o.low != 100 || o.high != 200 {
		t.Errorf("red = %+v", o)
	}
	if a := d.Spec.Targets.Apps["orders"]; a.Bulkhead != "small" || a.CircuitBreakerCacheSize != 10 {
		t.Errorf("orders target = %+v", a)
	}

	p, err := New(Options{}, d)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := p.ForApp("orders")
	if r.timeout != 5*time.Second || r.retry == nil || r.breakers == nil || r.breakers.size != 10 ||
		r.bulkhead == nil || r.limiter == nil || r.adaptive == nil || r.drop == nil {
		t.Errorf("orders runner = %+v", r)
	}
	if p.ForApp("orders") != r {
		t.Error("ForApp does not cache the runner")
	}
	if !p.ForApp("unknown").Passthrough() {
		t.Error("an app without target or defaults must get a passthrough runner")
	}
	out := p.ForComponent("statestore", "Statestore", Outbound)
	if out.timeout != 5*time.Second || out.retry.name != "only5xx" || out.breakers == nil {
		t.Errorf("statestore outbound = %+v", out)
	}
	if in := p.ForComponent("statestore", "Statestore", Inbound); in.retry.name != "tuned" || in.timeout != 0 {
		t.Errorf("statestore inbound = %+v", in)
	}
}

func TestDecodeMinimal(t *testing.T) {
	d := mustYAML(t, "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: empty\n")
	p, err := New(Options{}, d)
	if err != nil {
		t.Fatal(err)
	}
	if !p.ForApp("x").Passthrough() {
		t.Error("empty document must give passthrough runners")
	}
}

// head prefixes a spec with the document header.
func head(spec string) string {
	return "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r1\nspec:\n" + spec
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"not JSON", "- a\n- b\n", `resiliency "": expected a mapping, got array`},
		{"api version", "apiVersion: v2\nkind: Resiliency\nmetadata: {name: r1}\n", `resiliency "r1": apiVersion: must be dapr.io/v1alpha1, got "v2"`},
		{"kind", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: r1}\n", `resiliency "r1": kind: must be Resiliency, got "Component"`},
		{"no name", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\n", `resiliency "": metadata.name: must be set`},
		{"top unknown", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r1}\nspecs: {}\n", `resiliency "r1": unknown field "specs"`},
		{"spec unknown", head("  policy: {}\n"), `resiliency "r1": spec: unknown field "policy"`},
		{"policies unknown kind", head("  policies:\n    bulkhead: {}\n"), `resiliency "r1": spec.policies: unknown field "bulkhead"`},
		{"scopes type", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r1}\nscopes: app\n", `resiliency "r1": scopes: expected a list, got string`},
		{"timeout syntax", head("  policies:\n    timeouts:\n      general: 5 s\n"), `resiliency "r1": spec.policies.timeouts.general: "5 s" is not a duration (use 500ms, 5s, 1m or an integer of milliseconds)`},
		{"timeout zero", head("  policies:\n    timeouts:\n      general: 0s\n"), `resiliency "r1": spec.policies.timeouts.general: must be > 0, got 0s`},
		{"timeout type", head("  policies:\n    timeouts:\n      general: [1]\n"), `resiliency "r1": spec.policies.timeouts.general: expected a duration, got non-duration`},
		{"retry policy", head("  policies:\n    retries:\n      fast: {policy: linear}\n"), `resiliency "r1": spec.policies.retries.fast.policy: must be constant or exponential, got "linear"`},
		{"retry maxRetries", head("  policies:\n    retries:\n      fast: {maxRetries: -3}\n"), `resiliency "r1": spec.policies.retries.fast.maxRetries: must be ≥ -1, got -3`},
		{"retry maxRetries type", head("  policies:\n    retries:\n      fast: {maxRetries: many}\n"), `resiliency "r1": spec.policies.retries.fast.maxRetries: expected an integer, got string`},
		{"retry duration", head("  policies:\n    retries:\n      fast: {duration: -1s}\n"), `resiliency "r1": spec.policies.retries.fast.duration: must be ≥ 0, got -1s`},
		{"retry unknown field", head("  policies:\n    retries:\n      fast: {maxRetry: 3}\n"), `resiliency "r1": spec.policies.retries.fast: unknown field "maxRetry"`},
		{"retry multiplier", head("  policies:\n    retries:\n      fast: {multiplier: 0.5}\n"), `resiliency "r1": spec.policies.retries.fast.multiplier: must be ≥ 1, got 0.5`},
		{"retry randomization", head("  policies:\n    retries:\n      fast: {randomizationFactor: 2}\n"), `resiliency "r1": spec.policies.retries.fast.randomizationFactor: must be within [0, 1], got 2`},
		{"retry maxInterval", head("  policies:\n    retries:\n      fast: {maxInterval: 0s}\n"), `resiliency "r1": spec.policies.retries.fast.maxInterval: must be > 0`},
		{"matching http range", head("  policies:\n    retries:\n      fast:\n        matching: {httpStatusCodes: \"500-700\"}\n"), `resiliency "r1": spec.policies.retries.fast.matching.httpStatusCodes: "500-700" is outside 100-599`},
		{"matching http syntax", head("  policies:\n    retries:\n      fast:\n        matching: {httpStatusCodes: \"5xx\"}\n"), `resiliency "r1": spec.policies.retries.fast.matching.httpStatusCodes: "5xx" is not a code or a range of codes (e.g. 429,500-504)`},
		{"matching grpc empty range", head("  policies:\n    retries:\n      fast:\n        matching: {gRPCStatusCodes: \"14-2\"}\n"), `resiliency "r1": spec.policies.retries.fast.matching.gRPCStatusCodes: range "14-2" is empty`},
		{"breaker trip syntax", head("  policies:\n    circuitBreakers:\n      cb: {trip: \"consecutiveFailures >=\"}\n"), `resiliency "r1": spec.policies.circuitBreakers.cb.trip: "consecutiveFailures >=" does not compile`},
		{"breaker trip variable", head("  policies:\n    circuitBreakers:\n      cb: {trip: \"failures > 3\"}\n"), `resiliency "r1": spec.policies.circuitBreakers.cb.trip: "failures > 3" does not compile: ERROR: <input>:1:1: undeclared reference to 'failures'`},
		{"breaker trip type", head("  policies:\n    circuitBreakers:\n      cb: {trip: \"consecutiveFailures + 1\"}\n"), `resiliency "r1": spec.policies.circuitBreakers.cb.trip: "consecutiveFailures + 1" is of type int, want bool (e.g. consecutiveFailures >= 5)`},
		{"breaker maxRequests", head("  policies:\n    circuitBreakers:\n      cb: {maxRequests: -1}\n"), `resiliency "r1": spec.policies.circuitBreakers.cb.maxRequests: must be within [0, 2147483647], got -1`},
		{"breaker interval", head("  policies:\n    circuitBreakers:\n      cb: {interval: soon}\n"), `resiliency "r1": spec.policies.circuitBreakers.cb.interval: "soon" is not a duration`},
		{"bulkhead max", head("  policies:\n    bulkheads:\n      b: {maxConcurrent: 0}\n"), `resiliency "r1": spec.policies.bulkheads.b.maxConcurrent: must be ≥ 1, got 0`},
		{"bulkhead wait", head("  policies:\n    bulkheads:\n      b: {maxConcurrent: 1, maxWait: -5ms}\n"), `resiliency "r1": spec.policies.bulkheads.b.maxWait: must be ≥ 0, got -5ms`},
		{"rate", head("  policies:\n    rateLimits:\n      l: {rate: 0}\n"), `resiliency "r1": spec.policies.rateLimits.l.rate: must be > 0 calls per second, got 0`},
		{"rate per", head("  policies:\n    rateLimits:\n      l: {rate: 1, per: caller}\n"), `resiliency "r1": spec.policies.rateLimits.l.per: must be "method" or unset, got "caller"`},
		{"rate burst", head("  policies:\n    rateLimits:\n      l: {rate: 1, burst: -1}\n"), `resiliency "r1": spec.policies.rateLimits.l.burst: must be ≥ 0, got -1`},
		{"adaptive max", head("  policies:\n    adaptiveConcurrency:\n      a: {minLimit: 10, maxLimit: 5}\n"), `resiliency "r1": spec.policies.adaptiveConcurrency.a.maxLimit: must be ≥ minLimit (10), got 5`},
		{"adaptive initial", head("  policies:\n    adaptiveConcurrency:\n      a: {initialLimit: 5000}\n"), `resiliency "r1": spec.policies.adaptiveConcurrency.a.initialLimit: must be within [minLimit, maxLimit] = [1, 1000], got 5000`},
		{"adaptive tolerance", head("  policies:\n    adaptiveConcurrency:\n      a: {tolerance: 0.5}\n"), `resiliency "r1": spec.policies.adaptiveConcurrency.a.tolerance: must be ≥ 1, got 0.5`},
		{"adaptive smoothing", head("  policies:\n    adaptiveConcurrency:\n      a: {smoothing: 1.5}\n"), `resiliency "r1": spec.policies.adaptiveConcurrency.a.smoothing: must be within (0, 1], got 1.5`},
		{"adaptive windows", head("  policies:\n    adaptiveConcurrency:\n      a: {sampleWindow: 1s, minRTTWindow: 500ms}\n"), `resiliency "r1": spec.policies.adaptiveConcurrency.a.minRTTWindow: must be ≥ sampleWindow (1s), got 500ms`},
		{"drop watermarks", head("  policies:\n    overloadDrop:\n      d: {lowWatermark: 10, highWatermark: 10}\n"), `resiliency "r1": spec.policies.overloadDrop.d.highWatermark: must be > lowWatermark (10), got 10`},
		{"drop low", head("  policies:\n    overloadDrop:\n      d: {lowWatermark: -1, highWatermark: 10}\n"), `resiliency "r1": spec.policies.overloadDrop.d.lowWatermark: must be ≥ 0, got -1`},
		{"target unknown field", head("  targets:\n    apps:\n      orders: {retries: fast}\n"), `resiliency "r1": spec.targets.apps.orders: unknown field "retries"`},
		{"target cache size", head("  targets:\n    apps:\n      orders: {circuitBreakerCacheSize: -1}\n"), `resiliency "r1": spec.targets.apps.orders.circuitBreakerCacheSize: must be ≥ 0, got -1`},
		{"targets unknown kind", head("  targets:\n    services: {}\n"), `resiliency "r1": spec.targets: unknown field "services"`},
		{"actor scope missing", head("  targets:\n    actors:\n      cart: {circuitBreaker: cb}\n"), `resiliency "r1": spec.targets.actors.cart.circuitBreakerScope: must be set (type, id or both) when circuitBreaker is`},
		{"actor scope", head("  targets:\n    actors:\n      cart: {circuitBreakerScope: all}\n"), `resiliency "r1": spec.targets.actors.cart.circuitBreakerScope: must be type, id or both, got "all"`},
		{"component direction", head("  targets:\n    components:\n      store: {output: {}}\n"), `resiliency "r1": spec.targets.components.store: unknown field "output"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fromYAML(t, tc.in)
			if err == nil {
				t.Fatalf("Decode accepted it, want %q", tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FieldError", err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error = %q\nwant prefix %q", err.Error(), tc.want)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	policies := `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: shared}
spec:
  policies:
    timeouts: {general: 5s}
    retries: {fast: {maxRetries: 1}}
`
	for _, tc := range []struct {
		name string
		docs []string
		want string
	}{
		{"unknown retry", []string{head("  targets:\n    apps:\n      orders: {retry: fast}\n")},
			`resiliency "r1": spec.targets.apps.orders.retry: unknown retry policy "fast"`},
		{"unknown breaker", []string{head("  targets:\n    apps:\n      orders: {circuitBreaker: cb}\n")},
			`resiliency "r1": spec.targets.apps.orders.circuitBreaker: unknown circuit breaker policy "cb"`},
		{"unknown bulkhead in component", []string{head("  targets:\n    components:\n      store:\n        outbound: {bulkhead: b}\n")},
			`resiliency "r1": spec.targets.components.store.outbound.bulkhead: unknown bulkhead policy "b"`},
		{"unknown actor timeout", []string{head("  targets:\n    actors:\n      cart: {timeout: slow}\n")},
			`resiliency "r1": spec.targets.actors.cart.timeout: unknown timeout policy "slow"`},
		{"unknown extension kinds", []string{head("  targets:\n    apps:\n      a: {rateLimit: x}\n")},
			`resiliency "r1": spec.targets.apps.a.rateLimit: unknown rate limit policy "x"`},
		{"duplicate policy", []string{policies, strings.Replace(policies, "name: shared", "name: other", 1)},
			`resiliency "other": spec.policies.timeouts.general: already defined by resiliency "shared"`},
		{"duplicate target", []string{
			head("  policies:\n    timeouts: {t: 1s}\n  targets:\n    apps:\n      orders: {timeout: t}\n"),
			strings.Replace(head("  targets:\n    apps:\n      orders: {timeout: t}\n"), "name: r1", "name: r2", 1)},
			`resiliency "r2": spec.targets.apps.orders: already defined by resiliency "r1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var docs []*Document
			for _, in := range tc.docs {
				docs = append(docs, mustYAML(t, in))
			}
			_, err := New(Options{}, docs...)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("New error = %v\nwant %s", err, tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid")
			}
		})
	}
}

func TestCrossDocumentReferencesAndScopes(t *testing.T) {
	pol := mustYAML(t, `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: policies}
spec:
  policies:
    timeouts: {general: 5s}
`)
	tgt := mustYAML(t, `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: targets}
spec:
  targets:
    apps:
      orders: {timeout: general}
`)
	other := mustYAML(t, `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: elsewhere}
scopes: [billing]
spec:
  targets:
    apps:
      orders: {timeout: missing}
`)
	p, err := New(Options{AppID: "checkout"}, pol, tgt, other)
	if err != nil {
		t.Fatalf("New: %v (a document scoped to another app must be skipped)", err)
	}
	if got := p.Documents(); strings.Join(got, ",") != "policies,targets" {
		t.Errorf("Documents = %v", got)
	}
	if p.ForApp("orders").timeout != 5*time.Second {
		t.Error("orders does not use the timeout of the other document")
	}
	if _, err := New(Options{AppID: "billing"}, pol, tgt, other); err == nil {
		t.Error("in scope, the document naming an unknown policy must fail")
	}
}

func TestDefaultPolicies(t *testing.T) {
	d := mustYAML(t, `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: defaults}
spec:
  policies:
    timeouts:
      DefaultTimeoutPolicy: 9s
      DefaultAppTimeoutPolicy: 3s
      DefaultComponentOutboundTimeoutPolicy: 2s
      DefaultStatestoreComponentOutboundTimeoutPolicy: 1s
      own: 7s
    retries:
      DefaultRetryPolicy: {maxRetries: 2}
    bulkheads:
      DefaultAppBulkheadPolicy: {maxConcurrent: 3}
  targets:
    apps:
      special: {timeout: own}
`)
	p, err := New(Options{}, d)
	if err != nil {
		t.Fatal(err)
	}
	r := p.ForApp("anything")
	if r.timeout != 3*time.Second || r.retry == nil || r.retry.maxRetries != 2 || r.bulkhead == nil {
		t.Errorf("default app runner: timeout %v retry %v bulkhead %v", r.timeout, r.retry, r.bulkhead)
	}
	if p.ForApp("other") == r {
		t.Error("each app needs its own runner (its own bulkhead)")
	}
	if s := p.ForApp("special"); s.timeout != 7*time.Second || s.retry != nil || s.bulkhead != nil {
		t.Errorf("an app with a target must not get defaults (Dapr): %+v", s)
	}
	for _, tc := range []struct {
		typ  string
		dir  Direction
		want time.Duration
	}{
		{"Statestore", Outbound, time.Second},
		{"Pubsub", Outbound, 2 * time.Second},
		{"Pubsub", Inbound, 9 * time.Second},
	} {
		if got := p.ForComponent("c", tc.typ, tc.dir).timeout; got != tc.want {
			t.Errorf("component %s %s timeout = %v, want %v", tc.typ, tc.dir, got, tc.want)
		}
	}
}
