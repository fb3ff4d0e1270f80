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
	ID    string   `json:"id"`
	Addr  string   `json:"addr"`
	DC    string   `json:"dc,omitempty"`
	Roles []string `json:"roles,omitempty"`
	// At is the proposer's clock, Unix nanoseconds.
	At int64 `json:"at"`
}

// MemberAlive says the failure detector sees the member again. For a
// live member it changes nothing (heartbeats do not churn the version).
type MemberAlive struct {
	ID string `json:"id"`
	At int64  `json:"at"`
}

// MemberDead says the failure detector lost the member at At. Its
// leaderships fail over to in-sync replicas and it leaves every in-sync
// set (except as the last one of a leaderless group, which keeps the
// only candidate that holds every acknowledged write).
type MemberDead struct {
	ID string `json:"id"`
	At int64  `json:"at"`
}

// MemberDrain starts (or, with Cancel, stops) draining a member: the
// planner moves its leaderships away, then its replicas.
type MemberDrain struct {
	ID     string `json:"id"`
	Cancel bool   `json:"cancel,omitempty"`
}

// MemberLeave says the member left for good. Its leaderships fail over,
// its replicas are rebuilt at once, and it is forgotten once it holds
// none. A graceful leave drains first so that nothing needs rebuilding.
type MemberLeave struct {
	ID string `json:"id"`
	At int64  `json:"at"`
}

// Tick carries the proposer's clock: members dead for longer than
// Settings.RebuildAfter become gone, and the planner rebuilds their
// replicas. The state machine has no clock of its own.
type Tick struct {
	Now int64 `json:"now"`
}

// AssignSlots gives every slot its first replicas (the planner computes
// them with Spread once data members exist). The first of each list
// leads at epoch 1; all are in sync, as the slots are empty.
type AssignSlots struct {
	Replicas [][]string `json:"replicas"`
}

// ISRChange is a leader's report of its in-sync set. Epoch is the leader
// epoch it was computed under: a deposed leader's report is refused.
type ISRChange struct {
	Ref   Ref      `json:"ref"`
	ISR   []string `json:"isr"`
	Epoch uint64   `json:"epoch"`
}

// MoveStart begins moving the replica on From to To (From "" adds a
// replica). To joins the replicas out of sync and copies from the leader.
type MoveStart struct {
	Ref  Ref    `json:"ref"`
	From string `json:"from,omitempty"`
	To   string `json:"to"`
}

// MoveProgress advances a move to Phase. From and To name the move, so a
// report about an earlier move of the same group is refused. Switching
// needs To in sync.
type MoveProgress struct {
	Ref   Ref       `json:"ref"`
	From  string    `json:"from,omitempty"`
	To    string    `json:"to"`
	Phase MovePhase `json:"phase"`
}

// MoveDone ends a move in the switching phase: From is dropped.
type MoveDone struct {
	Ref  Ref    `json:"ref"`
	From string `json:"from,omitempty"`
	To   string `json:"to"`
}

// MoveAbort cancels a move: To is dropped and From keeps (or gets back)
// its place and, if To had taken it, the leadership.
type MoveAbort struct {
	Ref  Ref    `json:"ref"`
	From string `json:"from,omitempty"`
	To   string `json:"to"`
}

// LeaderTransfer moves the leadership to To, an in-sync replica, and
// makes To the preferred leader (first replica) so that a later
// ElectLeaders keeps it. Epoch is the epoch the plan was made under.
type LeaderTransfer struct {
	Ref   Ref    `json:"ref"`
	To    string `json:"to"`
	Epoch uint64 `json:"epoch"`
}

// ElectLeaders runs a preferred leader election on Refs (all groups when
// empty): where the first replica is alive, in sync, not draining and not
// leading, it becomes leader.
type ElectLeaders struct {
	Refs []Ref `json:"refs,omitempty"`
}

// RemoveReplica drops a replica that is not the leader (a replication
// factor lowered, a drained or departed member with nowhere to move to).
type RemoveReplica struct {
	Ref    Ref    `json:"ref"`
	Member string `json:"member"`
}

// CreateTopic creates a topic. Without Assignment, the replicas are
// spread over the data members, least loaded first.
type CreateTopic struct {
	Name       string `json:"name"`
	Partitions int    `json:"partitions"`
	// Config.ReplicationFactor 0 means the cluster's default (capped by
	// the data members); Config.MinInSyncReplicas 0 means 1.
	Config TopicConfig `json:"config"`
	// Assignment, if set, is the replica list of each partition; its
	// length is the partition count and every list has the same length.
	Assignment [][]string `json:"assignment,omitempty"`
}

// DeleteTopic deletes a topic.
type DeleteTopic struct {
	Name string `json:"name"`
}

// ReassignPartition asks that a partition's replicas become Replicas (in
// that order). The planner moves towards it one replica at a time; an
// empty list cancels a pending reassignment.
type ReassignPartition struct {
	Topic     string   `json:"topic"`
	Partition int      `json:"partition"`
	Replicas  []string `json:"replicas,omitempty"`
}

// SetTopicConfig changes a topic's settings; zero fields and a nil
// pointer keep the current value.
type SetTopicConfig struct {
	Name                  string `json:"name"`
	ReplicationFactor     int    `json:"replication_factor,omitempty"`
	MinInSyncReplicas     int    `json:"min_insync_replicas,omitempty"`
	UncleanLeaderElection *bool  `json:"unclean_leader_election,omitempty"`
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
