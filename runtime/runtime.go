package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dapr/components-contrib/state"

	"mecha/broker"
	"mecha/components"
	"mecha/runtime/accesscontrol"
	"mecha/runtime/api"
	grpcapi "mecha/runtime/api/grpc"
	httpapi "mecha/runtime/api/http"
	"mecha/runtime/appchannel"
	"mecha/runtime/blocks"
	"mecha/runtime/inputbindings"
	"mecha/runtime/invoke"
	"mecha/runtime/membership"
	"mecha/runtime/metrics"
	"mecha/runtime/peer"
	"mecha/runtime/resiliency"
	"mecha/runtime/subscriptions"
	"mecha/stream/job"
)

// Version is the runtime version reported by the metadata API.
var Version = "0.1.0-dev"

// Runtime is one `mecha run` process.
type Runtime struct {
	cfg Config
	log *slog.Logger

	registry  *components.Registry
	comps     *components.Manager
	metrics   *metrics.Metrics
	local     *invoke.Local
	blocks    *blocks.Blocks
	subs      *subscriptions.Manager
	bindings  *inputbindings.Runner
	features  []string
	broker    *broker.Broker // the embedded broker; nil when --broker-port 0
	jobs      job.Jobs       // stream jobs, controlled on the metrics port
	node      *membership.Node
	peer      *peer.Server        // the internal port
	acl       *accesscontrol.List // who may call the app; nil allows all
	resil     *resiliency.Store   // Resiliency policies of the resources path
	grpcConns grpcConns           // to other runtimes, for proxied gRPC calls
	cluster   *invoke.Cluster     // the --app-id app's resolver
	peerToken string              // sent to other runtimes' internal ports
	// hosted are the apps of --app, besides --app-id's; Run sets them
	// before serving.
	hosted []*hostedApp
	// appsMu guards appHealth: the health of each app hosted here.
	appsMu    sync.Mutex
	appHealth map[string]bool
	// trafficFiles are the traffic policies last read from files, by app
	// (JSON); Run and hot reload own them.
	trafficFiles map[string]string

	ready    atomic.Bool
	outbound atomic.Bool

	// Addresses chosen at listen time; set before Started is closed.
	httpAddr, grpcAddr, metricsAddr, internalAddr net.Addr
	started                                       chan struct{}

	shutdownOnce sync.Once
	shutdownCh   chan struct{}

	// extMu guards extended.
	extMu    sync.Mutex
	extended map[string]string

	// childMu guards child, which Run sets and the signal goroutine reads.
	childMu sync.Mutex
	// child is the app process started from Command.
	child *exec.Cmd
}

// New builds a runtime from cfg. Register extra component types on
// Registry() before Run.
func New(cfg Config, log *slog.Logger) *Runtime {
	reg := components.NewRegistry()
	components.RegisterContrib(reg)
	return &Runtime{
		cfg: cfg, log: log, registry: reg,
		started:    make(chan struct{}),
		shutdownCh: make(chan struct{}),
		extended:   map[string]string{},
	}
}

// Registry is the component registry, for subsystems to add their types.
func (r *Runtime) Registry() *components.Registry { return r.registry }

// Started is closed once the API servers listen.
func (r *Runtime) Started() <-chan struct{} { return r.started }

// HTTPAddr is the HTTP API's address once Started is closed.
func (r *Runtime) HTTPAddr() net.Addr { return r.httpAddr }

// GRPCAddr is the gRPC API's address once Started is closed.
func (r *Runtime) GRPCAddr() net.Addr { return r.grpcAddr }

// Shutdown starts a graceful shutdown; Run returns when it is done.
func (r *Runtime) Shutdown() {
	r.shutdownOnce.Do(func() { close(r.shutdownCh) })
}

