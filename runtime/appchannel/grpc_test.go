package appchannel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"mecha/runtime/cloudevent"
)

// fakeApp is a gRPC app whose callbacks are set per test; a nil callback
// answers Unimplemented, as an app that does not override it. It records
// what it receives.
type fakeApp struct {
	runtimev1pb.UnimplementedAppCallbackServer
	runtimev1pb.UnimplementedAppCallbackHealthCheckServer
	runtimev1pb.UnimplementedAppCallbackAlphaServer

	invoke   func(context.Context, *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error)
	subs     func() (*runtimev1pb.ListTopicSubscriptionsResponse, error)
	event    func(*runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error)
	bulk     func(*runtimev1pb.TopicEventBulkRequest) (*runtimev1pb.TopicEventBulkResponse, error)
	bindings func() (*runtimev1pb.ListInputBindingsResponse, error)
	binding  func(*runtimev1pb.BindingEventRequest) (*runtimev1pb.BindingEventResponse, error)
	health   func() error

	bindingLists atomic.Int32

	mu   sync.Mutex
	reqs []proto.Message
	mds  []metadata.MD
}

func (f *fakeApp) record(ctx context.Context, m proto.Message) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, proto.Clone(m))
	f.mds = append(f.mds, md.Copy())
}

// received returns the requests and metadata recorded so far.
func (f *fakeApp) received() ([]proto.Message, []metadata.MD) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proto.Message(nil), f.reqs...), append([]metadata.MD(nil), f.mds...)
}

func (f *fakeApp) OnInvoke(ctx context.Context, in *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
	f.record(ctx, in)
	if f.invoke == nil {
		return f.UnimplementedAppCallbackServer.OnInvoke(ctx, in)
	}
	return f.invoke(ctx, in)
}

func (f *fakeApp) ListTopicSubscriptions(ctx context.Context, in *emptypb.Empty) (*runtimev1pb.ListTopicSubscriptionsResponse, error) {
	if f.subs == nil {
		return f.UnimplementedAppCallbackServer.ListTopicSubscriptions(ctx, in)
	}
	return f.subs()
}

func (f *fakeApp) OnTopicEvent(ctx context.Context, in *runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
	f.record(ctx, in)
	if f.event == nil {
		return f.UnimplementedAppCallbackServer.OnTopicEvent(ctx, in)
	}
	return f.event(in)
}

func (f *fakeApp) OnBulkTopicEventAlpha1(ctx context.Context, in *runtimev1pb.TopicEventBulkRequest) (*runtimev1pb.TopicEventBulkResponse, error) {
	f.record(ctx, in)
	if f.bulk == nil {
		return f.UnimplementedAppCallbackAlphaServer.OnBulkTopicEventAlpha1(ctx, in)
	}
	return f.bulk(in)
}

func (f *fakeApp) ListInputBindings(ctx context.Context, in *emptypb.Empty) (*runtimev1pb.ListInputBindingsResponse, error) {
	f.bindingLists.Add(1)
	if f.bindings == nil {
		return f.UnimplementedAppCallbackServer.ListInputBindings(ctx, in)
	}
	return f.bindings()
}

func (f *fakeApp) OnBindingEvent(ctx context.Context, in *runtimev1pb.BindingEventRequest) (*runtimev1pb.BindingEventResponse, error) {
	f.record(ctx, in)
	if f.binding == nil {
		return f.UnimplementedAppCallbackServer.OnBindingEvent(ctx, in)
	}
	return f.binding(in)
}

func (f *fakeApp) HealthCheck(ctx context.Context, in *emptypb.Empty) (*runtimev1pb.HealthCheckResponse, error) {
	if f.health == nil {
		return f.UnimplementedAppCallbackHealthCheckServer.HealthCheck(ctx, in)
	}
	if err := f.health(); err != nil {
		return nil, err
	}
	return &runtimev1pb.HealthCheckResponse{}, nil
}

// startApp serves app on 127.0.0.1:0 and returns a channel to it. With
// withHealth false the health service is not registered at all.
func startApp(t *testing.T, app *fakeApp, withHealth bool) *GRPC {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimev1pb.RegisterAppCallbackServer(srv, app)
	runtimev1pb.RegisterAppCallbackAlphaServer(srv, app)
	if withHealth {
		runtimev1pb.RegisterAppCallbackHealthCheckServer(srv, app)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	ch, err := NewGRPC(context.Background(), GRPCOptions{Address: lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ch.Close()
		srv.Stop()
		<-done
	})
	return ch
}

// closedAddr returns an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewGRPCValidates(t *testing.T) {
	if _, err := NewGRPC(context.Background(), GRPCOptions{}); err == nil {
		t.Fatal("empty address: want error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewGRPC(ctx, GRPCOptions{Address: "127.0.0.1:1"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled ctx: got %v", err)
	}
}

