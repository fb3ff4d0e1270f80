package broker

// The admin APIs in cluster mode go to the control plane: the map says
// which brokers exist and where each partition's replicas are, so a
// reassignment, a preferred leader election and a topic deletion are
// commands it applies, and every broker then follows (cluster.go).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"mecha/internal/clustermap"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// clusterPropose proposes c within 10 s.
func (b *Broker) clusterPropose(c clustermap.Command) error {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	return b.cl.cfg.Propose(ctx, c)
}

// proposalCode is the Kafka code of a proposal's outcome.
func proposalCode(err error) (int16, *string) {
	if err == nil {
		return 0, nil
	}
	msg := err.Error()
	switch {
	case errors.Is(err, clustermap.ErrUnknownTopic), errors.Is(err, clustermap.ErrUnknownPartition):
		return kerr.UnknownTopicOrPartition.Code, &msg
	case errors.Is(err, clustermap.ErrBadAssignment):
		return kerr.InvalidReplicaAssignment.Code, &msg
	case clustermap.IsRefusal(err):
		return kerr.InvalidRequest.Code, &msg
	}
	return kerr.RequestTimedOut.Code, &msg
}

// liveBrokers is every live data member of m: the cluster's brokers.
func liveBrokers(m *clustermap.Map) []string {
	var out []string
	for _, mb := range m.Members {
		if mb.HasRole(clustermap.RoleData) && mb.State == clustermap.StateAlive {
			out = append(out, mb.ID)
		}
	}
	return out
}

// clusterDescribe fills DescribeCluster's brokers from the map, as
// Metadata lists them.
func (b *Broker) clusterDescribe(resp *kmsg.DescribeClusterResponse) {
	m := b.cl.cfg.Maps.Map()
	resp.ControllerID = b.cl.node
	resp.Brokers = resp.Brokers[:0]
	b.eachBroker(m, func(node int32, host string, port int32) {
		br := kmsg.NewDescribeClusterResponseBroker()
		br.NodeID, br.Host, br.Port = node, host, port
		resp.Brokers = append(resp.Brokers, br)
	})
}

// clusterDeleteTopic has the control plane delete a topic; every broker
// then drops its replicas (reconcile).
func (b *Broker) clusterDeleteTopic(name string) (int16, *string) {
	if b.cl.cfg.Maps.Map().Topic(name) == nil {
		return kerr.UnknownTopicOrPartition.Code, nil
	}
	return proposalCode(b.clusterPropose(clustermap.DeleteTopic{Name: name}))
}

