package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/blocks"
	"mecha/runtime/cloudevent"
	"mecha/runtime/invoke"
	"mecha/runtime/resiliency"
	"mecha/runtime/tracecontext"
)

var hContentType = []byte("Content-Type")

func (s *Server) publish(ctx *fasthttp.RequestCtx, ps, topic string) {
	tp := string(ctx.Request.Header.PeekBytes(hTraceP))
	err := s.d.Blocks.Publish(bg, &blocks.PublishRequest{
		PubsubName:  ps,
		Topic:       topic,
		Data:        ctx.PostBody(),
		ContentType: string(ctx.Request.Header.ContentType()),
		Metadata:    queryMetadata(ctx),
		TraceParent: tracecontext.Ensure(tp),
		TraceState:  string(ctx.Request.Header.Peek("tracestate")),
	})
	if err != nil {
		writeError(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

type bulkPublishEntry struct {
	EntryID     string            `json:"entryId"`
	Event       json.RawMessage   `json:"event"`
	ContentType string            `json:"contentType"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

func (s *Server) bulkPublish(ctx *fasthttp.RequestCtx, ps, topic string) {
	var entries []bulkPublishEntry
	if err := json.Unmarshal(ctx.PostBody(), &entries); err != nil {
		writeError(ctx, apierr.Malformed("failed deserializing HTTP body: %v", err))
		return
	}
	in := make([]blocks.BulkEntry, len(entries))
	for i, e := range entries {
		data := []byte(e.Event)
		if len(data) > 0 && data[0] == '"' {
			// A JSON string event carries its text, as in Dapr; for a
			// non-text, non-JSON content type the text is base64.
			var str string
			if json.Unmarshal(data, &str) == nil {
				data = []byte(str)
				if !cloudevent.IsJSONContentType(e.ContentType) && !strings.HasPrefix(strings.ToLower(e.ContentType), "text/") && e.ContentType != "" {
					dec, err := base64.StdEncoding.DecodeString(str)
					if err != nil {
						writeError(ctx, apierr.PublishEventsSer("entry %q: event of content type %s must be base64: %v", e.EntryID, e.ContentType, err))
						return
					}
					data = dec
				}
			}
		}
		in[i] = blocks.BulkEntry{EntryID: e.EntryID, Data: data, ContentType: e.ContentType, Metadata: e.Metadata}
	}
	tp := tracecontext.Ensure(string(ctx.Request.Header.PeekBytes(hTraceP)))
	failed, err := s.d.Blocks.BulkPublish(bg, ps, topic, in, queryMetadata(ctx), tp)
	if err != nil {
		writeError(ctx, err)
		return
	}
	if len(failed) > 0 {
		writeJSON(ctx, fasthttp.StatusInternalServerError, struct {
			FailedEntries []blocks.FailedEntry `json:"failedEntries"`
			ErrorCode     string               `json:"errorCode"`
		}{failed, "ERR_PUBSUB_PUBLISH_MESSAGE"})
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

type bindingRequest struct {
	Data      json.RawMessage   `json:"data"`
	Metadata  map[string]string `json:"metadata"`
	Operation string            `json:"operation"`
}

func (s *Server) invokeBinding(ctx *fasthttp.RequestCtx, name string) {
	var req bindingRequest
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		writeError(ctx, apierr.Malformed("failed deserializing HTTP body: %v", err))
		return
	}
	// The binding gets the data as JSON, as Dapr sends it: a string
	// keeps its quotes, a missing field is null.
	data := []byte(req.Data)
	if len(data) == 0 {
		data = []byte("null")
	}
	if tp := ctx.Request.Header.PeekBytes(hTraceP); len(tp) > 0 {
		if req.Metadata == nil {
			req.Metadata = map[string]string{}
		}
		req.Metadata["traceparent"] = string(tp)
	}
	resp, err := s.d.Blocks.InvokeBinding(bg, name, req.Operation, data, req.Metadata)
	if err != nil {
		writeError(ctx, err)
		return
	}
	if resp == nil {
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	for k, v := range resp.Metadata {
		ctx.Response.Header.Set("metadata."+k, v)
	}
	if resp.ContentType != nil && *resp.ContentType != "" {
		ctx.Response.Header.SetContentType(*resp.ContentType)
	} else {
		ctx.Response.Header.SetContentTypeBytes(ctJSON)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBody(resp.Data)
}

// hop-by-hop and Dapr routing headers are not forwarded to the app.
var dropHeaders = [][]byte{[]byte("dapr-app-id"), []byte("Connection"), []byte("Keep-Alive"), []byte("Proxy-Connection"),
	[]byte("Transfer-Encoding"), []byte("Upgrade"), []byte("dapr-api-token"), []byte("mecha-peer-token")}

func (s *Server) invoke(ctx *fasthttp.RequestCtx, appID string, method []byte) {
	rctx := invoke.WithHeaders(bg, func(name string) string { return string(ctx.Request.Header.Peek(name)) })
	target, err := s.d.Invoker.Resolve(rctx, appID)
	if err != nil {
		writeError(ctx, err)
		return
	}
	tp := ctx.Request.Header.PeekBytes(hTraceP)
	if !tracecontext.Valid(string(tp)) {
		ctx.Request.Header.SetBytesK(hTraceP, tracecontext.New())
	}
	// A streamed body (larger than the limit, or chunked) can be sent
	// once only: its call is never retried.
	streamed := appchannel.Unread(&ctx.Request)
	if h, ok := target.Channel.(*appchannel.HTTP); ok {
		method = append([]byte(nil), method...) // it points into the URI the proxy rewrites
		appID = target.AppID                    // "app.namespace" resolved to the app-id
		if s.d.Resiliency != nil {
			if runner := s.d.Resiliency.ForApp(appID); !runner.Passthrough() {
				s.proxyWithPolicy(ctx, rctx, runner, target, h, appID, method, streamed)
				return
			}
		}
		start := time.Now()
		err := s.proxyHTTP(bg, ctx, h, appID, method)
		target.Finish(proxyOutcome(ctx, err), time.Since(start))
		// Without a resiliency policy, a remote runtime that cannot be
		// reached (it died, perhaps with the call under way) gets the call
		// again on another instance when the method is idempotent, twice
		// at most.
		for i := 0; err != nil && !streamed && target.Remote && idempotent(ctx.Method()) && errors.Is(err, appchannel.ErrAppUnreachable) && i < 2; i++ {
			if target, err = s.d.Invoker.Resolve(rctx, appID); err != nil {
				break
			}
			if h, ok = target.Channel.(*appchannel.HTTP); !ok {
				break
			}
			appchannel.DropResponse(&ctx.Response)
			start = time.Now()
			err = s.proxyHTTP(bg, ctx, h, appID, method)
			target.Finish(proxyOutcome(ctx, err), time.Since(start))
		}
		if err != nil {
			appchannel.DropResponse(&ctx.Response)
			writeError(ctx, apierr.DirectInvoke(appID, err))
		}
		return
	}
	if streamed {
		if s.bufferBody(ctx) != nil {
			return
		}
	}
	req := &appchannel.InvokeRequest{
		Method:      string(method),
		Verb:        string(ctx.Method()),
		Query:       string(ctx.URI().QueryString()),
		ContentType: string(ctx.Request.Header.ContentType()),
		Body:        ctx.PostBody(),
	}
	for k, v := range ctx.Request.Header.All() {
		if skipHeader(k) || bytes.EqualFold(k, hContentType) {
			continue
		}
		req.Headers = append(req.Headers, appchannel.Header{Key: string(k), Value: string(v)})
	}
	resp, err := target.Channel.Invoke(bg, req)
	if err != nil {
		writeError(ctx, apierr.DirectInvoke(appID, err))
		return
	}
	resp.WriteFastHTTP(&ctx.Response)
}

func skipHeader(k []byte) bool {
	for _, d := range dropHeaders {
		if bytes.EqualFold(k, d) {
			return true
		}
	}
	return bytes.EqualFold(k, []byte("Host")) || bytes.EqualFold(k, []byte("Content-Length"))
}

var (
	hCaller = []byte("dapr-caller-app-id")
	hCallee = []byte("dapr-callee-app-id")
)

// proxyHTTP forwards the incoming request object itself to the app and the
// app's response object itself back: no copies of headers or bodies.
func (s *Server) proxyHTTP(cctx context.Context, ctx *fasthttp.RequestCtx, h *appchannel.HTTP, appID string, method []byte) error {
	req := &ctx.Request
	uri := req.URI()
	q := uri.QueryString()
	p := make([]byte, 0, 1+len(method)+1+len(q))
	p = append(p, '/')
	p = append(p, method...)
	if len(q) > 0 {
		p = append(p, '?')
		p = append(p, q...)
	}
	req.SetRequestURIBytes(p)
	for _, d := range dropHeaders {
		req.Header.DelBytes(d)
	}
	req.Header.SetBytesKV(hCaller, []byte(s.d.AppID))
	req.Header.SetBytesKV(hCallee, []byte(appID))
	if err := h.Proxy(cctx, req, &ctx.Response); err != nil {
		return err
	}
	// The app's connection policy is not the caller's.
	ctx.Response.Header.ResetConnectionClose()
	return nil
}

// proxyWithPolicy proxies the call under the target's resiliency policy:
// each attempt picks an instance (another one on a retry, round robin)
// and runs under the attempt's timeout and its instance's circuit
// breaker. Only idempotent methods are retried. When the last attempt got
// an answer from the app, the caller gets that answer, 5xx or not.
func (s *Server) proxyWithPolicy(ctx *fasthttp.RequestCtx, rctx context.Context, runner *resiliency.Runner, first invoke.Target, h *appchannel.HTTP, appID string, method []byte, streamed bool) {
	verb := ctx.Method()
	cur, curTarget := h, first
	answered := false
	err := runner.DoCall(bg, resiliency.Call{
		Method: string(method),
		Pick: func(attempt int) (string, error) {
			if attempt > 1 && first.Remote {
				t, err := s.d.Invoker.Resolve(rctx, appID)
				if err != nil {
					return "", resiliency.Permanent(err)
				}
				if next, ok := t.Channel.(*appchannel.HTTP); ok {
					cur, curTarget = next, t
				}
			}
			return cur.Addr(), nil
		},
		Retriable: func(error) bool { return idempotent(verb) && !streamed },
	}, func(actx context.Context) error {
		appchannel.DropResponse(&ctx.Response)
		answered = false
		start := time.Now()
		err := s.proxyHTTP(actx, ctx, cur, appID, method)
		curTarget.Finish(proxyOutcome(ctx, err), time.Since(start))
		curTarget.Done = nil // reported; a retry on the same target reports nothing more
		if err != nil {
			return err
		}
		answered = true
		if code := ctx.Response.StatusCode(); code >= 500 {
			return invoke.StatusError(code)
		}
		return nil
	})
	// A call refused before any attempt (rate limit, bulkhead, …) or an
	// attempt its breaker refused still ends the balancer's pick.
	curTarget.Finish(err, 0)
	var status invoke.StatusError
	if err != nil && !(answered && errors.As(err, &status)) {
		appchannel.DropResponse(&ctx.Response)
		writeError(ctx, apierr.DirectInvoke(appID, err))
	}
}

// proxyOutcome is a proxied call's outcome for the load balancer: a
// transport error, or the app's 5xx answer.
func proxyOutcome(ctx *fasthttp.RequestCtx, err error) error {
	if err == nil && ctx.Response.StatusCode() >= 500 {
		return invoke.StatusError(ctx.Response.StatusCode())
	}
	return err
}

// idempotent methods may be sent again after a failure.
func idempotent(verb []byte) bool { return invoke.Idempotent(string(verb)) }

func (s *Server) secret(ctx *fasthttp.RequestCtx, store, key string) {
	data, err := s.d.Blocks.GetSecret(bg, store, key, queryMetadata(ctx))
	if err != nil {
		writeError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, data)
}

func (s *Server) bulkSecret(ctx *fasthttp.RequestCtx, store string) {
	data, err := s.d.Blocks.BulkGetSecret(bg, store, queryMetadata(ctx))
	if err != nil {
		writeError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, data)
}

func (s *Server) metadataGet(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, fasthttp.StatusOK, s.d.Metadata.Metadata())
}

func (s *Server) metadataPut(ctx *fasthttp.RequestCtx, key string) {
	s.d.Metadata.SetExtended(key, string(ctx.PostBody()))
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}
