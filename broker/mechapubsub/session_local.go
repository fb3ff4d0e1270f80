package mechapubsub

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker"
	"mecha/broker/inproc"
)

// fetchWait is how long a worker's in-process fetch waits for records
// before it asks again; a revocation ends the wait at once.
const fetchWait = 5 * time.Second

// fetchBytes bounds what a worker reads at once.
const fetchBytes = 1 << 20

// localMarks are the handled offsets of an in-process session, committed
// every autoCommitInterval and when partitions are revoked.
type localMarks struct {
	// commitMu makes commits one at a time, so that an older commit
	// never lands after a newer one.
	commitMu sync.Mutex

	mu    sync.Mutex               // guards next and dirty
	next  map[topicPartition]int64 // the offset after the last handled record
	dirty map[topicPartition]bool  // not committed yet
}

// runLocal is a session in the broker's process: an inproc.GroupMember in
// the broker's consumer group, and per assigned partition a worker that
// fetches in-process and delivers.
func (s *session) runLocal(ctx context.Context, topics []string) error {
	g := s.g
	c := inproc.New(g.opts.Local, inproc.Options{ClientID: g.opts.ClientID})
	marks := &localMarks{next: map[topicPartition]int64{}, dirty: map[topicPartition]bool{}}
	m, err := c.NewGroupMember(inproc.GroupConfig{
		Group: g.opts.ConsumerGroup, Topics: topics, Logger: g.opts.Logger,
		SessionTimeout: sessionTimeout, RebalanceTimeout: rebalanceTimeout, HeartbeatInterval: heartbeatInterval,
		OnAssigned: func(ctx context.Context, m *inproc.GroupMember, assigned map[string][]int32) {
			committed, err := m.Committed(ctx, assigned)
			if err != nil {
				g.log.Warnf("consumer group %s: reading committed offsets: %v; the partitions wait for the next rebalance", g.opts.ConsumerGroup, err)
				return
			}
			for t, ps := range assigned {
				for _, p := range ps {
					from := committed[t][p]
					s.start(ctx, topicPartition{t, p}, func(w *worker) { s.fetchLoop(c, w, marks, from) })
				}
			}
		},
		OnRevoked: func(ctx context.Context, m *inproc.GroupMember, revoked map[string][]int32) {
			s.stop(revoked)
			marks.commit(ctx, s.g, m, revoked)
			// Whatever did not commit is the next owner's to redeliver:
			// a later commit of it would move the new owner's offset.
			marks.drop(revoked)
		},
		OnLost: func(_ context.Context, _ *inproc.GroupMember, lost map[string][]int32) {
			s.stop(lost)
			marks.drop(lost)
		},
	})
	if err != nil {
		return err
	}
	committerDone := make(chan struct{})
	cctx, stopCommitter := context.WithCancel(ctx)
	go func() {
		defer close(committerDone)
		t := time.NewTicker(autoCommitInterval)
		defer t.Stop()
		for {
			select {
			case <-cctx.Done():
				return
			case <-t.C:
				marks.commit(cctx, s.g, m, nil)
			}
		}
	}()
	// Run ends with ctx, after revoking (stopping the workers and
	// committing) and leaving the group.
	err = m.Run(ctx)
	stopCommitter()
	<-committerDone
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// fetchLoop reads w's partition from offset from (-1: none committed,
// start at InitialOffset) and delivers each record, marking it handled.
func (s *session) fetchLoop(c *inproc.Client, w *worker, marks *localMarks, from int64) {
	g := s.g
	next := from
	bo := newBackoff()
	for w.ctx.Err() == nil {
		if next < 0 {
			offs, err := c.ListOffsets(w.ctx, w.tp.topic, []int32{w.tp.partition}, g.opts.InitialOffset)
			if err != nil {
				if w.ctx.Err() == nil {
					g.log.Warnf("topic %s partition %d: finding where to start: %v", w.tp.topic, w.tp.partition, err)
					bo.WaitChan(w.ctx.Done(), nil)
				}
				continue
			}
			next = offs[w.tp.partition]
		}
		fs := c.Fetch(w.ctx, []broker.FetchPartition{{Topic: w.tp.topic, Partition: w.tp.partition, Offset: next, MaxBytes: fetchBytes}}, fetchWait)
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		switch {
		case w.ctx.Err() != nil:
			return
		case errors.Is(ferr, kerr.OffsetOutOfRange):
			// Retention removed the records there: start over where the
			// initial offset says, as Kafka clients reset.
			g.log.Warnf("topic %s partition %d: offset %d is out of range; resetting", w.tp.topic, w.tp.partition, next)
			next = -1
			continue
		case ferr != nil:
			g.log.Warnf("topic %s partition %d: fetch: %v", w.tp.topic, w.tp.partition, ferr)
			bo.WaitChan(w.ctx.Done(), nil)
			continue
		}
		bo.Reset()
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if done || !g.deliver(w.ctx, r) {
				done = true
				return
			}
			next = r.Offset + 1
			marks.mark(w.tp, next)
		})
		if done {
			return
		}
	}
}

func (mk *localMarks) mark(tp topicPartition, next int64) {
	mk.mu.Lock()
	mk.next[tp], mk.dirty[tp] = next, true
	mk.mu.Unlock()
}

// commit commits the marks not committed yet, of tps only when tps is
// not nil. A failed commit stays dirty, for the next try.
func (mk *localMarks) commit(ctx context.Context, g *Group, m *inproc.GroupMember, tps map[string][]int32) {
	mk.commitMu.Lock()
	defer mk.commitMu.Unlock()
	offsets := map[string]map[int32]int64{}
	mk.mu.Lock()
	for tp := range mk.dirty {
		if tps != nil && !containsPartition(tps, tp) {
			continue
		}
		if offsets[tp.topic] == nil {
			offsets[tp.topic] = map[int32]int64{}
		}
		offsets[tp.topic][tp.partition] = mk.next[tp]
		delete(mk.dirty, tp)
	}
	mk.mu.Unlock()
	if len(offsets) == 0 {
		return
	}
	if err := m.Commit(ctx, offsets); err != nil {
		if ctx.Err() == nil {
			g.log.Warnf("consumer group %s: committing offsets: %v", g.opts.ConsumerGroup, err)
		}
		mk.mu.Lock()
		for t, ps := range offsets {
			for p := range ps {
				mk.dirty[topicPartition{t, p}] = true
			}
		}
		mk.mu.Unlock()
	}
}

// drop forgets the marks of partitions lost to another member: their
// records are redelivered from the group's committed offset.
func (mk *localMarks) drop(tps map[string][]int32) {
	mk.mu.Lock()
	defer mk.mu.Unlock()
	for tp := range mk.next {
		if containsPartition(tps, tp) {
			delete(mk.next, tp)
			delete(mk.dirty, tp)
		}
	}
}

func containsPartition(tps map[string][]int32, tp topicPartition) bool {
	for _, p := range tps[tp.topic] {
		if p == tp.partition {
			return true
		}
	}
	return false
}
