package clustermap

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// NumSlots is the number of Crux slots. It is fixed for the life of a
// cluster: a key's slot is part of where its data lives, so changing it
// would move every key.
const NumSlots = 1024

// Role names a member may carry. Roles are free strings; these are the
// ones the control plane reads.
const (
	// RoleData marks a member that holds replicas (Crux slots and broker
	// partitions). Only data members are assigned replicas.
	RoleData = "data"
	// RoleServer marks a member that votes in the control plane's raft
	// group. The map records it; raft's own configuration changes act on it.
	RoleServer = "server"
)

// Defaults of Bootstrap and CreateTopic.
const (
	// DefaultReplicas is the replication factor of slots and of topics
	// created without one.
	DefaultReplicas = 3
	// DefaultRebuildAfter is how long a member may be dead before its
	// replicas are rebuilt elsewhere: long enough to ride out a restart
	// or a deploy, short enough that a lost disk does not leave slots
	// under-replicated for long.
	DefaultRebuildAfter = 10 * time.Minute
)

// Limits on command fields, so that a hostile or corrupt command cannot
// make every runtime allocate without bound.
const (
	maxIDLen         = 255
	maxReplicas      = 16
	maxPartitions    = 10000
	maxTopicNameLen  = 249 // Kafka's limit
	maxAddrLen       = 1024
	maxRoles         = 16
	maxElectRefs     = NumSlots + maxPartitions
	defaultMinInSync = 1
)

// MemberState is where a member is in its life. Draining is a separate
// flag (Member.Draining) because a draining member can die and return
// and still be draining.
type MemberState uint8

// The member states.
const (
	// StateAlive: the failure detector sees the member.
	StateAlive MemberState = iota + 1
	// StateDead: the failure detector lost it (Member.Since says when).
	// Its leaderships have failed over and it is out of every in-sync
	// set, but its replicas stay assigned: it may come back with its data.
	StateDead
	// StateGone: dead for longer than Settings.RebuildAfter (decided by a
	// Tick). Its replicas are rebuilt on other members. It may still come
	// back, with whatever replicas it still holds by then.
	StateGone
	// StateLeft: the member left for good (MemberLeave). Its replicas are
	// rebuilt at once, and it is forgotten when it holds none.
	StateLeft
)

var stateNames = [...]string{StateAlive: "alive", StateDead: "dead", StateGone: "gone", StateLeft: "left"}

