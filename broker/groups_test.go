package broker

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// These tests drive the group coordinator's state machine directly: no
// connections, no goroutines, no sleeps. Time is a value the test
// advances; tick(now) is called when a test wants timeouts to fire. A
// join or sync that has to wait returns a buffered channel; "still
// waiting" is checked with select/default, "answered" by reading it.

// coordTest is one coordinator, its fake clock and the timeouts new join
// requests carry.
type coordTest struct {
	t         *testing.T
	c         *coordinator
	now       time.Time
	session   time.Duration
	rebalance time.Duration
}

func newCoordTest(t *testing.T) *coordTest {
	t.Helper()
	store, err := storage.OpenOffsetStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	cfg := DefaultConfig()
	cfg.MinSessionTimeout = time.Second
	ct := &coordTest{
		t:         t,
		c:         newCoordinator(store, cfg, slog.New(slog.DiscardHandler)),
		now:       time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		session:   10 * time.Second,
		rebalance: 15 * time.Second,
	}
	t.Cleanup(ct.c.close)
	return ct
}

func (ct *coordTest) advance(d time.Duration) { ct.now = ct.now.Add(d) }
func (ct *coordTest) tick()                   { ct.c.tick(ct.now) }

func codeName(code int16) string {
	if code == 0 {
		return "NONE"
	}
	if e := kerr.TypedErrorForCode(code); e != nil {
		return e.Message
	}
	return fmt.Sprintf("code %d", code)
}

// wantCode fails the test unless got is want's code (NONE when want is nil).
func wantCode(t *testing.T, what string, got int16, want *kerr.Error) {
	t.Helper()
	var w int16
	if want != nil {
		w = want.Code
	}
	if got != w {
		t.Fatalf("%s: got %s, want %s", what, codeName(got), codeName(w))
	}
}

func protocols(names ...string) []kmsg.JoinGroupRequestProtocol {
	var out []kmsg.JoinGroupRequestProtocol
	for _, n := range names {
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = n, []byte("meta-"+n)
		out = append(out, p)
	}
	return out
}

// joinReq is a consumer join for protocol "range" with the test's timeouts.
func (ct *coordTest) joinReq(version int16, group, memberID string) *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.Version = version
	req.Group, req.MemberID = group, memberID
	req.SessionTimeoutMillis = int32(ct.session / time.Millisecond)
	req.RebalanceTimeoutMillis = int32(ct.rebalance / time.Millisecond)
	req.ProtocolType = "consumer"
	req.Protocols = protocols("range")
	return req
}

func staticJoinReq(ct *coordTest, group, memberID, instance string) *kmsg.JoinGroupRequest {
	req := ct.joinReq(5, group, memberID)
	req.InstanceID = kmsg.StringPtr(instance)
	return req
}

// join calls the coordinator and checks it returned exactly one of an
// answer and a channel.
func (ct *coordTest) join(req *kmsg.JoinGroupRequest) (*kmsg.JoinGroupResponse, chan joinResult) {
	ct.t.Helper()
	resp, ch := ct.c.join(req, "client", "/127.0.0.1", ct.now)
	if (resp == nil) == (ch == nil) {
		ct.t.Fatalf("join: want exactly one of a response and a channel, got %v and %v", resp, ch)
	}
	return resp, ch
}

// joinAnswered returns a join's answer, immediate or already in its
// channel; it fails the test if the join still waits.
func joinAnswered(t *testing.T, what string, resp *kmsg.JoinGroupResponse, ch chan joinResult) *kmsg.JoinGroupResponse {
	t.Helper()
	if resp != nil {
		return resp
	}
	select {
	case r := <-ch:
		return r.resp
	default:
		t.Fatalf("%s: join still waiting, want an answer", what)
		return nil
	}
}

func joinWaiting(t *testing.T, what string, resp *kmsg.JoinGroupResponse, ch chan joinResult) {
	t.Helper()
	if resp != nil {
		t.Fatalf("%s: join answered at once (%s), want it to wait", what, codeName(resp.ErrorCode))
	}
	select {
	case r := <-ch:
		t.Fatalf("%s: join answered (%s, generation %d), want it to wait", what, codeName(r.resp.ErrorCode), r.resp.Generation)
	default:
	}
}

// joinNow joins and returns the answer, which must be there already.
func (ct *coordTest) joinNow(what string, req *kmsg.JoinGroupRequest) *kmsg.JoinGroupResponse {
	ct.t.Helper()
	resp, ch := ct.join(req)
	return joinAnswered(ct.t, what, resp, ch)
}

// newID gets a member id the KIP-394 way: a v4 join without one.
func (ct *coordTest) newID(group string) string {
	ct.t.Helper()
	resp := ct.joinNow("join without member id", ct.joinReq(4, group, ""))
	wantCode(ct.t, "join without member id", resp.ErrorCode, kerr.MemberIDRequired)
	if resp.MemberID == "" || resp.Generation != -1 {
		ct.t.Fatalf("MEMBER_ID_REQUIRED answer: member id %q generation %d, want an id and -1", resp.MemberID, resp.Generation)
	}
	return resp.MemberID
}

