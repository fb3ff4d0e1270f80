package resiliency

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// APIVersion and Kind identify a Resiliency document.
const (
	APIVersion = "dapr.io/v1alpha1"
	Kind       = "Resiliency"
)

// Document is a dapr.io/v1alpha1 Resiliency, plus mecha's extensions under
// spec.policies. Decode fills and validates it.
type Document struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
	// Scopes lists the app-ids that load the document; empty means all.
	Scopes []string `json:"scopes,omitempty"`

	// compiled is set by Decode so New does not compile twice.
	compiled *compiledDoc
}

// Metadata is the document's metadata block.
type Metadata struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	// Labels and Annotations are accepted, as in Kubernetes manifests,
	// and not used.
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Spec holds the named policies and the targets that use them.
type Spec struct {
	Policies PolicySpecs `json:"policies"`
	Targets  Targets     `json:"targets"`
}

// PolicySpecs are the named policy templates. Timeouts, Retries and
// CircuitBreakers are Dapr's; the rest are mecha extensions.
type PolicySpecs struct {
	Timeouts        map[string]Duration           `json:"timeouts,omitempty"`
	Retries         map[string]RetrySpec          `json:"retries,omitempty"`
	CircuitBreakers map[string]CircuitBreakerSpec `json:"circuitBreakers,omitempty"`

	Bulkheads           map[string]BulkheadSpec            `json:"bulkheads,omitempty"`
	RateLimits          map[string]RateLimitSpec           `json:"rateLimits,omitempty"`
	AdaptiveConcurrency map[string]AdaptiveConcurrencySpec `json:"adaptiveConcurrency,omitempty"`
	OverloadDrop        map[string]OverloadDropSpec        `json:"overloadDrop,omitempty"`
}

// Duration is a duration as written in the document: a Go duration string
// ("5s", "1m30s") or, as in Dapr, a bare integer of milliseconds (written
// either as a number or as a string).
type Duration string

// UnmarshalJSON accepts a string or a number.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*d = Duration(s)
		return nil
	}
	if string(b) == "null" {
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return &json.UnmarshalTypeError{Value: "non-duration", Type: durationType}
	}
	*d = Duration(n.String())
	return nil
}

var durationType = reflect.TypeOf(Duration(""))

// parse converts the document form; an integer means milliseconds.
func (d Duration) parse() (time.Duration, error) {
	s := strings.TrimSpace(string(d))
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		if i > math.MaxInt64/int64(time.Millisecond) || i < math.MinInt64/int64(time.Millisecond) {
			return 0, fmt.Errorf("%q is out of range", string(d))
		}
		return time.Duration(i) * time.Millisecond, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (use 500ms, 5s, 1m or an integer of milliseconds)", string(d))
	}
	return v, nil
}

// RetrySpec is a retry policy. Dapr documents policy, duration,
// maxInterval and maxRetries; initialInterval, randomizationFactor,
// multiplier and maxElapsedTime are the other fields of Dapr's retry
// configuration (dapr/kit/retry), accepted here with the same defaults.
type RetrySpec struct {
	// Policy is constant (default) or exponential.
	Policy string `json:"policy,omitempty"`
	// Duration is the constant policy's wait between attempts (5s).
	Duration Duration `json:"duration,omitempty"`
	// InitialInterval is the exponential policy's first wait (500ms).
	InitialInterval Duration `json:"initialInterval,omitempty"`
	// RandomizationFactor spreads each exponential wait by ±factor (0.5).
	RandomizationFactor *float64 `json:"randomizationFactor,omitempty"`
	// Multiplier grows the exponential wait per retry (1.5).
	Multiplier *float64 `json:"multiplier,omitempty"`
	// MaxInterval caps the exponential wait (60s).
	MaxInterval Duration `json:"maxInterval,omitempty"`
	// MaxElapsedTime stops exponential retries once this much time has
	// passed since the first attempt (15m; 0 = never).
	MaxElapsedTime Duration `json:"maxElapsedTime,omitempty"`
	// MaxRetries is the number of retries after the first attempt; -1
	// (the default) retries until the call succeeds or its context ends.
	MaxRetries *int `json:"maxRetries,omitempty"`
	// Matching restricts retries to some status codes.
	Matching *RetryMatching `json:"matching,omitempty"`
}

