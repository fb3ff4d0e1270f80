package muxconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnreachable wraps the failures to reach the server or to keep the
// connection: the request may or may not have run.
var ErrUnreachable = errors.New("muxconn: peer unreachable")

// ErrNotSent wraps (beside ErrUnreachable) a failure to connect: the
// request was not sent, so the caller may send it elsewhere.
var ErrNotSent = errors.New("muxconn: request not sent")

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("muxconn: client closed")

// Client calls one server over a few pooled connections.
type Client struct {
	// Addr is the server's internal port.
	Addr string
	// Token is sent in the hello.
	Token string
	// TLS, when set, secures the connections (the cluster's mutual TLS).
	TLS *tls.Config
	// Conns is how many connections to keep (2 when zero): requests
	// spread over them.
	Conns int
	// DialTimeout bounds a connection's dial and hello (5 s when zero).
	DialTimeout time.Duration

	// dialMu lets one dial at a time fill the pool, so that callers who
	// find it short at once do not all dial.
	dialMu sync.Mutex
	mu     sync.Mutex // guards conns and closed
	conns  []*clientConn
	closed bool
	next   atomic.Uint32
}

// clientConn is one connection with its requests in flight.
type clientConn struct {
	c   net.Conn
	w   *writer
	ids atomic.Uint32

	mu      sync.Mutex // guards pending and err
	pending map[uint32]chan result
	err     error // set once the connection failed
	done    chan struct{}
}

type result struct {
	body []byte
	err  error
}

// Call sends a request for method and waits for its answer, or ctx.
func (cl *Client) Call(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	cc, err := cl.conn(ctx)
	if err != nil {
		if errors.Is(err, ErrUnreachable) {
			err = fmt.Errorf("%w (%w)", err, ErrNotSent)
		}
		return nil, err
	}
	id := cc.ids.Add(1)
	ch := make(chan result, 1)
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		cl.drop(cc)
		return nil, err
	}
	cc.pending[id] = ch
	cc.mu.Unlock()
	if !cc.w.send(appendFrame(nil, KindRequest, id, method, body)) {
		cc.fail(fmt.Errorf("%w: %s: write failed", ErrUnreachable, cl.Addr))
		cl.drop(cc)
	}
	select {
	case r := <-ch:
		return r.body, r.err
	case <-ctx.Done():
		cc.mu.Lock()
		delete(cc.pending, id)
		cc.mu.Unlock()
		return nil, ctx.Err()
	}
}

// conn returns a live connection, dialling one when the pool is short.
func (cl *Client) conn(ctx context.Context) (*clientConn, error) {
	want := cl.Conns
	if want <= 0 {
		want = 2
	}
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return nil, ErrClosed
	}
	live := cl.conns[:0]
	for _, cc := range cl.conns {
		if !cc.failed() {
			live = append(live, cc)
		}
	}
	cl.conns = live
	if len(cl.conns) >= want {
		cc := cl.conns[int(cl.next.Add(1))%len(cl.conns)]
		cl.mu.Unlock()
		return cc, nil
	}
	cl.mu.Unlock()
	cl.dialMu.Lock()
	defer cl.dialMu.Unlock()
	cl.mu.Lock()
	if len(cl.conns) >= want { // another caller filled it meanwhile
		cc := cl.conns[int(cl.next.Add(1))%len(cl.conns)]
		cl.mu.Unlock()
		return cc, nil
	}
	cl.mu.Unlock()
	cc, err := cl.dial(ctx)
	if err != nil {
		// A pool that has a connection still serves through it.
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if len(cl.conns) > 0 {
			return cl.conns[0], nil
		}
		return nil, err
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed {
		cc.c.Close()
		return nil, ErrClosed
	}
	cl.conns = append(cl.conns, cc)
	return cc, nil
}

func (cl *Client) dial(ctx context.Context) (*clientConn, error) {
	timeout := cl.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "tcp", cl.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, cl.Addr, err)
	}
	if cl.TLS != nil {
		tc := tls.Client(c, cl.TLS)
		if err := tc.HandshakeContext(dctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s: TLS: %v", ErrUnreachable, cl.Addr, err)
		}
		c = tc
	}
	dl, _ := dctx.Deadline()
	_ = c.SetDeadline(dl)
	hello := append([]byte(Preface), appendFrame(nil, KindHello, 0, 0, []byte(cl.Token))...)
	br := bufio.NewReaderSize(c, 32<<10)
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: %s: hello: %v", ErrUnreachable, cl.Addr, err)
	}
	f, _, err := readFrame(br, nil)
	if err != nil || f.kind != KindHello {
		c.Close()
		if err == nil {
			err = fmt.Errorf("answered kind %d", f.kind)
		}
		return nil, fmt.Errorf("%w: %s: no hello back (a wrong peer token?): %v", ErrUnreachable, cl.Addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	cc := &clientConn{c: c, w: newWriter(c, 30*time.Second), pending: map[uint32]chan result{}, done: make(chan struct{})}
	go cc.readLoop(br, cl.Addr)
	return cc, nil
}

// readLoop hands each answer to its caller until the connection fails;
// it owns the reading side and ends with the connection.
func (cc *clientConn) readLoop(br *bufio.Reader, addr string) {
	defer close(cc.done)
	var buf []byte
	for {
		var f frame
		var err error
		f, buf, err = readFrame(br, buf)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
				err = fmt.Errorf("%w: %s: connection closed", ErrUnreachable, addr)
			default:
				err = fmt.Errorf("%w: %s: %v", ErrUnreachable, addr, err)
			}
			cc.fail(err)
			return
		}
		var r result
		switch f.kind {
		case KindGoAway:
			// Every request the server read is answered: those still
			// pending were not read. New calls go elsewhere.
			cc.fail(&Error{Code: CodeStopping, Msg: fmt.Sprintf("%s is stopping; it did not read the request", addr)})
			return
		case KindResponse:
			r.body = append([]byte(nil), f.body...)
		case KindError:
			r.err = &Error{Code: f.body[0], Msg: string(f.body[1:])}
		default:
			cc.fail(fmt.Errorf("%w: %s: unexpected frame kind %d", ErrUnreachable, addr, f.kind))
			return
		}
		cc.mu.Lock()
		ch := cc.pending[f.id]
		delete(cc.pending, f.id)
		cc.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// failed reports whether the connection has failed.
func (cc *clientConn) failed() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err != nil
}

// fail ends the connection: every request in flight gets err.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	if cc.err == nil {
		cc.err = err
	}
	pending := cc.pending
	cc.pending = map[uint32]chan result{}
	cc.mu.Unlock()
	cc.c.Close()
	for _, ch := range pending {
		ch <- result{err: err}
	}
}

// drop takes a failed connection out of the pool.
func (cl *Client) drop(cc *clientConn) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for i, c := range cl.conns {
		if c == cc {
			cl.conns = append(cl.conns[:i], cl.conns[i+1:]...)
			return
		}
	}
}

// Close closes the connections; calls in flight fail with ErrClosed.
func (cl *Client) Close() error {
	cl.mu.Lock()
	conns := cl.conns
	cl.conns, cl.closed = nil, true
	cl.mu.Unlock()
	for _, cc := range conns {
		cc.fail(ErrClosed)
		<-cc.done
	}
	return nil
}