func TestGRPCInvoke(t *testing.T) {
	app := &fakeApp{invoke: func(ctx context.Context, in *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-answer", "42"))
		return &commonv1pb.InvokeResponse{
			ContentType: "application/json",
			Data:        &anypb.Any{Value: append([]byte("echo:"), in.GetData().GetValue()...)},
		}, nil
	}}
	ch := startApp(t, app, true)

	tests := []struct {
		name     string
		req      InvokeRequest
		wantVerb commonv1pb.HTTPExtension_Verb
		wantMD   map[string][]string // keys that must arrive, with values
		absentMD []string            // keys that must not arrive
	}{
		{
			name:     "default verb is POST",
			req:      InvokeRequest{Method: "orders", ContentType: "application/json", Body: []byte(`{"id":1}`)},
			wantVerb: commonv1pb.HTTPExtension_POST,
		},
		{
			name:     "GET with query, lowercase verb",
			req:      InvokeRequest{Method: "orders/1", Verb: "get", Query: "a=1&b=two"},
			wantVerb: commonv1pb.HTTPExtension_GET,
		},
		{
			name:     "DELETE",
			req:      InvokeRequest{Method: "orders/1", Verb: "DELETE"},
			wantVerb: commonv1pb.HTTPExtension_DELETE,
		},
		{
			name:     "PATCH",
			req:      InvokeRequest{Method: "x", Verb: "PATCH"},
			wantVerb: commonv1pb.HTTPExtension_PATCH,
		},
		{
			name:     "unknown verb is POST",
			req:      InvokeRequest{Method: "x", Verb: "PROPFIND"},
			wantVerb: commonv1pb.HTTPExtension_POST,
		},
		{
			name: "headers become lowercase metadata, unsafe ones dropped",
			req: InvokeRequest{Method: "h", Verb: "PUT", Headers: []Header{
				{"X-Request-Id", "abc"},
				{"Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
				{"X-Multi", "1"}, {"X-Multi", "2"},
				{"Connection", "keep-alive"},
				{"Transfer-Encoding", "chunked"},
				{"Upgrade", "h2c"},
				{"Content-Length", "5"},
				{":authority", "evil"},
				{"Bad Key", "v"},
				{"X-Ctl", "a\nb"},
				{"Grpc-Timeout", "1S"},
				{"X-Data-Bin", "AAEC"},
			}},
			wantVerb: commonv1pb.HTTPExtension_PUT,
			wantMD: map[string][]string{
				"x-request-id": {"abc"},
				"traceparent":  {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
				"x-multi":      {"1", "2"},
				"x-data-bin":   {"\x00\x01\x02"},
			},
			absentMD: []string{"connection", "transfer-encoding", "upgrade", "content-length", "bad key", "x-ctl"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := app.received()
			resp, err := ch.Invoke(testCtx(t), &tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != http.StatusOK || resp.ContentType != "application/json" || string(resp.Body) != "echo:"+string(tt.req.Body) {
				t.Fatalf("response = %d %q %q", resp.Status, resp.ContentType, resp.Body)
			}
			if !hasHeader(resp.Headers, "x-answer", "42") {
				t.Errorf("response headers %v lack x-answer: 42", resp.Headers)
			}
			reqs, mds := app.received()
			if len(reqs) != len(before)+1 {
				t.Fatalf("app got %d calls, want %d", len(reqs), len(before)+1)
			}
			got := reqs[len(reqs)-1].(*commonv1pb.InvokeRequest)
			md := mds[len(mds)-1]
			if got.GetMethod() != tt.req.Method {
				t.Errorf("method = %q, want %q", got.GetMethod(), tt.req.Method)
			}
			if got.GetContentType() != tt.req.ContentType {
				t.Errorf("content type = %q, want %q", got.GetContentType(), tt.req.ContentType)
			}
			if !bytes.Equal(got.GetData().GetValue(), tt.req.Body) {
				t.Errorf("data = %q, want %q", got.GetData().GetValue(), tt.req.Body)
			}
			if got.GetHttpExtension().GetVerb() != tt.wantVerb {
				t.Errorf("verb = %v, want %v", got.GetHttpExtension().GetVerb(), tt.wantVerb)
			}
			if got.GetHttpExtension().GetQuerystring() != tt.req.Query {
				t.Errorf("query = %q, want %q", got.GetHttpExtension().GetQuerystring(), tt.req.Query)
			}
			for k, want := range tt.wantMD {
				if g := md.Get(k); !reflect.DeepEqual(g, want) {
					t.Errorf("metadata %s = %q, want %q", k, g, want)
				}
			}
			for _, k := range tt.absentMD {
				if g := md.Get(k); len(g) > 0 {
					t.Errorf("metadata %s = %q, want absent", k, g)
				}
			}
			if g := md.Get(":authority"); len(g) > 0 && g[0] == "evil" {
				t.Errorf(":authority was overridden by a header")
			}
			if g := md.Get("grpc-timeout"); len(g) > 0 {
				t.Errorf("grpc-timeout header passed through: %q", g)
			}
		})
	}
}

func hasHeader(hs []Header, k, v string) bool {
	for _, h := range hs {
		if h.Key == k && h.Value == v {
			return true
		}
	}
	return false
}

func TestGRPCInvokeStatusMapping(t *testing.T) {
	tests := []struct {
		code codes.Code
		want int
	}{
		{codes.NotFound, http.StatusNotFound},
		{codes.InvalidArgument, http.StatusBadRequest},
		{codes.Unauthenticated, http.StatusUnauthorized},
		{codes.PermissionDenied, http.StatusForbidden},
		{codes.Unimplemented, http.StatusNotImplemented},
		{codes.DeadlineExceeded, http.StatusGatewayTimeout},
		{codes.AlreadyExists, http.StatusConflict},
		{codes.Aborted, http.StatusConflict},
		{codes.ResourceExhausted, http.StatusTooManyRequests},
		{codes.FailedPrecondition, http.StatusBadRequest},
		{codes.OutOfRange, http.StatusBadRequest},
		{codes.Canceled, http.StatusRequestTimeout},
		{codes.Internal, http.StatusInternalServerError},
		{codes.Unknown, http.StatusInternalServerError},
		{codes.DataLoss, http.StatusInternalServerError},
	}
	var mu sync.Mutex
	var code codes.Code
	app := &fakeApp{invoke: func(context.Context, *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		return nil, status.Error(code, "went wrong: "+code.String())
	}}
	ch := startApp(t, app, true)
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			mu.Lock()
			code = tt.code
			mu.Unlock()
			resp, err := ch.Invoke(testCtx(t), &InvokeRequest{Method: "m"})
			if err != nil {
				t.Fatalf("app status must be a response, got error %v", err)
			}
			if resp.Status != tt.want {
				t.Errorf("status = %d, want %d", resp.Status, tt.want)
			}
			if string(resp.Body) != "went wrong: "+tt.code.String() {
				t.Errorf("body = %q", resp.Body)
			}
			if HTTPStatusFromCode(tt.code) != tt.want {
				t.Errorf("HTTPStatusFromCode(%v) = %d", tt.code, HTTPStatusFromCode(tt.code))
			}
		})
	}
	if HTTPStatusFromCode(codes.Unavailable) != http.StatusServiceUnavailable || HTTPStatusFromCode(codes.OK) != http.StatusOK {
		t.Error("HTTPStatusFromCode: Unavailable or OK mismapped")
	}
}

