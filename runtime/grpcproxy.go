package runtime

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"mecha/runtime/appchannel"
	"mecha/runtime/invoke"
	"mecha/runtime/peer"
)

// grpcConns are the HTTP/2 connections to other runtimes' internal
// ports, for proxied gRPC calls.
type grpcConns struct {
	mu    sync.Mutex // guards conns
	conns map[string]*grpc.ClientConn
}

func (g *grpcConns) get(addr string) (*grpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.conns[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	if g.conns == nil {
		g.conns = map[string]*grpc.ClientConn{}
	}
	g.conns[addr] = c
	return c, nil
}

func (g *grpcConns) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.conns {
		_ = c.Close()
	}
	g.conns = nil
}

// grpcDirector proxies an app's call to a gRPC service the runtime does
// not implement to the app named by its dapr-app-id metadata: its own
// gRPC app, or another runtime's internal port (HTTP/2 on the same port),
// which passes it to its app. caller is the calling app.
func (r *Runtime) grpcDirector(caller string, res invoke.Resolver) peer.Director {
	return func(ctx context.Context, method string) (context.Context, *grpc.ClientConn, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		ids := md.Get("dapr-app-id")
		if len(ids) == 0 || ids[0] == "" {
			return nil, nil, status.Errorf(codes.Unimplemented, "unknown service or method %s (set the dapr-app-id metadata to call an app's own gRPC service)", method)
		}
		t, err := res.Resolve(ctx, ids[0])
		if err != nil {
			return nil, nil, status.Errorf(codes.NotFound, "%v", err)
		}
		t.Finish(nil, 0)
		if !t.Remote {
			g, ok := t.Channel.(*appchannel.GRPC)
			if !ok {
				return nil, nil, status.Errorf(codes.Unimplemented, "app %q does not serve gRPC (--app-protocol grpc)", t.AppID)
			}
			return peer.OutgoingContext(ctx, "dapr-caller-app-id", caller, "dapr-callee-app-id", t.AppID), g.Conn(), nil
		}
		h, ok := t.Channel.(*appchannel.HTTP)
		if !ok {
			return nil, nil, status.Errorf(codes.Internal, "no address for %q", t.AppID)
		}
		conn, err := r.grpcConns.get(h.Addr())
		if err != nil {
			return nil, nil, status.Errorf(codes.Unavailable, "%v", err)
		}
		return peer.OutgoingContext(ctx, "dapr-caller-app-id", caller, "dapr-callee-app-id", t.AppID, peer.TokenHeader, r.peerToken), conn, nil
	}
}