// Run starts everything and blocks until ctx ends, Shutdown is called or
// the child app exits. Then it shuts down gracefully.
func (r *Runtime) Run(ctx context.Context) error {
	if err := r.cfg.Validate(); err != nil {
		return err
	}
	if r.cfg.ConfigFile != "" {
		feats, acl, err := loadConfiguration(r.cfg.ConfigFile)
		if err != nil {
			return err
		}
		r.features = feats
		r.acl = acl
	}
	r.metrics = metrics.New()
	// The broker starts first: pubsub.mecha and bindings.mecha connect to
	// it when they initialize, and it closes after them.
	brokerAddr := ""
	if r.cfg.BrokerPort != 0 {
		bc := r.cfg.Broker
		p := r.cfg.BrokerPort
		if p < 0 {
			p = 0
		}
		bc.Addr = net.JoinHostPort(r.cfg.ListenAddress, strconv.Itoa(p))
		bc.DataDir = filepath.Join(r.cfg.DataDir, "broker")
		bc.Logger = r.log.With("component", "broker")
		b, err := broker.Start(bc)
		if err != nil {
			return fmt.Errorf("%w (--broker-port %d; -1 picks a free port, 0 turns the broker off)", err, r.cfg.BrokerPort)
		}
		defer b.Close()
		r.broker = b
		brokerAddr = b.Addr()
	}
	components.RegisterMecha(r.registry, components.MechaOptions{DataDir: r.cfg.DataDir, MaxValueBytes: r.cfg.MaxValueBytes, Logger: r.log, Brokers: brokerAddr, AppID: r.cfg.AppID})
	r.comps = components.NewManager(components.Options{
		AppID: r.cfg.AppID, Paths: r.cfg.ResourcesPaths, Defaults: components.EmbeddedDefaults(brokerAddr != ""),
		Registry: r.registry, Logger: r.log,
	})
	docs, err := r.comps.Load(ctx)
	if err != nil {
		return err
	}
	defer r.comps.Close()
	declared, err := subscriptions.ParseDeclarative(docs, r.cfg.AppID)
	if err != nil {
		return err
	}
	jobs, err := r.streamJobs(docs, brokerAddr)
	if err != nil {
		return err
	}
	if r.cfg.Apps, err = appSpecs(docs, r.cfg.Apps, r.cfg.AppID); err != nil {
		return err
	}
	r.resil = resiliency.NewStore(resiliency.Options{AppID: r.cfg.AppID,
		OnBreakerChange: func(target, instance string, from, to resiliency.State) {
			r.log.Warn("circuit breaker", "target", target, "instance", instance, "from", from, "to", to)
		}})
	if err := r.loadResiliency(docs); err != nil {
		return err
	}
	traffic, err := trafficSpecs(docs)
	if err != nil {
		return err
	}
	r.recordComponents()

	r.local = &invoke.Local{AppID: r.cfg.AppID}
	r.blocks = &blocks.Blocks{AppID: r.cfg.AppID, Components: r.comps, Log: r.log}
	r.subs = subscriptions.New(subscriptions.Options{AppID: r.cfg.AppID, Components: r.comps, Metrics: r.metrics, Logger: r.log})
	r.subs.SetDeclarative(declared)
	r.bindings = inputbindings.New(inputbindings.Options{Components: r.comps, Blocks: r.blocks, Metrics: r.metrics, Logger: r.log})

	deps := &api.Deps{
		AppID: r.cfg.AppID, Blocks: r.blocks, Invoker: &invoke.Invoker{Resolver: r.local}, Local: r.local,
		Subs: r.subs, Metrics: r.metrics, Log: r.log, Metadata: r, APILogging: r.cfg.APILogging,
		MaxRequestBytes: r.cfg.MaxRequestSizeMB << 20, Shutdown: r.Shutdown,
		Ready: r.ready.Load, OutboundReady: r.outbound.Load, APIToken: r.cfg.APIToken,
	}

	// Listen first, so that the outbound API serves before the app is up
	// (Dapr #1933) and the child learns the real ports.
	httpLis, err := net.Listen("tcp", net.JoinHostPort(r.cfg.ListenAddress, strconv.Itoa(r.cfg.HTTPPort)))
	if err != nil {
		return fmt.Errorf("--dapr-http-port %d: %w", r.cfg.HTTPPort, err)
	}
	grpcLis, err := net.Listen("tcp", net.JoinHostPort(r.cfg.ListenAddress, strconv.Itoa(r.cfg.GRPCPort)))
	if err != nil {
		httpLis.Close()
		return fmt.Errorf("--dapr-grpc-port %d: %w", r.cfg.GRPCPort, err)
	}
	var metricsLis net.Listener
	if r.cfg.EnableMetrics {
		metricsLis, err = net.Listen("tcp", net.JoinHostPort(r.cfg.ListenAddress, strconv.Itoa(r.cfg.MetricsPort)))
		if err != nil {
			httpLis.Close()
			grpcLis.Close()
			return fmt.Errorf("--metrics-port %d: %w", r.cfg.MetricsPort, err)
		}
		r.metricsAddr = metricsLis.Addr()
	}
	r.httpAddr, r.grpcAddr = httpLis.Addr(), grpcLis.Addr()
	closeAll := func() {
		httpLis.Close()
		grpcLis.Close()
		if metricsLis != nil {
			metricsLis.Close()
		}
	}
	internalLis, err := net.Listen("tcp", net.JoinHostPort(r.cfg.Membership.BindAddress, strconv.Itoa(r.cfg.InternalPort)))
	if err != nil {
		closeAll()
		return fmt.Errorf("--internal-port %d: %w", r.cfg.InternalPort, err)
	}
	r.internalAddr = internalLis.Addr()
	mcfg := r.cfg.Membership
	mcfg.HTTPPort, mcfg.GRPCPort, mcfg.InternalPort, mcfg.BrokerPort = port(r.httpAddr), port(r.grpcAddr), port(r.internalAddr), r.brokerPort()
	mcfg.DataDir = filepath.Join(r.cfg.DataDir, "membership")
	r.node, err = membership.Start(mcfg, r.log.With("component", "membership"))
	if err != nil {
		closeAll()
		internalLis.Close()
		return fmt.Errorf("gossip membership (--gossip-port %d): %w", mcfg.GossipPort, err)
	}
	r.applyTrafficFiles(traffic)
	token := peer.Token(mcfg.GossipKey)
	r.peerToken = token
	newCluster := func(l *invoke.Local) *invoke.Cluster {
		return &invoke.Cluster{Local: l, Catalog: r.node, MaxResponseBytes: r.cfg.MaxRequestSizeMB << 20, PeerToken: token}
	}
	cluster := newCluster(r.local)
	r.cluster = cluster
	deps.Invoker = &invoke.Invoker{Resolver: cluster, AppID: r.cfg.AppID, Resiliency: r.resil}
	deps.GRPCProxy = r.grpcDirector(r.cfg.AppID, cluster, token)
	deps.Resiliency = r.resil
	peerSrv := &peer.Server{AppID: r.cfg.AppID, Channel: r.local.Channel, Lookup: r.appChannel, Logger: r.log.With("component", "peer"), Allow: r.acl.Allow, Token: token}
	if mcfg.Gateway {
		peerSrv.Forward = cluster.ResolveLocalDC
	}
	r.peer = peerSrv

	httpSrv := httpapi.New(deps)
	grpcSrv := grpcapi.New(deps)
	var servers sync.WaitGroup
	serve := func(name string, f func() error) {
		servers.Add(1)
		go func() {
			defer servers.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				r.log.Error("server stopped", "server", name, "error", err)
			}
		}()
	}
	serve("http", func() error { return httpSrv.Serve(httpLis) })
	serve("grpc", func() error { return grpcSrv.Serve(grpcLis) })
	serve("internal", func() error { return peerSrv.ServeBoth(internalLis) })
	if err := r.startHostedApps(docs, newCluster, serve); err != nil {
		stopCtx, stopCancel := context.WithTimeout(context.Background(), r.cfg.ShutdownGracePeriod)
		r.stopHostedApps(stopCtx)
		r.stopServers(stopCtx, httpSrv, grpcSrv, nil)
		stopCancel()
		if metricsLis != nil {
			metricsLis.Close()
		}
		servers.Wait()
		return err
	}
	var metricsSrv *http.Server
	if metricsLis != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", r.metrics.Handler())
		mux.Handle("/v1.0-alpha1/stream/", &r.jobs)
		mux.HandleFunc("/v1.0-alpha1/traffic/", r.trafficAPI)
		if r.cfg.EnableProfiling {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		serve("metrics", func() error { return metricsSrv.Serve(metricsLis) })
	}
	r.outbound.Store(true)
	r.log.Info("API listening", "http_port", port(r.httpAddr), "grpc_port", port(r.grpcAddr), "metrics_port", port(r.metricsAddr), "broker_port", r.brokerPort(),
		"internal_port", port(r.internalAddr), "gossip_port", r.node.GossipPort(), "wan_port", r.node.WANPort(), "dc", r.node.DC(), "node", r.node.Name())
	close(r.started)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	var workers sync.WaitGroup
	childDone := make(chan error, 1)
	if len(r.cfg.Command) > 0 {
		if err := r.startChild(childDone); err != nil {
			cancel()
			stopCtx, stopCancel := context.WithTimeout(context.Background(), r.cfg.ShutdownGracePeriod)
			r.stopServers(stopCtx, httpSrv, grpcSrv, metricsSrv)
			stopCancel()
			servers.Wait()
			return err
		}
	}

	// Hot reload, owned by Run through workers.
	r.comps.OnChange(func(cs components.ChangeSet) {
		r.recordComponents()
		if decl, err := subscriptions.ParseDeclarative(cs.Docs, r.cfg.AppID); err != nil {
			r.log.Error("hot reload: subscriptions not applied", "error", err)
		} else {
			r.subs.SetDeclarative(decl)
		}
		if err := r.loadResiliency(cs.Docs); err != nil {
			r.log.Error("hot reload: resiliency policies not applied; the previous ones stand", "error", err)
		}
		if specs, err := trafficSpecs(cs.Docs); err != nil {
			r.log.Error("hot reload: traffic policies not applied", "error", err)
		} else {
			r.applyTrafficFiles(specs)
		}
		r.subs.Sync(runCtx)
		r.bindings.Sync(runCtx)
	})
	workers.Add(1)
	go func() {
		defer workers.Done()
		if err := r.comps.Watch(runCtx); err != nil {
			r.log.Error("hot reload is off", "error", err)
		}
	}()

	workers.Add(1)
	go func() {
		defer workers.Done()
		r.connectApp(runCtx)
	}()
	r.connectHostedApps(runCtx, &workers)
	workers.Add(1)
	go func() {
		defer workers.Done()
		r.cluster.ProbeLoop(runCtx, 500*time.Millisecond)
	}()
	for _, spec := range jobs {
		run, err := job.New(spec, job.Options{Brokers: brokerAddr, DataDir: filepath.Join(r.cfg.DataDir, "stream"),
			Stdout: os.Stdout, Logger: r.log.With("job", spec.Name), SaveState: r.saveJobState,
			InvokeApp: r.postJobResult, Publish: r.publishJobResult})
		if err != nil {
			r.log.Error("stream job not started", "job", spec.Name, "error", err)
			continue
		}
		r.jobs.Add(run)
		workers.Add(1)
		go func() {
			defer workers.Done()
			if err := run.Run(runCtx); err != nil {
				r.log.Error("stream job stopped", "job", spec.Name, "error", err)
			}
		}()
	}

	var exitErr error
	select {
	case <-ctx.Done():
		r.log.Info("shutting down", "reason", "signal")
	case <-r.shutdownCh:
		r.log.Info("shutting down", "reason", "shutdown API")
	case err := <-childDone:
		r.log.Info("shutting down", "reason", "app exited", "error", err)
		exitErr = err
		childDone = nil
	}

	// Graceful shutdown: stop taking events, let deliveries and requests in
	// flight finish, then stop the app and close components. The grace
	// period is the budget of the whole shutdown, as in daprd.
	r.ready.Store(false)
	grace, graceCancel := context.WithTimeout(context.Background(), r.cfg.ShutdownGracePeriod)
	defer graceCancel()
	r.subs.Drain(grace)
	r.bindings.Drain(grace)
	r.stopHostedApps(grace)
	r.stopServers(grace, httpSrv, grpcSrv, metricsSrv)
	cancel()
	workers.Wait()
	servers.Wait()
	if childDone != nil {
		r.stopChild(grace, childDone)
	}
	if ch := r.local.Channel(); ch != nil {
		_ = ch.Close()
	}
	r.grpcConns.close()
	r.log.Info("shutdown complete")
	return exitErr
}

