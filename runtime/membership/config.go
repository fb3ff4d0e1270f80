package membership

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid membership configuration")

// Config configures one node's membership. Flags use daprd's style; the
// ports of the runtime's own servers (HTTPPort, GRPCPort, InternalPort,
// BrokerPort) and DataDir have no flags here because the runtime fills
// them from its own configuration.
type Config struct {
	// NodeName names the node in its pools. Empty means hostname-port,
	// with the gossip port known after binding.
	NodeName string
	// DC is the data center: one LAN pool per DC.
	DC string
	// Region groups DCs; it only travels as information for routing.
	Region string
	// Roles are free-form labels carried in the node meta.
	Roles []string
	// Gateway makes the node also join the WAN pool and relay per-DC
	// catalogs between its DC and the others.
	Gateway bool

	// BindAddress is the address both pools listen on.
	BindAddress string
	// AdvertiseAddress is the address other nodes reach this one at;
	// empty means the bound address (or a private IP when bound to
	// 0.0.0.0).
	AdvertiseAddress string
	// GossipPort is the LAN pool's TCP and UDP port; 0 picks a free one
	// (Node.GossipPort reports it).
	GossipPort int
	// Join lists host:port of LAN nodes to join; empty starts a new pool.
	Join []string
	// WANPort is the WAN pool's port on gateways; 0 picks a free one.
	WANPort int
	// WANJoin lists host:port of gateways (of any DC) to join.
	WANJoin []string
	// GossipKey is a base64 AES key of 16, 24 or 32 bytes. It encrypts and
	// authenticates both pools; nodes with another key cannot join.
	GossipKey string

	// DataDir holds the catalog cache (catalog.json); empty disables it.
	DataDir string

	// HTTPPort, GRPCPort, InternalPort and BrokerPort are the runtime's
	// ports, published in the node meta. InternalPort is where other
	// runtimes send invocations (and, on gateways, cross-DC traffic).
	HTTPPort, GRPCPort, InternalPort, BrokerPort int

	// ProbeInterval and ProbeTimeout drive LAN failure detection. With
	// SuspicionMult 3 the defaults declare a crashed node dead in about
	// 2-4 s.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// SuspicionMult scales how long a suspect node may refute before it
	// is declared dead (memberlist's SuspicionMult).
	SuspicionMult int
	// GossipInterval is how often LAN gossip (and piggybacked catalog
	// broadcasts) goes out.
	GossipInterval time.Duration
	// PushPullInterval is how often a node exchanges its full state with
	// a random LAN peer: the backstop for missed broadcasts.
	PushPullInterval time.Duration
	// RejoinInterval bounds the backoff between join attempts, and is how
	// often an isolated node retries its join list.
	RejoinInterval time.Duration
	// ViewRefresh is how often a gateway republishes its DC's catalog on
	// the WAN even when nothing changed; ViewTTL is how long a remote DC's
	// catalog stays without a refresh.
	ViewRefresh time.Duration
	ViewTTL     time.Duration
	// CacheDebounce is how long the catalog must stay unchanged before
	// the cache file is rewritten (a busy catalog is still written at
	// least every 5 × CacheDebounce).
	CacheDebounce time.Duration
}

// DefaultConfig returns the defaults: dc1, gossip on 0.0.0.0:7946, WAN on
// 7947, LAN timing tuned to find a crashed node within 5 s.
func DefaultConfig() Config {
	return Config{
		DC:               "dc1",
		BindAddress:      "0.0.0.0",
		GossipPort:       7946,
		WANPort:          7947,
		ProbeInterval:    400 * time.Millisecond,
		ProbeTimeout:     200 * time.Millisecond,
		SuspicionMult:    3,
		GossipInterval:   100 * time.Millisecond,
		PushPullInterval: 15 * time.Second,
		RejoinInterval:   5 * time.Second,
		ViewRefresh:      2 * time.Second,
		ViewTTL:          5 * time.Second,
		CacheDebounce:    250 * time.Millisecond,
	}
}

// list is a comma-separated, repeatable string flag.
type list struct{ v *[]string }

func (l list) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l list) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l.v = append(*l.v, p)
		}
	}
	return nil
}