func TestGRPCInvokeHonoursDeadline(t *testing.T) {
	app := &fakeApp{invoke: func(ctx context.Context, _ *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	ch := startApp(t, app, true)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := ch.Invoke(ctx, &InvokeRequest{Method: "slow"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, %v; want an error wrapping context.DeadlineExceeded", resp, err)
	}
	if errors.Is(err, ErrAppUnreachable) {
		t.Error("a deadline is not an unreachable app")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Invoke took %v past a 100ms deadline", d)
	}
}

func TestGRPCUnreachable(t *testing.T) {
	ch, err := NewGRPC(context.Background(), GRPCOptions{Address: closedAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	tests := []struct {
		name string
		call func(context.Context) error
	}{
		{"Invoke", func(ctx context.Context) error {
			resp, err := ch.Invoke(ctx, &InvokeRequest{Method: "m"})
			if resp != nil {
				t.Errorf("Invoke returned a response %+v", resp)
			}
			return err
		}},
		{"Subscriptions", func(ctx context.Context) error { _, err := ch.Subscriptions(ctx); return err }},
		{"DeliverEvent", func(ctx context.Context) error {
			st, err := ch.DeliverEvent(ctx, &TopicEvent{Path: "p", Topic: "t", CloudEvent: []byte("x"), Raw: true})
			if st != StatusRetry {
				t.Errorf("status = %v, want retry", st)
			}
			return err
		}},
		{"DeliverBulk", func(ctx context.Context) error {
			_, err := ch.DeliverBulk(ctx, &BulkEvent{Path: "p", Raw: true, Entries: []BulkEntry{{EntryID: "1", Event: []byte("x")}}})
			return err
		}},
		{"BindingSubscribed", func(ctx context.Context) error { _, err := ch.BindingSubscribed(ctx, "b"); return err }},
		{"DeliverBinding", func(ctx context.Context) error {
			_, err := ch.DeliverBinding(ctx, &BindingEvent{Name: "b"})
			return err
		}},
		{"Health", func(ctx context.Context) error { return ch.Health(ctx) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(testCtx(t))
			if !errors.Is(err, ErrAppUnreachable) {
				t.Fatalf("got %v, want ErrAppUnreachable", err)
			}
			if status.Code(err) != codes.Unavailable {
				t.Errorf("gRPC status lost: code %v", status.Code(err))
			}
		})
	}
}

func TestGRPCSubscriptions(t *testing.T) {
	full := &runtimev1pb.ListTopicSubscriptionsResponse{Subscriptions: []*runtimev1pb.TopicSubscription{
		{
			PubsubName:      "ps",
			Topic:           "orders",
			Metadata:        map[string]string{"rawPayload": "true"},
			DeadLetterTopic: "orders-dlq",
			Routes: &runtimev1pb.TopicRoutes{
				Rules: []*runtimev1pb.TopicRule{
					{Match: `event.type == "big"`, Path: "/big"},
					{Match: `event.type == "small"`, Path: "/small"},
				},
				Default: "/orders",
			},
			BulkSubscribe: &runtimev1pb.BulkSubscribeConfig{Enabled: true, MaxMessagesCount: 50, MaxAwaitDurationMs: 200},
		},
		{PubsubName: "ps", Topic: "plain", Routes: &runtimev1pb.TopicRoutes{Default: "plain"}},
		{PubsubName: "ps2", Topic: "noroute"},
	}}
	tests := []struct {
		name    string
		subs    func() (*runtimev1pb.ListTopicSubscriptionsResponse, error)
		want    []Subscription
		wantErr bool
	}{
		{
			name: "mapping",
			subs: func() (*runtimev1pb.ListTopicSubscriptionsResponse, error) { return full, nil },
			want: []Subscription{
				{
					PubsubName: "ps", Topic: "orders",
					Metadata:        map[string]string{"rawPayload": "true"},
					DeadLetterTopic: "orders-dlq",
					Routes: &Routes{
						Rules:   []Rule{{Match: `event.type == "big"`, Path: "/big"}, {Match: `event.type == "small"`, Path: "/small"}},
						Default: "/orders",
					},
					BulkSubscribe: &BulkSubscribe{Enabled: true, MaxMessagesCount: 50, MaxAwaitDurationMs: 200},
				},
				{PubsubName: "ps", Topic: "plain", Routes: &Routes{Default: "plain"}},
				// No routes: every event, on the empty path (as in Dapr).
				{PubsubName: "ps2", Topic: "noroute", Route: "/"},
			},
		},
		{
			name: "empty list",
			subs: func() (*runtimev1pb.ListTopicSubscriptionsResponse, error) {
				return &runtimev1pb.ListTopicSubscriptionsResponse{}, nil
			},
			want: []Subscription{},
		},
		{name: "unimplemented means none", subs: nil, want: nil},
		{
			name: "app error",
			subs: func() (*runtimev1pb.ListTopicSubscriptionsResponse, error) {
				return nil, status.Error(codes.Internal, "boom")
			},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := startApp(t, &fakeApp{subs: tt.subs}, true)
			got, err := ch.Subscriptions(testCtx(t))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if errors.Is(err, ErrAppUnreachable) {
					t.Errorf("app error reported as unreachable: %v", err)
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(tt.want)
				t.Errorf("got  %s (nil=%v)\nwant %s (nil=%v)", gj, got == nil, wj, tt.want == nil)
			}
		})
	}
}

func TestGRPCDeliverEventStatus(t *testing.T) {
	tests := []struct {
		name    string
		event   func(*runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error)
		want    EventStatus
		wantErr bool
	}{
		{"success", respond(runtimev1pb.TopicEventResponse_SUCCESS), StatusSuccess, false},
		{"retry", respond(runtimev1pb.TopicEventResponse_RETRY), StatusRetry, false},
		{"drop", respond(runtimev1pb.TopicEventResponse_DROP), StatusDrop, false},
		{"unknown status retries", respond(7), StatusRetry, true},
		{"NotFound drops", failWith(codes.NotFound), StatusDrop, false},
		{"Unimplemented drops", nil, StatusDrop, false},
		{"Internal retries", failWith(codes.Internal), StatusRetry, true},
		{"InvalidArgument retries", failWith(codes.InvalidArgument), StatusRetry, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := startApp(t, &fakeApp{event: tt.event}, true)
			ce := cloudevent.Append(nil, &cloudevent.Envelope{ID: "e1", Source: "pub", Topic: "t", PubsubName: "ps", Data: []byte(`{}`)})
			got, err := ch.DeliverEvent(testCtx(t), &TopicEvent{Path: "t", Topic: "t", PubsubName: "ps", CloudEvent: ce})
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("got %v, %v; want %v, err %v", got, err, tt.want, tt.wantErr)
			}
			if errors.Is(err, ErrAppUnreachable) {
				t.Errorf("app error reported as unreachable: %v", err)
			}
		})
	}
}

func respond(s runtimev1pb.TopicEventResponse_TopicEventResponseStatus) func(*runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
	return func(*runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
		return &runtimev1pb.TopicEventResponse{Status: s}, nil
	}
}

func failWith(c codes.Code) func(*runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
	return func(*runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
		return nil, status.Error(c, "app says "+c.String())
	}
}

func TestGRPCDeliverEventFields(t *testing.T) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	tests := []struct {
		name       string
		ev         TopicEvent
		wantID     string
		wantSource string
		wantType   string
		wantCT     string
		wantData   []byte
		wantTopic  string
		wantPubsub string
		wantPath   string
		wantExt    map[string]any // attributes that must be in Extensions
		wantMD     map[string]string
	}{
		{
			name: "json data",
			ev: TopicEvent{
				Path: "orders", Topic: "orders", PubsubName: "ps",
				CloudEvent: cloudevent.Append(nil, &cloudevent.Envelope{
					ID: "id-1", Source: "checkout", Topic: "orders", PubsubName: "ps",
					ContentType: "application/json", TraceParent: tp, Data: []byte(`{"n": 1}`),
				}),
				Metadata: map[string]string{"partition": "3", "Content-Type": "x/y"},
			},
			wantID: "id-1", wantSource: "checkout", wantType: cloudevent.EventType,
			wantCT: "application/json", wantData: []byte(`{"n":1}`),
			wantTopic: "orders", wantPubsub: "ps", wantPath: "/orders",
			wantExt: map[string]any{"topic": "orders", "pubsubname": "ps", "traceparent": tp},
			wantMD:  map[string]string{"partition": "3", "traceparent": tp},
		},
		{
			name: "text data, custom type, nested route",
			ev: TopicEvent{
				Path: "v1/orders", Topic: "orders", PubsubName: "ps",
				CloudEvent: cloudevent.Append(nil, &cloudevent.Envelope{
					ID: "id-2", Source: "s", Type: "com.example.order", Topic: "orders", PubsubName: "ps",
					ContentType: "text/plain", Data: []byte("hello \"world\""),
				}),
				TraceParent: tp,
			},
			wantID: "id-2", wantSource: "s", wantType: "com.example.order",
			wantCT: "text/plain", wantData: []byte("hello \"world\""),
			wantTopic: "orders", wantPubsub: "ps", wantPath: "/v1/orders",
			wantExt: map[string]any{"topic": "orders"},
			wantMD:  map[string]string{"traceparent": tp},
		},
		{
			name: "binary data arrives decoded",
			ev: TopicEvent{
				Path: "bin", Topic: "blobs", PubsubName: "ps",
				CloudEvent: cloudevent.Append(nil, &cloudevent.Envelope{
					ID: "id-3", Source: "s", Topic: "blobs", PubsubName: "ps",
					ContentType: "application/octet-stream", Data: []byte{0, 1, 2, 0xff},
				}),
			},
			wantID: "id-3", wantSource: "s", wantType: cloudevent.EventType,
			wantCT: "application/octet-stream", wantData: []byte{0, 1, 2, 0xff},
			wantTopic: "blobs", wantPubsub: "ps", wantPath: "/bin",
		},
		{
			name: "topic and pubsub from the envelope when the event has none",
			ev: TopicEvent{
				Path: "x",
				CloudEvent: cloudevent.Append(nil, &cloudevent.Envelope{
					ID: "id-4", Source: "s", Topic: "ce-topic", PubsubName: "ce-ps", Data: []byte(`1`), ContentType: "application/json",
				}),
			},
			wantID: "id-4", wantSource: "s", wantType: cloudevent.EventType,
			wantCT: "application/json", wantData: []byte(`1`),
			wantTopic: "ce-topic", wantPubsub: "ce-ps", wantPath: "/x",
		},
		{
			name: "raw payload",
			ev: TopicEvent{
				Path: "raw", Topic: "r", PubsubName: "ps", Raw: true,
				CloudEvent: []byte("not json at all"),
				Metadata:   map[string]string{"offset": "9"},
			},
			wantType: cloudevent.EventType, wantCT: "application/octet-stream",
			wantData: []byte("not json at all"), wantTopic: "r", wantPubsub: "ps", wantPath: "/raw",
			wantMD: map[string]string{"offset": "9"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := &fakeApp{event: respond(runtimev1pb.TopicEventResponse_SUCCESS)}
			ch := startApp(t, app, true)
			st, err := ch.DeliverEvent(testCtx(t), &tt.ev)
			if err != nil || st != StatusSuccess {
				t.Fatalf("DeliverEvent = %v, %v", st, err)
			}
			reqs, mds := app.received()
			if len(reqs) != 1 {
				t.Fatalf("app got %d events", len(reqs))
			}
			got := reqs[0].(*runtimev1pb.TopicEventRequest)
			if tt.ev.Raw {
				if _, err := uuid.Parse(got.GetId()); err != nil {
					t.Errorf("raw event id %q is not a uuid", got.GetId())
				}
			} else if got.GetId() != tt.wantID {
				t.Errorf("id = %q, want %q", got.GetId(), tt.wantID)
			}
			check := func(field, got, want string) {
				if got != want {
					t.Errorf("%s = %q, want %q", field, got, want)
				}
			}
			check("source", got.GetSource(), tt.wantSource)
			check("type", got.GetType(), tt.wantType)
			check("specversion", got.GetSpecVersion(), "1.0")
			check("datacontenttype", got.GetDataContentType(), tt.wantCT)
			check("topic", got.GetTopic(), tt.wantTopic)
			check("pubsubname", got.GetPubsubName(), tt.wantPubsub)
			check("path", got.GetPath(), tt.wantPath)
			if !bytes.Equal(got.GetData(), tt.wantData) {
				t.Errorf("data = %q, want %q", got.GetData(), tt.wantData)
			}
			ext := got.GetExtensions().AsMap()
			for k, v := range tt.wantExt {
				if !reflect.DeepEqual(ext[k], v) {
					t.Errorf("extension %s = %v, want %v", k, ext[k], v)
				}
			}
			if !tt.ev.Raw {
				if _, ok := ext["time"]; !ok {
					t.Errorf("extensions %v lack time", ext)
				}
			}
			for _, core := range []string{"id", "source", "type", "specversion", "datacontenttype", "data", "data_base64"} {
				if _, ok := ext[core]; ok {
					t.Errorf("core attribute %s duplicated in extensions", core)
				}
			}
			for k, v := range tt.wantMD {
				if g := mds[0].Get(k); len(g) != 1 || g[0] != v {
					t.Errorf("metadata %s = %q, want %q", k, g, v)
				}
			}
			if g := mds[0].Get("content-type"); len(g) == 1 && g[0] == "x/y" {
				t.Error("component content-type overrode the gRPC content-type")
			}
		})
	}
}

func TestGRPCDeliverEventInvalidEnvelope(t *testing.T) {
	app := &fakeApp{event: respond(runtimev1pb.TopicEventResponse_SUCCESS)}
	ch := startApp(t, app, true)
	st, err := ch.DeliverEvent(testCtx(t), &TopicEvent{Path: "p", Topic: "t", CloudEvent: []byte("not json")})
	if st != StatusRetry || !errors.Is(err, cloudevent.ErrInvalid) {
		t.Fatalf("got %v, %v; want retry wrapping cloudevent.ErrInvalid", st, err)
	}
	if reqs, _ := app.received(); len(reqs) != 0 {
		t.Errorf("an invalid envelope reached the app")
	}
}

func bulkEntries(t *testing.T, ids ...string) []BulkEntry {
	t.Helper()
	var out []BulkEntry
	for _, id := range ids {
		out = append(out, BulkEntry{
			EntryID:     id,
			ContentType: "application/cloudevents+json",
			Metadata:    map[string]string{"entry": id},
			Event: cloudevent.Append(nil, &cloudevent.Envelope{
				ID: "ce-" + id, Source: "src", Topic: "orders", PubsubName: "ps",
				ContentType: "application/json", Data: []byte(`{"id":"` + id + `"}`),
			}),
		})
	}
	return out
}

func TestGRPCDeliverBulk(t *testing.T) {
	bulkStatus := map[string]runtimev1pb.TopicEventResponse_TopicEventResponseStatus{
		"1": runtimev1pb.TopicEventResponse_SUCCESS,
		"2": runtimev1pb.TopicEventResponse_RETRY,
		"3": runtimev1pb.TopicEventResponse_DROP,
		"4": 9, // unknown status
		// "5" gets no answer
	}
	answer := func(in *runtimev1pb.TopicEventBulkRequest) (*runtimev1pb.TopicEventBulkResponse, error) {
		resp := &runtimev1pb.TopicEventBulkResponse{}
		for _, e := range in.GetEntries() {
			if s, ok := bulkStatus[e.GetEntryId()]; ok {
				resp.Statuses = append(resp.Statuses, &runtimev1pb.TopicEventBulkResponseEntry{EntryId: e.GetEntryId(), Status: s})
			}
		}
		resp.Statuses = append(resp.Statuses, &runtimev1pb.TopicEventBulkResponseEntry{EntryId: "stranger", Status: runtimev1pb.TopicEventResponse_SUCCESS})
		return resp, nil
	}
	tests := []struct {
		name    string
		app     *fakeApp
		ev      BulkEvent
		want    map[string]EventStatus
		wantErr bool
	}{
		{
			name: "per-entry statuses",
			app:  &fakeApp{bulk: answer},
			ev:   BulkEvent{ID: "b1", Path: "orders", Topic: "orders", PubsubName: "ps", Entries: bulkEntries(t, "1", "2", "3", "4", "5")},
			want: map[string]EventStatus{"1": StatusSuccess, "2": StatusRetry, "3": StatusDrop, "4": StatusRetry},
		},
		{
			name: "raw entries",
			app:  &fakeApp{bulk: answer},
			ev: BulkEvent{Path: "orders", Topic: "orders", PubsubName: "ps", Raw: true, Entries: []BulkEntry{
				{EntryID: "1", Event: []byte("raw-1"), ContentType: "application/octet-stream"},
				{EntryID: "3", Event: []byte("raw-3")},
			}},
			want: map[string]EventStatus{"1": StatusSuccess, "3": StatusDrop},
		},
		{
			name: "invalid entry is left for retry",
			app:  &fakeApp{bulk: answer},
			ev: BulkEvent{Path: "orders", Topic: "orders", PubsubName: "ps",
				Entries: append(bulkEntries(t, "1"), BulkEntry{EntryID: "2", Event: []byte("{broken")})},
			want: map[string]EventStatus{"1": StatusSuccess},
		},
		{
			name: "NotFound drops the batch",
			app: &fakeApp{bulk: func(*runtimev1pb.TopicEventBulkRequest) (*runtimev1pb.TopicEventBulkResponse, error) {
				return nil, status.Error(codes.NotFound, "no route")
			}},
			ev:   BulkEvent{Path: "orders", Topic: "orders", Entries: bulkEntries(t, "1", "2")},
			want: map[string]EventStatus{"1": StatusDrop, "2": StatusDrop},
		},
		{
			name: "app error fails the batch",
			app: &fakeApp{bulk: func(*runtimev1pb.TopicEventBulkRequest) (*runtimev1pb.TopicEventBulkResponse, error) {
				return nil, status.Error(codes.Internal, "boom")
			}},
			ev:      BulkEvent{Path: "orders", Topic: "orders", Entries: bulkEntries(t, "1")},
			wantErr: true,
		},
		{
			name: "Unimplemented falls back to single events",
			app: &fakeApp{event: func(in *runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
				switch in.GetId() {
				case "ce-2":
					return &runtimev1pb.TopicEventResponse{Status: runtimev1pb.TopicEventResponse_RETRY}, nil
				case "ce-3":
					return nil, status.Error(codes.NotFound, "drop me")
				case "ce-4":
					return nil, status.Error(codes.Internal, "boom")
				}
				return &runtimev1pb.TopicEventResponse{}, nil
			}},
			ev:   BulkEvent{Path: "orders", Topic: "orders", PubsubName: "ps", Metadata: map[string]string{"batch": "b"}, Entries: bulkEntries(t, "1", "2", "3", "4")},
			want: map[string]EventStatus{"1": StatusSuccess, "2": StatusRetry, "3": StatusDrop, "4": StatusRetry},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := startApp(t, tt.app, true)
			got, err := ch.DeliverBulk(testCtx(t), &tt.ev)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("statuses = %v, want %v", got, tt.want)
			}
			reqs, mds := tt.app.received()
			if tt.app.bulk == nil {
				checkFallback(t, &tt.ev, reqs, mds)
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("app got %d bulk calls", len(reqs))
			}
			checkBulkRequest(t, &tt.ev, reqs[0].(*runtimev1pb.TopicEventBulkRequest))
		})
	}
}

