// Package broker is mecha's Kafka-compatible broker: a protocol server on
// github.com/twmb/franz-go/pkg/kmsg (one file per API key, named
// api_<name>.go, each with its behaviour and version notes at the top), a
// topic registry over the partition logs of broker/storage, and a classic
// consumer group coordinator.
//
// It runs single-node today: the node leads every partition and the high
// watermark is the log end. Partition logs already expose what a follower
// needs (read by offset, append with offsets), so replication adds callers.
//
// Components in the broker's own process call it without a socket
// through Local (local.go): Produce and Fetch on the same paths as the
// Produce and Fetch APIs, and Request for the other APIs, run by their
// handlers unencoded.
//
// Isolation: each request runs on its own goroutine and responses are
// written in request order, as Kafka requires per connection. Control
// requests (metadata, group coordination) never take a partition lock, so
// they never wait behind data. Produce requests hold a slot in their
// topic's queue; when a topic's queue is full the request fails at once
// with a retriable REQUEST_TIMED_OUT for that topic, and other topics in
// the same request go on.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"mecha/broker/storage"
	"mecha/internal/dirlock"
	"mecha/internal/netlimit"
)

// Config configures a broker. Zero values take the defaults of
// DefaultConfig where noted.
type Config struct {
	// Addr is the listen address, host:port; port 0 picks a free one.
	Addr string
	// AdvertisedHost is the host clients are told to connect to; empty
	// means the listen host, or 127.0.0.1 when that is unspecified.
	AdvertisedHost string
	// DataDir holds the topics and the committed offsets.
	DataDir string
	// NodeID is this broker's id in metadata.
	NodeID int32
	// MaxRequestBytes bounds one request frame (socket.request.max.bytes);
	// a larger frame closes the connection.
	MaxRequestBytes int32
	// AutoCreateTopics creates a topic on first produce or metadata request.
	AutoCreateTopics bool
	// DefaultPartitions is the partition count of auto-created topics.
	DefaultPartitions int32
	// Log is the default partition log configuration; topics override it.
	Log storage.Config
	// FlushInterval is the periodic fsync of logs and offsets.
	FlushInterval time.Duration
	// TopicQueueDepth bounds the produce requests in flight per topic.
	TopicQueueDepth int32
	// RetentionCheckInterval is how often retention runs.
	RetentionCheckInterval time.Duration
	// MinSessionTimeout and MaxSessionTimeout bound consumer sessions
	// (group.min/max.session.timeout.ms).
	MinSessionTimeout, MaxSessionTimeout time.Duration
	// MaxConnections caps the connections served at once; one accepted
	// past the cap is closed at once, so the descriptors left stay free
	// for the logs. 0 takes the default.
	MaxConnections int
	// IdleTimeout closes a connection that has no request in progress
	// and has sent nothing for that long, or whose client has not taken
	// a response for that long (connections.max.idle.ms). 0 takes the
	// default.
	IdleTimeout time.Duration
	// RequestReadTimeout bounds the time from a request's first byte to
	// its last, so that a client cannot hold a connection (and up to
	// MaxRequestBytes of memory) with a frame it never finishes. 0 takes
	// the default.
	RequestReadTimeout time.Duration
	// SASLUsers, when set, are the users (name to password) a client
	// must authenticate as, by SASL PLAIN or SCRAM-SHA-256/512, before
	// any request but ApiVersions (sasl.go).
	SASLUsers map[string]string
	// TLSCertFile and TLSKeyFile, when set, make the listener TLS
	// (Kafka's SSL and SASL_SSL listeners): the broker's certificate
	// chain and key, PEM.
	TLSCertFile, TLSKeyFile string
	// ACLs turns on Kafka's simple ACLs (authorize.go): a client may do
	// only what a binding allows. The bindings are kept in the data
	// dir's acls.json and managed with CreateAcls, DescribeAcls and
	// DeleteAcls.
	ACLs bool
	// SuperUsers pass every ACL check: user names, or User:name.
	SuperUsers []string
	// Throttle is lag throttling (throttle.go): fetches far behind the
	// high watermark wait while the disk is busy.
	Throttle ThrottleConfig
	// Cluster, when set, makes the broker one broker of a cluster that
	// follows the control plane's map (cluster.go).
	Cluster *ClusterConfig
	// MaxOpenSegmentFiles bounds the partition segment files held open
	// across all topics (see storage.SegmentFiles): the others are closed
	// and reopened on demand. Files in use at once may pass it. 0 takes
	// the default.
	MaxOpenSegmentFiles int
	// Logger receives the broker's logs. Warnings and errors are
	// rate-limited per message (10, then one a second).
	Logger *slog.Logger
}