// checkRound checks the answers of one completed join phase: no error,
// one generation, one leader (among them) who alone gets the member list
// (sorted ids, each with its "range" metadata). It returns the generation
// and the leader.
func checkRound(t *testing.T, resps map[string]*kmsg.JoinGroupResponse) (int32, string) {
	t.Helper()
	var gen int32 = -1
	leader := ""
	var ids []string
	for id, r := range resps {
		ids = append(ids, id)
		wantCode(t, "join of "+id, r.ErrorCode, nil)
		if r.MemberID != id {
			t.Fatalf("join answer carries member id %q, want %q", r.MemberID, id)
		}
		if gen == -1 {
			gen, leader = r.Generation, r.LeaderID
		}
		if r.Generation != gen || r.LeaderID != leader {
			t.Fatalf("join answers disagree: generation %d leader %q vs generation %d leader %q", r.Generation, r.LeaderID, gen, leader)
		}
		if r.Protocol == nil || *r.Protocol != "range" || r.ProtocolType == nil || *r.ProtocolType != "consumer" {
			t.Fatalf("join answer of %s: protocol %v type %v, want range/consumer", id, r.Protocol, r.ProtocolType)
		}
	}
	slices.Sort(ids)
	for id, r := range resps {
		if id != leader {
			if len(r.Members) != 0 {
				t.Fatalf("follower %s got a member list %v", id, r.Members)
			}
			continue
		}
		var got []string
		for _, m := range r.Members {
			got = append(got, m.MemberID)
			if string(m.ProtocolMetadata) != "meta-range" {
				t.Fatalf("leader's list: member %s metadata %q, want meta-range", m.MemberID, m.ProtocolMetadata)
			}
		}
		if !slices.Equal(got, ids) {
			t.Fatalf("leader's member list %v, want %v", got, ids)
		}
	}
	if _, ok := resps[leader]; !ok {
		t.Fatalf("leader %q is not among the joined members %v", leader, ids)
	}
	return gen, leader
}

// joinAll runs a join phase for ids on a Stable or Empty group: the last
// id (the newcomer) joins first, then the others; every join but the last
// waits, the last completes them all.
func (ct *coordTest) joinAll(group string, ids []string) (int32, string, map[string]*kmsg.JoinGroupResponse) {
	t := ct.t
	t.Helper()
	order := append([]string{ids[len(ids)-1]}, ids[:len(ids)-1]...)
	chans := map[string]chan joinResult{}
	for i, id := range order {
		resp, ch := ct.join(ct.joinReq(4, group, id))
		if i < len(order)-1 {
			joinWaiting(t, "join of "+id, resp, ch)
		}
		if resp != nil {
			t.Fatalf("join of %s answered at once (%s), want it through the channel", id, codeName(resp.ErrorCode))
		}
		chans[id] = ch
	}
	resps := map[string]*kmsg.JoinGroupResponse{}
	for id, ch := range chans {
		resps[id] = joinAnswered(t, "join of "+id, nil, ch)
	}
	gen, leader := checkRound(t, resps)
	return gen, leader, resps
}

func syncReq(group, member string, gen int32, assignTo ...string) *kmsg.SyncGroupRequest {
	req := kmsg.NewPtrSyncGroupRequest()
	req.Version = 3
	req.Group, req.MemberID, req.Generation = group, member, gen
	for _, id := range assignTo {
		a := kmsg.NewSyncGroupRequestGroupAssignment()
		a.MemberID, a.MemberAssignment = id, []byte("assign-"+id)
		req.GroupAssignment = append(req.GroupAssignment, a)
	}
	return req
}

func (ct *coordTest) sync(req *kmsg.SyncGroupRequest) (syncResult, chan syncResult) {
	res, ch, _ := ct.c.sync(req, ct.now)
	return res, ch
}

func syncAnswered(t *testing.T, what string, res syncResult, ch chan syncResult) syncResult {
	t.Helper()
	if ch == nil {
		return res
	}
	select {
	case r := <-ch:
		return r
	default:
		t.Fatalf("%s: sync still waiting, want an answer", what)
		return syncResult{}
	}
}

func syncWaiting(t *testing.T, what string, res syncResult, ch chan syncResult) {
	t.Helper()
	if ch == nil {
		t.Fatalf("%s: sync answered at once (%s), want it to wait", what, codeName(res.code))
	}
	select {
	case r := <-ch:
		t.Fatalf("%s: sync answered (%s), want it to wait", what, codeName(r.code))
	default:
	}
}

func wantAssignment(t *testing.T, what string, r syncResult, want string) {
	t.Helper()
	wantCode(t, what, r.code, nil)
	if string(r.assignment) != want {
		t.Fatalf("%s: assignment %q, want %q", what, r.assignment, want)
	}
}

// syncAll completes a rebalance: followers sync first and wait, then the
// leader syncs an assignment "assign-<id>" for everyone; all are answered.
func (ct *coordTest) syncAll(group string, gen int32, leader string, ids []string) {
	t := ct.t
	t.Helper()
	chans := map[string]chan syncResult{}
	for _, id := range ids {
		if id == leader {
			continue
		}
		res, ch := ct.sync(syncReq(group, id, gen))
		syncWaiting(t, "follower "+id+" sync", res, ch)
		chans[id] = ch
	}
	res, ch := ct.sync(syncReq(group, leader, gen, ids...))
	wantAssignment(t, "leader sync", syncAnswered(t, "leader sync", res, ch), "assign-"+leader)
	for id, ch := range chans {
		wantAssignment(t, "follower "+id+" sync", syncAnswered(t, "follower "+id+" sync", syncResult{}, ch), "assign-"+id)
	}
	ct.wantState(group, "Stable")
}

// stableGroup grows a group to n members, one rebalance per newcomer, and
// returns the ids in joining order, the generation and the leader (the
// first member, which keeps leading as long as it rejoins).
func (ct *coordTest) stableGroup(group string, n int) ([]string, int32, string) {
	ct.t.Helper()
	var ids []string
	var gen int32
	var leader string
	for range n {
		ids = append(ids, ct.newID(group))
		gen, leader, _ = ct.joinAll(group, ids)
		ct.syncAll(group, gen, leader, ids)
	}
	if leader != ids[0] {
		ct.t.Fatalf("leader %s, want the first member %s", leader, ids[0])
	}
	return ids, gen, leader
}

func (ct *coordTest) heartbeat(group, member string, gen int32, instance ...string) int16 {
	req := kmsg.NewPtrHeartbeatRequest()
	req.Version = 3
	req.Group, req.MemberID, req.Generation = group, member, gen
	if len(instance) > 0 {
		req.InstanceID = kmsg.StringPtr(instance[0])
	}
	return ct.c.heartbeat(req, ct.now)
}