// clusterElect runs a preferred leader election through the control
// plane, then answers each partition from the map: 0 when its preferred
// replica leads now, ELECTION_NOT_NEEDED when it led already, and
// PREFERRED_LEADER_NOT_AVAILABLE when it cannot (not in sync, or dead).
func (b *Broker) clusterElect(req *kmsg.ElectLeadersRequest, resp *kmsg.ElectLeadersResponse) {
	m := b.cl.cfg.Maps.Map()
	asked := req.Topics
	if asked == nil {
		for _, tp := range m.Topics {
			rt := kmsg.NewElectLeadersRequestTopic()
			rt.Topic = tp.Name
			for i := range tp.Partitions {
				rt.Partitions = append(rt.Partitions, int32(i))
			}
			asked = append(asked, rt)
		}
	}
	var refs []clustermap.Ref
	already := map[clustermap.Ref]bool{}
	for _, rt := range asked {
		tp := m.Topic(rt.Topic)
		for _, p := range rt.Partitions {
			if tp == nil || p < 0 || int(p) >= len(tp.Partitions) {
				continue
			}
			r := clustermap.PartitionRef(rt.Topic, int(p))
			g := tp.Partitions[p]
			if len(g.Replicas) > 0 && g.Leader == g.Replicas[0] {
				already[r] = true
				continue
			}
			refs = append(refs, r)
		}
	}
	var err error
	if len(refs) > 0 && req.ElectionType == 0 {
		err = b.clusterPropose(clustermap.ElectLeaders{Refs: refs})
		// The transfer shows in a later map: wait a little for it.
		ctx, cancel := context.WithTimeout(b.ctx, time.Duration(max(req.TimeoutMillis, 100))*time.Millisecond)
		for err == nil && !electedAll(b.cl.cfg.Maps.Map(), refs) {
			if b.cl.cfg.Maps.WaitNewer(ctx, b.cl.cfg.Maps.Map().Version) != nil {
				break
			}
		}
		cancel()
	}
	m = b.cl.cfg.Maps.Map()
	for _, rt := range asked {
		st := kmsg.NewElectLeadersResponseTopic()
		st.Topic = rt.Topic
		tp := m.Topic(rt.Topic)
		for _, p := range rt.Partitions {
			sp := kmsg.NewElectLeadersResponseTopicPartition()
			sp.Partition = p
			r := clustermap.PartitionRef(rt.Topic, int(p))
			switch {
			case tp == nil || p < 0 || int(p) >= len(tp.Partitions):
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case req.ElectionType != 0:
				sp.ErrorCode, sp.ErrorMessage = kerr.InvalidRequest.Code, strPtr("unclean leader election is off in this cluster; only preferred elections (type 0) run")
			case already[r]:
				sp.ErrorCode = kerr.ElectionNotNeeded.Code
			case err != nil:
				sp.ErrorCode, sp.ErrorMessage = proposalCode(err)
			case tp.Partitions[p].Leader != tp.Partitions[p].Replicas[0]:
				sp.ErrorCode = kerr.PreferredLeaderNotAvailable.Code
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
}

func electedAll(m *clustermap.Map, refs []clustermap.Ref) bool {
	for _, r := range refs {
		tp := m.Topic(r.Topic)
		if tp == nil || r.Index >= len(tp.Partitions) {
			continue
		}
		g := tp.Partitions[r.Index]
		if g.Leader != g.Replicas[0] && slices.Contains(g.ISR, g.Replicas[0]) {
			return false
		}
	}
	return true
}

// clusterReassign asks the control plane to move a partition's replicas
// to the brokers named (node ids), or with nil to cancel; the planner
// moves one replica at a time. fromLatest starts the new replicas at the
// leader's high watermark (smooth expansion).
func (b *Broker) clusterReassign(topic string, partition int32, nodes []int32, fromLatest bool) (int16, *string) {
	m := b.cl.cfg.Maps.Map()
	cmd := clustermap.ReassignPartition{Topic: topic, Partition: int(partition), FromLatest: fromLatest && nodes != nil}
	if nodes != nil {
		live := map[int32]string{}
		for _, id := range liveBrokers(m) {
			live[NodeID(id)] = id
		}
		for _, n := range nodes {
			id, ok := live[n]
			if !ok {
				msg := fmt.Sprintf("%s/%d: broker %d is not a live broker of the cluster", topic, partition, n)
				return kerr.InvalidReplicaAssignment.Code, &msg
			}
			cmd.Replicas = append(cmd.Replicas, id)
		}
	} else if tp := m.Topic(topic); tp != nil && int(partition) < len(tp.Partitions) && tp.Partitions[partition].Target == nil {
		return kerr.NoReassignmentInProgress.Code, nil
	}
	return proposalCode(b.clusterPropose(cmd))
}

// clusterListReassignments lists the partitions moving towards an
// operator's target, with the replicas being added and removed.
func (b *Broker) clusterListReassignments(req *kmsg.ListPartitionReassignmentsRequest, resp *kmsg.ListPartitionReassignmentsResponse) {
	m := b.cl.cfg.Maps.Map()
	wanted := func(topic string, p int32) bool {
		if req.Topics == nil {
			return true
		}
		for _, rt := range req.Topics {
			if rt.Topic == topic && slices.Contains(rt.Partitions, p) {
				return true
			}
		}
		return false
	}
	for _, tp := range m.Topics {
		st := kmsg.NewListPartitionReassignmentsResponseTopic()
		st.Topic = tp.Name
		for i, g := range tp.Partitions {
			if g.Target == nil || !wanted(tp.Name, int32(i)) {
				continue
			}
			sp := kmsg.NewListPartitionReassignmentsResponseTopicPartition()
			sp.Partition = int32(i)
			for _, r := range g.Replicas {
				sp.Replicas = append(sp.Replicas, NodeID(r))
				if !slices.Contains(g.Target, r) {
					sp.RemovingReplicas = append(sp.RemovingReplicas, NodeID(r))
				}
			}
			for _, r := range g.Target {
				if !slices.Contains(g.Replicas, r) {
					sp.AddingReplicas = append(sp.AddingReplicas, NodeID(r))
				}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		if len(st.Partitions) > 0 {
			resp.Topics = append(resp.Topics, st)
		}
	}
}

// Reassign asks the broker cluster's control plane to move a partition's
// replicas to the brokers named (node ids; nil cancels), as
// AlterPartitionReassignments does; fromLatest starts the new replicas at
// the leader's high watermark (smooth expansion). The error names the
// Kafka error and why.
func (b *Broker) Reassign(topic string, partition int32, nodes []int32, fromLatest bool) error {
	if b.cl == nil {
		return errors.New("broker: reassignments need the broker cluster (--broker-cluster)")
	}
	if tp := b.cl.cfg.Maps.Map().Topic(topic); tp == nil || partition < 0 || int(partition) >= len(tp.Partitions) {
		return fmt.Errorf("%w: %s/%d", kerr.UnknownTopicOrPartition, topic, partition)
	}
	code, msg := b.clusterReassign(topic, partition, nodes, fromLatest)
	if code == 0 {
		return nil
	}
	if msg != nil {
		return fmt.Errorf("%w: %s", kerr.ErrorForCode(code), *msg)
	}
	return kerr.ErrorForCode(code)
}
