package sdk

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"mecha/internal/apicatalog"
)

// Option configures New.
type Option func(*options)

type options struct {
	addr, token, catalog, app string
	fallback                  bool
}

// WithAddress is the runtime's gRPC API address (host:port), instead of
// 127.0.0.1:$DAPR_GRPC_PORT (50001 when unset).
func WithAddress(addr string) Option { return func(o *options) { o.addr = addr } }

// WithToken is the API token (dapr-api-token), instead of
// $DAPR_API_TOKEN.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithCatalog is the catalog file the fallback reads, instead of
// $MECHA_CATALOG.
func WithCatalog(path string) Option { return func(o *options) { o.catalog = path } }

// WithAppID is the app's id, instead of $APP_ID: the fallback goes only
// to runtimes that host this app and no other.
func WithAppID(id string) Option { return func(o *options) { o.app = id } }

// WithoutFallback turns the fallback off: a call fails while the local
// runtime is unreachable.
func WithoutFallback() Option { return func(o *options) { o.fallback = false } }

// Client is a connection to the app's runtime, and to the others of its
// DC while that one is unreachable. It is safe for concurrent use.
type Client struct {
	opts  options
	local *endpoint

	mu      sync.Mutex
	peers   map[string]*endpoint // dialed fallbacks, by address
	catalog catalogCache
	closed  bool

	fallbacks atomic.Uint64
}

// endpoint is one runtime's gRPC API.
type endpoint struct {
	addr string
	conn *grpc.ClientConn
	api  runtimev1pb.DaprClient
}

// catalogCache is the fallback list, read again when the file changes.
type catalogCache struct {
	mod   time.Time
	size  int64
	node  string
	addrs []string
}

// New connects to the runtime. Nothing is sent until the first call: a
// runtime that is not up yet is not an error.
func New(opts ...Option) (*Client, error) {
	o := options{fallback: true, token: os.Getenv("DAPR_API_TOKEN"), catalog: os.Getenv(apicatalog.EnvFile), app: os.Getenv("APP_ID")}
	port := os.Getenv("DAPR_GRPC_PORT")
	if port == "" {
		port = "50001"
	}
	o.addr = net.JoinHostPort("127.0.0.1", port)
	for _, f := range opts {
		f(&o)
	}
	c := &Client{opts: o, peers: map[string]*endpoint{}}
	var err error
	if c.local, err = c.dial(o.addr); err != nil {
		return nil, err
	}
	return c, nil
}

// dial makes a connection that reconnects within a second of its runtime
// coming back (gRPC's default waits up to two minutes).
func (c *Client) dial(addr string) (*endpoint, error) {
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A bulk read or a scan may answer more than gRPC's 4 MiB.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecv)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
	}
	if tok := c.opts.token; tok != "" {
		dopts = append(dopts,
			grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
				return invoker(metadata.AppendToOutgoingContext(ctx, "dapr-api-token", tok), method, req, reply, cc, o...)
			}),
			grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(metadata.AppendToOutgoingContext(ctx, "dapr-api-token", tok), desc, cc, method, o...)
			}))
	}
	conn, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("sdk: runtime address %q: %w", addr, err)
	}
	return &endpoint{addr: addr, conn: conn, api: runtimev1pb.NewDaprClient(conn)}, nil
}

// maxRecv is the largest answer the client takes.
const maxRecv = 64 << 20

// Close closes the connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	errs := []error{c.local.conn.Close()}
	for _, e := range c.peers {
		errs = append(errs, e.conn.Close())
	}
	c.peers = map[string]*endpoint{}
	return errors.Join(errs...)
}

// Fallbacks is how many calls another runtime served because the local
// one was unreachable.
func (c *Client) Fallbacks() uint64 { return c.fallbacks.Load() }

// call runs fn against the local runtime, and, when that cannot be
// reached, against the others of the catalog in turn until one answers.
func (c *Client) call(ctx context.Context, fn func(context.Context, runtimev1pb.DaprClient) error) error {
	err := fn(ctx, c.local.api)
	if err == nil || !c.opts.fallback || !unreachable(c.local, err) || ctx.Err() != nil {
		return fromGRPC(err)
	}
	for _, e := range c.others() {
		ferr := fn(ctx, e.api)
		if ferr == nil || !unreachable(e, ferr) {
			c.fallbacks.Add(1)
			return fromGRPC(ferr)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fromGRPC(err)
}

// unreachable reports whether err says e's runtime could not be reached:
// Unavailable while e's connection is not up. A runtime's own
// Unavailable answer (a Crux slot without a leader) comes on a ready
// connection and is the caller's.
func unreachable(e *endpoint, err error) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	return e.conn.GetState() != connectivity.Ready
}

// others are the fallback runtimes: the catalog's API endpoints of the
// runtimes that host this app alone, but the local runtime's, dialed on
// first use. Connections to runtimes the catalog no longer lists are
// closed.
func (c *Client) others() []*endpoint {
	if c.opts.catalog == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if c.refreshCatalog() {
		for a, e := range c.peers {
			if !slices.Contains(c.catalog.addrs, a) {
				_ = e.conn.Close()
				delete(c.peers, a)
			}
		}
	}
	out := make([]*endpoint, 0, len(c.catalog.addrs))
	for _, a := range c.catalog.addrs {
		e := c.peers[a]
		if e == nil {
			var err error
			if e, err = c.dial(a); err != nil {
				continue
			}
			c.peers[a] = e
		}
		out = append(out, e)
	}
	return out
}

// refreshCatalog reads the catalog file again when it changed, and says
// whether it did. c.mu is held.
func (c *Client) refreshCatalog() bool {
	st, err := os.Stat(c.opts.catalog)
	if err != nil || st.ModTime().Equal(c.catalog.mod) && st.Size() == c.catalog.size {
		return false
	}
	f, err := apicatalog.Read(c.opts.catalog)
	if err != nil {
		return false // keep what was read before
	}
	cc := catalogCache{mod: st.ModTime(), size: st.Size(), node: f.Node}
	for _, ep := range f.APIs {
		if a := ep.GRPC(); a != "" && ep.Serves(c.opts.app) && ep.Node != f.Node && a != c.local.addr {
			cc.addrs = append(cc.addrs, a)
		}
	}
	c.catalog = cc
	return true
}

// ttlMetadata is the state metadata key of a TTL, in seconds.
const ttlMetadata = "ttlInSeconds"

func ttlSeconds(d time.Duration) string {
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++ // never shorter than asked
	}
	return strconv.FormatInt(s, 10)
}