// DefaultConfig returns Kafka's defaults where Kafka has one, except
// MaxRequestBytes: 32 MiB rather than Kafka's 100 MiB, because kmsg
// allocates each array from its claimed count, up to ~64 bytes of structs
// per byte of frame, before the data proves the count (a 100 MiB frame of
// zeros would ask for 6 GB). Producers batch 1 MiB per partition, so 32 MiB
// is many partitions' worth; raise --max-request-bytes if you need more.
func DefaultConfig() Config {
	log := storage.DefaultConfig()
	log.TailCacheBytes = defaultTailCacheBytes
	return Config{
		Addr: "127.0.0.1:9092", NodeID: 1, MaxRequestBytes: 32 << 20,
		AutoCreateTopics: true, DefaultPartitions: 1, Log: log,
		FlushInterval: time.Second, TopicQueueDepth: 512, RetentionCheckInterval: time.Minute,
		MinSessionTimeout: 6 * time.Second, MaxSessionTimeout: 30 * time.Minute,
		MaxConnections: defaultMaxConnections, IdleTimeout: defaultIdleTimeout, RequestReadTimeout: defaultRequestReadTimeout,
		MaxOpenSegmentFiles: defaultMaxOpenSegmentFiles, Throttle: DefaultThrottleConfig(),
	}
}

// Listener defaults: Kafka's connections.max.idle.ms (10 minutes); a
// connection cap well under the usual descriptor limit; and 30 s for one
// request, which a 32 MiB produce meets at 1 MB/s.
const (
	defaultMaxConnections     = 10000
	defaultIdleTimeout        = 10 * time.Minute
	defaultRequestReadTimeout = 30 * time.Second
	// defaultMaxOpenSegmentFiles keeps the log's descriptors, with the
	// connection cap's, under a 16384 descriptor limit, while a broker
	// writing to fewer partitions never closes a file it writes.
	defaultMaxOpenSegmentFiles = 1024
	// defaultTailCacheBytes is each partition's tail cache: the last
	// 512 KiB written, a few hundred milliseconds of a busy partition,
	// which readers at the tail are within.
	defaultTailCacheBytes = 512 << 10
)

