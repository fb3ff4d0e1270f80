// Fetch (key 1), v4–v12 (flexible from v12).
//
// For each partition the broker returns whole record batches from the one
// holding FetchOffset, up to PartitionMaxBytes, within the request's
// MaxBytes overall. The first batch of the response is returned even when
// it is larger than either limit (KIP-74), so a consumer never stalls on a
// big batch.
//
// Long poll: when fewer than MinBytes are available the request waits up
// to MaxWaitMillis for an append to any of its partitions, then answers
// with what there is. Waiting holds no lock, and a slow partition's disk
// read delays only the fetches that include it.
//
// Errors per partition: OFFSET_OUT_OF_RANGE outside [log start, log end],
// UNKNOWN_TOPIC_OR_PARTITION. LastStableOffset equals the high watermark
// (no transactions). Fetch sessions (v7+, KIP-227) are not kept: the
// broker answers SessionID 0, which tells clients to send full requests; a
// request naming a session id gets FETCH_SESSION_ID_NOT_FOUND. v13+ (topic
// ids) is not served.
package broker

import (
	"errors"
	"mecha/broker/acl"
	"time"

	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// maxFetchBytes bounds one fetch answer, whatever the client asks, as
// Kafka's fetch.max.bytes (55 MiB) does: a client cannot make the broker
// read a whole segment into memory. The first batch still goes whole.
const maxFetchBytes = 55 << 20

// fetchResponse is a FetchResponse whose record batches sit in pooled
// buffers, released by the connection writer once the response is written.
type fetchResponse struct {
	*kmsg.FetchResponse
	bufs  [][]byte
	bytes int // record bytes in the response
	// seen is each partition read and the log end it had then: a long
	// poll waits for an append past it.
	seen []seenPartition
}

type seenPartition struct {
	p   *storage.Partition
	end int64
}

func (r *fetchResponse) alloc(n int) []byte {
	b := getBuf(n)
	r.bufs = append(r.bufs, b)
	return b
}

// release returns the read buffers to the pool; the response must not be
// used after.
func (r *fetchResponse) release() {
	for _, b := range r.bufs {
		putBuf(b)
	}
	r.bufs = nil
}

func (b *Broker) handleFetch(c caller, req *kmsg.FetchRequest) kmsg.Response {
	resp := &fetchResponse{FetchResponse: req.ResponseKind().(*kmsg.FetchResponse)}
	if req.Version >= 7 && req.SessionID != 0 {
		resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
		return resp
	}
	var deadline time.Time
	if req.MaxWaitMillis > 0 {
		deadline = time.Now().Add(time.Duration(req.MaxWaitMillis) * time.Millisecond)
	}
	b.longPoll(c, deadline, func() ([]seenPartition, bool) {
		total, failed := b.fillFetch(c, req, resp)
		return resp.seen, total >= int(req.MinBytes) || failed
	})
	if resp.ThrottleMillis > 0 && req.Version < 8 {
		// Before KIP-219 the client does not wait: the broker does.
		t := time.NewTimer(time.Duration(resp.ThrottleMillis) * time.Millisecond)
		select {
		case <-t.C:
		case <-c.done:
		case <-b.ctx.Done():
		}
		t.Stop()
	}
	return resp
}

// longPoll runs read until it reports that it has enough (or an error
// to answer at once) or the deadline passes, waiting between runs for an
// append to one of the partitions it read, the caller leaving or the
// broker closing. seen is each partition read with the log end the read
// saw. A zero deadline reads once.
func (b *Broker) longPoll(c caller, deadline time.Time, read func() (seen []seenPartition, enough bool)) {
	var wake chan struct{}
	for {
		seen, enough := read()
		if enough || deadline.IsZero() || !time.Now().Before(deadline) {
			return
		}
		if wake == nil {
			wake = make(chan struct{}, 1)
		}
		waiting, arrived := registerFetchWait(seen, wake)
		if arrived {
			continue // an append landed since the read
		}
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-wake:
		case <-timer.C:
		case <-c.done:
		case <-b.ctx.Done():
		}
		timer.Stop()
		for _, p := range waiting {
			p.Unwait(wake)
		}
		select {
		case <-wake:
		default:
		}
		if c.gone() || b.ctx.Err() != nil {
			return
		}
	}
}

