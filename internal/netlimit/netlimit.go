// Package netlimit gives every listener of mecha the same treatment at
// its limits: a failed accept (a full descriptor table, EMFILE or
// ENFILE, or the kernel out of buffers) is retried with a growing wait
// instead of stopping the server for good; the connections open at once
// are capped, and one accepted past the cap is closed at once, so that
// the descriptors left serve the others (and the runtime's own files);
// and the open, refused and failed counts are there for metrics.
//
// Timeouts of idle and header-less connections are the servers' own
// (each protocol knows where a request starts); see the callers.
package netlimit

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Listener.
type Options struct {
	// Name names the listener in logs and metrics ("http", "internal").
	Name string
	// MaxConns caps the connections open at once; 0 means no cap.
	MaxConns int
	// Logger receives accept failures and refusals, at most one line a
	// second of each; nil discards them.
	Logger *slog.Logger
}

// Listener is a net.Listener with retried accepts and a connection cap.
type Listener struct {
	net.Listener
	opts Options

	open, refused, acceptErrors atomic.Int64

	closeOnce sync.Once
	closed    chan struct{}

	// lastLog rate-limits the log lines (unix nanoseconds).
	lastAcceptLog, lastRefuseLog atomic.Int64
}

// Wrap puts l under the options.
func Wrap(l net.Listener, opts Options) *Listener {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Listener{Listener: l, opts: opts, closed: make(chan struct{})}
}

// Accept waits for the next connection under the cap. It returns an
// error only when the listener is closed.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return nil, net.ErrClosed
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			l.acceptErrors.Add(1)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if l.logDue(&l.lastAcceptLog) {
				l.opts.Logger.Error("accept failed; retrying", "listener", l.opts.Name, "err", err, "retry_in", delay)
			}
			t := time.NewTimer(delay)
			select {
			case <-l.closed:
				t.Stop()
				return nil, net.ErrClosed
			case <-t.C:
			}
			continue
		}
		delay = 0
		if l.opts.MaxConns > 0 && l.open.Load() >= int64(l.opts.MaxConns) {
			// Closed before anything is read: the client sees the
			// connection end, and may try again or elsewhere. Counted
			// first, so whoever sees the close also sees the count.
			l.refused.Add(1)
			c.Close()
			if l.logDue(&l.lastRefuseLog) {
				l.opts.Logger.Warn("connection refused at the connection cap", "listener", l.opts.Name, "max_connections", l.opts.MaxConns, "remote", c.RemoteAddr().String())
			}
			continue
		}
		l.open.Add(1)
		return &conn{Conn: c, l: l}, nil
	}
}

// Close closes the listener.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// Open is the number of connections open now.
func (l *Listener) Open() int64 { return l.open.Load() }

// Refused is the number of connections closed at the cap.
func (l *Listener) Refused() int64 { return l.refused.Load() }

// AcceptErrors is the number of failed accepts.
func (l *Listener) AcceptErrors() int64 { return l.acceptErrors.Load() }

// Name is the listener's name.
func (l *Listener) Name() string { return l.opts.Name }

// logDue reports whether a rate-limited line may be logged now.
func (l *Listener) logDue(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(time.Second) && last.CompareAndSwap(prev, now)
}

// conn counts itself out of the listener once, when closed.
type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// Unwrap returns the connection underneath (for TLS and TCP options).
func (c *conn) Unwrap() net.Conn { return c.Conn }

// Timeouts are what every server of the runtime applies to its
// connections, so that idle and header-less ones do not hold descriptors.
type Timeouts struct {
	// Header bounds how long a connection may take to send a request's
	// headers (or its TLS handshake and HTTP/2 preface) once it starts
	// one, and how long a new connection may stay silent.
	Header time.Duration
	// Idle closes a connection that has had no request for that long.
	Idle time.Duration
	// Body bounds reading a request body and writing a response: long
	// enough for the largest streamed invocation bodies.
	Body time.Duration
}

// DefaultTimeouts are 10 s for headers, 2 minutes idle and 10 minutes
// for a body.
var DefaultTimeouts = Timeouts{Header: 10 * time.Second, Idle: 2 * time.Minute, Body: 10 * time.Minute}

// OrDefault fills the zero fields from DefaultTimeouts.
func (t Timeouts) OrDefault() Timeouts {
	if t.Header <= 0 {
		t.Header = DefaultTimeouts.Header
	}
	if t.Idle <= 0 {
		t.Idle = DefaultTimeouts.Idle
	}
	if t.Body <= 0 {
		t.Body = DefaultTimeouts.Body
	}
	return t
}