func (ct *coordTest) wantState(group, state string, members ...string) {
	ct.t.Helper()
	d := ct.c.describe(group)
	if d.State != state {
		ct.t.Fatalf("group %s is %s, want %s", group, d.State, state)
	}
	if members == nil {
		return
	}
	var got []string
	for _, m := range d.Members {
		got = append(got, m.MemberID)
	}
	want := slices.Clone(members)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		ct.t.Fatalf("group %s members %v, want %v", group, got, want)
	}
}

// TestCoordinatorJoinMemberIDRequired: v4+ joins without a member id get
// MEMBER_ID_REQUIRED and an id (KIP-394) and join when they come back with
// it; v0–v3 joins are given an id and join at once.
func TestCoordinatorJoinMemberIDRequired(t *testing.T) {
	for v := int16(0); v <= 7; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			ct := newCoordTest(t)
			resp, ch := ct.join(ct.joinReq(v, "g", ""))
			if v >= 4 {
				r := joinAnswered(t, "first join", resp, ch)
				wantCode(t, "first join", r.ErrorCode, kerr.MemberIDRequired)
				if r.MemberID == "" || r.Generation != -1 {
					t.Fatalf("MEMBER_ID_REQUIRED with id %q generation %d", r.MemberID, r.Generation)
				}
				ct.wantState("g", "Empty", []string{}...) // a pending id is no member yet
				resp, ch = ct.join(ct.joinReq(v, "g", r.MemberID))
			}
			r := joinAnswered(t, "join", resp, ch)
			gen, leader := checkRound(t, map[string]*kmsg.JoinGroupResponse{r.MemberID: r})
			if gen != 1 || leader != r.MemberID || r.MemberID == "" {
				t.Fatalf("generation %d leader %q member %q, want 1 and itself", gen, leader, r.MemberID)
			}
			if r.Version != v {
				t.Fatalf("answer version %d, want %d", r.Version, v)
			}
		})
	}
}

// TestCoordinatorSingleMember: a lone member is answered at once as leader
// of generation 1 with itself in the member list; its SyncGroup returns
// the assignment it sent and the group turns Stable.
func TestCoordinatorSingleMember(t *testing.T) {
	ct := newCoordTest(t)
	id := ct.newID("g")
	r := ct.joinNow("join", ct.joinReq(4, "g", id))
	gen, leader := checkRound(t, map[string]*kmsg.JoinGroupResponse{id: r})
	if gen != 1 || leader != id {
		t.Fatalf("generation %d leader %s, want 1 and %s", gen, leader, id)
	}
	ct.wantState("g", "CompletingRebalance", id)
	wantCode(t, "heartbeat while completing", ct.heartbeat("g", id, 1), nil)

	res, ch := ct.sync(syncReq("g", id, 1, id))
	wantAssignment(t, "leader sync", syncAnswered(t, "leader sync", res, ch), "assign-"+id)
	ct.wantState("g", "Stable", id)
	d := ct.c.describe("g")
	if d.Protocol != "range" || d.ProtocolType != "consumer" || string(d.Members[0].MemberAssignment) != "assign-"+id {
		t.Fatalf("describe: protocol %q type %q assignment %q", d.Protocol, d.ProtocolType, d.Members[0].MemberAssignment)
	}
	wantCode(t, "heartbeat when stable", ct.heartbeat("g", id, 1), nil)

	// A repeated sync in Stable returns the current assignment.
	res, ch = ct.sync(syncReq("g", id, 1))
	wantAssignment(t, "second sync", syncAnswered(t, "second sync", res, ch), "assign-"+id)
}

// TestCoordinatorTwoMembers: a join into a Stable group waits until the
// other member rejoins; both get the next generation, the leader alone
// the member list; the follower's sync waits for the leader's and gets
// its part of the leader's assignment.
func TestCoordinatorTwoMembers(t *testing.T) {
	ct := newCoordTest(t)
	ids, gen, _ := ct.stableGroup("g", 1)
	a := ids[0]
	b := ct.newID("g")

	ct.advance(time.Second)
	respB, chB := ct.join(ct.joinReq(4, "g", b))
	joinWaiting(t, "newcomer's join", respB, chB)
	ct.wantState("g", "PreparingRebalance", a, b)
	wantCode(t, "old member's heartbeat", ct.heartbeat("g", a, gen), kerr.RebalanceInProgress)
	joinWaiting(t, "newcomer's join after a heartbeat", nil, chB)

	ct.advance(time.Second)
	respA, chA := ct.join(ct.joinReq(4, "g", a))
	resps := map[string]*kmsg.JoinGroupResponse{
		a: joinAnswered(t, "old member's join", respA, chA),
		b: joinAnswered(t, "newcomer's join", nil, chB),
	}
	gen2, leader := checkRound(t, resps)
	if gen2 != gen+1 || leader != a {
		t.Fatalf("generation %d leader %s, want %d and the old leader %s", gen2, leader, gen+1, a)
	}
	ct.wantState("g", "CompletingRebalance", a, b)

	// The follower syncs first and waits for the leader.
	res, ch := ct.sync(syncReq("g", b, gen2))
	syncWaiting(t, "follower sync", res, ch)
	res2, ch2 := ct.sync(syncReq("g", b, gen))
	if ch2 != nil {
		t.Fatal("follower sync with the old generation waits")
	}
	wantCode(t, "follower sync with the old generation", res2.code, kerr.IllegalGeneration)
	syncWaiting(t, "follower sync after a stale one", res, ch)

	resL, chL := ct.sync(syncReq("g", a, gen2, a, b))
	wantAssignment(t, "leader sync", syncAnswered(t, "leader sync", resL, chL), "assign-"+a)
	wantAssignment(t, "follower sync", syncAnswered(t, "follower sync", res, ch), "assign-"+b)
	ct.wantState("g", "Stable", a, b)
	wantCode(t, "leader heartbeat", ct.heartbeat("g", a, gen2), nil)
	wantCode(t, "follower heartbeat", ct.heartbeat("g", b, gen2), nil)

	// A follower rejoining with unchanged metadata while Stable gets the
	// current generation back without a rebalance.
	r := ct.joinNow("follower rejoin", ct.joinReq(4, "g", b))
	wantCode(t, "follower rejoin", r.ErrorCode, nil)
	if r.Generation != gen2 || r.LeaderID != a {
		t.Fatalf("follower rejoin: generation %d leader %s, want %d and %s", r.Generation, r.LeaderID, gen2, a)
	}
	ct.wantState("g", "Stable")
	wantCode(t, "leader heartbeat after follower rejoin", ct.heartbeat("g", a, gen2), nil)
}

