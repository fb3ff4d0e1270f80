package netlimit

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"syscall"
	"time"
)

// PeerClosed reports whether the other end of c has closed its side (a
// client that hung up), without reading anything from c: it peeks at the
// socket. It reports false when it cannot tell.
func PeerClosed(c net.Conn) bool {
	for {
		switch u := c.(type) {
		case interface{ Unwrap() net.Conn }:
			c = u.Unwrap()
			continue
		case *tls.Conn:
			c = u.NetConn()
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	_ = raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n == 0 && err == nil
	})
	return closed
}

// hangupEvery is how often a call in progress looks whether its client
// is still there; the first look comes after that long, so quick calls
// never pay for it.
const hangupEvery = 500 * time.Millisecond

// WatchHangup returns a context derived from base that also ends when
// the client on conn hangs up, for a call that may take a while; stop
// releases it when the call is over.
func WatchHangup(base context.Context, conn net.Conn) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(base)
	w := &watch{}
	w.t = time.AfterFunc(hangupEvery, func() {
		if ctx.Err() != nil {
			return
		}
		if PeerClosed(conn) {
			cancel(errHungUp)
			return
		}
		w.mu.Lock()
		if !w.stopped {
			w.t.Reset(hangupEvery)
		}
		w.mu.Unlock()
	})
	return ctx, func() {
		w.mu.Lock()
		w.stopped = true
		w.t.Stop()
		w.mu.Unlock()
		cancel(nil)
	}
}

// watch is one call's hang-up watch; mu orders the timer's re-arming
// with stop.
type watch struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

// errHungUp is the cause of a call's context ended by its client leaving.
var errHungUp = hangupError{}

type hangupError struct{}

func (hangupError) Error() string { return "the client hung up" }
