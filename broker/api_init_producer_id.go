// InitProducerId (key 22), v0–v4 (flexible from v2).
//
// Hands out a producer id for an idempotent producer, epoch 0. Ids come
// from a counter persisted in blocks, so they are never reused after a
// restart. v3+ (KIP-360): a producer that names its current id and epoch
// gets the same id with the epoch bumped, or a new id when the epoch would
// overflow.
//
// Transactional producers (a transactional id) get
// TRANSACTIONAL_ID_AUTHORIZATION_FAILED: transactions are not implemented.
package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleInitProducerID(req *kmsg.InitProducerIDRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil {
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return resp
	}
	if req.Version >= 3 && req.ProducerID >= 0 && req.ProducerEpoch >= 0 && req.ProducerEpoch < 32767 {
		resp.ProducerID, resp.ProducerEpoch = req.ProducerID, req.ProducerEpoch+1
		return resp
	}
	id, err := b.pids.allocate()
	if err != nil {
		b.log.Error("broker: allocate producer id", "err", err)
		resp.ErrorCode = kerr.KafkaStorageError.Code
		return resp
	}
	resp.ProducerID, resp.ProducerEpoch = id, 0
	return resp
}
