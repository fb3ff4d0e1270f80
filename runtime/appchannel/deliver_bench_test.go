package appchannel

import (
	"context"
	"net"
	"testing"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// One event after another, as a partition's worker delivers them: the
// round trip to a gRPC app against the same to an HTTP app.
//
//	go test -run - -bench DeliverEvent ./runtime/appchannel/
var benchEvent = &TopicEvent{
	PubsubName: "pubsub", Topic: "orders", Path: "events",
	CloudEvent: []byte(`{"specversion":"1.0","id":"1","source":"app","type":"com.dapr.event.sent","datacontenttype":"application/json","data":{"orderId":42}}`),
}

// serveOKApp serves okApp on a loopback port until the benchmark ends.
func serveOKApp(b *testing.B) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimev1pb.RegisterAppCallbackServer(srv, okApp{})
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func BenchmarkDeliverEventGRPC(b *testing.B) {
	ch, err := NewGRPC(context.Background(), GRPCOptions{Address: serveOKApp(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	deliverN(b, ch)
}

func BenchmarkDeliverEventHTTP(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		_ = fasthttp.Serve(lis, func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"status":"SUCCESS"}`)
		})
	}()
	defer lis.Close()
	ch := NewHTTP(HTTPOptions{Address: lis.Addr().String()})
	defer ch.Close()
	deliverN(b, ch)
}

// deliverN delivers benchEvent b.N times, one after another.
func deliverN(b *testing.B, ch Channel) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if st, err := ch.DeliverEvent(ctx, benchEvent); err != nil || st != StatusSuccess {
			b.Fatal(st, err)
		}
	}
}

// okApp answers SUCCESS to every event and records nothing.
type okApp struct {
	runtimev1pb.UnimplementedAppCallbackServer
}

func (okApp) OnBindingEvent(context.Context, *runtimev1pb.BindingEventRequest) (*runtimev1pb.BindingEventResponse, error) {
	return &runtimev1pb.BindingEventResponse{}, nil
}

func (okApp) OnTopicEvent(context.Context, *runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
	return &runtimev1pb.TopicEventResponse{Status: runtimev1pb.TopicEventResponse_SUCCESS}, nil
}

// The floor under BenchmarkDeliverEventGRPC: grpc-go's own unary round
// trip, a prebuilt request on a default client connection, no mecha
// code.
func BenchmarkGRPCUnaryFloor(b *testing.B) {
	conn, err := grpc.NewClient(serveOKApp(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	app := runtimev1pb.NewAppCallbackClient(conn)
	req := &runtimev1pb.TopicEventRequest{Id: "1", Source: "app", Type: "com.dapr.event.sent", SpecVersion: "1.0", DataContentType: "application/json",
		Data: []byte(`{"orderId":42}`), Topic: "orders", PubsubName: "pubsub", Path: "/events"}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := app.OnTopicEvent(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// The floor under BenchmarkDeliverEventHTTP: fasthttp's own round trip.
func BenchmarkHTTPFloor(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		_ = fasthttp.Serve(lis, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"status":"SUCCESS"}`) })
	}()
	defer lis.Close()
	c := &fasthttp.HostClient{Addr: lis.Addr().String()}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://" + lis.Addr().String() + "/events")
	req.Header.SetMethod("POST")
	req.SetBodyString(`{"specversion":"1.0","id":"1","source":"app","type":"com.dapr.event.sent","datacontenttype":"application/json","data":{"orderId":42}}`)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
	}
}

// An input binding's events, one after another, to a gRPC app and to an
// HTTP app.
var benchBinding = &BindingEvent{Name: "orders", Data: []byte(`{"orderId":42}`), Metadata: map[string]string{"key": "k1"}}

func BenchmarkDeliverBindingGRPC(b *testing.B) {
	ch, err := NewGRPC(context.Background(), GRPCOptions{Address: serveOKApp(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	bindN(b, ch)
}

func BenchmarkDeliverBindingHTTP(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = fasthttp.Serve(lis, func(*fasthttp.RequestCtx) {}) }()
	defer lis.Close()
	ch := NewHTTP(HTTPOptions{Address: lis.Addr().String()})
	defer ch.Close()
	bindN(b, ch)
}

func bindN(b *testing.B, ch Channel) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := ch.DeliverBinding(ctx, benchBinding); err != nil {
			b.Fatal(err)
		}
	}
}
