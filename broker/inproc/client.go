// Package inproc is the Kafka client of a broker in the same process
// (broker.Local): what pubsub.mecha, bindings.mecha and stream jobs use
// when the broker is local, instead of a Kafka client over loopback TCP.
// It speaks franz-go's types (kgo.Record, kgo.Fetches, kgo.Partitioner,
// kgo.GroupBalancer), so that the code above it is the same whichever way
// it reaches the broker:
//   - ProduceSync partitions records with a kgo.Partitioner, encodes each
//     partition's records into v2 record batches (uncompressed: they go to
//     the page cache, not over a network) and appends them with one
//     broker.Local.Produce per partition, which answers when the log has
//     them, as acks=all;
//   - Fetch reads partitions with broker.Local.Fetch (its long poll) and
//     decodes the batches with franz-go's own decoder, compressed ones
//     from Kafka clients included; Consumer reads a set of partitions from
//     given offsets, as kgo.ConsumePartitions does;
//   - GroupMember is a member of one of the broker's consumer groups, on
//     the group protocol's own requests run in-process (broker.Local's
//     Request): Kafka clients in the same group share its partitions and
//     its committed offsets.
//
// Records are never retried: in-process there is no network to lose a
// request, and a refusal (a full topic queue, a full disk) is the
// caller's to see.
package inproc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"mecha/broker"
)

// Options configure a Client. The zero value takes the defaults.
type Options struct {
	// ClientID names the client in the broker's logs and group
	// descriptions (default "mecha").
	ClientID string
	// Partitioner places records without a partition of their own
	// (default kgo.StickyKeyPartitioner(nil): Kafka's murmur2 for keyed
	// records, sticky for the others, as a default kgo client places
	// them). kgo.ManualPartitioner() keeps each record's Partition.
	Partitioner kgo.Partitioner
	// MaxRecordBytes refuses a record larger than this (encoded, as a
	// batch of its own) with kerr.MessageTooLarge without sending it; 0
	// leaves the check to the topic's max.message.bytes.
	MaxRecordBytes int
	// MaxBatchBytes splits a partition's records into batches of at most
	// this many bytes (default 1,000,000, under the broker's default
	// max.message.bytes); a record larger than that goes alone.
	MaxBatchBytes int
}

// Client produces to and reads from a broker in the same process. It is
// safe for concurrent use.
type Client struct {
	b    broker.Local
	opts Options

	mu     sync.Mutex // guards topics, the partitioners' state
	topics map[string]kgo.TopicPartitioner
}

// New returns a client of b.
func New(b broker.Local, opts Options) *Client {
	if opts.ClientID == "" {
		opts.ClientID = "mecha"
	}
	if opts.Partitioner == nil {
		opts.Partitioner = kgo.StickyKeyPartitioner(nil)
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = 1_000_000
	}
	return &Client{b: b, opts: opts, topics: map[string]kgo.TopicPartitioner{}}
}

// Broker is the broker the client calls.
func (c *Client) Broker() broker.Local { return c.b }

