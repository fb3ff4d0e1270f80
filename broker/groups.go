package broker

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sort"
	"sync"
	"time"

	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The classic consumer group protocol, as a state machine: JoinGroup,
// SyncGroup, Heartbeat, LeaveGroup and ticks are events; the coordinator
// answers waiting joins and syncs through channels. Assignment stays with
// the clients: the leader's plan is relayed as opaque bytes.
//
// States, as Kafka names them:
//   Empty -> PreparingRebalance (a member joins)
//   PreparingRebalance -> CompletingRebalance (every member rejoined, or
//     the rebalance timeout passed and the laggards were dropped)
//   CompletingRebalance -> Stable (the leader synced)
//   any -> PreparingRebalance (a join with new metadata, a leave, a
//     session timeout)
//   PreparingRebalance -> Empty (nobody rejoined)
// Static members (group.instance.id, KIP-345) keep their place across a
// restart: a rejoin under the same instance id takes over the old member
// without a rebalance when nothing else changed.

type groupState int

const (
	groupEmpty groupState = iota
	groupPreparing
	groupCompleting
	groupStable
	groupDead
)

func (s groupState) String() string {
	return [...]string{"Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead"}[s]
}

type joinResult struct {
	resp *kmsg.JoinGroupResponse
}

type syncResult struct {
	code       int16
	assignment []byte
}

type member struct {
	id, instanceID      string
	clientID, host      string
	sessionTimeout      time.Duration
	rebalanceTimeout    time.Duration
	protocolType        string
	protocols           []kmsg.JoinGroupRequestProtocol
	assignment          []byte
	lastHeartbeat       time.Time
	joinWait            chan joinResult // a JoinGroup waiting for the rebalance
	joinVersion         int16
	syncWait            chan syncResult // a SyncGroup waiting for the leader
	joinedThisRebalance bool
}

type group struct {
	name         string
	state        groupState
	protocolType string
	protocol     string
	generation   int32
	leader       string
	members      map[string]*member
	static       map[string]string    // instance id -> member id
	pending      map[string]time.Time // ids issued with MEMBER_ID_REQUIRED, by expiry
	deadline     time.Time            // end of the current join phase
}

// coordinator owns every group. Its mutex guards all group state; the
// handlers wait for join and sync answers on channels, outside it.
type coordinator struct {
	offsets *storage.OffsetStore
	cfg     Config
	log     *slog.Logger

	mu     sync.Mutex
	groups map[string]*group
	closed bool
}

func newCoordinator(offsets *storage.OffsetStore, cfg Config, log *slog.Logger) *coordinator {
	c := &coordinator{offsets: offsets, cfg: cfg, log: log, groups: map[string]*group{}}
	// Groups with committed offsets exist (Empty) after a restart.
	offsets.Each(func(k storage.OffsetKey, _ storage.Committed) {
		if _, ok := c.groups[k.Group]; !ok {
			c.groups[k.Group] = newGroup(k.Group)
		}
	})
	return c
}

func newGroup(name string) *group {
	return &group{name: name, members: map[string]*member{}, static: map[string]string{}, pending: map[string]time.Time{}}
}

func newMemberID(clientID string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	if clientID == "" {
		clientID = "member"
	}
	return clientID + "-" + hex.EncodeToString(b[:])
}