// streamJobs reads the StreamJob documents of the resources path. A bad
// job stops startup with an error naming the file and field, as a bad
// component does. Jobs are read at startup; a changed job file takes a
// restart.
func (r *Runtime) streamJobs(docs []components.Document, brokers string) ([]job.Spec, error) {
	var out []job.Spec
	for _, d := range docs {
		if d.Kind != job.Kind {
			continue
		}
		spec, err := job.ParseDocument(d.Raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.Where(), err)
		}
		if spec.Source.Brokers == "" && brokers == "" {
			return nil, fmt.Errorf("%s: stream job %q: spec.source.brokers: not set, and the embedded broker is off (--broker-port 0)", d.Where(), spec.Name)
		}
		r.log.Info("stream job loaded", "job", spec.Name, "source", spec.Source.Topic, "sink", spec.Sink.Type)
		out = append(out, spec)
	}
	return out, nil
}

// saveJobState is a stream job's state sink: results saved through the
// state building block, under keys the app reads as its own.
func (r *Runtime) saveJobState(ctx context.Context, store string, entries []job.StateEntry) error {
	items := make([]state.SetRequest, len(entries))
	for i, e := range entries {
		items[i] = state.SetRequest{Key: e.Key, Value: e.Value}
	}
	return r.blocks.SaveState(ctx, store, items)
}