// batchPool recycles encoding buffers: the log has copied a batch once
// Produce returns.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// ProduceSync writes recs and returns when each is in the log or has
// failed: a record's Partition is set by the partitioner, and, on
// success, its Offset (and a zero Timestamp to the time of the call).
// Each partition's records are appended in one call, in the order given,
// so they succeed or fail together, except those over MaxRecordBytes,
// which fail alone.
func (c *Client) ProduceSync(ctx context.Context, recs ...*kgo.Record) kgo.ProduceResults {
	results := make(kgo.ProduceResults, len(recs))
	type dest struct {
		topic     string
		partition int32
	}
	var order []dest
	byDest := map[dest][]int{}
	counts := map[string]int32{}
	now := time.Now()
	c.mu.Lock()
	for i, r := range recs {
		results[i].Record = r
		if r.Topic == "" {
			results[i].Err = errors.New("inproc: record has no topic")
			continue
		}
		n, ok := counts[r.Topic]
		if !ok {
			var err error
			if n, err = c.b.Partitions(ctx, r.Topic); err != nil {
				n = 0
			}
			counts[r.Topic] = n
		}
		if n <= 0 {
			results[i].Err = fmt.Errorf("inproc: topic %s: %w", r.Topic, kerr.UnknownTopicOrPartition)
			continue
		}
		tp := c.topics[r.Topic]
		if tp == nil {
			tp = c.opts.Partitioner.ForTopic(r.Topic)
			c.topics[r.Topic] = tp
		}
		r.Partition = int32(tp.Partition(r, int(n)))
		if r.Partition < 0 || r.Partition >= n {
			results[i].Err = fmt.Errorf("inproc: partition %d of %s: %w", r.Partition, r.Topic, kerr.UnknownTopicOrPartition)
			continue
		}
		if r.Timestamp.IsZero() {
			r.Timestamp = now
		}
		if c.opts.MaxRecordBytes > 0 {
			if size, _ := recordSize(r, r.Timestamp.UnixMilli(), 0); size+batchHeaderLen > c.opts.MaxRecordBytes {
				results[i].Err = fmt.Errorf("inproc: record of %d bytes over the limit of %d: %w", size+batchHeaderLen, c.opts.MaxRecordBytes, kerr.MessageTooLarge)
				continue
			}
		}
		d := dest{r.Topic, r.Partition}
		if _, ok := byDest[d]; !ok {
			order = append(order, d)
		}
		byDest[d] = append(byDest[d], i)
	}
	// A sticky partitioner moves on after each call, as after a batch.
	for t := range counts {
		if nb, ok := c.topics[t].(kgo.TopicPartitionerOnNewBatch); ok {
			nb.OnNewBatch()
		}
	}
	c.mu.Unlock()
	for _, d := range order {
		idx := byDest[d]
		buf := batchPool.Get().(*[]byte)
		enc := c.encode((*buf)[:0], recs, idx, now)
		base, err := c.b.Produce(ctx, d.topic, d.partition, enc)
		*buf = enc[:0]
		batchPool.Put(buf)
		for j, i := range idx {
			if err != nil {
				results[i].Err = err
				continue
			}
			recs[i].Offset = base + int64(j)
		}
	}
	return results
}

// encode appends the records recs[idx...] as batches of at most
// MaxBatchBytes each.
func (c *Client) encode(dst []byte, recs []*kgo.Record, idx []int, now time.Time) []byte {
	// Grow once: records take about their key, value and headers, and
	// each batch a header.
	need := batchHeaderLen
	for _, i := range idx {
		r := recs[i]
		need += len(r.Key) + len(r.Value) + 16
		for _, h := range r.Headers {
			need += len(h.Key) + len(h.Value) + 4
		}
	}
	dst = slices.Grow(dst, need+need/c.opts.MaxBatchBytes*batchHeaderLen)
	batch := make([]*kgo.Record, 0, len(idx))
	size := batchHeaderLen
	for _, i := range idx {
		r := recs[i]
		var first int64
		if len(batch) > 0 {
			first = batch[0].Timestamp.UnixMilli()
		} else {
			first = r.Timestamp.UnixMilli()
		}
		n, _ := recordSize(r, first, len(batch))
		if len(batch) > 0 && size+n > c.opts.MaxBatchBytes {
			dst = appendBatch(dst, batch, now)
			batch, size = batch[:0], batchHeaderLen
			n, _ = recordSize(r, r.Timestamp.UnixMilli(), 0)
		}
		batch = append(batch, r)
		size += n
	}
	if len(batch) > 0 {
		dst = appendBatch(dst, batch, now)
	}
	return dst
}

// decompressor decodes compressed batches that Kafka clients wrote.
var decompressor = kgo.DefaultDecompressor()

// Fetch reads parts as broker.Local.Fetch does (returning when one has
// records or an error, else after maxWait) and decodes the records at or
// after each partition's offset. Partitions read without records are in
// the answer too, with their high watermark. ctx ending with nothing read
// is an error fetch (kgo.NewErrFetch), as kgo's polls return it.
func (c *Client) Fetch(ctx context.Context, parts []broker.FetchPartition, maxWait time.Duration) kgo.Fetches {
	fs, err := c.fetch(ctx, parts, maxWait)
	if err != nil {
		return kgo.NewErrFetch(err)
	}
	return fs
}

