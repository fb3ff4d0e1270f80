package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mecha/internal/clustermap"
	"mecha/internal/fsutil"
	"mecha/internal/muxconn"
	"mecha/internal/poll"
	"mecha/internal/replica"
	"mecha/statestore"
)

// replMember is one member of a replicated test cluster: an engine in its
// own dir, a Server with replication on, behind a muxconn listener that
// the test can take down (a dead or cut-off member).
type replMember struct {
	id     string
	dir    string
	eng    *statestore.Engine
	maps   *MapVar
	srv    *Server
	detach func()
	lis    net.Listener
	addr   string
	router *Router
}

// replCluster is three replicated members and the control plane's part
// played by the test: it applies ISR proposals and deaths to one map and
// publishes it to every member.
type replCluster struct {
	t       testing.TB
	mu      sync.Mutex
	m       *clustermap.Map
	members []*replMember
	clients *Clients
	// onStoreFailure, when set, is told the member whose store failed
	// to write (the runtime drains it).
	onStoreFailure func(member string)
	// proposeHook, when set, sees every ISR proposal before it applies
	// (it may hold it).
	proposeHook func(c clustermap.ISRChange)
}

func newReplCluster(t testing.TB) *replCluster {
	t.Helper()
	rc := &replCluster{t: t, clients: &Clients{Token: "tok"}}
	t.Cleanup(func() { rc.clients.Close() })
	m := clustermap.New()
	var err error
	if m, err = clustermap.Apply(m, clustermap.Bootstrap{ClusterID: "test", Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	rc.m = m
	for _, id := range []string{"a", "b", "c"} {
		mb := &replMember{id: id, dir: t.TempDir()}
		rc.members = append(rc.members, mb)
		rc.start(mb)
		rc.apply(clustermap.MemberJoin{ID: id, Addr: mb.addr, Roles: []string{clustermap.RoleData}, At: 1})
	}
	rc.plan()
	t.Cleanup(func() {
		for _, mb := range rc.members {
			rc.stop(mb)
		}
	})
	return rc
}

// start opens mb's engine and serves it on a new loopback listener.
func (rc *replCluster) start(mb *replMember) {
	t := rc.t
	eng, err := statestore.Open(statestore.Options{Dir: mb.dir, Logger: quiet(), SnapshotLogBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	mb.eng = eng
	if mb.maps == nil {
		mb.maps = NewMapVar(rc.m)
	}
	mb.srv = NewServer(mb.id, mb.maps, quiet())
	mb.srv.Replicate = &ReplicationConfig{Clients: rc.clients, Propose: rc.propose, FetchWait: 200 * time.Millisecond}
	id := mb.id
	mb.srv.OnStoreFailure = func(string, error) {
		if f := rc.onStoreFailure; f != nil {
			f(id)
		}
	}
	mb.detach = mb.srv.Attach(testStore, eng)
	mux := &muxconn.Server{Token: "tok", Logger: quiet(), Handler: mb.srv.Handle}
	addr := "127.0.0.1:0"
	if mb.addr != "" {
		addr = mb.addr
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	mb.lis, mb.addr = l, l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				p := make([]byte, len(muxconn.Preface))
				if _, err := c.Read(p); err != nil || string(p) != muxconn.Preface {
					c.Close()
					return
				}
				mux.ServeConn(context.Background(), c, nil)
			}()
		}
	}()
	srv := mb.srv
	mb.router = NewRouter(RouterConfig{Member: mb.id, Store: testStore, Maps: mb.maps, Engine: eng, Clients: rc.clients, MapWait: 300 * time.Millisecond, Logger: quiet(),
		GetStrong: func(ctx context.Context, key string) (statestore.Item, bool, error) {
			return srv.GetStrong(ctx, testStore, eng, key)
		},
		OnStoreFailure: srv.OnStoreFailure})
}

// stop takes mb down: its listener, replication and engine.
func (rc *replCluster) stop(mb *replMember) {
	if mb.eng == nil {
		return
	}
	mb.lis.Close()
	mb.detach()
	mb.eng.Close()
	mb.eng = nil
}

func (rc *replCluster) apply(c clustermap.Command) error { return rc.applyExcept(c, "") }

// applyExcept applies c and publishes the map to every member but
// except (cut off from the control plane).
func (rc *replCluster) applyExcept(c clustermap.Command, except string) error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	m, err := clustermap.Apply(rc.m, c)
	if err != nil {
		return err
	}
	rc.m = m
	for _, mb := range rc.members {
		if mb.maps != nil && mb.id != except {
			mb.maps.Store(m)
		}
	}
	return nil
}

func (rc *replCluster) plan() {
	for {
		rc.mu.Lock()
		cmds := clustermap.Plan(rc.m, clustermap.PlanConfig{NoMoves: true})
		rc.mu.Unlock()
		if len(cmds) == 0 {
			return
		}
		for _, c := range cmds {
			if err := rc.apply(c); err != nil {
				rc.t.Fatalf("plan %T: %v", c, err)
			}
		}
	}
}

func (rc *replCluster) propose(_ context.Context, c clustermap.ISRChange) error {
	rc.mu.Lock()
	hook := rc.proposeHook
	rc.mu.Unlock()
	if hook != nil {
		hook(c)
	}
	return rc.apply(c)
}

func (rc *replCluster) mapNow() *clustermap.Map {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.m
}

func (rc *replCluster) member(id string) *replMember {
	for _, mb := range rc.members {
		if mb.id == id {
			return mb
		}
	}
	rc.t.Fatalf("no member %q", id)
	return nil
}

// keyLedBy returns a key of a slot led by leader, the n-th such.
func keyLedBy(m *clustermap.Map, leader string, n int) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("k%d", i)
		if m.Slot(statestore.SlotOf(k)).Leader == leader {
			if n == 0 {
				return k
			}
			n--
		}
	}
}

