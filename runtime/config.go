// Package runtime is the per-host process: it loads components, starts the
// API servers, talks to the app, and owns the lifecycle of everything.
package runtime

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"mecha/broker"
	"mecha/broker/mechapubsub"
	"mecha/internal/netlimit"
	"mecha/runtime/membership"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid configuration")

// Config is `mecha run`'s configuration. Flags use daprd's names.
type Config struct {
	AppID                string
	AppPort              int
	AppProtocol          string
	AppChannelAddress    string
	HTTPPort             int
	GRPCPort             int
	ListenAddress        string
	ResourcesPaths       []string
	ConfigFile           string
	DataDir              string
	LogLevel             string
	LogFormat            string
	MetricsPort          int
	EnableMetrics        bool
	EnableProfiling      bool
	APILogging           bool
	MaxRequestSizeMB     int
	MaxValueBytes        int
	EnableAppHealthCheck bool
	AppHealthCheckPath   string
	AppHealthInterval    time.Duration
	AppHealthTimeout     time.Duration
	AppHealthThreshold   int
	ShutdownGracePeriod  time.Duration
	// BrokerPort is the embedded Kafka-compatible broker's port: 0 (or
	// -1, kept from earlier versions) picks a free port, as for every
	// other port flag.
	BrokerPort int
	// NoBroker turns the embedded broker off (--broker=false).
	NoBroker bool
	// BootstrapExpect makes this runtime a server of the Crux cluster
	// (crux.go): the control plane waits for this many servers before
	// its first election, and the slots are spread over them. 0: no
	// cluster.
	BootstrapExpect int
	// CruxReplicas is how many copies of each slot a new Crux cluster
	// keeps (--crux-replicas; 3, or the member count when fewer). A
	// cluster keeps the number it was bootstrapped with.
	CruxReplicas int
	// CruxRebuildAfter is how long a new cluster lets a member be dead
	// before it rebuilds its replicas on other members
	// (--crux-rebuild-after; 0: 10 minutes).
	CruxRebuildAfter time.Duration
	// CruxClient puts this runtime in its DC's Crux cluster as a client:
	// it stores nothing, and routes every key to its slot's leader,
	// following the map it polls from the servers gossip shows.
	CruxClient bool
	// BrokerCluster makes the embedded brokers of the cluster's servers
	// one Kafka cluster (broker/cluster.go): topics in the control
	// plane's map, replicated partitions, failover, groups coordinated
	// across it; the runtime's pubsub.mecha, bindings.mecha and stream
	// jobs are its Kafka clients. It needs --bootstrap-expect. Off by
	// default while part of the admin API and the stream jobs' failover
	// are not cluster-wide yet (docs/broker.md).
	BrokerCluster bool
	// ClusterID, when set, names the Crux cluster this runtime belongs
	// to: a server bootstraps it under this id and refuses a data dir of
	// another cluster, a client refuses another cluster's map.
	ClusterID string
	// Explicit names the flags given on the command line: a guest of
	// another runtime's data dir (datadir.go) keeps those and picks the
	// rest.
	Explicit map[string]bool
	// Broker configures the embedded broker; Addr and DataDir are set
	// from BrokerPort, BrokerListenAddress and DataDir.
	Broker broker.Config
	// BrokerListenAddress is where the embedded broker listens:
	// 127.0.0.1 unless set. Beyond loopback it needs Broker.SASLUsers
	// (clients authenticate) or InsecureBroker.
	BrokerListenAddress string
	// InsecureBroker lets the broker listen beyond loopback without
	// authentication (--allow-insecure-broker).
	InsecureBroker bool
	// InternalPort is where other runtimes send invocations for this
	// runtime's app (and, on gateways, for their DC); 0 picks a free port.
	InternalPort int
	// Membership is the gossip membership (--dc, --join, --gossip-port,
	// …); the runtime fills in its ports and data dir.
	Membership membership.Config
	// TLSCA, TLSCert and TLSKey turn on mutual TLS on the internal port:
	// the cluster CA's certificate (`mecha ca create`) and this member's
	// certificate and key (`mecha ca issue`).
	TLSCA, TLSCert, TLSKey string
	// MaxConnections caps the connections open at once on each listener
	// (the app APIs, the internal port, the metrics port); past it a new
	// connection is closed at once.
	MaxConnections int
	// Timeouts bound every listener's connections: headers, idleness,
	// bodies.
	Timeouts netlimit.Timeouts
	// InsecureCluster lets gossip and the internal port listen beyond
	// loopback without --gossip-key: anyone who reaches them can join
	// the cluster and call the apps.
	InsecureCluster bool
	// APIToken (DAPR_API_TOKEN in the environment) guards the API: every
	// call but the health checks must carry it in dapr-api-token.
	APIToken string
	// Apps are more apps this runtime serves on its host (--app).
	Apps []AppSpec
	// RunFile is a multi-app run template (`-f`, as `dapr run -f`); the
	// command line applies it with ApplyRunFile before Validate.
	RunFile string
	// Command is the app to start as a child process (after "--"), in
	// CommandDir ("" for the runtime's own) with CommandEnv added.
	Command    []string
	CommandDir string
	CommandEnv []string
}

