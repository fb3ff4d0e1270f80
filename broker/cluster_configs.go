package broker

// Topic configs and partition counts in the broker cluster: the control
// plane's map holds them, so every broker of the cluster applies the same
// ones to its replicas (reconcile) and answers DescribeConfigs alike.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"mecha/internal/clustermap"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The replication configs, which the map keeps as typed settings rather
// than as overrides.
const (
	configMinInSync = "min.insync.replicas"
	configUnclean   = "unclean.leader.election.enable"
)

// clusterSettings are a topic's configs as the map takes them.
type clusterSettings struct {
	overrides map[string]string // the storage configs (topicConfigNames)
	minInSync int               // 0: the default for the factor
	unclean   bool
}

// splitClusterConfigs checks a topic's Kafka configs and splits them into
// the map's settings; a bad name or value gets an error wrapping
// errInvalidConfig that names it.
func (b *Broker) splitClusterConfigs(configs map[string]string) (clusterSettings, error) {
	var s clusterSettings
	rest := maps.Clone(configs)
	if v, ok := rest[configMinInSync]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return s, fmt.Errorf("%w: %s=%q is not a positive integer", errInvalidConfig, configMinInSync, v)
		}
		s.minInSync = n
		delete(rest, configMinInSync)
	}
	if v, ok := rest[configUnclean]; ok {
		u, err := strconv.ParseBool(v)
		if err != nil {
			return s, fmt.Errorf("%w: %s=%q is not true or false", errInvalidConfig, configUnclean, v)
		}
		s.unclean = u
		delete(rest, configUnclean)
	}
	if _, err := topicConfig(b.topics.base, rest); err != nil {
		return s, err
	}
	if len(rest) > 0 {
		s.overrides = rest
	}
	return s, nil
}

// defaultMinInSync is min.insync.replicas when a topic does not set it:
// 2 from a replication factor of 3, else 1.
func defaultMinInSync(rf int) int {
	if rf >= 3 {
		return 2
	}
	return 1
}

// clusterConfigs are a map topic's Kafka configs: its overrides and the
// replication settings that differ from their defaults.
func clusterConfigs(tp *clustermap.Topic) map[string]string {
	out := maps.Clone(tp.Overrides)
	if out == nil {
		out = map[string]string{}
	}
	if tp.Config.MinInSyncReplicas != defaultMinInSync(tp.Config.ReplicationFactor) {
		out[configMinInSync] = strconv.Itoa(tp.Config.MinInSyncReplicas)
	}
	if tp.Config.UncleanLeaderElection {
		out[configUnclean] = "true"
	}
	return out
}

// clusterConfigEntries lists a map topic's configs for DescribeConfigs:
// the storage configs, then the replication ones.
func (b *Broker) clusterConfigEntries(tp *clustermap.Topic) []configEntry {
	out := topicConfigEntries(b.cfg.Log, tp.Overrides)
	all := clusterConfigs(tp)
	for _, e := range []configEntry{
		{configMinInSync, strconv.Itoa(tp.Config.MinInSyncReplicas), kmsg.ConfigSourceDefaultConfig},
		{configUnclean, strconv.FormatBool(tp.Config.UncleanLeaderElection), kmsg.ConfigSourceDefaultConfig},
	} {
		if _, ok := all[e.name]; ok {
			e.source = kmsg.ConfigSourceDynamicTopicConfig
		}
		out = append(out, e)
	}
	return out
}

// clusterAlterConfigs alters a topic's configs through the control plane:
// change edits the topic's current configs, and the result replaces them
// on every broker.
func (b *Broker) clusterAlterConfigs(name string, validateOnly bool, change func(map[string]string) *alterOutcome) alterOutcome {
	fail := func(code int16, format string, args ...any) alterOutcome {
		m := fmt.Sprintf(format, args...)
		return alterOutcome{code, &m}
	}
	tp := b.cl.cfg.Maps.Map().Topic(name)
	if tp == nil {
		return fail(kerr.UnknownTopicOrPartition.Code, "%v: %s", errUnknownTopic, name)
	}
	next := clusterConfigs(tp)
	if o := change(next); o != nil {
		return *o
	}
	s, err := b.splitClusterConfigs(next)
	if err != nil {
		return fail(kerr.InvalidConfig.Code, "%v", err)
	}
	minISR := s.minInSync
	if minISR == 0 {
		minISR = defaultMinInSync(tp.Config.ReplicationFactor)
	}
	if minISR > tp.Config.ReplicationFactor {
		return fail(kerr.InvalidConfig.Code, "%s=%d is above the replication factor, %d", configMinInSync, minISR, tp.Config.ReplicationFactor)
	}
	if validateOnly {
		return alterOutcome{}
	}
	cmd := clustermap.SetTopicConfig{Name: name, MinInSyncReplicas: minISR, UncleanLeaderElection: &s.unclean, ReplaceOverrides: true, Overrides: s.overrides}
	code, msg := b.proposeAndWait(cmd, func(m *clustermap.Map) bool {
		t := m.Topic(name)
		return t == nil || t.ID != tp.ID || maps.Equal(t.Overrides, s.overrides) && t.Config.MinInSyncReplicas == minISR && t.Config.UncleanLeaderElection == s.unclean
	})
	return alterOutcome{code, msg}
}

