package peer

import (
	"bufio"
	"context"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"mecha/runtime/appchannel"
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

// split hands each connection of ln to httpL or grpcL by its first bytes,
// until ln closes.
func split(ln net.Listener, httpL, grpcL *chanListener) {
	defer httpL.Close()
	defer grpcL.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			r := bufio.NewReaderSize(c, 4096)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			head, err := r.Peek(len(h2Preface))
			_ = c.SetReadDeadline(time.Time{})
			dst := httpL
			if err == nil && string(head) == h2Preface {
				dst = grpcL
			} else if err != nil && len(head) == 0 {
				c.Close()
				return
			}
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
	go split(ln, httpL, grpcL)
	go func() { _ = s.grpc.Serve(grpcL) }()
	err := s.srv.Serve(httpL)
	ln.Close()
	return err
}

// direct is the internal port's director for proxied gRPC calls: to this
// runtime's gRPC app named by dapr-callee-app-id, after the peer token
// and access control.
func (s *Server) direct(ctx context.Context, method string) (context.Context, *grpc.ClientConn, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if !s.tokenOK(first(TokenHeader)) {
		return nil, nil, status.Error(codes.PermissionDenied, "a call without the cluster's peer token (--gossip-key)")
	}
	callee := first(string(HeaderCallee))
	channel, appID, ok := s.Lookup(callee)
	if !ok {
		return nil, nil, status.Errorf(codes.NotFound, "this runtime does not host %q", callee)
	}
	caller := first(string(HeaderCaller))
	if s.Allow != nil {
		if err := s.Allow(caller, "POST", method); err != nil {
			return nil, nil, status.Errorf(codes.PermissionDenied, "access control policy has denied access to id: %s: %v", appID, err)
		}
	}
	var ch appchannel.Channel
	if channel != nil {
		ch = channel()
	}
	g, ok := ch.(*appchannel.GRPC)
	if !ok {
		return nil, nil, status.Errorf(codes.Unimplemented, "app %q does not serve gRPC (--app-protocol grpc)", appID)
	}
	return OutgoingContext(ctx, string(HeaderCaller), caller, string(HeaderCallee), appID), g.Conn(), nil
}
