package mechapubsub

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/rcrowley/go-metrics"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"mecha/broker"
)

// Sentinel errors of the package.
var (
	// ErrMetadata is matched (errors.Is) by every *MetadataError.
	ErrMetadata = errors.New("invalid component metadata")
	// ErrClosed is returned by calls on a closed component or group.
	ErrClosed = errors.New("closed")
)

// MetadataError is a missing or bad spec.metadata field. Its message
// names the field, as the runtime shows it to whoever wrote the YAML.
type MetadataError struct {
	Field   string
	Problem string
}

// Error renders as `metadata <field>: <problem>`.
func (e *MetadataError) Error() string { return "metadata " + e.Field + ": " + e.Problem }

// Is makes errors.Is(err, ErrMetadata) hold.
func (e *MetadataError) Is(target error) bool { return target == ErrMetadata }

// Defaults are what the runtime knows and a Component YAML may leave out.
type Defaults struct {
	// Brokers is the embedded broker's "host:port"; empty when it is off
	// (mecha run --broker=false).
	Brokers string
	// Broker is the embedded broker itself, nil when it is off. A
	// component whose metadata names no other brokers calls it
	// in-process instead of connecting to Brokers.
	Broker broker.Local
	// Logger receives the logs of the in-process group member; nil
	// discards them.
	Logger *slog.Logger
	// SASL is the runtime's own credentials for Brokers (a broker
	// cluster whose brokers authenticate): a component whose metadata
	// names neither brokers nor credentials uses them.
	SASL sasl.Mechanism
}

// Initial offsets (initialOffset), as Kafka's ListOffsets names them.
const (
	OffsetOldest int64 = -2
	OffsetNewest int64 = -1
)

// Redelivery backoff after a handler error: it doubles from
// retryBackoffStart up to retryBackoffMax.
const (
	retryBackoffStart = 100 * time.Millisecond
	retryBackoffMax   = 5 * time.Second
)

// autoCommitInterval is how often marked offsets are committed; the rest
// is committed when partitions are revoked (topic change, rebalance,
// Close).
const autoCommitInterval = time.Second

// The group protocol's timeouts: sarama's defaults, which pubsub.mecha
// has always used.
const (
	sessionTimeout    = 10 * time.Second
	rebalanceTimeout  = 60 * time.Second
	heartbeatInterval = 3 * time.Second
)

// ClientOptions are the metadata fields that mecha's broker components
// (pubsub.mecha, bindings.mecha) share.
type ClientOptions struct {
	// Brokers are the bootstrap "host:port" addresses.
	Brokers []string
	// Local is the broker in this process when Brokers name only it (or
	// nothing): then the component calls it in-process.
	Local broker.Local
	// ClientID is sent with every request (default "mecha").
	ClientID string
	// ConsumerGroup names the group that subscribers join; from
	// consumerGroup, else the runtime's consumerID (the app-id). May be
	// empty: then the component cannot subscribe.
	ConsumerGroup string
	// InitialOffset is where a group with no committed offset starts:
	// OffsetOldest (default) or OffsetNewest.
	InitialOffset int64
	// MaxMessageBytes caps a produced record, encoded as a record batch
	// of its own (default DefaultMaxMessageBytes).
	MaxMessageBytes int
	// PublishRetries is how often a failed produce is retried over the
	// network (default 3); in-process there is no network to retry.
	PublishRetries int
	// Logger receives the in-process group member's logs.
	Logger *slog.Logger
	// SASL authenticates a network client (saslUsername, saslPassword,
	// saslMechanism); nil sends no credentials.
	SASL sasl.Mechanism
	// TLS, when set, dials the brokers over TLS (tls, caCert).
	TLS *tls.Config
}

// DefaultMaxMessageBytes is the default maxMessageBytes: the embedded
// broker's default max.message.bytes, so that any body the HTTP API takes
// (4 MB by default, --dapr-http-max-request-size) can be published, even
// once wrapped in a CloudEvent with its data in base64.
const DefaultMaxMessageBytes = 8 << 20