// fetch is Fetch with ctx's end (or the broker's) as an error.
func (c *Client) fetch(ctx context.Context, parts []broker.FetchPartition, maxWait time.Duration) (kgo.Fetches, error) {
	got, err := c.b.Fetch(ctx, parts, maxWait)
	if err != nil {
		return nil, err
	}
	var topics []kgo.FetchTopic
	byTopic := map[string]int{}
	for i, fp := range got {
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.Partition, rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = fp.Partition, fp.HighWatermark, fp.HighWatermark, fp.LogStart
		rp.RecordBatches = fp.Batches
		p, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: fp.Topic, Partition: fp.Partition, Offset: parts[i].Offset},
			&rp, decompressor, nil)
		if fp.Err != nil {
			p.Err = fp.Err
		}
		j, ok := byTopic[fp.Topic]
		if !ok {
			j = len(topics)
			byTopic[fp.Topic] = j
			topics = append(topics, kgo.FetchTopic{Topic: fp.Topic})
		}
		topics[j].Partitions = append(topics[j].Partitions, p)
	}
	return kgo.Fetches{{Topics: topics}}, nil
}

// ListOffsets returns the offset of each partition at ts: -2 asks for the
// log start, -1 for the log end (the high watermark); otherwise the first
// offset at or after the timestamp ts (ms), -1 when there is none.
func (c *Client) ListOffsets(ctx context.Context, topic string, partitions []int32, ts int64) (map[int32]int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.SetVersion(7)
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, p := range partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = p, ts, -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := c.b.Request(ctx, c.opts.ClientID, req)
	if err != nil {
		return nil, fmt.Errorf("inproc: list offsets of %s: %w", topic, err)
	}
	out := make(map[int32]int64, len(partitions))
	for _, t := range resp.(*kmsg.ListOffsetsResponse).Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("inproc: list offsets of %s/%d: %w", topic, p.Partition, err)
			}
			out[p.Partition] = p.Offset
		}
	}
	return out, nil
}

// CreateTopic creates topic with partitions (-1: the broker's default)
// and the broker's default configs.
func (c *Client) CreateTopic(ctx context.Context, topic string, partitions int32) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.SetVersion(6)
	req.TimeoutMillis = 60_000
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, partitions, -1
	req.Topics = append(req.Topics, rt)
	resp, err := c.b.Request(ctx, c.opts.ClientID, req)
	if err != nil {
		return fmt.Errorf("inproc: create topic %s: %w", topic, err)
	}
	for _, t := range resp.(*kmsg.CreateTopicsResponse).Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return fmt.Errorf("inproc: create topic %s: %w", topic, err)
		}
	}
	return nil
}

// EndOffsets returns the end offset (the high watermark) of every
// partition of each topic that exists; topics that do not are left out,
// and not created.
func (c *Client) EndOffsets(ctx context.Context, topics ...string) (map[string]map[int32]int64, error) {
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(9)
	for _, t := range topics {
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr(t)
		md.Topics = append(md.Topics, mt)
	}
	resp, err := c.b.Request(ctx, c.opts.ClientID, md)
	if err != nil {
		return nil, fmt.Errorf("inproc: metadata of %v: %w", topics, err)
	}
	out := map[string]map[int32]int64{}
	for _, t := range resp.(*kmsg.MetadataResponse).Topics {
		if t.Topic == nil || t.ErrorCode != 0 {
			continue
		}
		parts := make([]int32, len(t.Partitions))
		for i, p := range t.Partitions {
			parts[i] = p.Partition
		}
		if out[*t.Topic], err = c.ListOffsets(ctx, *t.Topic, parts, -1); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Partitions returns the partitions of topic, creating it when the
// broker auto-creates topics.
func (c *Client) Partitions(ctx context.Context, topic string) ([]int32, error) {
	n, err := c.b.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(i)
	}
	return out, nil
}
