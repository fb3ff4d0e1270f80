// Package httpapi serves the Dapr v1.0 HTTP API on fasthttp. Routing is a
// hand-written switch over path segments: no regular expressions, no
// allocations on the hot paths (state get/save, publish, invoke).
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"mecha/internal/netlimit"
	"mecha/runtime/api"
	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/metrics"
)

// Server is the HTTP API server.
type Server struct {
	d *api.Deps
	// base ends when the runtime stops for good.
	base context.Context
	srv  *fasthttp.Server
	log  *slog.Logger

	ops     opHandles
	maxBody int // bodies up to it are read whole
}

// opHandles are the cached metric handles, one per route.
type opHandles struct {
	stateGet, stateSave, stateDelete, stateBulk, stateTx *metrics.Op
	stateScan                                            *metrics.Op
	publish, bulkPublish, binding, invoke                *metrics.Op
	secret, bulkSecret, metaGet, metaPut                 *metrics.Op
	health, outbound, shutdown, notFound                 *metrics.Op
}

// New builds the server.
func New(d *api.Deps) *Server {
	s := &Server{d: d, log: d.Log, base: d.Context}
	if s.base == nil {
		s.base = context.Background()
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	m := d.Metrics
	s.ops = opHandles{
		stateGet: m.API("http", "state", "get"), stateSave: m.API("http", "state", "save"),
		stateDelete: m.API("http", "state", "delete"), stateBulk: m.API("http", "state", "bulk_get"),
		stateTx: m.API("http", "state", "transaction"), stateScan: m.API("http", "state", "scan"), publish: m.API("http", "pubsub", "publish"),
		bulkPublish: m.API("http", "pubsub", "bulk_publish"), binding: m.API("http", "bindings", "invoke"),
		invoke: m.API("http", "invoke", "invoke"), secret: m.API("http", "secrets", "get"),
		bulkSecret: m.API("http", "secrets", "bulk_get"), metaGet: m.API("http", "metadata", "get"),
		metaPut: m.API("http", "metadata", "set"), health: m.API("http", "health", "healthz"),
		outbound: m.API("http", "health", "outbound"), shutdown: m.API("http", "lifecycle", "shutdown"),
		notFound: m.API("http", "unknown", "unknown"),
	}
	maxBody := d.MaxRequestBytes
	if maxBody <= 0 {
		maxBody = 4 << 20
	}
	s.maxBody = maxBody
	to := d.Timeouts.OrDefault()
	s.srv = &fasthttp.Server{
		Handler:            s.handle,
		Name:               "mecha",
		MaxRequestBodySize: maxBody,
		// Bodies are read as streams so that a large one can pass
		// through an invocation without being held whole (handle reads
		// the rest into memory); multipart bodies pass through as they are.
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		// A new connection, and each request, must send its headers
		// within the header timeout; the body (read by the handler,
		// maybe streamed) then gets the body timeout; a kept-alive
		// connection waits for its next request up to the idle timeout.
		ReadTimeout: to.Header,
		IdleTimeout: to.Idle,
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			return fasthttp.RequestConfig{ReadTimeout: to.Body}
		},
		WriteTimeout: to.Body,
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			if errors.Is(err, fasthttp.ErrBodyTooLarge) {
				writeError(ctx, apierr.BodyTooLarge(maxBody))
				return
			}
			writeError(ctx, apierr.Malformed("failed reading HTTP request: %v", headerError(err)))
		},
	}
	return s
}

// call is the context of a quick call (one state key, one publish):
// the runtime's, which ends when the runtime stops for good (its grace
// period over). fasthttp's own RequestCtx is not used: it is done as
// soon as a shutdown starts, which would fail the very requests the
// shutdown waits for.
func (s *Server) call() context.Context { return s.base }

