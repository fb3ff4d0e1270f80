package mechapubsub

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/dapr/kit/logger"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/internal/backoff"
)

// Handler processes one record. Returning nil commits it; an error
// redelivers the same record, with backoff, until it succeeds or the
// subscription or session ends. ctx ends with the subscription.
type Handler func(ctx context.Context, r *kgo.Record) error

// Group is one consumer group whose topic set follows the subscriptions:
// Subscribe adds a topic, the end of its context removes it, and each
// change starts a new session with the new set. One group per component,
// rather than one per topic, keeps an app's subscriptions from
// rebalancing against each other.
//
// A session is a member of the broker's consumer group: in-process
// (session_local.go) when the broker is in this process, franz-go's
// group consumer (session_remote.go) otherwise. Either way each assigned
// partition has a worker that delivers its records in order: a record
// whose handler fails holds back the records after it, and its offset is
// committed only once the handler succeeded, so a restart redelivers it.
type Group struct {
	opts ClientOptions
	log  logger.Logger

	// ctx ends at Close; every goroutine of the group watches it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the run goroutine and one watcher per subscription.
	wg sync.WaitGroup
	// changed is signalled (never blocking, capacity 1) whenever the
	// subscriptions change; the run goroutine starts a new session on it.
	changed chan struct{}

	// mu guards the fields below.
	mu      sync.Mutex
	subs    map[string]*subscription // by topic
	started bool                     // run goroutine started
	closed  bool
}

type subscription struct {
	topic   string
	handler Handler
	// ctx is the Subscribe context, also cancelled when the subscription
	// is replaced or the group closes.
	ctx    context.Context
	cancel context.CancelFunc
}

// NewGroup returns a group named o.ConsumerGroup. It does no I/O: the
// group's goroutine joins once there is a topic to consume.
func NewGroup(o ClientOptions, l logger.Logger) (*Group, error) {
	if o.ConsumerGroup == "" {
		return nil, &MetadataError{"consumerGroup", "not set, and the runtime gave no consumerID"}
	}
	g := &Group{opts: o, log: l, changed: make(chan struct{}, 1), subs: map[string]*subscription{}}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g, nil
}

// Subscribe adds topic to the group and returns at once; records arrive
// at h once the group has joined. When ctx ends the topic is removed. A
// second Subscribe to the same topic replaces the first.
func (g *Group) Subscribe(ctx context.Context, topic string, h Handler) error {
	if topic == "" {
		return errors.New("subscribe: topic is empty")
	}
	if h == nil {
		return errors.New("subscribe: handler is nil")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	s := &subscription{topic: topic, handler: h}
	s.ctx, s.cancel = context.WithCancel(ctx)
	if old := g.subs[topic]; old != nil {
		old.cancel()
	}
	g.subs[topic] = s
	if !g.started {
		g.started = true
		g.wg.Add(1)
		go g.run()
	}
	g.wg.Add(1)
	go g.watch(s)
	g.signal()
	return nil
}

// Topics returns the subscribed topics, sorted.
func (g *Group) Topics() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.subs))
	for t := range g.subs {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Close stops consuming, commits what was handled, leaves the group and
// waits for every goroutine of the group. Handlers under way see their
// context cancelled; their records are redelivered later.
func (g *Group) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
	return nil
}

// signal notes a change in the subscriptions. The caller holds mu.
func (g *Group) signal() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// watch removes s when its context or the group ends.
func (g *Group) watch(s *subscription) {
	defer g.wg.Done()
	select {
	case <-s.ctx.Done():
	case <-g.ctx.Done():
	}
	s.cancel()
	g.mu.Lock()
	if g.subs[s.topic] == s {
		delete(g.subs, s.topic)
		g.signal()
	}
	g.mu.Unlock()
}

func (g *Group) current(topic string) *subscription {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.subs[topic]
}

// run consumes the current topic set, a session per set, until Close.
func (g *Group) run() {
	defer g.wg.Done()
	bo := newBackoff()
	for {
		// A change signalled before we read the topics is covered by
		// this read.
		select {
		case <-g.changed:
		default:
		}
		topics := g.Topics()
		if g.ctx.Err() != nil {
			return
		}
		if len(topics) == 0 {
			select {
			case <-g.ctx.Done():
				return
			case <-g.changed:
				continue
			}
		}
		err := g.session(topics)
		if g.ctx.Err() != nil {
			return
		}
		if err != nil {
			g.log.Warnf("consumer group %s on %v: %v", g.opts.ConsumerGroup, topics, err)
			if !bo.WaitChan(g.ctx.Done(), nil) {
				return
			}
			continue
		}
		bo.Reset()
	}
}

