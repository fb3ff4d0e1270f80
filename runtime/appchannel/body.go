package appchannel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/valyala/fasthttp"
)

// ErrBodyTooLarge is returned by BufferBody when a request body is larger
// than the limit it was given.
var ErrBodyTooLarge = errors.New("request body too large")

// Servers that proxy invocations read request bodies as streams
// (fasthttp's StreamRequestBody): a body up to the server's limit is read
// into memory by BufferBody, so that it can be sent again on a retry, and
// a larger one, or one of unknown length (chunked), is passed through as
// it arrives, never held whole.

// BufferBody reads a streamed request body of at most limit bytes into
// memory. A body of unknown length (chunked) is read up to limit. A larger
// body gets ErrBodyTooLarge and is left unread; the caller must then close
// the connection (see Unread).
func BufferBody(req *fasthttp.Request, limit int) error {
	if !req.IsBodyStream() {
		return nil
	}
	n := req.Header.ContentLength()
	switch {
	case n > limit:
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrBodyTooLarge, n, limit)
	case n >= 0:
		return readWhole(req, n)
	}
	b, err := io.ReadAll(io.LimitReader(req.BodyStream(), int64(limit)+1))
	if err != nil {
		return fmt.Errorf("reading the request body: %w", err)
	}
	if len(b) > limit {
		return fmt.Errorf("%w: more than %d bytes (chunked)", ErrBodyTooLarge, limit)
	}
	req.SetBody(b)
	return nil
}

// Discard reads and drops what is left of a streamed body, up to max
// bytes, so that a refusal reaches a client still sending (closing a
// socket with unread data resets it, and the client may never see the
// answer). It reports whether the body was used up.
func Discard(req *fasthttp.Request, max int64) bool {
	if !req.IsBodyStream() {
		return true
	}
	if int64(req.Header.ContentLength()) > max {
		return false
	}
	n, err := io.Copy(io.Discard, io.LimitReader(req.BodyStream(), max+1))
	if err != nil || n > max {
		return false
	}
	_ = req.CloseBodyStream()
	return true
}

// BufferSmallBody reads a streamed request body into memory when its
// length is known and at most limit bytes, and reports whether the body
// is left to stream (larger, or of unknown length). A body that ends
// before its length is an error.
func BufferSmallBody(req *fasthttp.Request, limit int) (streamed bool, err error) {
	if !req.IsBodyStream() {
		return false, nil
	}
	if n := req.Header.ContentLength(); n >= 0 && n <= limit {
		return false, readWhole(req, n)
	}
	return true, nil
}

// readWhole reads the n bytes of a streamed body into memory. fasthttp's
// own Body() would take a body cut short (or the text of a read error) for
// the whole body.
func readWhole(req *fasthttp.Request, n int) error {
	if n == 0 {
		return req.CloseBodyStream()
	}
	bp := wholePool.Get().(*[]byte)
	defer wholePool.Put(bp)
	if cap(*bp) < n {
		*bp = make([]byte, n)
	}
	b := (*bp)[:n]
	if _, err := io.ReadFull(req.BodyStream(), b); err != nil {
		return fmt.Errorf("reading the %d-byte request body: %w", n, err)
	}
	req.SetBody(b) // copies b and drops the stream
	return nil
}

var wholePool = sync.Pool{New: func() any { return new([]byte) }}

// DropResponse resets resp, closing the app connection behind a streamed
// body instead of handing it back to the pool with the body's rest unread.
func DropResponse(resp *fasthttp.Response) {
	if resp.IsBodyStream() {
		resp.SetConnectionClose()
		_ = resp.CloseBodyStream()
	}
	resp.Reset()
}

// Unread reports whether some of the request's body was never read: the
// connection it came on cannot carry another request.
func Unread(req *fasthttp.Request) bool { return req.IsBodyStream() }

// Proxy is Do with the response body streamed: a body up to the channel's
// response limit arrives whole, a larger one is passed on as it arrives
// when resp is written (the connection to the app is held until then).
func (h *HTTP) Proxy(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response) error {
	resp.StreamBody = true
	if err := h.Do(ctx, req, resp); err != nil {
		return err
	}
	if resp.IsBodyStream() && resp.Header.ContentLength() == -2 {
		// A body that ends when the app closes the connection (no length,
		// not chunked): fasthttp cannot pass it on as a stream, so it is
		// read whole, within the response limit.
		limit := h.client.MaxResponseBodySize
		b, err := io.ReadAll(io.LimitReader(resp.BodyStream(), int64(limit)+1))
		if err == nil && len(b) > limit {
			err = fmt.Errorf("a response without a length over %d bytes", limit)
		}
		if err != nil {
			DropResponse(resp)
			return fmt.Errorf("%w: %s: %v", ErrAppUnreachable, h.client.Addr, err)
		}
		resp.SetBody(b)
	}
	return nil
}

// CheckFraming refuses request headers whose framing a proxy in front
// of the runtime could read differently (request smuggling): a line
// ended by a bare LF, white space between a header's name and its colon
// (Transfer-Encoding : chunked), or both Transfer-Encoding and
// Content-Length. fasthttp tolerates all three.
func CheckFraming(h *fasthttp.RequestHeader) error {
	raw := h.RawHeaders()
	te, cl := false, false
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			break
		}
		if i == 0 || raw[i-1] != '\r' {
			return errors.New("a header line ends with a bare LF; HTTP/1.1 lines end with CRLF")
		}
		line := raw[:i-1]
		raw = raw[i+1:]
		if len(line) == 0 {
			continue
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			continue
		}
		name := line[:c]
		if last := name[len(name)-1]; last == ' ' || last == '\t' {
			return fmt.Errorf("white space before the colon of header %q", bytes.TrimRight(name, " \t"))
		}
		switch {
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			te = true
		case bytes.EqualFold(name, []byte("Content-Length")):
			cl = true
		}
	}
	if te && cl {
		return errors.New("both Transfer-Encoding and Content-Length")
	}
	return nil
}