// clusterCreatePartitions grows a topic through the control plane.
func (b *Broker) clusterCreatePartitions(rt kmsg.CreatePartitionsRequestTopic, validateOnly bool) (int16, *string) {
	m := b.cl.cfg.Maps.Map()
	tp := m.Topic(rt.Topic)
	if tp == nil {
		return kerr.UnknownTopicOrPartition.Code, strPtr(fmt.Sprintf("%v: %s", errUnknownTopic, rt.Topic))
	}
	if int(rt.Count) <= len(tp.Partitions) {
		return kerr.InvalidPartitions.Code, strPtr(fmt.Sprintf("topic %s has %d partitions; the new count must be more, not %d", rt.Topic, len(tp.Partitions), rt.Count))
	}
	cmd := clustermap.AddPartitions{Name: rt.Topic, Count: int(rt.Count)}
	if len(rt.Assignment) > 0 {
		nodes := make([][]int32, len(rt.Assignment))
		for i, a := range rt.Assignment {
			nodes[i] = a.Replicas
		}
		ids, msg := membersOfNodes(m, nodes)
		if msg != "" {
			return kerr.InvalidReplicaAssignment.Code, &msg
		}
		cmd.Assignment = ids
	}
	if validateOnly {
		return 0, nil
	}
	return b.proposeAndWait(cmd, func(m *clustermap.Map) bool {
		t := m.Topic(rt.Topic)
		return t == nil || t.ID != tp.ID || len(t.Partitions) >= int(rt.Count)
	})
}

// membersOfNodes maps a manual assignment's broker ids to member ids.
func membersOfNodes(m *clustermap.Map, nodes [][]int32) ([][]string, string) {
	byNode := map[int32]string{}
	for _, mb := range m.Members {
		byNode[NodeID(mb.ID)] = mb.ID
	}
	out := make([][]string, len(nodes))
	for i, ns := range nodes {
		for _, n := range ns {
			id, ok := byNode[n]
			if !ok {
				return nil, fmt.Sprintf("partition %d: broker %d is not in the cluster", i, n)
			}
			out[i] = append(out[i], id)
		}
	}
	return out, ""
}

// proposeAndWait proposes cmd and waits until this broker's map shows
// done; a refusal or a timeout becomes the Kafka error to answer with.
func (b *Broker) proposeAndWait(cmd clustermap.Command, done func(*clustermap.Map) bool) (int16, *string) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	err := b.cl.cfg.Propose(ctx, cmd)
	switch {
	case errors.Is(err, clustermap.ErrUnknownTopic):
		return kerr.UnknownTopicOrPartition.Code, strPtr(err.Error())
	case errors.Is(err, clustermap.ErrBadConfig):
		return kerr.InvalidConfig.Code, strPtr(err.Error())
	case errors.Is(err, clustermap.ErrBadAssignment), errors.Is(err, clustermap.ErrUnknownMember), errors.Is(err, clustermap.ErrMemberNotAlive):
		return kerr.InvalidReplicaAssignment.Code, strPtr(err.Error())
	case errors.Is(err, clustermap.ErrNotEnoughMembers):
		return kerr.InvalidReplicationFactor.Code, strPtr(err.Error())
	case clustermap.IsRefusal(err):
		return kerr.InvalidRequest.Code, strPtr(err.Error())
	case err != nil:
		return kerr.RequestTimedOut.Code, strPtr(err.Error())
	}
	for {
		m := b.cl.cfg.Maps.Map()
		if done(m) {
			return 0, nil
		}
		if err := b.cl.cfg.Maps.WaitNewer(ctx, m.Version); err != nil {
			return kerr.RequestTimedOut.Code, strPtr("the control plane did not publish the change in time")
		}
	}
}
