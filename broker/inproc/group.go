package inproc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"mecha/broker"
	"mecha/internal/backoff"
)

// Versions of the group requests a member sends: the highest the broker
// serves (api_versions.go), so that in-process members run the same code
// as the newest Kafka clients.
const (
	joinVersion         = 7
	syncVersion         = 5
	heartbeatVersion    = 4
	leaveVersion        = 4
	offsetCommitVersion = 8
	offsetFetchVersion  = 7
)

// GroupConfig configures a GroupMember. Zero durations take the defaults.
type GroupConfig struct {
	// Group is the consumer group's name.
	Group string
	// Topics are the topics the member consumes.
	Topics []string
	// Balancers are the assignors the member offers, by preference; the
	// group uses one that every member offers. Default: cooperative-sticky,
	// then range, so that the group agrees with kgo's default members
	// (cooperative-sticky) and sarama's (range).
	Balancers []kgo.GroupBalancer
	// SessionTimeout (default 10 s), RebalanceTimeout (60 s) and
	// HeartbeatInterval (3 s) are the group protocol's, with sarama's
	// defaults.
	SessionTimeout, RebalanceTimeout, HeartbeatInterval time.Duration
	// OnAssigned is called with the partitions the member gains. The
	// callbacks run on Run's goroutine, one at a time, and the member
	// does not go on until they return.
	OnAssigned func(ctx context.Context, m *GroupMember, assigned map[string][]int32)
	// OnRevoked is called with the partitions the member gives up while
	// still in the group (a rebalance, the end of Run): it stops
	// consuming them and may commit their offsets before returning.
	OnRevoked func(ctx context.Context, m *GroupMember, revoked map[string][]int32)
	// OnLost is called with partitions the member lost by being dropped
	// from the group (its session expired): another member may have them
	// already, and commits are refused.
	OnLost func(ctx context.Context, m *GroupMember, lost map[string][]int32)
	// Logger receives the member's logs.
	Logger *slog.Logger
}

// GroupMember is a member of one of the broker's consumer groups, over
// the classic group protocol's requests run in-process. Assignment is
// done by kgo's balancers, so in-process members and Kafka clients share
// one group's partitions. Run drives it; Commit and Committed may be
// called from any goroutine.
type GroupMember struct {
	c   *Client
	cfg GroupConfig
	log *slog.Logger

	// mu guards the fields below. Run writes them; Commit reads them.
	mu         sync.Mutex
	memberID   string
	generation int32
	protocol   string             // the group's protocol in this generation
	owned      map[string][]int32 // assigned partitions, sorted
	balancer   kgo.GroupBalancer  // the balancer of protocol
	counts     map[string]int32   // partition counts the leader balanced with
	leader     bool               // this member balanced the generation
}

// NewGroupMember returns a member of cfg.Group; Run joins.
func (c *Client) NewGroupMember(cfg GroupConfig) (*GroupMember, error) {
	if cfg.Group == "" {
		return nil, errors.New("inproc: group member: no group")
	}
	if len(cfg.Topics) == 0 {
		return nil, errors.New("inproc: group member: no topics")
	}
	cfg.Topics = slices.Sorted(slices.Values(cfg.Topics))
	if len(cfg.Balancers) == 0 {
		cfg.Balancers = []kgo.GroupBalancer{kgo.CooperativeStickyBalancer(), kgo.RangeBalancer()}
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.RebalanceTimeout <= 0 {
		cfg.RebalanceTimeout = 60 * time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 3 * time.Second
	}
	noop := func(context.Context, *GroupMember, map[string][]int32) {}
	for _, f := range []*func(context.Context, *GroupMember, map[string][]int32){&cfg.OnAssigned, &cfg.OnRevoked, &cfg.OnLost} {
		if *f == nil {
			*f = noop
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &GroupMember{c: c, cfg: cfg, log: log.With("group", cfg.Group), generation: -1}, nil
}

// errRejoin ends a generation: the member joins again.
var errRejoin = errors.New("rejoin")

// Run keeps the member in the group until ctx ends: it joins, syncs (as
// the leader, it balances), calls the callbacks with what changed, and
// heartbeats, joining again whenever the group rebalances. When ctx ends
// it revokes what it owns (OnRevoked, which may commit) and leaves the
// group. It returns ctx's error, or broker.ErrClosed when the broker
// closed under it.
func (m *GroupMember) Run(ctx context.Context) error {
	defer m.leave(ctx)
	bo := backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}.New()
	for ctx.Err() == nil {
		err := m.generationRun(ctx)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, broker.ErrClosed):
			return err
		case errors.Is(err, errRejoin):
			bo.Reset()
		default:
			m.log.Warn("inproc: consumer group member failed; joining again", "err", err)
			if bo.Wait(ctx) != nil {
				return ctx.Err()
			}
		}
	}
	return ctx.Err()
}

