package netlimit

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func pair(t *testing.T, l net.Listener) (client, server net.Conn) {
	t.Helper()
	done := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- nil
			return
		}
		done <- c
	}()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-done
	if server == nil {
		t.Fatal("accept failed")
	}
	return client, server
}

func TestCapAndCounts(t *testing.T) {
	base, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(base, Options{Name: "t", MaxConns: 2})
	defer l.Close()
	c1, s1 := pair(t, l)
	c2, s2 := pair(t, l)
	defer c1.Close()
	defer c2.Close()
	if l.Open() != 2 {
		t.Fatalf("Open = %d, want 2", l.Open())
	}
	// A third is closed at once; Accept goes on to the next one.
	c3, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	got := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); got <- c }()
	_ = c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection past the cap was served")
	}
	if l.Refused() != 1 {
		t.Fatalf("Refused = %d", l.Refused())
	}
	s1.Close()
	s1.Close() // counted out once
	if l.Open() != 1 {
		t.Fatalf("Open after a close = %d, want 1", l.Open())
	}
	c4, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	if s := <-got; s == nil {
		t.Fatal("a connection under the cap was not accepted")
	} else {
		s.Close()
	}
	s2.Close()
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v", err)
	}
}

// failing fails its first n accepts with EMFILE.
type failing struct {
	net.Listener
	n int
}

func (f *failing) Accept() (net.Conn, error) {
	if f.n > 0 {
		f.n--
		return nil, &net.OpError{Op: "accept", Err: syscall.EMFILE}
	}
	return f.Listener.Accept()
}

func TestAcceptErrorsRetried(t *testing.T) {
	base, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(&failing{Listener: base, n: 3}, Options{Name: "t"})
	defer l.Close()
	c, s := pair(t, l)
	c.Close()
	s.Close()
	if l.AcceptErrors() != 3 {
		t.Fatalf("AcceptErrors = %d, want 3", l.AcceptErrors())
	}
}

func TestWatchHangup(t *testing.T) {
	base, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(base, Options{Name: "t"})
	defer l.Close()
	c, s := pair(t, l)
	defer s.Close()
	if PeerClosed(s) {
		t.Fatal("PeerClosed on a live connection")
	}
	c.Write([]byte("pipelined")) // data waiting is not a hang-up
	buf := make([]byte, 9)
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(buf[:1]); err != nil {
		t.Fatal(err)
	}
	if PeerClosed(s) {
		t.Fatal("PeerClosed with data waiting")
	}
	if _, err := s.Read(buf[1:]); err != nil {
		t.Fatal(err)
	}
	ctx, stop := WatchHangup(context.Background(), s)
	defer stop()
	c.Close()
	select {
	case <-ctx.Done():
		if context.Cause(ctx) != errHungUp {
			t.Fatalf("cause %v", context.Cause(ctx))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the context did not end when the client hung up")
	}
}