// DefaultConfig returns the defaults daprd uses where mecha has the flag.
func DefaultConfig() Config {
	home, _ := os.UserHomeDir()
	return Config{
		AppProtocol:         "http",
		AppChannelAddress:   "127.0.0.1",
		HTTPPort:            3500,
		CruxReplicas:        3,
		GRPCPort:            50001,
		ListenAddress:       "127.0.0.1",
		DataDir:             filepath.Join(home, ".mecha", "data"),
		LogLevel:            "info",
		LogFormat:           "text",
		MetricsPort:         9090,
		InternalPort:        50002,
		APIToken:            os.Getenv("DAPR_API_TOKEN"),
		Membership:          defaultMembership(),
		EnableMetrics:       true,
		MaxRequestSizeMB:    4,
		MaxValueBytes:       4 << 20,
		AppHealthCheckPath:  "/healthz",
		AppHealthInterval:   5 * time.Second,
		AppHealthTimeout:    500 * time.Millisecond,
		AppHealthThreshold:  3,
		ShutdownGracePeriod: 5 * time.Second,
		BrokerPort:          9092,
		MaxConnections:      10000,
		Timeouts:            netlimit.DefaultTimeouts,
		Broker:              embeddedBrokerConfig(),
	}
}

// embeddedBrokerConfig is Kafka's defaults but for max.message.bytes,
// which is as large as pubsub.mecha's maxMessageBytes so that any body
// the HTTP API takes can be published.
func embeddedBrokerConfig() broker.Config {
	c := broker.DefaultConfig()
	c.Log.MaxBatchBytes = mechapubsub.DefaultMaxMessageBytes
	return c
}

// defaultMembership is membership's defaults with the bind address left
// to Validate: loopback unless runtime-to-runtime traffic is
// authenticated.
func defaultMembership() membership.Config {
	c := membership.DefaultConfig()
	c.BindAddress = ""
	return c
}

type stringList struct{ v *[]string }

func (s stringList) String() string {
	if s.v == nil {
		return ""
	}
	return strings.Join(*s.v, ",")
}

func (s stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s.v = append(*s.v, p)
		}
	}
	return nil
}

