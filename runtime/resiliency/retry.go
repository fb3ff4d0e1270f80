package resiliency

import (
	"errors"
	"math"
	"time"

	"google.golang.org/grpc/status"
)

// HTTPStatusCoder is implemented by errors that carry the HTTP status of a
// failed call, so that a retry policy's matching.httpStatusCodes applies.
// gRPC errors are recognised by their GRPCStatus method (grpc/status).
type HTTPStatusCoder interface {
	HTTPStatusCode() int
}

type grpcStatuser interface {
	GRPCStatus() *status.Status
}

// wait returns the pause before retry number n (1 for the first retry)
// and whether to retry at all. elapsed is the time since the first
// attempt started; rnd is uniform in [0, 1) and spreads exponential waits.
// It mirrors cenkalti/backoff as dapr/kit/retry configures it.
func (r *retryPolicy) wait(n int, elapsed time.Duration, rnd float64) (time.Duration, bool) {
	if r.maxRetries >= 0 && n > r.maxRetries {
		return 0, false
	}
	if !r.exponential {
		return r.duration, true
	}
	cur := float64(r.initial) * math.Pow(r.multiplier, float64(n-1))
	if cur > float64(r.maxInterval) {
		cur = float64(r.maxInterval)
	}
	delta := r.randomization * cur
	d := time.Duration(cur - delta + rnd*(2*delta))
	if r.maxElapsed > 0 && elapsed+d > r.maxElapsed {
		return 0, false
	}
	return d, true
}

// matches applies matching.httpStatusCodes / gRPCStatusCodes: errors
// with a status outside the lists are not retried; others are.
func (r *retryPolicy) matches(err error) bool {
	if !r.http.set && !r.grpc.set {
		return true
	}
	var h HTTPStatusCoder
	if errors.As(err, &h) {
		return r.http.matches(h.HTTPStatusCode())
	}
	var g grpcStatuser
	if errors.As(err, &g) {
		if s := g.GRPCStatus(); s != nil {
			return r.grpc.matches(int(s.Code()))
		}
	}
	return true
}
