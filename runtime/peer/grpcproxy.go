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

// Director chooses where a proxied call goes: the outgoing context
// (with the metadata to send) and the connection to send it on.
type Director func(ctx context.Context, fullMethod string) (context.Context, *grpc.ClientConn, error)

var clientStreamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// GRPCProxy is a grpc.StreamHandler for unknown services that forwards
// each call, unary or streaming, to where director says, message by
// message, with headers and trailers. It is how mecha proxies arbitrary
// gRPC services between apps, as Dapr does.
func GRPCProxy(director Director) grpc.StreamHandler {
	return func(_ any, in grpc.ServerStream) error {
		method, ok := grpc.MethodFromServerStream(in)
		if !ok {
			return status.Error(codes.Internal, "proxy: no method in the stream")
		}
		octx, conn, err := director(in.Context(), method)
		if err != nil {
			return err
		}
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
}

// forwardMD is the caller's metadata to pass on, without what the runtime
// sets itself.
func forwardMD(ctx context.Context) metadata.MD {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		switch k {
		case "dapr-caller-app-id", "dapr-callee-app-id", "dapr-api-token", TokenHeader, ":authority", "content-type", "user-agent", "te":
			continue
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
