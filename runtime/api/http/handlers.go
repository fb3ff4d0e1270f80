package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"

	"github.com/valyala/fasthttp"

	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/blocks"
	"mecha/runtime/cloudevent"
	"mecha/runtime/invoke"
	"mecha/runtime/tracecontext"
)

func (s *Server) publish(ctx *fasthttp.RequestCtx, ps, topic string) {
	tp := string(ctx.Request.Header.PeekBytes(hTraceP))
	err := s.d.Blocks.Publish(s.call(), &blocks.PublishRequest{
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

// bulkPublish serves POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}.
// A body that is not a list of entries is ERR_PUBSUB_EVENTS_SER, as in
// daprd, which checks the pubsub, topic and metadata first.
func (s *Server) bulkPublish(ctx *fasthttp.RequestCtx, ps, topic string) {
	meta := queryMetadata(ctx)
	var entries []bulkPublishEntry
	if err := json.Unmarshal(ctx.PostBody(), &entries); err != nil {
		s.bodyError(ctx, s.d.Blocks.CheckPubSub(ps, topic, meta),
			apierr.PublishEventsSer("error when unmarshaling the request for topic %s pubsub %s: %v (the body must be a JSON list of entries)", topic, ps, err))
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
						s.bodyError(ctx, s.d.Blocks.CheckPubSub(ps, topic, meta),
							apierr.PublishEventsSer("entry %q: event of content type %s must be base64: %v", e.EntryID, e.ContentType, err))
						return
					}
					data = dec
				}
			}
		}
		in[i] = blocks.BulkEntry{EntryID: e.EntryID, Data: data, ContentType: e.ContentType, Metadata: e.Metadata}
	}
	tp := tracecontext.Ensure(string(ctx.Request.Header.PeekBytes(hTraceP)))
	cctx, done := s.longCall(ctx)
	defer done()
	failed, err := s.d.Blocks.BulkPublish(cctx, ps, topic, in, meta, tp)
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
	cctx, done := s.longCall(ctx)
	defer done()
	resp, err := s.d.Blocks.InvokeBinding(cctx, name, req.Operation, data, req.Metadata)
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

// invoke calls method (the raw path as the caller sent it, without its
// leading slash) on appID through the invocation pipeline: the request
// itself is proxied to an HTTP target, and the answer comes back as it
// is. A streamed body (larger than the limit, or chunked) can be sent
// once only.
func (s *Server) invoke(ctx *fasthttp.RequestCtx, appID string, method []byte) {
	q := ctx.URI().QueryString()
	p := make([]byte, 0, 1+len(method)+1+len(q))
	p = append(p, '/')
	p = append(p, method...)
	if len(q) > 0 {
		p = append(p, '?')
		p = append(p, q...)
	}
	invoke.ContinueTrace(&ctx.Request.Header)
	call := &invoke.Call{AppID: appID, Method: string(method), Verb: string(ctx.Method()), Once: appchannel.Unread(&ctx.Request),
		Header: func(name string) string { return string(ctx.Request.Header.Peek(name)) }, Instance: string(ctx.Request.Header.Peek(invoke.HeaderInstance))}
	send := invoke.NewFastHTTP(ctx, p, s.d.AppID, s.maxBody)
	cctx, done := s.longCall(ctx)
	defer done()
	if _, err := s.d.Invoker.Do(cctx, call, send.Send); err != nil {
		appchannel.DropResponse(&ctx.Response)
		if errors.Is(err, appchannel.ErrBodyTooLarge) {
			appchannel.Discard(&ctx.Request, discardMax)
			err = apierr.BodyTooLarge(s.maxBody)
		}
		writeError(ctx, err)
	}
}

func (s *Server) secret(ctx *fasthttp.RequestCtx, store, key string) {
	if err := protoBody(ctx); err != nil {
		writeError(ctx, err)
		return
	}
	cctx, done := s.longCall(ctx)
	defer done()
	data, err := s.d.Blocks.GetSecret(cctx, store, key, queryMetadata(ctx))
	if err != nil {
		writeError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, data)
}

func (s *Server) bulkSecret(ctx *fasthttp.RequestCtx, store string) {
	if err := protoBody(ctx); err != nil {
		writeError(ctx, err)
		return
	}
	cctx, done := s.longCall(ctx)
	defer done()
	data, err := s.d.Blocks.BulkGetSecret(cctx, store, queryMetadata(ctx))
	if err != nil {
		writeError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, data)
}

func (s *Server) metadataGet(ctx *fasthttp.RequestCtx) {
	if err := protoBody(ctx); err != nil {
		writeError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, s.d.Metadata.Metadata())
}

// shutdown serves POST /v1.0/shutdown: 204, then a graceful shutdown.
func (s *Server) shutdown(ctx *fasthttp.RequestCtx) {
	if err := protoBody(ctx); err != nil {
		writeError(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	s.log.Info("shutdown requested through the API")
	go s.d.Shutdown()
}

// protoBody checks the body of the routes daprd serves with its
// gRPC-shaped handlers (metadata, secrets, shutdown): daprd decodes a
// body, when there is one, as the JSON form of the gRPC request, and
// answers ERR_MALFORMED_REQUEST when it is not a JSON object. Mecha
// reads nothing from these bodies.
func protoBody(ctx *fasthttp.RequestCtx) error {
	body := ctx.PostBody()
	if len(body) == 0 {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		if err == nil {
			err = errors.New("null is not a JSON object")
		}
		return apierr.Malformed("failed deserializing HTTP body: %v (send no body, or a JSON object)", err)
	}
	return nil
}

// bodyError answers a body the server could not decode: with first, the
// error daprd finds before it reads the body (an unknown store or
// pubsub), when there is one, else with bad.
func (s *Server) bodyError(ctx *fasthttp.RequestCtx, first error, bad *apierr.Error) {
	if first != nil {
		writeError(ctx, first)
		return
	}
	writeError(ctx, bad)
}

func (s *Server) metadataPut(ctx *fasthttp.RequestCtx, key string) {
	if err := s.d.Metadata.SetExtended(key, string(ctx.PostBody())); err != nil {
		writeError(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}