// join handles a JoinGroup. It returns either an immediate response or a
// channel the caller waits on.
func (c *coordinator) join(req *kmsg.JoinGroupRequest, clientID, host string, now time.Time) (*kmsg.JoinGroupResponse, chan joinResult) {
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.Generation = -1
	resp.MemberID = req.MemberID
	fail := func(e *kerr.Error) (*kmsg.JoinGroupResponse, chan joinResult) {
		resp.ErrorCode = e.Code
		return resp, nil
	}
	session := time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	rebalance := session
	if req.Version >= 1 {
		rebalance = time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
	}
	switch {
	case req.Group == "":
		return fail(kerr.InvalidGroupID)
	case session < c.cfg.MinSessionTimeout || session > c.cfg.MaxSessionTimeout:
		return fail(kerr.InvalidSessionTimeout)
	case req.ProtocolType == "" || len(req.Protocols) == 0:
		return fail(kerr.InconsistentGroupProtocol)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fail(kerr.CoordinatorNotAvailable)
	}
	g := c.groups[req.Group]
	if g == nil {
		g = newGroup(req.Group)
		c.groups[req.Group] = g
	}
	if len(g.members) > 0 && (req.ProtocolType != g.protocolType || !g.supportsAll(req.Protocols)) {
		return fail(kerr.InconsistentGroupProtocol)
	}
	instance := ""
	if req.InstanceID != nil {
		instance = *req.InstanceID
	}
	var m *member
	switch {
	case req.MemberID == "" && instance != "":
		newID := newMemberID(clientID)
		if oldID, ok := g.static[instance]; ok && g.members[oldID] != nil {
			// A static member restarted: it takes over its old entry.
			old := g.members[oldID]
			c.fence(old)
			delete(g.members, oldID)
			m = old
			m.id = newID
			g.members[newID] = m
			g.static[instance] = newID
			if g.leader == oldID {
				g.leader = newID
			}
			m.protocols, m.sessionTimeout, m.rebalanceTimeout = cloneProtocols(req.Protocols), session, rebalance
			m.lastHeartbeat = now
			// As Kafka: no rebalance unless the group's protocol would
			// change. The metadata bytes may differ (clients put their
			// generation and owned partitions there, which a restart
			// loses); the member keeps its old assignment.
			if g.state == groupStable && g.chooseProtocol() == g.protocol {
				resp.MemberID, resp.Generation, resp.LeaderID = newID, g.generation, g.leader
				resp.Protocol, resp.ProtocolType = strPtr(g.protocol), strPtr(g.protocolType)
				if g.leader == newID {
					resp.Members = g.memberList()
				}
				return resp, nil
			}
		} else {
			m = &member{id: newID, instanceID: instance}
			g.members[newID] = m
			g.static[instance] = newID
		}
	case req.MemberID == "":
		newID := newMemberID(clientID)
		if req.Version >= 4 {
			// KIP-394: hand out an id and make the client rejoin with it.
			g.pending[newID] = now.Add(session)
			resp.MemberID = newID
			return fail(kerr.MemberIDRequired)
		}
		m = &member{id: newID}
		g.members[newID] = m
	default:
		if _, ok := g.pending[req.MemberID]; ok {
			delete(g.pending, req.MemberID)
			m = &member{id: req.MemberID, instanceID: instance}
			g.members[m.id] = m
			if instance != "" {
				g.static[instance] = m.id
			}
			break
		}
		if g.fenced(req.InstanceID, req.MemberID) {
			return fail(kerr.FencedInstanceID)
		}
		m = g.members[req.MemberID]
		if m == nil || (instance != "" && g.static[instance] != m.id) {
			return fail(kerr.UnknownMemberID)
		}
		if (g.state == groupStable || g.state == groupCompleting) && g.leader != m.id && protocolsEqual(m.protocols, req.Protocols) {
			// A follower rejoining with nothing new gets the current
			// generation back, as Kafka answers.
			m.lastHeartbeat = now
			resp.Generation, resp.LeaderID = g.generation, g.leader
			resp.Protocol, resp.ProtocolType = strPtr(g.protocol), strPtr(g.protocolType)
			return resp, nil
		}
	}
	m.clientID, m.host = clientID, host
	m.sessionTimeout, m.rebalanceTimeout = session, rebalance
	m.protocolType, m.protocols = req.ProtocolType, cloneProtocols(req.Protocols)
	m.lastHeartbeat = now
	m.joinVersion = req.Version
	if m.joinWait != nil {
		// A second join from the same member replaces the first.
		m.joinWait <- joinResult{resp: c.joinError(m, kerr.RebalanceInProgress)}
	}
	ch := make(chan joinResult, 1)
	m.joinWait = ch
	m.joinedThisRebalance = true
	g.protocolType = req.ProtocolType
	c.prepareRebalance(g, now)
	c.maybeCompleteJoin(g, now)
	return nil, ch
}

