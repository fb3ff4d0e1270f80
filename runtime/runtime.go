package runtime

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"google.golang.org/grpc/credentials"

	"mecha/broker"
	"mecha/components"
	"mecha/internal/authtoken"
	"mecha/internal/clustermap"
	"mecha/internal/muxconn"
	"mecha/internal/netlimit"
	"mecha/runtime/accesscontrol"
	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/clustertls"
	"mecha/runtime/invoke"
	"mecha/runtime/membership"
	"mecha/runtime/metrics"
	"mecha/runtime/peer"
	"mecha/runtime/resiliency"
	"mecha/runtime/subscriptions"
	"mecha/statestore/cluster"
	"mecha/stream/job"
)

// Version is the runtime version reported by the metadata API.
var Version = "0.1.0-dev"

// Runtime is one `mecha run` process.
type Runtime struct {
	cfg   Config
	log   *slog.Logger
	hooks Hooks

	registry *components.Registry

	// Set by Run's startup, before anything serves; read-only after.
	metrics  *metrics.Metrics
	features []string
	acl      *accesscontrol.List // who may call the apps; nil allows all
	broker   *broker.Broker      // the embedded broker; nil with --broker=false
	// The data dir (datadir.go): its lock when this runtime owns it;
	// else the owner, and the owner's broker this guest uses.
	ownerLock   *os.File
	guestOf     *ownerRecord
	hostBroker  string
	brokerSASL  sasl.Mechanism // the runtime's own clients' credentials in a broker cluster that authenticates
	comps       *components.Manager
	resil       *resiliency.Store // Resiliency policies of the resources path
	docs        []components.Document
	jobSpecs    []job.Spec
	traffic     []fileSpec
	node        *membership.Node
	peer        *peer.Server                    // the internal port
	peerToken   string                          // sent to other runtimes' internal ports
	crux        *cluster.Node                   // what state.crux stores through (crux.go)
	cruxMaps    *cluster.MapVar                 // the map crux routes by: fixed on one host, the control plane's in the cluster
	cruxClients atomic.Pointer[cluster.Clients] // the muxconn clients to the other members (crux.go)
	cp          atomic.Pointer[controlPlane]    // a server's control plane, once it runs (read by muxHandler)
	cpRun       *controlPlane                   // what stopControlPlane stops
	cruxStats   *cluster.Stats                  // the routers' decisions (cruxstatus.go)
	tls         *clustertls.Config              // the cluster's mutual TLS; nil without --tls-*
	cluster     *invoke.Cluster
	// cruxLeaderChanges counts slots whose leader changed between maps.
	cruxLeaderChanges atomic.Int64
	// cruxFailedAt is when this member last drained itself because its
	// store could not write (Unix nanoseconds).
	cruxFailedAt atomic.Int64
	// hosts are the apps this runtime serves, the --app-id app first.
	// The list is complete before any server serves and never changes.
	hosts   []*appHost
	primary *appHost
	// Listeners of the runtime's own ports (the apps' are their hosts').
	metricsLis, internalLis net.Listener
	metricsSrv              *http.Server
	// children run the apps' commands (the --app-id app's after "--", and
	// those of a multi-app run template); exits takes their ends.
	children []*child
	exits    chan childExit

	jobs      job.Jobs  // stream jobs, controlled on the metrics port
	streams   *jobSet   // the running stream jobs; set by startWorkers
	grpcConns grpcConns // to other runtimes, for proxied gRPC calls

	// appsMu guards appHealth: the health of each app hosted here.
	appsMu    sync.Mutex
	appHealth map[string]bool
	// trafficFiles are the traffic policies last read from files, by app
	// (JSON); Run and hot reload own them.
	trafficFiles map[string]string

	outbound atomic.Bool

	// stopCtx ends when the runtime stops for good: when the shutdown's
	// grace period is over. Every call's context derives from it.
	stopCtx    context.Context
	stopCancel context.CancelFunc

	started chan struct{}

	shutdownOnce sync.Once
	shutdownCh   chan struct{}

	// childMu guards children, which startChildren appends to while the
	// signal goroutine reads them.
	childMu sync.Mutex

	// extMu guards extended.
	extMu    sync.Mutex
	extended map[string]string
}

// Hooks replace what the runtime reaches outside the process, for tests.
type Hooks struct {
	// Listen opens the listener of one port (name says which: "http
	// APPID", "grpc APPID", "metrics", "internal"); net.Listen when nil.
	Listen func(name, addr string) (net.Listener, error)
	// StartChild starts the app command; StartProcess when nil.
	StartChild ChildStarter
}