// session is a member of the group for topics until the subscriptions
// change (nil) or the group closes; an error is a session that could not
// run, to try again after a backoff.
func (g *Group) session(topics []string) error {
	ctx, cancel := context.WithCancel(g.ctx)
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-g.changed:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() {
		cancel()
		<-watcherDone
	}()
	s := &session{g: g, workers: map[topicPartition]*worker{}}
	var err error
	if g.opts.Local != nil {
		err = s.runLocal(ctx, topics)
	} else {
		err = s.runRemote(ctx, topics)
	}
	s.stopAll()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// topicPartition names a partition.
type topicPartition struct {
	topic     string
	partition int32
}

// session is the workers of one member's assigned partitions.
type session struct {
	g *Group

	mu      sync.Mutex // guards workers
	workers map[topicPartition]*worker
}

// worker delivers the records of one partition, in order, on its own
// goroutine, until stop.
type worker struct {
	tp     topicPartition
	ctx    context.Context // ends when the partition is revoked
	cancel context.CancelFunc
	done   chan struct{}

	// The records the remote poll loop handed over (session_remote.go);
	// mu guards them.
	mu     sync.Mutex
	queue  []*kgo.Record
	paused bool // the poll loop paused the partition: too many queued
	wake   chan struct{}
}

// start runs loop on a new worker for tp. The session's owner stops it.
func (s *session) start(ctx context.Context, tp topicPartition, loop func(w *worker)) {
	w := &worker{tp: tp, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	w.ctx, w.cancel = context.WithCancel(ctx)
	s.mu.Lock()
	if old := s.workers[tp]; old != nil {
		// Assigned again without a revocation in between: the old one
		// goes first, so that one worker delivers a partition.
		s.mu.Unlock()
		s.stop(map[string][]int32{tp.topic: {tp.partition}})
		s.mu.Lock()
	}
	s.workers[tp] = w
	s.mu.Unlock()
	go func() {
		defer close(w.done)
		loop(w)
	}()
}

// worker returns tp's worker, or nil.
func (s *session) worker(tp topicPartition) *worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workers[tp]
}

// stop ends the workers of tps and waits for them: each finishes the
// handler call under way, if any, and delivers nothing more.
func (s *session) stop(tps map[string][]int32) {
	var ws []*worker
	s.mu.Lock()
	for t, ps := range tps {
		for _, p := range ps {
			tp := topicPartition{t, p}
			if w := s.workers[tp]; w != nil {
				w.cancel()
				ws = append(ws, w)
				delete(s.workers, tp)
			}
		}
	}
	s.mu.Unlock()
	for _, w := range ws {
		<-w.done
	}
}

// stopAll ends every worker.
func (s *session) stopAll() {
	all := map[string][]int32{}
	s.mu.Lock()
	for tp := range s.workers {
		all[tp.topic] = append(all[tp.topic], tp.partition)
	}
	s.mu.Unlock()
	s.stop(all)
}

// deliver calls the topic's handler until it succeeds. It reports false,
// the record not handled, when ctx (the worker's) or the subscription
// ends first.
func (g *Group) deliver(ctx context.Context, r *kgo.Record) bool {
	s := g.current(r.Topic)
	if s == nil {
		return false
	}
	bo := newBackoff()
	for attempt := 1; ; attempt++ {
		// Once a subscription's context has ended, or the partition was
		// revoked, the handler is not called again.
		if s.ctx.Err() != nil || ctx.Err() != nil {
			return false
		}
		err := s.handler(s.ctx, r)
		if err == nil {
			return true
		}
		g.log.Debugf("topic %s partition %d offset %d: handler failed (attempt %d), redelivering: %v",
			r.Topic, r.Partition, r.Offset, attempt, err)
		if !bo.WaitChan(ctx.Done(), s.ctx.Done()) {
			return false
		}
	}
}

// newBackoff is the redelivery and reconnect backoff: from
// retryBackoffStart up to retryBackoffMax, jittered.
func newBackoff() *backoff.Backoff {
	return backoff.Policy{Initial: retryBackoffStart, Max: retryBackoffMax}.New()
}