func (c *Config) validate() error {
	if c.RetentionCheckInterval <= 0 {
		c.RetentionCheckInterval = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = defaultMaxConnections
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.RequestReadTimeout == 0 {
		c.RequestReadTimeout = defaultRequestReadTimeout
	}
	if c.MaxOpenSegmentFiles == 0 {
		c.MaxOpenSegmentFiles = defaultMaxOpenSegmentFiles
	}
	switch {
	case c.DataDir == "":
		return errors.New("broker: data dir is required")
	case c.MaxRequestBytes <= 0:
		return fmt.Errorf("broker: max request bytes %d must be positive", c.MaxRequestBytes)
	case c.DefaultPartitions <= 0:
		return fmt.Errorf("broker: default partitions %d must be positive", c.DefaultPartitions)
	case c.FlushInterval <= 0:
		return fmt.Errorf("broker: flush interval %s must be positive", c.FlushInterval)
	case c.TopicQueueDepth <= 0:
		return fmt.Errorf("broker: topic queue depth %d must be positive", c.TopicQueueDepth)
	case c.MaxConnections < 0:
		return fmt.Errorf("broker: max connections %d is negative", c.MaxConnections)
	case c.IdleTimeout < 0:
		return fmt.Errorf("broker: idle timeout %s is negative", c.IdleTimeout)
	case c.RequestReadTimeout < 0:
		return fmt.Errorf("broker: request read timeout %s is negative", c.RequestReadTimeout)
	case c.MaxOpenSegmentFiles < 0:
		return fmt.Errorf("broker: max open segment files %d is negative", c.MaxOpenSegmentFiles)
	case c.MinSessionTimeout > c.MaxSessionTimeout:
		return fmt.Errorf("broker: min session timeout %s above max %s", c.MinSessionTimeout, c.MaxSessionTimeout)
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return fmt.Errorf("broker: a TLS certificate (%q) and key (%q) go together", c.TLSCertFile, c.TLSKeyFile)
	}
	if err := c.Log.Validate(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}

// Broker is a running broker.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	ln      *netlimit.Listener
	host    string
	port    int32
	offsets *storage.OffsetStore
	groups  *coordinator
	topics  *topicRegistry
	pids    *producerIDs
	lock    *dirlock.Lock // held on DataDir while running

	ctx    context.Context // ends when the broker closes
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex // guards conns and closed
	conns  map[*conn]struct{}
	closed bool

	stats listenerStats

	// sasl checks credentials when Config.SASLUsers is set; nil serves
	// every connection unauthenticated.
	sasl *saslAuth
	// tls is the listener's TLS when Config.TLSCertFile is set.
	tls *tls.Config
	// acls decides requests when Config.ACLs is set; nil allows all.
	acls *authorizer
	// cl is the cluster mode, nil for a single broker.
	cl *clusterState
	// disk samples the data dir's device for lag throttling;
	// busyOverride, set by tests, stands in for its utilization.
	disk         *diskMeter
	busyOverride func() float64
	// throttled counts the partition fetches lag throttling answered
	// without records.
	throttled atomic.Uint64
	// replicaServed counts the record bytes read for followers' replica
	// fetches (mecha_broker_replica_bytes_served_total).
	replicaServed atomic.Int64
}

// Start opens the data directory, recovers every partition and starts
// listening.
func Start(cfg Config) (*Broker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	lock, err := dirlock.Acquire(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	// Warnings and errors are rate-limited: clients and failing disks can
	// drive them in loops (ratelog.go).
	log := slog.New(newRateLimitedHandler(cfg.Logger.Handler()))
	b := &Broker{cfg: cfg, log: log, conns: map[*conn]struct{}{}, lock: lock}
	ok := false
	defer func() {
		if !ok {
			lock.Release()
		}
	}()
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.disk = newDiskMeter(cfg.DataDir)
	if b.offsets, err = storage.OpenOffsetStore(filepath.Join(cfg.DataDir, "groups")); err != nil {
		return nil, fmt.Errorf("broker: offsets: %w", err)
	}
	if b.topics, err = openTopics(filepath.Join(cfg.DataDir, "topics"), cfg, b.log); err != nil {
		b.offsets.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	if b.pids, err = openProducerIDs(filepath.Join(cfg.DataDir, "producer-ids")); err != nil {
		b.topics.close()
		b.offsets.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	b.groups = newCoordinator(b.offsets, cfg, b.log)
	if cfg.TLSCertFile != "" {
		cert, cerr := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if cerr != nil {
			b.topics.close()
			b.offsets.Close()
			return nil, fmt.Errorf("broker: TLS certificate %s and key %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, cerr)
		}
		b.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if b.acls, err = openAuthorizer(cfg); err != nil {
		b.topics.close()
		b.offsets.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	if len(cfg.SASLUsers) > 0 {
		if b.sasl, err = newSASLAuth(cfg.SASLUsers); err != nil {
			b.topics.close()
			b.offsets.Close()
			return nil, fmt.Errorf("broker: %w", err)
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		b.topics.close()
		b.offsets.Close()
		return nil, fmt.Errorf("broker: listen %s: %w", cfg.Addr, err)
	}
	b.ln = netlimit.Wrap(ln, netlimit.Options{Name: "broker", MaxConns: cfg.MaxConnections, Logger: b.log})
	addr := ln.Addr().(*net.TCPAddr)
	b.port = int32(addr.Port)
	b.host = cfg.AdvertisedHost
	if b.host == "" {
		b.host = addr.IP.String()
		if addr.IP.IsUnspecified() {
			b.host = "127.0.0.1"
		}
	}
	ok = true
	if cfg.Cluster != nil {
		b.cl = newClusterState(*cfg.Cluster)
		b.startCluster()
	}
	b.wg.Add(3)
	go b.acceptLoop()
	go b.flushLoop()
	go b.tickLoop()
	b.log.Info("broker listening", "addr", ln.Addr().String(), "data_dir", cfg.DataDir, "topics", b.topics.count(), "sasl", b.sasl != nil, "tls", b.tls != nil)
	b.checkDescriptorLimit()
	return b, nil
}

// checkDescriptorLimit warns when the process's descriptor limit is below
// what the broker's caps allow it to hold: then accepts and segment
// opens fail (and are retried) before the caps stop them.
func (b *Broker) checkDescriptorLimit() {
	// A few dozen for the listener, the offsets file, the data dir lock
	// and the runtime's own.
	const slack = 64
	var lim syscall.Rlimit
	need := uint64(b.cfg.MaxConnections + b.cfg.MaxOpenSegmentFiles + slack)
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < need {
		b.log.Warn("broker: the descriptor limit is below the connection cap plus the open segment files",
			"rlimit_nofile", lim.Cur, "max_connections", b.cfg.MaxConnections, "max_open_segment_files", b.cfg.MaxOpenSegmentFiles)
	}
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() string { return net.JoinHostPort(b.host, strconv.Itoa(int(b.port))) }

// acceptLoop accepts connections until the broker closes. The listener
// (netlimit) retries failed accepts (a full descriptor table) with a
// growing wait and closes connections past the cap at once.
func (b *Broker) acceptLoop() {
	defer b.wg.Done()
	for {
		nc, err := b.ln.Accept()
		if err != nil {
			return // closed
		}
		if b.tls != nil {
			// The handshake runs at the first read, under the
			// connection's idle deadline.
			nc = tls.Server(nc, b.tls)
		}
		c := newConn(b, nc)
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			nc.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			c.serve()
			b.mu.Lock()
			delete(b.conns, c)
			b.mu.Unlock()
		}()
	}
}

// connCount is the number of connections being served.
func (b *Broker) connCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// flushLoop is the periodic fsync of partition logs and group offsets.
func (b *Broker) flushLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.FlushInterval)
	defer t.Stop()
	retention := time.NewTicker(b.cfg.RetentionCheckInterval)
	defer retention.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			b.topics.flush(b.log)
			if err := b.offsets.Flush(); err != nil {
				b.log.Error("broker: fsync offsets", "err", err)
			}
		case now := <-retention.C:
			b.topics.enforceRetention(now, b.log)
		}
	}
}

// tickLoop drives group timeouts.
func (b *Broker) tickLoop() {
	defer b.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case now := <-t.C:
			b.groups.tick(now)
			if now.Sub(b.disk.lastWall) >= time.Second {
				b.disk.sample(now)
			}
		}
	}
}

// Close stops accepting, closes connections, waits for in-flight requests
// and closes every log with a final fsync.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for c := range b.conns {
		c.close()
	}
	b.mu.Unlock()
	b.cancel()
	b.ln.Close()
	b.groups.close()
	b.wg.Wait()
	err := b.topics.close()
	if oerr := b.offsets.Close(); err == nil {
		err = oerr
	}
	b.lock.Release()
	return err
}
