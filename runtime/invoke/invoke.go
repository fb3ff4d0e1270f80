// Package invoke routes service invocations to their target app: the
// runtime's own app (Local), or an app on another runtime found in the
// gossip catalog (Cluster), reached on that runtime's internal port.
package invoke

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"

	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/balance"
	"mecha/runtime/resiliency"
)

// ErrAppNotFound means no runtime hosts the requested app-id.
var ErrAppNotFound = errors.New("app not found")

// ErrInstanceNotFound means the call named one instance of the app
// (HeaderInstance) and no runtime hosts the app as that instance.
var ErrInstanceNotFound = errors.New("instance not found")

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
	// Instance is set when Channel reaches the internal port of the
	// runtime of the instance a call named (not a gateway on the way).
	Instance bool
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
		if errors.Is(err, ErrInstanceNotFound) {
			return Target{}, apierr.InstanceNotFound(appID, InstanceOf(ctx), err)
		}
		return Target{}, apierr.DirectInvoke(appID, err)
	}
	return t, nil
}

// Call is one service invocation as the pipeline sees it; the edges
// (HTTP API, gRPC API, gRPC proxying, the internal port) build it from
// their requests.
type Call struct {
	// AppID is the callee as the caller named it ("app" or
	// "app.namespace").
	AppID string
	// Method is the app's method (its path), for per-method policies.
	Method string
	// Verb is the HTTP verb; only idempotent verbs are retried.
	Verb string
	// Once marks a call that can be sent only once (its body streams,
	// or it is a gRPC stream): it is never sent again.
	Once bool
	// Header reads a request header, for a rendezvous balancer's key;
	// nil reads none.
	Header func(name string) string
	// Instance, when set, names the one instance of the app the call
	// must reach (HeaderInstance): no balancing, no retry elsewhere, and
	// ErrInstanceNotFound when no runtime hosts the app as it.
	Instance string
}

type instanceKey struct{}

// WithInstance gives the resolvers the instance a call names.
func WithInstance(ctx context.Context, instance string) context.Context {
	if instance == "" {
		return ctx
	}
	return context.WithValue(ctx, instanceKey{}, instance)
}

// InstanceOf is the instance the call names, "" for any instance.
func InstanceOf(ctx context.Context) string {
	s, _ := ctx.Value(instanceKey{}).(string)
	return s
}

// Send sends one attempt of a call to its target, the edge's way. It
// returns the status of the answer when the target answered (an app's
// 5xx is a failure for balancers, breakers and retries, and still the
// answer the caller gets), or an error when the call did not get an
// answer (ErrAppUnreachable when the target could not be reached at
// all).
type Send func(ctx context.Context, t Target) (status int, err error)

// retriesUnreachable is how many more times a call that found its
// remote runtime unreachable is sent, to other instances, when the
// callee has no resiliency policy.
const retriesUnreachable = 2

// Do runs one invocation through the pipeline: resolve the target,
// apply the callee's resiliency policy, send each attempt with the
// edge's send step, and report each attempt's outcome and latency to the
// balancer that picked its target.
//
// Under a resiliency policy each attempt resolves the target again, so
// a retry can go to another instance; only idempotent calls that are not
// Once are retried. Without a policy, an idempotent call that is not
// Once and whose remote runtime could not be reached (it died, perhaps
// with the call on its way) is sent again to another instance, twice at
// most; nothing else is retried.
//
// Do returns the last target and nil when the target answered, whatever
// the status (the edge passes the answer on); otherwise an *apierr.Error.
func (i *Invoker) Do(ctx context.Context, c *Call, send Send) (Target, error) {
	if c.Header != nil {
		ctx = WithHeaders(ctx, c.Header)
	}
	ctx = WithInstance(ctx, c.Instance)
	retriable := !c.Once && Idempotent(c.Verb)
	var runner *resiliency.Runner
	if i.Resiliency != nil {
		runner = i.Resiliency.ForApp(c.AppID)
	}
	if runner == nil || runner.Passthrough() {
		var t Target
		var err error
		for n := 0; ; n++ {
			if t, err = i.Resolve(ctx, c.AppID); err != nil {
				return t, err
			}
			_, err = attempt(ctx, t, send)
			if err == nil || !retriable || t.Instance || !t.Remote || n == retriesUnreachable || !errors.Is(err, appchannel.ErrAppUnreachable) || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			return t, c.failed(ctx, t, err)
		}
		return t, nil
	}
	var cur Target
	answered := false
	err := runner.DoCall(ctx, resiliency.Call{
		Method: c.Method,
		Pick: func(n int) (string, error) {
			if n > 1 || cur.Channel == nil {
				t, err := i.Resolve(ctx, c.AppID)
				if err != nil {
					return "", resiliency.Permanent(err)
				}
				cur = t
			}
			return cur.instance(), nil
		},
		Retriable: func(error) bool { return retriable },
		Skipped: func(_ string, err error) {
			// The breaker refused the instance: end the balancer's pick.
			cur.Finish(err, 0)
			cur.Done = nil
		},
	}, func(actx context.Context) error {
		status, err := attempt(actx, cur, send)
		cur.Done = nil // reported
		answered = err == nil
		if err == nil && status >= 500 {
			return StatusError(status)
		}
		return err
	})
	cur.Finish(err, 0) // a call refused before any attempt still ends the pick
	var se StatusError
	if err == nil || answered && errors.As(err, &se) {
		return cur, nil // the app's own answer, 5xx or not, after the retries
	}
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return cur, err
	}
	return cur, c.failed(ctx, cur, err)
}

