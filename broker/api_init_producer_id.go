// InitProducerId (key 22), v0–v4 (flexible from v2).
//
// Hands out a producer id for an idempotent producer, epoch 0. Ids come
// from a counter persisted in blocks, so they are never reused after a
// restart. A v3+ request naming a current id and epoch (KIP-360) also
// gets a fresh id: without transactions the id is not the client's to
// keep, and echoing it would let one client fence another's id.
//
// Transactional producers (a transactional id) get
// TRANSACTIONAL_ID_AUTHORIZATION_FAILED: transactions are not implemented.
package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"mecha/broker/acl"
)

func (b *Broker) handleInitProducerID(c caller, req *kmsg.InitProducerIDRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil {
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return resp
	}
	// IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (KIP-679).
	if !b.clusterAllowed(c, acl.OpIdempotentWrite) && !b.allowedOnSome(c, acl.OpWrite, acl.ResourceTopic) {
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return resp
	}
	id, err := b.pids.allocate()
	if err != nil {
		b.log.Error("broker: allocate producer id", "err", err)
		resp.ErrorCode = kerr.KafkaStorageError.Code
		return resp
	}
	if b.cl != nil {
		// Every broker of the cluster hands out ids: the node id in the
		// high half keeps them apart, as the partitions' producer state
		// would take one producer's first batch for a retry of
		// another's.
		if id > 1<<32-1 {
			b.log.Error("broker: producer ids exhausted", "next", id)
			resp.ErrorCode = kerr.KafkaStorageError.Code
			return resp
		}
		id |= int64(b.cl.node) << 32
	}
	resp.ProducerID, resp.ProducerEpoch = id, 0
	return resp
}
