package invoke

import (
	"bytes"
	"context"
	"strings"

	"github.com/valyala/fasthttp"

	"mecha/runtime/appchannel"
	"mecha/runtime/tracecontext"
)

// FastHTTP is the send step of the edges that take calls as fasthttp
// requests: the HTTP API and the internal port. To an HTTP target (an
// app, or another runtime's internal port) the request object itself is
// proxied and the answer comes back into the response object, without
// copying headers or bodies; a streamed body streams. A gRPC app gets the
// request as an InvokeRequest.
type FastHTTP struct {
	Ctx *fasthttp.RequestCtx
	// Path is what the target gets as its request URI: the app's method
	// with a leading slash, and the query (still percent-encoded, as the
	// caller sent it). Empty keeps the request's own.
	Path []byte
	// Caller names the calling app to the callee.
	Caller string
	// MaxBody is how much of a streamed body is read into memory for a
	// gRPC app, which takes the body as one message.
	MaxBody int
}

// NewFastHTTP is the send step of one incoming call.
func NewFastHTTP(ctx *fasthttp.RequestCtx, path []byte, caller string, maxBody int) *FastHTTP {
	return &FastHTTP{Ctx: ctx, Path: path, Caller: caller, MaxBody: maxBody}
}

// Send implements Send.
func (f *FastHTTP) Send(ctx context.Context, t Target) (int, error) {
	req, resp := &f.Ctx.Request, &f.Ctx.Response
	appchannel.DropResponse(resp) // a retry's answer replaces the last one
	if len(f.Path) > 0 {
		req.SetRequestURIBytes(f.Path)
	}
	if h, ok := t.Channel.(*appchannel.HTTP); ok {
		StripReserved(&req.Header)
		req.Header.Set(HeaderCaller, f.Caller)
		req.Header.Set(HeaderCallee, t.AppID)
		if err := h.Proxy(ctx, req, resp); err != nil {
			return 0, err
		}
		// The app's connection policy is not the caller's.
		resp.Header.ResetConnectionClose()
		return resp.StatusCode(), nil
	}
	if appchannel.Unread(req) {
		if err := appchannel.BufferBody(req, f.MaxBody); err != nil {
			return 0, err
		}
	}
	ir := &appchannel.InvokeRequest{
		Method:      string(bytes.TrimPrefix(req.URI().PathOriginal(), []byte("/"))),
		Verb:        string(req.Header.Method()),
		Query:       string(req.URI().QueryString()),
		ContentType: string(req.Header.ContentType()),
		Body:        req.Body(),
	}
	if i := strings.IndexByte(ir.Method, '?'); i >= 0 {
		ir.Method = ir.Method[:i]
	}
	for k, v := range req.Header.All() {
		if Reserved(string(k)) || bytes.EqualFold(k, []byte("Content-Type")) {
			continue
		}
		ir.Headers = append(ir.Headers, appchannel.Header{Key: string(k), Value: string(v)})
	}
	ir.Headers = append(ir.Headers, appchannel.Header{Key: HeaderCaller, Value: f.Caller}, appchannel.Header{Key: HeaderCallee, Value: t.AppID})
	out, err := t.Channel.Invoke(ctx, ir)
	if err != nil {
		return 0, err
	}
	out.WriteFastHTTP(resp)
	return out.Status, nil
}

// StripReserved deletes the reserved headers (Reserved) from an HTTP
// request that is passed on, except the framing fasthttp keeps itself
// (Host, Content-Length), which it rewrites when it sends.
func StripReserved(h *fasthttp.RequestHeader) {
	for _, k := range reserved {
		switch k {
		case "host", "content-length":
			continue
		}
		h.Del(k)
	}
}

// ContinueTrace makes the request's traceparent a new span in the
// caller's trace (the caller's span as its parent), or starts a trace
// when it has none; tracestate passes on as it is. Every invocation
// edge calls it once per call.
func ContinueTrace(h *fasthttp.RequestHeader) {
	h.Set("traceparent", tracecontext.Child(string(h.Peek("traceparent"))))
}
