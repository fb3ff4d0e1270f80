package resiliency

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Defaults, as in Dapr (dapr/kit/retry.DefaultConfig, gobreaker) where
// Dapr has the policy.
const (
	defaultRetryDuration       = 5 * time.Second
	defaultInitialInterval     = 500 * time.Millisecond
	defaultRandomization       = 0.5
	defaultMultiplier          = 1.5
	defaultMaxInterval         = 60 * time.Second
	defaultMaxElapsedTime      = 15 * time.Minute
	defaultBreakerTimeout      = 60 * time.Second
	defaultBreakerCacheSize    = 100
	defaultAdaptiveMin         = 1
	defaultAdaptiveMax         = 1000
	defaultAdaptiveInitial     = 20
	defaultAdaptiveTolerance   = 1.5
	defaultAdaptiveSmoothing   = 0.2
	defaultAdaptiveWindow      = 250 * time.Millisecond
	defaultAdaptiveMinRTTEpoch = 30 * time.Second
)

// compiledDoc is a validated document with its policies ready to run.
type compiledDoc struct {
	name       string
	scopes     []string
	timeouts   map[string]time.Duration
	retries    map[string]*retryPolicy
	breakers   map[string]*breakerPolicy
	bulkheads  map[string]*bulkheadPolicy
	rateLimits map[string]*rateLimitPolicy
	adaptive   map[string]*adaptivePolicy
	drops      map[string]*dropPolicy
	apps       map[string]AppTarget
	components map[string]ComponentTarget
	actors     map[string]ActorTarget
}

type retryPolicy struct {
	name          string
	exponential   bool
	duration      time.Duration
	initial       time.Duration
	maxInterval   time.Duration
	maxElapsed    time.Duration
	randomization float64
	multiplier    float64
	// maxRetries is -1 for "until success or the context ends".
	maxRetries int
	http, grpc codeSet
}

type breakerPolicy struct {
	name        string
	spec        CircuitBreakerSpec
	maxRequests uint32
	interval    time.Duration
	timeout     time.Duration
	trip        tripFunc
}

type bulkheadPolicy struct {
	name          string
	spec          BulkheadSpec
	maxConcurrent int
	maxWait       time.Duration
}

type rateLimitPolicy struct {
	name      string
	spec      RateLimitSpec
	rate      float64
	burst     int
	perMethod bool
}

type adaptivePolicy struct {
	name         string
	spec         AdaptiveConcurrencySpec
	minLimit     int
	maxLimit     int
	initialLimit int
	tolerance    float64
	smoothing    float64
	window       time.Duration
	minRTTWindow time.Duration
}

type dropPolicy struct {
	name string
	spec OverloadDropSpec
	low  int
	high int
}

// codeSet is a set of status codes; the zero value matches every code.
type codeSet struct {
	set  bool
	bits [10]uint64 // codes 0..639
}

func (c *codeSet) add(code int) { c.bits[code/64] |= 1 << (code % 64) }

// matches reports whether code is in the set (always, when unset).
func (c *codeSet) matches(code int) bool {
	if !c.set {
		return true
	}
	if code < 0 || code >= 640 {
		return false
	}
	return c.bits[code/64]&(1<<(code%64)) != 0
}

// parseCodes parses Dapr's "429,500-504" within [lo, hi].
func parseCodes(s string, lo, hi int) (codeSet, error) {
	var c codeSet
	if strings.TrimSpace(s) == "" {
		return c, nil
	}
	c.set = true
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		a, b, isRange := strings.Cut(part, "-")
		from, err1 := strconv.Atoi(strings.TrimSpace(a))
		to := from
		var err2 error
		if isRange {
			to, err2 = strconv.Atoi(strings.TrimSpace(b))
		}
		if err1 != nil || err2 != nil {
			return c, fmt.Errorf("%q is not a code or a range of codes (e.g. 429,500-504)", part)
		}
		if from < lo || from > hi || to < lo || to > hi {
			return c, fmt.Errorf("%q is outside %d-%d", part, lo, hi)
		}
		if to < from {
			return c, fmt.Errorf("range %q is empty", part)
		}
		for code := from; code <= to; code++ {
			c.add(code)
		}
	}
	return c, nil
}