// waitValue polls mb's engine until key holds want.
func waitValue(t *testing.T, mb *replMember, key, want string) {
	t.Helper()
	poll.Until(t, 10*time.Second, fmt.Sprintf("member %s: key %q = %q", mb.id, key, want), func() bool {
		it, ok, _ := mb.eng.Get(key)
		return ok && string(it.Value) == want
	})
}

func TestReplicationFollowersGetWrites(t *testing.T) {
	rc := newReplCluster(t)
	a := rc.member("a")
	ctx := context.Background()
	var keys []string
	for i := range 50 {
		k := keyLedBy(rc.mapNow(), "a", i)
		keys = append(keys, k)
		if _, err := a.router.Set(ctx, statestore.Write{Key: k, Value: []byte("v-" + k)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, mb := range rc.members {
		for _, k := range keys {
			waitValue(t, mb, k, "v-"+k)
		}
	}
	// Versions (ETags) are the same on every replica.
	it, _, _ := a.eng.Get(keys[3])
	for _, mb := range rc.members {
		got, _, _ := mb.eng.Get(keys[3])
		if got.Version != it.Version {
			t.Fatalf("member %s has version %d of %q, the leader %d", mb.id, got.Version, keys[3], it.Version)
		}
	}
	// A follower refuses writes to the slot.
	b := rc.member("b")
	if _, err := b.eng.Set(statestore.Write{Key: keys[0], Value: []byte("x")}); !isMoved(err) {
		t.Fatalf("a write on a follower: %v, want moved", err)
	}
}

// A follower of a quiet slot, whose fetch stands at the leader with
// nothing to answer, still hears of the leader's newer high watermark
// (it settles a deposed leader's carried strong writes).
func TestReplicationQuietFollowerHearsHighWatermark(t *testing.T) {
	rc := newReplCluster(t)
	a := rc.member("a")
	k := keyLedBy(rc.mapNow(), "a", 0)
	slot := statestore.SlotOf(k)
	followerHW := func(mb *replMember) int64 {
		var hw int64 = -1
		mb.eng.WithSlot(slot, func(statestore.SlotTx) {
			if f := mb.srv.Replication(testStore).slots[slot].follower; f != nil {
				hw = f.HighWatermark()
			}
		})
		return hw
	}
	// The second write finds the followers tailing (the first may come
	// with their copies of the slot).
	for i, v := range []string{"one", "two"} {
		if _, err := a.router.Set(context.Background(), statestore.Write{Key: k, Value: []byte(v), Strong: true}); err != nil {
			t.Fatal(err)
		}
		var leaderHW int64
		a.eng.WithSlot(slot, func(statestore.SlotTx) { leaderHW = a.srv.Replication(testStore).slots[slot].leader.HighWatermark() })
		if leaderHW != int64(i+1) {
			t.Fatalf("the leader's high watermark after %d strong writes: %d", i+1, leaderHW)
		}
		for _, mb := range rc.members {
			if mb.id != "a" {
				poll.Until(t, 5*time.Second, fmt.Sprintf("%s hears high watermark %d", mb.id, leaderHW), func() bool { return followerHW(mb) >= leaderHW })
			}
		}
	}
}

// An ISR proposal still on its way to the control plane is settled only
// by a change of the slot's own in-sync set, not by a map that changed
// elsewhere: the leader keeps counting the members it proposed, since
// the proposal may yet apply (a leader that stopped counting a member
// the control plane then took in could acknowledge a strong write that
// member lacks, and the member could be elected).
func TestReplicationProposalOutlivesUnrelatedMaps(t *testing.T) {
	rc := newReplCluster(t)
	a := rc.member("a")
	k := keyLedBy(rc.mapNow(), "a", 0)
	slot := statestore.SlotOf(k)
	other := statestore.SlotOf(keyLedBy(rc.mapNow(), "b", 0))
	release := make(chan struct{})
	held := make(chan clustermap.ISRChange, 1)
	rc.mu.Lock()
	rc.proposeHook = func(c clustermap.ISRChange) {
		if c.Ref == clustermap.SlotRef(slot) && len(c.ISR) == 3 {
			select {
			case held <- c:
			default:
			}
			<-release
		}
	}
	rc.mu.Unlock()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	voters := func(mb *replMember, slot int) []replica.ReplicaID {
		var v []replica.ReplicaID
		mb.eng.WithSlot(slot, func(statestore.SlotTx) {
			if l := mb.srv.Replication(testStore).slots[slot].leader; l != nil {
				v = slices.Clone(l.Voters())
			}
		})
		return v
	}
	g := rc.mapNow().Slot(slot)
	// The control plane takes c out; c keeps fetching, so a proposes it
	// back in, and the proposal is held on its way.
	if err := rc.apply(clustermap.ISRChange{Ref: clustermap.SlotRef(slot), ISR: []string{"a", "b"}, Epoch: g.Epoch}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.router.Set(context.Background(), statestore.Write{Key: k, Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	var p clustermap.ISRChange
	select {
	case p = <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("a never proposed c back into the in-sync set")
	}
	if !slices.Equal(p.From, []string{"a", "b"}) {
		t.Fatalf("proposal %+v: From %v, want [a b]", p, p.From)
	}
	// c stops (the control plane has not noticed): from now on only the
	// proposal keeps a counting c.
	rc.stop(rc.member("c"))
	// A map that changed elsewhere: another slot's in-sync set.
	og := rc.mapNow().Slot(other)
	// (Without c, which is down and cannot be proposed back.)
	if err := rc.apply(clustermap.ISRChange{Ref: clustermap.SlotRef(other), ISR: slices.DeleteFunc(slices.Clone(og.ISR), func(id string) bool { return id == "c" }), Epoch: og.Epoch}); err != nil {
		t.Fatal(err)
	}
	// (b, the other slot's leader, may propose c back in: a fetch c
	// sent before it stopped can reach b after this change. That is one
	// more unrelated map.)
	poll.Until(t, 5*time.Second, "a to hear of the new map", func() bool {
		var seen uint64
		a.eng.WithSlot(slot, func(statestore.SlotTx) { seen = a.srv.Replication(testStore).slots[slot].isrMap })
		return seen == rc.mapNow().Version
	})
	if v := voters(a, slot); !slices.Contains(v, ReplicaID("c")) {
		t.Fatalf("a unrelated map settled the proposal still on its way: a counts %v, without c", v)
	}
	close(release)
	poll.Until(t, 5*time.Second, "the proposal to apply", func() bool { return len(rc.mapNow().Slot(slot).ISR) == 3 })
	// Once applied, a proposal based on a set the map no longer holds
	// is refused.
	if err := rc.apply(p); !errors.Is(err, clustermap.ErrStaleISR) {
		t.Fatalf("the same proposal again: %v, want ErrStaleISR", err)
	}
}

func TestReplicationStrongSurvivesLeaderDeath(t *testing.T) {
	rc := newReplCluster(t)
	ctx := context.Background()
	b := rc.member("b")
	// Strong writes through b's router to keys a leads.
	var keys []string
	for i := range 40 {
		k := keyLedBy(rc.mapNow(), "a", i)
		keys = append(keys, k)
		if _, err := b.router.Set(ctx, statestore.Write{Key: k, Value: []byte("s-" + k), Strong: true}); err != nil {
			t.Fatalf("strong write %q: %v", k, err)
		}
	}
	// Acknowledged strong: every in-sync replica has it now, no polling.
	for _, k := range keys {
		for _, id := range []string{"b", "c"} {
			mb := rc.member(id)
			if g := rc.mapNow().Slot(statestore.SlotOf(k)); !g.InSync(id) {
				continue
			}
			if it, ok, _ := mb.eng.Get(k); !ok || string(it.Value) != "s-"+k {
				t.Fatalf("acknowledged strong write %q is not on in-sync replica %s", k, id)
			}
		}
	}
	// a dies: the control plane fails its slots over to in-sync replicas.
	rc.stop(rc.member("a"))
	if err := rc.apply(clustermap.MemberDead{ID: "a", At: 2}); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		poll.Until(t, 10*time.Second, fmt.Sprintf("key %q after the failover", k), func() bool {
			it, ok, err := b.router.Get(ctx, k)
			return err == nil && ok && string(it.Value) == "s-"+k
		})
	}
	// Writes go on with two replicas, strong ones included.
	poll.Until(t, 10*time.Second, "a strong write after the failover", func() bool {
		_, err := b.router.Set(ctx, statestore.Write{Key: keys[0], Value: []byte("after"), Strong: true})
		return err == nil
	})

	// a returns with its data: it follows, and catches up.
	a := rc.member("a")
	rc.start(a)
	if err := rc.apply(clustermap.MemberAlive{ID: "a", At: 3}); err != nil {
		t.Fatal(err)
	}
	waitValue(t, a, keys[0], "after")
	// And rejoins the in-sync set of the slot.
	slot := statestore.SlotOf(keys[0])
	poll.Until(t, 15*time.Second, fmt.Sprintf("a back in slot %d's in-sync set", slot), func() bool { return rc.mapNow().Slot(slot).InSync("a") })
}

func TestReplicationDivergentTailIsDropped(t *testing.T) {
	rc := newReplCluster(t)
	ctx := context.Background()
	a := rc.member("a")
	k := keyLedBy(rc.mapNow(), "a", 0)
	if _, err := a.router.Set(ctx, statestore.Write{Key: k, Value: []byte("one"), Strong: true}); err != nil {
		t.Fatal(err)
	}
	// a is cut off from the control plane, which declares it dead: b or
	// c leads its slots at a new epoch and stops fetching from it. a,
	// not told, still takes an eventual write that nobody fetches.
	if err := rc.applyExcept(clustermap.MemberDead{ID: "a", At: 2}, "a"); err != nil {
		t.Fatal(err)
	}
	g := rc.mapNow().Slot(statestore.SlotOf(k))
	nl := rc.member(g.Leader)
	poll.Until(t, 10*time.Second, "a strong write on the new leader", func() bool {
		_, err := nl.router.Set(ctx, statestore.Write{Key: k, Value: []byte("two"), Strong: true})
		return err == nil
	})
	if _, err := a.eng.Set(statestore.Write{Key: k, Value: []byte("lost")}); err != nil {
		t.Fatal(err)
	}
	// a hears of the new map: its leadership is fenced, it refuses
	// writes, and its divergent "lost" gives way to the leader's state.
	if err := rc.apply(clustermap.MemberAlive{ID: "a", At: 3}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "a refuses writes to the slot", func() bool {
		_, err := a.eng.Set(statestore.Write{Key: k, Value: []byte("x")})
		return isMoved(err)
	})
	waitValue(t, a, k, "two")
	want, _, _ := nl.eng.Get(k)
	got, _, _ := a.eng.Get(k)
	if got.Version != want.Version {
		t.Fatalf("a has version %d, the leader %d", got.Version, want.Version)
	}
	// And after a restart it still matches.
	rc.stop(a)
	rc.start(a)
	waitValue(t, a, k, "two")
}

// BenchmarkReplicatedSet is a write through the leader's router in a
// three-member replicated cluster, eventual against strong, beside the
// same write without replication (the floor).
func BenchmarkReplicatedSet(b *testing.B) {
	b.Run("single", func(b *testing.B) {
		eng, err := statestore.Open(statestore.Options{Dir: b.TempDir(), Logger: quiet(), SnapshotLogBytes: -1})
		if err != nil {
			b.Fatal(err)
		}
		defer eng.Close()
		for i := 0; i < b.N; i++ {
			if _, err := eng.Set(statestore.Write{Key: "k", Value: []byte("value")}); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, mode := range []string{"eventual", "strong"} {
		b.Run(mode, func(b *testing.B) {
			rc := newReplCluster(b)
			a := rc.member("a")
			k := keyLedBy(rc.mapNow(), "a", 0)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := a.router.Set(ctx, statestore.Write{Key: k, Value: []byte("value"), Strong: mode == "strong"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestReplicationStrongReadIsConfirmed(t *testing.T) {
	rc := newReplCluster(t)
	ctx := context.Background()
	a, b := rc.member("a"), rc.member("b")
	k := keyLedBy(rc.mapNow(), "a", 0)
	if _, err := b.router.Set(ctx, statestore.Write{Key: k, Value: []byte("one"), Strong: true}); err != nil {
		t.Fatal(err)
	}
	for _, mb := range rc.members { // through the leader's router and the others'
		it, ok, err := mb.router.GetStrong(ctx, k)
		if err != nil || !ok || string(it.Value) != "one" {
			t.Fatalf("strong read through %s: %q %v %v", mb.id, it.Value, ok, err)
		}
	}
	// a is cut off from the control plane, which makes b or c the
	// leader. a still believes it leads, and its plain reads answer; a
	// strong read through it does not, since its followers no longer
	// fetch from it at its epoch.
	if err := rc.applyExcept(clustermap.MemberDead{ID: "a", At: 2}, "a"); err != nil {
		t.Fatal(err)
	}
	nl := rc.member(rc.mapNow().Slot(statestore.SlotOf(k)).Leader)
	poll.Until(t, 10*time.Second, "a strong write on the new leader", func() bool {
		_, err := nl.router.Set(ctx, statestore.Write{Key: k, Value: []byte("two"), Strong: true})
		return err == nil
	})
	if it, ok, err := a.router.Get(ctx, k); err != nil || !ok || string(it.Value) != "one" {
		t.Fatalf("a plain read on the deposed leader: %q %v %v (it should still serve its stale copy)", it.Value, ok, err)
	}
	if it, _, err := a.router.GetStrong(ctx, k); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a strong read on the deposed leader: %q %v, want ErrUnavailable", it.Value, err)
	}
	if it, _, err := nl.router.GetStrong(ctx, k); err != nil || string(it.Value) != "two" {
		t.Fatalf("a strong read on the new leader: %q %v", it.Value, err)
	}
}

// BenchmarkReplicatedGetStrong is a strong read through the leader's
// router (confirmed by two fetch round trips of each in-sync follower)
// beside an eventual one, in a three-member replicated cluster.
func BenchmarkReplicatedGetStrong(b *testing.B) {
	for _, mode := range []string{"eventual", "strong"} {
		b.Run(mode, func(b *testing.B) {
			rc := newReplCluster(b)
			a := rc.member("a")
			k := keyLedBy(rc.mapNow(), "a", 0)
			ctx := context.Background()
			if _, err := a.router.Set(ctx, statestore.Write{Key: k, Value: []byte("value"), Strong: true}); err != nil {
				b.Fatal(err)
			}
			get := a.router.Get
			if mode == "strong" {
				get = a.router.GetStrong
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := get(ctx, k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// settle runs the planner with moves until it has nothing to do and no
// move is in flight: the control plane's controller, in the test.
func (rc *replCluster) settle(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rc.mu.Lock()
		cmds := clustermap.Plan(rc.m, clustermap.PlanConfig{MaxMoves: 64}) // the runtime's bound
		moving := 0
		for i := range statestore.NumSlots {
			if rc.m.Slot(i).Move != nil {
				moving++
			}
		}
		rc.mu.Unlock()
		if len(cmds) == 0 && moving == 0 {
			return
		}
		for _, c := range cmds {
			_ = rc.apply(c) // a command made stale by an ISR change is planned again
		}
		if time.Now().After(deadline) {
			t.Fatalf("the planner did not settle in %v: %d moves in flight, %d commands planned", timeout, moving, len(cmds))
		}
		time.Sleep(20 * time.Millisecond) // the controller's tick; the moves progress by themselves
	}
}

func TestReplicationMoveToNewMember(t *testing.T) {
	rc := newReplCluster(t)
	ctx := context.Background()
	a := rc.member("a")
	const n = 300
	for i := range n {
		if _, err := a.router.Set(ctx, statestore.Write{Key: fmt.Sprintf("user-%d", i), Value: []byte(fmt.Sprint(i)), Strong: true}); err != nil {
			t.Fatal(err)
		}
	}
	// d joins: the planner moves replicas and leaderships to it, while
	// writes go on.
	d := &replMember{id: "d", dir: t.TempDir()}
	rc.members = append(rc.members, d)
	rc.start(d)
	if err := rc.apply(clustermap.MemberJoin{ID: "d", Addr: d.addr, Roles: []string{clustermap.RoleData}, At: 5}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failures []error
	var fmu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("user-%d", i%n)
			if _, err := a.router.Set(ctx, statestore.Write{Key: k, Value: []byte(fmt.Sprint(i % n)), Strong: true}); err != nil && !errors.Is(err, ErrUnavailable) {
				fmu.Lock()
				failures = append(failures, fmt.Errorf("%s: %w", k, err))
				fmu.Unlock()
			}
		}
	}()
	rc.settle(t, 60*time.Second)
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d writes failed with a non-retriable error during the moves, the first: %v", len(failures), failures[0])
	}
	m := rc.mapNow()
	leads := map[string]int{}
	for i := range statestore.NumSlots {
		leads[m.Slot(i).Leader]++
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		if l := leads[id]; l < 230 || l > 282 { // 256 ± 10%
			t.Fatalf("after the moves %s leads %d slots: %v", id, l, leads)
		}
	}
	for i := range n {
		k := fmt.Sprintf("user-%d", i)
		it, ok, err := d.router.GetStrong(ctx, k)
		if err != nil || !ok || string(it.Value) != fmt.Sprint(i) {
			t.Fatalf("%s through d after the moves: %q %v %v", k, it.Value, ok, err)
		}
	}
	// A member the slot moved away from holds none of its keys.
	for i := range n {
		k := fmt.Sprintf("user-%d", i)
		g := m.Slot(statestore.SlotOf(k))
		for _, mb := range rc.members {
			if _, ok, _ := mb.eng.Get(k); ok != g.HasReplica(mb.id) {
				t.Fatalf("%s on %s: held %v, a replica %v", k, mb.id, ok, g.HasReplica(mb.id))
			}
		}
	}
}

// isMoved says whether err is a "moved" answer: the write was refused
// before it was logged, and the router would retry it at the leader.
func isMoved(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == CodeMoved
}

// TestReplicationFullDiskDrains: a member whose disk is full fails its
// writes and reports it; drained (as the runtime does), its leaderships
// move to in-sync replicas and the keys it led take writes again.
func TestReplicationFullDiskDrains(t *testing.T) {
	rc := newReplCluster(t)
	ctx := context.Background()
	a, b := rc.member("a"), rc.member("b")
	k := keyLedBy(rc.mapNow(), "a", 0)
	if _, err := b.router.Set(ctx, statestore.Write{Key: k, Value: []byte("before"), Strong: true}); err != nil {
		t.Fatal(err)
	}
	failed := make(chan string, 16)
	rc.onStoreFailure = func(id string) {
		select {
		case failed <- id:
		default:
		}
	}
	t.Cleanup(fsutil.SetFaults(fsutil.Faults{
		Write: func(name string, p []byte, _ int64) (int, error) {
			if strings.HasPrefix(name, a.dir) {
				return 0, syscall.ENOSPC
			}
			return len(p), nil
		},
		Allocate: func(name string, _, _ int64) error {
			if strings.HasPrefix(name, a.dir) {
				return syscall.ENOSPC
			}
			return nil
		},
	}))
	_, err := b.router.Set(ctx, statestore.Write{Key: k, Value: []byte("full"), Strong: true})
	if err == nil || !errors.Is(err, statestore.ErrFailed) && !errors.Is(err, statestore.ErrNoSpace) {
		t.Fatalf("a write to the full member's slot: %v, want its disk failure", err)
	}
	select {
	case id := <-failed:
		if id != "a" {
			t.Fatalf("member %s reported a store failure", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the full member did not report its store failure")
	}
	if err := rc.apply(clustermap.MemberDrain{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	// The controller plans until a leads nothing.
	poll.Until(t, 15*time.Second, "the full member's leaderships moved away", func() bool {
		rc.mu.Lock()
		cmds := clustermap.Plan(rc.m, clustermap.PlanConfig{})
		rc.mu.Unlock()
		for _, c := range cmds {
			_ = rc.apply(c)
		}
		m := rc.mapNow()
		for i := range statestore.NumSlots {
			if m.Slot(i).Leader == "a" {
				return false
			}
		}
		return true
	})
	if _, err := b.router.Set(ctx, statestore.Write{Key: k, Value: []byte("after"), Strong: true}); err != nil {
		t.Fatalf("a write after the drain: %v", err)
	}
	if it, _, err := b.router.GetStrong(ctx, k); err != nil || string(it.Value) != "after" {
		t.Fatalf("read after the drain: %q %v", it.Value, err)
	}
}

// BenchmarkReplicaLag writes eventual updates at a fixed rate (LAG_RATE,
// 20,000/s by default) for three seconds through the leader of 64 slots
// in a three-member replicated cluster, and measures each write's
// replication lag: from its acknowledgement on the leader to the moment
// a follower's engine holds it (both followers polled every 100 µs).
// Run it once: go test -run - -bench ReplicaLag -benchtime 1x.
func BenchmarkReplicaLag(b *testing.B) {
	rate := 20000
	if v := os.Getenv("LAG_RATE"); v != "" {
		rate, _ = strconv.Atoi(v)
	}
	rc := newReplCluster(b)
	a := rc.member("a")
	followers := []*replMember{rc.member("b"), rc.member("c")}
	m := rc.mapNow()
	var keys []string
	var slots []int
	seen := map[int]bool{}
	for i := 0; len(keys) < 64; i++ {
		k := fmt.Sprintf("lag-%d", i)
		s := statestore.SlotOf(k)
		if m.Slot(s).Leader == "a" && !seen[s] && m.Slot(s).HasReplica("b") && m.Slot(s).HasReplica("c") {
			seen[s] = true
			keys, slots = append(keys, k), append(slots, s)
		}
	}
	// The followers start with copies of the leader's slots: measured
	// from when each has them and fetches (a strong write commits).
	for _, k := range keys {
		poll.Until(b, 10*time.Second, "the followers fetch", func() bool {
			_, err := a.router.Set(context.Background(), statestore.Write{Key: k, Value: []byte("x"), Strong: true})
			return err == nil
		})
	}
	type sent struct {
		seq uint64
		at  time.Time
	}
	var mu sync.Mutex
	queues := make([][]sent, len(slots)*len(followers))
	var lags []time.Duration
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the poller
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			now := time.Now()
			for fi, f := range followers {
				for si, s := range slots {
					seq := f.eng.SlotSeq(s)
					q := fi*len(slots) + si
					mu.Lock()
					for len(queues[q]) > 0 && queues[q][0].seq <= seq {
						lags = append(lags, now.Sub(queues[q][0].at))
						queues[q] = queues[q][1:]
					}
					mu.Unlock()
				}
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	n := 0
	for time.Since(start) < 3*time.Second {
		due := int(time.Since(start).Seconds() * float64(rate))
		for ; n < due; n++ {
			i := n % len(keys)
			v, err := a.router.Set(ctx, statestore.Write{Key: keys[i], Value: []byte("a session value of some fifty bytes, as the IM's")})
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			mu.Lock()
			for fi := range followers {
				q := fi*len(slots) + i
				queues[q] = append(queues[q], sent{seq: v, at: now})
			}
			mu.Unlock()
		}
		time.Sleep(200 * time.Microsecond)
	}
	elapsed := time.Since(start)
	// Let the followers catch up before the poller stops.
	poll.Until(b, 10*time.Second, "the followers caught up", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, q := range queues {
			if len(q) > 0 {
				return false
			}
		}
		return true
	})
	close(stop)
	<-done
	b.StopTimer()
	slices.Sort(lags)
	pct := func(p float64) float64 { return float64(lags[int(p*float64(len(lags)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(n)/elapsed.Seconds(), "writes/s")
	b.ReportMetric(pct(0.5), "p50-lag-ms")
	b.ReportMetric(pct(0.99), "p99-lag-ms")
	b.ReportMetric(pct(1), "max-lag-ms")
}

// BenchmarkMigrate moves the slots of a three-member replicated cluster
// holding MIGRATE_KEYS keys (1,000,000 by default) to a fourth member, as
// the control plane's planner does, while a writer keeps updating keys,
// and reports how long until every member leads its share with no move
// in flight, and the writes that failed meanwhile (retriable ones).
// Run it once: go test -run - -bench Migrate -benchtime 1x.
func BenchmarkMigrate(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("MIGRATE_KEYS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	rc := newReplCluster(b)
	ctx := context.Background()
	a := rc.member("a")
	value := []byte(`{"gw":"gw-1","device":"ios","seen":1700000000}`)
	for i := range n {
		if _, err := a.router.Set(ctx, statestore.Write{Key: fmt.Sprintf("user-%d", i), Value: value}); err != nil {
			b.Fatal(err)
		}
	}
	poll.Until(b, 60*time.Second, "the followers caught up", func() bool {
		for _, id := range []string{"b", "c"} {
			if rc.member(id).eng.Len() < n {
				return false
			}
		}
		return true
	})
	d := &replMember{id: "d", dir: b.TempDir()}
	rc.members = append(rc.members, d)
	rc.start(d)
	stop := make(chan struct{})
	var writes, failed, other atomic.Int64
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := a.router.Set(ctx, statestore.Write{Key: fmt.Sprintf("user-%d", i%n), Value: value})
			writes.Add(1)
			switch {
			case err == nil:
			case errors.Is(err, ErrUnavailable) || isMoved(err):
				failed.Add(1)
			default:
				other.Add(1)
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	if err := rc.apply(clustermap.MemberJoin{ID: "d", Addr: d.addr, Roles: []string{clustermap.RoleData}, At: 5}); err != nil {
		b.Fatal(err)
	}
	rc.settle(b, 10*time.Minute)
	took := time.Since(start)
	close(stop)
	b.StopTimer()
	if other.Load() > 0 {
		b.Fatalf("%d writes failed with a non-retriable error", other.Load())
	}
	if got := d.eng.Len(); got < n*3/4*9/10 {
		b.Fatalf("the new member holds %d keys, want about %d", got, n*3/4)
	}
	b.ReportMetric(took.Seconds(), "s-to-balance")
	b.ReportMetric(float64(d.eng.Len()), "keys-on-new-member")
	b.ReportMetric(float64(writes.Load())/took.Seconds(), "writes/s-during")
	b.ReportMetric(100*float64(failed.Load())/float64(max(writes.Load(), 1)), "%-retriable-errors")
}
