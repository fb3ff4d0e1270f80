package job

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"

	"mecha/broker/inproc"
)

// cluster is where a job reads and writes: the broker of its own process
// (broker/inproc, no socket), or a Kafka-compatible cluster over the
// network (franz-go). The runner above it is the same either way.
type cluster interface {
	// partitions returns topic's partitions, creating the topic (with
	// the cluster's defaults) when it does not exist; none and no error
	// means it was just created: ask again.
	partitions(ctx context.Context, topic string) ([]int32, error)
	// consume reads the partitions of from, each from its offset.
	consume(from map[string]map[int32]kgo.Offset) (source, error)
	// produce writes recs and waits for each (acks=all).
	produce(ctx context.Context, recs ...*kgo.Record) kgo.ProduceResults
	// endOffsets returns the end offset of every partition of the topics
	// that exist; the others have none.
	endOffsets(ctx context.Context, topics ...string) (map[srcPart]int64, error)
	close()
}

// source is a reader of partitions at offsets: a kgo client consuming
// partitions, or an inproc.Consumer.
type source interface {
	PollRecords(ctx context.Context, maxRecords int) kgo.Fetches
	PauseFetchTopics(topics ...string) []string
	ResumeFetchTopics(topics ...string)
	Close()
}

var (
	_ source = (*kgo.Client)(nil)
	_ source = (*inproc.Consumer)(nil)
)

// localCluster is the broker in this process.
type localCluster struct{ c *inproc.Client }

func (l localCluster) partitions(ctx context.Context, topic string) ([]int32, error) {
	return l.c.Partitions(ctx, topic)
}

func (l localCluster) consume(from map[string]map[int32]kgo.Offset) (source, error) {
	return l.c.NewConsumer(from, nil), nil
}

func (l localCluster) produce(ctx context.Context, recs ...*kgo.Record) kgo.ProduceResults {
	return l.c.ProduceSync(ctx, recs...)
}

func (l localCluster) endOffsets(ctx context.Context, topics ...string) (map[srcPart]int64, error) {
	ends, err := l.c.EndOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	out := map[srcPart]int64{}
	for t, ps := range ends {
		for p, o := range ps {
			out[srcPart{t, p}] = o
		}
	}
	return out, nil
}

func (localCluster) close() {}

// remoteCluster is a cluster over the network: one franz-go client to
// produce and administer, and one per consume.
type remoteCluster struct {
	seeds []string
	cl    *kgo.Client
	opts  []kgo.Opt // the client's: seeds, auto-creation, credentials
}

func newRemoteCluster(seeds []string, mech sasl.Mechanism) (*remoteCluster, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.AllowAutoTopicCreation()}
	if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &remoteCluster{seeds: seeds, cl: cl, opts: opts}, nil
}

func (r *remoteCluster) partitions(ctx context.Context, topic string) ([]int32, error) {
	adm := kadm.NewClient(r.cl)
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, err
	}
	if d, ok := details[topic]; ok && d.Err == nil && len(d.Partitions) > 0 {
		return d.Partitions.Numbers(), nil
	}
	if _, err := adm.CreateTopic(ctx, -1, -1, nil, topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return nil, err
	}
	return nil, nil
}

func (r *remoteCluster) consume(from map[string]map[int32]kgo.Offset) (source, error) {
	return kgo.NewClient(append(r.opts[:len(r.opts):len(r.opts)], kgo.ConsumePartitions(from))...)
}

func (r *remoteCluster) produce(ctx context.Context, recs ...*kgo.Record) kgo.ProduceResults {
	return r.cl.ProduceSync(ctx, recs...)
}

func (r *remoteCluster) endOffsets(ctx context.Context, topics ...string) (map[srcPart]int64, error) {
	ends, err := kadm.NewClient(r.cl).ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	out := map[srcPart]int64{}
	var ferr error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			if ferr == nil && !errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
				ferr = fmt.Errorf("end offset of %s/%d: %w", o.Topic, o.Partition, o.Err)
			}
			return
		}
		out[srcPart{o.Topic, o.Partition}] = o.Offset
	})
	return out, ferr
}

func (r *remoteCluster) close() { r.cl.Close() }
