package clustermap

import (
	"strconv"
	"time"
)

// Kind identifies a command type on the wire (the second byte of its
// encoding). Values are never reused: a raft log written by one version
// is read by the next.
type Kind uint8

// The command kinds.
const (
	KindBootstrap Kind = iota + 1
	KindMemberJoin
	KindMemberAlive
	KindMemberDead
	KindMemberDrain
	KindMemberLeave
	KindTick
	KindAssignSlots
	KindISRChange
	KindMoveStart
	KindMoveProgress
	KindMoveDone
	KindMoveAbort
	KindLeaderTransfer
	KindElectLeaders
	KindRemoveReplica
	KindCreateTopic
	KindDeleteTopic
	KindReassignPartition
	KindSetTopicConfig
	KindAddPartitions
	kindEnd
)

var kindNames = [...]string{
	KindBootstrap:         "bootstrap",
	KindMemberJoin:        "member_join",
	KindMemberAlive:       "member_alive",
	KindMemberDead:        "member_dead",
	KindMemberDrain:       "member_drain",
	KindMemberLeave:       "member_leave",
	KindTick:              "tick",
	KindAssignSlots:       "assign_slots",
	KindISRChange:         "isr_change",
	KindMoveStart:         "move_start",
	KindMoveProgress:      "move_progress",
	KindMoveDone:          "move_done",
	KindMoveAbort:         "move_abort",
	KindLeaderTransfer:    "leader_transfer",
	KindElectLeaders:      "elect_leaders",
	KindRemoveReplica:     "remove_replica",
	KindCreateTopic:       "create_topic",
	KindDeleteTopic:       "delete_topic",
	KindReassignPartition: "reassign_partition",
	KindSetTopicConfig:    "set_topic_config",
	KindAddPartitions:     "add_partitions",
}

