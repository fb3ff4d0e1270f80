// Package invoke routes service invocations to their target app: the
// runtime's own app (Local), or an app on another runtime found in the
// gossip catalog (Cluster), reached on that runtime's internal port.
package invoke

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/balance"
	"mecha/runtime/resiliency"
)

// ErrAppNotFound means no runtime hosts the requested app-id.
var ErrAppNotFound = errors.New("app not found")

// ErrNoAppChannel means the target is local but the runtime has no app
// channel (no --app-port).
var ErrNoAppChannel = errors.New("app channel is not initialized")

// Target is where an invocation goes.
type Target struct {
	AppID string
	// Channel reaches the app. For a local HTTP app it is an
	// *appchannel.HTTP, which the HTTP API proxies to without copying.
	Channel appchannel.Channel
	// Remote is set when Channel reaches another runtime's internal port
	// rather than an app.
	Remote bool
	// Done, when set, takes the call's outcome and latency, for the load
	// balancer that picked the target; call it once.
	Done balance.Done
}

// Finish reports the call's outcome to the balancer, if any.
func (t Target) Finish(err error, latency time.Duration) {
	if t.Done != nil {
		t.Done(err, latency)
	}
}

// Resolver finds the target of an app-id.
type Resolver interface {
	Resolve(ctx context.Context, appID string) (Target, error)
}

// Local resolves the runtime's own app-id (optionally suffixed with a
// namespace, "app.default") to its app channel.
type Local struct {
	AppID   string
	channel atomic.Pointer[appchannel.Channel]
}

// SetChannel installs the app channel once the app is known to be up.
func (l *Local) SetChannel(c appchannel.Channel) { l.channel.Store(&c) }

// Channel returns the app channel, or nil before it is set.
func (l *Local) Channel() appchannel.Channel {
	if p := l.channel.Load(); p != nil {
		return *p
	}
	return nil
}

// IsSelf reports whether appID names this runtime's app.
func (l *Local) IsSelf(appID string) bool {
	if appID == l.AppID {
		return true
	}
	if i := strings.LastIndexByte(appID, '.'); i > 0 {
		return appID[:i] == l.AppID
	}
	return false
}

// Resolve implements Resolver.
func (l *Local) Resolve(_ context.Context, appID string) (Target, error) {
	if !l.IsSelf(appID) {
		return Target{}, fmt.Errorf("%w: %q (remote invocation needs cluster membership)", ErrAppNotFound, appID)
	}
	c := l.Channel()
	if c == nil {
		return Target{}, ErrNoAppChannel
	}
	return Target{AppID: l.AppID, Channel: c}, nil
}

// Invoker sends invocations to the target its Resolver picks.
type Invoker struct {
	Resolver Resolver
	// AppID is the calling app, named to a remote runtime.
	AppID string
	// Resiliency holds the policies calls run under; nil applies none.
	Resiliency *resiliency.Store
}

// Resolve finds the target and maps failures to API errors.
func (i *Invoker) Resolve(ctx context.Context, appID string) (Target, error) {
	if appID == "" {
		return Target{}, apierr.DirectInvokeNoAppID()
	}
	t, err := i.Resolver.Resolve(ctx, appID)
	if err != nil {
		if errors.Is(err, ErrNoAppChannel) {
			return Target{}, apierr.AppChannelNotFound()
		}
		return Target{}, apierr.DirectInvoke(appID, err)
	}
	return t, nil
}

// Invoke calls method on appID, under the target's resiliency policy
// when there is one (each attempt resolves the target again, so a retry
// can go to another instance; only idempotent verbs are retried). It
// returns the answer and the target that gave it.
func (i *Invoker) Invoke(ctx context.Context, appID string, req *appchannel.InvokeRequest) (*appchannel.InvokeResponse, Target, error) {
	var runner *resiliency.Runner
	if i.Resiliency != nil {
		runner = i.Resiliency.ForApp(appID)
	}
	if runner == nil || runner.Passthrough() {
		return i.invoke(ctx, appID, req)
	}
	var resp *appchannel.InvokeResponse
	var target Target
	err := runner.DoCall(ctx, resiliency.Call{Method: req.Method, Retriable: func(error) bool { return Idempotent(req.Verb) }},
		func(actx context.Context) error {
			r, t, err := i.invoke(actx, appID, req)
			resp, target = r, t
			if err == nil && r.Status >= 500 {
				return StatusError(r.Status)
			}
			return err
		})
	var se StatusError
	if err != nil && resp != nil && errors.As(err, &se) {
		return resp, target, nil // the app's own 5xx answer, after the retries
	}
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) {
			return nil, target, err
		}
		return nil, target, apierr.DirectInvoke(appID, err)
	}
	return resp, target, nil
}

// StatusError is an app's 5xx answer: a failure for resiliency policies
// (Dapr retries them and counts them against circuit breakers).
type StatusError int

func (e StatusError) Error() string       { return fmt.Sprintf("the app answered %d", int(e)) }
func (e StatusError) HTTPStatusCode() int { return int(e) }

// Idempotent reports whether calls with verb may be sent again after a
// failure.
func Idempotent(v string) bool {
	switch strings.ToUpper(v) {
	case "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE":
		return true
	}
	return false
}

func (i *Invoker) invoke(ctx context.Context, appID string, req *appchannel.InvokeRequest) (*appchannel.InvokeResponse, Target, error) {
	t, err := i.Resolve(ctx, appID)
	if err != nil {
		return nil, t, err
	}
	if t.Remote {
		r := *req
		r.Headers = make([]appchannel.Header, 0, len(req.Headers)+2)
		for _, h := range req.Headers {
			switch strings.ToLower(h.Key) {
			case "dapr-caller-app-id", "dapr-callee-app-id", "dapr-api-token", "mecha-peer-token":
				continue // the runtime says who calls whom
			}
			r.Headers = append(r.Headers, h)
		}
		r.Headers = append(r.Headers, appchannel.Header{Key: "dapr-caller-app-id", Value: i.AppID}, appchannel.Header{Key: "dapr-callee-app-id", Value: t.AppID})
		req = &r
	}
	start := time.Now()
	resp, err := t.Channel.Invoke(ctx, req)
	if err == nil && resp.Status >= 500 {
		t.Finish(StatusError(resp.Status), time.Since(start))
	} else {
		t.Finish(err, time.Since(start))
	}
	if err != nil {
		return nil, t, apierr.DirectInvoke(appID, err)
	}
	return resp, t, nil
}
