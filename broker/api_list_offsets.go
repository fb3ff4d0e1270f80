// ListOffsets (key 2), v1–v7.
//
// Timestamp -2 answers the log start offset (earliest), -1 the log end
// (latest; the high watermark, as a single node's log is committed when
// written), -3 (v7) the batch holding the largest timestamp. Any other
// timestamp answers the base offset of the first batch whose max timestamp
// is at or after it, with that batch's max timestamp; or offset -1 when no
// batch is that late, as Kafka answers. The time index is per batch, so a
// batch straddling the timestamp is returned whole and the client skips
// earlier records.
//
// v0 (MaxNumOffsets, OldStyleOffsets) is not served. IsolationLevel is
// accepted; without transactions read-committed equals read-uncommitted.
package broker

import (
	"mecha/broker/acl"
	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleListOffsets(c caller, req *kmsg.ListOffsetsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewListOffsetsResponseTopic()
		st.Topic = rt.Topic
		t := b.topics.get(rt.Topic)
		denied := !b.topicAllowed(c, acl.OpDescribe, rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewListOffsetsResponseTopicPartition()
			sp.Partition, sp.Timestamp, sp.Offset, sp.LeaderEpoch = rp.Partition, -1, -1, 0
			var p *storage.Partition
			if t != nil {
				p = t.partition(rp.Partition)
			}
			if denied {
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			if p != nil && !b.leads(rt.Topic, rp.Partition) {
				sp.ErrorCode = kerr.NotLeaderForPartition.Code
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			if p == nil {
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			start, end := p.Offsets()
			switch rp.Timestamp {
			case -2:
				sp.Offset = start
			case -1:
				sp.Offset = end
			case -3:
				sp.Offset, sp.Timestamp = p.OffsetForMaxTimestamp()
			default:
				if rp.Timestamp < 0 {
					sp.ErrorCode = kerr.InvalidRequest.Code
				} else {
					sp.Offset, sp.Timestamp = p.OffsetForTime(rp.Timestamp)
				}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
