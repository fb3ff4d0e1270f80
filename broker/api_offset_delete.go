// OffsetDelete (key 47), v0.
//
// Deletes a group's committed offsets for the partitions named. An
// unknown group gets GROUP_ID_NOT_FOUND. While the group has members, a
// partition of a topic they subscribe to (their consumer protocol
// metadata says which; any other protocol counts as subscribed to
// everything) gets GROUP_SUBSCRIBED_TO_TOPIC and keeps its offset, as in
// Kafka; an unknown topic gets UNKNOWN_TOPIC_OR_PARTITION.
package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"mecha/broker/acl"

	"mecha/broker/storage"
)

func (b *Broker) handleOffsetDelete(c caller, req *kmsg.OffsetDeleteRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
	if !b.groupAllowed(c, acl.OpDelete, req.Group) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp
	}
	if code := b.coordinates(req.Group); code != 0 {
		resp.ErrorCode = code
		return resp
	}
	subscribed, ok := b.groups.subscriptions(req.Group)
	if !ok {
		resp.ErrorCode = kerr.GroupIDNotFound.Code
		return resp
	}
	del := map[storage.OffsetKey]storage.Committed{}
	for _, rt := range req.Topics {
		t := kmsg.NewOffsetDeleteResponseTopic()
		t.Topic = rt.Topic
		known := b.topics.get(rt.Topic) != nil
		denied := !b.topicAllowed(c, acl.OpRead, rt.Topic)
		for _, rp := range rt.Partitions {
			p := kmsg.NewOffsetDeleteResponseTopicPartition()
			p.Partition = rp.Partition
			switch {
			case denied:
				p.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case !known:
				p.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case subscribed(rt.Topic):
				p.ErrorCode = kerr.GroupSubscribedToTopic.Code
			default:
				del[storage.OffsetKey{Group: req.Group, Topic: rt.Topic, Partition: rp.Partition}] = storage.Committed{Offset: -1}
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	if len(del) > 0 && b.cl != nil {
		if code := b.commitReplicated(req.Group, del); code != 0 {
			resp.ErrorCode, resp.Topics = code, nil
			return resp
		}
	}
	if len(del) > 0 {
		if err := b.offsets.Commit(del, false); err != nil {
			b.log.Error("broker: deleting committed offsets", "group", req.Group, "err", err)
			resp.ErrorCode = kerr.UnknownServerError.Code
			resp.Topics = nil
		}
	}
	return resp
}