// BindFlags registers the membership flags on fs.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "this node's name in the gossip pools (default hostname-gossipport)")
	fs.StringVar(&c.DC, "dc", c.DC, "the data center this node is in; each DC has its own LAN gossip pool")
	fs.StringVar(&c.Region, "region", c.Region, "the region the data center is in")
	fs.Var(list{&c.Roles}, "roles", "comma-separated roles published in the node meta (repeatable)")
	fs.BoolVar(&c.Gateway, "gateway", c.Gateway, "also join the WAN pool and relay catalogs between data centers")
	fs.StringVar(&c.BindAddress, "gossip-bind-address", c.BindAddress, "the address the gossip pools listen on")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", c.AdvertiseAddress, "the address other nodes reach this one at (default: the bound or a private address)")
	fs.IntVar(&c.GossipPort, "gossip-port", c.GossipPort, "the LAN gossip port, TCP and UDP (0 picks a free port)")
	fs.Var(list{&c.Join}, "join", "host:port of LAN nodes to join, comma-separated (repeatable)")
	fs.IntVar(&c.WANPort, "wan-port", c.WANPort, "the WAN gossip port of a gateway, TCP and UDP (0 picks a free port)")
	fs.Var(list{&c.WANJoin}, "wan-join", "host:port of gateways to join on the WAN, comma-separated (repeatable)")
	fs.StringVar(&c.GossipKey, "gossip-key", c.GossipKey, "base64 key of 16, 24 or 32 bytes that encrypts gossip; nodes with another key cannot join")
}

// Validate checks the configuration and names the bad flag.
func (c *Config) Validate() error {
	var errs []string
	if c.DC == "" {
		errs = append(errs, "--dc is required")
	}
	for name, s := range map[string]string{"--dc": c.DC, "--region": c.Region, "--node-name": c.NodeName} {
		if len(s) > maxName {
			errs = append(errs, fmt.Sprintf("%s is longer than %d bytes", name, maxName))
		}
	}
	if strings.ContainsAny(c.DC, "/ \t") {
		errs = append(errs, fmt.Sprintf("--dc %q must not contain '/' or spaces", c.DC))
	}
	if _, err := c.key(); err != nil {
		errs = append(errs, err.Error())
	}
	if c.BindAddress == "" || net.ParseIP(c.BindAddress) == nil {
		errs = append(errs, fmt.Sprintf("--gossip-bind-address %q is not an IP address", c.BindAddress))
	}
	if c.AdvertiseAddress != "" && net.ParseIP(c.AdvertiseAddress) == nil {
		errs = append(errs, fmt.Sprintf("--advertise-address %q is not an IP address", c.AdvertiseAddress))
	}
	for name, p := range map[string]int{"--gossip-port": c.GossipPort, "--wan-port": c.WANPort, "http port": c.HTTPPort, "grpc port": c.GRPCPort, "internal port": c.InternalPort, "broker port": c.BrokerPort} {
		if p < 0 || p > 65535 {
			errs = append(errs, fmt.Sprintf("%s %d is not a port", name, p))
		}
	}
	for name, addrs := range map[string][]string{"--join": c.Join, "--wan-join": c.WANJoin} {
		for _, a := range addrs {
			if _, port, err := net.SplitHostPort(a); err != nil {
				errs = append(errs, fmt.Sprintf("%s %q is not host:port", name, a))
			} else if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
				errs = append(errs, fmt.Sprintf("%s %q has no valid port", name, a))
			}
		}
	}
	if len(c.WANJoin) > 0 && !c.Gateway {
		errs = append(errs, "--wan-join needs --gateway")
	}
	if _, err := EncodeMeta(c.meta(^uint64(0), ^uint64(0))); err != nil {
		errs = append(errs, fmt.Sprintf("--dc, --region and --roles do not fit in the node meta: %v", err))
	}
	if c.ProbeInterval <= 0 || c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval {
		errs = append(errs, "probe interval and timeout must be positive, the timeout shorter")
	}
	if c.SuspicionMult < 1 {
		errs = append(errs, "suspicion multiplier must be at least 1")
	}
	if c.GossipInterval <= 0 || c.PushPullInterval <= 0 || c.RejoinInterval <= 0 || c.CacheDebounce <= 0 {
		errs = append(errs, "gossip, push/pull, rejoin and cache intervals must be positive")
	}
	if c.ViewRefresh <= 0 || c.ViewTTL <= c.ViewRefresh {
		errs = append(errs, "view refresh must be positive and the view TTL longer than it")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(errs, "; "))
	}
	return nil
}

// key decodes GossipKey; nil means no encryption.
func (c *Config) key() ([]byte, error) {
	if c.GossipKey == "" {
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(c.GossipKey)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key is not base64: %v", err)
	}
	if err := memberlist.ValidateKey(k); err != nil {
		return nil, fmt.Errorf("--gossip-key: %v", err)
	}
	return k, nil
}

// meta is the node meta this configuration publishes at a catalog version.
func (c *Config) meta(inc, ver uint64) Meta {
	return Meta{
		DC: c.DC, Region: c.Region, Roles: c.Roles, Gateway: c.Gateway,
		HTTPPort: c.HTTPPort, GRPCPort: c.GRPCPort, InternalPort: c.InternalPort, BrokerPort: c.BrokerPort,
		Incarnation: inc, Version: ver,
	}
}

// defaultName is hostname-port.
func defaultName(port int) string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "mecha"
	}
	return h + "-" + strconv.Itoa(port)
}