// TestCoordinatorSyncInterruptedByJoin: a follower waiting for the
// leader's assignment is told REBALANCE_IN_PROGRESS when a new member
// joins before the leader synced, and the leader's late sync is refused.
func TestCoordinatorSyncInterruptedByJoin(t *testing.T) {
	ct := newCoordTest(t)
	ids, _, _ := ct.stableGroup("g", 1)
	b := ct.newID("g")
	gen, leader, _ := ct.joinAll("g", append(ids, b))
	res, ch := ct.sync(syncReq("g", b, gen))
	syncWaiting(t, "follower sync", res, ch)

	c := ct.newID("g")
	_, chC := ct.join(ct.joinReq(4, "g", c))
	joinWaiting(t, "third member's join", nil, chC)
	wantCode(t, "interrupted follower sync", syncAnswered(t, "follower sync", res, ch).code, kerr.RebalanceInProgress)
	resL, chL := ct.sync(syncReq("g", leader, gen, leader, b))
	if chL != nil {
		t.Fatal("leader sync during PreparingRebalance waits")
	}
	wantCode(t, "leader sync during PreparingRebalance", resL.code, kerr.RebalanceInProgress)
}

// TestCoordinatorHeartbeat: heartbeat answers in each phase of a
// rebalance.
func TestCoordinatorHeartbeat(t *testing.T) {
	ct := newCoordTest(t)
	ids, gen, _ := ct.stableGroup("g", 2)
	a, b := ids[0], ids[1]
	type hb struct {
		name          string
		group, member string
		gen           int32
		want          *kerr.Error
	}
	check := func(phase string, cases []hb) {
		t.Helper()
		for _, c := range cases {
			wantCode(t, phase+": "+c.name, ct.heartbeat(c.group, c.member, c.gen), c.want)
		}
	}
	check("stable", []hb{
		{"leader", "g", a, gen, nil},
		{"follower", "g", b, gen, nil},
		{"old generation", "g", a, gen - 1, kerr.IllegalGeneration},
		{"future generation", "g", b, gen + 1, kerr.IllegalGeneration},
		{"stranger", "g", "nobody", gen, kerr.UnknownMemberID},
		{"empty member id", "g", "", gen, kerr.UnknownMemberID},
		{"unknown group", "other", a, gen, kerr.UnknownMemberID},
	})

	c := ct.newID("g")
	_, chC := ct.join(ct.joinReq(4, "g", c))
	joinWaiting(t, "newcomer", nil, chC)
	check("newcomer joined", []hb{
		{"leader", "g", a, gen, kerr.RebalanceInProgress},
		{"follower", "g", b, gen, kerr.RebalanceInProgress},
		{"old generation", "g", a, gen - 1, kerr.IllegalGeneration},
		{"stranger", "g", "nobody", gen, kerr.UnknownMemberID},
	})

	_, chA := ct.join(ct.joinReq(4, "g", a))
	joinWaiting(t, "leader rejoin", nil, chA)
	check("leader rejoined", []hb{
		{"follower still to rejoin", "g", b, gen, kerr.RebalanceInProgress},
	})
	_, chB := ct.join(ct.joinReq(4, "g", b))
	gen2, leader := checkRound(t, map[string]*kmsg.JoinGroupResponse{
		a: joinAnswered(t, "a", nil, chA), b: joinAnswered(t, "b", nil, chB), c: joinAnswered(t, "c", nil, chC),
	})
	check("completing", []hb{
		{"leader", "g", a, gen2, nil},
		{"newcomer", "g", c, gen2, nil},
		{"generation before the rebalance", "g", b, gen, kerr.IllegalGeneration},
	})
	ct.syncAll("g", gen2, leader, []string{a, b, c})
	check("stable again", []hb{
		{"leader", "g", a, gen2, nil},
		{"follower", "g", b, gen2, nil},
		{"newcomer", "g", c, gen2, nil},
		{"generation before the rebalance", "g", c, gen, kerr.IllegalGeneration},
	})
}

// TestCoordinatorSessionExpiry: a member that stops heartbeating is removed
// once its session timeout has passed (not before); the survivor is told
// to rejoin and the next generation goes on without the dead member.
func TestCoordinatorSessionExpiry(t *testing.T) {
	for _, tc := range []struct {
		name string
		dead int // index of the member that goes silent
	}{
		{"follower expires", 1},
		{"leader expires", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := newCoordTest(t)
			ids, gen, _ := ct.stableGroup("g", 2)
			dead, alive := ids[tc.dead], ids[1-tc.dead]

			for range 3 {
				ct.advance(ct.session / 3)
				wantCode(t, "survivor heartbeat", ct.heartbeat("g", alive, gen), nil)
				ct.tick()
			}
			ct.advance(ct.session - 3*(ct.session/3)) // exactly one session after the last sync
			ct.tick()
			ct.wantState("g", "Stable", ids...)

			ct.advance(time.Millisecond)
			wantCode(t, "survivor heartbeat", ct.heartbeat("g", alive, gen), nil)
			ct.tick()
			ct.wantState("g", "PreparingRebalance", alive)
			wantCode(t, "survivor heartbeat after the expiry", ct.heartbeat("g", alive, gen), kerr.RebalanceInProgress)
			wantCode(t, "expired member's heartbeat", ct.heartbeat("g", dead, gen), kerr.UnknownMemberID)

			r := ct.joinNow("survivor rejoin", ct.joinReq(4, "g", alive))
			gen2, leader := checkRound(t, map[string]*kmsg.JoinGroupResponse{alive: r})
			if gen2 != gen+1 || leader != alive {
				t.Fatalf("generation %d leader %s, want %d and %s", gen2, leader, gen+1, alive)
			}
			ct.syncAll("g", gen2, alive, []string{alive})
		})
	}
}