// checkBulkRequest verifies what the app received for ev.
func checkBulkRequest(t *testing.T, ev *BulkEvent, got *runtimev1pb.TopicEventBulkRequest) {
	t.Helper()
	if ev.ID != "" && got.GetId() != ev.ID || got.GetId() == "" {
		t.Errorf("bulk id = %q, want %q", got.GetId(), ev.ID)
	}
	if got.GetPath() != "/"+ev.Path || got.GetTopic() != ev.Topic || got.GetPubsubName() != ev.PubsubName || got.GetType() != cloudevent.EventType {
		t.Errorf("bulk request path/topic/pubsub/type = %q %q %q %q", got.GetPath(), got.GetTopic(), got.GetPubsubName(), got.GetType())
	}
	byID := map[string]*runtimev1pb.TopicEventBulkRequestEntry{}
	for _, e := range got.GetEntries() {
		byID[e.GetEntryId()] = e
	}
	for _, want := range ev.Entries {
		e, ok := byID[want.EntryID]
		if !ok {
			if _, err := cloudevent.Parse(want.Event); err == nil && !ev.Raw {
				t.Errorf("entry %s missing from the request", want.EntryID)
			}
			continue
		}
		if e.GetContentType() != want.ContentType || !reflect.DeepEqual(e.GetMetadata(), want.Metadata) {
			t.Errorf("entry %s content type/metadata = %q %v", want.EntryID, e.GetContentType(), e.GetMetadata())
		}
		if ev.Raw {
			if !bytes.Equal(e.GetBytes(), want.Event) || e.GetCloudEvent() != nil {
				t.Errorf("raw entry %s = bytes %q, cloud event %v", want.EntryID, e.GetBytes(), e.GetCloudEvent())
			}
			continue
		}
		ce := e.GetCloudEvent()
		if ce == nil {
			t.Fatalf("entry %s has no cloud_event", want.EntryID)
		}
		if ce.GetId() != "ce-"+want.EntryID || ce.GetSource() != "src" || ce.GetType() != cloudevent.EventType ||
			ce.GetSpecVersion() != "1.0" || ce.GetDataContentType() != "application/json" ||
			string(ce.GetData()) != `{"id":"`+want.EntryID+`"}` {
			t.Errorf("entry %s cloud event = %v", want.EntryID, ce)
		}
		if ext := ce.GetExtensions().AsMap(); ext["topic"] != "orders" || ext["id"] != nil {
			t.Errorf("entry %s extensions = %v", want.EntryID, ext)
		}
	}
}