// New builds a runtime from cfg. Register extra component types on
// Registry() before Run.
func New(cfg Config, log *slog.Logger) *Runtime {
	return NewWithHooks(cfg, log, Hooks{})
}

// NewWithHooks is New with listeners and the child starter replaced.
func NewWithHooks(cfg Config, log *slog.Logger, hooks Hooks) *Runtime {
	reg := components.NewRegistry()
	components.RegisterContrib(reg)
	stopCtx, stopCancel := context.WithCancel(context.Background())
	return &Runtime{
		cfg: cfg, log: log, hooks: hooks, registry: reg, stopCtx: stopCtx, stopCancel: stopCancel,
		exits:      make(chan childExit, 1+len(cfg.Apps)),
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
func (r *Runtime) HTTPAddr() net.Addr { return r.primary.httpLis.Addr() }

// GRPCAddr is the gRPC API's address once Started is closed.
func (r *Runtime) GRPCAddr() net.Addr { return r.primary.grpcLis.Addr() }

// Shutdown starts a graceful shutdown; Run returns when it is done.
func (r *Runtime) Shutdown() {
	r.shutdownOnce.Do(func() { close(r.shutdownCh) })
}

// Signal forwards sig to the apps' commands (and their process groups).
func (r *Runtime) Signal(sig os.Signal) {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	r.childMu.Lock()
	children := r.children
	r.childMu.Unlock()
	for _, c := range children {
		c.signal(s)
	}
}

// listen opens the listener of one port, under the runtime's
// connection cap, with accept failures retried (netlimit), and exports
// its connection counts.
func (r *Runtime) listen(name, addr string) (net.Listener, error) {
	var l net.Listener
	var err error
	if r.hooks.Listen != nil {
		l, err = r.hooks.Listen(name, addr)
	} else {
		l, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	nl := netlimit.Wrap(l, netlimit.Options{Name: name, MaxConns: r.cfg.MaxConnections, Logger: r.log})
	r.metrics.AddListener(nl)
	return nl, nil
}

// Run starts everything and blocks until ctx ends, Shutdown is called or
// the child app exits. Then it shuts down gracefully. A failed startup
// stops what it had started and returns the error.
func (r *Runtime) Run(ctx context.Context) error {
	if err := r.cfg.Validate(); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer r.stopCancel()
	var workers sync.WaitGroup
	sup := &supervisor{log: r.log}
	// Startup, in order; a failure stops what started, in reverse.
	units := []unit{
		{name: "data dir", start: r.claimDataDir, stop: r.releaseDataDir},
		{name: "configuration", start: r.loadConfig},
		{name: "broker", start: r.startBroker, stop: func(context.Context) {
			if r.broker != nil {
				r.broker.Close()
			}
		}},
		{name: "components", start: r.loadComponents, stop: func(context.Context) { r.comps.Close() }},
		{name: "listeners", start: r.listenAll, stop: func(context.Context) { r.closeListeners() }},
		{name: "membership", start: r.startMembership, stop: func(context.Context) { _ = r.node.Shutdown() }},
		{name: "data dir owner record", start: r.recordOwner},
		{name: "internal port", start: r.servePeer, stop: func(grace context.Context) { _ = r.peer.Shutdown(grace) }},
		{name: "control plane", start: r.startControlPlane, stop: r.stopControlPlane},
		{name: "app APIs", start: r.serveHosts, stop: r.stopHosts},
		{name: "metrics", start: r.serveMetrics, stop: func(grace context.Context) {
			if r.metricsSrv != nil {
				_ = r.metricsSrv.Shutdown(grace)
			}
		}},
		{name: "ready", start: r.announce},
		{name: "workers", start: func(context.Context) error {
			r.startWorkers(runCtx, &workers)
			return nil
		}, stop: func(context.Context) {
			cancel()
			workers.Wait()
		}},
		// Last: the apps' commands start once everything serves, and
		// stop first.
		{name: "apps' commands", start: r.startChildren, stop: r.stopChildren},
	}
	if err := sup.start(runCtx, r.cfg.ShutdownGracePeriod, units...); err != nil {
		return err
	}

	// With apps' commands, the runtime lives until they have all
	// exited (as `dapr run` and `dapr run -f` do), and exits with the
	// first failure.
	var exitErr error
	running := len(r.children)
	var exits chan childExit
	if running > 0 {
		exits = r.exits
	}
wait:
	for {
		select {
		case <-ctx.Done():
			r.log.Info("shutting down", "reason", "signal")
			break wait
		case <-r.shutdownCh:
			r.log.Info("shutting down", "reason", "shutdown API")
			break wait
		case e := <-exits:
			running--
			if e.err != nil && exitErr == nil {
				exitErr = e.err
			}
			if running > 0 {
				r.log.Info("app exited; the others run on", "app", e.app, "err", e.err)
				continue
			}
			r.log.Info("shutting down", "reason", "app exited", "app", e.app, "err", e.err)
			break wait
		}
	}

	// Graceful shutdown: stop taking events and let the deliveries in
	// flight finish, leave the cluster so that other runtimes stop
	// calling, then stop the rest in reverse order of startup. The grace
	// period is the budget of the whole shutdown, as in daprd.
	grace, graceCancel := context.WithTimeout(context.Background(), r.cfg.ShutdownGracePeriod)
	defer graceCancel()
	// Calls still running when the grace period ends are cancelled.
	context.AfterFunc(grace, r.stopCancel)
	var wg sync.WaitGroup
	for _, h := range r.hosts {
		wg.Add(1)
		go func() { defer wg.Done(); h.drain(grace) }()
	}
	wg.Wait()
	r.leaveCluster(grace)
	sup.stop(grace)
	r.log.Info("shutdown complete")
	return exitErr
}

// serversFirst is how long the commands of apps that take no calls
// wait for those that do to be connected.
const serversFirst = 30 * time.Second

// startChildren starts the apps' commands, once every port listens. With
// several apps (a multi-app run template), the apps that take calls
// (an app port) start first, and the others once those are connected
// (or serversFirst has passed): a publisher or caller started with its
// subscribers and callees then finds them there.
func (r *Runtime) startChildren(ctx context.Context) error {
	startOne := func(h *appHost) error {
		c := &child{h: h, exits: r.exits, done: make(chan struct{})}
		if err := c.start(); err != nil {
			r.stopChildren(context.Background()) // a unit that fails undoes itself
			return err
		}
		r.childMu.Lock()
		r.children = append(r.children, c)
		r.childMu.Unlock()
		return nil
	}
	var servers, others []*appHost
	for _, h := range r.hosts {
		switch {
		case len(h.spec.Command) == 0:
		case h.spec.Port != 0:
			servers = append(servers, h)
		default:
			others = append(others, h)
		}
	}
	for _, h := range servers {
		if err := startOne(h); err != nil {
			return err
		}
	}
	if len(servers) > 0 && len(others) > 0 {
		notReady := func(h *appHost) bool { return !h.ready.Load() }
		deadline := time.Now().Add(serversFirst)
		for slices.ContainsFunc(servers, notReady) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		if slices.ContainsFunc(servers, notReady) {
			r.log.Warn("starting the other apps before every app that takes calls is connected", "waited", serversFirst)
		}
	}
	for _, h := range others {
		if err := startOne(h); err != nil {
			return err
		}
	}
	return nil
}

// stopChildren stops the apps' commands, all within the grace period.
func (r *Runtime) stopChildren(grace context.Context) {
	r.childMu.Lock()
	children := r.children
	r.childMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range children {
		wg.Add(1)
		go func() { defer wg.Done(); c.stop(grace) }()
	}
	wg.Wait()
}

// loadConfig reads --config.
func (r *Runtime) loadConfig(context.Context) error {
	r.metrics = metrics.New()
	r.peerToken = peer.Token(r.cfg.Membership.GossipKey)
	if r.cfg.BootstrapExpect > 0 {
		if r.guestOf != nil {
			return fmt.Errorf("--bootstrap-expect %d: --data-dir is owned by another mecha run (pid %d), and a cluster server needs a data dir of its own", r.cfg.BootstrapExpect, r.guestOf.PID)
		}
		if err := r.clusterNodeName(); err != nil {
			return err
		}
	}
	if r.cfg.TLSCA != "" {
		t, err := clustertls.Load(r.cfg.TLSCA, r.cfg.TLSCert, r.cfg.TLSKey)
		if err != nil {
			return err
		}
		r.tls = t
		r.grpcConns.creds = credentials.NewTLS(t.Client("h2"))
	}
	if r.cfg.InsecureCluster && !isLoopback(r.cfg.Membership.BindAddress) {
		r.log.Warn("INSECURE CLUSTER: gossip and the internal port listen beyond loopback without authentication (--allow-insecure-cluster): anyone who reaches them can join the cluster and call its apps; set --gossip-key",
			"address", r.cfg.Membership.BindAddress)
	}
	if r.cfg.ConfigFile == "" {
		return nil
	}
	feats, acl, err := loadConfiguration(r.cfg.ConfigFile)
	if err != nil {
		return err
	}
	r.features, r.acl = feats, acl
	return nil
}

// startBroker starts the embedded broker: pubsub.mecha and
// bindings.mecha connect to it when they initialize, and it closes after
// them.
func (r *Runtime) startBroker(context.Context) error {
	if r.cfg.NoBroker {
		return nil
	}
	bc := r.cfg.Broker
	p := r.cfg.BrokerPort
	if p < 0 {
		p = 0
	}
	host := r.cfg.BrokerListenAddress
	if host == "" {
		host = "127.0.0.1"
	}
	bc.Addr = net.JoinHostPort(host, strconv.Itoa(p))
	bc.DataDir = filepath.Join(r.cfg.DataDir, "broker")
	bc.Logger = r.log.With("component", "broker")
	if r.cfg.BrokerCluster {
		// The map the broker follows is Crux's: one control plane.
		r.cruxMaps = cluster.NewMapVar(clustermap.New())
		bc.Cluster = &broker.ClusterConfig{Self: r.cfg.Membership.NodeName, Maps: r.cruxMaps, Propose: r.proposeCrux,
			Addr: r.brokerOf, Fetch: r.brokerReplicaFetch}
	}
	if r.cfg.BrokerCluster && len(bc.SASLUsers) > 0 {
		// The runtime's own clients (pubsub.mecha, bindings.mecha, stream
		// jobs) reach the cluster's brokers over the network: they
		// authenticate as the runtime's user, which every broker of the
		// cluster knows, and which passes the ACLs.
		if _, taken := bc.SASLUsers[runtimeBrokerUser]; taken {
			return fmt.Errorf("%w: --broker-sasl-users names %q, the user the runtime's own clients authenticate as in the broker cluster; rename it", ErrConfig, runtimeBrokerUser)
		}
		pass := r.brokerCredential()
		bc.SASLUsers = maps.Clone(bc.SASLUsers)
		bc.SASLUsers[runtimeBrokerUser] = pass
		bc.SuperUsers = append(slices.Clone(bc.SuperUsers), runtimeBrokerUser)
		r.brokerSASL = scram.Auth{User: runtimeBrokerUser, Pass: pass}.AsSha512Mechanism()
	}
	b, err := broker.Start(bc)
	if err != nil {
		return fmt.Errorf("%w (--broker-port %d; 0 picks a free port, --broker=false turns the broker off)", err, r.cfg.BrokerPort)
	}
	r.broker = b
	r.metrics.Registry.MustRegister(b.Collector())
	if !isLoopback(host) && host != "localhost" && len(r.cfg.Broker.SASLUsers) == 0 {
		r.log.Warn("INSECURE BROKER: the embedded broker listens beyond loopback without authentication; anyone who reaches it can read and write every topic", "addr", b.Addr())
	}
	return nil
}

// runtimeBrokerUser is the SASL user the runtime's own clients of a
// broker cluster authenticate as when its brokers authenticate
// (--broker-sasl-users).
const runtimeBrokerUser = "mecha-runtime"

// brokerCredential is runtimeBrokerUser's password: the same on every
// runtime of the cluster, derived from the gossip key (without one, from
// the cluster id: a cluster on loopback, which keeps no secrets).
func (r *Runtime) brokerCredential() string {
	secret := r.cfg.Membership.GossipKey
	if secret == "" {
		secret = "cluster id " + r.cfg.ClusterID
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("mecha broker runtime user"))
	return hex.EncodeToString(m.Sum(nil))
}

// brokerAddr is the embedded broker's address; on a guest without a
// broker of its own, the data dir owner's; "" when there is none.
func (r *Runtime) brokerAddr() string {
	if r.broker == nil {
		return r.hostBroker
	}
	return r.broker.Addr()
}

// localBroker is the embedded broker for the components and jobs that call
// it in-process, nil (not a nil *broker.Broker) when it is off. In the
// broker cluster it is nil too: they are Kafka clients of the cluster
// through this runtime's broker (brokerAddr), which routes them to each
// partition's leader and each group's coordinator on any host.
func (r *Runtime) localBroker() broker.Local {
	if r.broker == nil || r.cfg.BrokerCluster {
		return nil
	}
	return r.broker
}

// loadComponents reads the resources path: the apps it declares, the
// components (initialized), subscriptions, stream jobs, resiliency and
// traffic policies. Anything invalid stops startup, naming its file and
// field.
func (r *Runtime) loadComponents(ctx context.Context) (err error) {
	if len(r.cfg.ResourcesPaths) > 0 {
		if r.docs, err = components.ReadDocuments(r.cfg.ResourcesPaths); err != nil {
			return err
		}
	}
	if r.cfg.Apps, err = appSpecs(r.docs, r.cfg.Apps, r.cfg.AppID); err != nil {
		return err
	}
	ids := make([]string, len(r.cfg.Apps))
	for i, a := range r.cfg.Apps {
		ids[i] = a.ID
	}
	if err := r.startCrux(); err != nil {
		return err
	}
	components.RegisterMecha(r.registry, components.MechaOptions{DataDir: r.cfg.DataDir, MaxValueBytes: r.cfg.MaxValueBytes, Logger: r.log, Brokers: r.brokerAddr(), Broker: r.localBroker(), BrokerSASL: r.brokerSASL, AppID: r.cfg.AppID,
		CruxBackend: r.crux.Backend, CruxClientOnly: r.crux.Server == nil})
	r.comps = components.NewManager(components.Options{
		AppID: r.cfg.AppID, Apps: ids, Paths: r.cfg.ResourcesPaths, Defaults: components.EmbeddedDefaults(r.brokerAddr() != ""),
		Registry: r.registry, Logger: r.log,
	})
	docs, err := r.comps.Load(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil { // a unit that fails undoes itself
			r.comps.Close()
		}
	}()
	r.docs = docs
	r.resil = resiliency.NewStore(resiliency.Options{AppID: r.cfg.AppID,
		OnBreakerChange: func(target, instance string, from, to resiliency.State) {
			r.log.Warn("circuit breaker", "target", target, "instance", instance, "from", from, "to", to)
		}})
	if err := r.loadResiliency(docs); err != nil {
		return err
	}
	if r.traffic, err = trafficSpecs(docs); err != nil {
		return err
	}
	r.primary = newAppHost(r, AppSpec{ID: r.cfg.AppID, Port: r.cfg.AppPort, Protocol: r.cfg.AppProtocol,
		HTTPPort: r.cfg.HTTPPort, GRPCPort: r.cfg.GRPCPort, Command: r.cfg.Command, Dir: r.cfg.CommandDir, Env: r.cfg.CommandEnv}, true)
	r.hosts = []*appHost{r.primary}
	for _, spec := range r.cfg.Apps {
		r.hosts = append(r.hosts, newAppHost(r, spec, false))
	}
	for _, h := range r.hosts {
		decl, err := subscriptions.ParseDeclarative(docs, h.spec.ID)
		if err != nil {
			return err
		}
		h.subs.SetDeclarative(decl)
	}
	if r.jobSpecs, err = r.streamJobs(docs); err != nil {
		return err
	}
	r.recordComponents()
	return nil
}

// listenAll opens every port before anything serves, so that the
// outbound API answers before the app is up (Dapr #1933) and the child
// learns the real ports.
func (r *Runtime) listenAll(context.Context) (err error) {
	// A unit that fails undoes itself: close what opened.
	defer func() {
		if err != nil {
			r.closeListeners()
		}
	}()
	for _, h := range r.hosts {
		if err := h.listen(); err != nil {
			return err
		}
	}
	if r.cfg.EnableMetrics {
		if r.metricsLis, err = r.listen("metrics", net.JoinHostPort(r.cfg.ListenAddress, strconv.Itoa(r.cfg.MetricsPort))); err != nil {
			return fmt.Errorf("--metrics-port %d: %w", r.cfg.MetricsPort, err)
		}
	}
	if r.internalLis, err = r.listen("internal", net.JoinHostPort(r.cfg.Membership.BindAddress, strconv.Itoa(r.cfg.InternalPort))); err != nil {
		return fmt.Errorf("--internal-port %d: %w", r.cfg.InternalPort, err)
	}
	return nil
}

// closeListeners closes the ports; a server that serves one has closed
// it already, which is harmless.
func (r *Runtime) closeListeners() {
	for _, h := range r.hosts {
		h.closeListeners()
	}
	for _, l := range []net.Listener{r.metricsLis, r.internalLis} {
		if l != nil {
			l.Close()
		}
	}
}

// startMembership joins the gossip pool, publishing this runtime's ports
// and apps.
func (r *Runtime) startMembership(context.Context) error {
	mcfg := r.cfg.Membership
	mcfg.HTTPPort, mcfg.GRPCPort, mcfg.InternalPort, mcfg.BrokerPort = port(r.primary.httpLis.Addr()), port(r.primary.grpcLis.Addr()), port(r.internalLis.Addr()), r.brokerPort()
	mcfg.DataDir = filepath.Join(r.cfg.DataDir, "membership")
	node, err := membership.Start(mcfg, r.log.With("component", "membership"))
	if err != nil {
		return fmt.Errorf("gossip membership: %w", err)
	}
	r.node = node
	r.applyTrafficFiles(r.traffic)
	r.cluster = &invoke.Cluster{Local: r.primary.local, Catalog: r.node, MaxResponseBytes: r.cfg.MaxRequestSizeMB << 20, PeerToken: r.peerToken, Self: node.InstanceID()}
	if r.tls != nil {
		r.cluster.TLS = r.tls.Client("")
	}
	return nil
}

// leaveCluster leaves the gossip pool, so that other runtimes stop
// sending calls here, before the servers stop.
func (r *Runtime) leaveCluster(grace context.Context) {
	if r.node == nil {
		return
	}
	lctx, cancel := context.WithTimeout(grace, 2*time.Second)
	defer cancel()
	if err := r.node.Leave(lctx); err != nil {
		r.log.Warn("leaving the gossip pool", "err", err)
	}
}

// resolver is the invocation resolver of an app hosted here: its own
// app-id is local, every other one goes through the cluster.
func (r *Runtime) resolver(l *invoke.Local) invoke.Resolver {
	return r.cluster.For(l)
}

// servePeer serves the internal port: other runtimes' calls to the apps
// hosted here.
func (r *Runtime) servePeer(context.Context) error {
	r.peer = &peer.Server{Lookup: r.appChannel, Logger: r.log.With("component", "peer"), Allow: r.acl.Allow, Token: r.peerToken, Timeouts: r.cfg.Timeouts, Context: r.stopCtx,
		Gateway: r.cfg.Membership.Gateway, Invoker: &invoke.Invoker{Resolver: peerResolver{r}},
		Mux: &muxconn.Server{Token: r.peerToken, Handler: r.muxHandler, Timeouts: r.cfg.Timeouts, Logger: r.log.With("component", "mux")}}
	lis := r.internalLis
	if r.tls != nil {
		lis = tls.NewListener(lis, r.tls.Server())
	}
	go func() {
		if err := r.peer.ServeBoth(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("server stopped", "server", "internal", "err", err)
		}
	}()
	return nil
}

// appChannel finds the channel of an app this runtime hosts, with or
// without a ".namespace" suffix, for the internal port.
func (r *Runtime) appChannel(id string) (func() appchannel.Channel, string, bool) {
	for _, h := range r.hosts {
		if h.local.IsSelf(id) {
			return h.local.Channel, h.spec.ID, true
		}
	}
	return nil, "", false
}

// peerResolver resolves the callee of a call that came in on the
// internal port: an app hosted here, or, on a gateway, an instance in
// this DC (never another gateway).
type peerResolver struct{ r *Runtime }

func (p peerResolver) Resolve(ctx context.Context, appID string) (invoke.Target, error) {
	inst := invoke.InstanceOf(ctx)
	if ch, id, ok := p.r.appChannel(appID); ok && (inst == "" || inst == p.r.node.InstanceID()) {
		c := ch()
		if c == nil {
			return invoke.Target{}, invoke.ErrNoAppChannel
		}
		return invoke.Target{AppID: id, Channel: c}, nil
	}
	if !p.r.cfg.Membership.Gateway {
		// A call for another instance, sent here from a stale catalog.
		return invoke.Target{}, fmt.Errorf("%w: this runtime is instance %q, not %q", invoke.ErrInstanceNotFound, p.r.node.InstanceID(), inst)
	}
	return p.r.cluster.ResolveLocalDC(appID, inst)
}

// serveHosts starts every app's API servers.
func (r *Runtime) serveHosts(context.Context) error {
	for _, h := range r.hosts {
		h.serve()
	}
	r.outbound.Store(true)
	return nil
}

// stopHosts stops every app's API servers, then closes the app
// channels.
func (r *Runtime) stopHosts(grace context.Context) {
	var wg sync.WaitGroup
	for _, h := range r.hosts {
		wg.Add(1)
		go func() { defer wg.Done(); h.stopServers(grace) }()
	}
	wg.Wait()
	for _, h := range r.hosts {
		h.closeChannel()
	}
	r.grpcConns.close()
}

// serveMetrics serves Prometheus metrics and the admin APIs.
func (r *Runtime) serveMetrics(context.Context) error {
	if r.metricsLis == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", r.metrics.Handler())
	mux.Handle("/v1.0-alpha1/stream/", r.admin(&r.jobs))
	mux.Handle("/v1.0-alpha1/traffic/", r.admin(http.HandlerFunc(r.trafficAPI)))
	mux.Handle("/v1.0-alpha1/crux/status", r.admin(http.HandlerFunc(r.cruxStatusAPI)))
	mux.Handle("/v1.0-alpha1/crux/drain", r.admin(http.HandlerFunc(r.cruxDrainAPI)))
	mux.Handle("/v1.0-alpha1/broker/reassign", r.admin(http.HandlerFunc(r.brokerReassignAPI)))
	if r.cfg.EnableProfiling {
		mux.Handle("/debug/pprof/", r.admin(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/profile", r.admin(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", r.admin(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", r.admin(http.HandlerFunc(pprof.Trace)))
	}
	to := r.cfg.Timeouts.OrDefault()
	r.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: to.Header, IdleTimeout: to.Idle}
	go func() {
		if err := r.metricsSrv.Serve(r.metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("server stopped", "server", "metrics", "err", err)
		}
	}()
	return nil
}

// admin guards the admin APIs of the metrics port (traffic policies,
// stream job control, profiling): with DAPR_API_TOKEN set, every call
// carries it in dapr-api-token, as the app APIs do; without one, only
// reads are taken unless the port listens on loopback alone.
func (r *Runtime) admin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		refuse := func(code int, msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_, _ = fmt.Fprintf(w, `{"errorCode":"ERR_UNAUTHORIZED","message":%q}`+"\n", msg)
		}
		switch {
		case r.cfg.APIToken != "":
			if !authtoken.Equal([]byte(req.Header.Get(invoke.HeaderAPIToken)), []byte(r.cfg.APIToken)) {
				refuse(http.StatusUnauthorized, "the admin API wants the runtime's API token (DAPR_API_TOKEN) in dapr-api-token")
				return
			}
		case req.Method != http.MethodGet && req.Method != http.MethodHead && !isLoopback(r.cfg.ListenAddress):
			refuse(http.StatusForbidden, "changes through the admin API beyond loopback need DAPR_API_TOKEN set on the runtime")
			return
		}
		h.ServeHTTP(w, req)
	})
}

// announce logs the ports and tells Started's waiters.
func (r *Runtime) announce(context.Context) error {
	var metricsPort int
	if r.metricsLis != nil {
		metricsPort = port(r.metricsLis.Addr())
	}
	r.log.Info("API listening", "http_port", port(r.primary.httpLis.Addr()), "grpc_port", port(r.primary.grpcLis.Addr()), "metrics_port", metricsPort, "broker_port", r.brokerPort(),
		"internal_port", port(r.internalLis.Addr()), "gossip_port", r.node.GossipPort(), "wan_port", r.node.WANPort(), "dc", r.node.DC(), "node", r.node.Name())
	close(r.started)
	return nil
}

// startWorkers starts what runs until shutdown, owned by workers: hot
// reload, the apps' connections, the balancer probes and stream jobs.
func (r *Runtime) startWorkers(ctx context.Context, workers *sync.WaitGroup) {
	go1 := func(f func()) {
		workers.Add(1)
		go func() { defer workers.Done(); f() }()
	}
	r.comps.OnChange(func(cs components.ChangeSet) { r.reload(ctx, cs) })
	go1(func() {
		if err := r.comps.Watch(ctx); err != nil {
			r.log.Error("hot reload is off", "err", err)
		}
	})
	for _, h := range r.hosts {
		go1(func() { h.connect(ctx) })
	}
	go1(func() { r.cluster.ProbeLoop(ctx, 500*time.Millisecond) })
	r.streams = &jobSet{r: r, ctx: ctx, workers: workers, running: map[string]*runningJob{}}
	r.streams.sync(r.jobSpecs)
	if r.streams.placed() {
		go1(r.streams.followPlacement)
	}
}

// reload applies a hot reload of the resources path.
func (r *Runtime) reload(ctx context.Context, cs components.ChangeSet) {
	r.recordComponents()
	if err := r.loadResiliency(cs.Docs); err != nil {
		r.log.Error("hot reload: resiliency policies not applied; the previous ones stand", "err", err)
	}
	if specs, err := trafficSpecs(cs.Docs); err != nil {
		r.log.Error("hot reload: traffic policies not applied", "err", err)
	} else {
		r.applyTrafficFiles(specs)
	}
	for _, h := range r.hosts {
		h.reload(ctx, cs.Docs)
	}
	if specs, err := r.streamJobs(cs.Docs); err != nil {
		r.log.Error("hot reload: stream jobs not applied; the running ones stand", "err", err)
	} else {
		r.streams.sync(specs)
	}
}

// host is the host of app-id id ("" is the --app-id app).
func (r *Runtime) host(id string) *appHost {
	for _, h := range r.hosts {
		if h.spec.ID == id {
			return h
		}
	}
	return r.primary
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

// brokerPort is the embedded broker's port, 0 when it is off.
func (r *Runtime) brokerPort() int {
	if r.broker == nil {
		return 0
	}
	_, p, _ := net.SplitHostPort(r.broker.Addr())
	n, _ := strconv.Atoi(p)
	return n
}

func port(a net.Addr) int {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.Port
	}
	return 0
}

// How often dialApp says it is still waiting for the app.
const (
	appWaitFirstLog = 5 * time.Second
	appWaitLogEvery = 30 * time.Second
)

// dialApp waits until the app at addr takes connections, logging that it
// waits after appWaitFirstLog, then builds its channel.
func (r *Runtime) dialApp(ctx context.Context, addr, protocol string) (appchannel.Channel, error) {
	start := time.Now()
	nextLog := start.Add(appWaitFirstLog)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			if time.Since(start) >= appWaitFirstLog {
				r.log.Info("the app listens now", "addr", addr, "waited", time.Since(start).Round(time.Second))
			}
			break
		}
		if now := time.Now(); now.After(nextLog) {
			r.log.Warn("waiting for the app: nothing takes connections at its port yet; is it started, and listening on --app-port?",
				"addr", addr, "waited", now.Sub(start).Round(time.Second), "err", err)
			nextLog = now.Add(appWaitLogEvery)
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

// extendedCopy is a copy of the metadata API's extended attributes.
func (r *Runtime) extendedCopy() map[string]string {
	r.extMu.Lock()
	defer r.extMu.Unlock()
	m := make(map[string]string, len(r.extended)+2)
	for k, v := range r.extended {
		m[k] = v
	}
	return m
}

// Limits of the extended metadata (PUT /v1.0/metadata/{key}): it is
// held in memory and returned whole by every GET.
const (
	maxExtendedKey    = 256
	maxExtendedValue  = 64 << 10
	maxExtendedKeys   = 256
	maxExtendedValues = 1 << 20
)

// setExtended sets an extended attribute of the metadata API (shared by
// the apps of the runtime), within the limits on its size and count.
func (r *Runtime) setExtended(key, value string) error {
	if len(key) > maxExtendedKey {
		return apierr.BadRequest("metadata key of %d bytes: at most %d", len(key), maxExtendedKey)
	}
	if len(value) > maxExtendedValue {
		return apierr.BadRequest("metadata value of %d bytes for %q: at most %d", len(value), key, maxExtendedValue)
	}
	r.extMu.Lock()
	defer r.extMu.Unlock()
	total := len(value)
	for k, v := range r.extended {
		if k != key {
			total += len(v)
		}
	}
	if _, ok := r.extended[key]; !ok && len(r.extended) >= maxExtendedKeys {
		return apierr.BadRequest("the extended metadata holds %d keys already: at most %d", len(r.extended), maxExtendedKeys)
	}
	if total > maxExtendedValues {
		return apierr.BadRequest("the extended metadata would hold %d bytes of values: at most %d", total, maxExtendedValues)
	}
	r.extended[key] = value
	return nil
}

// setAppHealth publishes the health of one of this runtime's apps in the
// catalog, with the others'.
func (r *Runtime) setAppHealth(id string, healthy bool) {
	r.appsMu.Lock()
	defer r.appsMu.Unlock()
	if r.appHealth == nil {
		r.appHealth = map[string]bool{}
	}
	r.appHealth[id] = healthy
	if r.node == nil {
		return
	}
	apps := make([]membership.App, 0, len(r.appHealth))
	for id, h := range r.appHealth {
		apps = append(apps, membership.App{ID: id, Healthy: h})
	}
	r.node.SetLocalApps(apps)
}