// TestCoordinatorLeaveGroup: LeaveGroup v0 (one member) and v3 (a batch,
// each member with its own code) through the handler; a leave starts a
// rebalance, and the last member leaving empties the group.
func TestCoordinatorLeaveGroup(t *testing.T) {
	for _, tc := range []struct {
		version int16
		members int
	}{
		{0, 2},
		{3, 3},
	} {
		t.Run(fmt.Sprintf("v%d", tc.version), func(t *testing.T) {
			ct := newCoordTest(t)
			b := &Broker{groups: ct.c}
			ids, gen, _ := ct.stableGroup("g", tc.members)
			stay, leavers := ids[0], ids[1:]
			// leave sends one request (v0) or a batch (v3) and returns the
			// per-member codes.
			leave := func(members ...string) []int16 {
				t.Helper()
				var codes []int16
				if tc.version < 3 {
					for _, m := range members {
						req := kmsg.NewPtrLeaveGroupRequest()
						req.Version, req.Group, req.MemberID = tc.version, "g", m
						resp := b.handleLeaveGroup(caller{}, req).(*kmsg.LeaveGroupResponse)
						codes = append(codes, resp.ErrorCode)
					}
					return codes
				}
				req := kmsg.NewPtrLeaveGroupRequest()
				req.Version, req.Group = tc.version, "g"
				for _, m := range members {
					lm := kmsg.NewLeaveGroupRequestMember()
					lm.MemberID = m
					req.Members = append(req.Members, lm)
				}
				resp := b.handleLeaveGroup(caller{}, req).(*kmsg.LeaveGroupResponse)
				wantCode(t, "v3 top-level code", resp.ErrorCode, nil)
				for i, rm := range resp.Members {
					if rm.MemberID != members[i] {
						t.Fatalf("v3 answer %d names %q, want %q", i, rm.MemberID, members[i])
					}
					codes = append(codes, rm.ErrorCode)
				}
				return codes
			}

			codes := leave(append(slices.Clone(leavers), "nobody")...)
			if len(codes) != len(leavers)+1 {
				t.Fatalf("%d codes for %d members", len(codes), len(leavers)+1)
			}
			for i := range leavers {
				wantCode(t, "leave of "+leavers[i], codes[i], nil)
			}
			wantCode(t, "leave of a stranger", codes[len(leavers)], kerr.UnknownMemberID)
			ct.wantState("g", "PreparingRebalance", stay)
			wantCode(t, "remaining member's heartbeat", ct.heartbeat("g", stay, gen), kerr.RebalanceInProgress)
			wantCode(t, "departed member's heartbeat", ct.heartbeat("g", leavers[0], gen), kerr.UnknownMemberID)

			r := ct.joinNow("rejoin", ct.joinReq(4, "g", stay))
			gen2, _ := checkRound(t, map[string]*kmsg.JoinGroupResponse{stay: r})
			if gen2 != gen+1 {
				t.Fatalf("generation %d after the leave, want %d", gen2, gen+1)
			}
			ct.syncAll("g", gen2, stay, []string{stay})

			wantCode(t, "last member's leave", leave(stay)[0], nil)
			ct.wantState("g", "Empty", []string{}...)
			wantCode(t, "heartbeat after leaving", ct.heartbeat("g", stay, gen2), kerr.UnknownMemberID)
			wantCode(t, "simple commit on the emptied group", ct.c.commitCheck("g", "", -1, nil, ct.now), nil)
		})
	}

	t.Run("leave completes a waiting join", func(t *testing.T) {
		ct := newCoordTest(t)
		ids, gen, _ := ct.stableGroup("g", 2)
		a, b := ids[0], ids[1]
		c := ct.newID("g")
		_, chC := ct.join(ct.joinReq(4, "g", c))
		_, chA := ct.join(ct.joinReq(4, "g", a))
		joinWaiting(t, "newcomer", nil, chC)
		joinWaiting(t, "leader", nil, chA)
		lm := kmsg.NewLeaveGroupRequestMember()
		lm.MemberID = b
		if codes := ct.c.leave("g", []kmsg.LeaveGroupRequestMember{lm}, ct.now); codes[0] != 0 {
			t.Fatalf("leave: %s", codeName(codes[0]))
		}
		gen2, _ := checkRound(t, map[string]*kmsg.JoinGroupResponse{
			a: joinAnswered(t, "leader", nil, chA), c: joinAnswered(t, "newcomer", nil, chC),
		})
		if gen2 != gen+1 {
			t.Fatalf("generation %d, want %d", gen2, gen+1)
		}
		ct.wantState("g", "CompletingRebalance", a, c)
	})
}

