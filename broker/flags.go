package broker

import (
	"flag"
	"fmt"
)

// BindFlags registers the broker's settings on fs. prefix goes before
// every name but max-request-bytes ("broker-" inside `mecha run`, "" for
// `mecha broker`).
func (c *Config) BindFlags(fs *flag.FlagSet, prefix string) {
	fs.Var(int32Flag{&c.MaxRequestBytes}, "max-request-bytes", "the largest Kafka request frame; a larger one closes the connection")
	fs.Var(fsyncFlag{&c.Log.SyncEveryWrite}, prefix+"fsync", "when the broker fsyncs: interval (every --"+prefix+"flush-interval, as Kafka relies on the page cache) or always (before acknowledging each produce)")
	fs.DurationVar(&c.FlushInterval, prefix+"flush-interval", c.FlushInterval, "the periodic fsync of logs and committed offsets")
	fs.BoolVar(&c.AutoCreateTopics, prefix+"auto-create-topics", c.AutoCreateTopics, "create a topic on first produce or metadata request")
	fs.Var(int32Flag{&c.DefaultPartitions}, prefix+"default-partitions", "partitions of auto-created topics")
	fs.IntVar(&c.Log.MaxBatchBytes, prefix+"max-message-bytes", c.Log.MaxBatchBytes, "default max.message.bytes of topics: the largest record batch the broker takes")
	fs.Int64Var(&c.Log.SegmentBytes, prefix+"segment-bytes", c.Log.SegmentBytes, "default segment.bytes of topics")
	fs.Int64Var(&c.Log.RetentionMs, prefix+"retention-ms", c.Log.RetentionMs, "default retention.ms of topics (-1 keeps forever)")
	fs.Int64Var(&c.Log.RetentionBytes, prefix+"retention-bytes", c.Log.RetentionBytes, "default retention.bytes per partition (-1 for no bound)")
	fs.IntVar(&c.Log.TailCacheBytes, prefix+"tail-cache-bytes", c.Log.TailCacheBytes, "each partition's tail cache: the newest batches, which consumers at the tail and followers read from memory while older reads go to the files and leave the page cache (0: none)")
	fs.Var(int32Flag{&c.TopicQueueDepth}, prefix+"topic-queue-depth", "produce requests in flight per topic before the broker answers REQUEST_TIMED_OUT")
	fs.StringVar(&c.AdvertisedHost, prefix+"advertised-host", c.AdvertisedHost, "the host clients are told to connect to (default: the listen host)")
	fs.IntVar(&c.MaxConnections, prefix+"max-connections", c.MaxConnections, "Kafka connections served at once; one accepted past the cap is closed at once")
	fs.DurationVar(&c.IdleTimeout, prefix+"idle-timeout", c.IdleTimeout, "close a Kafka connection with no request in progress and no bytes sent or taken for this long")
	fs.IntVar(&c.MaxOpenSegmentFiles, prefix+"max-open-segment-files", c.MaxOpenSegmentFiles, "partition segment files held open at once; the others are closed and reopened on demand")
	fs.Var(saslUsersFlag{&c.SASLUsers}, prefix+"sasl-users", "a file of name:password lines: clients must then authenticate by SASL (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) as one of them")
	fs.StringVar(&c.TLSCertFile, prefix+"tls-cert", c.TLSCertFile, "with --"+prefix+"tls-key, serve Kafka clients over TLS with this certificate (PEM)")
	fs.StringVar(&c.TLSKeyFile, prefix+"tls-key", c.TLSKeyFile, "the private key of --"+prefix+"tls-cert (PEM)")
	fs.Float64Var(&c.Throttle.DiskBusy, prefix+"throttle-disk-busy", c.Throttle.DiskBusy, "throttle consumers fetching far behind the tail while the log disk is this busy (0 to 1; 0: never)")
	fs.Int64Var(&c.Throttle.LagRecords, prefix+"throttle-lag-records", c.Throttle.LagRecords, "how far behind the high watermark (records) a fetch counts as lagging, for --"+prefix+"throttle-disk-busy")
	fs.BoolVar(&c.ACLs, prefix+"acls", c.ACLs, "enforce Kafka ACLs: deny every client request no binding allows (manage bindings with CreateAcls/DescribeAcls/DeleteAcls, as kafka-acls or kadm do; kept in the data dir's acls.json)")
	fs.Var(superUsersFlag{&c.SuperUsers}, prefix+"super-users", "users (name or User:name, comma-separated) that pass every ACL check")
	fs.DurationVar(&c.RequestReadTimeout, prefix+"request-read-timeout", c.RequestReadTimeout, "close a Kafka connection whose request does not arrive whole within this long of its first byte")
}

// saslUsersFlag loads a users file as it is set.
type saslUsersFlag struct{ v *map[string]string }

func (f saslUsersFlag) String() string {
	if f.v == nil || len(*f.v) == 0 {
		return ""
	}
	return fmt.Sprintf("(%d users)", len(*f.v))
}

func (f saslUsersFlag) Set(path string) error {
	users, err := LoadSASLUsers(path)
	if err != nil {
		return err
	}
	*f.v = users
	return nil
}

type int32Flag struct{ v *int32 }

func (f int32Flag) String() string {
	if f.v == nil {
		return "0"
	}
	return fmt.Sprint(*f.v)
}

func (f int32Flag) Set(s string) error {
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n < -1<<31 || n > 1<<31-1 {
		return fmt.Errorf("%q is not a 32-bit integer", s)
	}
	*f.v = int32(n)
	return nil
}

type fsyncFlag struct{ v *bool }

func (f fsyncFlag) String() string {
	if f.v != nil && *f.v {
		return "always"
	}
	return "interval"
}

func (f fsyncFlag) Set(s string) error {
	switch s {
	case "interval":
		*f.v = false
	case "always":
		*f.v = true
	default:
		return fmt.Errorf("%q: want interval or always", s)
	}
	return nil
}

// Validate checks a configuration as Start would, naming what is wrong.
func (c Config) Validate() error { return c.validate() }
