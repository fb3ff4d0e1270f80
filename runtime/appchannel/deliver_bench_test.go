package appchannel

import (
	"context"
	"errors"
	"net"
	"testing"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// One event after another, as a partition's worker delivers them: the
// round trip to a gRPC app against the same to an HTTP app, each beside
// its floor (the library's own round trip, no mecha code).
//
//	go test -run - -bench 'DeliverEvent|Floor' ./runtime/appchannel/
var benchEvent = &TopicEvent{
	PubsubName: "pubsub", Topic: "orders", Path: "events",
	CloudEvent: []byte(`{"specversion":"1.0","id":"1","source":"app","type":"com.dapr.event.sent","datacontenttype":"application/json","data":{"orderId":42}}`),
}

// An input binding's event, delivered the same way.
var benchBinding = &BindingEvent{Name: "orders", Data: []byte(`{"orderId":42}`), Metadata: map[string]string{"key": "k1"}}

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

// serveHTTPApp serves h on a loopback port until the benchmark ends.
func serveHTTPApp(b *testing.B, h fasthttp.RequestHandler) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = fasthttp.Serve(lis, h) }()
	b.Cleanup(func() { lis.Close() })
	return lis.Addr().String()
}

// grpcChannel is a channel to okApp.
func grpcChannel(b *testing.B) Channel {
	ch, err := NewGRPC(context.Background(), GRPCOptions{Address: serveOKApp(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ch.Close() })
	return ch
}

// httpChannel is a channel to an HTTP app answering every event SUCCESS.
func httpChannel(b *testing.B) Channel {
	ch := NewHTTP(HTTPOptions{Address: serveHTTPApp(b, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"SUCCESS"}`)
	})})
	b.Cleanup(func() { ch.Close() })
	return ch
}

// oneAtATime runs call b.N times, one after another.
func oneAtATime(b *testing.B, call func(ctx context.Context) error) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := call(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func deliverEvent(ch Channel) func(context.Context) error {
	return func(ctx context.Context) error {
		st, err := ch.DeliverEvent(ctx, benchEvent)
		if err == nil && st != StatusSuccess {
			err = errors.New("not SUCCESS")
		}
		return err
	}
}

func deliverBinding(ch Channel) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := ch.DeliverBinding(ctx, benchBinding)
		return err
	}
}

func BenchmarkDeliverEventGRPC(b *testing.B)   { oneAtATime(b, deliverEvent(grpcChannel(b))) }
func BenchmarkDeliverEventHTTP(b *testing.B)   { oneAtATime(b, deliverEvent(httpChannel(b))) }
func BenchmarkDeliverBindingGRPC(b *testing.B) { oneAtATime(b, deliverBinding(grpcChannel(b))) }
func BenchmarkDeliverBindingHTTP(b *testing.B) { oneAtATime(b, deliverBinding(httpChannel(b))) }

// The floor under BenchmarkDeliverEventGRPC: grpc-go's own unary round
// trip, a prebuilt request on a default client connection.
func BenchmarkGRPCUnaryFloor(b *testing.B) {
	conn, err := grpc.NewClient(serveOKApp(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	app := runtimev1pb.NewAppCallbackClient(conn)
	req := &runtimev1pb.TopicEventRequest{Id: "1", Source: "app", Type: "com.dapr.event.sent", SpecVersion: "1.0", DataContentType: "application/json",
		Data: []byte(`{"orderId":42}`), Topic: "orders", PubsubName: "pubsub", Path: "/events"}
	oneAtATime(b, func(ctx context.Context) error { _, err := app.OnTopicEvent(ctx, req); return err })
}

// The floor under BenchmarkDeliverEventHTTP: fasthttp's own round trip.
func BenchmarkHTTPFloor(b *testing.B) {
	addr := serveHTTPApp(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"status":"SUCCESS"}`) })
	c := &fasthttp.HostClient{Addr: addr}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://" + addr + "/events")
	req.Header.SetMethod("POST")
	req.SetBodyString(string(benchEvent.CloudEvent))
	oneAtATime(b, func(context.Context) error { return c.Do(req, resp) })
}