// BindFlags registers the run flags on fs.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.AppID, "app-id", c.AppID, "the app's id (required, unless -f gives the apps)")
	fs.StringVar(&c.RunFile, "f", c.RunFile, "a multi-app run template (dapr.yaml, or a folder holding one), as `dapr run -f`: every app on this runtime")
	fs.IntVar(&c.AppPort, "app-port", c.AppPort, "the port the app listens on; 0 means the app takes no calls")
	fs.StringVar(&c.AppProtocol, "app-protocol", c.AppProtocol, "how to talk to the app: http or grpc")
	fs.StringVar(&c.AppChannelAddress, "app-channel-address", c.AppChannelAddress, "the address the app listens on")
	fs.IntVar(&c.HTTPPort, "dapr-http-port", c.HTTPPort, "HTTP API port (0 picks a free port)")
	fs.IntVar(&c.GRPCPort, "dapr-grpc-port", c.GRPCPort, "gRPC API port (0 picks a free port)")
	fs.StringVar(&c.ListenAddress, "dapr-listen-addresses", c.ListenAddress, "the address the APIs listen on")
	fs.Var(stringList{&c.ResourcesPaths}, "resources-path", "a folder of component and subscription YAML (repeatable)")
	fs.Var(stringList{&c.ResourcesPaths}, "components-path", "alias of --resources-path")
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "a Dapr Configuration YAML file")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "where embedded subsystems keep their data")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	fs.IntVar(&c.MetricsPort, "metrics-port", c.MetricsPort, "Prometheus /metrics port (0 picks a free port)")
	fs.BoolVar(&c.EnableMetrics, "enable-metrics", c.EnableMetrics, "serve Prometheus metrics")
	fs.BoolVar(&c.EnableProfiling, "enable-profiling", c.EnableProfiling, "serve Go's pprof at /debug/pprof on the metrics port")
	fs.BoolVar(&c.APILogging, "enable-api-logging", c.APILogging, "log every API call")
	fs.IntVar(&c.MaxRequestSizeMB, "dapr-http-max-request-size", c.MaxRequestSizeMB, "the largest request body in MB")
	fs.IntVar(&c.MaxValueBytes, "max-value-bytes", c.MaxValueBytes, "the largest value the embedded state store (state.crux) accepts")
	fs.BoolVar(&c.EnableAppHealthCheck, "enable-app-health-check", c.EnableAppHealthCheck, "probe the app's health periodically")
	fs.StringVar(&c.AppHealthCheckPath, "app-health-check-path", c.AppHealthCheckPath, "the app's HTTP health path")
	fs.Var(seconds{&c.AppHealthInterval, time.Second}, "app-health-probe-interval", "time between app health probes, in seconds or as a duration (5, 5s)")
	fs.Var(seconds{&c.AppHealthTimeout, time.Millisecond}, "app-health-probe-timeout", "timeout of one app health probe, in milliseconds or as a duration (500, 500ms)")
	fs.IntVar(&c.AppHealthThreshold, "app-health-threshold", c.AppHealthThreshold, "failed probes before the app counts as unhealthy")
	fs.Var(seconds{&c.ShutdownGracePeriod, time.Second}, "dapr-graceful-shutdown-seconds", "how long shutdown waits for work in flight, in seconds or as a duration")
	fs.IntVar(&c.BrokerPort, "broker-port", c.BrokerPort, "the embedded Kafka-compatible broker's port (0 picks a free port)")
	fs.Var(negBool{&c.NoBroker}, "broker", "run the embedded Kafka-compatible broker (--broker=false turns it off; the default pubsub is then contrib's in-memory one)")
	c.Broker.BindFlags(fs, "broker-")
	fs.DurationVar(&c.CruxRebuildAfter, "crux-rebuild-after", c.CruxRebuildAfter, "how long a new Crux cluster lets a member be dead before it copies that member's replicas to the other members (0: 10m)")
	fs.IntVar(&c.CruxReplicas, "crux-replicas", c.CruxReplicas, "copies of each Crux slot a new cluster keeps on its members (the leader's and its followers'), at most the member count; strong writes wait for every in-sync copy, at least 2")
	fs.BoolVar(&c.BrokerCluster, "broker-cluster", c.BrokerCluster, "with --bootstrap-expect, make the embedded brokers of the cluster's servers one Kafka cluster: topics and partition leaders in the control plane's map, partitions replicated (min(3, brokers) copies) with failover, consumer groups across it, and pubsub.mecha as its client (docs/broker.md, Cluster)")
	fs.IntVar(&c.BootstrapExpect, "bootstrap-expect", c.BootstrapExpect, "make this runtime a server of the DC's Crux cluster, which starts once this many servers (this one included) have met through gossip; give the same number to each of them (0: state.crux stays on this host)")
	fs.StringVar(&c.ClusterID, "cluster-id", c.ClusterID, "the Crux cluster's id: servers bootstrap it under this id and refuse a --data-dir of another cluster; clients refuse the map of another cluster (empty: a new id at bootstrap, anything accepted)")
	fs.BoolVar(&c.CruxClient, "crux-client", c.CruxClient, "use the DC's Crux cluster without holding slots: state.crux stores route every key to its leader (the servers are found by gossip: give --join)")
	fs.IntVar(&c.InternalPort, "internal-port", c.InternalPort, "the port other runtimes invoke this runtime's app on; 0 picks a free port")
	c.Membership.BindFlags(fs)
	fs.IntVar(&c.MaxConnections, "max-connections", c.MaxConnections, "the most connections each listener (app APIs, internal port, metrics) keeps open at once; past it new ones are closed at once")
	fs.DurationVar(&c.Timeouts.Header, "header-timeout", c.Timeouts.Header, "how long a connection may take to send a request's headers (or stay silent when new) before it is closed")
	fs.DurationVar(&c.Timeouts.Idle, "idle-timeout", c.Timeouts.Idle, "how long a kept-alive connection may wait for its next request")
	fs.DurationVar(&c.Timeouts.Body, "body-timeout", c.Timeouts.Body, "how long reading a request body, or writing a response, may take")
	fs.StringVar(&c.TLSCA, "tls-ca", c.TLSCA, "the cluster CA's certificate: with --tls-cert and --tls-key, other runtimes must present a certificate it signed (see `mecha ca`)")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "this runtime's certificate, signed by the cluster CA")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "this runtime's private key")
	fs.BoolVar(&c.InsecureCluster, "allow-insecure-cluster", c.InsecureCluster, "let gossip and the internal port listen beyond loopback without --gossip-key (anyone who reaches them can join and call the apps)")
	fs.StringVar(&c.BrokerListenAddress, "broker-listen-address", c.BrokerListenAddress, "the address the embedded broker listens on (default 127.0.0.1; beyond loopback it needs --broker-sasl-users or --allow-insecure-broker)")
	fs.BoolVar(&c.InsecureBroker, "allow-insecure-broker", c.InsecureBroker, "let the embedded broker listen beyond loopback without authentication (anyone who reaches it can read and write every topic)")
	fs.Var(appList{&c.Apps}, "app", "one more app on this host: id=ID,port=PORT[,protocol=http|grpc][,http-port=N][,grpc-port=N] (repeatable)")
}