// checkFallback verifies the single events of an Unimplemented bulk.
func checkFallback(t *testing.T, ev *BulkEvent, reqs []proto.Message, mds []metadata.MD) {
	t.Helper()
	var ids []string
	for i, r := range reqs {
		switch r := r.(type) {
		case *runtimev1pb.TopicEventBulkRequest:
		case *runtimev1pb.TopicEventRequest:
			ids = append(ids, r.GetId())
			if r.GetPath() != "/"+ev.Path || r.GetTopic() != ev.Topic || r.GetPubsubName() != ev.PubsubName {
				t.Errorf("fallback event %s path/topic/pubsub = %q %q %q", r.GetId(), r.GetPath(), r.GetTopic(), r.GetPubsubName())
			}
			if g := mds[i].Get("batch"); len(g) != 1 || g[0] != "b" {
				t.Errorf("fallback event %s lacks batch metadata: %v", r.GetId(), mds[i])
			}
			if g := mds[i].Get("entry"); len(g) != 1 || "ce-"+g[0] != r.GetId() {
				t.Errorf("fallback event %s has entry metadata %v", r.GetId(), g)
			}
		default:
			t.Errorf("unexpected call %T", r)
		}
	}
	sort.Strings(ids)
	var want []string
	for _, e := range ev.Entries {
		want = append(want, "ce-"+e.EntryID)
	}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("fallback delivered %v, want %v", ids, want)
	}
}

