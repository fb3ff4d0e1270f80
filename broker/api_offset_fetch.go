// OffsetFetch (key 9), v0–v7 (flexible from v6).
//
// Answers committed offsets, -1 where none is committed. From v2 a null
// topic list asks for every committed offset of the group. v7's
// RequireStable is accepted: without transactions every offset is stable.
// v8+ (several groups per request) is not served.
package broker

import (
	"mecha/broker/acl"
	"sort"

	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleOffsetFetch(c caller, req *kmsg.OffsetFetchRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if req.Group == "" {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	}
	code := kerr.GroupAuthorizationFailed.Code
	if b.groupAllowed(c, acl.OpDescribe, req.Group) {
		code = b.coordinates(req.Group)
	}
	if code != 0 {
		// Before v2 there is no top-level code: each partition has it.
		resp.ErrorCode = code
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetFetchResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewOffsetFetchResponseTopicPartition()
				sp.Partition, sp.Offset, sp.LeaderEpoch, sp.Metadata, sp.ErrorCode = p, -1, -1, strPtr(""), code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp
	}
	fill := func(sp *kmsg.OffsetFetchResponseTopicPartition, c storage.Committed, ok bool) {
		// Metadata is "" where nothing is committed, never null, as Kafka
		// answers: sarama rejects a null here.
		sp.Offset, sp.LeaderEpoch, sp.Metadata = -1, -1, strPtr("")
		if ok {
			sp.Offset, sp.LeaderEpoch, sp.Metadata = c.Offset, c.LeaderEpoch, strPtr(c.Metadata)
		}
	}
	if req.Topics == nil && req.Version >= 2 {
		byTopic := map[string][]kmsg.OffsetFetchResponseTopicPartition{}
		b.offsets.Each(func(k storage.OffsetKey, c storage.Committed) {
			if k.Group != req.Group {
				return
			}
			sp := kmsg.NewOffsetFetchResponseTopicPartition()
			sp.Partition = k.Partition
			fill(&sp, c, true)
			byTopic[k.Topic] = append(byTopic[k.Topic], sp)
		})
		names := make([]string, 0, len(byTopic))
		for n := range byTopic {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if !b.topicAllowed(c, acl.OpDescribe, n) {
				continue // a listing shows only the topics c may see
			}
			st := kmsg.NewOffsetFetchResponseTopic()
			st.Topic, st.Partitions = n, byTopic[n]
			sort.Slice(st.Partitions, func(i, j int) bool { return st.Partitions[i].Partition < st.Partitions[j].Partition })
			resp.Topics = append(resp.Topics, st)
		}
		return resp
	}
	for _, rt := range req.Topics {
		st := kmsg.NewOffsetFetchResponseTopic()
		st.Topic = rt.Topic
		denied := !b.topicAllowed(c, acl.OpDescribe, rt.Topic)
		for _, p := range rt.Partitions {
			sp := kmsg.NewOffsetFetchResponseTopicPartition()
			sp.Partition = p
			if denied {
				fill(&sp, storage.Committed{}, false)
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			c, ok := b.offsets.Get(storage.OffsetKey{Group: req.Group, Topic: rt.Topic, Partition: p})
			fill(&sp, c, ok)
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