// longCall is the context of a call that may take a while (invocation,
// bindings, secrets, bulk and transactional state): it also ends when
// the client hangs up. done must be called when the call is over.
func (s *Server) longCall(ctx *fasthttp.RequestCtx) (context.Context, func()) {
	return netlimit.WatchHangup(s.base, ctx.Conn())
}

// Serve serves on lis until Shutdown.
func (s *Server) Serve(lis net.Listener) error { return s.srv.Serve(lis) }

// Shutdown stops accepting connections and waits for requests in flight,
// or for ctx to end.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.ShutdownWithContext(ctx) }

var (
	pV1        = []byte("/v1.0/")
	pV1Alpha1  = []byte("/v1.0-alpha1/")
	pInvoke    = []byte("/v1.0/invoke/")
	sState     = []byte("state")
	sPublish   = []byte("publish")
	sBindings  = []byte("bindings")
	sInvoke    = []byte("invoke")
	sSecrets   = []byte("secrets")
	sMetadata  = []byte("metadata")
	sHealthz   = []byte("healthz")
	sShutdown  = []byte("shutdown")
	sBulk      = []byte("bulk")
	sTx        = []byte("transaction")
	sMethod    = []byte("method")
	sOutbound  = []byte("outbound")
	hAppID     = []byte("dapr-app-id")
	ctJSON     = []byte("application/json")
	hETag      = []byte("ETag")
	hIfMatch   = []byte("If-Match")
	hTraceP    = []byte("traceparent")
	metaPrefix = []byte("metadata.")
)

// cut splits p at the first '/', returning the segment and the rest.
func cut(p []byte) (seg, rest []byte) {
	if i := bytes.IndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return p, nil
}

var hAPIToken = []byte("dapr-api-token")

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	if err := appchannel.CheckFraming(&ctx.Request.Header); err != nil {
		ctx.SetConnectionClose()
		writeError(ctx, apierr.Malformed("%v", err))
		return
	}
	// Bodies up to the limit are read whole; a larger or chunked one is
	// streamed to an invoked app, and refused by every other API.
	streamed, err := appchannel.BufferSmallBody(&ctx.Request, s.maxBody)
	// A connection that carried a streamed body is not used again: the
	// body may be left partly unread (refused early, or a failed send).
	defer func() {
		if streamed || appchannel.Unread(&ctx.Request) {
			ctx.SetConnectionClose()
		}
	}()
	if err != nil {
		writeError(ctx, apierr.Malformed("%v", err))
		return
	}
	if !s.d.TokenOK(ctx.Request.Header.PeekBytes(hAPIToken)) && !bytes.HasPrefix(ctx.Path(), []byte("/v1.0/healthz")) {
		writeError(ctx, apierr.Unauthenticated())
		return
	}
	if streamed && !s.invocation(ctx) {
		if err := s.bufferBody(ctx); err != nil {
			return
		}
	}
	op := s.route(ctx)
	code := ctx.Response.StatusCode()
	op.ObserveHTTP(code, time.Since(start))
	if s.d.APILogging {
		s.log.Info("api call", "method", string(ctx.Method()), "path", string(ctx.Path()), "status", code, "duration", time.Since(start))
	}
}

