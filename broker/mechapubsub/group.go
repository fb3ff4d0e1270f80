package mechapubsub

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/IBM/sarama"
	"github.com/dapr/kit/logger"

	"mecha/internal/backoff"
)

// Handler processes one record. Returning nil commits it; an error
// redelivers the same record, with backoff, until it succeeds or the
// subscription or session ends. ctx ends with the subscription.
type Handler func(ctx context.Context, m *sarama.ConsumerMessage) error

// Group is one consumer group whose topic set follows the subscriptions:
// Subscribe adds a topic, the end of its context removes it, and each
// change restarts the group's Consume loop with the new set. One group
// per component, rather than one per topic, keeps an app's subscriptions
// from rebalancing against each other.
//
// Delivery within a partition is sequential: a record whose handler
// fails holds back the records after it, and its offset is committed
// only once the handler succeeded, so a restart redelivers it.
type Group struct {
	opts ClientOptions
	log  logger.Logger

	// ctx ends at Close; every goroutine of the group watches it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the run goroutine and one watcher per subscription.
	wg sync.WaitGroup
	// changed is signalled (never blocking, capacity 1) whenever the
	// subscriptions change; the run goroutine restarts Consume on it.
	changed chan struct{}

	// cg is created and used by the run goroutine; Close closes it once
	// that goroutine has exited.
	cg sarama.ConsumerGroup

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
// sarama client is created, and recreated after failures, by the group's
// goroutine once there is a topic to consume.
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
	if g.cg != nil {
		return g.cg.Close()
	}
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

// run owns g.cg: it consumes the current topic set until it changes, then
// starts again with the new set, until Close.
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
		if g.cg == nil {
			cg, err := sarama.NewConsumerGroup(g.opts.Brokers, g.opts.ConsumerGroup, g.opts.Config())
			if err != nil {
				g.log.Warnf("consumer group %s: connecting to %v: %v", g.opts.ConsumerGroup, g.opts.Brokers, err)
				if !bo.WaitChan(g.ctx.Done(), nil) {
					return
				}
				continue
			}
			g.cg = cg
		}
		if !g.consume(topics) {
			return
		}
		bo.Reset()
	}
}

// consume runs sessions over topics until the subscriptions change
// (true) or the group closes (false).
func (g *Group) consume(topics []string) bool {
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
	h := &groupHandler{g: g}
	bo := newBackoff()
	for ctx.Err() == nil {
		// Consume returns at the end of each session: a rebalance, or
		// ctx ending. Marked offsets are committed before it returns.
		err := g.cg.Consume(ctx, topics, h)
		switch {
		case errors.Is(err, sarama.ErrClosedConsumerGroup):
			return false
		case err != nil && ctx.Err() == nil:
			g.log.Warnf("consumer group %s on %v: %v", g.opts.ConsumerGroup, topics, err)
			bo.WaitChan(ctx.Done(), nil)
		case err == nil:
			bo.Reset()
		}
	}
	return g.ctx.Err() == nil
}

// groupHandler adapts the group to sarama; sarama calls ConsumeClaim on a
// goroutine of its own per partition.
type groupHandler struct{ g *Group }

func (*groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (*groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case <-sess.Context().Done():
			return nil
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if !h.g.deliver(sess, m) {
				// m stays unmarked: the session is ending, or the
				// topic's subscription was removed or replaced.
				// Returning ends the whole session (sarama cancels
				// it when any claim returns); the next one starts
				// from the committed offset and delivers m again.
				return nil
			}
		}
	}
}

// deliver calls the topic's handler until it succeeds and marks m. It
// reports false, leaving m unmarked, when the session or subscription
// ends first.
func (g *Group) deliver(sess sarama.ConsumerGroupSession, m *sarama.ConsumerMessage) bool {
	s := g.current(m.Topic)
	if s == nil {
		return false
	}
	bo := newBackoff()
	for attempt := 1; ; attempt++ {
		// Once a subscription's context has ended, its handler is
		// never called again, even if the watcher has not removed it.
		if s.ctx.Err() != nil {
			return false
		}
		err := s.handler(s.ctx, m)
		if err == nil {
			sess.MarkMessage(m, "")
			return true
		}
		g.log.Debugf("topic %s partition %d offset %d: handler failed (attempt %d), redelivering: %v",
			m.Topic, m.Partition, m.Offset, attempt, err)
		if !bo.WaitChan(sess.Context().Done(), s.ctx.Done()) {
			return false
		}
	}
}

// newBackoff is the redelivery and reconnect backoff: from
// retryBackoffStart up to retryBackoffMax, jittered.
func newBackoff() *backoff.Backoff {
	return backoff.Policy{Initial: retryBackoffStart, Max: retryBackoffMax}.New()
}