// postJobResult is a stream job's app sink: a POST of one result to a
// route of the app. It fails (and the job retries) until the app is up,
// and when the app answers with an error status.
func (r *Runtime) postJobResult(ctx context.Context, route string, body []byte) error {
	ch := r.local.Channel()
	if ch == nil {
		return fmt.Errorf("app sink %s: the app is not connected yet", route)
	}
	resp, err := ch.Invoke(ctx, &appchannel.InvokeRequest{Method: strings.TrimPrefix(route, "/"), Verb: "POST",
		ContentType: "application/json", Body: body})
	if err != nil {
		return fmt.Errorf("app sink %s: %w", route, err)
	}
	if resp.Status >= 300 {
		return fmt.Errorf("app sink %s: the app answered %d: %.200s", route, resp.Status, resp.Body)
	}
	return nil
}

// publishJobResult is a stream job's pubsub sink: one result published
// as a CloudEvent, as the app's own publishes are.
func (r *Runtime) publishJobResult(ctx context.Context, pubsub, topic string, body []byte) error {
	return r.blocks.Publish(ctx, &blocks.PublishRequest{PubsubName: pubsub, Topic: topic, Data: body, ContentType: "application/json"})
}

// loadResiliency applies the Resiliency documents of the resources path,
// replacing the policies in force. An invalid document names its file and
// field, and changes nothing.
func (r *Runtime) loadResiliency(docs []components.Document) error {
	var rs []*resiliency.Document
	for _, d := range docs {
		if d.Kind != "Resiliency" {
			continue
		}
		doc, err := resiliency.Decode(d.Raw)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrConfig, d.Where(), err)
		}
		rs = append(rs, doc)
	}
	if err := r.resil.Replace(rs...); err != nil {
		return fmt.Errorf("%w: resiliency: %v", ErrConfig, err)
	}
	if len(rs) > 0 {
		r.log.Info("resiliency policies loaded", "documents", len(rs))
	}
	return nil
}

