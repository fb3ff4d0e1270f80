// ElectLeaders (key 43), v0–v2 (flexible from v2),
// AlterPartitionReassignments (key 45), v0, and ListPartitionReassignments
// (key 46), v0, as a cluster of this one broker answers them: every
// partition is led by its one replica, which is its preferred leader.
//
//   - ElectLeaders answers ELECTION_NOT_NEEDED for each partition that
//     exists (all of them when Topics is null), UNKNOWN_TOPIC_OR_PARTITION
//     for others.
//   - AlterPartitionReassignments takes a target of this broker alone (the
//     assignment already, so it completes at once), answers
//     INVALID_REPLICA_ASSIGNMENT naming the partition for any other, and
//     NO_REASSIGNMENT_IN_PROGRESS for a cancellation (null replicas).
//   - ListPartitionReassignments lists none: none is ever in progress.
//
// The broker cluster replaces these with the control plane's moves. There
// a partition of AlterPartitionReassignments may carry the tagged field
// FromLatestTag (value 1): its new replicas start from the leader's high
// watermark instead of copying the history (smooth expansion; `mecha
// broker reassign --from-latest` sets it through the admin port).
package broker

import (
	"fmt"
	"mecha/broker/acl"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleElectLeaders(c caller, req *kmsg.ElectLeadersRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ElectLeadersResponse)
	denied := !b.clusterAllowed(c, acl.OpAlter)
	if denied && req.Version >= 1 {
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
	}
	if b.cl != nil && !denied {
		b.clusterElect(req, resp)
		return resp
	}
	asked := req.Topics
	if asked == nil {
		for _, t := range b.topics.all() {
			rt := kmsg.NewElectLeadersRequestTopic()
			rt.Topic = t.name
			for p := range t.numPartitions() {
				rt.Partitions = append(rt.Partitions, p)
			}
			asked = append(asked, rt)
		}
	}
	for _, rt := range asked {
		t := b.topics.get(rt.Topic)
		st := kmsg.NewElectLeadersResponseTopic()
		st.Topic = rt.Topic
		for _, p := range rt.Partitions {
			sp := kmsg.NewElectLeadersResponseTopicPartition()
			sp.Partition = p
			if denied {
				sp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
			} else if t == nil || t.partition(p) == nil {
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			} else {
				sp.ErrorCode = kerr.ElectionNotNeeded.Code
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

func (b *Broker) handleAlterPartitionAssignments(c caller, req *kmsg.AlterPartitionAssignmentsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AlterPartitionAssignmentsResponse)
	if !b.clusterAllowed(c, acl.OpAlter) {
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return resp
	}
	if b.cl != nil {
		for _, rt := range req.Topics {
			st := kmsg.NewAlterPartitionAssignmentsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewAlterPartitionAssignmentsResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode, sp.ErrorMessage = b.clusterReassign(rt.Topic, rp.Partition, rp.Replicas, fromLatestTagged(&rp.UnknownTags))
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp
	}
	for _, rt := range req.Topics {
		t := b.topics.get(rt.Topic)
		st := kmsg.NewAlterPartitionAssignmentsResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewAlterPartitionAssignmentsResponseTopicPartition()
			sp.Partition = rp.Partition
			var msg string
			switch {
			case t == nil || t.partition(rp.Partition) == nil:
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case rp.Replicas == nil:
				sp.ErrorCode = kerr.NoReassignmentInProgress.Code
			case !slices.Equal(rp.Replicas, []int32{b.cfg.NodeID}):
				sp.ErrorCode = kerr.InvalidReplicaAssignment.Code
				msg = fmt.Sprintf("%s/%d to brokers %v: this cluster has one broker, %d", rt.Topic, rp.Partition, rp.Replicas, b.cfg.NodeID)
			}
			if msg != "" {
				sp.ErrorMessage = &msg
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

func (b *Broker) handleListPartitionReassignments(c caller, req *kmsg.ListPartitionReassignmentsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListPartitionReassignmentsResponse)
	if !b.clusterAllowed(c, acl.OpDescribe) {
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
	} else if b.cl != nil {
		b.clusterListReassignments(req, resp)
	}
	return resp
}

// FromLatestTag is the tagged field of an AlterPartitionReassignments
// partition that asks for smooth expansion (value: one byte, 1). Tags
// Kafka does not know are ignored by Kafka's brokers.
const FromLatestTag = 0x6d65

func fromLatestTagged(t *kmsg.Tags) bool {
	on := false
	t.Each(func(key uint32, v []byte) {
		if key == FromLatestTag && len(v) == 1 && v[0] == 1 {
			on = true
		}
	})
	return on
}
