package httpserve

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func newServer() *Server {
	return New(&fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }})
}

// The race, stepped through: Serve has taken the listener but fasthttp
// has not registered it when the shutdown runs. fasthttp's own shutdown
// then sees no listener and returns, and its Serve would serve forever;
// the listener closed after the shutdown makes it return.
func TestShutdownStopsALateServe(t *testing.T) {
	s := newServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.lns = append(s.lns, ln) // the first half of Serve
	s.mu.Unlock()
	if err := s.ShutdownWithContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Server.Serve(ln) }() // the second half
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		ln.Close()
		t.Fatal("Serve did not return after the shutdown")
	}
}

// A Serve that starts after the shutdown closes its listener and
// returns at once.
func TestServeAfterShutdown(t *testing.T) {
	s := newServer()
	if err := s.ShutdownWithContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after shutdown = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		ln.Close()
		t.Fatal("Serve after the shutdown is serving")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener still accepts")
	}
}

// A running server still serves, and its shutdown waits for it.
func TestServeThenShutdown(t *testing.T) {
	s := newServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, body, err = fasthttp.Get(nil, "http://"+ln.Addr().String()+"/"); err == nil {
			break
		}
	}
	if string(body) != "ok" {
		t.Fatalf("body %q, err %v", body, err)
	}
	if err := s.ShutdownWithContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
}