// compileDoc validates every field of d and builds its policies. It does
// not resolve target references (New does, across documents).
func compileDoc(d *Document) (*compiledDoc, error) {
	doc := d.Metadata.Name
	c := &compiledDoc{
		name:       doc,
		scopes:     d.Scopes,
		timeouts:   map[string]time.Duration{},
		retries:    map[string]*retryPolicy{},
		breakers:   map[string]*breakerPolicy{},
		bulkheads:  map[string]*bulkheadPolicy{},
		rateLimits: map[string]*rateLimitPolicy{},
		adaptive:   map[string]*adaptivePolicy{},
		drops:      map[string]*dropPolicy{},
		apps:       d.Spec.Targets.Apps,
		components: d.Spec.Targets.Components,
		actors:     d.Spec.Targets.Actors,
	}
	p := d.Spec.Policies
	for _, name := range sortedKeys(p.Timeouts) {
		path := "spec.policies.timeouts." + name
		v, err := p.Timeouts[name].parse()
		if err != nil {
			return nil, fieldErr(doc, path, "%v", err)
		}
		if v <= 0 {
			return nil, fieldErr(doc, path, "must be > 0, got %s", v)
		}
		c.timeouts[name] = v
	}
	for _, name := range sortedKeys(p.Retries) {
		r, err := compileRetry(doc, "spec.policies.retries."+name, name, p.Retries[name])
		if err != nil {
			return nil, err
		}
		c.retries[name] = r
	}
	for _, name := range sortedKeys(p.CircuitBreakers) {
		b, err := compileBreaker(doc, "spec.policies.circuitBreakers."+name, name, p.CircuitBreakers[name])
		if err != nil {
			return nil, err
		}
		c.breakers[name] = b
	}
	for _, name := range sortedKeys(p.Bulkheads) {
		path, s := "spec.policies.bulkheads."+name, p.Bulkheads[name]
		if s.MaxConcurrent < 1 {
			return nil, fieldErr(doc, path+".maxConcurrent", "must be ≥ 1, got %d", s.MaxConcurrent)
		}
		w, err := optDuration(doc, path+".maxWait", s.MaxWait, 0)
		if err != nil {
			return nil, err
		}
		c.bulkheads[name] = &bulkheadPolicy{name: name, spec: s, maxConcurrent: s.MaxConcurrent, maxWait: w}
	}
	for _, name := range sortedKeys(p.RateLimits) {
		path, s := "spec.policies.rateLimits."+name, p.RateLimits[name]
		if !(s.Rate > 0) || math.IsInf(s.Rate, 0) {
			return nil, fieldErr(doc, path+".rate", "must be > 0 calls per second, got %g", s.Rate)
		}
		if s.Burst < 0 {
			return nil, fieldErr(doc, path+".burst", "must be ≥ 0, got %d", s.Burst)
		}
		if s.Per != "" && s.Per != "method" {
			return nil, fieldErr(doc, path+".per", `must be "method" or unset, got %q`, s.Per)
		}
		burst := s.Burst
		if burst == 0 {
			burst = int(math.Max(1, math.Min(math.Ceil(s.Rate), math.MaxInt32)))
		}
		c.rateLimits[name] = &rateLimitPolicy{name: name, spec: s, rate: s.Rate, burst: burst, perMethod: s.Per == "method"}
	}
	for _, name := range sortedKeys(p.AdaptiveConcurrency) {
		a, err := compileAdaptive(doc, "spec.policies.adaptiveConcurrency."+name, name, p.AdaptiveConcurrency[name])
		if err != nil {
			return nil, err
		}
		c.adaptive[name] = a
	}
	for _, name := range sortedKeys(p.OverloadDrop) {
		path, s := "spec.policies.overloadDrop."+name, p.OverloadDrop[name]
		if s.LowWatermark < 0 {
			return nil, fieldErr(doc, path+".lowWatermark", "must be ≥ 0, got %d", s.LowWatermark)
		}
		if s.HighWatermark <= s.LowWatermark {
			return nil, fieldErr(doc, path+".highWatermark", "must be > lowWatermark (%d), got %d", s.LowWatermark, s.HighWatermark)
		}
		c.drops[name] = &dropPolicy{name: name, spec: s, low: s.LowWatermark, high: s.HighWatermark}
	}
	for _, id := range sortedKeys(c.apps) {
		if n := c.apps[id].CircuitBreakerCacheSize; n < 0 {
			return nil, fieldErr(doc, "spec.targets.apps."+id+".circuitBreakerCacheSize", "must be ≥ 0, got %d", n)
		}
	}
	for _, typ := range sortedKeys(c.actors) {
		a, path := c.actors[typ], "spec.targets.actors."+typ
		if a.CircuitBreakerCacheSize < 0 {
			return nil, fieldErr(doc, path+".circuitBreakerCacheSize", "must be ≥ 0, got %d", a.CircuitBreakerCacheSize)
		}
		switch a.CircuitBreakerScope {
		case "type", "id", "both":
		case "":
			if a.CircuitBreaker != "" {
				return nil, fieldErr(doc, path+".circuitBreakerScope", "must be set (type, id or both) when circuitBreaker is")
			}
		default:
			return nil, fieldErr(doc, path+".circuitBreakerScope", "must be type, id or both, got %q", a.CircuitBreakerScope)
		}
	}
	return c, nil
}

