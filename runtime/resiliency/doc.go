// Package resiliency decodes Dapr Resiliency documents and runs calls under
// their policies: timeouts, retries and circuit breakers as in Dapr 1.14,
// and mecha's extensions for overload protection (bulkheads, rate limits,
// adaptive concurrency, random early drop).
//
// # Documents
//
// Decode takes one dapr.io/v1alpha1 Resiliency as JSON (the loader turns
// YAML into JSON with components.SplitDocuments). Dapr's fields:
//
//	spec.policies.timeouts.<name>: 5s
//	spec.policies.retries.<name>: {policy: constant|exponential, duration,
//	    maxInterval, maxRetries (-1 = until success), matching:
//	    {httpStatusCodes: "429,500-504", gRPCStatusCodes: "14"}}
//	spec.policies.circuitBreakers.<name>: {maxRequests, interval, timeout,
//	    trip: "consecutiveFailures >= 5"}
//	spec.targets.apps.<app-id>: {timeout, retry, circuitBreaker,
//	    circuitBreakerCacheSize}
//	spec.targets.components.<name>: {inbound: {...}, outbound: {...}}
//	spec.targets.actors.<type>: decoded and validated, not applied yet
//
// Retries also take dapr/kit's initialInterval, randomizationFactor,
// multiplier and maxElapsedTime. Durations are Go durations or integers of
// milliseconds. Policies named Default<Level><Kind>Policy (DefaultAppRetryPolicy,
// DefaultRetryPolicy, DefaultStatestoreComponentOutboundTimeoutPolicy, ...)
// apply to targets without an entry of their own, as in Dapr.
//
// mecha's extensions live beside them and are referenced from targets with
// the fields bulkhead, rateLimit, adaptiveConcurrency and overloadDrop:
//
//	spec.policies.bulkheads.<name>: {maxConcurrent: 64, maxWait: 50ms}
//	spec.policies.rateLimits.<name>: {rate: 100, burst: 20, per: method}
//	spec.policies.adaptiveConcurrency.<name>: {minLimit, maxLimit,
//	    initialLimit, tolerance, smoothing, sampleWindow, minRTTWindow}
//	spec.policies.overloadDrop.<name>: {lowWatermark: 200, highWatermark: 400}
//
// Every validation error is a *FieldError naming the document and the
// field, e.g. `resiliency "r1": spec.policies.retries.fast.maxRetries: must
// be ≥ -1, got -3`; New reports a target that names an unknown policy with
// the target's field and the policy's name. docs/resiliency.md is the
// user's reference.
//
// # Running calls
//
// New (or a Store, for hot reload) resolves documents into Policies;
// Policies.ForApp(appID) returns the app's Runner, cached, and
// Runner.DoCall runs a call through, from the outside in:
//
//	rate limit → overload drop → bulkhead → adaptive limit → retries
//	each attempt: [pick instance] → circuit breaker → timeout → op
//
// so that cheap refusals come first, a call holds one bulkhead slot and one
// adaptive slot across its retries, and each attempt is judged by the
// breaker of the instance it went to. For service invocation, the caller
// passes Call.Pick (its load balancer) and the breakers are per instance,
// bounded by circuitBreakerCacheSize, as Dapr keys them per endpoint.
// Refusals are *PolicyError values wrapping ErrRateLimited, ErrOverloaded,
// ErrBulkheadFull, ErrConcurrencyLimit, ErrCircuitOpen or ErrTimeout. Mark
// an error with Permanent, or set Call.Retriable (NoRetry for calls that are
// not idempotent), to stop retries.
//
// # Time and state
//
// Each stateful policy is a plain state machine fed the time (breaker,
// adaptive limiter, token buckets) and all waiting goes through the
// Options.Clock, so tests step them with a manual clock. Timeouts do not
// use context.WithTimeout, whose per-attempt runtime timer costs more than
// all the other policies together: a Runner's attempts share one timer
// over a FIFO of deadlines (its timeout is constant, so they arrive in
// order), and each attempt's context costs one allocation. Store.Replace
// swaps Policies atomically; a target keeps the state of every policy whose
// definition did not change (open breakers stay open, bulkhead slots stay
// counted), whichever Policies builds its Runner and whenever, because the
// Store keeps that state by target and definition; it starts afresh for
// the ones that did.
package resiliency
