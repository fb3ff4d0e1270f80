// Produce (key 0), v3–v9 (flexible from v9).
//
// Records must be v2 record batches (magic 2, Kafka 0.11+); older message
// sets get UNSUPPORTED_FOR_MESSAGE_FORMAT, which is why v0–v2 are not
// advertised. Each batch is checked (length, CRC-32C, record count) and
// stored as sent, with only the base offset and leader epoch rewritten;
// compression passes through untouched.
//
// Acks: 0 sends no response at all (the records are still written before
// the next request on the connection is answered); 1 and -1 (all) answer
// after the write, and, when the log fsyncs every write, after the fsync.
// On a single node acks=1 and acks=all are the same. Any other acks
// gets INVALID_REQUIRED_ACKS for every partition and nothing is written,
// as Kafka answers a client that is broken.
//
// Errors per partition: CORRUPT_MESSAGE for a bad batch, MESSAGE_TOO_LARGE
// over max.message.bytes, UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION,
// KAFKA_STORAGE_ERROR when the disk write or fsync failed (nothing is
// acknowledged), and the idempotence errors OUT_OF_ORDER_SEQUENCE_NUMBER,
// DUPLICATE_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID.
// A retried batch that matches one of the producer's last five is answered
// with its original offset and no error, as Kafka does.
//
// Isolation: a request holds one slot in each of its topics' queues while
// it writes. A topic whose queue is full answers REQUEST_TIMED_OUT
// (retriable) for its partitions at once; the other topics go on.
//
// Transactional produce is refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
// transactions are not implemented.
package broker