// String returns the kind's name.
func (k Kind) String() string {
	if k > 0 && k < kindEnd {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Command is an input of the state machine. Raft orders commands; Apply
// turns each into the next map. The concrete types are the structs below,
// passed by value.
type Command interface {
	// Kind returns the command's wire kind.
	Kind() Kind
}

// Bootstrap starts the cluster: the first command of every log. It
// creates the NumSlots slots, unassigned until data members join.
type Bootstrap struct {
	// ClusterID names the cluster for life.
	ClusterID string `json:"cluster_id"`
	// Replicas is the slots' replication factor and topics' default;
	// 0 means DefaultReplicas.
	Replicas int `json:"replicas,omitempty"`
	// RebuildAfter is how long a member may be dead before its replicas
	// are rebuilt; 0 means DefaultRebuildAfter.
	RebuildAfter time.Duration `json:"rebuild_after,omitempty"`
}

// MemberJoin adds a member, or brings back one that is dead, gone or has
// left (with its new address and roles). A member that restarts while
// draining stays draining.
type MemberJoin struct {
	// ID names the member for life (1 to 255 bytes).
	ID string `json:"id"`
	// Addr is its internal address.
	Addr string `json:"addr"`
	// DC is its data center.
	DC string `json:"dc,omitempty"`
	// Roles are RoleData, RoleServer or others; order and repeats do not
	// matter.
	Roles []string `json:"roles,omitempty"`
	// At is the proposer's clock, Unix nanoseconds.
	At int64 `json:"at"`
}

// MemberAlive says the failure detector sees the member again. For a
// live member it changes nothing (heartbeats do not churn the version).
type MemberAlive struct {
	// ID is the member.
	ID string `json:"id"`
	// At is when it was seen again, Unix nanoseconds.
	At int64 `json:"at"`
}

// MemberDead says the failure detector lost the member at At. Its
// leaderships fail over to in-sync replicas and it leaves every in-sync
// set (except as the last one of a leaderless group, which keeps the
// only candidate that holds every acknowledged write).
type MemberDead struct {
	// ID is the member.
	ID string `json:"id"`
	// At is when it was lost, Unix nanoseconds: the rebuild delay counts
	// from here.
	At int64 `json:"at"`
}

// MemberDrain starts (or, with Cancel, stops) draining a member: the
// planner moves its leaderships away, then its replicas.
type MemberDrain struct {
	// ID is the member.
	ID string `json:"id"`
	// Cancel stops a drain; what has moved stays moved.
	Cancel bool `json:"cancel,omitempty"`
	// Leaders moves only its leaderships: the member is restarting
	// (a graceful stop) and keeps its replicas, which count towards the
	// replication factor while it is away (Member.Restarting).
	Leaders bool `json:"leaders,omitempty"`
}

// MemberLeave says the member left for good. Its leaderships fail over,
// its replicas are rebuilt at once, and it is forgotten once it holds
// none. A graceful leave drains first so that nothing needs rebuilding.
type MemberLeave struct {
	// ID is the member.
	ID string `json:"id"`
	// At is when it left, Unix nanoseconds.
	At int64 `json:"at"`
}

// Tick carries the proposer's clock: members dead for longer than
// Settings.RebuildAfter become gone, and the planner rebuilds their
// replicas. The state machine has no clock of its own.
type Tick struct {
	// Now is the proposer's clock, Unix nanoseconds.
	Now int64 `json:"now"`
}

// AssignSlots gives every slot its first replicas (the planner computes
// them with Spread once data members exist). The first of each list
// leads at epoch 1; all are in sync, as the slots are empty.
type AssignSlots struct {
	// Replicas holds NumSlots replica lists, indexed by slot.
	Replicas [][]string `json:"replicas"`
}

// ISRChange is a leader's report of its in-sync set. Epoch is the leader
// epoch it was computed under: a deposed leader's report is refused.
type ISRChange struct {
	// Ref is the slot or partition.
	Ref Ref `json:"ref"`
	// ISR is the whole new in-sync set, the leader included.
	ISR []string `json:"isr"`
	// Epoch is the reporting leader's epoch.
	Epoch uint64 `json:"epoch"`
	// From, when set, is the in-sync set the leader proposes to change:
	// the change applies only while the map still holds it (compare and
	// set, as Kafka's AlterPartition checks the partition epoch). A
	// proposal still travelling when another change lands can then never
	// apply late, so the leader may count its members until the map's set
	// moves.
	From []string `json:"from,omitempty"`
}

// MoveStart begins moving the replica on From to To (From "" adds a
// replica). To joins the replicas out of sync and copies from the leader.
type MoveStart struct {
	// Ref is the slot or partition.
	Ref Ref `json:"ref"`
	// From is the replica to replace, or "" to add one.
	From string `json:"from,omitempty"`
	// To is the member taking the new replica.
	To string `json:"to"`
	// FromLatest starts a partition's new replica at the leader's high
	// watermark instead of copying its history (smooth expansion).
	FromLatest bool `json:"from_latest,omitempty"`
}

// MoveProgress advances a move to Phase. From and To name the move, so a
// report about an earlier move of the same group is refused. Switching
// needs To in sync.
type MoveProgress struct {
	// Ref, From and To name the move.
	Ref  Ref    `json:"ref"`
	From string `json:"from,omitempty"`
	To   string `json:"to"`
	// Phase is the phase reached.
	Phase MovePhase `json:"phase"`
}

// MoveDone ends a move in the switching phase: From is dropped.
type MoveDone struct {
	// Ref, From and To name the move.
	Ref  Ref    `json:"ref"`
	From string `json:"from,omitempty"`
	To   string `json:"to"`
}

// MoveAbort cancels a move: To is dropped and From keeps (or gets back)
// its place and, if To had taken it, the leadership.
type MoveAbort struct {
	// Ref, From and To name the move.
	Ref  Ref    `json:"ref"`
	From string `json:"from,omitempty"`
	To   string `json:"to"`
}

// LeaderTransfer moves the leadership to To, an in-sync replica, and
// makes To the preferred leader (first replica) so that a later
// ElectLeaders keeps it. Epoch is the epoch the plan was made under.
type LeaderTransfer struct {
	// Ref is the slot or partition.
	Ref Ref `json:"ref"`
	// To is the new leader.
	To string `json:"to"`
	// Epoch is the current epoch when the transfer was planned.
	Epoch uint64 `json:"epoch"`
}

// ElectLeaders runs a preferred leader election on Refs (all groups when
// empty): where the first replica is alive, in sync, not draining and not
// leading, it becomes leader.
type ElectLeaders struct {
	// Refs are the groups to elect in; empty means all.
	Refs []Ref `json:"refs,omitempty"`
}

// RemoveReplica drops a replica that is not the leader (a replication
// factor lowered, a drained or departed member with nowhere to move to).
type RemoveReplica struct {
	// Ref is the slot or partition.
	Ref Ref `json:"ref"`
	// Member is the replica to drop.
	Member string `json:"member"`
}

// CreateTopic creates a topic. Without Assignment, the replicas are
// spread over the data members, least loaded first.
type CreateTopic struct {
	// Name is the topic name (Kafka's rules: letters, digits, '.', '_',
	// '-', at most 249 bytes).
	Name string `json:"name"`
	// Partitions is the partition count (at most 10,000); it may be 0
	// when Assignment is set.
	Partitions int `json:"partitions"`
	// Config.ReplicationFactor 0 means the cluster's default (capped by
	// the data members); Config.MinInSyncReplicas 0 means 1.
	Config TopicConfig `json:"config"`
	// Assignment, if set, is the replica list of each partition; its
	// length is the partition count and every list has the same length.
	Assignment [][]string `json:"assignment,omitempty"`
	// Overrides are the topic's Kafka configs (retention.ms, ...), which
	// the brokers apply to their replicas; the map keeps them as given.
	Overrides map[string]string `json:"overrides,omitempty"`
}

// AddPartitions grows a topic to Count partitions. Without Assignment
// the new partitions' replicas are spread over the data members, least
// loaded first.
type AddPartitions struct {
	// Name is the topic.
	Name string `json:"name"`
	// Count is the new partition count, above the current one.
	Count int `json:"count"`
	// Assignment, if set, is the replica list of each new partition, as
	// long as the topic's replication factor.
	Assignment [][]string `json:"assignment,omitempty"`
}

// DeleteTopic deletes a topic.
type DeleteTopic struct {
	// Name is the topic.
	Name string `json:"name"`
}

// ReassignPartition asks that a partition's replicas become Replicas (in
// that order). The planner moves towards it one replica at a time; an
// empty list cancels a pending reassignment.
type ReassignPartition struct {
	// Topic and Partition name the partition.
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	// Replicas is the wanted replica list, as long as the replication
	// factor; empty cancels.
	Replicas []string `json:"replicas,omitempty"`
	// FromLatest starts each new replica at the leader's high watermark
	// instead of copying the partition's history (Kuaishou's smooth
	// expansion, KAFKA-8328): it joins the in-sync set, and the move
	// completes, once the leader's retention has dropped what it never
	// copied.
	FromLatest bool `json:"from_latest,omitempty"`
}

// SetTopicConfig changes a topic's settings; zero fields and a nil
// pointer keep the current value.
type SetTopicConfig struct {
	// Name is the topic.
	Name string `json:"name"`
	// ReplicationFactor, if not 0, is the new factor: the planner adds
	// or drops replicas to match.
	ReplicationFactor int `json:"replication_factor,omitempty"`
	// MinInSyncReplicas, if not 0, is the new min.insync.replicas.
	MinInSyncReplicas int `json:"min_insync_replicas,omitempty"`
	// UncleanLeaderElection, if set, turns unclean election on or off;
	// on, it elects at once in the topic's leaderless partitions.
	UncleanLeaderElection *bool `json:"unclean_leader_election,omitempty"`
	// ReplaceOverrides, if set, makes Overrides the topic's Kafka
	// configs, replacing the ones it had.
	ReplaceOverrides bool              `json:"replace_overrides,omitempty"`
	Overrides        map[string]string `json:"overrides,omitempty"`
}

// Kind implements Command.
func (Bootstrap) Kind() Kind { return KindBootstrap }

// Kind implements Command.
func (MemberJoin) Kind() Kind { return KindMemberJoin }

// Kind implements Command.
func (MemberAlive) Kind() Kind { return KindMemberAlive }

// Kind implements Command.
func (MemberDead) Kind() Kind { return KindMemberDead }

// Kind implements Command.
func (MemberDrain) Kind() Kind { return KindMemberDrain }

// Kind implements Command.
func (MemberLeave) Kind() Kind { return KindMemberLeave }

// Kind implements Command.
func (Tick) Kind() Kind { return KindTick }

// Kind implements Command.
func (AssignSlots) Kind() Kind { return KindAssignSlots }

// Kind implements Command.
func (ISRChange) Kind() Kind { return KindISRChange }

// Kind implements Command.
func (MoveStart) Kind() Kind { return KindMoveStart }

// Kind implements Command.
func (MoveProgress) Kind() Kind { return KindMoveProgress }

// Kind implements Command.
func (MoveDone) Kind() Kind { return KindMoveDone }

// Kind implements Command.
func (MoveAbort) Kind() Kind { return KindMoveAbort }

// Kind implements Command.
func (LeaderTransfer) Kind() Kind { return KindLeaderTransfer }

// Kind implements Command.
func (ElectLeaders) Kind() Kind { return KindElectLeaders }

// Kind implements Command.
func (RemoveReplica) Kind() Kind { return KindRemoveReplica }

// Kind implements Command.
func (CreateTopic) Kind() Kind { return KindCreateTopic }

// Kind implements Command.
func (DeleteTopic) Kind() Kind { return KindDeleteTopic }

// Kind implements Command.
func (ReassignPartition) Kind() Kind { return KindReassignPartition }

// Kind implements Command.
func (SetTopicConfig) Kind() Kind { return KindSetTopicConfig }

// Kind implements Command.
func (AddPartitions) Kind() Kind { return KindAddPartitions }