// RetryMatching lists the status codes worth a retry, as in Dapr: comma
// separated codes and ranges ("429,500-504"). An error carrying a status
// (see HTTPStatusCoder and gRPC status errors) outside the list is not
// retried; an empty list retries every status of that protocol; errors
// without a status are always retried.
type RetryMatching struct {
	HTTPStatusCodes string `json:"httpStatusCodes,omitempty"`
	GRPCStatusCodes string `json:"gRPCStatusCodes,omitempty"`
}

// CircuitBreakerSpec is a circuit breaker template (gobreaker semantics,
// as in Dapr). Breakers are instantiated per target, and for apps per
// instance.
type CircuitBreakerSpec struct {
	// MaxRequests is the number of trial calls let through while
	// half-open, and the successes needed to close again (0 means 1).
	MaxRequests int `json:"maxRequests,omitempty"`
	// Interval is the cyclic period of the closed state after which the
	// counts are cleared (0 = never).
	Interval Duration `json:"interval,omitempty"`
	// Timeout is how long the breaker stays open before turning
	// half-open (0 means 60s).
	Timeout Duration `json:"timeout,omitempty"`
	// Trip is a CEL expression over requests, totalSuccesses,
	// totalFailures, consecutiveSuccesses and consecutiveFailures,
	// evaluated after each failure in the closed state (default
	// consecutiveFailures > 5).
	Trip string `json:"trip,omitempty"`
}

// BulkheadSpec caps the concurrent calls to one target (mecha extension).
type BulkheadSpec struct {
	// MaxConcurrent is the number of calls in flight at once (≥ 1).
	MaxConcurrent int `json:"maxConcurrent"`
	// MaxWait is how long an extra caller waits for a slot before failing
	// with ErrBulkheadFull (0 = fail at once).
	MaxWait Duration `json:"maxWait,omitempty"`
}

// RateLimitSpec is a token bucket per target, or per method of the target
// (mecha extension). Calls over the limit fail at once with ErrRateLimited.
type RateLimitSpec struct {
	// Rate is the sustained calls per second (> 0).
	Rate float64 `json:"rate"`
	// Burst is the bucket size (default: Rate rounded up, at least 1).
	Burst int `json:"burst,omitempty"`
	// Per is "" (one bucket for the target) or "method".
	Per string `json:"per,omitempty"`
}

// AdaptiveConcurrencySpec is a gradient concurrency limit (mecha
// extension), in the style of Netflix's concurrency-limits Gradient and
// Envoy's adaptive concurrency filter: at the end of each sample window the
// limit is multiplied by gradient = clamp(tolerance × minRTT / sampleRTT,
// 0.5, 1) and raised by a queue allowance of √limit, then smoothed and
// clamped to [minLimit, maxLimit]; minRTT is the smallest window mean over
// the last one to two minRTTWindows.
type AdaptiveConcurrencySpec struct {
	MinLimit     int `json:"minLimit,omitempty"`     // default 1
	MaxLimit     int `json:"maxLimit,omitempty"`     // default 1000
	InitialLimit int `json:"initialLimit,omitempty"` // default 20, clamped to [min, max]
	// Tolerance is how much the RTT may grow over minRTT before the limit
	// shrinks (≥ 1, default 1.5).
	Tolerance float64 `json:"tolerance,omitempty"`
	// Smoothing weighs the new estimate against the old limit (in (0, 1],
	// default 0.2).
	Smoothing    float64  `json:"smoothing,omitempty"`
	SampleWindow Duration `json:"sampleWindow,omitempty"` // default 250ms
	MinRTTWindow Duration `json:"minRTTWindow,omitempty"` // default 30s
}

// OverloadDropSpec is random early drop on the target's in-flight calls
// (mecha extension): below lowWatermark every call passes; between the
// watermarks a call is dropped with a probability rising linearly from 0
// to 1; at highWatermark and above every new call is dropped.
type OverloadDropSpec struct {
	LowWatermark  int `json:"lowWatermark"`
	HighWatermark int `json:"highWatermark"`
}

