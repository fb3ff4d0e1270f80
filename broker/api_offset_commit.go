// OffsetCommit (key 8), v0–v8 (flexible from v8).
//
// Commits are checked against the group: a member must be known and in the
// current generation (v1+), and commits are refused with
// REBALANCE_IN_PROGRESS while the group waits for its leader's assignment.
// Generation -1 with no member id is a commit from outside the group
// protocol (kadm, tools), allowed while the group has no members. v0
// commits are stored without a generation check, as v0 carried none.
//
// Offsets go to the broker's offsets file before the answer: they survive
// the broker being killed; the periodic flush (or, with fsync on every
// write, the commit itself) makes them survive power loss. Retention time
// (v2–v4) is ignored: committed offsets are kept until the group or topic
// is deleted.
package broker

import (
	"mecha/broker/acl"
	"time"

	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleOffsetCommit(c caller, req *kmsg.OffsetCommitRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	code := int16(0)
	if !b.groupAllowed(c, acl.OpRead, req.Group) {
		code = kerr.GroupAuthorizationFailed.Code
	} else if code = b.coordinates(req.Group); code != 0 {
	} else if req.Version >= 1 {
		code = b.groups.commitCheck(req.Group, req.MemberID, req.Generation, req.InstanceID, time.Now())
	} else if req.Group == "" {
		code = kerr.InvalidGroupID.Code
	}
	entries := map[storage.OffsetKey]storage.Committed{}
	codes := make([][]int16, len(req.Topics))
	for i, rt := range req.Topics {
		codes[i] = make([]int16, len(rt.Partitions))
		t := b.topics.get(rt.Topic)
		denied := code == 0 && !b.topicAllowed(c, acl.OpRead, rt.Topic)
		for j, rp := range rt.Partitions {
			switch {
			case code != 0:
				codes[i][j] = code
			case denied:
				codes[i][j] = kerr.TopicAuthorizationFailed.Code
			case t == nil || t.partition(rp.Partition) == nil:
				codes[i][j] = kerr.UnknownTopicOrPartition.Code
			default:
				meta := ""
				if rp.Metadata != nil {
					meta = *rp.Metadata
				}
				if len(meta) > 4096 {
					codes[i][j] = kerr.OffsetMetadataTooLarge.Code
					continue
				}
				epoch := int32(-1)
				if req.Version >= 6 {
					epoch = rp.LeaderEpoch
				}
				entries[storage.OffsetKey{Group: req.Group, Topic: rt.Topic, Partition: rp.Partition}] = storage.Committed{Offset: rp.Offset, LeaderEpoch: epoch, Metadata: meta}
			}
		}
	}
	if len(entries) > 0 && b.cl != nil {
		// Replicated first: what the coordinator's store holds, the
		// offsets partition's in-sync set holds too.
		if code := b.commitReplicated(req.Group, entries); code != 0 {
			for i := range codes {
				for j := range codes[i] {
					if codes[i][j] == 0 {
						codes[i][j] = code
					}
				}
			}
			clear(entries)
		}
	}
	if len(entries) > 0 {
		if err := b.offsets.Commit(entries, b.cfg.Log.SyncEveryWrite); err != nil {
			b.log.Error("broker: offset commit failed", "group", req.Group, "err", err)
			for i := range codes {
				for j := range codes[i] {
					if codes[i][j] == 0 {
						codes[i][j] = kerr.UnknownServerError.Code
					}
				}
			}
		}
	}
	for i, rt := range req.Topics {
		st := kmsg.NewOffsetCommitResponseTopic()
		st.Topic = rt.Topic
		for j, rp := range rt.Partitions {
			sp := kmsg.NewOffsetCommitResponseTopicPartition()
			sp.Partition, sp.ErrorCode = rp.Partition, codes[i][j]
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
