package runtime

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
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
	// creds secure the connections (the cluster's mutual TLS); nil
	// means plaintext. Set before the first call.
	creds credentials.TransportCredentials

	mu    sync.Mutex // guards conns
	conns map[string]*grpc.ClientConn
}

func (g *grpcConns) get(addr string) (*grpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.conns[addr]; c != nil {
		return c, nil
	}
	creds := g.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
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

// grpcRouter proxies an app's call to a gRPC service the runtime does
// not implement to the app named by its dapr-app-id metadata, through
// the invocation pipeline: its own gRPC app, or another runtime's
// internal port (HTTP/2 on the same port), which passes it to its app.
// caller is the calling app.
func (r *Runtime) grpcRouter(caller string, inv *invoke.Invoker) peer.Router {
	return func(ctx context.Context, method string, forward peer.Forward) error {
		ids := metadata.ValueFromIncomingContext(ctx, invoke.HeaderAppID)
		if len(ids) == 0 || ids[0] == "" {
			return status.Errorf(codes.Unimplemented, "unknown service or method %s (set the dapr-app-id metadata to call an app's own gRPC service)", method)
		}
		return peer.RouteGRPC(ctx, inv, caller, ids[0], method, forward, func(t invoke.Target) (*grpc.ClientConn, error) {
			if t.Remote {
				h, ok := t.Channel.(*appchannel.HTTP)
				if !ok {
					return nil, status.Errorf(codes.Internal, "no address for %q", t.AppID)
				}
				return r.grpcConns.get(h.Addr())
			}
			g, ok := t.Channel.(*appchannel.GRPC)
			if !ok {
				return nil, status.Errorf(codes.Unimplemented, "app %q does not serve gRPC (--app-protocol grpc)", t.AppID)
			}
			return g.Conn(), nil
		}, r.peerToken)
	}
}