// Targets map apps, actors and components to policy names.
type Targets struct {
	Apps       map[string]AppTarget       `json:"apps,omitempty"`
	Actors     map[string]ActorTarget     `json:"actors,omitempty"`
	Components map[string]ComponentTarget `json:"components,omitempty"`
}

// PolicyRefs names the policies a target uses; "" means none.
type PolicyRefs struct {
	Timeout        string `json:"timeout,omitempty"`
	Retry          string `json:"retry,omitempty"`
	CircuitBreaker string `json:"circuitBreaker,omitempty"`

	Bulkhead            string `json:"bulkhead,omitempty"`
	RateLimit           string `json:"rateLimit,omitempty"`
	AdaptiveConcurrency string `json:"adaptiveConcurrency,omitempty"`
	OverloadDrop        string `json:"overloadDrop,omitempty"`
}

// AppTarget is spec.targets.apps.<app-id>.
type AppTarget struct {
	PolicyRefs
	// CircuitBreakerCacheSize bounds the per-instance breakers kept for
	// the app (least recently used go first; default 100).
	CircuitBreakerCacheSize int `json:"circuitBreakerCacheSize,omitempty"`
}

// ComponentTarget is spec.targets.components.<name>.
type ComponentTarget struct {
	Inbound  PolicyRefs `json:"inbound,omitempty"`
	Outbound PolicyRefs `json:"outbound,omitempty"`
}

// ActorTarget is spec.targets.actors.<type>. It is decoded and validated;
// mecha has no actors yet, so nothing applies it.
type ActorTarget struct {
	Timeout                 string `json:"timeout,omitempty"`
	Retry                   string `json:"retry,omitempty"`
	CircuitBreaker          string `json:"circuitBreaker,omitempty"`
	CircuitBreakerScope     string `json:"circuitBreakerScope,omitempty"`
	CircuitBreakerCacheSize int    `json:"circuitBreakerCacheSize,omitempty"`
}

// Decode decodes and validates one Resiliency document given as JSON (the
// loader turns YAML into JSON with components.SplitDocuments). Unknown
// fields are errors. Every error is a *FieldError naming the document and
// the field; references to policies are checked by New, since Dapr lets
// one document use another's policies.
func Decode(raw []byte) (*Document, error) {
	// A lenient first pass finds the name for the error messages.
	var head struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(raw, &head)
	name := head.Metadata.Name

	var top struct {
		APIVersion string          `json:"apiVersion"`
		Kind       string          `json:"kind"`
		Metadata   Metadata        `json:"metadata"`
		Spec       json.RawMessage `json:"spec"`
		Scopes     []string        `json:"scopes"`
	}
	if err := strictDecode(raw, &top); err != nil {
		return nil, fieldFromJSON(name, "", err)
	}
	d := &Document{APIVersion: top.APIVersion, Kind: top.Kind, Metadata: top.Metadata, Scopes: top.Scopes}
	switch {
	case d.APIVersion != APIVersion:
		return nil, fieldErr(name, "apiVersion", "must be %s, got %q", APIVersion, d.APIVersion)
	case d.Kind != Kind:
		return nil, fieldErr(name, "kind", "must be %s, got %q", Kind, d.Kind)
	case d.Metadata.Name == "":
		return nil, fieldErr(name, "metadata.name", "must be set")
	}
	if err := decodeSpec(name, top.Spec, &d.Spec); err != nil {
		return nil, err
	}
	c, err := compileDoc(d)
	if err != nil {
		return nil, err
	}
	d.compiled = c
	return d, nil
}

