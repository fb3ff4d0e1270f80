package mechapubsub

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The records a remote worker may have queued before its partition is
// paused, and how few before it is resumed: a partition whose handler
// keeps failing stops being fetched, and the others go on.
const (
	maxQueued    = 1024
	resumeQueued = maxQueued / 4
)

// runRemote is a session over the network: franz-go's group consumer, a
// poll loop handing each partition's records to its worker, and commits
// of what the workers handled (marked) every autoCommitInterval and when
// partitions are revoked.
func (s *session) runRemote(ctx context.Context, topics []string) error {
	g := s.g
	opts := append(g.opts.kgoOpts(),
		kgo.ConsumerGroup(g.opts.ConsumerGroup),
		kgo.ConsumeTopics(topics...),
		// cooperative-sticky first, range for groups with eager members
		// (sarama's default), as the in-process member offers.
		kgo.Balancers(kgo.CooperativeStickyBalancer(), kgo.RangeBalancer()),
		kgo.ConsumeResetOffset(g.opts.startOffset()),
		kgo.SessionTimeout(sessionTimeout), kgo.RebalanceTimeout(rebalanceTimeout), kgo.HeartbeatInterval(heartbeatInterval),
		kgo.AutoCommitMarks(), kgo.AutoCommitInterval(autoCommitInterval),
		// No rebalance between a poll and the hand-over of its records:
		// a partition revoked and assigned again meanwhile would get
		// records twice.
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(func(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
			for t, ps := range assigned {
				for _, p := range ps {
					s.start(ctx, topicPartition{t, p}, func(w *worker) { s.queueLoop(cl, w) })
				}
			}
		}),
		kgo.OnPartitionsRevoked(func(rctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
			s.stop(revoked)
			if err := cl.CommitMarkedOffsets(rctx); err != nil && rctx.Err() == nil {
				g.log.Warnf("consumer group %s: committing offsets: %v", g.opts.ConsumerGroup, err)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			s.stop(lost)
		}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("connecting to %v: %w", g.opts.Brokers, err)
	}
	defer cl.CloseAllowingRebalance()
	for {
		fs := cl.PollRecords(ctx, maxQueued)
		if fs.IsClientClosed() || ctx.Err() != nil {
			break
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				g.log.Warnf("consumer group %s: fetching %s/%d: %v", g.opts.ConsumerGroup, t, p, err)
			}
		})
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) > 0 {
				s.enqueue(cl, topicPartition{p.Topic, p.Partition}, p.Records)
			}
		})
		cl.AllowRebalance()
	}
	// Commit what was handled before leaving (franz-go leaves on Close).
	s.stopAll()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rebalanceTimeout)
	defer cancel()
	if err := cl.CommitMarkedOffsets(cctx); err != nil {
		g.log.Warnf("consumer group %s: committing offsets: %v", g.opts.ConsumerGroup, err)
	}
	return nil
}

// enqueue hands records to their partition's worker, pausing the
// partition when the worker has too many waiting.
func (s *session) enqueue(cl *kgo.Client, tp topicPartition, recs []*kgo.Record) {
	w := s.worker(tp)
	if w == nil {
		return // not ours (any more): not marked, so the owner gets them
	}
	w.mu.Lock()
	w.queue = append(w.queue, recs...)
	pause := len(w.queue) >= maxQueued && !w.paused
	if pause {
		w.paused = true
	}
	w.mu.Unlock()
	if pause {
		cl.PauseFetchPartitions(map[string][]int32{tp.topic: {tp.partition}})
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// queueLoop delivers what the poll loop queued for w, marking each
// handled record for the next commit.
func (s *session) queueLoop(cl *kgo.Client, w *worker) {
	defer func() {
		tp := map[string][]int32{w.tp.topic: {w.tp.partition}}
		if w.ctx.Err() == nil {
			// The subscription ended and a new session follows: fetch
			// nothing more for this worker meanwhile.
			cl.PauseFetchPartitions(tp)
			return
		}
		// Revoked: a pause would outlive the assignment.
		w.mu.Lock()
		paused := w.paused
		w.mu.Unlock()
		if paused {
			cl.ResumeFetchPartitions(tp)
		}
	}()
	for {
		w.mu.Lock()
		var r *kgo.Record
		if len(w.queue) > 0 {
			r = w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
		}
		resume := w.paused && len(w.queue) <= resumeQueued
		if resume {
			w.paused = false
		}
		w.mu.Unlock()
		if resume {
			cl.ResumeFetchPartitions(map[string][]int32{w.tp.topic: {w.tp.partition}})
		}
		if r == nil {
			select {
			case <-w.ctx.Done():
				return
			case <-w.wake:
				continue
			}
		}
		if !s.g.deliver(w.ctx, r) {
			return
		}
		cl.MarkCommitRecords(r)
	}
}