// generationRun joins, syncs and heartbeats through one generation. It
// returns errRejoin when the member should join again at once.
func (m *GroupMember) generationRun(ctx context.Context) error {
	m.mu.Lock()
	eager := m.balancer != nil && !m.balancer.IsCooperative()
	m.mu.Unlock()
	if eager {
		// Eager protocols give everything back before joining.
		m.revoke(ctx, m.ownedCopy())
	}
	join, err := m.join(ctx)
	if err != nil {
		return err
	}
	if b := m.offers(derefString(join.Protocol)); b != nil && !b.IsCooperative() {
		// The group went eager (a member that offers only eager
		// protocols joined) while this member kept its partitions, as a
		// cooperative one does: give them back before the new plan.
		m.revoke(ctx, m.ownedCopy())
	}
	assigned, err := m.sync(ctx, join)
	if err != nil {
		return err
	}
	m.mu.Lock()
	revoked := diff(m.owned, assigned)
	added := diff(assigned, m.owned)
	m.mu.Unlock()
	if len(revoked) > 0 {
		// Cooperative (KIP-429): what moved away is given back, then the
		// member joins again so the group can hand it on.
		m.revoke(ctx, revoked)
	}
	m.mu.Lock()
	m.owned = assigned
	m.mu.Unlock()
	if len(added) > 0 {
		m.whileAlive(ctx, func() { m.cfg.OnAssigned(ctx, m, added) })
	}
	if len(revoked) > 0 {
		return errRejoin
	}
	return m.heartbeat(ctx)
}

// join sends JoinGroup until the group answers with a generation.
func (m *GroupMember) join(ctx context.Context) (*kmsg.JoinGroupResponse, error) {
	for {
		m.mu.Lock()
		req := kmsg.NewPtrJoinGroupRequest()
		req.SetVersion(joinVersion)
		req.Group, req.MemberID, req.ProtocolType = m.cfg.Group, m.memberID, "consumer"
		req.SessionTimeoutMillis = int32(m.cfg.SessionTimeout.Milliseconds())
		req.RebalanceTimeoutMillis = int32(m.cfg.RebalanceTimeout.Milliseconds())
		for _, b := range m.cfg.Balancers {
			p := kmsg.NewJoinGroupRequestProtocol()
			p.Name = b.ProtocolName()
			p.Metadata = b.JoinGroupMetadata(slices.Clone(m.cfg.Topics), cloneAssignment(m.owned), m.generation)
			req.Protocols = append(req.Protocols, p)
		}
		m.mu.Unlock()
		r, err := m.c.b.Request(ctx, m.c.opts.ClientID, req)
		if err != nil {
			return nil, err
		}
		resp := r.(*kmsg.JoinGroupResponse)
		switch err := kerr.ErrorForCode(resp.ErrorCode); {
		case err == nil:
			return resp, nil
		case errors.Is(err, kerr.MemberIDRequired):
			// KIP-394: join again with the id the coordinator gave.
			m.mu.Lock()
			m.memberID = resp.MemberID
			m.mu.Unlock()
		case errors.Is(err, kerr.RebalanceInProgress):
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration):
			m.lose(ctx)
		default:
			return nil, fmt.Errorf("inproc: join group %s: %w", m.cfg.Group, err)
		}
	}
}

