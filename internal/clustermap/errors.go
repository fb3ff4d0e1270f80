package clustermap

import (
	"errors"
	"strings"
)

// The sentinel errors of Apply, Decode and Check. Every error returned
// wraps one of them with %w and says which member, slot, partition or
// field is wrong, so that a caller can branch with errors.Is and an
// operator can read the message.
var (
	// ErrNotBootstrapped: a command other than Bootstrap reached a map
	// that has no cluster yet.
	ErrNotBootstrapped = errors.New("clustermap: not bootstrapped")
	// ErrBootstrapped: a second Bootstrap.
	ErrBootstrapped = errors.New("clustermap: already bootstrapped")
	// ErrBadCommand: a command that cannot be decoded, or whose fields
	// are out of range (an empty id, a negative index, an unknown phase).
	ErrBadCommand = errors.New("clustermap: bad command")
	// ErrUnknownMember: the command names a member the map does not hold.
	ErrUnknownMember = errors.New("clustermap: unknown member")
	// ErrMemberLeft: the member has left; it must join again.
	ErrMemberLeft = errors.New("clustermap: member has left")
	// ErrMemberNotAlive: the command needs a live member (a new replica,
	// a new leader, an in-sync replica).
	ErrMemberNotAlive = errors.New("clustermap: member is not alive")
	// ErrMemberDraining: a draining member may not take replicas or
	// leaderships.
	ErrMemberDraining = errors.New("clustermap: member is draining")
	// ErrNotDataMember: only members with the "data" role hold replicas.
	ErrNotDataMember = errors.New("clustermap: member has no data role")
	// ErrUnknownSlot: a slot index outside [0, NumSlots).
	ErrUnknownSlot = errors.New("clustermap: unknown slot")
	// ErrUnknownTopic: the topic does not exist.
	ErrUnknownTopic = errors.New("clustermap: unknown topic")
	// ErrUnknownPartition: the topic has no such partition.
	ErrUnknownPartition = errors.New("clustermap: unknown partition")
	// ErrTopicExists: CreateTopic of a name in use.
	ErrTopicExists = errors.New("clustermap: topic exists")
	// ErrUnassigned: the slots have no replicas yet (AssignSlots comes first).
	ErrUnassigned = errors.New("clustermap: slot not assigned")
	// ErrSlotsAssigned: AssignSlots when the slots already have replicas.
	ErrSlotsAssigned = errors.New("clustermap: slots already assigned")
	// ErrStaleEpoch: the command was based on a leader epoch that is no
	// longer the current one (a deposed leader, a plan made on an old map).
	ErrStaleEpoch = errors.New("clustermap: stale leader epoch")
	// ErrBadISR: an in-sync set that is not a subset of the replicas, lacks
	// the leader, repeats a member or holds a member that is not alive.
	ErrBadISR = errors.New("clustermap: bad in-sync set")
	// ErrStaleISR: an in-sync set change based on a set the map no
	// longer holds.
	ErrStaleISR = errors.New("clustermap: in-sync set changed since the proposal")
	// ErrBadAssignment: a replica list that repeats a member, has the wrong
	// length, or names a member that cannot hold a replica.
	ErrBadAssignment = errors.New("clustermap: bad assignment")
	// ErrNotEnoughMembers: a replication factor above the number of data
	// members.
	ErrNotEnoughMembers = errors.New("clustermap: not enough data members")
	// ErrNoLeader: the slot or partition is leaderless.
	ErrNoLeader = errors.New("clustermap: no leader")
	// ErrIsLeader: the replica to remove is the leader; move the
	// leadership first.
	ErrIsLeader = errors.New("clustermap: member is the leader")
	// ErrLastInSync: the change would drop the last in-sync replica, the
	// only copy known to hold every acknowledged write.
	ErrLastInSync = errors.New("clustermap: last in-sync replica")
	// ErrNotInSync: the member is not in the in-sync set.
	ErrNotInSync = errors.New("clustermap: member not in sync")
	// ErrMoveInProgress: the slot or partition is moving; one move at a time.
	ErrMoveInProgress = errors.New("clustermap: move in progress")
	// ErrNoSuchMove: no move, or a different one, is in progress.
	ErrNoSuchMove = errors.New("clustermap: no such move")
	// ErrBadPhase: a move phase that goes backwards or skips the sync.
	ErrBadPhase = errors.New("clustermap: bad move phase")
	// ErrBadConfig: a setting out of range.
	ErrBadConfig = errors.New("clustermap: bad config")
	// ErrCorrupt: a map that breaks an invariant (Check, DecodeMap).
	ErrCorrupt = errors.New("clustermap: invariant broken")
)

// refusals are the errors Apply refuses a command with.
var refusals = []error{
	ErrNotBootstrapped, ErrBootstrapped, ErrBadCommand,
	ErrUnknownMember, ErrMemberLeft, ErrMemberNotAlive,
	ErrMemberDraining, ErrNotDataMember, ErrUnknownSlot,
	ErrUnknownTopic, ErrUnknownPartition, ErrTopicExists,
	ErrUnassigned, ErrSlotsAssigned, ErrStaleEpoch,
	ErrBadISR, ErrStaleISR, ErrBadAssignment, ErrNotEnoughMembers,
	ErrNoLeader, ErrIsLeader, ErrLastInSync,
	ErrNotInSync, ErrMoveInProgress, ErrNoSuchMove,
	ErrBadPhase, ErrBadConfig, ErrCorrupt,
}

// IsRefusal reports whether err is (or wraps) one of Apply's refusals: the
// command was applied to the map and refused, and will never change it.
func IsRefusal(err error) bool {
	for _, s := range refusals {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// RefusalIn is the refusal whose text msg holds (a refusal that crossed
// the network as text), or nil.
func RefusalIn(msg string) error {
	for _, s := range refusals {
		if strings.Contains(msg, s.Error()) {
			return s
		}
	}
	return nil
}
