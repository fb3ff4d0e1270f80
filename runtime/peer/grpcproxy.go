package peer

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"mecha/runtime/appchannel"
	"mecha/runtime/invoke"
	"mecha/runtime/tracecontext"
)

// frame is one gRPC message, proxied as the bytes it is.
type frame struct{ payload []byte }

// rawCodec passes proxied messages through without decoding them, so
// the proxy needs no knowledge of the services it carries, and encodes
// everything else as protobuf, so that a server's own services still
// work. It takes the proto codec's name so the content type stays
// application/grpc.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *frame:
		return m.payload, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, status.Errorf(codes.Internal, "proxy codec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *frame:
		m.payload = append(m.payload[:0], data...)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return status.Errorf(codes.Internal, "proxy codec: cannot unmarshal into %T", v)
}

func (rawCodec) Name() string { return "proto" }

// ProxyCodec is the server option of a server whose unknown services a
// GRPCProxy handles: it leaves every message undecoded.
func ProxyCodec() grpc.ServerOption { return grpc.ForceServerCodec(rawCodec{}) }

// Forward proxies the call's messages to conn, with ctx's outgoing
// metadata, and returns the target's status (nil for OK).
type Forward func(ctx context.Context, conn *grpc.ClientConn) error

// Router sends a proxied call on: it picks the target and runs forward
// on the connection to it.
type Router func(ctx context.Context, method string, forward Forward) error

var clientStreamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// GRPCProxy is a grpc.StreamHandler for unknown services that forwards
// each call, unary or streaming, where route says, message by message,
// with headers and trailers. It is how mecha proxies arbitrary gRPC
// services between apps, as Dapr does.
func GRPCProxy(route Router) grpc.StreamHandler {
	return func(_ any, in grpc.ServerStream) error {
		method, ok := grpc.MethodFromServerStream(in)
		if !ok {
			return status.Error(codes.Internal, "proxy: no method in the stream")
		}
		return route(in.Context(), method, func(octx context.Context, conn *grpc.ClientConn) error {
			return pump(octx, in, conn, method)
		})
	}
}

// RouteGRPC runs one proxied call through the invocation pipeline: inv
// resolves callee (balancing, DC routing), its resiliency policy applies
// (a stream is never sent twice), forward runs on the connection that
// conn gives for the target, and the balancer learns the call's outcome
// when the stream ends. token, when set, goes to another runtime.
func RouteGRPC(ctx context.Context, inv *invoke.Invoker, caller, callee, method string, forward Forward,
	conn func(invoke.Target) (*grpc.ClientConn, error), token string) error {
	var ferr error
	_, err := inv.Do(ctx, &invoke.Call{AppID: callee, Method: method, Verb: "POST", Once: true, Instance: firstMD(ctx, invoke.HeaderInstance)},
		func(actx context.Context, t invoke.Target) (int, error) {
			c, err := conn(t)
			if err != nil {
				return 0, err
			}
			kv := []string{invoke.HeaderCaller, caller, invoke.HeaderCallee, t.AppID, "traceparent", tracecontext.Child(firstMD(ctx, "traceparent"))}
			if t.Remote {
				kv = append(kv, invoke.TokenHeader, token)
			}
			ferr = forward(OutgoingContext(actx, kv...), c)
			return appchannel.HTTPStatusFromCode(status.Code(ferr)), nil
		})
	if errors.Is(err, invoke.ErrAppNotFound) {
		return status.Error(codes.NotFound, err.Error())
	}
	if err != nil {
		var gs interface{ GRPCStatus() *status.Status }
		if errors.As(err, &gs) {
			if st := gs.GRPCStatus(); st.Code() != codes.OK && st.Code() != codes.Unknown {
				return st.Err()
			}
		}
		return status.Error(codes.Unavailable, err.Error())
	}
	return ferr
}

func firstMD(ctx context.Context, key string) string {
	if v := metadata.ValueFromIncomingContext(ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// pump proxies one call: caller → target and target → caller, headers
// first, then the target's trailer and status.
func pump(octx context.Context, in grpc.ServerStream, conn *grpc.ClientConn, method string) error {
	ctx, cancel := context.WithCancel(octx)
	defer cancel()
	out, err := conn.NewStream(ctx, clientStreamDesc, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	// Caller → target.
	up := make(chan error, 1)
	go func() {
		f := &frame{}
		for {
			if err := in.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					up <- out.CloseSend()
					return
				}
				up <- err
				return
			}
			if err := out.SendMsg(f); err != nil {
				up <- err
				return
			}
		}
	}()
	// Target → caller, headers first.
	f := &frame{}
	first := true
	for {
		err := out.RecvMsg(f)
		if first {
			first = false
			if md, herr := out.Header(); herr == nil {
				_ = in.SendHeader(md)
			}
		}
		if errors.Is(err, io.EOF) {
			in.SetTrailer(out.Trailer())
			return nil
		}
		if err != nil {
			in.SetTrailer(out.Trailer())
			return err // the target's status, as it gave it
		}
		if err := in.SendMsg(f); err != nil {
			cancel()
			return err
		}
		select {
		case err := <-up:
			if err != nil {
				cancel()
				return status.Errorf(codes.Internal, "proxy: forwarding the request: %v", err)
			}
			up = nil // the caller is done sending; keep reading
		default:
		}
	}
}

// forwardMD is the caller's metadata to pass on, without what the runtime
// sets itself.
func forwardMD(ctx context.Context) metadata.MD {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		if invoke.Reserved(k) || k == "content-type" || k == "user-agent" || k == "traceparent" {
			continue // the runtime's, the transport's, or set anew per hop
		}
		out[k] = v
	}
	return out
}

// OutgoingContext is ctx's incoming metadata as outgoing metadata, minus
// what the runtime sets, plus kv.
func OutgoingContext(ctx context.Context, kv ...string) context.Context {
	md := forwardMD(ctx)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			md.Set(kv[i], kv[i+1])
		}
	}
	return metadata.NewOutgoingContext(ctx, md)
}