// registerFetchWait asks each partition read to signal wake on its next
// append past the log end the read saw. It returns the partitions
// registered, or arrived=true (none registered) when one of them has
// grown since. With no partition to wait on, the fetch waits out its time.
func registerFetchWait(seen []seenPartition, wake chan struct{}) (waiting []*storage.Partition, arrived bool) {
	for _, s := range seen {
		if !s.p.Wait(s.end, wake) {
			for _, q := range waiting {
				q.Unwait(wake)
			}
			return nil, true
		}
		waiting = append(waiting, s.p)
	}
	return waiting, false
}

// fillFetch (re)builds the response's topics and returns the record bytes
// in it, and whether some partition has an error (answered at once).
func (b *Broker) fillFetch(c caller, req *kmsg.FetchRequest, resp *fetchResponse) (total int, failed bool) {
	resp.release() // a long poll's earlier, empty or short, read
	resp.seen = resp.seen[:0]
	defer func() { resp.bytes = total }()
	remaining := maxFetchBytes
	if req.Version >= 3 && req.MaxBytes > 0 && int(req.MaxBytes) < remaining {
		remaining = int(req.MaxBytes)
	}
	resp.Topics = resp.Topics[:0]
	resp.ThrottleMillis = 0
	busy := b.diskBusy()
	for _, rt := range req.Topics {
		st := kmsg.NewFetchResponseTopic()
		st.Topic = rt.Topic
		t := b.topics.get(rt.Topic)
		denied := !b.topicAllowed(c, acl.OpRead, rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewFetchResponseTopicPartition()
			sp.Partition, sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = rp.Partition, -1, -1, -1
			sp.PreferredReadReplica = -1
			// An empty record set, never null: librdkafka rejects null.
			sp.RecordBatches = []byte{}
			var p *storage.Partition
			if t != nil && !denied {
				p = t.partition(rp.Partition)
			}
			if denied {
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				failed = true
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			if p != nil && !b.leads(rt.Topic, rp.Partition) {
				sp.ErrorCode = kerr.NotLeaderForPartition.Code
				failed = true
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			if p == nil {
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				failed = true
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			if busy {
				if _, hw := p.Offsets(); b.lagging(rp.FetchOffset, hw) {
					// Lag throttling: no disk read now; come back later.
					start, _ := p.Offsets()
					sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = hw, hw, start
					resp.ThrottleMillis = int32(b.cfg.Throttle.Wait / time.Millisecond)
					b.throttled.Add(1)
					failed = true // answer at once
					st.Partitions = append(st.Partitions, sp)
					continue
				}
			}
			limit := int(rp.PartitionMaxBytes)
			if limit > remaining {
				limit = remaining
			}
			if total == 0 && limit <= 0 {
				limit = 1 // KIP-74: the first batch always goes
			}
			res, code := b.readPartition(p, rt.Topic, rp.Partition, rp.FetchOffset, limit, resp.alloc)
			sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = res.HighWatermark, res.HighWatermark, res.LogStart
			sp.ErrorCode = code
			if code != 0 {
				failed = true
			} else {
				resp.seen = append(resp.seen, seenPartition{p, res.HighWatermark})
				if len(res.Batches) > 0 {
					sp.RecordBatches = res.Batches
					total += len(res.Batches)
					remaining -= len(res.Batches)
				}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return total, failed
}

// readPartition reads whole batches of p from offset, up to limit bytes
// (the first batch whole), into buffers from alloc, and gives a read
// error as its Kafka error code. Both fetch paths (the Fetch API and the
// in-process Fetch) read through it.
func (b *Broker) readPartition(p *storage.Partition, topic string, partition int32, offset int64, limit int, alloc func(int) []byte) (storage.ReadResult, int16) {
	res, err := p.ReadInto(offset, limit, alloc)
	switch {
	case err == nil:
		return res, 0
	case errors.Is(err, storage.ErrOffsetOutOfRange):
		return res, kerr.OffsetOutOfRange.Code
	case errors.Is(err, storage.ErrClosed):
		return res, kerr.NotLeaderForPartition.Code
	}
	b.log.Error("broker: fetch read failed", "topic", topic, "partition", partition, "offset", offset, "err", err)
	return res, kerr.KafkaStorageError.Code
}