// TestCoordinatorRebalanceTimeout: members that do not rejoin before the
// rebalance timeout are dropped when a tick passes the deadline, and the
// joins of the others complete; when nobody rejoins the group goes Empty.
func TestCoordinatorRebalanceTimeout(t *testing.T) {
	t.Run("laggard dropped", func(t *testing.T) {
		ct := newCoordTest(t)
		ct.session, ct.rebalance = 60*time.Second, 10*time.Second
		ids, gen, leader := ct.stableGroup("g", 2)
		a, b := ids[0], ids[1] // a, the leader, will not rejoin

		ct.advance(time.Second)
		start := ct.now
		c := ct.newID("g")
		_, chC := ct.join(ct.joinReq(4, "g", c))
		_, chB := ct.join(ct.joinReq(4, "g", b))
		for _, step := range []time.Duration{time.Second, 5 * time.Second, ct.rebalance - time.Millisecond} {
			ct.now = start.Add(step)
			// The laggard is alive, heartbeats, but does not rejoin.
			wantCode(t, "laggard heartbeat", ct.heartbeat("g", a, gen), kerr.RebalanceInProgress)
			ct.tick()
			joinWaiting(t, fmt.Sprintf("newcomer at +%s", step), nil, chC)
			joinWaiting(t, fmt.Sprintf("follower at +%s", step), nil, chB)
		}
		ct.now = start.Add(ct.rebalance + time.Millisecond)
		ct.tick()
		gen2, leader2 := checkRound(t, map[string]*kmsg.JoinGroupResponse{
			b: joinAnswered(t, "follower", nil, chB), c: joinAnswered(t, "newcomer", nil, chC),
		})
		if gen2 != gen+1 {
			t.Fatalf("generation %d, want %d", gen2, gen+1)
		}
		if leader2 == leader {
			t.Fatalf("the dropped leader %s still leads", leader)
		}
		ct.wantState("g", "CompletingRebalance", b, c)
		wantCode(t, "dropped member's heartbeat", ct.heartbeat("g", a, gen), kerr.UnknownMemberID)
		ct.syncAll("g", gen2, leader2, []string{b, c})
	})

	t.Run("nobody rejoins", func(t *testing.T) {
		ct := newCoordTest(t)
		ct.session, ct.rebalance = 60*time.Second, 10*time.Second
		ids, gen, _ := ct.stableGroup("g", 2)
		lm := kmsg.NewLeaveGroupRequestMember()
		lm.MemberID = ids[1]
		ct.c.leave("g", []kmsg.LeaveGroupRequestMember{lm}, ct.now)
		ct.wantState("g", "PreparingRebalance", ids[0])
		ct.advance(ct.rebalance - time.Millisecond)
		ct.tick()
		ct.wantState("g", "PreparingRebalance", ids[0])
		ct.advance(2 * time.Millisecond)
		ct.tick()
		ct.wantState("g", "Empty", []string{}...)
		wantCode(t, "dropped member's heartbeat", ct.heartbeat("g", ids[0], gen), kerr.UnknownMemberID)
		// The group starts over with a generation above the old ones.
		id := ct.newID("g")
		r := ct.joinNow("fresh join", ct.joinReq(4, "g", id))
		if r.Generation <= gen {
			t.Fatalf("fresh generation %d, want above %d", r.Generation, gen)
		}
	})
}

// TestCoordinatorStaticMembership (KIP-345): a static member restarting
// (rejoin without member id, same instance id) while Stable takes over its
// entry with a new member id and the same generation, without a
// rebalance; the old id is fenced; leaving by instance id rebalances.
func TestCoordinatorStaticMembership(t *testing.T) {
	ct := newCoordTest(t)
	const inst = "instance-s"

	// The static member joins without MEMBER_ID_REQUIRED.
	r := ct.joinNow("static join", staticJoinReq(ct, "g", "", inst))
	wantCode(t, "static join", r.ErrorCode, nil)
	s := r.MemberID
	if r.Generation != 1 || r.LeaderID != s || len(r.Members) != 1 || r.Members[0].InstanceID == nil || *r.Members[0].InstanceID != inst {
		t.Fatalf("static join: generation %d leader %s members %v", r.Generation, r.LeaderID, r.Members)
	}
	ct.syncAll("g", 1, s, []string{s})

	// A dynamic member joins; the static one rejoins with its id.
	d := ct.newID("g")
	_, chD := ct.join(ct.joinReq(4, "g", d))
	joinWaiting(t, "dynamic join", nil, chD)
	_, chS := ct.join(staticJoinReq(ct, "g", s, inst))
	gen, leader := checkRound(t, map[string]*kmsg.JoinGroupResponse{
		s: joinAnswered(t, "static rejoin", nil, chS), d: joinAnswered(t, "dynamic join", nil, chD),
	})
	if gen != 2 || leader != s {
		t.Fatalf("generation %d leader %s, want 2 and %s", gen, leader, s)
	}
	ct.syncAll("g", gen, s, []string{s, d})

	// The static member restarts: no member id, same instance id.
	ct.advance(time.Second)
	resp, ch := ct.join(staticJoinReq(ct, "g", "", inst))
	if ch != nil {
		joinWaiting(t, "static restart", nil, ch)
		t.Fatal("static restart waits for a rebalance")
	}
	wantCode(t, "static restart", resp.ErrorCode, nil)
	s2 := resp.MemberID
	if s2 == "" || s2 == s {
		t.Fatalf("static restart: member id %q, want a new one (old %q)", s2, s)
	}
	if resp.Generation != gen || resp.LeaderID != s2 {
		t.Fatalf("static restart: generation %d leader %s, want %d and itself (%s)", resp.Generation, resp.LeaderID, gen, s2)
	}
	if len(resp.Members) != 2 {
		t.Fatalf("static restart of the leader: member list %v, want 2 members", resp.Members)
	}
	ct.wantState("g", "Stable", s2, d)

	for _, c := range []struct {
		name string
		got  int16
		want *kerr.Error
	}{
		{"old id heartbeat", ct.heartbeat("g", s, gen, inst), kerr.FencedInstanceID},
		{"old id sync", func() int16 {
			req := syncReq("g", s, gen)
			req.InstanceID = kmsg.StringPtr(inst)
			res, ch := ct.sync(req)
			return syncAnswered(t, "old id sync", res, ch).code
		}(), kerr.FencedInstanceID},
		{"old id commit", ct.c.commitCheck("g", s, gen, kmsg.StringPtr(inst), ct.now), kerr.FencedInstanceID},
		{"old id join", ct.joinNow("old id join", staticJoinReq(ct, "g", s, inst)).ErrorCode, kerr.FencedInstanceID},
		{"new id heartbeat", ct.heartbeat("g", s2, gen, inst), nil},
		{"other member's heartbeat", ct.heartbeat("g", d, gen), nil},
		{"other member's commit", ct.c.commitCheck("g", d, gen, nil, ct.now), nil},
	} {
		wantCode(t, c.name, c.got, c.want)
	}
	ct.wantState("g", "Stable", s2, d)

	// The restarted member keeps its assignment.
	req := syncReq("g", s2, gen)
	req.InstanceID = kmsg.StringPtr(inst)
	res, sch := ct.sync(req)
	wantAssignment(t, "new id sync", syncAnswered(t, "new id sync", res, sch), "assign-"+s)

	// Leave by instance id: with the wrong member id it is fenced; with
	// the instance id alone it removes the member and rebalances.
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID, lm.InstanceID = s, kmsg.StringPtr(inst)
	wantCode(t, "leave with the old id", ct.c.leave("g", []kmsg.LeaveGroupRequestMember{lm}, ct.now)[0], kerr.FencedInstanceID)
	ct.wantState("g", "Stable", s2, d)
	lm.MemberID = ""
	wantCode(t, "leave by instance id", ct.c.leave("g", []kmsg.LeaveGroupRequestMember{lm}, ct.now)[0], nil)
	ct.wantState("g", "PreparingRebalance", d)
	wantCode(t, "other member's heartbeat after the leave", ct.heartbeat("g", d, gen), kerr.RebalanceInProgress)
	wantCode(t, "departed static member's heartbeat", ct.heartbeat("g", s2, gen, inst), kerr.UnknownMemberID)
}

