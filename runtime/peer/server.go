// Package peer is the runtime-to-runtime transport of service invocation:
// the internal port (--internal-port, default 50002) on which a runtime
// takes invocations that other runtimes forward to one of its apps, and
// the channel by which a runtime forwards them.
//
// The transport is HTTP/1.1 on fasthttp with pooled keep-alive
// connections: the calling runtime proxies the app's request object as it
// is (method path, verb, headers, query, body), adding dapr-caller-app-id
// and dapr-callee-app-id; the called runtime checks the callee is its app
// and the caller is allowed, and proxies the same object on to the app.
// Neither side parses or copies the body. A gRPC InvokeService call
// arrives the same way, as the HTTP request it maps to.
package peer

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"

	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
)

// Headers the transport sets.
var (
	HeaderCaller = []byte("dapr-caller-app-id")
	HeaderCallee = []byte("dapr-callee-app-id")
)

// ProbeHeader marks a load balancer's probe of an ejected instance: the
// internal port answers it itself, 204 when the app is connected.
const ProbeHeader = "mecha-probe"

// TokenHeader carries the peer token between runtimes.
const TokenHeader = "mecha-peer-token"

// Token derives the peer token from the gossip key: runtimes that share
// the key (and so may gossip together) may call each other's apps.
func Token(gossipKey string) string {
	if gossipKey == "" {
		return ""
	}
	m := hmac.New(sha256.New, []byte(gossipKey))
	m.Write([]byte("mecha internal port"))
	return hex.EncodeToString(m.Sum(nil))
}

// Server serves the internal port.
type Server struct {
	// Lookup finds an app this runtime hosts by its app-id (with or
	// without a ".namespace" suffix): its channel (nil until the app is
	// up) and its app-id.
	Lookup func(appID string) (channel func() appchannel.Channel, id string, ok bool)
	// Allow decides whether caller may call method (verb and path) on
	// this runtime's app; nil allows everything.
	Allow func(caller, verb, method string) error
	// Forward, on a gateway, reaches an app of this DC that another DC
	// called through it; nil refuses calls for apps this runtime does
	// not host.
	Forward func(callee string) (*appchannel.HTTP, error)
	// Token, when set, must come with every call (TokenHeader): without
	// it the internal port would trust any host's dapr-caller-app-id.
	Token  string
	Logger *slog.Logger

	once sync.Once
	srv  *fasthttp.Server
	grpc *grpc.Server // proxied gRPC calls, on the same port
}

// Serve takes connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	return s.srv.Serve(ln)
}

// init builds the server once, so that Shutdown, from another goroutine,
// finds it even before Serve runs.
func (s *Server) init() {
	s.once.Do(s.build)
}

func (s *Server) build() {
	s.grpc = grpc.NewServer(ProxyCodec(), grpc.UnknownServiceHandler(GRPCProxy(s.direct)))
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	s.srv = &fasthttp.Server{
		Handler:               s.handle,
		Name:                  "mecha-peer",
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		MaxRequestBodySize:    maxBody,
		// Bodies are read as streams (see inlineBody).
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		ReadBufferSize:               16 << 10,
		// A malformed frame gets a 400 and the connection closes; it
		// never reaches a handler.
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			s.Logger.Warn("peer: bad request dropped", "remote", ctx.RemoteAddr().String(), "err", err)
			ctx.Error("bad request", fasthttp.StatusBadRequest)
		},
	}
}

// Shutdown stops taking connections and waits for calls in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.grpc.Stop()
	return s.srv.ShutdownWithContext(ctx)
}