func TestGRPCBindingSubscribed(t *testing.T) {
	tests := []struct {
		name     string
		bindings func() (*runtimev1pb.ListInputBindingsResponse, error)
		want     map[string]bool
	}{
		{
			name: "listed",
			bindings: func() (*runtimev1pb.ListInputBindingsResponse, error) {
				return &runtimev1pb.ListInputBindingsResponse{Bindings: []string{"kafka-in", "cron"}}, nil
			},
			want: map[string]bool{"kafka-in": true, "cron": true, "other": false, "": false},
		},
		{
			name: "none",
			bindings: func() (*runtimev1pb.ListInputBindingsResponse, error) {
				return &runtimev1pb.ListInputBindingsResponse{}, nil
			},
			want: map[string]bool{"cron": false},
		},
		{name: "unimplemented", bindings: nil, want: map[string]bool{"cron": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := &fakeApp{bindings: tt.bindings}
			ch := startApp(t, app, true)
			ctx := testCtx(t)
			var wg sync.WaitGroup
			for name, want := range tt.want {
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						got, err := ch.BindingSubscribed(ctx, name)
						if err != nil || got != want {
							t.Errorf("BindingSubscribed(%q) = %v, %v; want %v", name, got, err, want)
						}
					}()
				}
			}
			wg.Wait()
			if n := app.bindingLists.Load(); n != 1 {
				t.Errorf("app was asked for its bindings %d times, want once", n)
			}
		})
	}
}