// Validate checks the configuration and names the bad flag.
func (c *Config) Validate() error {
	var errs []string
	if c.AppID == "" {
		errs = append(errs, "--app-id is required")
	} else if strings.ContainsAny(c.AppID, "|/ \t") {
		errs = append(errs, fmt.Sprintf("--app-id %q must not contain '|', '/' or spaces", c.AppID))
	}
	switch c.AppProtocol {
	case "http", "grpc":
	default:
		errs = append(errs, fmt.Sprintf("--app-protocol %q is not http or grpc", c.AppProtocol))
	}
	for name, p := range map[string]int{"--app-port": c.AppPort, "--dapr-http-port": c.HTTPPort, "--dapr-grpc-port": c.GRPCPort, "--metrics-port": c.MetricsPort, "--internal-port": c.InternalPort} {
		if p < 0 || p > 65535 {
			errs = append(errs, fmt.Sprintf("%s %d is not a port", name, p))
		}
	}
	if a := c.BrokerListenAddress; a != "" && !isLoopback(a) && a != "localhost" && !c.InsecureBroker && len(c.Broker.SASLUsers) == 0 {
		return fmt.Errorf("%w: --broker-listen-address %s: beyond loopback the embedded broker must authenticate its clients, or anyone who reaches it could read and write every topic; give it --broker-sasl-users FILE, keep it on loopback, or say --allow-insecure-broker", ErrConfig, a)
	}
	if err := c.clusterSecurity(); err != nil {
		errs = append(errs, err.Error())
	} else if err := c.Membership.Validate(); err != nil {
		errs = append(errs, err.Error())
	}
	seen := map[string]bool{c.AppID: true}
	for _, a := range c.Apps {
		if seen[a.ID] {
			errs = append(errs, fmt.Sprintf("--app id=%s: app-id used twice", a.ID))
		}
		seen[a.ID] = true
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Sprintf("--log-level %q is not debug, info, warn or error", c.LogLevel))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Sprintf("--log-format %q is not text or json", c.LogFormat))
	}
	if c.MaxConnections <= 0 {
		errs = append(errs, fmt.Sprintf("--max-connections %d must be positive", c.MaxConnections))
	}
	if c.Timeouts.Header <= 0 || c.Timeouts.Idle <= 0 || c.Timeouts.Body <= 0 {
		errs = append(errs, "--header-timeout, --idle-timeout and --body-timeout must be positive")
	}
	if c.MaxRequestSizeMB <= 0 {
		errs = append(errs, fmt.Sprintf("--dapr-http-max-request-size %d must be positive", c.MaxRequestSizeMB))
	}
	if c.MaxValueBytes <= 0 {
		errs = append(errs, fmt.Sprintf("--max-value-bytes %d must be positive", c.MaxValueBytes))
	}
	if c.CruxRebuildAfter < 0 {
		errs = append(errs, fmt.Sprintf("--crux-rebuild-after %v must not be negative", c.CruxRebuildAfter))
	}
	if c.CruxReplicas < 0 || c.CruxReplicas > 7 {
		errs = append(errs, fmt.Sprintf("--crux-replicas %d must be from 1 to 7 (0: 3)", c.CruxReplicas))
	}
	if c.BootstrapExpect < 0 {
		errs = append(errs, fmt.Sprintf("--bootstrap-expect %d must not be negative", c.BootstrapExpect))
	}
	if c.ClusterID != "" && c.BootstrapExpect == 0 && !c.CruxClient {
		errs = append(errs, "--cluster-id "+c.ClusterID+" needs --bootstrap-expect or --crux-client: it names the Crux cluster this runtime is in")
	}
	if c.BrokerCluster && (c.BootstrapExpect <= 0 || c.NoBroker) {
		errs = append(errs, "--broker-cluster: the broker cluster is the embedded brokers of the cluster's servers, so it needs --bootstrap-expect and the broker on")
	}
	if c.CruxClient && c.BootstrapExpect > 0 {
		errs = append(errs, "--crux-client and --bootstrap-expect: a runtime is a server of the Crux cluster or its client, not both")
	}
	if c.BrokerPort < -1 || c.BrokerPort > 65535 {
		errs = append(errs, fmt.Sprintf("--broker-port %d is not a port (0 picks a free port; --broker=false turns the broker off)", c.BrokerPort))
	}
	if !c.NoBroker {
		bc := c.Broker
		bc.DataDir = c.DataDir
		if err := bc.Validate(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if c.EnableAppHealthCheck && c.AppPort == 0 {
		errs = append(errs, "--enable-app-health-check needs --app-port")
	}
	if c.AppHealthInterval <= 0 || c.AppHealthTimeout <= 0 || c.AppHealthThreshold <= 0 {
		errs = append(errs, "--app-health-probe-interval, --app-health-probe-timeout and --app-health-threshold must be positive")
	}
	for _, p := range c.ResourcesPaths {
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, fmt.Sprintf("--resources-path %s: %v", p, err))
		} else if !st.IsDir() {
			errs = append(errs, fmt.Sprintf("--resources-path %s: not a folder", p))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(errs, "; "))
	}
	return nil
}

