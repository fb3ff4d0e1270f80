// CreateTopics (key 19), v0–v6 (flexible from v5).
//
// Creates topics with a partition count (-1 takes the broker default, v4+)
// and the configs retention.ms, retention.bytes, segment.bytes,
// max.message.bytes and cleanup.policy=delete; any other config, or a bad
// value, fails that topic with INVALID_CONFIG naming it. The replication
// factor must be -1 or 1 on a single node (INVALID_REPLICATION_FACTOR);
// manual replica assignments are refused (INVALID_REQUEST). ValidateOnly
// (v1+) checks without creating. From v5 the answer carries the partition
// count, replication factor and the topic's configs.
package broker

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleCreateTopics(req *kmsg.CreateTopicsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewCreateTopicsResponseTopic()
		st.Topic, st.NumPartitions, st.ReplicationFactor = rt.Topic, -1, -1
		fail := func(e *kerr.Error, msg string) {
			st.ErrorCode = e.Code
			st.ErrorMessage = &msg
		}
		parts := rt.NumPartitions
		if parts == -1 {
			parts = b.cfg.DefaultPartitions
		}
		configs := map[string]string{}
		for _, c := range rt.Configs {
			if c.Value != nil {
				configs[c.Name] = *c.Value
			}
		}
		switch {
		case len(rt.ReplicaAssignment) > 0:
			fail(kerr.InvalidRequest, "manual replica assignment is not supported")
		case rt.ReplicationFactor != -1 && rt.ReplicationFactor != 1:
			fail(kerr.InvalidReplicationFactor, "replication factor must be 1 (or -1): this broker is a single node")
		default:
			_, err := b.topics.create(rt.Topic, parts, configs, req.ValidateOnly)
			switch {
			case err == nil:
				st.NumPartitions, st.ReplicationFactor = parts, 1
				st.Configs = createdConfigs(b, configs)
			case errors.Is(err, errTopicExists):
				fail(kerr.TopicAlreadyExists, err.Error())
			case errors.Is(err, errInvalidTopic):
				fail(kerr.InvalidTopicException, err.Error())
			case errors.Is(err, errInvalidParts):
				fail(kerr.InvalidPartitions, err.Error())
			case errors.Is(err, errInvalidConfig):
				fail(kerr.InvalidConfig, err.Error())
			default:
				b.log.Error("broker: create topic", "topic", rt.Topic, "err", err)
				fail(kerr.UnknownServerError, err.Error())
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

func createdConfigs(b *Broker, overrides map[string]string) []kmsg.CreateTopicsResponseTopicConfig {
	var out []kmsg.CreateTopicsResponseTopicConfig
	for _, e := range topicConfigEntries(b.cfg.Log, overrides) {
		c := kmsg.NewCreateTopicsResponseTopicConfig()
		v := e.value
		c.Name, c.Value, c.Source = e.name, &v, int8(e.source)
		out = append(out, c)
	}
	return out
}