func TestGRPCBindingSubscribedRetriesAfterError(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	app := &fakeApp{bindings: func() (*runtimev1pb.ListInputBindingsResponse, error) {
		if fail.Load() {
			return nil, status.Error(codes.Internal, "not ready")
		}
		return &runtimev1pb.ListInputBindingsResponse{Bindings: []string{"b"}}, nil
	}}
	ch := startApp(t, app, true)
	if _, err := ch.BindingSubscribed(testCtx(t), "b"); err == nil {
		t.Fatal("want the app's error")
	}
	fail.Store(false)
	for range 3 {
		if ok, err := ch.BindingSubscribed(testCtx(t), "b"); !ok || err != nil {
			t.Fatalf("after recovery: %v, %v", ok, err)
		}
	}
	if n := app.bindingLists.Load(); n != 2 {
		t.Errorf("ListInputBindings called %d times, want 2 (failure not cached, success cached)", n)
	}
}

func TestGRPCDeliverBinding(t *testing.T) {
	full := &runtimev1pb.BindingEventResponse{
		StoreName:   "statestore",
		States:      []*commonv1pb.StateItem{{Key: "k", Value: []byte("v")}},
		To:          []string{"out-1", "out-2"},
		Data:        []byte("reply"),
		Concurrency: runtimev1pb.BindingEventResponse_PARALLEL,
	}
	tests := []struct {
		name    string
		binding func(*runtimev1pb.BindingEventRequest) (*runtimev1pb.BindingEventResponse, error)
		want    *runtimev1pb.BindingEventResponse
		wantErr bool
	}{
		{
			name:    "full response",
			binding: func(*runtimev1pb.BindingEventRequest) (*runtimev1pb.BindingEventResponse, error) { return full, nil },
			want:    full,
		},
		{
			name: "empty reply",
			binding: func(*runtimev1pb.BindingEventRequest) (*runtimev1pb.BindingEventResponse, error) {
				return &runtimev1pb.BindingEventResponse{}, nil
			},
			want: &runtimev1pb.BindingEventResponse{},
		},
		{
			name: "app error",
			binding: func(*runtimev1pb.BindingEventRequest) (*runtimev1pb.BindingEventResponse, error) {
				return nil, status.Error(codes.Internal, "boom")
			},
			wantErr: true,
		},
		{name: "unimplemented", binding: nil, wantErr: true},
	}
	ev := &BindingEvent{Name: "kafka-in", Data: []byte(`{"x":1}`), Metadata: map[string]string{"key": "k1", "Bad Key": "v"}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := &fakeApp{binding: tt.binding}
			ch := startApp(t, app, true)
			data, err := ch.DeliverBinding(testCtx(t), ev)
			if (err != nil) != tt.wantErr {
				t.Fatalf("DeliverBinding err = %v, wantErr %v", err, tt.wantErr)
			}
			resp, errFull := ch.DeliverBindingFull(testCtx(t), ev)
			if (errFull != nil) != tt.wantErr {
				t.Fatalf("DeliverBindingFull err = %v, wantErr %v", errFull, tt.wantErr)
			}
			if errors.Is(err, ErrAppUnreachable) {
				t.Errorf("app error reported as unreachable: %v", err)
			}
			reqs, mds := app.received()
			if len(reqs) != 2 {
				t.Fatalf("app got %d binding events, want 2", len(reqs))
			}
			in := reqs[0].(*runtimev1pb.BindingEventRequest)
			if in.GetName() != ev.Name || !bytes.Equal(in.GetData(), ev.Data) || !reflect.DeepEqual(in.GetMetadata(), ev.Metadata) {
				t.Errorf("app got %v", in)
			}
			if g := mds[0].Get("key"); len(g) != 1 || g[0] != "k1" {
				t.Errorf("binding metadata not sent as gRPC metadata: %v", mds[0])
			}
			if tt.wantErr {
				return
			}
			if !bytes.Equal(data, tt.want.GetData()) {
				t.Errorf("DeliverBinding = %q, want %q", data, tt.want.GetData())
			}
			if !proto.Equal(resp, tt.want) {
				t.Errorf("DeliverBindingFull = %v, want %v", resp, tt.want)
			}
		})
	}
}

func TestGRPCHealth(t *testing.T) {
	tests := []struct {
		name           string
		withHealth     bool
		health         func() error
		wantErr        bool
		wantUnreachabl bool
	}{
		{name: "serving", withHealth: true, health: func() error { return nil }},
		{name: "failing", withHealth: true, health: func() error { return status.Error(codes.Internal, "sick") }, wantErr: true},
		{name: "Unimplemented method falls back to connection", withHealth: true, health: nil},
		{name: "service not registered falls back to connection", withHealth: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := startApp(t, &fakeApp{health: tt.health}, tt.withHealth)
			err := ch.Health(testCtx(t))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Health = %v, wantErr %v", err, tt.wantErr)
			}
			if errors.Is(err, ErrAppUnreachable) {
				t.Errorf("app error reported as unreachable: %v", err)
			}
		})
	}
}

func TestGRPCClose(t *testing.T) {
	ch := startApp(t, &fakeApp{health: func() error { return nil }}, true)
	if err := ch.Health(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ch.Health(testCtx(t)); err == nil {
		t.Fatal("Health after Close: want error")
	}
}