// TestCoordinatorStaticRestartFencesWaitingJoin: when a static member
// restarts while its old incarnation waits in a join, the old join is
// answered FENCED_INSTANCE_ID and the new one takes its place in the
// rebalance.
func TestCoordinatorStaticRestartFencesWaitingJoin(t *testing.T) {
	ct := newCoordTest(t)
	const inst = "instance-s"
	ids, gen, _ := ct.stableGroup("g", 1)
	d := ids[0]

	resp, chOld := ct.join(staticJoinReq(ct, "g", "", inst))
	joinWaiting(t, "static join", resp, chOld)
	ct.wantState("g", "PreparingRebalance")

	resp, chNew := ct.join(staticJoinReq(ct, "g", "", inst))
	joinWaiting(t, "restarted static join", resp, chNew)
	old := joinAnswered(t, "old incarnation's join", nil, chOld)
	wantCode(t, "old incarnation's join", old.ErrorCode, kerr.FencedInstanceID)

	_, chD := ct.join(ct.joinReq(4, "g", d))
	rNew := joinAnswered(t, "restarted static join", nil, chNew)
	gen2, _ := checkRound(t, map[string]*kmsg.JoinGroupResponse{
		d: joinAnswered(t, "dynamic rejoin", nil, chD), rNew.MemberID: rNew,
	})
	if gen2 != gen+1 || rNew.MemberID == old.MemberID {
		t.Fatalf("generation %d, new id %s old id %s", gen2, rNew.MemberID, old.MemberID)
	}
	ct.wantState("g", "CompletingRebalance", d, rNew.MemberID)
}

// TestCoordinatorJoinErrors: requests the coordinator refuses at once,
// without disturbing the group.
func TestCoordinatorJoinErrors(t *testing.T) {
	ct := newCoordTest(t)
	ids, gen, _ := ct.stableGroup("g", 1)
	for _, tc := range []struct {
		name   string
		mutate func(*kmsg.JoinGroupRequest)
		want   *kerr.Error
	}{
		{"empty group id", func(r *kmsg.JoinGroupRequest) { r.Group = "" }, kerr.InvalidGroupID},
		{"session below the minimum", func(r *kmsg.JoinGroupRequest) { r.SessionTimeoutMillis = 999 }, kerr.InvalidSessionTimeout},
		{"session above the maximum", func(r *kmsg.JoinGroupRequest) { r.SessionTimeoutMillis = int32((31 * time.Minute).Milliseconds()) }, kerr.InvalidSessionTimeout},
		{"empty protocol type", func(r *kmsg.JoinGroupRequest) { r.ProtocolType = "" }, kerr.InconsistentGroupProtocol},
		{"no protocols", func(r *kmsg.JoinGroupRequest) { r.Protocols = nil }, kerr.InconsistentGroupProtocol},
		{"other protocol type", func(r *kmsg.JoinGroupRequest) { r.ProtocolType = "connect" }, kerr.InconsistentGroupProtocol},
		{"no common protocol", func(r *kmsg.JoinGroupRequest) { r.Protocols = protocols("roundrobin", "sticky") }, kerr.InconsistentGroupProtocol},
		{"unknown member id", func(r *kmsg.JoinGroupRequest) { r.MemberID = "nobody" }, kerr.UnknownMemberID},
		{"new group without protocols", func(r *kmsg.JoinGroupRequest) { r.Group, r.MemberID, r.Protocols = "fresh", "", nil }, kerr.InconsistentGroupProtocol},
	} {
		req := ct.joinReq(4, "g", ct.newID("g"))
		tc.mutate(req)
		r := ct.joinNow(tc.name, req)
		wantCode(t, tc.name, r.ErrorCode, tc.want)
		if r.Generation != -1 {
			t.Fatalf("%s: refused join carries generation %d", tc.name, r.Generation)
		}
		ct.wantState("g", "Stable", ids...)
		wantCode(t, tc.name+": heartbeat after the refused join", ct.heartbeat("g", ids[0], gen), nil)
	}

	// A member sharing one of the group's protocols is let in.
	id := ct.newID("g")
	req := ct.joinReq(4, "g", id)
	req.Protocols = protocols("sticky", "range")
	_, ch := ct.join(req)
	joinWaiting(t, "join with a shared protocol", nil, ch)
	ct.wantState("g", "PreparingRebalance", ids[0], id)
}