// fenced reports whether a call naming a static instance comes from an
// incarnation a restart replaced: the instance is known under another
// member id. As Kafka, this is checked before the member id, whose old
// value is no longer a member: the old incarnation must see
// FENCED_INSTANCE_ID (fatal), not UNKNOWN_MEMBER_ID (which would make it
// rejoin and fence the new one in turn).
func (g *group) fenced(instance *string, memberID string) bool {
	if instance == nil || *instance == "" {
		return false
	}
	id, ok := g.static[*instance]
	return ok && id != memberID
}

// fence answers a replaced static member's pending calls.
func (c *coordinator) fence(m *member) {
	if m.joinWait != nil {
		m.joinWait <- joinResult{resp: c.joinError(m, kerr.FencedInstanceID)}
		m.joinWait = nil
	}
	if m.syncWait != nil {
		m.syncWait <- syncResult{code: kerr.FencedInstanceID.Code}
		m.syncWait = nil
	}
}

func (c *coordinator) joinError(m *member, e *kerr.Error) *kmsg.JoinGroupResponse {
	r := kmsg.NewPtrJoinGroupResponse()
	r.Version = m.joinVersion
	r.ErrorCode, r.Generation, r.MemberID = e.Code, -1, m.id
	return r
}

func strPtr(s string) *string { return &s }

// cloneProtocols copies a join's protocol metadata: kmsg's byte fields
// point into the request frame, which a member would otherwise pin for as
// long as it stays in the group.
func cloneProtocols(ps []kmsg.JoinGroupRequestProtocol) []kmsg.JoinGroupRequestProtocol {
	out := make([]kmsg.JoinGroupRequestProtocol, len(ps))
	for i, p := range ps {
		out[i] = p
		out[i].Metadata = bytes.Clone(p.Metadata)
	}
	return out
}

func protocolsEqual(a, b []kmsg.JoinGroupRequestProtocol) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || string(a[i].Metadata) != string(b[i].Metadata) {
			return false
		}
	}
	return true
}