// String returns the state's name.
func (s MemberState) String() string {
	if s >= StateAlive && s <= StateLeft {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText writes the state's name, so that encoded maps are readable.
func (s MemberState) MarshalText() ([]byte, error) {
	if s < StateAlive || s > StateLeft {
		return nil, fmt.Errorf("member state %d: %w", s, ErrBadCommand)
	}
	return []byte(stateNames[s]), nil
}

// UnmarshalText reads a state's name.
func (s *MemberState) UnmarshalText(b []byte) error {
	for i := StateAlive; i <= StateLeft; i++ {
		if string(b) == stateNames[i] {
			*s = i
			return nil
		}
	}
	return fmt.Errorf("member state %q: %w", b, ErrBadCommand)
}

// Member is one runtime known to the control plane.
type Member struct {
	// ID names the member for life; it is how replicas refer to it.
	ID string `json:"id"`
	// Addr is the internal address other runtimes reach it on.
	Addr string `json:"addr"`
	// DC is its data center. One DC for now: placement ignores it.
	DC string `json:"dc,omitempty"`
	// Roles are sorted and distinct (RoleData, RoleServer, ...).
	Roles []string `json:"roles,omitempty"`
	// State is alive, dead, gone or left.
	State MemberState `json:"state"`
	// Draining asks that its leaderships, then its replicas, move away.
	Draining bool `json:"draining,omitempty"`
	// Restarting asks that its leaderships move away while it keeps its
	// replicas: it stops for a restart and comes back.
	Restarting bool `json:"restarting,omitempty"`
	// Since is when State last changed (for a dead member: dead since),
	// in Unix nanoseconds from the proposer's clock.
	Since int64 `json:"since"`
	// JoinedAt is when it (last) joined, Unix nanoseconds.
	JoinedAt int64 `json:"joined_at"`
}

// HasRole reports whether the member carries role.
func (mb *Member) HasRole(role string) bool {
	_, ok := slices.BinarySearch(mb.Roles, role)
	return ok
}

// Alive reports whether the failure detector sees the member.
func (mb *Member) Alive() bool { return mb.State == StateAlive }

// Eligible reports whether the member may take new replicas and
// leaderships: alive, a data member, not draining.
func (mb *Member) Eligible() bool {
	return mb.State == StateAlive && !mb.Draining && !mb.Restarting && mb.HasRole(RoleData)
}

func (mb *Member) clone() *Member {
	c := *mb
	c.Roles = slices.Clone(mb.Roles)
	return &c
}

// MovePhase is how far a move has come.
type MovePhase uint8

// The move phases, in order. A phase never goes back.
const (
	// PhaseCopying: the new replica is fetching a snapshot from the leader.
	PhaseCopying MovePhase = iota + 1
	// PhaseTailing: the snapshot is in; the new replica tails the log
	// until the leader counts it in sync.
	PhaseTailing
	// PhaseSwitching: the new replica is in sync and has taken the old
	// one's place in the replica order, and its leadership if it had one
	// (with a new epoch). MoveDone then drops the old replica.
	PhaseSwitching
)

var phaseNames = [...]string{PhaseCopying: "copying", PhaseTailing: "tailing", PhaseSwitching: "switching"}

// String returns the phase's name.
func (p MovePhase) String() string {
	if p >= PhaseCopying && p <= PhaseSwitching {
		return phaseNames[p]
	}
	return "phase(" + strconv.Itoa(int(p)) + ")"
}

// MarshalText writes the phase's name.
func (p MovePhase) MarshalText() ([]byte, error) {
	if p < PhaseCopying || p > PhaseSwitching {
		return nil, fmt.Errorf("move phase %d: %w", p, ErrBadCommand)
	}
	return []byte(phaseNames[p]), nil
}

// UnmarshalText reads a phase's name.
func (p *MovePhase) UnmarshalText(b []byte) error {
	for i := PhaseCopying; i <= PhaseSwitching; i++ {
		if string(b) == phaseNames[i] {
			*p = i
			return nil
		}
	}
	return fmt.Errorf("move phase %q: %w", b, ErrBadCommand)
}

// Move is a replica moving from one member to another. From is empty
// when a replica is only added (a slot or partition growing to its
// replication factor).
type Move struct {
	// From is the replica being replaced ("" when adding one).
	From string `json:"from,omitempty"`
	// To is the new replica, in the replica list from the start.
	To string `json:"to"`
	// Phase is how far the move has come.
	Phase MovePhase `json:"phase"`
	// FromLatest: the new replica starts at the leader's high watermark
	// (MoveStart.FromLatest).
	FromLatest bool `json:"from_latest,omitempty"`
}

// Group is one replicated unit: a Crux slot or a broker partition. Both
// stores replicate the same way (a leader, followers fetching its log, an
// in-sync set, epochs), so the control plane treats them alike.
type Group struct {
	// Replicas are the members holding a copy, in preference order: the
	// first is the preferred leader. Empty only for a slot before
	// AssignSlots.
	Replicas []string `json:"replicas"`
	// Leader is the member serving it, or "" when leaderless.
	Leader string `json:"leader,omitempty"`
	// Epoch goes up by one at every change of leader (becoming
	// leaderless included): a replica refuses a leader with an older
	// epoch, which fences a deposed leader that has not noticed.
	Epoch uint64 `json:"epoch"`
	// ISR is the in-sync set, in replica order: the replicas known to
	// hold every write the leader acknowledged. Only they may lead.
	ISR []string `json:"isr"`
	// Move is the move in progress, if any (one at a time).
	Move *Move `json:"move,omitempty"`
	// Target is an operator's requested replica list (ReassignPartition)
	// that the planner moves towards; nil when none.
	Target []string `json:"target,omitempty"`
	// TargetFromLatest: the moves towards Target start their new replicas
	// from the latest offset (ReassignPartition.FromLatest).
	TargetFromLatest bool `json:"target_from_latest,omitempty"`
}

func (g *Group) clone() *Group {
	c := *g
	c.Replicas = slices.Clone(g.Replicas)
	c.ISR = slices.Clone(g.ISR)
	c.Target = slices.Clone(g.Target)
	if g.Move != nil {
		mv := *g.Move
		c.Move = &mv
	}
	return &c
}

// InSync reports whether id is in the in-sync set.
func (g *Group) InSync(id string) bool { return slices.Contains(g.ISR, id) }

// HasReplica reports whether id holds a replica.
func (g *Group) HasReplica(id string) bool { return slices.Contains(g.Replicas, id) }

// TopicConfig is a topic's replication settings.
type TopicConfig struct {
	// ReplicationFactor is the number of replicas of each partition.
	ReplicationFactor int `json:"replication_factor"`
	// MinInSyncReplicas is Kafka's min.insync.replicas: the broker
	// refuses acks=all produces when the in-sync set is smaller.
	MinInSyncReplicas int `json:"min_insync_replicas"`
	// UncleanLeaderElection lets an out-of-sync replica lead when no
	// in-sync one is alive, trading acknowledged writes for availability.
	// Off by default, as in Kafka.
	UncleanLeaderElection bool `json:"unclean_leader_election,omitempty"`
}

// Topic is a broker topic.
type Topic struct {
	// Name is the Kafka topic name.
	Name string `json:"name"`
	// ID is the map version that created it: a topic deleted and created
	// again under the same name gets a new ID, so clients can tell them
	// apart and epochs need not carry over.
	ID uint64 `json:"id"`
	// Config is its replication settings.
	Config TopicConfig `json:"config"`
	// Partitions are indexed by partition number.
	Partitions []*Group `json:"partitions"`
	// Overrides are its Kafka configs (retention.ms, ...), applied by the
	// brokers; never changed in place.
	Overrides map[string]string `json:"overrides,omitempty"`
}

func (tp *Topic) clone() *Topic {
	c := *tp
	c.Partitions = slices.Clone(tp.Partitions)
	return &c
}

// Settings are the cluster-wide settings fixed at Bootstrap.
type Settings struct {
	// Replicas is the replication factor of slots (capped by the number
	// of data members) and the default of topics.
	Replicas int `json:"replicas"`
	// RebuildAfter is how long a member may be dead before its replicas
	// are rebuilt elsewhere.
	RebuildAfter time.Duration `json:"rebuild_after"`
}

// Map is the cluster map: everything the control plane decides. A Map is
// immutable once Apply returned it: Apply shares the parts a command did
// not touch between the old map and the new one, so a caller must never
// write to a Map, its members, groups or topics. Read it from any number
// of goroutines.
type Map struct {
	// ClusterID is fixed at Bootstrap; "" before.
	ClusterID string `json:"cluster_id"`
	// Version goes up by one with every applied command that changes
	// something, so runtimes can tell a newer map from an older one.
	Version uint64 `json:"version"`
	// Settings are fixed at Bootstrap.
	Settings Settings `json:"settings"`
	// Members are sorted by ID.
	Members []*Member `json:"members"`
	// slots holds the NumSlots slots once bootstrapped (read them with
	// Slot), in chunks: a command touching one slot copies one chunk's
	// pointers, not the table's (a map goes through thousands of
	// commands while slots move).
	slots []*slotChunk
	// Topics are sorted by name.
	Topics []*Topic `json:"topics"`
}

// slotChunkSize slots make a chunk: 32 chunks of 32 pointers, so a
// command touching a slot copies 64 pointers instead of 1,024.
const slotChunkSize = 32

type slotChunk [slotChunkSize]*Group

// Slot returns Crux slot i, or nil when i is out of range or the map is
// not bootstrapped.
func (m *Map) Slot(i int) *Group {
	if i < 0 || i >= NumSlots || len(m.slots) != NumSlots/slotChunkSize {
		return nil
	}
	return m.slots[i/slotChunkSize][i%slotChunkSize]
}

// mapJSON is the encoding of a Map, with the slots as one list.
type mapJSON struct {
	ClusterID string    `json:"cluster_id"`
	Version   uint64    `json:"version"`
	Settings  Settings  `json:"settings"`
	Members   []*Member `json:"members"`
	Slots     []*Group  `json:"slots"`
	Topics    []*Topic  `json:"topics"`
}

// MarshalJSON writes the map with its slots as one list.
func (m *Map) MarshalJSON() ([]byte, error) {
	v := mapJSON{ClusterID: m.ClusterID, Version: m.Version, Settings: m.Settings, Members: m.Members, Topics: m.Topics}
	for _, c := range m.slots {
		v.Slots = append(v.Slots, c[:]...)
	}
	return json.Marshal(v)
}

// UnmarshalJSON reads what MarshalJSON wrote, strictly (no unknown
// fields); a slot list must be empty or hold NumSlots slots.
func (m *Map) UnmarshalJSON(b []byte) error {
	var v mapJSON
	if err := strictJSON(b, &v); err != nil {
		return err
	}
	if len(v.Slots) != 0 && len(v.Slots) != NumSlots {
		return fmt.Errorf("%d slots: %w", len(v.Slots), ErrCorrupt)
	}
	*m = Map{ClusterID: v.ClusterID, Version: v.Version, Settings: v.Settings, Members: v.Members, Topics: v.Topics}
	if len(v.Slots) == NumSlots {
		m.slots = make([]*slotChunk, NumSlots/slotChunkSize)
		for i := range m.slots {
			m.slots[i] = (*slotChunk)(v.Slots[i*slotChunkSize : (i+1)*slotChunkSize])
		}
	}
	return nil
}

// New returns the empty map every replica starts from; Bootstrap is its
// first command.
func New() *Map { return &Map{} }

// Bootstrapped reports whether Bootstrap was applied.
func (m *Map) Bootstrapped() bool { return m.ClusterID != "" }

// Member returns the member id, or nil.
func (m *Map) Member(id string) *Member {
	if i, ok := m.memberIndex(id); ok {
		return m.Members[i]
	}
	return nil
}

func (m *Map) memberIndex(id string) (int, bool) {
	return slices.BinarySearchFunc(m.Members, id, func(mb *Member, id string) int {
		return strings.Compare(mb.ID, id)
	})
}

// Topic returns the topic name, or nil.
func (m *Map) Topic(name string) *Topic {
	if i, ok := m.topicIndex(name); ok {
		return m.Topics[i]
	}
	return nil
}

func (m *Map) topicIndex(name string) (int, bool) {
	return slices.BinarySearchFunc(m.Topics, name, func(tp *Topic, name string) int {
		return strings.Compare(tp.Name, name)
	})
}

// Ref names a group: a Crux slot (Topic "") or a partition of a topic.
type Ref struct {
	// Topic is the topic name, or "" for a Crux slot.
	Topic string `json:"topic,omitempty"`
	// Index is the slot or the partition number.
	Index int `json:"index"`
}

// SlotRef names Crux slot i.
func SlotRef(i int) Ref { return Ref{Index: i} }

// PartitionRef names partition p of topic.
func PartitionRef(topic string, p int) Ref { return Ref{Topic: topic, Index: p} }

// IsSlot reports whether r names a Crux slot.
func (r Ref) IsSlot() bool { return r.Topic == "" }

// String renders "slot 12" or "partition orders/3", as errors say it.
func (r Ref) String() string {
	if r.Topic == "" {
		return "slot " + strconv.Itoa(r.Index)
	}
	return "partition " + r.Topic + "/" + strconv.Itoa(r.Index)
}

// Group returns the slot or partition r names.
func (m *Map) Group(r Ref) (*Group, error) {
	if r.Topic == "" {
		g := m.Slot(r.Index)
		if g == nil {
			return nil, fmt.Errorf("%v: %w", r, ErrUnknownSlot)
		}
		return g, nil
	}
	tp := m.Topic(r.Topic)
	if tp == nil {
		return nil, fmt.Errorf("%v: %w", r, ErrUnknownTopic)
	}
	if r.Index < 0 || r.Index >= len(tp.Partitions) {
		return nil, fmt.Errorf("%v: %w", r, ErrUnknownPartition)
	}
	return tp.Partitions[r.Index], nil
}

// unclean reports whether r may elect an out-of-sync leader. Slots never
// may: a session store that forgets acknowledged writes is worse than
// one that is briefly unavailable.
func (m *Map) unclean(r Ref) bool {
	if r.Topic == "" {
		return false
	}
	tp := m.Topic(r.Topic)
	return tp != nil && tp.Config.UncleanLeaderElection
}

// eachGroup calls fn for every slot, then every partition in topic order.
func (m *Map) eachGroup(fn func(r Ref, g *Group)) {
	m.eachSlot(fn)
	for _, tp := range m.Topics {
		for p, g := range tp.Partitions {
			fn(Ref{Topic: tp.Name, Index: p}, g)
		}
	}
}

// eachSlot calls fn for every slot in order.
func (m *Map) eachSlot(fn func(r Ref, g *Group)) {
	for ci, c := range m.slots {
		for j, g := range c {
			fn(Ref{Index: ci*slotChunkSize + j}, g)
		}
	}
}

// capacity is the number of data members that count towards the
// replication factor: not draining, and alive or only briefly dead
// (gone and left members do not come back on their own).
func (m *Map) capacity() int {
	n := 0
	for _, mb := range m.Members {
		if (mb.State == StateAlive || mb.State == StateDead) && !mb.Draining && mb.HasRole(RoleData) {
			n++
		}
	}
	return n
}

// desiredReplicas is how many replicas a group of r should have now: its
// replication factor, capped by the members that could hold them (a
// 2-member cluster holds 2 copies of a factor-3 slot, and grows to 3 when
// a third member joins), never below one.
func (m *Map) desiredReplicas(r Ref, capacity int) int {
	rf := m.Settings.Replicas
	if r.Topic != "" {
		if tp := m.Topic(r.Topic); tp != nil {
			rf = tp.Config.ReplicationFactor
		}
	}
	return max(1, min(rf, capacity))
}