func optDuration(doc, path string, d Duration, def time.Duration) (time.Duration, error) {
	if d == "" {
		return def, nil
	}
	v, err := d.parse()
	if err != nil {
		return 0, fieldErr(doc, path, "%v", err)
	}
	if v < 0 {
		return 0, fieldErr(doc, path, "must be ≥ 0, got %s", v)
	}
	return v, nil
}

func compileRetry(doc, path, name string, s RetrySpec) (*retryPolicy, error) {
	r := &retryPolicy{name: name, maxRetries: -1, randomization: defaultRandomization, multiplier: defaultMultiplier}
	switch strings.ToLower(s.Policy) {
	case "", "constant":
	case "exponential":
		r.exponential = true
	default:
		return nil, fieldErr(doc, path+".policy", "must be constant or exponential, got %q", s.Policy)
	}
	var err error
	if r.duration, err = optDuration(doc, path+".duration", s.Duration, defaultRetryDuration); err != nil {
		return nil, err
	}
	if r.initial, err = optDuration(doc, path+".initialInterval", s.InitialInterval, defaultInitialInterval); err != nil {
		return nil, err
	}
	if r.initial == 0 {
		return nil, fieldErr(doc, path+".initialInterval", "must be > 0")
	}
	if r.maxInterval, err = optDuration(doc, path+".maxInterval", s.MaxInterval, defaultMaxInterval); err != nil {
		return nil, err
	}
	if r.maxInterval == 0 {
		return nil, fieldErr(doc, path+".maxInterval", "must be > 0")
	}
	if r.maxElapsed, err = optDuration(doc, path+".maxElapsedTime", s.MaxElapsedTime, defaultMaxElapsedTime); err != nil {
		return nil, err
	}
	if f := s.RandomizationFactor; f != nil {
		if !(*f >= 0 && *f <= 1) {
			return nil, fieldErr(doc, path+".randomizationFactor", "must be within [0, 1], got %g", *f)
		}
		r.randomization = *f
	}
	if m := s.Multiplier; m != nil {
		if !(*m >= 1) || math.IsInf(*m, 0) {
			return nil, fieldErr(doc, path+".multiplier", "must be ≥ 1, got %g", *m)
		}
		r.multiplier = *m
	}
	if n := s.MaxRetries; n != nil {
		if *n < -1 {
			return nil, fieldErr(doc, path+".maxRetries", "must be ≥ -1, got %d", *n)
		}
		r.maxRetries = *n
	}
	if m := s.Matching; m != nil {
		if r.http, err = parseCodes(m.HTTPStatusCodes, 100, 599); err != nil {
			return nil, fieldErr(doc, path+".matching.httpStatusCodes", "%v", err)
		}
		if r.grpc, err = parseCodes(m.GRPCStatusCodes, 0, 16); err != nil {
			return nil, fieldErr(doc, path+".matching.gRPCStatusCodes", "%v", err)
		}
	}
	return r, nil
}

