// Package httpserve closes a gap in fasthttp's shutdown: a
// fasthttp.Server shut down before its Serve has registered the
// listener returns at once, and the Serve that follows then serves
// forever. Server remembers every listener it is given and closes them
// after the shutdown, so that a Serve that started late returns, and a
// Serve that starts after the shutdown does not serve at all.
//
// It also tells a client that asked nothing from one that sent a bad
// request when a read times out (ReadTimedOut).
package httpserve

import (
	"context"
	"errors"
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
	if err != nil {
		return nil, err
	}
	if l.s.down.Load() {
		c.Close()
		return nil, net.ErrClosed
	}
	return &conn{Conn: c}, nil
}

// conn counts the bytes read since the last write: none when a read
// times out means the client asked nothing since its last answer.
type conn struct {
	net.Conn
	readSinceWrite atomic.Int64
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.readSinceWrite.Add(int64(n))
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	c.readSinceWrite.Store(0)
	return c.Conn.Write(b)
}

// Unwrap is the accepted connection (netlimit.PeerClosed peeks at it).
func (c *conn) Unwrap() net.Conn { return c.Conn }

// ReadTimedOut is for a fasthttp ErrorHandler: when err is a read timeout
// on a connection whose client sent nothing since its last answer (or at
// all), it closes the connection and reports true, and the handler
// writes nothing. fasthttp would otherwise answer 400 on a connection
// nobody asked on (Go's http.Transport keeps spare ones), which that
// client reads as an unsolicited response; net/http closes such a
// connection silently too. A client that sent part of a request, or one
// fasthttp could not frame (bare LFs), still gets its 400.
func ReadTimedOut(ctx *fasthttp.RequestCtx, err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	c, ok := ctx.Conn().(*conn)
	if !ok || c.readSinceWrite.Load() != 0 {
		return false
	}
	_ = c.Close()
	return true
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
