package subscriptions

import (
	"context"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/google/uuid"
)

// batcher gives bulk subscriptions to components that deliver one message
// at a time. Each handler call waits until its batch has been delivered, so
// a message is acked only after the app answered for it. Components that
// call their handler serially therefore produce batches of one, as in Dapr.
type batcher struct {
	cfg     pubsub.BulkSubscribeConfig
	deliver pubsub.BulkHandler
	in      chan batchItem
}

type batchItem struct {
	msg  *pubsub.NewMessage
	done chan error
}

func newBatcher(ctx context.Context, cfg pubsub.BulkSubscribeConfig, deliver pubsub.BulkHandler) *batcher {
	b := &batcher{cfg: cfg, deliver: deliver, in: make(chan batchItem, cfg.MaxMessagesCount)}
	go b.loop(ctx)
	return b
}

func (b *batcher) handle(ctx context.Context, msg *pubsub.NewMessage) error {
	it := batchItem{msg: msg, done: make(chan error, 1)}
	select {
	case b.in <- it:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop is owned by the subscription; it ends with ctx.
func (b *batcher) loop(ctx context.Context) {
	wait := time.Duration(b.cfg.MaxAwaitDurationMs) * time.Millisecond
	var batch []batchItem
	var timer *time.Timer
	var fire <-chan time.Time
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if timer != nil {
			timer.Stop()
			fire = nil
		}
		msg := &pubsub.BulkMessage{Topic: batch[0].msg.Topic, Metadata: batch[0].msg.Metadata}
		ids := make(map[string]chan error, len(batch))
		for _, it := range batch {
			id := uuid.NewString()
			ct := ""
			if it.msg.ContentType != nil {
				ct = *it.msg.ContentType
			}
			msg.Entries = append(msg.Entries, pubsub.BulkMessageEntry{EntryId: id, Event: it.msg.Data, ContentType: ct, Metadata: it.msg.Metadata})
			ids[id] = it.done
		}
		res, err := b.deliver(ctx, msg)
		answered := map[string]bool{}
		for _, r := range res {
			if ch, ok := ids[r.EntryId]; ok {
				ch <- r.Error
				answered[r.EntryId] = true
			}
		}
		for id, ch := range ids {
			if !answered[id] {
				if err == nil {
					err = context.Canceled
				}
				ch <- err
			}
		}
		batch = batch[:0]
	}
	for {
		select {
		case <-ctx.Done():
			for _, it := range batch {
				it.done <- ctx.Err()
			}
			return
		case it := <-b.in:
			batch = append(batch, it)
			if len(batch) == 1 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				fire = timer.C
			}
			if len(batch) >= b.cfg.MaxMessagesCount {
				flush()
			}
		case <-fire:
			fire = nil
			flush()
		}
	}
}