// route dispatches the request and returns the metric handle of the route.
func (s *Server) route(ctx *fasthttp.RequestCtx) *metrics.Op {
	path := ctx.Path()
	method := ctx.Method()
	switch {
	case bytes.HasPrefix(path, pV1):
		block, rest := cut(path[len(pV1):])
		switch {
		case bytes.Equal(block, sState):
			store, key := cut(rest)
			switch {
			case len(store) == 0:
				writeError(ctx, apierr.StateStoreNotFound(""))
				return s.ops.stateGet
			case key == nil && isPost(method):
				s.stateSave(ctx, string(store))
				return s.ops.stateSave
			case bytes.Equal(key, sBulk) && isPost(method):
				s.stateBulkGet(ctx, string(store))
				return s.ops.stateBulk
			case bytes.Equal(key, sTx) && isPost(method):
				s.stateTransaction(ctx, string(store))
				return s.ops.stateTx
			case len(key) > 0 && bytes.Equal(method, []byte(fasthttp.MethodGet)):
				s.stateGet(ctx, string(store), string(key))
				return s.ops.stateGet
			case len(key) > 0 && bytes.Equal(method, []byte(fasthttp.MethodDelete)):
				s.stateDelete(ctx, string(store), string(key))
				return s.ops.stateDelete
			}
		case bytes.Equal(block, sPublish):
			ps, topic := cut(rest)
			if isPost(method) {
				s.publish(ctx, string(ps), string(topic))
				return s.ops.publish
			}
		case bytes.Equal(block, sBindings):
			if isPost(method) || bytes.Equal(method, []byte(fasthttp.MethodPut)) {
				s.invokeBinding(ctx, string(rest))
				return s.ops.binding
			}
		case bytes.Equal(block, sInvoke):
			id, rest := cut(rest)
			m, _ := cut(rest)
			if bytes.Equal(m, sMethod) {
				s.invoke(ctx, string(id), rawMethod(ctx, 4))
				return s.ops.invoke
			}
		case bytes.Equal(block, sSecrets):
			store, key := cut(rest)
			if bytes.Equal(method, []byte(fasthttp.MethodGet)) {
				if bytes.Equal(key, sBulk) {
					s.bulkSecret(ctx, string(store))
					return s.ops.bulkSecret
				}
				s.secret(ctx, string(store), string(key))
				return s.ops.secret
			}
		case bytes.Equal(block, sMetadata):
			if len(rest) == 0 && bytes.Equal(method, []byte(fasthttp.MethodGet)) {
				s.metadataGet(ctx)
				return s.ops.metaGet
			}
			if len(rest) > 0 && bytes.Equal(method, []byte(fasthttp.MethodPut)) {
				s.metadataPut(ctx, string(rest))
				return s.ops.metaPut
			}
		case bytes.Equal(block, sHealthz):
			if len(rest) == 0 {
				// ?appid= asks whether this runtime serves that app
				// (Dapr's name resolvers probe with it).
				if id := ctx.QueryArgs().Peek("appid"); len(id) > 0 && string(id) != s.d.AppID {
					writeError(ctx, &apierr.Error{Code: "ERR_HEALTH_APPID_NOT_MATCH", HTTP: fasthttp.StatusInternalServerError,
						Message: "dapr app-id does not match"})
					return s.ops.health
				}
				s.healthz(ctx, s.d.Ready, apierr.HealthNotReady())
				return s.ops.health
			}
			if bytes.Equal(rest, sOutbound) {
				s.healthz(ctx, s.d.OutboundReady, apierr.OutboundNotReady())
				return s.ops.outbound
			}
		case bytes.Equal(block, sShutdown):
			if isPost(method) {
				ctx.SetStatusCode(fasthttp.StatusNoContent)
				s.log.Info("shutdown requested through the API")
				go s.d.Shutdown()
				return s.ops.shutdown
			}
		}
	case bytes.HasPrefix(path, pV1Alpha1):
		block, rest := cut(path[len(pV1Alpha1):])
		if bytes.Equal(block, sState) && bytes.Equal(method, []byte(fasthttp.MethodGet)) {
			store, what := cut(rest)
			if bytes.Equal(what, []byte("scan")) {
				s.stateScan(ctx, string(store))
				return s.ops.stateScan
			}
		}
		if bytes.Equal(block, sPublish) && isPost(method) {
			b, rest := cut(rest)
			if bytes.Equal(b, sBulk) {
				ps, topic := cut(rest)
				s.bulkPublish(ctx, string(ps), string(topic))
				return s.ops.bulkPublish
			}
		}
	}
	// Any other path with a dapr-app-id header is an invocation of that
	// path on that app.
	if id := ctx.Request.Header.PeekBytes(hAppID); len(id) > 0 {
		s.invoke(ctx, string(id), rawMethod(ctx, 0))
		return s.ops.invoke
	}
	writeError(ctx, &apierr.Error{Code: "ERR_NOT_FOUND", HTTP: fasthttp.StatusNotFound,
		Message: "no API at " + string(method) + " " + string(path)})
	return s.ops.notFound
}

