package appchannel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// serveStreaming runs a streaming fasthttp server whose handler is h and
// returns a function that sends raw HTTP on one kept-alive connection and
// reads one response.
func serveStreaming(t *testing.T, h fasthttp.RequestHandler) func(raw string) (int, string) {
	t.Helper()
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: h, StreamRequestBody: true, MaxRequestBodySize: 16, DisablePreParseMultipartForm: true}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = srv.Shutdown() })
	c, err := ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	return func(raw string) (int, string) {
		t.Helper()
		go func(c net.Conn) { _, _ = io.WriteString(c, raw) }(c)
		var resp fasthttp.Response
		if err := resp.Read(br); err != nil {
			t.Fatalf("reading the response to %q: %v", raw[:min(len(raw), 40)], err)
		}
		return resp.StatusCode(), string(resp.Body())
	}
}

func post(body string, chunked bool) string {
	if chunked {
		return fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	}
	return fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

func TestBufferBody(t *testing.T) {
	const limit = 10
	send := serveStreaming(t, func(ctx *fasthttp.RequestCtx) {
		err := BufferBody(&ctx.Request, limit)
		switch {
		case errors.Is(err, ErrBodyTooLarge):
			if !Discard(&ctx.Request, 1<<20) {
				t.Error("Discard did not use up a small body")
			}
			ctx.Error(err.Error(), fasthttp.StatusRequestEntityTooLarge)
		case err != nil:
			ctx.Error(err.Error(), fasthttp.StatusBadRequest)
		default:
			if Unread(&ctx.Request) {
				t.Error("a buffered body is still a stream")
			}
			ctx.SetBody(ctx.Request.Body())
		}
	})
	// All on one connection: a refused body is drained, so the next
	// request parses.
	for _, tc := range []struct {
		body    string
		chunked bool
		code    int
	}{
		{"", false, 200},
		{"0123456789", false, 200},
		{"0123456789", true, 200},
		{"0123456789x", false, 413},
		{strings.Repeat("y", 100), false, 413},
		{strings.Repeat("y", 100), true, 413},
		{"after", false, 200},
	} {
		code, body := send(post(tc.body, tc.chunked))
		if code != tc.code || (code == 200 && body != tc.body) {
			t.Fatalf("%d-byte body (chunked %v): %d %q, want %d", len(tc.body), tc.chunked, code, body, tc.code)
		}
		if code == 413 && !strings.Contains(body, "the limit is 10") && !strings.Contains(body, "more than 10") {
			t.Errorf("the refusal does not say the limit: %q", body)
		}
	}
}

func TestBufferSmallBody(t *testing.T) {
	var streamed bool
	send := serveStreaming(t, func(ctx *fasthttp.RequestCtx) {
		var err error
		if streamed, err = BufferSmallBody(&ctx.Request, 10); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadRequest)
			return
		}
		if streamed {
			b, _ := io.ReadAll(ctx.RequestBodyStream())
			ctx.SetBody(b)
			return
		}
		ctx.SetBody(ctx.Request.Body())
	})
	for _, tc := range []struct {
		body             string
		chunked, streams bool
	}{
		{"small", false, false},
		{strings.Repeat("z", 1000), false, true},
		{"small", true, true}, // unknown length: streams
		{"", false, false},
	} {
		code, body := send(post(tc.body, tc.chunked))
		if code != 200 || body != tc.body || streamed != tc.streams {
			t.Fatalf("%d-byte body (chunked %v): %d, %d bytes back, streamed %v; want the body back, streamed %v",
				len(tc.body), tc.chunked, code, len(body), streamed, tc.streams)
		}
	}
}

// TestBufferBodyCutShort: a body that ends before its Content-Length is an
// error, not a shorter body.
func TestBufferBodyCutShort(t *testing.T) {
	got := make(chan error, 1)
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{StreamRequestBody: true, MaxRequestBodySize: 4, Handler: func(ctx *fasthttp.RequestCtx) {
		_, err := BufferSmallBody(&ctx.Request, 100)
		got <- err
	}}
	go srv.Serve(ln)     //nolint:errcheck
	defer srv.Shutdown() //nolint:errcheck
	c, err := ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n0123456789")
	c.Close()
	if err := <-got; err == nil || !strings.Contains(err.Error(), "50-byte request body") {
		t.Fatalf("a body cut short after 10 of 50 bytes: %v, want an error naming it", err)
	}
}

// TestProxyBodyUntilClose: an app that answers without a length and closes
// the connection (HTTP/1.0 style) gets its whole body passed on.
func TestProxyBodyUntilClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			var req fasthttp.Request
			if req.Read(br) == nil {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
			}
			c.Close()
		}
	}()
	h := NewHTTP(HTTPOptions{Address: ln.Addr().String()})
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("/x")
	if err := h.Proxy(t.Context(), req, resp); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	w := bufio.NewWriter(&out)
	if err := resp.Write(w); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	if !strings.HasSuffix(out.String(), "\r\n\r\nuntil the end") || !strings.Contains(out.String(), "Content-Length: 13") {
		t.Fatalf("the proxied response:\n%s", out.String())
	}
}