// A body up to inlineBody is read whole before it is passed on; a larger
// one streams to an HTTP app (the peer never retries, so it need not hold
// it). A gRPC app, called with one InvokeRequest message, takes bodies up
// to maxBody.
const (
	inlineBody = 4 << 20
	maxBody    = 64 << 20
)

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	streamed, err := appchannel.BufferSmallBody(&ctx.Request, inlineBody)
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
	if !s.tokenOK(string(ctx.Request.Header.Peek(TokenHeader))) {
		writeError(ctx, apierr.Denied(string(ctx.Request.Header.PeekBytes(HeaderCallee)), errors.New("a call without the cluster's peer token (--gossip-key)")))
		return
	}
	ctx.Request.Header.Del(TokenHeader)
	callee := ctx.Request.Header.PeekBytes(HeaderCallee)
	if len(callee) == 0 {
		writeError(ctx, apierr.BadRequest("a call without dapr-callee-app-id"))
		return
	}
	channel, appID, ok := s.Lookup(string(callee))
	if !ok {
		if s.Forward == nil {
			writeError(ctx, apierr.DirectInvoke(string(callee), errors.New("this runtime does not host it (stale catalog?)")))
			return
		}
		h, err := s.Forward(string(callee))
		if err == nil {
			err = h.Proxy(context.Background(), &ctx.Request, &ctx.Response)
		}
		if err != nil {
			appchannel.DropResponse(&ctx.Response)
			writeError(ctx, apierr.DirectInvoke(string(callee), err))
		}
		return
	}
	if len(ctx.Request.Header.Peek(ProbeHeader)) > 0 {
		// A balancer's probe: is the app here and connected?
		if channel != nil && channel() != nil {
			ctx.SetStatusCode(fasthttp.StatusNoContent)
		} else {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		}
		return
	}
	if s.Allow != nil {
		caller := string(ctx.Request.Header.PeekBytes(HeaderCaller))
		if err := s.Allow(caller, string(ctx.Method()), string(ctx.Path())); err != nil {
			writeError(ctx, apierr.Denied(appID, err))
			return
		}
	}
	var ch appchannel.Channel
	if channel != nil {
		ch = channel()
	}
	h, ok := ch.(*appchannel.HTTP)
	if !ok {
		// A gRPC app: the request as an InvokeRequest.
		if ch == nil {
			writeError(ctx, apierr.AppChannelNotFound())
			return
		}
		s.invoke(ctx, appID, ch)
		return
	}
	if err := h.Proxy(context.Background(), &ctx.Request, &ctx.Response); err != nil {
		appchannel.DropResponse(&ctx.Response)
		writeError(ctx, apierr.DirectInvoke(appID, err))
		return
	}
	ctx.Response.Header.ResetConnectionClose()
}

// tokenOK compares got with the peer token in constant time.
func (s *Server) tokenOK(got string) bool {
	return s.Token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) == 1
}

func (s *Server) invoke(ctx *fasthttp.RequestCtx, appID string, ch appchannel.Channel) {
	if err := appchannel.BufferBody(&ctx.Request, maxBody); err != nil {
		writeError(ctx, apierr.DirectInvoke(appID, err))
		return
	}
	req := &appchannel.InvokeRequest{
		Method:      string(bytes.TrimPrefix(ctx.Path(), []byte("/"))),
		Verb:        string(ctx.Method()),
		Query:       string(ctx.URI().QueryString()),
		ContentType: string(ctx.Request.Header.ContentType()),
		Body:        ctx.PostBody(),
	}
	for k, v := range ctx.Request.Header.All() {
		switch {
		case bytes.EqualFold(k, []byte("Host")), bytes.EqualFold(k, []byte("Content-Length")), bytes.EqualFold(k, []byte("Content-Type")),
			bytes.EqualFold(k, []byte("Connection")):
			continue
		}
		req.Headers = append(req.Headers, appchannel.Header{Key: string(k), Value: string(v)})
	}
	resp, err := ch.Invoke(context.Background(), req)
	if err != nil {
		writeError(ctx, apierr.DirectInvoke(appID, err))
		return
	}
	resp.WriteFastHTTP(&ctx.Response)
}

func writeError(ctx *fasthttp.RequestCtx, err error) {
	e := apierr.As(err)
	b, _ := json.Marshal(map[string]string{"errorCode": e.Code, "message": e.Message})
	ctx.Response.Header.SetContentType("application/json")
	if e.HTTP == 0 {
		e.HTTP = http.StatusInternalServerError
	}
	ctx.SetStatusCode(e.HTTP)
	ctx.SetBody(b)
}
