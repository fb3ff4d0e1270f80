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
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"mecha/internal/authtoken"
	"mecha/internal/httpserve"
	"mecha/internal/muxconn"
	"mecha/internal/netlimit"
	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/invoke"
)

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
	// Invoker sends the calls on, through the invocation pipeline: to
	// the apps hosted here and, on a gateway, to the instances of its DC
	// that another DC calls through it.
	Invoker *invoke.Invoker
	// Gateway passes calls for apps not hosted here to the Invoker
	// (which finds them in this DC); otherwise they are refused.
	Gateway bool
	// Allow decides whether caller may call method (verb and path) on
	// an app hosted here; nil allows everything.
	Allow func(caller, verb, method string) error
	// Token, when set, must come with every call (TokenHeader): without
	// it the internal port would trust any host's dapr-caller-app-id.
	Token  string
	Logger *slog.Logger
	// Timeouts bound the connections' headers, idleness and bodies.
	Timeouts netlimit.Timeouts
	// Mux, when set, serves the muxconn connections of the port (Crux
	// routing, replication): binary frames beside HTTP/1.1 and HTTP/2.
	Mux *muxconn.Server
	// Context ends when the runtime stops for good; calls run under it,
	// and end too when their caller hangs up. Nil is Background.
	Context context.Context

	once sync.Once
	srv  *httpserve.Server
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
	s.Timeouts = s.Timeouts.OrDefault()
	to := s.Timeouts
	s.grpc = grpc.NewServer(ProxyCodec(), grpc.UnknownServiceHandler(GRPCProxy(s.route)),
		grpc.ConnectionTimeout(to.Header), grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: to.Idle}))
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	s.srv = httpserve.New(&fasthttp.Server{
		Handler:               s.handle,
		Name:                  "mecha-peer",
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		MaxRequestBodySize:    maxBody,
		// Bodies are read as streams (see inlineBody).
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		ReadBufferSize:               16 << 10,
		ReadTimeout:                  to.Header,
		IdleTimeout:                  to.Idle,
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			return fasthttp.RequestConfig{ReadTimeout: to.Body}
		},
		WriteTimeout: to.Body,
		// A malformed frame gets a 400 and the connection closes; it
		// never reaches a handler.
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			if httpserve.ReadTimedOut(ctx, err) {
				return
			}
			s.Logger.Warn("peer: bad request dropped", "remote", ctx.RemoteAddr().String(), "err", err)
			ctx.Error("bad request", fasthttp.StatusBadRequest)
		},
	})
}

// Shutdown stops taking connections and waits for calls in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.grpc.Stop()
	if s.Mux != nil {
		_ = s.Mux.Shutdown(ctx)
	}
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
	if err == nil {
		err = appchannel.CheckFraming(&ctx.Request.Header)
	}
	if err != nil {
		ctx.SetConnectionClose()
		writeError(ctx, apierr.Malformed("%v", err))
		return
	}
	if !s.tokenOK(string(ctx.Request.Header.Peek(invoke.TokenHeader))) {
		writeError(ctx, apierr.Denied(string(ctx.Request.Header.Peek(invoke.HeaderCallee)), errors.New("a call without the cluster's peer token (--gossip-key)")))
		return
	}
	callee := string(ctx.Request.Header.Peek(invoke.HeaderCallee))
	if callee == "" {
		writeError(ctx, apierr.BadRequest("a call without %s", invoke.HeaderCallee))
		return
	}
	channel, appID, hosted := s.Lookup(callee)
	if len(ctx.Request.Header.Peek(invoke.ProbeHeader)) > 0 {
		// A balancer's probe: is the app here and connected?
		if hosted && channel() != nil {
			ctx.SetStatusCode(fasthttp.StatusNoContent)
		} else {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		}
		return
	}
	caller := string(ctx.Request.Header.Peek(invoke.HeaderCaller))
	switch {
	case hosted && s.Allow != nil:
		if err := s.Allow(caller, string(ctx.Method()), string(ctx.Path())); err != nil {
			writeError(ctx, apierr.Denied(appID, err))
			return
		}
	case !hosted && !s.Gateway:
		err := errors.New("this runtime does not host it (stale catalog?)")
		if inst := ctx.Request.Header.Peek(invoke.HeaderInstance); len(inst) > 0 {
			writeError(ctx, apierr.InstanceNotFound(callee, string(inst), err))
			return
		}
		writeError(ctx, apierr.DirectInvoke(callee, err))
		return
	}
	invoke.ContinueTrace(&ctx.Request.Header)
	send := invoke.NewFastHTTP(ctx, nil, caller, maxBody)
	call := &invoke.Call{AppID: callee, Method: string(ctx.Path()), Verb: string(ctx.Method()), Once: streamed,
		Instance: string(ctx.Request.Header.Peek(invoke.HeaderInstance))}
	base := s.Context
	if base == nil {
		base = context.Background()
	}
	cctx, done := netlimit.WatchHangup(base, ctx.Conn())
	defer done()
	if _, err := s.Invoker.Do(cctx, call, send.Send); err != nil {
		appchannel.DropResponse(&ctx.Response)
		writeError(ctx, err)
	}
}

// tokenOK compares got with the peer token in constant time.
func (s *Server) tokenOK(got string) bool { return authtoken.Allows([]byte(got), s.Token) }

func writeError(ctx *fasthttp.RequestCtx, err error) {
	e := apierr.As(err)
	b, _ := json.Marshal(map[string]string{"errorCode": e.Code, "message": e.Message})
	ctx.Response.Header.SetContentType("application/json")
	// Says that the runtime answered, not the app: the caller's gRPC API
	// gives the code on rather than an app's HTTP status.
	ctx.Response.Header.Set(invoke.HeaderErrorCode, e.Code)
	if e.HTTP == 0 {
		e.HTTP = http.StatusInternalServerError
	}
	ctx.SetStatusCode(e.HTTP)
	ctx.SetBody(b)
}