// failed is the API error of a call to t that got no answer. A call for
// one instance whose own runtime refuses connections found the instance
// gone (its runtime died, and gossip has not said so yet): the caller
// gets the same answer as when the catalog no longer has it. A pooled
// connection that broke under the call says no more than that, so the
// runtime's port is tried once more to tell. Any other failure (a
// gateway on the way down, a timeout, an answer too large) says nothing
// of the instance and is a failed call. A call whose deadline passed is
// DeadlineExceeded over gRPC, whatever step noticed it first.
func (c *Call) failed(ctx context.Context, t Target, err error) *apierr.Error {
	if c.Instance != "" && t.Instance && ctx.Err() == nil && errors.Is(err, appchannel.ErrAppUnreachable) && refuses(t, err) {
		return apierr.InstanceNotFound(c.AppID, c.Instance, err)
	}
	e := apierr.DirectInvoke(c.AppID, err)
	// The send step may give up at the deadline a moment before the
	// context's timer marks it done: the clock decides.
	if dl, ok := ctx.Deadline(); errors.Is(ctx.Err(), context.DeadlineExceeded) || ok && !time.Now().Before(dl) {
		e.GRPC = codes.DeadlineExceeded
	}
	return e
}

// refuses reports whether t's runtime refused the connection of err, or
// refuses one now.
func refuses(t Target, err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	h, ok := t.Channel.(*appchannel.HTTP)
	if !ok {
		return false
	}
	conn, derr := net.DialTimeout("tcp", h.Addr(), time.Second)
	if derr == nil {
		conn.Close()
	}
	return errors.Is(derr, syscall.ECONNREFUSED)
}

// attempt sends one attempt and reports its outcome to the balancer.
func attempt(ctx context.Context, t Target, send Send) (int, error) {
	start := time.Now()
	status, err := send(ctx, t)
	if err == nil && status >= 500 {
		t.Finish(StatusError(status), time.Since(start))
	} else {
		t.Finish(err, time.Since(start))
	}
	return status, err
}

// instance names the target's instance for per-instance circuit
// breakers: the remote runtime's address, or the app itself.
func (t Target) instance() string {
	if h, ok := t.Channel.(*appchannel.HTTP); ok && t.Remote {
		return h.Addr()
	}
	return t.AppID
}

// Invoke calls a method of appID with an InvokeRequest (the gRPC API's
// InvokeService): Do, with the request sent as it is to an app and with
// the caller and callee named to it.
func (i *Invoker) Invoke(ctx context.Context, appID string, req *appchannel.InvokeRequest) (*appchannel.InvokeResponse, Target, error) {
	var resp *appchannel.InvokeResponse
	t, err := i.Do(ctx, &Call{AppID: appID, Method: req.Method, Verb: req.Verb, Instance: HeaderValue(req.Headers, HeaderInstance)}, func(ctx context.Context, t Target) (int, error) {
		r := *req
		r.Headers = WithCaller(req.Headers, i.AppID, t.AppID)
		out, err := t.Channel.Invoke(ctx, &r)
		if err != nil {
			return 0, err
		}
		resp = out
		return out.Status, nil
	})
	if err != nil {
		return nil, t, err
	}
	return resp, t, nil
}

// HeaderValue is the value of the first header named key (in any case).
func HeaderValue(hs []appchannel.Header, key string) string {
	for _, h := range hs {
		if strings.EqualFold(h.Key, key) {
			return h.Value
		}
	}
	return ""
}

// WithCaller is headers without the reserved ones, plus the caller and
// callee as the runtime names them.
func WithCaller(headers []appchannel.Header, caller, callee string) []appchannel.Header {
	out := make([]appchannel.Header, 0, len(headers)+2)
	for _, h := range headers {
		if !Reserved(h.Key) {
			out = append(out, h)
		}
	}
	return append(out, appchannel.Header{Key: HeaderCaller, Value: caller}, appchannel.Header{Key: HeaderCallee, Value: callee})
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