// clusterSecurity settles where gossip and the internal port listen:
// beyond loopback only when runtime-to-runtime traffic is authenticated
// (--gossip-key) or the operator said --allow-insecure-cluster. Without
// --gossip-bind-address they listen on 127.0.0.1, or on 0.0.0.0 when
// authenticated.
func (c *Config) clusterSecurity() error {
	secure := c.Membership.GossipKey != "" || c.InsecureCluster
	how := "set --gossip-key (make one with `mecha keygen`; --tls-ca/--tls-cert/--tls-key add mutual TLS on the internal port), or --allow-insecure-cluster to let anyone who reaches these ports join the cluster and call its apps"
	switch {
	case c.Membership.BindAddress == "" && secure:
		c.Membership.BindAddress = "0.0.0.0"
	case c.Membership.BindAddress == "":
		c.Membership.BindAddress = "127.0.0.1"
	case !secure && !isLoopback(c.Membership.BindAddress):
		return fmt.Errorf("--gossip-bind-address %s: gossip and the internal port beyond loopback must be authenticated: %s", c.Membership.BindAddress, how)
	}
	if !secure {
		for _, j := range append(append([]string{}, c.Membership.Join...), c.Membership.WANJoin...) {
			if h, _, err := net.SplitHostPort(j); err == nil && !isLoopback(h) && h != "localhost" {
				return fmt.Errorf("--join %s: joining a runtime beyond loopback needs authenticated cluster traffic: %s", j, how)
			}
		}
	}
	if n := btoi(c.TLSCA != "") + btoi(c.TLSCert != "") + btoi(c.TLSKey != ""); n != 0 && n != 3 {
		return fmt.Errorf("--tls-ca, --tls-cert and --tls-key go together (got %d of them)", n)
	}
	return nil
}

func isLoopback(addr string) bool {
	ip := net.ParseIP(addr)
	return ip != nil && ip.IsLoopback()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// seconds is a duration flag that also takes a bare number in unit, the
// way daprd's integer flags are written.
type seconds struct {
	d    *time.Duration
	unit time.Duration
}

func (s seconds) String() string {
	if s.d == nil {
		return ""
	}
	return s.d.String()
}

func (s seconds) Set(v string) error {
	if n, err := strconv.Atoi(v); err == nil {
		*s.d = time.Duration(n) * s.unit
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is neither a number nor a duration", v)
	}
	*s.d = d
	return nil
}

// negBool is a boolean flag that sets *v to its negation: --broker=false
// sets NoBroker.
type negBool struct{ v *bool }

func (f negBool) String() string {
	if f.v == nil {
		return "true"
	}
	return strconv.FormatBool(!*f.v)
}

func (f negBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	*f.v = !b
	return nil
}

func (f negBool) IsBoolFlag() bool { return true }