import (
	"errors"
	"time"

	"mecha/broker/acl"
	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleProduce(c caller, req *kmsg.ProduceRequest, h requestHeader) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	if req.Acks != -1 && req.Acks != 0 && req.Acks != 1 {
		b.log.Warn("broker: produce refused: invalid acks", "acks", req.Acks, "client_id", h.clientID)
		return produceErrorResponse(req, kerr.InvalidRequiredAcks.Code)
	}
	txn := req.TransactionID != nil
	// acks=all in a cluster: each partition's answer waits for its
	// in-sync set, all of them at once after the appends.
	type pending struct {
		topic, part int
		wait        <-chan error
	}
	var waits []pending
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		var t *topic
		code := kerr.TransactionalIDAuthorizationFailed.Code
		if !txn {
			var release func()
			if t, code, release = b.produceTopic(c, rt.Topic); code == 0 {
				defer release()
			}
		}
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition, sp.BaseOffset, sp.LogAppendTime, sp.LogStartOffset = rp.Partition, -1, -1, -1
			sp.ErrorCode = code
			if code == 0 {
				var err error
				var wait <-chan error
				sp.BaseOffset, sp.LogStartOffset, sp.ErrorCode, wait, err = b.appendRecords(t, rp.Partition, rp.Records, h.clientID, req.Acks)
				if err != nil {
					msg := err.Error()
					sp.ErrorMessage = &msg
				}
				if wait != nil {
					waits = append(waits, pending{len(resp.Topics), len(st.Partitions), wait})
				}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	if len(waits) > 0 {
		timeout := time.NewTimer(time.Duration(max(req.TimeoutMillis, 1)) * time.Millisecond)
		defer timeout.Stop()
		for _, w := range waits {
			sp := &resp.Topics[w.topic].Partitions[w.part]
			select {
			case err := <-w.wait:
				if err != nil {
					sp.ErrorCode = kerr.NotLeaderForPartition.Code
					var ke *kerr.Error
					if errors.As(err, &ke) {
						sp.ErrorCode = ke.Code
					}
				}
			case <-timeout.C:
				sp.ErrorCode = kerr.RequestTimedOut.Code
			case <-b.ctx.Done():
				sp.ErrorCode = kerr.NotLeaderForPartition.Code
			}
		}
	}
	if req.Acks == 0 {
		return nil
	}
	return resp
}

// produceErrorResponse answers every partition of req with code.
func produceErrorResponse(req *kmsg.ProduceRequest, code int16) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition, sp.ErrorCode, sp.BaseOffset, sp.LogAppendTime, sp.LogStartOffset = rp.Partition, code, -1, -1, -1
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// produceTopic resolves a produce's topic, creating it when
// auto-creation is on, and takes a slot in its queue, which release
// gives back. A code other than 0 is the error for every partition of
// the topic, and then there is nothing to release.
func (b *Broker) produceTopic(c caller, name string) (t *topic, code int16, release func()) {
	if !b.topicAllowed(c, acl.OpWrite, name) {
		return nil, kerr.TopicAuthorizationFailed.Code, nil
	}
	auto := b.cfg.AutoCreateTopics && (b.topics.get(name) != nil || b.mayCreateTopic(c, name))
	partitions := b.cfg.DefaultPartitions
	if b.cl != nil {
		// The cluster's topics are the map's: created there, then here.
		tp := b.cl.cfg.Maps.Map().Topic(name)
		if tp == nil && auto {
			var code int16
			if tp, code, _ = b.clusterCreateTopic(name, -1, -1, nil, clusterSettings{}); code != 0 && code != kerr.TopicAlreadyExists.Code {
				return nil, code, nil
			}
		}
		if tp == nil {
			return nil, kerr.UnknownTopicOrPartition.Code, nil
		}
		auto, partitions = true, int32(len(tp.Partitions))
	}
	t, err := b.topics.ensure(name, auto, partitions)
	switch {
	case errors.Is(err, errInvalidTopic):
		return nil, kerr.InvalidTopicException.Code, nil
	case err != nil || t == nil:
		return nil, kerr.UnknownTopicOrPartition.Code, nil
	}
	if t.inflight.Add(1) > b.cfg.TopicQueueDepth {
		t.inflight.Add(-1)
		b.log.Warn("broker: topic queue full; failing produce fast", "topic", name, "depth", b.cfg.TopicQueueDepth)
		return nil, kerr.RequestTimedOut.Code, nil
	}
	return t, 0, func() { t.inflight.Add(-1) }
}

// appendRecords validates the record batches of one partition's produce
// and appends them to its log (which fsyncs before returning when the
// fsync policy says so), returning the base offset and the log start. A
// refusal is logged and returned as its Kafka error code with the reason.
// Both produce paths (the Produce API and the in-process Produce) write
// through it.
func (b *Broker) appendRecords(t *topic, partition int32, records []byte, clientID string, acks int16) (base, logStart int64, code int16, wait <-chan error, err error) {
	p := t.partition(partition)
	if p == nil {
		return -1, -1, kerr.UnknownTopicOrPartition.Code, nil, nil
	}
	t.mu.RLock()
	maxBatch := t.cfg.MaxBatchBytes
	t.mu.RUnlock()
	infos, err := storage.ValidateBatches(records, maxBatch)
	if err == nil {
		var res storage.AppendResult
		if b.cl != nil {
			res, wait, err = b.clusterAppend(t, partition, records, infos, acks)
		} else {
			res, err = p.Append(records, infos)
		}
		if err == nil {
			logStart, _ = p.Offsets()
			return res.Base, logStart, 0, wait, nil
		}
		var ke *kerr.Error
		if errors.As(err, &ke) {
			return -1, -1, ke.Code, nil, nil
		}
	}
	code = produceErrorCode(err)
	level := b.log.Warn
	if code == kerr.OutOfOrderSequenceNumber.Code || code == kerr.DuplicateSequenceNumber.Code {
		level = b.log.Info
	}
	level("broker: produce refused", "topic", t.name, "partition", partition, "client_id", clientID, "err", err)
	return -1, -1, code, nil, err
}

func produceErrorCode(err error) int16 {
	switch {
	case errors.Is(err, storage.ErrCorruptBatch):
		return kerr.CorruptMessage.Code
	case errors.Is(err, storage.ErrUnsupportedMagic):
		return kerr.UnsupportedForMessageFormat.Code
	case errors.Is(err, storage.ErrBatchTooLarge):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, storage.ErrOutOfOrderSequence):
		return kerr.OutOfOrderSequenceNumber.Code
	case errors.Is(err, storage.ErrDuplicateSequence):
		return kerr.DuplicateSequenceNumber.Code
	case errors.Is(err, storage.ErrInvalidProducerEpoch):
		return kerr.InvalidProducerEpoch.Code
	case errors.Is(err, storage.ErrUnknownProducerID):
		return kerr.UnknownProducerID.Code
	case errors.Is(err, storage.ErrClosed):
		return kerr.NotLeaderForPartition.Code
	}
	return kerr.KafkaStorageError.Code
}