// publishApp tells the other runtimes, through the gossip catalog, that
// this runtime's app is up (healthy) or not.
func (r *Runtime) publishApp(healthy bool) { r.setAppHealth(r.cfg.AppID, healthy) }

// brokerPort is the embedded broker's port, 0 when it is off.
func (r *Runtime) brokerPort() int {
	if r.broker == nil {
		return 0
	}
	_, p, _ := net.SplitHostPort(r.broker.Addr())
	n, _ := strconv.Atoi(p)
	return n
}

func (r *Runtime) stopServers(grace context.Context, h *httpapi.Server, g *grpcapi.Server, m *http.Server) {
	// Leave the pool first, so that other runtimes stop sending calls
	// here, then let the calls in flight on the internal port finish.
	if r.node != nil {
		lctx, cancel := context.WithTimeout(grace, 2*time.Second)
		if err := r.node.Leave(lctx); err != nil {
			r.log.Warn("leaving the gossip pool", "error", err)
		}
		cancel()
		_ = r.node.Shutdown()
	}
	if r.peer != nil {
		_ = r.peer.Shutdown(grace)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = h.Shutdown(grace) }()
	go func() { defer wg.Done(); g.GracefulStop(grace) }()
	if m != nil {
		_ = m.Shutdown(grace)
	}
	wg.Wait()
}

func port(a net.Addr) int {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.Port
	}
	return 0
}