func compileBreaker(doc, path, name string, s CircuitBreakerSpec) (*breakerPolicy, error) {
	b := &breakerPolicy{name: name, spec: s, maxRequests: 1}
	if s.MaxRequests < 0 || s.MaxRequests > math.MaxInt32 {
		return nil, fieldErr(doc, path+".maxRequests", "must be within [0, %d], got %d", math.MaxInt32, s.MaxRequests)
	}
	if s.MaxRequests > 0 {
		b.maxRequests = uint32(s.MaxRequests)
	}
	var err error
	if b.interval, err = optDuration(doc, path+".interval", s.Interval, 0); err != nil {
		return nil, err
	}
	if b.timeout, err = optDuration(doc, path+".timeout", s.Timeout, defaultBreakerTimeout); err != nil {
		return nil, err
	}
	if b.timeout == 0 {
		b.timeout = defaultBreakerTimeout
	}
	if b.trip, err = compileTrip(s.Trip); err != nil {
		return nil, fieldErr(doc, path+".trip", "%v", err)
	}
	return b, nil
}

func compileAdaptive(doc, path, name string, s AdaptiveConcurrencySpec) (*adaptivePolicy, error) {
	a := &adaptivePolicy{
		name: name, spec: s,
		minLimit: defaultAdaptiveMin, maxLimit: defaultAdaptiveMax,
		tolerance: defaultAdaptiveTolerance, smoothing: defaultAdaptiveSmoothing,
	}
	if s.MinLimit < 0 {
		return nil, fieldErr(doc, path+".minLimit", "must be ≥ 1, got %d", s.MinLimit)
	}
	if s.MinLimit > 0 {
		a.minLimit = s.MinLimit
	}
	if s.MaxLimit != 0 {
		a.maxLimit = s.MaxLimit
	}
	if a.maxLimit < a.minLimit {
		return nil, fieldErr(doc, path+".maxLimit", "must be ≥ minLimit (%d), got %d", a.minLimit, a.maxLimit)
	}
	a.initialLimit = min(max(defaultAdaptiveInitial, a.minLimit), a.maxLimit)
	if s.InitialLimit != 0 {
		if s.InitialLimit < a.minLimit || s.InitialLimit > a.maxLimit {
			return nil, fieldErr(doc, path+".initialLimit", "must be within [minLimit, maxLimit] = [%d, %d], got %d", a.minLimit, a.maxLimit, s.InitialLimit)
		}
		a.initialLimit = s.InitialLimit
	}
	if s.Tolerance != 0 {
		if !(s.Tolerance >= 1) || math.IsInf(s.Tolerance, 0) {
			return nil, fieldErr(doc, path+".tolerance", "must be ≥ 1, got %g", s.Tolerance)
		}
		a.tolerance = s.Tolerance
	}
	if s.Smoothing != 0 {
		if !(s.Smoothing > 0 && s.Smoothing <= 1) {
			return nil, fieldErr(doc, path+".smoothing", "must be within (0, 1], got %g", s.Smoothing)
		}
		a.smoothing = s.Smoothing
	}
	var err error
	if a.window, err = optDuration(doc, path+".sampleWindow", s.SampleWindow, defaultAdaptiveWindow); err != nil {
		return nil, err
	}
	if a.window == 0 {
		return nil, fieldErr(doc, path+".sampleWindow", "must be > 0")
	}
	if a.minRTTWindow, err = optDuration(doc, path+".minRTTWindow", s.MinRTTWindow, defaultAdaptiveMinRTTEpoch); err != nil {
		return nil, err
	}
	if a.minRTTWindow < a.window {
		return nil, fieldErr(doc, path+".minRTTWindow", "must be ≥ sampleWindow (%s), got %s", a.window, a.minRTTWindow)
	}
	return a, nil
}
