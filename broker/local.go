// The in-process API.
//
// A component in the broker's own process (pubsub.mecha, bindings.mecha
// and stream jobs inside `mecha run`) calls the broker directly instead of
// going through a Kafka client over loopback TCP. The hot paths are
// direct calls through the same code as the Kafka APIs: Produce appends
// record batches as a Produce request carries them (topic queue, batch
// validation, idempotence checks, the log and its fsync policy, so an
// answer means what acks=all means on the wire), and Fetch reads them as
// a Fetch answers them (whole batches, the long poll). Everything else
// (metadata, offsets, the group protocol) goes through Request, which runs
// the same handler a connection runs on the kmsg request as it is,
// without encoding it: an in-process group member is a member like any
// other, sharing partitions and committed offsets with Kafka clients.
package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Local is the broker's in-process API, what components of the broker's
// own process use instead of a Kafka client. *Broker implements it.
type Local interface {
	// Addr is the address Kafka clients reach the broker at: a component
	// given this address as its brokers is local.
	Addr() string
	// Partitions returns the partition count of topic, creating the
	// topic when auto-creation is on, as a Metadata request allowing
	// auto-creation does. It is what a producer partitions by, on every
	// produce, so it is a plain call rather than a Metadata request.
	Partitions(ctx context.Context, topic string) (int32, error)
	// Produce appends records, one or more v2 record batches, to a
	// partition and returns the offset of the first record. The topic is
	// created when auto-creation is on. It returns when the log has the
	// records (fsynced when the broker fsyncs every write), so a nil
	// error means what acks=all means to a Kafka client. Errors wrap the
	// Kafka error (errors.Is(err, kerr.MessageTooLarge)). The batches'
	// base offsets are rewritten in place.
	Produce(ctx context.Context, topic string, partition int32, records []byte) (int64, error)
	// Fetch reads each partition from its offset, as the Fetch API does,
	// and returns as soon as one has records or an error. Otherwise it
	// waits up to maxWait (0: not at all) for an append to one of them,
	// then answers with what there is. It returns ctx's error when ctx
	// ended with nothing read.
	Fetch(ctx context.Context, parts []FetchPartition, maxWait time.Duration) ([]FetchedPartition, error)
	// Request runs any other request (metadata, offsets, the group
	// protocol) through the handler of its API key, in-process: req's
	// version must be one the broker serves, and a call that waits (a
	// join or sync waiting for its group) gives up when ctx ends.
	// Produce and Fetch requests are refused: they go through Produce
	// and Fetch.
	Request(ctx context.Context, clientID string, req kmsg.Request) (kmsg.Response, error)
}

var _ Local = (*Broker)(nil)

// Errors of the in-process API.
var (
	// ErrClosed is returned by in-process calls on a closed broker.
	ErrClosed = errors.New("broker closed")
	// ErrRequest is an in-process request the broker cannot serve: an
	// unsupported API key or version, or Produce or Fetch.
	ErrRequest = errors.New("unsupported in-process request")
)

// inProcessHost is the client host of in-process group members, as group
// descriptions show it.
const inProcessHost = "in-process"

// FetchPartition is one partition for Fetch to read.
type FetchPartition struct {
	Topic     string
	Partition int32
	// Offset is the first offset wanted.
	Offset int64
	// MaxBytes bounds the batches read; the first batch is returned
	// whole even when it is larger (KIP-74).
	MaxBytes int
}

// FetchedPartition is what Fetch read of one partition.
type FetchedPartition struct {
	Topic     string
	Partition int32
	// Batches are whole v2 record batches, the first one holding the
	// offset asked for; empty at the end of the log. The buffer is the
	// caller's to keep.
	Batches       []byte
	HighWatermark int64
	LogStart      int64
	// Err is the Kafka error of the read, when it failed:
	// UNKNOWN_TOPIC_OR_PARTITION, OFFSET_OUT_OF_RANGE,
	// NOT_LEADER_FOR_PARTITION (the partition was deleted) or
	// KAFKA_STORAGE_ERROR.
	Err error
}

