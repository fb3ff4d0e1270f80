package resiliency

import (
	"context"
	"testing"
)

const allPolicies = `  policies:
    timeouts: {t: 10s}
    retries: {r: {policy: exponential, maxRetries: 3}}
    circuitBreakers: {cb: {trip: consecutiveFailures >= 5}}
    bulkheads: {bh: {maxConcurrent: 1000, maxWait: 10ms}}
    rateLimits: {rl: {rate: 1e12, burst: 1000000, per: method}}
    adaptiveConcurrency: {ac: {initialLimit: 1000, maxLimit: 1000}}
    overloadDrop: {red: {lowWatermark: 1000, highWatermark: 2000}}
  targets:
    apps:
      orders: {timeout: t, retry: r, circuitBreaker: cb, bulkhead: bh, rateLimit: rl, adaptiveConcurrency: ac, overloadDrop: red}
`

func nop(context.Context) error { return nil }

// BenchmarkDoNoPolicies is the cost of going through a Runner for a target
// without policies (lookup included).
func BenchmarkDoNoPolicies(b *testing.B) {
	p, err := New(Options{}, mustYAML(b, head(allPolicies)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.ForApp("other").Do(ctx, nop); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDoAllPolicies is the overhead of every policy on a call that
// succeeds at once, on the system clock: rate limit per method, overload
// drop, bulkhead, adaptive limit, retry, per-instance breaker, timeout.
func BenchmarkDoAllPolicies(b *testing.B) {
	p, err := New(Options{}, mustYAML(b, head(allPolicies)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	c := Call{Method: "GetOrder", Instance: "10.0.0.7:50002"}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.ForApp("orders").DoCall(ctx, c, nop); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDoAllPoliciesParallel is the same under contention from every
// core on one target.
func BenchmarkDoAllPoliciesParallel(b *testing.B) {
	p, err := New(Options{}, mustYAML(b, head(allPolicies)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	c := Call{Method: "GetOrder", Instance: "10.0.0.7:50002"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := p.ForApp("orders").DoCall(ctx, c, nop); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDoAllButTimeout shows what the timeout (a context with a
// timer per attempt) costs of the total.
func BenchmarkDoAllButTimeout(b *testing.B) {
	p, err := New(Options{}, mustYAML(b, head(allPolicies[:len(allPolicies)-1]+"\n      nt: {retry: r, circuitBreaker: cb, bulkhead: bh, rateLimit: rl, adaptiveConcurrency: ac, overloadDrop: red}\n")))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	c := Call{Method: "GetOrder", Instance: "10.0.0.7:50002"}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.ForApp("nt").DoCall(ctx, c, nop); err != nil {
			b.Fatal(err)
		}
	}
}
