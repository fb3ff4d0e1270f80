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

	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleProduce(req *kmsg.ProduceRequest, h requestHeader) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	if req.Acks != -1 && req.Acks != 0 && req.Acks != 1 {
		b.log.Warn("broker: produce refused: invalid acks", "acks", req.Acks, "client_id", h.clientID)
		return produceErrorResponse(req, kerr.InvalidRequiredAcks.Code)
	}
	txn := req.TransactionID != nil
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		t, terr := b.topics.ensure(rt.Topic, b.cfg.AutoCreateTopics, b.cfg.DefaultPartitions)
		code := int16(0)
		switch {
		case txn:
			code = kerr.TransactionalIDAuthorizationFailed.Code
		case errors.Is(terr, errInvalidTopic):
			code = kerr.InvalidTopicException.Code
		case terr != nil || t == nil:
			code = kerr.UnknownTopicOrPartition.Code
		}
		if code == 0 {
			if t.inflight.Add(1) > b.cfg.TopicQueueDepth {
				code = kerr.RequestTimedOut.Code
				b.log.Warn("broker: topic queue full; failing produce fast", "topic", rt.Topic, "depth", b.cfg.TopicQueueDepth)
			}
			defer t.inflight.Add(-1)
		}
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition, sp.BaseOffset, sp.LogAppendTime, sp.LogStartOffset = rp.Partition, -1, -1, -1
			if code != 0 {
				sp.ErrorCode = code
			} else {
				b.produceOne(t, &rp, &sp, h)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
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

func (b *Broker) produceOne(t *topic, rp *kmsg.ProduceRequestTopicPartition, sp *kmsg.ProduceResponseTopicPartition, h requestHeader) {
	p := t.partition(rp.Partition)
	if p == nil {
		sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
		return
	}
	t.mu.RLock()
	maxBatch := t.cfg.MaxBatchBytes
	t.mu.RUnlock()
	infos, err := storage.ValidateBatches(rp.Records, maxBatch)
	if err == nil {
		var res storage.AppendResult
		res, err = p.Append(rp.Records, infos)
		if err == nil {
			sp.BaseOffset = res.Base
			sp.LogStartOffset, _ = p.Offsets()
			return
		}
	}
	sp.ErrorCode = produceErrorCode(err)
	msg := err.Error()
	sp.ErrorMessage = &msg
	level := b.log.Warn
	if sp.ErrorCode == kerr.OutOfOrderSequenceNumber.Code || sp.ErrorCode == kerr.DuplicateSequenceNumber.Code {
		level = b.log.Info
	}
	level("broker: produce refused", "topic", t.name, "partition", rp.Partition, "client_id", h.clientID, "err", err)
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
