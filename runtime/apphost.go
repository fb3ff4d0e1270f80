package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"mecha/components"
	"mecha/runtime/api"
	grpcapi "mecha/runtime/api/grpc"
	httpapi "mecha/runtime/api/http"
	"mecha/runtime/appchannel"
	"mecha/runtime/blocks"
	"mecha/runtime/inputbindings"
	"mecha/runtime/invoke"
	"mecha/runtime/subscriptions"
)

// appHost is one app's share of the runtime: the app of --app-id and
// each app of --app (or an App document) has one, and they are alike.
// A host owns the app's API servers, its app channel, its view of the
// components, its subscriptions and input bindings, its health checks
// and its part of a hot reload.
type appHost struct {
	rt      *Runtime
	spec    AppSpec
	primary bool // the app of --app-id
	log     *slog.Logger

	view     *components.View
	local    *invoke.Local
	blocks   *blocks.Blocks
	subs     *subscriptions.Manager
	bindings *inputbindings.Runner
	// invoker is the app's way out to other apps; set when the
	// membership node is up, before the servers serve.
	invoker *invoke.Invoker

	httpLis, grpcLis net.Listener
	http             *httpapi.Server
	grpc             *grpcapi.Server
	serving          sync.WaitGroup // the API servers' goroutines

	// ready is set once the app is connected (healthz).
	ready atomic.Bool
}

// newAppHost builds an app's host; nothing listens or runs yet.
func newAppHost(r *Runtime, spec AppSpec, primary bool) *appHost {
	h := &appHost{rt: r, spec: spec, primary: primary, log: r.log}
	if !primary {
		// The runtime's lines carry its --app-id app's app_id; an app of
		// --app is named by "app" on its own.
		h.log = r.log.With("app", spec.ID)
	}
	h.view = r.comps.View(spec.ID)
	h.local = &invoke.Local{AppID: spec.ID}
	h.blocks = &blocks.Blocks{AppID: spec.ID, Components: h.view, Log: h.log, Resiliency: r.resil}
	h.subs = subscriptions.New(subscriptions.Options{AppID: spec.ID, Components: h.view, Metrics: r.metrics, Logger: h.log, Resiliency: r.resil})
	h.bindings = inputbindings.New(inputbindings.Options{Components: h.view, Blocks: h.blocks, Metrics: r.metrics, Logger: h.log, Resiliency: r.resil})
	return h
}

// listen opens the app's API ports.
func (h *appHost) listen() error {
	what := func(flag string) string {
		if h.primary {
			return "--" + flag
		}
		return "--app " + h.spec.ID + ": " + flag
	}
	var err error
	if h.httpLis, err = h.rt.listen("http "+h.spec.ID, net.JoinHostPort(h.rt.cfg.ListenAddress, strconv.Itoa(h.spec.HTTPPort))); err != nil {
		return fmt.Errorf("%s %d: %w", what("dapr-http-port"), h.spec.HTTPPort, err)
	}
	if h.grpcLis, err = h.rt.listen("grpc "+h.spec.ID, net.JoinHostPort(h.rt.cfg.ListenAddress, strconv.Itoa(h.spec.GRPCPort))); err != nil {
		h.httpLis.Close()
		return fmt.Errorf("%s %d: %w", what("dapr-grpc-port"), h.spec.GRPCPort, err)
	}
	return nil
}

// closeListeners closes ports that never served (a failed startup).
func (h *appHost) closeListeners() {
	for _, l := range []net.Listener{h.httpLis, h.grpcLis} {
		if l != nil {
			l.Close()
		}
	}
}

// serve starts the API servers on the app's ports.
func (h *appHost) serve() {
	r := h.rt
	h.invoker = &invoke.Invoker{Resolver: r.resolver(h.local), AppID: h.spec.ID, Resiliency: r.resil}
	deps := &api.Deps{
		AppID: h.spec.ID, Blocks: h.blocks, Invoker: h.invoker, Local: h.local, Subs: h.subs,
		Metrics: r.metrics, Log: h.log, Metadata: hostMetadata{h}, APILogging: r.cfg.APILogging,
		MaxRequestBytes: r.cfg.MaxRequestSizeMB << 20, Shutdown: r.Shutdown,
		Ready: h.ready.Load, OutboundReady: r.outbound.Load, APIToken: r.cfg.APIToken, Resiliency: r.resil, Timeouts: r.cfg.Timeouts, Context: r.stopCtx,
		GRPCProxy: r.grpcRouter(h.spec.ID, h.invoker),
	}
	h.http, h.grpc = httpapi.New(deps), grpcapi.New(deps)
	h.serving.Add(2)
	go func() {
		defer h.serving.Done()
		if err := h.http.Serve(h.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("server stopped", "server", "http", "err", err)
		}
	}()
	go func() {
		defer h.serving.Done()
		if err := h.grpc.Serve(h.grpcLis); err != nil {
			h.log.Error("server stopped", "server", "grpc", "err", err)
		}
	}()
	if !h.primary {
		r.log.Info("app API listening", "app", h.spec.ID, "http_port", port(h.httpLis.Addr()), "grpc_port", port(h.grpcLis.Addr()), "app_port", h.spec.Port)
	}
}