// supportsAll reports whether every member supports one of protos.
func (g *group) supportsAll(protos []kmsg.JoinGroupRequestProtocol) bool {
	for _, p := range protos {
		ok := true
		for _, m := range g.members {
			if !m.supports(p.Name) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (m *member) supports(name string) bool {
	for _, p := range m.protocols {
		if p.Name == name {
			return true
		}
	}
	return false
}

func (m *member) metadata(name string) []byte {
	for _, p := range m.protocols {
		if p.Name == name {
			return p.Metadata
		}
	}
	return nil
}

// prepareRebalance moves the group into the join phase; members waiting in
// SyncGroup are told to rejoin.
func (c *coordinator) prepareRebalance(g *group, now time.Time) {
	if g.state == groupPreparing {
		return
	}
	if g.state == groupCompleting {
		for _, m := range g.members {
			if m.syncWait != nil {
				m.syncWait <- syncResult{code: kerr.RebalanceInProgress.Code}
				m.syncWait = nil
			}
		}
	}
	g.state = groupPreparing
	var longest time.Duration
	for _, m := range g.members {
		if m.rebalanceTimeout > longest {
			longest = m.rebalanceTimeout
		}
		if m.joinWait == nil {
			m.joinedThisRebalance = false
		}
	}
	g.deadline = now.Add(longest)
}

// maybeCompleteJoin ends the join phase when every member has rejoined.
func (c *coordinator) maybeCompleteJoin(g *group, now time.Time) {
	if g.state != groupPreparing {
		return
	}
	for _, m := range g.members {
		if m.joinWait == nil {
			return
		}
	}
	c.completeJoin(g, now)
}

// completeJoin drops members that did not rejoin, picks the protocol,
// bumps the generation and answers every waiting join.
func (c *coordinator) completeJoin(g *group, now time.Time) {
	for id, m := range g.members {
		if m.joinWait == nil {
			c.removeMember(g, id)
		}
	}
	if len(g.members) == 0 {
		g.state, g.protocol, g.leader = groupEmpty, "", ""
		g.generation++
		return
	}
	g.generation++
	g.protocol = g.chooseProtocol()
	if _, ok := g.members[g.leader]; !ok {
		g.leader = g.sortedIDs()[0]
	}
	g.state = groupCompleting
	for _, m := range g.members {
		m.assignment = nil
		r := kmsg.NewPtrJoinGroupResponse()
		r.Version = m.joinVersion
		r.Generation, r.LeaderID, r.MemberID = g.generation, g.leader, m.id
		r.Protocol, r.ProtocolType = strPtr(g.protocol), strPtr(g.protocolType)
		if m.id == g.leader {
			r.Members = g.memberList()
		}
		m.lastHeartbeat = now
		m.joinWait <- joinResult{resp: r}
		m.joinWait = nil
	}
}

func (g *group) sortedIDs() []string {
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (g *group) memberList() []kmsg.JoinGroupResponseMember {
	var out []kmsg.JoinGroupResponseMember
	for _, id := range g.sortedIDs() {
		m := g.members[id]
		jm := kmsg.NewJoinGroupResponseMember()
		jm.MemberID, jm.ProtocolMetadata = m.id, m.metadata(g.protocol)
		if m.instanceID != "" {
			jm.InstanceID = strPtr(m.instanceID)
		}
		out = append(out, jm)
	}
	return out
}

// chooseProtocol picks, among the protocols every member supports, the one
// most members list first (Kafka's vote), ties broken by name.
func (g *group) chooseProtocol() string {
	votes := map[string]int{}
	for _, m := range g.members {
		for _, p := range m.protocols {
			if g.allSupport(p.Name) {
				votes[p.Name]++
				break
			}
		}
	}
	best, n := "", -1
	for name, v := range votes {
		if v > n || (v == n && name < best) {
			best, n = name, v
		}
	}
	return best
}

func (g *group) allSupport(name string) bool {
	for _, m := range g.members {
		if !m.supports(name) {
			return false
		}
	}
	return true
}

func (c *coordinator) removeMember(g *group, id string) {
	m := g.members[id]
	if m == nil {
		return
	}
	if m.joinWait != nil {
		m.joinWait <- joinResult{resp: c.joinError(m, kerr.UnknownMemberID)}
		m.joinWait = nil
	}
	if m.syncWait != nil {
		m.syncWait <- syncResult{code: kerr.UnknownMemberID.Code}
		m.syncWait = nil
	}
	delete(g.members, id)
	if m.instanceID != "" && g.static[m.instanceID] == id {
		delete(g.static, m.instanceID)
	}
}

// sync handles a SyncGroup.
func (c *coordinator) sync(req *kmsg.SyncGroupRequest, now time.Time) (syncResult, chan syncResult, *group) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[req.Group]
	if g == nil {
		return syncResult{code: kerr.UnknownMemberID.Code}, nil, nil
	}
	m := g.members[req.MemberID]
	switch {
	case g.fenced(req.InstanceID, req.MemberID):
		return syncResult{code: kerr.FencedInstanceID.Code}, nil, g
	case m == nil:
		return syncResult{code: kerr.UnknownMemberID.Code}, nil, g
	case req.Generation != g.generation:
		return syncResult{code: kerr.IllegalGeneration.Code}, nil, g
	case g.state == groupPreparing:
		return syncResult{code: kerr.RebalanceInProgress.Code}, nil, g
	case g.state == groupStable:
		m.lastHeartbeat = now
		return syncResult{assignment: m.assignment}, nil, g
	}
	m.lastHeartbeat = now
	ch := make(chan syncResult, 1)
	if m.syncWait != nil {
		m.syncWait <- syncResult{code: kerr.RebalanceInProgress.Code}
	}
	m.syncWait = ch
	if m.id == g.leader {
		for _, a := range req.GroupAssignment {
			if t := g.members[a.MemberID]; t != nil {
				t.assignment = bytes.Clone(a.MemberAssignment)
			}
		}
		g.state = groupStable
		for _, t := range g.members {
			if t.syncWait != nil {
				t.syncWait <- syncResult{assignment: t.assignment}
				t.syncWait = nil
			}
		}
	}
	return syncResult{}, ch, g
}

// heartbeat handles a Heartbeat.
func (c *coordinator) heartbeat(req *kmsg.HeartbeatRequest, now time.Time) int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[req.Group]
	if g == nil {
		return kerr.UnknownMemberID.Code
	}
	m := g.members[req.MemberID]
	switch {
	case g.fenced(req.InstanceID, req.MemberID):
		return kerr.FencedInstanceID.Code
	case m == nil:
		return kerr.UnknownMemberID.Code
	case req.Generation != g.generation:
		return kerr.IllegalGeneration.Code
	}
	m.lastHeartbeat = now
	if g.state == groupPreparing {
		return kerr.RebalanceInProgress.Code
	}
	return 0
}

// leave removes members; each gets its own error code.
func (c *coordinator) leave(group string, ids []kmsg.LeaveGroupRequestMember, now time.Time) []int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	codes := make([]int16, len(ids))
	g := c.groups[group]
	for i, lm := range ids {
		if g == nil {
			codes[i] = kerr.UnknownMemberID.Code
			continue
		}
		id := lm.MemberID
		if lm.InstanceID != nil && *lm.InstanceID != "" {
			sid, ok := g.static[*lm.InstanceID]
			switch {
			case !ok:
				codes[i] = kerr.UnknownMemberID.Code
				continue
			case id != "" && id != sid:
				codes[i] = kerr.FencedInstanceID.Code
				continue
			}
			id = sid
		}
		if g.members[id] == nil {
			codes[i] = kerr.UnknownMemberID.Code
			continue
		}
		c.removeMember(g, id)
		c.log.Info("broker: member left group", "group", group, "member", id)
		if len(g.members) == 0 && g.state != groupPreparing {
			g.state, g.protocol, g.leader = groupEmpty, "", ""
			g.generation++
			continue
		}
		c.prepareRebalance(g, now)
		c.maybeCompleteJoin(g, now)
	}
	return codes
}

// tick expires sessions, ends overdue join phases and forgets stale
// pending member ids.
func (c *coordinator) tick(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.groups {
		for id, exp := range g.pending {
			if now.After(exp) {
				delete(g.pending, id)
			}
		}
		if g.state == groupPreparing && !now.Before(g.deadline) {
			c.completeJoin(g, now)
			continue
		}
		for id, m := range g.members {
			if m.joinWait != nil {
				continue // waiting in a join counts as alive
			}
			if now.Sub(m.lastHeartbeat) > m.sessionTimeout {
				c.log.Info("broker: member session expired", "group", g.name, "member", id, "session_timeout", m.sessionTimeout)
				c.removeMember(g, id)
				if len(g.members) == 0 {
					if g.state != groupPreparing {
						g.state, g.protocol, g.leader = groupEmpty, "", ""
						g.generation++
					}
					continue
				}
				c.prepareRebalance(g, now)
			}
		}
		c.maybeCompleteJoin(g, now)
	}
}

// close answers every waiting call so handlers return.
func (c *coordinator) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, g := range c.groups {
		for _, m := range g.members {
			if m.joinWait != nil {
				m.joinWait <- joinResult{resp: c.joinError(m, kerr.CoordinatorNotAvailable)}
				m.joinWait = nil
			}
			if m.syncWait != nil {
				m.syncWait <- syncResult{code: kerr.CoordinatorNotAvailable.Code}
				m.syncWait = nil
			}
		}
	}
}