// connectApp waits for the app, builds the channel, loads its
// subscriptions, starts deliveries and marks the runtime ready.
func (r *Runtime) connectApp(ctx context.Context) {
	if r.cfg.AppPort == 0 {
		r.ready.Store(true)
		r.log.Info("mecha ready", "app_port", 0)
		return
	}
	addr := net.JoinHostPort(r.cfg.AppChannelAddress, strconv.Itoa(r.cfg.AppPort))
	r.log.Info("waiting for the app", "address", addr)
	ch, err := r.dialApp(ctx, addr, r.cfg.AppProtocol)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("app channel", "error", err)
		}
		return
	}
	r.local.SetChannel(ch)
	r.bindings.SetChannel(ch)
	if r.cfg.EnableAppHealthCheck {
		r.healthLoop(ctx, ch)
		return
	}
	r.metrics.SetAppHealthy(true)
	r.publishApp(true)
	r.startDeliveries(ctx, ch)
	r.ready.Store(true)
	r.log.Info("mecha ready", "app_port", r.cfg.AppPort)
}

// dialApp waits until the app at addr takes connections, then builds its
// channel.
func (r *Runtime) dialApp(ctx context.Context, addr, protocol string) (appchannel.Channel, error) {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if protocol == "grpc" {
		return appchannel.NewGRPC(ctx, appchannel.GRPCOptions{Address: addr, MaxMessageBytes: r.cfg.MaxRequestSizeMB << 20})
	}
	return appchannel.NewHTTP(appchannel.HTTPOptions{Address: addr, HealthPath: r.cfg.AppHealthCheckPath, MaxResponseBytes: r.cfg.MaxRequestSizeMB << 20}), nil
}

func (r *Runtime) startDeliveries(ctx context.Context, ch appchannel.Channel) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	subs, err := ch.Subscriptions(sctx)
	cancel()
	if err != nil {
		r.log.Error("reading the app's subscriptions", "error", err)
	}
	r.subs.SetApp(ch, subs)
	r.subs.Sync(ctx)
	r.bindings.Sync(ctx)
}

// healthLoop probes the app every interval. Deliveries start when it turns
// healthy and stop after threshold failed probes, as Dapr's app health
// checks do.
func (r *Runtime) healthLoop(ctx context.Context, ch appchannel.Channel) {
	r.watchHealth(ctx, ch, func() {
		r.metrics.SetAppHealthy(true)
		r.publishApp(true)
		r.log.Info("app is healthy")
		r.startDeliveries(ctx, ch)
		if !r.ready.Load() {
			r.ready.Store(true)
			r.log.Info("mecha ready", "app_port", r.cfg.AppPort)
		}
	}, func(err error) {
		r.metrics.SetAppHealthy(false)
		r.publishApp(false)
		r.log.Warn("app is unhealthy; pausing deliveries", "error", err)
		r.subs.Pause()
		r.bindings.Pause()
	})
}

