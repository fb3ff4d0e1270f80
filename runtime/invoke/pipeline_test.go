package invoke

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/resiliency"
)

// fakeResolver hands out remote targets round robin over instances,
// recording each pick's outcome as the balancer would see it.
type fakeResolver struct {
	mu        sync.Mutex
	instances []string
	next      int
	outcomes  []string // "instance:ok" or "instance:err"
}

func (f *fakeResolver) Resolve(_ context.Context, appID string) (Target, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.instances) == 0 {
		return Target{}, fmt.Errorf("%w: %s", ErrAppNotFound, appID)
	}
	inst := f.instances[f.next%len(f.instances)]
	f.next++
	return Target{AppID: appID, Remote: true, Channel: appchannel.NewHTTP(appchannel.HTTPOptions{Address: inst}),
		Done: func(err error, _ time.Duration) {
			f.mu.Lock()
			defer f.mu.Unlock()
			o := "ok"
			if err != nil {
				o = "err"
			}
			f.outcomes = append(f.outcomes, inst+":"+o)
		}}, nil
}

func (f *fakeResolver) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.outcomes)
}

// script answers attempts in order: a status, or an error.
type script struct {
	mu    sync.Mutex
	steps []any
	sent  []string
}

func (s *script) send(_ context.Context, t Target) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, t.Channel.(*appchannel.HTTP).Addr())
	step := s.steps[0]
	s.steps = s.steps[1:]
	if err, ok := step.(error); ok {
		return 0, err
	}
	return step.(int), nil
}

var errUnreachable = fmt.Errorf("%w: dial: connection refused", appchannel.ErrAppUnreachable)

func policyStore(t *testing.T, doc string) *resiliency.Store {
	t.Helper()
	d, err := resiliency.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	s := resiliency.NewStore(resiliency.Options{Rand: func() float64 { return 0.5 }})
	if err := s.Replace(d); err != nil {
		t.Fatal(err)
	}
	return s
}

const retryThree = `{"apiVersion":"dapr.io/v1alpha1","kind":"Resiliency","metadata":{"name":"r"},
"spec":{"policies":{"retries":{"three":{"policy":"constant","duration":"1ms","maxRetries":3}}},
"targets":{"apps":{"svc":{"retry":"three"}}}}}`

func TestPipeline(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   string
		call     Call
		steps    []any
		wantErr  bool
		wantSent []string
		wantOut  []string
	}{
		{name: "answered", call: Call{AppID: "svc", Verb: "GET"}, steps: []any{200},
			wantSent: []string{"a:1"}, wantOut: []string{"a:1:ok"}},
		{name: "a 5xx answer is the caller's, and a failure for the balancer", call: Call{AppID: "svc", Verb: "GET"}, steps: []any{503},
			wantSent: []string{"a:1"}, wantOut: []string{"a:1:err"}},
		{name: "errUnreachable runtime, idempotent: to the next instances, twice at most", call: Call{AppID: "svc", Verb: "GET"},
			steps: []any{errUnreachable, errUnreachable, errUnreachable}, wantErr: true,
			wantSent: []string{"a:1", "b:1", "c:1"}, wantOut: []string{"a:1:err", "b:1:err", "c:1:err"}},
		{name: "errUnreachable, then answered", call: Call{AppID: "svc", Verb: "DELETE"}, steps: []any{errUnreachable, 204},
			wantSent: []string{"a:1", "b:1"}, wantOut: []string{"a:1:err", "b:1:ok"}},
		{name: "errUnreachable, POST is not sent again", call: Call{AppID: "svc", Verb: "POST"}, steps: []any{errUnreachable}, wantErr: true,
			wantSent: []string{"a:1"}, wantOut: []string{"a:1:err"}},
		{name: "errUnreachable, a streamed body is not sent again", call: Call{AppID: "svc", Verb: "PUT", Once: true}, steps: []any{errUnreachable}, wantErr: true,
			wantSent: []string{"a:1"}, wantOut: []string{"a:1:err"}},
		{name: "policy: 5xx retried on other instances, last answer stands", policy: retryThree, call: Call{AppID: "svc", Verb: "GET"},
			steps: []any{500, 500, 500, 502}, wantSent: []string{"a:1", "b:1", "c:1", "a:1"},
			wantOut: []string{"a:1:err", "b:1:err", "c:1:err", "a:1:err"}},
		{name: "policy: retried until answered", policy: retryThree, call: Call{AppID: "svc", Verb: "GET"},
			steps: []any{errUnreachable, 200}, wantSent: []string{"a:1", "b:1"}, wantOut: []string{"a:1:err", "b:1:ok"}},
		{name: "policy: POST not retried", policy: retryThree, call: Call{AppID: "svc", Verb: "POST"},
			steps: []any{500}, wantSent: []string{"a:1"}, wantOut: []string{"a:1:err"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := &fakeResolver{instances: []string{"a:1", "b:1", "c:1"}}
			inv := &Invoker{Resolver: res, AppID: "caller"}
			if tc.policy != "" {
				inv.Resiliency = policyStore(t, tc.policy)
			}
			sc := &script{steps: tc.steps}
			_, err := inv.Do(context.Background(), &tc.call, sc.send)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Do = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				var ae *apierr.Error
				if !errors.As(err, &ae) || ae.Code != "ERR_DIRECT_INVOKE" {
					t.Errorf("error %v is not ERR_DIRECT_INVOKE", err)
				}
			}
			if !slices.Equal(sc.sent, tc.wantSent) {
				t.Errorf("sent to %v, want %v", sc.sent, tc.wantSent)
			}
			if got := res.got(); !slices.Equal(got, tc.wantOut) {
				t.Errorf("balancer outcomes %v, want %v", got, tc.wantOut)
			}
		})
	}
}

func TestPipelineUnknownApp(t *testing.T) {
	inv := &Invoker{Resolver: &fakeResolver{}}
	_, err := inv.Do(context.Background(), &Call{AppID: "nobody", Verb: "GET"}, (&script{}).send)
	if !errors.Is(err, ErrAppNotFound) || apierr.As(err).Code != "ERR_DIRECT_INVOKE" {
		t.Fatalf("Do = %v, want ERR_DIRECT_INVOKE wrapping ErrAppNotFound", err)
	}
}

func TestReserved(t *testing.T) {
	for _, k := range []string{"dapr-api-token", "DAPR-API-TOKEN", "Mecha-Peer-Token", "dapr-caller-app-id", "dapr-callee-app-id",
		"dapr-app-id", "Connection", "transfer-encoding", "Host", "content-length", ":authority", "grpc-timeout", "te", "mecha-probe"} {
		if !Reserved(k) {
			t.Errorf("%q is not reserved", k)
		}
	}
	for _, k := range []string{"content-type", "x-request-id", "traceparent", "tracestate", "authorization", "grpcx"} {
		if Reserved(k) {
			t.Errorf("%q is reserved", k)
		}
	}
	hs := WithCaller([]appchannel.Header{{Key: "X-A", Value: "1"}, {Key: "Dapr-Caller-App-Id", Value: "forged"}, {Key: "dapr-api-token", Value: "secret"}}, "me", "you")
	want := []appchannel.Header{{Key: "X-A", Value: "1"}, {Key: HeaderCaller, Value: "me"}, {Key: HeaderCallee, Value: "you"}}
	if !slices.Equal(hs, want) {
		t.Errorf("WithCaller = %v, want %v", hs, want)
	}
}