// commitCheck validates an OffsetCommit's member and generation. A commit
// with generation -1 and no member is a "simple" commit from outside the
// group protocol, allowed while the group has no members.
func (c *coordinator) commitCheck(groupID, memberID string, generation int32, instance *string, now time.Time) int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if groupID == "" {
		return kerr.InvalidGroupID.Code
	}
	g := c.groups[groupID]
	if generation < 0 && memberID == "" {
		if g != nil && len(g.members) > 0 {
			return kerr.UnknownMemberID.Code
		}
		if g == nil {
			c.groups[groupID] = newGroup(groupID)
		}
		return 0
	}
	if g == nil {
		return kerr.UnknownMemberID.Code
	}
	m := g.members[memberID]
	switch {
	case g.fenced(instance, memberID):
		return kerr.FencedInstanceID.Code
	case m == nil:
		return kerr.UnknownMemberID.Code
	case generation != g.generation:
		return kerr.IllegalGeneration.Code
	case g.state == groupCompleting:
		return kerr.RebalanceInProgress.Code
	}
	m.lastHeartbeat = now
	return 0
}

// describe returns a group's state for DescribeGroups.
func (c *coordinator) describe(name string) kmsg.DescribeGroupsResponseGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	dg := kmsg.NewDescribeGroupsResponseGroup()
	dg.Group = name
	g := c.groups[name]
	if g == nil {
		dg.State = groupDead.String()
		return dg
	}
	dg.State, dg.ProtocolType = g.state.String(), g.protocolType
	if g.state == groupStable {
		dg.Protocol = g.protocol
	}
	for _, id := range g.sortedIDs() {
		m := g.members[id]
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID, dm.ClientID, dm.ClientHost = m.id, m.clientID, m.host
		if m.instanceID != "" {
			dm.InstanceID = strPtr(m.instanceID)
		}
		dm.ProtocolMetadata, dm.MemberAssignment = m.metadata(g.protocol), m.assignment
		dg.Members = append(dg.Members, dm)
	}
	return dg
}

