package muxconn

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"mecha/internal/poll"

	"mecha/internal/netlimit"
)

// serve runs srv on a loopback listener, reading the preface as the
// internal port's splitter does.
func serve(t testing.TB, srv *Server) (addr string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := make([]byte, len(Preface))
				if _, err := io.ReadFull(c, p); err != nil || string(p) != Preface {
					c.Close()
					return
				}
				srv.ServeConn(context.Background(), c, nil)
			}()
		}
	}()
	return l.Addr().String(), func() { l.Close(); _ = srv.Shutdown(context.Background()); wg.Wait() }
}

func echo(_ context.Context, method uint16, body []byte) ([]byte, error) {
	switch method {
	case 1:
		return append([]byte("echo:"), body...), nil
	case 2:
		return nil, errors.New("boom")
	case 3:
		time.Sleep(200 * time.Millisecond)
		return []byte("slow"), nil
	}
	return nil, ErrUnknownMethod
}

func TestRoundTrips(t *testing.T) {
	addr, stop := serve(t, &Server{Token: "tok", Handler: echo})
	defer stop()
	cl := &Client{Addr: addr, Token: "tok"}
	defer cl.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				msg := fmt.Sprintf("%d-%d", g, i)
				out, err := cl.Call(ctx, 1, []byte(msg))
				if err != nil || string(out) != "echo:"+msg {
					t.Errorf("call %s: %q, %v", msg, out, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var e *Error
	if _, err := cl.Call(ctx, 2, nil); !errors.As(err, &e) || e.Code != CodeApp || e.Msg != "boom" {
		t.Errorf("a handler's error: %v", err)
	}
	if _, err := cl.Call(ctx, 9, nil); !errors.As(err, &e) || e.Code != CodeUnknownMethod {
		t.Errorf("an unknown method: %v", err)
	}
	big := bytes.Repeat([]byte("x"), 4<<20)
	if out, err := cl.Call(ctx, 1, big); err != nil || len(out) != len(big)+5 {
		t.Errorf("a 4 MiB body: %d bytes, %v", len(out), err)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := cl.Call(cctx, 3, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a call past its context: %v", err)
	}
}

func TestWrongToken(t *testing.T) {
	addr, stop := serve(t, &Server{Token: "tok", Handler: echo})
	defer stop()
	cl := &Client{Addr: addr, Token: "guess"}
	defer cl.Close()
	if _, err := cl.Call(context.Background(), 1, nil); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "peer token") {
		t.Fatalf("a wrong token: %v", err)
	}
	// No hello at all: the server closes the connection after its header
	// timeout.
	srv := &Server{Token: "tok", Handler: echo, Timeouts: netlimit.Timeouts{Header: 50 * time.Millisecond}}
	addr2, stop2 := serve(t, srv)
	defer stop2()
	c, err := net.Dial("tcp", addr2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, Preface)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a silent connection was kept")
	}
}

func TestConnectionLossFailsCallsAndRedials(t *testing.T) {
	block := make(chan struct{})
	srv := &Server{Handler: func(ctx context.Context, m uint16, b []byte) ([]byte, error) {
		if m == 7 {
			<-block
		}
		return b, nil
	}}
	addr, stop := serve(t, srv)
	defer stop()
	defer close(block)
	cl := &Client{Addr: addr, Conns: 1}
	defer cl.Close()
	if _, err := cl.Call(context.Background(), 1, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 1)
	go func() { _, err := cl.Call(context.Background(), 7, nil); errs <- err }()
	// Kill the connection under the call.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cl.mu.Lock()
		n := len(cl.conns)
		var cc *clientConn
		if n > 0 {
			cc = cl.conns[0]
		}
		cl.mu.Unlock()
		if cc != nil {
			cc.mu.Lock()
			waiting := len(cc.pending)
			cc.mu.Unlock()
			if waiting > 0 {
				cc.c.Close()
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the call never went out")
		}
		time.Sleep(time.Millisecond)
	}
	if err := <-errs; !errors.Is(err, ErrUnreachable) {
		t.Fatalf("a call on a lost connection: %v", err)
	}
	if out, err := cl.Call(context.Background(), 1, []byte("again")); err != nil || string(out) != "again" {
		t.Fatalf("after a lost connection: %q, %v", out, err)
	}
}

func TestBusyAndStopping(t *testing.T) {
	release := make(chan struct{})
	srv := &Server{MaxInFlight: 2, Handler: func(ctx context.Context, m uint16, b []byte) ([]byte, error) {
		<-release
		return b, nil
	}}
	addr, stop := serve(t, srv)
	cl := &Client{Addr: addr, Conns: 1}
	defer cl.Close()
	results := make(chan error, 3)
	for range 3 {
		go func() { _, err := cl.Call(context.Background(), 1, nil); results <- err }()
	}
	var e *Error
	if err := <-results; !errors.As(err, &e) || e.Code != CodeBusy {
		t.Fatalf("the third request on a connection with two in flight: %v", err)
	}
	close(release)
	for range 2 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if _, err := cl.Call(context.Background(), 1, nil); err == nil {
		t.Fatal("a call after Shutdown succeeded")
	}
}

// A stopping server answers what it runs, then says goaway: a request
// it never read fails with CodeStopping, which a caller may send again
// (not "connection closed", which leaves it unknown whether it ran).
func TestShutdownSaysGoAway(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	srv := &Server{Handler: func(ctx context.Context, m uint16, b []byte) ([]byte, error) {
		if m == 1 {
			started <- struct{}{}
			<-release
		}
		return b, nil
	}}
	addr, stop := serve(t, srv)
	defer stop()
	cl := &Client{Addr: addr, Conns: 1}
	defer cl.Close()
	first := make(chan error, 1)
	go func() {
		out, err := cl.Call(context.Background(), 1, []byte("first"))
		if err == nil && string(out) != "first" {
			err = fmt.Errorf("answered %q", out)
		}
		first <- err
	}()
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(context.Background()) }()
	poll.Until(t, 5*time.Second, "the server stopping", srv.ending.Load)
	second := make(chan error, 1)
	go func() { _, err := cl.Call(context.Background(), 2, []byte("second")); second <- err }()
	select {
	case err := <-second:
		t.Fatalf("a request sent to a stopping server was answered before its running one: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("the request running at Shutdown: %v", err)
	}
	var e *Error
	if err := <-second; !errors.As(err, &e) || e.Code != CodeStopping {
		t.Fatalf("a request the stopping server did not read: %v, want CodeStopping", err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// A long poll held at Shutdown is cut short after LongPollGrace (its
// context ends) and answered before the goaway; a connection to a
// stopped server fails as not sent.
func TestShutdownCutsLongPolls(t *testing.T) {
	held := make(chan struct{}, 1)
	srv := &Server{Handler: func(ctx context.Context, m uint16, b []byte) ([]byte, error) {
		held <- struct{}{}
		<-ctx.Done()
		return []byte("cut"), nil
	}}
	addr, stop := serve(t, srv)
	defer stop()
	cl := &Client{Addr: addr, Conns: 1}
	defer cl.Close()
	got := make(chan string, 1)
	go func() { out, _ := cl.Call(context.Background(), 1, nil); got <- string(out) }()
	<-held
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d < LongPollGrace/2 || d > LongPollGrace+3*time.Second {
		t.Errorf("Shutdown took %v with a long poll held, want about %v", d, LongPollGrace)
	}
	if out := <-got; out != "cut" {
		t.Fatalf("the long poll answered %q", out)
	}
	cl2 := &Client{Addr: addr, Conns: 1, DialTimeout: time.Second}
	defer cl2.Close()
	if _, err := cl2.Call(context.Background(), 1, nil); !errors.Is(err, ErrNotSent) {
		t.Fatalf("a call to a stopped server: %v, want ErrNotSent", err)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add(appendFrame(nil, KindRequest, 7, 3, []byte("body"))[4:])
	f.Add(appendFrame(nil, KindError, 7, 0, []byte{1, 'x'})[4:])
	f.Add([]byte{9, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{4, 0, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		again := appendFrame(nil, fr.kind, fr.id, fr.method, fr.body)
		if !bytes.Equal(again[4:], b) || int(binary.BigEndian.Uint32(again)) != len(b) {
			t.Fatalf("re-encoding %x gave %x", b, again)
		}
	})
}

func BenchmarkCall(b *testing.B) {
	addr, stop := serve(b, &Server{Handler: echo})
	defer stop()
	cl := &Client{Addr: addr}
	defer cl.Close()
	body := bytes.Repeat([]byte("v"), 200)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cl.Call(context.Background(), 1, body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