// invocation reports whether the request is a service invocation, whose
// body may stream to the app.
func (s *Server) invocation(ctx *fasthttp.RequestCtx) bool {
	path := ctx.Path()
	if bytes.HasPrefix(path, pInvoke) {
		return true
	}
	return len(ctx.Request.Header.PeekBytes(hAppID)) > 0 && !bytes.HasPrefix(path, pV1) && !bytes.HasPrefix(path, pV1Alpha1)
}

// bufferBody reads a streamed body into memory, or answers 413 (or 400)
// and returns the error.
func (s *Server) bufferBody(ctx *fasthttp.RequestCtx) error {
	err := appchannel.BufferBody(&ctx.Request, s.maxBody)
	switch {
	case errors.Is(err, appchannel.ErrBodyTooLarge):
		appchannel.Discard(&ctx.Request, discardMax)
		writeError(ctx, apierr.BodyTooLarge(s.maxBody))
	case err != nil:
		writeError(ctx, apierr.Malformed("%v", err))
	}
	return err
}

// headerError names what is wrong with headers fasthttp could not read:
// its own error quotes the bytes it got.
func headerError(err error) string {
	msg := err.Error()
	if strings.Contains(msg, `\n`) && !strings.Contains(msg, `\r\n`) {
		return "no CRLF line ends (bare LF lines are not HTTP/1.1): " + msg
	}
	return msg
}

// discardMax is how much of a refused body is read so that the client
// sees the refusal; beyond it the connection is closed.
const discardMax = 64 << 20

func isPost(m []byte) bool { return bytes.Equal(m, []byte(fasthttp.MethodPost)) }

// rawMethod returns the request path as the client sent it (still
// percent-encoded), without its leading slash and first skip segments:
// what is forwarded to the app must not be decoded, or "a%3Fb" would
// become a query.
func rawMethod(ctx *fasthttp.RequestCtx, skip int) []byte {
	p := ctx.Request.URI().PathOriginal()
	if i := bytes.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	p = bytes.TrimPrefix(p, []byte("/"))
	for ; skip > 0; skip-- {
		_, p = cut(p)
	}
	return p
}

// errorBody is Dapr's error response.
type errorBody struct {
	ErrorCode string `json:"errorCode"`
	Message   string `json:"message"`
}

func writeError(ctx *fasthttp.RequestCtx, err error) {
	e := apierr.As(err)
	b, _ := json.Marshal(errorBody{ErrorCode: e.Code, Message: e.Message})
	ctx.Response.Header.SetContentTypeBytes(ctJSON)
	ctx.SetStatusCode(e.HTTP)
	ctx.SetBody(b)
}

func writeJSON(ctx *fasthttp.RequestCtx, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(ctx, err)
		return
	}
	ctx.Response.Header.SetContentTypeBytes(ctJSON)
	ctx.SetStatusCode(code)
	ctx.SetBody(b)
}

// queryMetadata collects metadata.<key>=value query parameters; nil when
// there are none, so the common case allocates nothing.
func queryMetadata(ctx *fasthttp.RequestCtx) map[string]string {
	args := ctx.QueryArgs()
	if args.Len() == 0 {
		return nil
	}
	var m map[string]string
	for k, v := range args.All() {
		if bytes.HasPrefix(k, metaPrefix) {
			if m == nil {
				m = map[string]string{}
			}
			m[string(k[len(metaPrefix):])] = string(v)
		}
	}
	return m
}

func (s *Server) healthz(ctx *fasthttp.RequestCtx, ready func() bool, notReady *apierr.Error) {
	if ready != nil && ready() {
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	writeError(ctx, notReady)
}