// Partitions implements Local.
func (b *Broker) Partitions(ctx context.Context, topic string) (int32, error) {
	if err := b.usable(ctx); err != nil {
		return 0, err
	}
	t, err := b.topics.ensure(topic, b.cfg.AutoCreateTopics, b.cfg.DefaultPartitions)
	switch {
	case errors.Is(err, errInvalidTopic):
		return 0, fmt.Errorf("broker: %w: %w", kerr.InvalidTopicException, err)
	case err != nil || t == nil:
		return 0, fmt.Errorf("broker: topic %s: %w", topic, kerr.UnknownTopicOrPartition)
	}
	return t.numPartitions(), nil
}

// Produce implements Local.
func (b *Broker) Produce(ctx context.Context, topic string, partition int32, records []byte) (int64, error) {
	if err := b.usable(ctx); err != nil {
		return -1, err
	}
	t, code, release := b.produceTopic(caller{}, topic)
	var err error
	base := int64(-1)
	if code == 0 {
		base, _, code, _, err = b.appendRecords(t, partition, records, inProcessHost, 1)
		release()
	}
	if code != 0 {
		if err != nil {
			return -1, fmt.Errorf("broker: produce to %s/%d: %w: %w", topic, partition, kerr.ErrorForCode(code), err)
		}
		return -1, fmt.Errorf("broker: produce to %s/%d: %w", topic, partition, kerr.ErrorForCode(code))
	}
	return base, nil
}

// Fetch implements Local.
func (b *Broker) Fetch(ctx context.Context, parts []FetchPartition, maxWait time.Duration) ([]FetchedPartition, error) {
	if err := b.usable(ctx); err != nil {
		return nil, err
	}
	out := make([]FetchedPartition, len(parts))
	var seen []seenPartition
	var deadline time.Time
	if maxWait > 0 {
		deadline = time.Now().Add(maxWait)
	}
	got := false
	b.longPoll(caller{done: ctx.Done(), host: inProcessHost}, deadline, func() ([]seenPartition, bool) {
		seen = seen[:0]
		for i, fp := range parts {
			out[i] = FetchedPartition{Topic: fp.Topic, Partition: fp.Partition, HighWatermark: -1, LogStart: -1}
			var p *storage.Partition
			if t := b.topics.get(fp.Topic); t != nil {
				p = t.partition(fp.Partition)
			}
			if p == nil {
				out[i].Err = kerr.UnknownTopicOrPartition
				got = true
				continue
			}
			// Not from the response pool: the caller keeps the records,
			// which point into the buffer.
			res, code := b.readPartition(p, fp.Topic, fp.Partition, fp.Offset, max(fp.MaxBytes, 1), nil)
			out[i].Batches, out[i].HighWatermark, out[i].LogStart = res.Batches, res.HighWatermark, res.LogStart
			if code != 0 {
				out[i].Err = kerr.ErrorForCode(code)
				got = true
				continue
			}
			seen = append(seen, seenPartition{p, res.HighWatermark})
			got = got || len(res.Batches) > 0
		}
		return seen, got
	})
	if !got {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if b.ctx.Err() != nil {
			return out, ErrClosed
		}
	}
	return out, nil
}

// Request implements Local.
func (b *Broker) Request(ctx context.Context, clientID string, req kmsg.Request) (resp kmsg.Response, err error) {
	if err := b.usable(ctx); err != nil {
		return nil, err
	}
	key, version := req.Key(), req.GetVersion()
	api, ok := supportedAPIs[key]
	switch {
	case key == 0 || key == 1:
		return nil, fmt.Errorf("broker: %w: %s goes through the in-process %s", ErrRequest, kmsg.NameForKey(key), kmsg.NameForKey(key))
	case !ok || version < api.min || version > api.max:
		return nil, fmt.Errorf("broker: %w: %s v%d (supported %s)", ErrRequest, kmsg.NameForKey(key), version, api.rangeString())
	}
	// A handler that panics fails this call, as it closes a connection,
	// rather than the caller's process.
	defer func() {
		if rec := recover(); rec != nil {
			b.log.Error("broker: in-process request handler panicked", "api_key", key, "api_version", version, "panic", rec)
			resp, err = nil, fmt.Errorf("broker: %s v%d handler failed: %v", kmsg.NameForKey(key), version, rec)
		}
	}()
	return b.handle(caller{done: ctx.Done(), host: inProcessHost}, requestHeader{key: key, version: version, clientID: clientID}, req), nil
}

// usable reports why an in-process call cannot run: its context ended, or
// the broker closed.
func (b *Broker) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.ctx.Err() != nil {
		return ErrClosed
	}
	return nil
}