func decodeSpec(doc string, raw json.RawMessage, s *Spec) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var spec struct {
		Policies json.RawMessage `json:"policies"`
		Targets  json.RawMessage `json:"targets"`
	}
	if err := strictDecode(raw, &spec); err != nil {
		return fieldFromJSON(doc, "spec", err)
	}
	if len(spec.Policies) > 0 && string(spec.Policies) != "null" {
		var kinds struct {
			Timeouts            map[string]json.RawMessage `json:"timeouts"`
			Retries             map[string]json.RawMessage `json:"retries"`
			CircuitBreakers     map[string]json.RawMessage `json:"circuitBreakers"`
			Bulkheads           map[string]json.RawMessage `json:"bulkheads"`
			RateLimits          map[string]json.RawMessage `json:"rateLimits"`
			AdaptiveConcurrency map[string]json.RawMessage `json:"adaptiveConcurrency"`
			OverloadDrop        map[string]json.RawMessage `json:"overloadDrop"`
		}
		if err := strictDecode(spec.Policies, &kinds); err != nil {
			return fieldFromJSON(doc, "spec.policies", err)
		}
		p := &s.Policies
		var err error
		if p.Timeouts, err = decodeEntries[Duration](doc, "spec.policies.timeouts", kinds.Timeouts); err != nil {
			return err
		}
		if p.Retries, err = decodeEntries[RetrySpec](doc, "spec.policies.retries", kinds.Retries); err != nil {
			return err
		}
		if p.CircuitBreakers, err = decodeEntries[CircuitBreakerSpec](doc, "spec.policies.circuitBreakers", kinds.CircuitBreakers); err != nil {
			return err
		}
		if p.Bulkheads, err = decodeEntries[BulkheadSpec](doc, "spec.policies.bulkheads", kinds.Bulkheads); err != nil {
			return err
		}
		if p.RateLimits, err = decodeEntries[RateLimitSpec](doc, "spec.policies.rateLimits", kinds.RateLimits); err != nil {
			return err
		}
		if p.AdaptiveConcurrency, err = decodeEntries[AdaptiveConcurrencySpec](doc, "spec.policies.adaptiveConcurrency", kinds.AdaptiveConcurrency); err != nil {
			return err
		}
		if p.OverloadDrop, err = decodeEntries[OverloadDropSpec](doc, "spec.policies.overloadDrop", kinds.OverloadDrop); err != nil {
			return err
		}
	}
	if len(spec.Targets) > 0 && string(spec.Targets) != "null" {
		var kinds struct {
			Apps       map[string]json.RawMessage `json:"apps"`
			Actors     map[string]json.RawMessage `json:"actors"`
			Components map[string]json.RawMessage `json:"components"`
		}
		if err := strictDecode(spec.Targets, &kinds); err != nil {
			return fieldFromJSON(doc, "spec.targets", err)
		}
		t := &s.Targets
		var err error
		if t.Apps, err = decodeEntries[AppTarget](doc, "spec.targets.apps", kinds.Apps); err != nil {
			return err
		}
		if t.Actors, err = decodeEntries[ActorTarget](doc, "spec.targets.actors", kinds.Actors); err != nil {
			return err
		}
		if t.Components, err = decodeEntries[ComponentTarget](doc, "spec.targets.components", kinds.Components); err != nil {
			return err
		}
	}
	return nil
}

// decodeEntries decodes each entry of a name → spec map on its own, so an
// error names the entry.
func decodeEntries[T any](doc, path string, raw map[string]json.RawMessage) (map[string]T, error) {
	if raw == nil {
		return nil, nil
	}
	out := make(map[string]T, len(raw))
	for _, name := range sortedKeys(raw) {
		var v T
		if err := strictDecode(raw[name], &v); err != nil {
			return nil, fieldFromJSON(doc, path+"."+name, err)
		}
		out[name] = v
	}
	return out, nil
}

func strictDecode(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the document")
	}
	return nil
}

// fieldFromJSON turns encoding/json's errors into FieldErrors with the
// YAML path.
func fieldFromJSON(doc, path string, err error) *FieldError {
	join := func(a, b string) string {
		switch {
		case a == "":
			return b
		case b == "":
			return a
		}
		return a + "." + b
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fieldErr(doc, join(path, te.Field), "expected %s, got %s", describeType(te.Type), te.Value)
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return fieldErr(doc, path, "unknown field %s", f)
	}
	if path == "" {
		return fieldErr(doc, "", "not a valid JSON document: %s", strings.TrimPrefix(msg, "json: "))
	}
	return fieldErr(doc, path, "%s", strings.TrimPrefix(msg, "json: "))
}

// describeType names what a field expects, in YAML terms.
func describeType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	if t == durationType {
		return "a duration"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "a boolean"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return t.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