// TestCoordinatorCommitCheck: which OffsetCommits the group accepts in
// each state.
func TestCoordinatorCommitCheck(t *testing.T) {
	ct := newCoordTest(t)
	type commit struct {
		name, group, member string
		gen                 int32
		want                *kerr.Error
	}
	check := func(phase string, cases []commit) {
		t.Helper()
		for _, c := range cases {
			wantCode(t, phase+": "+c.name, ct.c.commitCheck(c.group, c.member, c.gen, nil, ct.now), c.want)
		}
	}
	check("no group", []commit{
		{"empty group id", "", "", -1, kerr.InvalidGroupID},
		{"simple commit", "g", "", -1, nil},
		{"member of an unknown group", "h", "m", 1, kerr.UnknownMemberID},
	})
	ct.wantState("g", "Empty")

	ids, gen, _ := ct.stableGroup("g", 1)
	a := ids[0]
	check("stable", []commit{
		{"member", "g", a, gen, nil},
		{"simple commit", "g", "", -1, kerr.UnknownMemberID},
		{"wrong generation", "g", a, gen + 1, kerr.IllegalGeneration},
		{"old generation", "g", a, gen - 1, kerr.IllegalGeneration},
		{"stranger", "g", "nobody", gen, kerr.UnknownMemberID},
		{"other, empty group", "h", "", -1, nil},
	})

	b := ct.newID("g")
	_, chB := ct.join(ct.joinReq(4, "g", b))
	check("preparing", []commit{
		{"member of the current generation", "g", a, gen, nil},
		{"simple commit", "g", "", -1, kerr.UnknownMemberID},
	})

	_, chA := ct.join(ct.joinReq(4, "g", a))
	gen2, leader := checkRound(t, map[string]*kmsg.JoinGroupResponse{
		a: joinAnswered(t, "a", nil, chA), b: joinAnswered(t, "b", nil, chB),
	})
	ct.wantState("g", "CompletingRebalance")
	check("completing", []commit{
		{"leader", "g", a, gen2, kerr.RebalanceInProgress},
		{"follower", "g", b, gen2, kerr.RebalanceInProgress},
		{"old generation", "g", a, gen, kerr.IllegalGeneration},
	})

	ct.syncAll("g", gen2, leader, []string{a, b})
	check("stable again", []commit{
		{"leader", "g", a, gen2, nil},
		{"follower", "g", b, gen2, nil},
		{"old generation", "g", b, gen, kerr.IllegalGeneration},
		{"simple commit", "g", "", -1, kerr.UnknownMemberID},
	})
}

// TestCoordinatorPendingMemberIDExpires: an id handed out with
// MEMBER_ID_REQUIRED is forgotten if the client does not come back within
// its session timeout.
func TestCoordinatorPendingMemberIDExpires(t *testing.T) {
	ct := newCoordTest(t)
	late := ct.newID("g")
	onTime := ct.newID("g")
	ct.advance(ct.session)
	ct.tick()
	r := ct.joinNow("join at the session timeout", ct.joinReq(4, "g", onTime))
	wantCode(t, "join at the session timeout", r.ErrorCode, nil)
	ct.advance(time.Millisecond)
	ct.tick()
	r = ct.joinNow("join after the pending id expired", ct.joinReq(4, "g", late))
	wantCode(t, "join after the pending id expired", r.ErrorCode, kerr.UnknownMemberID)
}

// TestCoordinatorCloseAnswersWaiters: close answers waiting joins and
// syncs with COORDINATOR_NOT_AVAILABLE, and later joins get it at once.
func TestCoordinatorCloseAnswersWaiters(t *testing.T) {
	ct := newCoordTest(t)

	// Group j: a newcomer waits in JoinGroup for the old member.
	ct.stableGroup("j", 1)
	nj := ct.newID("j")
	_, chJ := ct.join(ct.joinReq(4, "j", nj))
	joinWaiting(t, "waiting join", nil, chJ)

	// Group s: a follower waits in SyncGroup for the leader.
	ids, _, _ := ct.stableGroup("s", 1)
	ns := ct.newID("s")
	gen, leader, _ := ct.joinAll("s", append(ids, ns))
	follower := ids[0]
	if leader == follower {
		follower = ns
	}
	res, chS := ct.sync(syncReq("s", follower, gen))
	syncWaiting(t, "waiting sync", res, chS)

	ct.c.close()
	r := joinAnswered(t, "waiting join after close", nil, chJ)
	wantCode(t, "waiting join after close", r.ErrorCode, kerr.CoordinatorNotAvailable)
	if r.MemberID != nj {
		t.Fatalf("join answer after close names %q, want %q", r.MemberID, nj)
	}
	wantCode(t, "waiting sync after close", syncAnswered(t, "waiting sync after close", res, chS).code, kerr.CoordinatorNotAvailable)
	r = ct.joinNow("join after close", ct.joinReq(4, "j", ""))
	wantCode(t, "join after close", r.ErrorCode, kerr.CoordinatorNotAvailable)
}

// TestCoordinatorGroupsFromCommittedOffsets: groups with committed offsets
// exist, Empty, in a new coordinator.
func TestCoordinatorGroupsFromCommittedOffsets(t *testing.T) {
	dir := t.TempDir()
	store, err := storage.OpenOffsetStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	err = store.Commit(map[storage.OffsetKey]storage.Committed{
		{Group: "restored", Topic: "t", Partition: 0}: {Offset: 7, LeaderEpoch: -1},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	c := newCoordinator(store, DefaultConfig(), slog.New(slog.DiscardHandler))
	defer c.close()
	if d := c.describe("restored"); d.State != "Empty" {
		t.Fatalf("restored group is %s, want Empty", d.State)
	}
	if d := c.describe("never"); d.State != "Dead" {
		t.Fatalf("unknown group is %s, want Dead", d.State)
	}
	if l := c.list(); len(l) != 1 || l[0].Group != "restored" || l[0].GroupState != "Empty" {
		t.Fatalf("list: %v", l)
	}
}
