// OffsetForLeaderEpoch (key 23), v0–v4 (flexible from v4).
//
// For each partition, the largest leader epoch at or below the one asked
// that the leader's log holds, and where that epoch's records end (the
// next epoch's start, or the log end for the newest): what a consumer
// (KIP-320) or a follower compares its own tail with to find a
// truncation. A consumer's answer stops at the high watermark, which is
// all it can have seen. CurrentLeaderEpoch (v2+) older than the leader's
// gets FENCED_LEADER_EPOCH, newer UNKNOWN_LEADER_EPOCH; a broker that
// does not lead the partition, NOT_LEADER_OR_FOLLOWER. A single broker's
// log is all epoch 0.
package broker

import (
	"mecha/broker/acl"
	"mecha/internal/replica"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleOffsetForLeaderEpoch(c caller, req *kmsg.OffsetForLeaderEpochRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewOffsetForLeaderEpochResponseTopic()
		st.Topic = rt.Topic
		denied := !b.topicAllowed(c, acl.OpDescribe, rt.Topic)
		t := b.topics.get(rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			sp.Partition, sp.LeaderEpoch, sp.EndOffset = rp.Partition, -1, -1
			switch {
			case denied:
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case t == nil || t.partition(rp.Partition) == nil:
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			default:
				sp.ErrorCode, sp.LeaderEpoch, sp.EndOffset = b.epochEnd(t, rp, req.Version >= 2, req.ReplicaID >= 0)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// epochEnd answers one partition; follower says the asker is a replica
// (its answer may pass the high watermark).
func (b *Broker) epochEnd(t *topic, rp kmsg.OffsetForLeaderEpochRequestTopicPartition, checkCurrent, follower bool) (code int16, epoch int32, end int64) {
	p := t.partition(rp.Partition)
	_, hw := p.Offsets()
	if b.cl == nil {
		// One broker, one epoch: 0, whose records end at the log end.
		if checkCurrent && rp.CurrentLeaderEpoch > 0 {
			return kerr.UnknownLeaderEpoch.Code, -1, -1
		}
		if rp.LeaderEpoch < 0 {
			return 0, -1, -1
		}
		if follower {
			hw = p.EndOffset()
		}
		return 0, 0, hw
	}
	pr := b.cl.part(t.name, rp.Partition)
	if pr == nil {
		return kerr.NotLeaderForPartition.Code, -1, -1
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.role != roleLeader {
		return kerr.NotLeaderForPartition.Code, -1, -1
	}
	current := int64(pr.epoch)
	if checkCurrent && rp.CurrentLeaderEpoch >= 0 {
		switch {
		case int64(rp.CurrentLeaderEpoch) < current:
			return kerr.FencedLeaderEpoch.Code, -1, -1
		case int64(rp.CurrentLeaderEpoch) > current:
			return kerr.UnknownLeaderEpoch.Code, -1, -1
		}
	}
	logEnd := pr.p.EndOffset()
	if !follower {
		logEnd = hw
	}
	e, at, ok := pr.log.Epochs().EndOffsetFor(replica.Epoch(max(rp.LeaderEpoch, 0)), logEnd)
	if !ok || rp.LeaderEpoch < 0 {
		return 0, -1, -1
	}
	return 0, int32(e), min(at, logEnd)
}
