package resiliency

import (
	"context"
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every error about a Resiliency document that
// cannot be used: bad JSON, a malformed field, a reference to an unknown
// policy. The concrete error is a *FieldError naming the field.
var ErrInvalid = errors.New("invalid resiliency")

// Sentinels for the policies that refuse a call. Each is wrapped by a
// *PolicyError naming the target and the policy, so callers test with
// errors.Is and map to API errors at the edge.
var (
	// ErrRateLimited: the target's (or method's) token bucket is empty.
	ErrRateLimited = errors.New("rate limited")
	// ErrOverloaded: random early drop discarded the call because too
	// many calls to the target are in flight.
	ErrOverloaded = errors.New("overloaded: call dropped")
	// ErrBulkheadFull: the target's concurrent calls are at the
	// bulkhead's maximum and no slot freed within maxWait.
	ErrBulkheadFull = errors.New("bulkhead full")
	// ErrConcurrencyLimit: the adaptive concurrency limit is reached.
	ErrConcurrencyLimit = errors.New("adaptive concurrency limit reached")
	// ErrCircuitOpen: the circuit breaker is open, or half-open with all
	// its trial calls in use.
	ErrCircuitOpen = errors.New("circuit breaker open")
	// ErrTimeout: an attempt ran longer than the target's timeout. Errors
	// wrapping it also match context.DeadlineExceeded.
	ErrTimeout = errors.New("timeout")
)

// FieldError is a validation error: which document and which field (a
// dotted path such as spec.policies.retries.fast.maxRetries) is wrong.
type FieldError struct {
	// Doc is the document's metadata.name ("" when it has none yet).
	Doc string
	// Field is the dotted path of the bad field.
	Field string
	// Msg says what is wrong with it.
	Msg string
}

// Error renders `resiliency "r1": spec.policies.x: msg`.
func (e *FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("resiliency %q: %s", e.Doc, e.Msg)
	}
	return fmt.Sprintf("resiliency %q: %s: %s", e.Doc, e.Field, e.Msg)
}

// Is makes every FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func fieldErr(doc, field, format string, args ...any) *FieldError {
	return &FieldError{Doc: doc, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// PolicyError is returned when a policy refuses or cuts short a call. It
// unwraps to one of the sentinels (ErrRateLimited, ErrOverloaded, ...).
type PolicyError struct {
	// Target is what the call went to: `app "orders"`,
	// `component "store" outbound`.
	Target string
	// Policy is the policy's kind and name as in the document:
	// "bulkheads.small", "circuitBreakers.cb".
	Policy string
	// Instance is the breaker's instance key, when breakers are kept per
	// instance.
	Instance string
	// Detail adds the state that made the policy refuse, if any.
	Detail string
	// Err is the sentinel.
	Err error
}

// Error renders `app "orders": bulkheads.small: bulkhead full`.
func (e *PolicyError) Error() string {
	s := e.Target + ": " + e.Policy
	if e.Instance != "" {
		s += " (instance " + e.Instance + ")"
	}
	s += ": " + e.Err.Error()
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Unwrap returns the sentinel.
func (e *PolicyError) Unwrap() error { return e.Err }

// Is lets a timeout also match context.DeadlineExceeded, as Dapr's
// timeouts do.
func (e *PolicyError) Is(target error) bool {
	return e.Err == ErrTimeout && target == context.DeadlineExceeded
}

type permanentError struct{ err error }

// Error is the wrapped error's message.
func (p *permanentError) Error() string { return p.err.Error() }

// Unwrap returns the wrapped error.
func (p *permanentError) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying (a non-idempotent call that
// may have had effects, a 4xx answer). Runner.Do stops retrying and
// returns err itself, unwrapped. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// NoRetry is a Call.Retriable that never retries: use it for calls that
// are not idempotent.
func NoRetry(error) bool { return false }
