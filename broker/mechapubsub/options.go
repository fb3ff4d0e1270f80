package mechapubsub

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/rcrowley/go-metrics"
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
	// (mecha run --broker-port 0).
	Brokers string
}

// kafkaVersion is the protocol level sarama speaks. sarama does not
// negotiate per request: the version fixes every API version it sends.
// V2_7_0_0 means Produce v7, Fetch v11, Metadata v9, JoinGroup v5,
// OffsetFetch v7, ApiVersions v3. V2_8_0_0 would move Metadata to v10,
// beyond what the embedded broker serves (up to v9).
var kafkaVersion = sarama.V2_7_0_0

// Redelivery backoff after a handler error: it doubles from
// retryBackoffStart up to retryBackoffMax.
const (
	retryBackoffStart = 100 * time.Millisecond
	retryBackoffMax   = 5 * time.Second
)

// autoCommitInterval is how often marked offsets are committed; the rest
// is committed when a session ends (topic change, rebalance, Close).
const autoCommitInterval = time.Second

// ClientOptions are the metadata fields that mecha's broker components
// (pubsub.mecha, bindings.mecha) share.
type ClientOptions struct {
	// Brokers are the bootstrap "host:port" addresses.
	Brokers []string
	// ClientID is sent with every request (default "mecha").
	ClientID string
	// ConsumerGroup names the group that subscribers join; from
	// consumerGroup, else the runtime's consumerID (the app-id). May be
	// empty: then the component cannot subscribe.
	ConsumerGroup string
	// InitialOffset is where a group with no committed offset starts:
	// sarama.OffsetOldest (default) or sarama.OffsetNewest.
	InitialOffset int64
	// MaxMessageBytes caps a produced record (default sarama's 1,000,000).
	MaxMessageBytes int
	// PublishRetries is how often a failed produce is retried (default 3).
	PublishRetries int
}

// ParseClientOptions reads brokers, clientID, consumerGroup (or
// consumerID), initialOffset, maxMessageBytes and publishRetries from a
// component's properties. Errors are *MetadataError.
func ParseClientOptions(props map[string]string, d Defaults) (ClientOptions, error) {
	o := ClientOptions{
		ClientID:        "mecha",
		InitialOffset:   sarama.OffsetOldest,
		MaxMessageBytes: 1_000_000,
		PublishRetries:  3,
	}
	brokers := strings.TrimSpace(props["brokers"])
	if brokers == "" {
		brokers = d.Brokers
	}
	o.Brokers = splitList(brokers)
	if len(o.Brokers) == 0 {
		return o, &MetadataError{"brokers", "not set, and the embedded broker is off (--broker-port 0); set brokers to the host:port of a Kafka-compatible broker"}
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
		o.InitialOffset = sarama.OffsetNewest
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
	if v := strings.TrimSpace(props["publishRetries"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return o, &MetadataError{"publishRetries", fmt.Sprintf("want a number >= 0, got %q", v)}
		}
		o.PublishRetries = n
	}
	if err := o.Config().Validate(); err != nil {
		return o, fmt.Errorf("%w: %v", ErrMetadata, err)
	}
	return o, nil
}

// Config is the sarama configuration for these options: acks from all
// in-sync replicas, successes returned (SyncProducer), marked offsets
// auto-committed every second and on session end.
func (o ClientOptions) Config() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = o.ClientID
	c.Version = kafkaVersion
	c.Net.DialTimeout = 10 * time.Second
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Retry.Max = o.PublishRetries
	c.Producer.MaxMessageBytes = o.MaxMessageBytes
	c.Consumer.Offsets.Initial = o.InitialOffset
	c.Consumer.Offsets.AutoCommit.Enable = true
	c.Consumer.Offsets.AutoCommit.Interval = autoCommitInterval
	return c
}

func init() {
	// sarama's go-metrics meters and histograms take a lock and a clock
	// read per record, and each meter starts a ticker; mecha exports its
	// own Prometheus metrics, so they only cost CPU. go-metrics has no
	// per-registry switch, only this process-wide one (it also quiets
	// contrib's kafka components, which export nothing either).
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
