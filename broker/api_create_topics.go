// CreateTopics (key 19), v0–v6 (flexible from v5).
//
// Creates topics with a partition count (-1 takes the broker default, v4+)
// and the configs retention.ms, retention.bytes, segment.bytes,
// max.message.bytes and cleanup.policy=delete; any other config, or a bad
// value, fails that topic with INVALID_CONFIG naming it. The replication
// factor must be -1 or 1 on a single node (INVALID_REPLICATION_FACTOR).
// A manual replica assignment (with partition count and replication
// factor -1, as Kafka wants, else INVALID_REQUEST) gives partitions 0 to
// n-1 each in turn, every one on this broker alone; another broker id, a
// gap, a repeat or lists of different lengths get
// INVALID_REPLICA_ASSIGNMENT naming the partition. ValidateOnly
// (v1+) checks without creating. From v5 the answer carries the partition
// count, replication factor and the topic's configs.
package broker

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleCreateTopics(c caller, req *kmsg.CreateTopicsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewCreateTopicsResponseTopic()
		st.Topic, st.NumPartitions, st.ReplicationFactor = rt.Topic, -1, -1
		fail := func(e *kerr.Error, msg string) {
			st.ErrorCode = e.Code
			st.ErrorMessage = &msg
		}
		if !b.mayCreateTopic(c, rt.Topic) {
			fail(kerr.TopicAuthorizationFailed, "CREATE on the cluster or the topic is not allowed")
			resp.Topics = append(resp.Topics, st)
			continue
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
		if b.cl != nil {
			b.clusterCreateTopicReq(rt, configs, req.ValidateOnly, &st, fail)
			resp.Topics = append(resp.Topics, st)
			continue
		}
		if len(rt.ReplicaAssignment) > 0 {
			if rt.NumPartitions != -1 || rt.ReplicationFactor != -1 {
				fail(kerr.InvalidRequest, "with a replica assignment, the partition count and replication factor must be -1")
				resp.Topics = append(resp.Topics, st)
				continue
			}
			if msg := b.checkAssignment(rt.ReplicaAssignment); msg != "" {
				fail(kerr.InvalidReplicaAssignment, msg)
				resp.Topics = append(resp.Topics, st)
				continue
			}
			parts = int32(len(rt.ReplicaAssignment))
		}
		switch {
		case rt.ReplicationFactor != -1 && rt.ReplicationFactor != 1:
			fail(kerr.InvalidReplicationFactor, "replication factor must be 1 (or -1): this broker is a single node")
		default:
			_, err := b.topics.create(rt.Topic, parts, configs, req.ValidateOnly)
			switch {
			case err == nil:
				st.NumPartitions, st.ReplicationFactor = parts, 1
				st.Configs = createdConfigs(topicConfigEntries(b.cfg.Log, configs))
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

// checkAssignment says what is wrong with a manual replica assignment
// on this single broker, or "".
func (b *Broker) checkAssignment(as []kmsg.CreateTopicsRequestTopicReplicaAssignment) string {
	seen := make([]bool, len(as))
	for _, a := range as {
		switch {
		case a.Partition < 0 || int(a.Partition) >= len(as):
			return fmt.Sprintf("partition %d: partitions must be 0 to %d, each once", a.Partition, len(as)-1)
		case seen[a.Partition]:
			return fmt.Sprintf("partition %d is assigned twice", a.Partition)
		case len(a.Replicas) != 1 || a.Replicas[0] != b.cfg.NodeID:
			return fmt.Sprintf("partition %d on brokers %v: this cluster has one broker, %d", a.Partition, a.Replicas, b.cfg.NodeID)
		}
		seen[a.Partition] = true
	}
	return ""
}

func createdConfigs(entries []configEntry) []kmsg.CreateTopicsResponseTopicConfig {
	var out []kmsg.CreateTopicsResponseTopicConfig
	for _, e := range entries {
		c := kmsg.NewCreateTopicsResponseTopicConfig()
		v := e.value
		c.Name, c.Value, c.Source = e.name, &v, int8(e.source)
		out = append(out, c)
	}
	return out
}

// clusterCreateTopicReq answers one topic of a CreateTopics in cluster
// mode: the control plane creates it, with its configs
// (min.insync.replicas and unclean.leader.election.enable besides the
// single broker's).
func (b *Broker) clusterCreateTopicReq(rt kmsg.CreateTopicsRequestTopic, configs map[string]string, validateOnly bool, st *kmsg.CreateTopicsResponseTopic, fail func(*kerr.Error, string)) {
	settings, err := b.splitClusterConfigs(configs)
	if err != nil {
		fail(kerr.InvalidConfig, err.Error())
		return
	}
	var assignment [][]int32
	if len(rt.ReplicaAssignment) > 0 {
		if rt.NumPartitions != -1 || rt.ReplicationFactor != -1 {
			fail(kerr.InvalidRequest, "with a replica assignment, the partition count and replication factor must be -1")
			return
		}
		assignment = make([][]int32, len(rt.ReplicaAssignment))
		for _, a := range rt.ReplicaAssignment {
			if a.Partition < 0 || int(a.Partition) >= len(assignment) || assignment[a.Partition] != nil {
				fail(kerr.InvalidReplicaAssignment, fmt.Sprintf("partition %d: partitions must be 0 to %d, each once", a.Partition, len(assignment)-1))
				return
			}
			assignment[a.Partition] = a.Replicas
		}
	}
	if validateOnly {
		if err := validTopicName(rt.Topic); err != nil {
			fail(kerr.InvalidTopicException, err.Error())
		}
		return
	}
	tp, code, msg := b.clusterCreateTopic(rt.Topic, rt.NumPartitions, rt.ReplicationFactor, assignment, settings)
	if code != 0 {
		fail(kerr.ErrorForCode(code).(*kerr.Error), msg)
		return
	}
	st.NumPartitions, st.ReplicationFactor = int32(len(tp.Partitions)), int16(tp.Config.ReplicationFactor)
	st.Configs = createdConfigs(b.clusterConfigEntries(tp))
}
