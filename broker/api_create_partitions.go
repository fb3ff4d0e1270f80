// CreatePartitions (key 37), v0–v3 (flexible from v2).
//
// Grows a topic to Count partitions; new partitions start empty. A count
// at or below the current one gets INVALID_PARTITIONS; manual assignments
// are refused (INVALID_REQUEST). ValidateOnly checks without creating.
// In the broker cluster the control plane adds the partitions, spread
// over the brokers or as a manual assignment gives them.
package broker

import (
	"errors"
	"mecha/broker/acl"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleCreatePartitions(c caller, req *kmsg.CreatePartitionsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewCreatePartitionsResponseTopic()
		st.Topic = rt.Topic
		var err error
		if !b.topicAllowed(c, acl.OpAlter, rt.Topic) {
			st.ErrorCode = kerr.TopicAuthorizationFailed.Code
		} else if b.cl != nil {
			st.ErrorCode, st.ErrorMessage = b.clusterCreatePartitions(rt, req.ValidateOnly)
		} else if len(rt.Assignment) > 0 {
			st.ErrorCode = kerr.InvalidRequest.Code
			msg := "manual replica assignment is not supported"
			st.ErrorMessage = &msg
		} else if err = b.topics.addPartitions(rt.Topic, rt.Count, req.ValidateOnly); err != nil {
			msg := err.Error()
			st.ErrorMessage = &msg
			switch {
			case errors.Is(err, errUnknownTopic):
				st.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case errors.Is(err, errInvalidParts):
				st.ErrorCode = kerr.InvalidPartitions.Code
			default:
				b.log.Error("broker: create partitions", "topic", rt.Topic, "err", err)
				st.ErrorCode = kerr.UnknownServerError.Code
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
