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

	"mecha/internal/httpserve"
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
	srv  *httpserve.Server
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
	s.srv = httpserve.New(&fasthttp.Server{
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
			if httpserve.ReadTimedOut(ctx, err) {
				return
			}
			if errors.Is(err, fasthttp.ErrBodyTooLarge) {
				writeError(ctx, apierr.BodyTooLarge(maxBody))
				return
			}
			writeError(ctx, apierr.Malformed("failed reading HTTP request: %v", headerError(err)))
		},
	})
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
	pV1Beta1   = []byte("/v1.0-beta1/")
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
	if !s.d.TokenOK(ctx.Request.Header.PeekBytes(hAPIToken)) && !healthProbe(ctx) {
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
//
// Routes take the methods daprd's take (writes POST or PUT), and ignore
// a trailing slash, as daprd's router does (fasthttp has already
// collapsed double slashes); invocation paths pass as sent. A path that
// matches no route goes where daprd sends it: to service invocation,
// which calls the app named by dapr-app-id, or answers 404
// ERR_DIRECT_INVOKE without one. As in daprd, a route with an empty name
// in it (/v1.0/state/, /v1.0/publish/pubsub/, /v1.0/secrets/store/)
// matches no route: why says which name is missing.
func (s *Server) route(ctx *fasthttp.RequestCtx) *metrics.Op {
	path := ctx.Path()
	method := ctx.Method()
	var why string
	switch {
	case bytes.HasPrefix(path, pV1):
		block, rest := cut(path[len(pV1):])
		if !bytes.Equal(block, sInvoke) {
			rest = bytes.TrimSuffix(rest, []byte("/"))
		}
		switch {
		case bytes.Equal(block, sState):
			store, key := cut(rest)
			switch {
			case len(store) == 0:
				why = "the state store name is empty"
			case key == nil && isWrite(method):
				s.stateSave(ctx, string(store))
				return s.ops.stateSave
			case bytes.Equal(key, sBulk) && isWrite(method):
				s.stateBulkGet(ctx, string(store))
				return s.ops.stateBulk
			case bytes.Equal(key, sTx) && isWrite(method):
				s.stateTransaction(ctx, string(store))
				return s.ops.stateTx
			case len(key) > 0 && isMethod(method, fasthttp.MethodGet):
				s.stateGet(ctx, string(store), string(key))
				return s.ops.stateGet
			case len(key) > 0 && isMethod(method, fasthttp.MethodDelete):
				s.stateDelete(ctx, string(store), string(key))
				return s.ops.stateDelete
			}
		case bytes.Equal(block, sPublish):
			ps, topic := cut(rest)
			if isWrite(method) {
				if why = emptyNames(ps, topic); why == "" {
					s.publish(ctx, string(ps), string(topic))
					return s.ops.publish
				}
			}
		case bytes.Equal(block, sBindings):
			if isWrite(method) {
				if why = bindingName(rest); why == "" {
					s.invokeBinding(ctx, string(rest))
					return s.ops.binding
				}
			}
		case bytes.Equal(block, sInvoke):
			id, rest := cut(rest)
			m, methodPath := cut(rest)
			// "{id}/method" without a slash after it is no invocation
			// in daprd either; "{id}/method/" invokes the app's root.
			if bytes.Equal(m, sMethod) && methodPath != nil {
				s.invoke(ctx, string(id), rawMethod(ctx, 4))
				return s.ops.invoke
			}
		case bytes.Equal(block, sSecrets):
			store, key := cut(rest)
			if isMethod(method, fasthttp.MethodGet) {
				switch {
				case len(store) == 0:
					why = "the secret store name is empty"
				case len(key) == 0:
					why = "the secret key is empty"
				case bytes.Equal(key, sBulk):
					s.bulkSecret(ctx, string(store))
					return s.ops.bulkSecret
				default:
					s.secret(ctx, string(store), string(key))
					return s.ops.secret
				}
			}
		case bytes.Equal(block, sMetadata):
			if len(rest) == 0 && isMethod(method, fasthttp.MethodGet) {
				s.metadataGet(ctx)
				return s.ops.metaGet
			}
			if len(rest) > 0 && isMethod(method, fasthttp.MethodPut) {
				s.metadataPut(ctx, string(rest))
				return s.ops.metaPut
			}
		case bytes.Equal(block, sHealthz):
			if !isMethod(method, fasthttp.MethodGet) {
				break
			}
			if len(rest) == 0 {
				s.healthz(ctx, s.d.Ready, apierr.HealthNotReady(), true)
				return s.ops.health
			}
			if bytes.Equal(rest, sOutbound) {
				s.healthz(ctx, s.d.OutboundReady, apierr.OutboundNotReady(), false)
				return s.ops.outbound
			}
		case bytes.Equal(block, sShutdown):
			if isPost(method) {
				s.shutdown(ctx)
				return s.ops.shutdown
			}
		default:
			if what := unservedV1[string(block)]; what != "" {
				writeError(ctx, apierr.Unimplemented(what))
				return s.ops.notFound
			}
		}
	case bytes.HasPrefix(path, pV1Alpha1):
		block, rest := cut(path[len(pV1Alpha1):])
		rest = bytes.TrimSuffix(rest, []byte("/"))
		switch {
		case bytes.Equal(block, sState):
			store, what := cut(rest)
			if bytes.Equal(what, []byte("scan")) && len(store) > 0 && isMethod(method, fasthttp.MethodGet) {
				s.stateScan(ctx, string(store))
				return s.ops.stateScan
			}
			if bytes.Equal(what, []byte("query")) && len(store) > 0 && isWrite(method) {
				writeError(ctx, apierr.Unimplemented("state query"))
				return s.ops.notFound
			}
		case bytes.Equal(block, sPublish):
			b, rest := cut(rest)
			if bytes.Equal(b, sBulk) && isWrite(method) {
				ps, topic := cut(rest)
				if why = emptyNames(ps, topic); why == "" {
					s.bulkPublish(ctx, string(ps), string(topic))
					return s.ops.bulkPublish
				}
			}
		default:
			if what := unservedAlpha[string(block)]; what != "" {
				writeError(ctx, apierr.Unimplemented(what))
				return s.ops.notFound
			}
		}
	case bytes.HasPrefix(path, pV1Beta1):
		if block, _ := cut(path[len(pV1Beta1):]); bytes.Equal(block, []byte("workflows")) {
			writeError(ctx, apierr.Unimplemented("workflows"))
			return s.ops.notFound
		}
	}
	// Any other path with a dapr-app-id header is an invocation of that
	// path on that app.
	if id := ctx.Request.Header.PeekBytes(hAppID); len(id) > 0 {
		s.invoke(ctx, string(id), rawMethod(ctx, 0))
		return s.ops.invoke
	}
	writeError(ctx, apierr.NoRoute(string(method), string(path), why))
	return s.ops.notFound
}

// Path blocks of Dapr APIs that daprd 1.14 serves and mecha does not:
// they answer 501 ERR_API_UNIMPLEMENTED, as their gRPC calls answer
// Unimplemented (mecha only: daprd serves them).
var (
	unservedV1    = map[string]string{"actors": "actors", "configuration": "configuration"}
	unservedAlpha = map[string]string{"configuration": "configuration", "lock": "distributed lock", "unlock": "distributed lock",
		"workflows": "workflows", "crypto": "crypto", "subtlecrypto": "subtle crypto", "jobs": "jobs"}
)

// emptyNames says which of a pubsub name and a topic is empty, or "".
func emptyNames(ps, topic []byte) string {
	switch {
	case len(ps) == 0:
		return "the pubsub name is empty"
	case len(topic) == 0:
		return "the topic is empty"
	}
	return ""
}

// bindingName says why name (the path after /v1.0/bindings/) is no
// binding's name, or "".
func bindingName(name []byte) string {
	switch {
	case len(name) == 0:
		return "the binding name is empty"
	case bytes.IndexByte(name, '/') >= 0:
		return "a binding name has no '/'"
	}
	return ""
}

// healthProbe reports whether the request is one daprd lets through
// without the API token: GET /v1.0/healthz and /v1.0/healthz/outbound.
func healthProbe(ctx *fasthttp.RequestCtx) bool {
	if !isMethod(ctx.Method(), fasthttp.MethodGet) {
		return false
	}
	p := bytes.Trim(ctx.Path(), "/")
	return bytes.Equal(p, []byte("v1.0/healthz")) || bytes.Equal(p, []byte("v1.0/healthz/outbound"))
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

// isWrite reports POST or PUT, the methods of daprd's writing routes.
func isWrite(m []byte) bool { return isPost(m) || bytes.Equal(m, []byte(fasthttp.MethodPut)) }

func isMethod(m []byte, want string) bool { return string(m) == want }

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

// healthz answers 204 when ready. As in daprd, readiness comes first;
// then, with checkAppID, ?appid= (even empty) must name this runtime's
// app: Dapr's name resolvers probe with it.
func (s *Server) healthz(ctx *fasthttp.RequestCtx, ready func() bool, notReady *apierr.Error, checkAppID bool) {
	if ready == nil || !ready() {
		writeError(ctx, notReady)
		return
	}
	if args := ctx.QueryArgs(); checkAppID && args.Has("appid") {
		if id := string(args.Peek("appid")); id != s.d.AppID {
			writeError(ctx, apierr.HealthAppIDNotMatch(id, s.d.AppID))
			return
		}
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}