// sync balances (as the leader) and syncs, and returns the member's
// assignment in this generation.
func (m *GroupMember) sync(ctx context.Context, join *kmsg.JoinGroupResponse) (map[string][]int32, error) {
	protocol := derefString(join.Protocol)
	bal := m.offers(protocol)
	if bal == nil {
		return nil, fmt.Errorf("inproc: group %s chose protocol %q, which this member did not offer", m.cfg.Group, protocol)
	}
	req := kmsg.NewPtrSyncGroupRequest()
	req.SetVersion(syncVersion)
	req.Group, req.Generation, req.MemberID = m.cfg.Group, join.Generation, join.MemberID
	req.ProtocolType, req.Protocol = kmsg.StringPtr("consumer"), kmsg.StringPtr(protocol)
	var counts map[string]int32
	leader := join.LeaderID == join.MemberID
	if leader {
		var err error
		if req.GroupAssignment, counts, err = m.balance(ctx, bal, join.Members); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	m.memberID, m.generation, m.protocol, m.balancer, m.leader, m.counts = join.MemberID, join.Generation, protocol, bal, leader, counts
	m.mu.Unlock()
	r, err := m.c.b.Request(ctx, m.c.opts.ClientID, req)
	if err != nil {
		return nil, err
	}
	resp := r.(*kmsg.SyncGroupResponse)
	switch err := kerr.ErrorForCode(resp.ErrorCode); {
	case err == nil:
	case errors.Is(err, kerr.RebalanceInProgress):
		return nil, errRejoin
	case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration):
		m.lose(ctx)
		return nil, errRejoin
	default:
		return nil, fmt.Errorf("inproc: sync group %s: %w", m.cfg.Group, err)
	}
	assigned, err := bal.ParseSyncAssignment(resp.MemberAssignment)
	if err != nil {
		return nil, fmt.Errorf("inproc: group %s: the leader's assignment: %w", m.cfg.Group, err)
	}
	for t := range assigned {
		slices.Sort(assigned[t])
	}
	return assigned, nil
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// offers returns the member's balancer of protocol, nil when it offers
// none by that name.
func (m *GroupMember) offers(protocol string) kgo.GroupBalancer {
	for _, b := range m.cfg.Balancers {
		if b.ProtocolName() == protocol {
			return b
		}
	}
	return nil
}

// balance is the leader's work: the plan of bal over the members' topics.
func (m *GroupMember) balance(ctx context.Context, bal kgo.GroupBalancer, members []kmsg.JoinGroupResponseMember) ([]kmsg.SyncGroupRequestGroupAssignment, map[string]int32, error) {
	// kgo's balancers expect the members sorted by instance id, then id.
	members = slices.Clone(members)
	slices.SortFunc(members, func(a, b kmsg.JoinGroupResponseMember) int {
		switch ai, bi := a.InstanceID, b.InstanceID; {
		case ai != nil && bi == nil:
			return -1
		case ai == nil && bi != nil:
			return 1
		case ai != nil && *ai != *bi:
			return cmp.Compare(*ai, *bi)
		}
		return cmp.Compare(a.MemberID, b.MemberID)
	})
	mb, topics, err := bal.MemberBalancer(members)
	if err != nil {
		return nil, nil, fmt.Errorf("inproc: group %s: members' metadata: %w", m.cfg.Group, err)
	}
	counts, err := m.partitionCounts(ctx, topics)
	if err != nil {
		return nil, nil, err
	}
	var plan kgo.IntoSyncAssignment
	if be, ok := mb.(kgo.GroupMemberBalancerOrError); ok {
		if plan, err = be.BalanceOrError(counts); err != nil {
			return nil, nil, fmt.Errorf("inproc: group %s: balancing: %w", m.cfg.Group, err)
		}
	} else {
		plan = mb.Balance(counts)
	}
	return plan.IntoSyncAssignment(), counts, nil
}

// partitionCounts returns the partition count of each topic (created
// when the broker auto-creates topics, as sarama's consumers have them
// created).
func (m *GroupMember) partitionCounts(ctx context.Context, topics map[string]struct{}) (map[string]int32, error) {
	counts := make(map[string]int32, len(topics))
	for t := range topics {
		n, err := m.c.b.Partitions(ctx, t)
		if err != nil {
			if errors.Is(err, broker.ErrClosed) || ctx.Err() != nil {
				return nil, err
			}
			m.log.Warn("inproc: a topic of the group cannot be assigned", "topic", t, "err", err)
			continue
		}
		counts[t] = n
	}
	return counts, nil
}

// whileAlive runs a callback while another goroutine heartbeats, so that
// a slow one (a handler finishing its record before its partition is
// given back) does not cost the member its session. What the heartbeats
// answer is left to the heartbeat loop that follows.
func (m *GroupMember) whileAlive(ctx context.Context, callback func()) {
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(m.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				if req := m.heartbeatRequest(); req != nil {
					_, _ = m.c.b.Request(hctx, m.c.opts.ClientID, req)
				}
			}
		}
	}()
	callback()
	stop()
	<-done
}

