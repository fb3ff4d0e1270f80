package peer

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"mecha/internal/muxconn"
	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/invoke"
)

// h2Preface starts every HTTP/2 connection: a gRPC client's.
const h2Preface = "PRI * HTTP/2.0"

// chanListener is a net.Listener fed connections by a splitter.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// peekedConn replays the bytes read to tell the protocol.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// split hands each connection of ln to httpL, grpcL or mux by its first
// bytes, until ln closes.
func split(ln net.Listener, httpL, grpcL *chanListener, mux func(c net.Conn, r *bufio.Reader), headerTimeout time.Duration) {
	defer httpL.Close()
	defer grpcL.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			r := bufio.NewReaderSize(c, 4096)
			_ = c.SetReadDeadline(time.Now().Add(headerTimeout))
			head, err := r.Peek(5)
			dst := httpL
			switch {
			case err == nil && string(head) == muxconn.Preface[:5]:
				p, err := r.Peek(len(muxconn.Preface))
				_ = c.SetReadDeadline(time.Time{})
				if err != nil || string(p) != muxconn.Preface || mux == nil {
					c.Close()
					return
				}
				_, _ = r.Discard(len(muxconn.Preface))
				mux(c, r)
				return
			case err == nil && string(head) == h2Preface[:5]:
				head, err = r.Peek(len(h2Preface))
				if err == nil && string(head) == h2Preface {
					dst = grpcL
				}
			case err != nil && len(head) == 0:
				c.Close()
				return
			}
			_ = c.SetReadDeadline(time.Time{})
			select {
			case dst.ch <- &peekedConn{Conn: c, r: r}:
			case <-dst.closed:
				c.Close()
			}
		}()
	}
}

// ServeBoth takes connections on ln: HTTP/1.1 (invocations) and HTTP/2
// (proxied gRPC calls) on the same port, until Shutdown.
func (s *Server) ServeBoth(ln net.Listener) error {
	s.init()
	httpL, grpcL := newChanListener(ln.Addr()), newChanListener(ln.Addr())
	var mux func(net.Conn, *bufio.Reader)
	if s.Mux != nil {
		mux = func(c net.Conn, r *bufio.Reader) {
			base := s.Context
			if base == nil {
				base = context.Background()
			}
			s.Mux.ServeConn(base, c, r)
		}
	}
	go split(ln, httpL, grpcL, mux, s.Timeouts.Header)
	go func() { _ = s.grpc.Serve(grpcL) }()
	err := s.srv.Serve(httpL)
	ln.Close()
	return err
}

// route sends a proxied gRPC call that arrived on the internal port on,
// through the invocation pipeline: to the gRPC app named by
// dapr-callee-app-id, after the peer token and access control (or, on a
// gateway, to an instance of its DC).
func (s *Server) route(ctx context.Context, method string, forward Forward) error {
	first := func(k string) string {
		if v := metadata.ValueFromIncomingContext(ctx, k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if !s.tokenOK(first(invoke.TokenHeader)) {
		return status.Error(codes.PermissionDenied, "a call without the cluster's peer token (--gossip-key)")
	}
	callee, caller := first(invoke.HeaderCallee), first(invoke.HeaderCaller)
	_, appID, hosted := s.Lookup(callee)
	switch {
	case hosted && s.Allow != nil:
		if err := s.Allow(caller, "POST", method); err != nil {
			return status.Errorf(codes.PermissionDenied, "access control policy has denied access to id: %s: %v", appID, err)
		}
	case !hosted && !s.Gateway:
		if inst := first(invoke.HeaderInstance); inst != "" {
			return apierr.InstanceNotFound(callee, inst, errors.New("this runtime does not host it (stale catalog?)"))
		}
		return status.Errorf(codes.NotFound, "this runtime does not host %q", callee)
	}
	return RouteGRPC(ctx, s.Invoker, caller, callee, method, forward, func(t invoke.Target) (*grpc.ClientConn, error) {
		if t.Remote {
			return nil, status.Errorf(codes.Unimplemented, "a gateway does not forward proxied gRPC calls yet")
		}
		g, ok := t.Channel.(*appchannel.GRPC)
		if !ok {
			return nil, status.Errorf(codes.Unimplemented, "app %q does not serve gRPC (--app-protocol grpc)", t.AppID)
		}
		return g.Conn(), nil
	}, "")
}
