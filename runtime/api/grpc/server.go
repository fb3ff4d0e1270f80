// Package grpcapi serves Dapr's gRPC API, dapr.proto.runtime.v1.Dapr, with
// the proto types of github.com/dapr/dapr v1.14.0, so that Dapr SDKs talk to
// mecha unchanged. Each RPC translates its request into a call of the
// building blocks (runtime/blocks), the invoker, the subscription manager or
// the metadata provider, and renders their *apierr.Error values as gRPC
// statuses. RPCs mecha does not serve answer codes.Unimplemented.
package grpcapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	goruntime "runtime"
	"sync"
	"time"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"mecha/runtime/api"
	"mecha/runtime/apierr"
	"mecha/runtime/invoke"
	"mecha/runtime/metrics"
	"mecha/runtime/peer"
)

// Server is the Dapr gRPC API server.
type Server struct {
	// UnimplementedDaprServer answers codes.Unimplemented for every RPC
	// this package does not override.
	runtimev1pb.UnimplementedDaprServer

	d   *api.Deps
	log *slog.Logger
	srv *grpc.Server

	// ops maps a full method name ("/dapr.proto.runtime.v1.Dapr/GetState")
	// to its metric handle. Built in New and read-only afterwards.
	ops map[string]*metrics.Op

	// closing is closed when GracefulStop starts, so that streaming
	// subscriptions, which would otherwise hold GracefulStop until the
	// client hangs up, end at once.
	closing   chan struct{}
	closeOnce sync.Once
}

// opName is the (block, op) metric labels of an RPC.
type opName struct{ block, op string }

// opTable names the metric labels of the RPCs mecha serves; the names match
// the HTTP API's. Every other RPC of the service is recorded under block
// "unimplemented" with the method name as op, a set bounded by the proto.
var opTable = map[string]opName{
	"GetState":                   {"state", "get"},
	"GetBulkState":               {"state", "bulk_get"},
	"SaveState":                  {"state", "save"},
	"DeleteState":                {"state", "delete"},
	"DeleteBulkState":            {"state", "bulk_delete"},
	"ExecuteStateTransaction":    {"state", "transaction"},
	"QueryStateAlpha1":           {"state", "scan"},
	"PublishEvent":               {"pubsub", "publish"},
	"BulkPublishEventAlpha1":     {"pubsub", "bulk_publish"},
	"SubscribeTopicEventsAlpha1": {"pubsub", "subscribe"},
	"InvokeService":              {"invoke", "invoke"},
	"InvokeBinding":              {"bindings", "invoke"},
	"GetSecret":                  {"secrets", "get"},
	"GetBulkSecret":              {"secrets", "bulk_get"},
	"GetMetadata":                {"metadata", "get"},
	"SetMetadata":                {"metadata", "set"},
	"Shutdown":                   {"lifecycle", "shutdown"},
}

// New builds the server and registers the Dapr service on it. d.Metrics
// may be nil (no metrics); d.Log nil means slog.Default().
func New(d *api.Deps) *Server {
	s := &Server{d: d, log: d.Log, closing: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	if d.Metrics != nil {
		s.ops = map[string]*metrics.Op{}
		desc := runtimev1pb.Dapr_ServiceDesc
		add := func(method string) {
			n, ok := opTable[method]
			if !ok {
				n = opName{"unimplemented", method}
			}
			s.ops["/"+desc.ServiceName+"/"+method] = d.Metrics.API("grpc", n.block, n.op)
		}
		for _, m := range desc.Methods {
			add(m.MethodName)
		}
		for _, st := range desc.Streams {
			add(st.StreamName)
		}
	}
	to := d.Timeouts.OrDefault()
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		// A connection must finish its HTTP/2 preface within the header
		// timeout, and one without streams for the idle timeout closes.
		grpc.ConnectionTimeout(to.Header),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: to.Idle}),
		// Tuned for a sidecar that many small calls reach at once: a pool
		// of stream workers keeps its goroutines, and their grown stacks,
		// instead of starting (and growing) one per call; writes share
		// buffers and reads take them from a pool.
		grpc.NumStreamWorkers(streamWorkers()),
		grpc.SharedWriteBuffer(true),
		experimental.RecvBufferPool(grpc.NewSharedBufferPool()),
	}
	if d.MaxRequestBytes > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(d.MaxRequestBytes))
	}
	if d.GRPCProxy != nil {
		opts = append(opts, peer.ProxyCodec(), grpc.UnknownServiceHandler(peer.GRPCProxy(d.GRPCProxy)))
	}
	s.srv = grpc.NewServer(opts...)
	runtimev1pb.RegisterDaprServer(s.srv, s)
	return s
}

// Serve accepts connections on lis until GracefulStop. It returns nil once
// the server was stopped.
func (s *Server) Serve(lis net.Listener) error {
	if err := s.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// GracefulStop stops accepting connections, ends the streaming
// subscriptions and waits for the RPCs in flight; when ctx ends first it
// closes every connection at once.
func (s *Server) GracefulStop(ctx context.Context) {
	s.closeOnce.Do(func() { close(s.closing) })
	done := make(chan struct{})
	// This goroutine is owned by GracefulStop, which waits for it below;
	// srv.Stop makes srv.GracefulStop return.
	go func() {
		s.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.srv.Stop()
		<-done
	}
}

// streamWorkers is the size of the pool of goroutines that serve calls:
// enough for the concurrency a host's apps bring on every core (a call
// that finds none free runs on a goroutine of its own).
func streamWorkers() uint32 {
	return uint32(16 * goruntime.GOMAXPROCS(0))
}

// observe records the metric and, with APILogging, the log line of one
// finished RPC.
func (s *Server) observe(method string, start time.Time, err error) {
	d := time.Since(start)
	code := status.Code(err)
	if op := s.ops[method]; op != nil {
		op.Observe(code.String(), d)
	}
	if s.d.APILogging {
		s.log.Info("api call", "protocol", "grpc", "method", method, "code", code.String(), "duration", d)
	}
}

// authenticate checks the API token in the call's metadata.
func (s *Server) authenticate(ctx context.Context) error {
	if s.d.APIToken == "" {
		return nil
	}
	// ValueFromIncomingContext reads the one key without copying the
	// whole metadata map, as FromIncomingContext would on every call.
	for _, v := range metadata.ValueFromIncomingContext(ctx, "dapr-api-token") {
		if s.d.TokenOK([]byte(v)) {
			return nil
		}
	}
	return grpcErr(apierr.Unauthenticated())
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.authenticate(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := handler(ctx, req)
	s.observe(info.FullMethod, start, err)
	return resp, err
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := s.authenticate(ss.Context()); err != nil {
		return err
	}
	start := time.Now()
	err := handler(srv, ss)
	s.observe(info.FullMethod, start, err)
	return err
}

// grpcErr makes err a gRPC status error: *apierr.Error and status errors
// keep their codes, context errors become Canceled or DeadlineExceeded, and
// anything else is Internal.
func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return apierr.As(err)
}

// isReservedMD reports whether an incoming gRPC metadata key is not the
// caller's to pass on: the reserved headers of every invocation path,
// and gRPC's own content type and user agent.
func isReservedMD(k string) bool {
	return invoke.Reserved(k) || k == "content-type" || k == "user-agent"
}

// firstMD returns the first value of key in ctx's incoming metadata.
func firstMD(ctx context.Context, key string) string {
	if v := metadata.ValueFromIncomingContext(ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}