// deleteGroup removes an empty group and its committed offsets; a
// *kerr.Error says why not (GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP), any
// other error is the offsets file's.
func (c *coordinator) deleteGroup(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[name]
	switch {
	case g == nil || g.state == groupDead:
		return kerr.GroupIDNotFound
	case len(g.members) > 0 || g.state != groupEmpty:
		return kerr.NonEmptyGroup
	}
	if err := c.offsets.DeleteGroup(name); err != nil {
		return err
	}
	g.state = groupDead
	delete(c.groups, name)
	return nil
}

// active reports whether the group has members or is rebalancing: then
// it cannot be deleted.
func (c *coordinator) active(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[name]
	return g != nil && g.state != groupDead && (len(g.members) > 0 || g.state != groupEmpty)
}

// subscriptions reports whether the group exists and, if so, which topics
// its members subscribe to (none while it has no members).
func (c *coordinator) subscriptions(name string) (func(topic string) bool, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[name]
	if g == nil || g.state == groupDead {
		return nil, false
	}
	if len(g.members) == 0 {
		return func(string) bool { return false }, true
	}
	topics := map[string]bool{}
	for _, m := range g.members {
		var md kmsg.ConsumerMemberMetadata
		if g.protocolType != "consumer" || md.ReadFrom(m.metadata(g.protocol)) != nil {
			return func(string) bool { return true }, true
		}
		for _, t := range md.Topics {
			topics[t] = true
		}
	}
	return func(t string) bool { return topics[t] }, true
}

// list returns every group's name, protocol type and state.
func (c *coordinator) list() []kmsg.ListGroupsResponseGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]kmsg.ListGroupsResponseGroup, 0, len(c.groups))
	for _, g := range c.groups {
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group, lg.ProtocolType, lg.GroupState = g.name, g.protocolType, g.state.String()
		lg.GroupType = "classic"
		out = append(out, lg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}
