// Package httpserve closes a gap in fasthttp's shutdown: a
// fasthttp.Server shut down before its Serve has registered the
// listener returns at once, and the Serve that follows then serves
// forever. Server remembers every listener it is given and closes them
// after the shutdown, so that a Serve that started late returns, and a
// Serve that starts after the shutdown does not serve at all.
package httpserve

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// Server is a fasthttp.Server whose shutdown also stops a Serve that
// raced it.
type Server struct {
	*fasthttp.Server

	mu      sync.Mutex
	stopped bool
	lns     []net.Listener
	// down is stopped, read by every Accept without the lock.
	down atomic.Bool
}

// listener refuses what it accepts once the server is shut down: a
// Serve that reached fasthttp after fasthttp's own shutdown returned
// would otherwise serve a connection that was waiting in the queue.
type listener struct {
	net.Listener
	s *Server
}

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.s.down.Load() {
		c.Close()
		return nil, net.ErrClosed
	}
	return c, err
}

// New wraps srv.
func New(srv *fasthttp.Server) *Server { return &Server{Server: srv} }

// Serve serves ln until the shutdown; after the shutdown it closes ln
// and returns nil.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	return s.Server.Serve(listener{ln, s})
}

// ShutdownWithContext stops taking connections and waits for requests
// in flight, or for ctx to end; every listener given to Serve is closed
// when it returns.
func (s *Server) ShutdownWithContext(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	s.down.Store(true)
	lns := s.lns
	s.mu.Unlock()
	err := s.Server.ShutdownWithContext(ctx)
	for _, ln := range lns {
		_ = ln.Close() // already closed unless Serve had not reached fasthttp
	}
	return err
}
