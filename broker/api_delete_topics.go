// DeleteTopics (key 20), v0–v5 (flexible from v4).
//
// Deletes topics by name: the topic disappears at once, its files are
// removed in the background, and every group's committed offsets for it
// are forgotten. v6+ (topic ids) is not served.
package broker

import (
	"errors"
	"mecha/broker/acl"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleDeleteTopics(c caller, req *kmsg.DeleteTopicsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	for _, name := range req.TopicNames {
		st := kmsg.NewDeleteTopicsResponseTopic()
		n := name
		st.Topic = &n
		if !b.topicAllowed(c, acl.OpDelete, name) {
			st.ErrorCode = kerr.TopicAuthorizationFailed.Code
		} else if b.cl != nil {
			st.ErrorCode, st.ErrorMessage = b.clusterDeleteTopic(name)
		} else if err := b.topics.remove(name); err != nil {
			msg := err.Error()
			st.ErrorMessage = &msg
			if errors.Is(err, errUnknownTopic) {
				st.ErrorCode = kerr.UnknownTopicOrPartition.Code
			} else {
				b.log.Error("broker: delete topic", "topic", name, "err", err)
				st.ErrorCode = kerr.UnknownServerError.Code
			}
		} else if err := b.offsets.DeleteTopic(name); err != nil {
			b.log.Error("broker: forget offsets of deleted topic", "topic", name, "err", err)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
