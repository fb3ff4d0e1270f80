// DeleteRecords (key 21), v0–v2 (flexible from v2).
//
// Moves a partition's log start offset forward (offset -1 means the high
// watermark) and deletes the segments wholly before it. The new start is
// persisted. An offset past the high watermark gets OFFSET_OUT_OF_RANGE.
// In the broker cluster only the partition's leader deletes
// (NOT_LEADER_OR_FOLLOWER elsewhere); its followers trim to the leader's
// new start when they next fetch.
package broker

import (
	"errors"
	"mecha/broker/acl"

	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleDeleteRecords(c caller, req *kmsg.DeleteRecordsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewDeleteRecordsResponseTopic()
		st.Topic = rt.Topic
		t := b.topics.get(rt.Topic)
		denied := !b.topicAllowed(c, acl.OpDelete, rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewDeleteRecordsResponseTopicPartition()
			sp.Partition, sp.LowWatermark = rp.Partition, -1
			var p *storage.Partition
			if t != nil {
				p = t.partition(rp.Partition)
			}
			if denied {
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			} else if p == nil {
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			} else if b.cl != nil && !b.leads(rt.Topic, rp.Partition) {
				sp.ErrorCode = kerr.NotLeaderForPartition.Code
			} else if low, err := p.DeleteRecords(rp.Offset); err != nil {
				if errors.Is(err, storage.ErrOffsetOutOfRange) {
					sp.ErrorCode = kerr.OffsetOutOfRange.Code
				} else {
					b.log.Error("broker: delete records", "topic", rt.Topic, "partition", rp.Partition, "err", err)
					sp.ErrorCode = kerr.KafkaStorageError.Code
				}
			} else {
				sp.LowWatermark = low
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