// stopServers stops the API servers, letting calls in flight finish
// within the grace period.
func (h *appHost) stopServers(grace context.Context) {
	if h.http == nil {
		h.closeListeners()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = h.http.Shutdown(grace) }()
	go func() { defer wg.Done(); h.grpc.GracefulStop(grace) }()
	wg.Wait()
	h.serving.Wait()
}

// connect waits for the app, builds its channel, loads its
// subscriptions, starts its deliveries and marks it ready; with health
// checks on, deliveries follow the app's health. It runs until ctx ends
// (with health checks) or the app is connected.
func (h *appHost) connect(ctx context.Context) {
	r := h.rt
	if h.spec.Port == 0 {
		h.ready.Store(true)
		h.log.Info("mecha ready", "app_port", 0)
		return
	}
	addr := net.JoinHostPort(r.cfg.AppChannelAddress, strconv.Itoa(h.spec.Port))
	h.log.Info("waiting for the app", "address", addr)
	ch, err := r.dialApp(ctx, addr, h.spec.Protocol)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Error("app channel", "err", err)
		}
		return
	}
	h.local.SetChannel(ch)
	h.bindings.SetChannel(ch)
	up := func() {
		r.setAppHealth(h.spec.ID, true)
		if h.primary {
			r.metrics.SetAppHealthy(true)
		}
		h.startDeliveries(ctx, ch)
		if !h.ready.Swap(true) {
			h.log.Info("mecha ready", "app_port", h.spec.Port)
		}
	}
	if !r.cfg.EnableAppHealthCheck {
		up()
		return
	}
	r.watchHealth(ctx, ch, func() {
		h.log.Info("app is healthy")
		up()
	}, func(err error) {
		r.setAppHealth(h.spec.ID, false)
		if h.primary {
			r.metrics.SetAppHealthy(false)
		}
		h.log.Warn("app is unhealthy; pausing deliveries", "err", err)
		h.subs.Pause()
		h.bindings.Pause()
	})
}

// startDeliveries reads the app's programmatic subscriptions and starts
// its subscriptions and input bindings.
func (h *appHost) startDeliveries(ctx context.Context, ch appchannel.Channel) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	subs, err := ch.Subscriptions(sctx)
	cancel()
	if err != nil {
		h.log.Error("reading the app's subscriptions", "err", err)
	}
	h.subs.SetApp(ch, subs)
	h.subs.Sync(ctx)
	h.bindings.Sync(ctx)
}

// reload applies a hot reload to the app: its declarative
// subscriptions, and its subscriptions and input bindings on the
// components as they are now.
func (h *appHost) reload(ctx context.Context, docs []components.Document) {
	if decl, err := subscriptions.ParseDeclarative(docs, h.spec.ID); err != nil {
		h.log.Error("hot reload: subscriptions not applied", "err", err)
	} else {
		h.subs.SetDeclarative(decl)
	}
	h.subs.Sync(ctx)
	h.bindings.Sync(ctx)
}

// drain stops taking events for the app and waits for the deliveries
// under way.
func (h *appHost) drain(grace context.Context) {
	h.ready.Store(false)
	h.subs.Drain(grace)
	h.bindings.Drain(grace)
}

// closeChannel closes the app channel once nothing uses it.
func (h *appHost) closeChannel() {
	if ch := h.local.Channel(); ch != nil {
		_ = ch.Close()
	}
}

// hostMetadata is the metadata API of one app: the runtime's, with the
// app's id, components, subscriptions and connection.
type hostMetadata struct{ h *appHost }

// Metadata implements api.MetadataProvider.
func (m hostMetadata) Metadata() *api.Metadata {
	h, r := m.h, m.h.rt
	md := &api.Metadata{
		ID: h.spec.ID, RuntimeVersion: Version, EnabledFeatures: append([]string{}, r.features...),
		Actors: []any{}, Components: []api.ComponentInfo{}, Subscriptions: []api.SubscriptionInfo{},
		HTTPEndpoints: []any{}, Extended: r.extendedCopy(),
	}
	md.AddComponents(h.view.Snapshot().Infos)
	md.AddSubscriptions(h.subs.List())
	md.Extended["appCommand"] = fmt.Sprint(r.cfg.Command)
	md.Extended["daprRuntimeVersion"] = Version
	// The id other apps name (mecha-instance-id) to reach this instance.
	md.Extended["instanceId"] = r.node.InstanceID()
	if h.spec.Port != 0 {
		acp := &api.AppConnectionProperties{Port: h.spec.Port, Protocol: h.spec.Protocol, ChannelAddress: r.cfg.AppChannelAddress}
		if r.cfg.EnableAppHealthCheck {
			acp.Health = &api.AppHealth{HealthCheckPath: r.cfg.AppHealthCheckPath, HealthProbeInterval: r.cfg.AppHealthInterval.String(),
				HealthProbeTimeout: r.cfg.AppHealthTimeout.String(), HealthThreshold: int32(r.cfg.AppHealthThreshold)}
		}
		md.AppConnectionProperties = acp
	}
	return md
}

// SetExtended implements api.MetadataProvider.
func (m hostMetadata) SetExtended(key, value string) error { return m.h.rt.setExtended(key, value) }
