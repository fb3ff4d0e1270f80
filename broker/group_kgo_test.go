package broker

import (
	"context"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"mecha/internal/poll"
)

// kgoMember is a kgo group consumer that tracks its assignment and how
// often it was revoked.
type kgoMember struct {
	cl *kgo.Client

	mu       sync.Mutex
	assigned []int32
	history  [][]int32 // every assignment, in order
	revokes  int
}

func startKgoMember(t *testing.T, addr, group, topic string, opts ...kgo.Opt) *kgoMember {
	t.Helper()
	m := &kgoMember{}
	base := []kgo.Opt{
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.Balancers(kgo.RangeBalancer()), // eager: every rebalance revokes
		kgo.HeartbeatInterval(100 * time.Millisecond),
		// A session far longer than the tests wait: what they see is
		// never this member's own session expiring.
		kgo.SessionTimeout(30 * time.Second),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			m.mu.Lock()
			m.assigned = append(m.assigned, a[topic]...)
			sort.Slice(m.assigned, func(i, j int) bool { return m.assigned[i] < m.assigned[j] })
			m.history = append(m.history, slices.Clone(m.assigned))
			m.mu.Unlock()
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, _ map[string][]int32) {
			m.mu.Lock()
			m.assigned = nil
			m.revokes++
			m.mu.Unlock()
		}),
	}
	cl, err := kgo.NewClient(append(append(base, kgo.SeedBrokers(addr)), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	m.cl = cl
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if cl.PollFetches(ctx).IsClientClosed() {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		cl.Close()
	})
	return m
}

func (m *kgoMember) partitions() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.assigned)
}

// sawAfter reports whether the member was assigned want at some point
// after having been assigned prev.
func (m *kgoMember) sawAfter(prev func([]int32) bool, want []int32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	seenPrev := false
	for _, a := range m.history {
		if seenPrev && slices.Equal(a, want) {
			return true
		}
		seenPrev = seenPrev || prev(a)
	}
	return false
}

func (m *kgoMember) revoked() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.revokes
}

// A member that joins and syncs but never heartbeats is removed when its
// session expires, and its partitions go to the member that stayed.
func TestGroupSessionExpiryReassigns(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	const topic, group = "sess", "sess-group"
	createTopic(t, adm, topic, 4, nil)
	all := []int32{0, 1, 2, 3}

	a := startKgoMember(t, b.Addr(), group, topic)
	poll.Until(t, waitLong, "member a to own all partitions", func() bool { return slices.Equal(a.partitions(), all) })

	// A raw member: joins with a 1 s session, syncs, then goes silent.
	raw := newKgo(t, b.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Topics = []string{topic}
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group, join.ProtocolType = group, "consumer"
	join.SessionTimeoutMillis, join.RebalanceTimeoutMillis = 1000, 10000
	proto := kmsg.NewJoinGroupRequestProtocol()
	proto.Name, proto.Metadata = "range", meta.AppendTo(nil)
	join.Protocols = []kmsg.JoinGroupRequestProtocol{proto}
	var jr *kmsg.JoinGroupResponse
	for {
		resp, err := raw.Request(ctx, join)
		if err != nil {
			t.Fatal(err)
		}
		jr = resp.(*kmsg.JoinGroupResponse)
		if jr.ErrorCode == kerr.MemberIDRequired.Code {
			join.MemberID = jr.MemberID
			continue
		}
		if err := kerr.ErrorForCode(jr.ErrorCode); err != nil {
			t.Fatalf("raw join: %v", err)
		}
		break
	}
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID, sync.Generation = group, jr.MemberID, jr.Generation
	resp, err := raw.Request(ctx, sync)
	if err != nil {
		t.Fatal(err)
	}
	sr := resp.(*kmsg.SyncGroupResponse)
	if err := kerr.ErrorForCode(sr.ErrorCode); err != nil {
		t.Fatalf("raw sync: %v", err)
	}
	var assignment kmsg.ConsumerMemberAssignment
	if err := assignment.ReadFrom(sr.MemberAssignment); err != nil {
		t.Fatalf("raw member's assignment: %v", err)
	}
	var rawParts []int32
	for _, at := range assignment.Topics {
		rawParts = append(rawParts, at.Partitions...)
	}
	if len(rawParts) != 2 {
		t.Fatalf("raw member was assigned %v, want two of the four partitions", rawParts)
	}
	// No heartbeat from the raw member: after its 1 s session the group
	// rebalances without it and a, which was left with the other two
	// partitions, owns everything again.
	poll.Until(t, waitLong, "member a to own all partitions after owning two", func() bool {
		return a.sawAfter(func(p []int32) bool { return len(p) == 2 && !slices.Contains(p, rawParts[0]) }, all)
	})
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Group, hb.MemberID, hb.Generation = group, jr.MemberID, jr.Generation
	resp, err = raw.Request(ctx, hb)
	if err != nil {
		t.Fatal(err)
	}
	if code := resp.(*kmsg.HeartbeatResponse).ErrorCode; code != kerr.UnknownMemberID.Code {
		t.Errorf("heartbeat of the expired member: %v, want UNKNOWN_MEMBER_ID", kerr.ErrorForCode(code))
	}
	groups, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if g := groups[group]; len(g.Members) != 1 || g.State != "Stable" {
		t.Errorf("group after expiry: state %s, %d members; want Stable with one", g.State, len(g.Members))
	}
}

// A static member (group.instance.id) that restarts within its session
// gets its partitions back without a rebalance: the other member is not
// revoked and stays in the same generation.
func TestGroupStaticMemberRestart(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	const topic, group = "static", "static-group"
	createTopic(t, adm, topic, 4, nil)
	all := []int32{0, 1, 2, 3}

	a := startKgoMember(t, b.Addr(), group, topic, kgo.InstanceID("a"))
	poll.Until(t, waitLong, "member a to own all partitions", func() bool { return slices.Equal(a.partitions(), all) })
	bm := startKgoMember(t, b.Addr(), group, topic, kgo.InstanceID("b"))
	poll.Until(t, waitLong, "a and b to own two partitions each", func() bool {
		return len(a.partitions()) == 2 && len(bm.partitions()) == 2
	})
	aParts := a.partitions()
	_, gen := bm.cl.GroupMetadata()
	revokes := bm.revoked()

	// a stops without leaving (static members do not leave on close)...
	a.cl.Close()
	// ...and comes back under the same instance id.
	a2 := startKgoMember(t, b.Addr(), group, topic, kgo.InstanceID("a"))
	poll.Until(t, waitLong, "the restarted member to get a's partitions", func() bool { return slices.Equal(a2.partitions(), aParts) })
	// Had the restart rebalanced the group, a2 could not be assigned
	// before b rejoined, and b (eager) revokes before it rejoins.
	if n := bm.revoked(); n != revokes {
		t.Errorf("member b was revoked %d times during a's restart, want none", n-revokes)
	}
	if _, g := bm.cl.GroupMetadata(); g != gen {
		t.Errorf("generation went from %d to %d: the restart rebalanced the group", gen, g)
	}
	if p := bm.partitions(); len(p) != 2 {
		t.Errorf("member b owns %v after a's restart, want its two partitions", p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	groups, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range groups[group].Members {
		if m.InstanceID != nil {
			ids = append(ids, *m.InstanceID)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"a", "b"}) {
		t.Errorf("group members' instance ids %v, want [a b]", ids)
	}
}