// heartbeatRequest is a Heartbeat of the member's generation, nil when it
// is not a member.
func (m *GroupMember) heartbeatRequest() *kmsg.HeartbeatRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.memberID == "" {
		return nil
	}
	req := kmsg.NewPtrHeartbeatRequest()
	req.SetVersion(heartbeatVersion)
	req.Group, req.Generation, req.MemberID = m.cfg.Group, m.generation, m.memberID
	return req
}

// heartbeat keeps the generation alive until the group rebalances
// (errRejoin) or ctx ends. The leader also watches its topics' partition
// counts, and rebalances when one grew, as Kafka clients' leaders do.
func (m *GroupMember) heartbeat(ctx context.Context) error {
	t := time.NewTicker(m.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		req := m.heartbeatRequest()
		if req == nil {
			return errRejoin
		}
		m.mu.Lock()
		leader, counts := m.leader, m.counts
		m.mu.Unlock()
		r, err := m.c.b.Request(ctx, m.c.opts.ClientID, req)
		if err != nil {
			return err
		}
		switch err := kerr.ErrorForCode(r.(*kmsg.HeartbeatResponse).ErrorCode); {
		case err == nil:
		case errors.Is(err, kerr.RebalanceInProgress):
			return errRejoin
		case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration):
			m.lose(ctx)
			return errRejoin
		default:
			return fmt.Errorf("inproc: heartbeat to group %s: %w", m.cfg.Group, err)
		}
		if leader {
			now, err := m.partitionCounts(ctx, mapKeys(counts))
			if err != nil {
				return err
			}
			if !maps.Equal(now, counts) {
				m.log.Info("inproc: a topic of the group has new partitions; rebalancing")
				return errRejoin
			}
		}
	}
}

// revoke gives partitions back through OnRevoked.
func (m *GroupMember) revoke(ctx context.Context, revoked map[string][]int32) {
	if len(revoked) == 0 {
		return
	}
	m.whileAlive(ctx, func() { m.cfg.OnRevoked(ctx, m, revoked) })
	m.mu.Lock()
	m.owned = diff(m.owned, revoked)
	m.mu.Unlock()
}

// lose forgets the member id and everything owned (OnLost): the group
// dropped the member.
func (m *GroupMember) lose(ctx context.Context) {
	lost := m.ownedCopy()
	m.mu.Lock()
	m.memberID, m.generation, m.owned, m.balancer = "", -1, nil, nil
	m.mu.Unlock()
	if len(lost) > 0 {
		m.log.Warn("inproc: dropped from the consumer group; its partitions are lost")
		m.cfg.OnLost(ctx, m, lost)
	}
}