// ParseClientOptions reads brokers, clientID, consumerGroup (or
// consumerID), initialOffset, maxMessageBytes, the security settings
// (parseSecurity) and publishRetries from a component's properties. Errors are *MetadataError.
func ParseClientOptions(props map[string]string, d Defaults) (ClientOptions, error) {
	o := ClientOptions{
		ClientID:        "mecha",
		InitialOffset:   OffsetOldest,
		MaxMessageBytes: DefaultMaxMessageBytes,
		PublishRetries:  3,
		Logger:          d.Logger,
	}
	brokers := strings.TrimSpace(props["brokers"])
	if brokers == "" {
		brokers = d.Brokers
	}
	o.Brokers = splitList(brokers)
	if len(o.Brokers) == 0 && d.Broker == nil {
		return o, &MetadataError{"brokers", "not set, and the embedded broker is off (--broker=false); set brokers to the host:port of a Kafka-compatible broker"}
	}
	if d.Broker != nil && !slices.ContainsFunc(o.Brokers, func(b string) bool { return b != d.Broker.Addr() }) {
		o.Local = d.Broker
	}
	if v := strings.TrimSpace(props["clientID"]); v != "" {
		o.ClientID = v
	}
	o.ConsumerGroup = strings.TrimSpace(props["consumerGroup"])
	if o.ConsumerGroup == "" {
		o.ConsumerGroup = strings.TrimSpace(props[pubsub.RuntimeConsumerIDKey])
	}
	// oldest is the default because the group joins asynchronously after
	// Subscribe returns: with newest, events published between the app
	// subscribing and the group's first assignment would be skipped. A
	// group that has committed offsets resumes from them either way.
	switch v := strings.TrimSpace(props["initialOffset"]); strings.ToLower(v) {
	case "", "oldest":
	case "newest":
		o.InitialOffset = OffsetNewest
	default:
		return o, &MetadataError{"initialOffset", fmt.Sprintf("want \"oldest\" or \"newest\", got %q", v)}
	}
	if v := strings.TrimSpace(props["maxMessageBytes"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return o, &MetadataError{"maxMessageBytes", fmt.Sprintf("want a positive number of bytes, got %q", v)}
		}
		o.MaxMessageBytes = n
	}
	if err := o.parseSecurity(props); err != nil {
		return o, err
	}
	if o.SASL == nil && strings.TrimSpace(props["brokers"]) == "" {
		o.SASL = d.SASL
	}
	if v := strings.TrimSpace(props["publishRetries"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return o, &MetadataError{"publishRetries", fmt.Sprintf("want a number >= 0, got %q", v)}
		}
		o.PublishRetries = n
	}
	return o, nil
}

// parseSecurity reads saslUsername, saslPassword and saslMechanism
// (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; Dapr's kafka spellings
// PLAINTEXT, SHA-256 and SHA-512 too; default SCRAM-SHA-512), and tls
// ("true" dials the brokers over TLS) with caCert (a PEM CA to trust
// instead of the system's).
func (o *ClientOptions) parseSecurity(props map[string]string) error {
	user, pass := props["saslUsername"], props["saslPassword"]
	mech := strings.ToUpper(strings.TrimSpace(props["saslMechanism"]))
	switch {
	case user == "" && pass == "" && mech == "":
	case user == "" || pass == "":
		return &MetadataError{"saslUsername", "saslUsername and saslPassword go together"}
	default:
		switch mech {
		case "PLAIN", "PLAINTEXT":
			o.SASL = plain.Auth{User: user, Pass: pass}.AsMechanism()
		case "SCRAM-SHA-256", "SHA-256":
			o.SASL = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
		case "", "SCRAM-SHA-512", "SHA-512":
			o.SASL = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
		default:
			return &MetadataError{"saslMechanism", fmt.Sprintf("want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q", mech)}
		}
	}
	switch v := strings.TrimSpace(props["tls"]); v {
	case "", "false":
		if props["caCert"] != "" {
			return &MetadataError{"caCert", "set without tls: \"true\""}
		}
	case "true":
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if ca := props["caCert"]; ca != "" {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM([]byte(ca)) {
				return &MetadataError{"caCert", "holds no PEM certificate"}
			}
			o.TLS.RootCAs = pool
		}
	default:
		return &MetadataError{"tls", fmt.Sprintf("want \"true\" or \"false\", got %q", v)}
	}
	if (o.SASL != nil || o.TLS != nil) && o.Local != nil {
		// Credentials mean a broker over the network, even when it is
		// this runtime's own (a client of its SASL listener).
		o.Local = nil
	}
	return nil
}

// partitioner places keyed records as sarama's default (hash) partitioner
// does, FNV-1a, which pubsub.mecha used before it moved to franz-go, so
// that a key stays on its partition across the move and whichever way
// (in-process or over the network) a record is written. Records without
// a key stick to a partition per batch.
func partitioner() kgo.Partitioner {
	return kgo.StickyKeyPartitioner(kgo.SaramaCompatHasher(func(k []byte) uint32 {
		h := fnv.New32a()
		h.Write(k)
		return h.Sum32()
	}))
}

// kgoOpts are the franz-go options of a network client for these
// options: acks from all in-sync replicas with the idempotent producer
// (franz-go's default), no linger (a publish waits for its record),
// topics created on first use (as sarama's metadata requests create
// them), and sarama's partitioning.
func (o ClientOptions) kgoOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ClientID(o.ClientID),
		kgo.DialTimeout(10 * time.Second),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.RecordRetries(o.PublishRetries),
		// franz-go takes no batch limit under 512 bytes.
		kgo.ProducerBatchMaxBytes(int32(max(o.MaxMessageBytes, 512))),
		kgo.RecordPartitioner(partitioner()),
		kgo.AllowAutoTopicCreation(),
	}
	if o.SASL != nil {
		opts = append(opts, kgo.SASL(o.SASL))
	}
	if o.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(o.TLS.Clone()))
	}
	return opts
}

// startOffset is InitialOffset as a franz-go offset.
func (o ClientOptions) startOffset() kgo.Offset {
	if o.InitialOffset == OffsetNewest {
		return kgo.NewOffset().AtEnd()
	}
	return kgo.NewOffset().AtStart()
}

func init() {
	// contrib's pubsub.kafka and bindings.kafka, which mecha ships beside
	// its own components, are built on sarama, whose go-metrics meters and
	// histograms take a lock and a clock read per record, and each meter
	// starts a ticker; mecha exports its own Prometheus metrics, so they
	// only cost CPU. go-metrics has no per-registry switch, only this
	// process-wide one.
	metrics.UseNilMetrics = true
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
