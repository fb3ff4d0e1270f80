package inproc

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker"
)

// Consumer reads a fixed set of partitions from given offsets, as a kgo
// client with kgo.ConsumePartitions does: no group, the caller keeps the
// offsets (a stream job, in its checkpoints). It is not safe for
// concurrent use: one goroutine polls.
type Consumer struct {
	c   *Client
	log *slog.Logger
	// maxBytes bounds what one poll reads of each partition (1 MiB,
	// kgo's default fetch.max.partition.bytes).
	maxBytes int
	cursors  []*cursor
}

// cursor is where a partition is read next.
type cursor struct {
	topic     string
	partition int32
	// next is the next offset to read, or -2 (the log start) and -1 (the
	// log end) until the first poll resolves it.
	next    int64
	paused  bool
	retryAt time.Time // after a read error, not before this
}

// partKey names a partition.
type partKey struct {
	topic     string
	partition int32
}

// errorBackoff is how long a partition whose read failed (other than an
// offset out of range, which resets it) is left alone.
const errorBackoff = 250 * time.Millisecond

// NewConsumer returns a consumer of the partitions of from, each starting
// at its offset: kgo.NewOffset().AtStart(), AtEnd() or At(n) (other
// kinds of kgo.Offset read from the start). A partition whose offset
// falls out of the log is read again from the log start, as kgo's default
// reset does.
func (c *Client) NewConsumer(from map[string]map[int32]kgo.Offset, log *slog.Logger) *Consumer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	co := &Consumer{c: c, log: log, maxBytes: 1 << 20}
	for topic, parts := range from {
		for p, o := range parts {
			next := o.EpochOffset().Offset
			if next < -2 {
				next = -2
			}
			co.cursors = append(co.cursors, &cursor{topic: topic, partition: p, next: next})
		}
	}
	return co
}

// PauseFetchTopics stops reading topics until ResumeFetchTopics, and
// returns every paused topic, as kgo's does.
func (co *Consumer) PauseFetchTopics(topics ...string) []string {
	co.setPaused(true, topics)
	var paused []string
	for _, cur := range co.cursors {
		if cur.paused && !slices.Contains(paused, cur.topic) {
			paused = append(paused, cur.topic)
		}
	}
	return paused
}

// ResumeFetchTopics reads topics again.
func (co *Consumer) ResumeFetchTopics(topics ...string) { co.setPaused(false, topics) }

// Close is there to match kgo's client: a consumer holds nothing open.
func (co *Consumer) Close() {}

func (co *Consumer) setPaused(paused bool, topics []string) {
	for _, cur := range co.cursors {
		if slices.Contains(topics, cur.topic) {
			cur.paused = paused
		}
	}
}

// PollRecords waits until a partition has records (or an error), and
// returns at most maxRecords of them (all, when maxRecords <= 0); the
// rest are read again by the next poll. A paused topic's partitions are
// not read. When ctx ends first, the answer is an error fetch with ctx's
// error, as kgo's PollRecords answers.
func (co *Consumer) PollRecords(ctx context.Context, maxRecords int) kgo.Fetches {
	for {
		if err := co.resolve(ctx); err != nil {
			return kgo.NewErrFetch(err)
		}
		now := time.Now()
		var parts []broker.FetchPartition
		cursors := map[partKey]*cursor{}
		soonest := time.Time{}
		for _, cur := range co.cursors {
			switch {
			case cur.paused:
			case now.Before(cur.retryAt):
				if soonest.IsZero() || cur.retryAt.Before(soonest) {
					soonest = cur.retryAt
				}
			default:
				parts = append(parts, broker.FetchPartition{Topic: cur.topic, Partition: cur.partition, Offset: cur.next, MaxBytes: co.maxBytes})
				cursors[partKey{cur.topic, cur.partition}] = cur
			}
		}
		if len(parts) == 0 {
			// Nothing to read now: wait for a partition's retry, or for
			// ctx (a paused job polls with a deadline).
			if err := waitUntil(ctx, soonest); err != nil {
				return kgo.NewErrFetch(err)
			}
			continue
		}
		wait := 5 * time.Second
		if d, ok := ctx.Deadline(); ok {
			wait = time.Until(d)
		}
		if !soonest.IsZero() {
			wait = min(wait, time.Until(soonest))
		}
		fs, err := co.c.fetch(ctx, parts, max(wait, time.Millisecond))
		if err != nil {
			return kgo.NewErrFetch(err)
		}
		if co.advance(fs, cursors, maxRecords) {
			return fs
		}
		// Only resets, or nothing at all after maxWait: poll on while ctx
		// lasts.
		if err := ctx.Err(); err != nil {
			return kgo.NewErrFetch(err)
		}
	}
}

// advance moves the cursors past the records of fs (trimmed to at most
// maxRecords), resets those out of range and backs off those that
// failed. It reports whether fs has records or errors for the caller.
func (co *Consumer) advance(fs kgo.Fetches, cursors map[partKey]*cursor, maxRecords int) bool {
	taken, useful := 0, false
	for ti := range fs[0].Topics {
		ft := &fs[0].Topics[ti]
		for pi := range ft.Partitions {
			p := &ft.Partitions[pi]
			cur := cursors[partKey{ft.Topic, p.Partition}]
			switch {
			case errors.Is(p.Err, kerr.OffsetOutOfRange):
				co.log.Warn("inproc: offset out of range; reading from the log start", "topic", cur.topic, "partition", cur.partition, "offset", cur.next, "log_start", p.LogStartOffset)
				cur.next = max(p.LogStartOffset, 0)
				p.Err = nil
				continue
			case p.Err != nil:
				cur.retryAt = time.Now().Add(errorBackoff)
				useful = true
				continue
			}
			if maxRecords > 0 && taken+len(p.Records) > maxRecords {
				p.Records = p.Records[:maxRecords-taken]
			}
			taken += len(p.Records)
			if n := len(p.Records); n > 0 {
				cur.next = p.Records[n-1].Offset + 1
				useful = true
			}
		}
	}
	return useful
}

// resolve turns start and end offsets into exact ones.
func (co *Consumer) resolve(ctx context.Context) error {
	for _, cur := range co.cursors {
		if cur.next >= 0 {
			continue
		}
		offs, err := co.c.ListOffsets(ctx, cur.topic, []int32{cur.partition}, cur.next)
		if err != nil {
			return err
		}
		cur.next = max(offs[cur.partition], 0)
	}
	return nil
}

// waitUntil waits for t (forever when zero) or ctx.
func waitUntil(ctx context.Context, t time.Time) error {
	if t.IsZero() {
		<-ctx.Done()
		return ctx.Err()
	}
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