// leave revokes what the member owns and leaves the group: the group
// rebalances at once rather than after the session timeout.
func (m *GroupMember) leave(ctx context.Context) {
	// ctx has ended: the revocation's commits and the leave get a short
	// context of their own.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	m.revoke(lctx, m.ownedCopy())
	m.mu.Lock()
	id := m.memberID
	m.memberID, m.generation, m.balancer = "", -1, nil
	m.mu.Unlock()
	if id == "" {
		return
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.SetVersion(leaveVersion)
	req.Group = m.cfg.Group
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID = id
	req.Members = append(req.Members, lm)
	if _, err := m.c.b.Request(lctx, m.c.opts.ClientID, req); err != nil && !errors.Is(err, broker.ErrClosed) {
		m.log.Warn("inproc: leaving the consumer group", "err", err)
	}
}

// Commit commits offsets (the next offset to read, per topic and
// partition) as the member of its current generation. A commit during a
// rebalance, or after the member was dropped, is refused with the
// group's error (kerr.RebalanceInProgress, kerr.IllegalGeneration, …).
func (m *GroupMember) Commit(ctx context.Context, offsets map[string]map[int32]int64) error {
	if len(offsets) == 0 {
		return nil
	}
	req := kmsg.NewPtrOffsetCommitRequest()
	req.SetVersion(offsetCommitVersion)
	m.mu.Lock()
	req.Group, req.Generation, req.MemberID = m.cfg.Group, m.generation, m.memberID
	m.mu.Unlock()
	if req.MemberID == "" {
		return fmt.Errorf("inproc: commit to group %s: not a member: %w", m.cfg.Group, kerr.UnknownMemberID)
	}
	for _, t := range slices.Sorted(maps.Keys(offsets)) {
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = t
		for p, o := range offsets[t] {
			rp := kmsg.NewOffsetCommitRequestTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch = p, o, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	r, err := m.c.b.Request(ctx, m.c.opts.ClientID, req)
	if err != nil {
		return fmt.Errorf("inproc: commit to group %s: %w", m.cfg.Group, err)
	}
	for _, t := range r.(*kmsg.OffsetCommitResponse).Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("inproc: commit to group %s, %s/%d: %w", m.cfg.Group, t.Topic, p.Partition, err)
			}
		}
	}
	return nil
}

// Committed returns the group's committed offset of each partition, -1
// where it has none.
func (m *GroupMember) Committed(ctx context.Context, parts map[string][]int32) (map[string]map[int32]int64, error) {
	req := kmsg.NewPtrOffsetFetchRequest()
	req.SetVersion(offsetFetchVersion)
	req.Group = m.cfg.Group
	for _, t := range slices.Sorted(maps.Keys(parts)) {
		rt := kmsg.NewOffsetFetchRequestTopic()
		rt.Topic, rt.Partitions = t, parts[t]
		req.Topics = append(req.Topics, rt)
	}
	r, err := m.c.b.Request(ctx, m.c.opts.ClientID, req)
	if err != nil {
		return nil, fmt.Errorf("inproc: committed offsets of group %s: %w", m.cfg.Group, err)
	}
	resp := r.(*kmsg.OffsetFetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, fmt.Errorf("inproc: committed offsets of group %s: %w", m.cfg.Group, err)
	}
	out := map[string]map[int32]int64{}
	for _, t := range resp.Topics {
		out[t.Topic] = map[int32]int64{}
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("inproc: committed offset of group %s, %s/%d: %w", m.cfg.Group, t.Topic, p.Partition, err)
			}
			out[t.Topic][p.Partition] = p.Offset
		}
	}
	return out, nil
}

// Owned returns the partitions the member is assigned now.
func (m *GroupMember) Owned() map[string][]int32 { return m.ownedCopy() }

func (m *GroupMember) ownedCopy() map[string][]int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneAssignment(m.owned)
}

func cloneAssignment(a map[string][]int32) map[string][]int32 {
	out := make(map[string][]int32, len(a))
	for t, ps := range a {
		out[t] = slices.Clone(ps)
	}
	return out
}

// diff is what a has and b does not.
func diff(a, b map[string][]int32) map[string][]int32 {
	out := map[string][]int32{}
	for t, ps := range a {
		for _, p := range ps {
			if !slices.Contains(b[t], p) {
				out[t] = append(out[t], p)
			}
		}
	}
	return out
}

func mapKeys[V any](m map[string]V) map[string]struct{} {
	out := make(map[string]struct{}, len(m))
	for k := range m {
		out[k] = struct{}{}
	}
	return out
}