// watchHealth probes an app every --app-health-probe-interval: healthy
// runs when it turns healthy, unhealthy after --app-health-threshold
// failed probes in a row.
func (r *Runtime) watchHealth(ctx context.Context, ch appchannel.Channel, healthy func(), unhealthy func(error)) {
	up := false
	failures := 0
	t := time.NewTicker(r.cfg.AppHealthInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, r.cfg.AppHealthTimeout)
		err := ch.Health(pctx)
		cancel()
		switch {
		case err == nil && !up:
			up, failures = true, 0
			healthy()
		case err == nil:
			failures = 0
		case up:
			failures++
			if failures >= r.cfg.AppHealthThreshold {
				up = false
				unhealthy(err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Runtime) recordComponents() {
	snap := r.comps.Snapshot()
	r.metrics.SetComponents("state", len(snap.State))
	r.metrics.SetComponents("pubsub", len(snap.PubSub))
	r.metrics.SetComponents("bindings", len(snap.InputBindings)+len(snap.OutputBindings))
	r.metrics.SetComponents("secretstores", len(snap.Secrets))
}

// startChild starts the app command with the API ports in its environment.
func (r *Runtime) startChild(done chan<- error) error {
	cmd := exec.Command(r.cfg.Command[0], r.cfg.Command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(),
		"DAPR_HTTP_PORT="+strconv.Itoa(port(r.httpAddr)),
		"DAPR_GRPC_PORT="+strconv.Itoa(port(r.grpcAddr)),
		"APP_ID="+r.cfg.AppID,
	)
	if r.cfg.AppPort != 0 {
		cmd.Env = append(cmd.Env, "APP_PORT="+strconv.Itoa(r.cfg.AppPort))
	}
	if r.metricsAddr != nil {
		cmd.Env = append(cmd.Env, "DAPR_METRICS_PORT="+strconv.Itoa(port(r.metricsAddr)))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the app %q: %w", r.cfg.Command[0], err)
	}
	r.childMu.Lock()
	r.child = cmd
	r.childMu.Unlock()
	r.log.Info("app started", "command", r.cfg.Command, "pid", cmd.Process.Pid)
	go func() {
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("app: %w", err)
		}
		done <- err
	}()
	return nil
}

// Signal forwards sig to the child app (and its process group).
func (r *Runtime) Signal(sig os.Signal) {
	r.childMu.Lock()
	child := r.child
	r.childMu.Unlock()
	if child != nil && child.Process != nil {
		if s, ok := sig.(syscall.Signal); ok {
			_ = syscall.Kill(-child.Process.Pid, s)
		} else {
			_ = child.Process.Signal(sig)
		}
	}
}

// stopChild asks the app to stop, then kills it when the grace period
// ends (after at least a second: the app got the signal only now).
func (r *Runtime) stopChild(grace context.Context, done <-chan error) {
	r.childMu.Lock()
	child := r.child
	r.childMu.Unlock()
	if child == nil {
		return
	}
	r.Signal(syscall.SIGTERM)
	wait := time.Second
	if dl, ok := grace.Deadline(); ok && time.Until(dl) > wait {
		wait = time.Until(dl)
	}
	select {
	case <-done:
	case <-time.After(wait):
		r.log.Warn("app did not exit in time; killing it")
		_ = syscall.Kill(-child.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Metadata implements api.MetadataProvider.
func (r *Runtime) Metadata() *api.Metadata {
	m := &api.Metadata{
		ID: r.cfg.AppID, RuntimeVersion: Version, EnabledFeatures: append([]string{}, r.features...),
		Actors: []any{}, Components: []api.ComponentInfo{}, Subscriptions: []api.SubscriptionInfo{},
		HTTPEndpoints: []any{}, Extended: map[string]string{},
	}
	for _, c := range r.comps.Snapshot().Infos {
		m.Components = append(m.Components, api.ComponentInfo{Name: c.Name, Type: c.Type, Version: c.Version, Capabilities: c.Capabilities})
	}
	for _, s := range r.subs.List() {
		si := api.SubscriptionInfo{PubsubName: s.PubsubName, Topic: s.Topic, Metadata: s.Metadata, DeadLetterTopic: s.DeadLetterTopic, Type: s.Type}
		for _, ru := range s.Rules {
			si.Rules = append(si.Rules, api.RuleInfo{Match: ru.Match, Path: ru.Path})
		}
		m.Subscriptions = append(m.Subscriptions, si)
	}
	r.extMu.Lock()
	for k, v := range r.extended {
		m.Extended[k] = v
	}
	r.extMu.Unlock()
	m.Extended["appCommand"] = fmt.Sprint(r.cfg.Command)
	m.Extended["daprRuntimeVersion"] = Version
	if r.cfg.AppPort != 0 {
		acp := &api.AppConnectionProperties{Port: r.cfg.AppPort, Protocol: r.cfg.AppProtocol, ChannelAddress: r.cfg.AppChannelAddress}
		if r.cfg.EnableAppHealthCheck {
			acp.Health = &api.AppHealth{HealthCheckPath: r.cfg.AppHealthCheckPath, HealthProbeInterval: r.cfg.AppHealthInterval.String(),
				HealthProbeTimeout: r.cfg.AppHealthTimeout.String(), HealthThreshold: int32(r.cfg.AppHealthThreshold)}
		}
		m.AppConnectionProperties = acp
	}
	return m
}

// SetExtended implements api.MetadataProvider.
func (r *Runtime) SetExtended(key, value string) {
	r.extMu.Lock()
	r.extended[key] = value
	r.extMu.Unlock()
}
