package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mecha/internal/clustermap"
	"mecha/internal/muxconn"
	"mecha/statestore"
)

const testStore = "statestore"

// clock is the fake time every engine of a test cluster reads.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Unix(1_800_000_000, 0).UnixNano())
	return c
}

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// member is one runtime of a test cluster: an engine, a Server behind a
// muxconn.Server on a loopback listener, and a router.
type member struct {
	id     string
	eng    *statestore.Engine
	maps   *MapVar
	srv    *Server
	addr   string
	router *Router
	// calls counts the requests its server got, by method.
	calls sync.Map // uint16 → *atomic.Int64
}

func (m *member) count(method uint16) int64 {
	v, ok := m.calls.Load(method)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// testCluster is three members a, b, c (replicas=3, slots spread by
// Plan) and a client-only router (no engine, not in the map).
type testCluster struct {
	t        testing.TB
	members  []*member
	clients  *Clients
	client   *Router // the runtime with no data role
	cmaps    *MapVar // its map
	retryFor time.Duration
	clock    *clock
	m        *clustermap.Map
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newCluster(t testing.TB) *testCluster {
	t.Helper()
	tc := &testCluster{t: t, clients: &Clients{Token: "tok"}, clock: newClock()}
	t.Cleanup(func() { tc.clients.Close() })
	for _, id := range []string{"a", "b", "c"} {
		eng, err := statestore.Open(statestore.Options{Dir: t.TempDir(), Logger: quiet(), Now: tc.clock.now, SnapshotLogBytes: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { eng.Close() })
		mb := &member{id: id, eng: eng, maps: NewMapVar(nil)}
		mb.srv = NewServer(id, mb.maps, quiet())
		mb.srv.Attach(testStore, eng)
		mux := &muxconn.Server{Token: "tok", Logger: quiet(), Handler: func(ctx context.Context, method uint16, body []byte) ([]byte, error) {
			v, _ := mb.calls.LoadOrStore(method, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			return mb.srv.Handle(ctx, method, body)
		}}
		mb.addr = serveMux(t, mux)
		mb.router = NewRouter(RouterConfig{Member: id, Store: testStore, Maps: mb.maps, Engine: eng, Clients: tc.clients, MapWait: 300 * time.Millisecond, Logger: quiet()})
		tc.members = append(tc.members, mb)
	}
	tc.cmaps = NewMapVar(nil)
	tc.retryFor = time.Second
	tc.client = NewRouter(RouterConfig{Member: "client", Store: testStore, Maps: tc.cmaps, Clients: tc.clients, MapWait: 300 * time.Millisecond, RetryFor: tc.retryFor, Logger: quiet()})

	m := clustermap.New()
	apply := func(c clustermap.Command) {
		t.Helper()
		var err error
		if m, err = clustermap.Apply(m, c); err != nil {
			t.Fatalf("apply %T: %v", c, err)
		}
	}
	apply(clustermap.Bootstrap{ClusterID: "test", Replicas: 3})
	for _, mb := range tc.members {
		apply(clustermap.MemberJoin{ID: mb.id, Addr: mb.addr, Roles: []string{clustermap.RoleData}, At: 1})
	}
	for _, c := range clustermap.Plan(m, clustermap.PlanConfig{}) {
		apply(c)
	}
	if m.Slot(0).Leader == "" {
		t.Fatal("the plan left slot 0 without a leader")
	}
	tc.publish(m)
	return tc
}

// publish gives every member and the client map m.
func (tc *testCluster) publish(m *clustermap.Map) {
	tc.m = m
	for _, mb := range tc.members {
		mb.maps.Store(m)
	}
	tc.cmaps.Store(m)
}

// routers are every member's router and the client's.
func (tc *testCluster) routers() []*Router {
	out := []*Router{tc.client}
	for _, mb := range tc.members {
		out = append(out, mb.router)
	}
	return out
}

func (tc *testCluster) member(id string) *member {
	for _, mb := range tc.members {
		if mb.id == id {
			return mb
		}
	}
	tc.t.Fatalf("no member %q", id)
	return nil
}

// serveMux serves srv on a loopback listener the way the internal port
// does: the preface is read, then ServeConn.
func serveMux(t testing.TB, srv *muxconn.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := make([]byte, len(muxconn.Preface))
				if _, err := io.ReadFull(c, p); err != nil || string(p) != muxconn.Preface {
					c.Close()
					return
				}
				srv.ServeConn(context.Background(), c, nil)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		_ = srv.Shutdown(context.Background())
		wg.Wait()
	})
	return l.Addr().String()
}

func ptr[T any](v T) *T { return &v }

// keyLedBy returns a key (prefix + n) whose slot the member leads.
func (tc *testCluster) keyLedBy(id, prefix string) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if tc.m.Slot(statestore.SlotOf(k)).Leader == id {
			return k
		}
	}
}

func TestSetGetAcrossMembers(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	rs := tc.routers()
	for i, from := range rs {
		for _, leader := range []string{"a", "b", "c"} {
			key := tc.keyLedBy(leader, fmt.Sprintf("app||k%d-", i))
			v, err := from.Set(ctx, statestore.Write{Key: key, Value: []byte("v-" + key)})
			if err != nil {
				t.Fatalf("set %q through router %d: %v", key, i, err)
			}
			for j, to := range rs {
				it, ok, err := to.Get(ctx, key)
				if err != nil || !ok || string(it.Value) != "v-"+key || it.Version != v || it.Key != key {
					t.Fatalf("get %q through router %d: %+v %v %v, want version %d", key, j, it, ok, err, v)
				}
			}
			// The data is on the leader's engine only.
			for _, mb := range tc.members {
				_, ok, _ := mb.eng.Get(key)
				if ok != (mb.id == leader) {
					t.Errorf("key %q on engine %s: %v (leader %s)", key, mb.id, ok, leader)
				}
			}
		}
	}
	if _, ok, err := tc.client.Get(ctx, "app||missing"); ok || err != nil {
		t.Errorf("a missing key: %v %v", ok, err)
	}
}

func TestETagsAndDeletes(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	key := tc.keyLedBy("b", "app||e")
	a, c := tc.member("a").router, tc.client
	v1, err := a.Set(ctx, statestore.Write{Key: key, Value: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Set(ctx, statestore.Write{Key: key, Value: []byte("x"), ETag: ptr(statestore.ETag(v1 + 5))}); !errors.Is(err, statestore.ErrETagMismatch) {
		t.Fatalf("a stale etag: %v, want ErrETagMismatch", err)
	}
	if _, err := c.Set(ctx, statestore.Write{Key: key, Value: []byte("x"), ETag: ptr("nope")}); !errors.Is(err, statestore.ErrETagInvalid) {
		t.Fatalf("an invalid etag: %v, want ErrETagInvalid", err)
	}
	if _, err := c.Set(ctx, statestore.Write{Key: key, Value: []byte("x"), FirstWrite: true}); !errors.Is(err, statestore.ErrETagMismatch) {
		t.Fatalf("first-write of an existing key: %v", err)
	}
	if _, err := c.Set(ctx, statestore.Write{Key: key, Value: []byte("x"), TTLSeconds: -7}); !errors.Is(err, statestore.ErrBadTTL) {
		t.Fatalf("a bad ttl: %v", err)
	}
	if err := c.Delete(ctx, statestore.Write{Key: key, ETag: ptr(statestore.ETag(v1 + 1))}); !errors.Is(err, statestore.ErrETagMismatch) {
		t.Fatalf("delete with a stale etag: %v", err)
	}
	if err := c.Delete(ctx, statestore.Write{Key: key, ETag: ptr(statestore.ETag(v1))}); err != nil {
		t.Fatalf("delete with the etag: %v", err)
	}
	for i, r := range tc.routers() {
		if _, ok, err := r.Get(ctx, key); ok || err != nil {
			t.Errorf("router %d after the delete: %v %v", i, ok, err)
		}
	}
}

func TestTTL(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	key := tc.keyLedBy("c", "app||ttl")
	if _, err := tc.client.Set(ctx, statestore.Write{Key: key, Value: []byte("v"), TTLSeconds: 10}); err != nil {
		t.Fatal(err)
	}
	want := tc.clock.now().Add(10 * time.Second)
	for i, r := range tc.routers() {
		it, ok, err := r.Get(ctx, key)
		if err != nil || !ok || !it.Expires.Equal(want) {
			t.Errorf("router %d: expires %v (%v %v), want %v", i, it.Expires, ok, err, want)
		}
	}
	tc.clock.advance(11 * time.Second)
	for i, r := range tc.routers() {
		if _, ok, err := r.Get(ctx, key); ok || err != nil {
			t.Errorf("router %d after expiry: %v %v", i, ok, err)
		}
	}
}

func TestTransactions(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	k1, k2 := "app||{user1}a", "app||{user1}b"
	vs, err := tc.client.Apply(ctx, []statestore.Write{{Key: k1, Value: []byte("1")}, {Key: k2, Value: []byte("2")}})
	if err != nil || len(vs) != 2 {
		t.Fatalf("a tagged transaction: %v %v", vs, err)
	}
	// All or nothing: a stale etag on the second write keeps the first out.
	_, err = tc.member("a").router.Apply(ctx, []statestore.Write{{Key: k1, Value: []byte("x")}, {Key: k2, Value: []byte("y"), ETag: ptr(statestore.ETag(vs[1] + 9))}})
	if !errors.Is(err, statestore.ErrETagMismatch) {
		t.Fatalf("a transaction with a stale etag: %v", err)
	}
	for _, r := range tc.routers() {
		if it, _, _ := r.Get(ctx, k1); string(it.Value) != "1" {
			t.Fatalf("k1 = %q after a failed transaction", it.Value)
		}
	}
	// Keys in different slots.
	a, b := "app||a", "app||b"
	if statestore.SlotOf(a) == statestore.SlotOf(b) {
		t.Fatal("pick keys in different slots")
	}
	_, err = tc.client.Apply(ctx, []statestore.Write{{Key: a, Value: []byte("1")}, {Key: b, Value: []byte("2")}})
	var cs *CrossSlotError
	if !errors.As(err, &cs) || cs.Slots != [2]int{statestore.SlotOf(a), statestore.SlotOf(b)} {
		t.Fatalf("a cross-slot transaction: %v", err)
	}
	var in interface{ InvalidInput() bool }
	if !errors.As(err, &in) || !in.InvalidInput() {
		t.Errorf("a cross-slot error is the caller's: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{`"app||a"`, `"app||b"`, fmt.Sprintf("slot %d", statestore.SlotOf(a)), fmt.Sprintf("slot %d", statestore.SlotOf(b)), "hash tag", "app||{user1}a"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the cross-slot error %q does not say %s", msg, want)
		}
	}
}

func TestBulk(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	var ws []statestore.Write
	for i := range 40 {
		ws = append(ws, statestore.Write{Key: fmt.Sprintf("app||bulk%d", i), Value: []byte(fmt.Sprint(i))})
	}
	ws[3].ETag = ptr("999") // fails alone
	vs, errs := tc.client.BulkSet(ctx, ws)
	keys := make([]string, len(ws))
	for i := range ws {
		keys[i] = ws[i].Key
		if (errs[i] != nil) != (i == 3) || i == 3 && !errors.Is(errs[i], statestore.ErrETagMismatch) {
			t.Fatalf("bulk set %d: %v", i, errs[i])
		}
	}
	for ri, r := range tc.routers() {
		res := r.BulkGet(ctx, append(keys, ""))
		for i := range ws {
			if i == 3 {
				if res[i].Found {
					t.Errorf("router %d: the failed write is there", ri)
				}
				continue
			}
			if res[i].Err != nil || !res[i].Found || res[i].Item.Version != vs[i] || string(res[i].Item.Value) != fmt.Sprint(i) {
				t.Fatalf("router %d: bulk get %d: %+v", ri, i, res[i])
			}
		}
		if !errors.Is(res[len(ws)].Err, statestore.ErrKeyEmpty) {
			t.Errorf("router %d: an empty key in a bulk get: %v", ri, res[len(ws)].Err)
		}
	}
}

func TestScan(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	var all []string
	leaders := map[string]bool{}
	for i := range 100 {
		k := fmt.Sprintf("app||p:%03d", i)
		all = append(all, k)
		leaders[tc.m.Slot(statestore.SlotOf(k)).Leader] = true
		if _, err := tc.client.Set(ctx, statestore.Write{Key: k, Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
		if _, err := tc.client.Set(ctx, statestore.Write{Key: fmt.Sprintf("app||q:%03d", i), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	if len(leaders) != 3 {
		t.Fatalf("the keys are led by %v, want all three members", leaders)
	}
	for ri, r := range tc.routers() {
		before := map[string]int64{}
		for _, mb := range tc.members {
			before[mb.id] = mb.count(MethodScan)
		}
		var got []string
		after, pages := "", 0
		for {
			items, err := r.Scan(ctx, "app||p:", after, 7)
			if err != nil {
				t.Fatal(err)
			}
			if len(items) == 0 {
				break
			}
			pages++
			for _, it := range items {
				got = append(got, it.Key)
			}
			after = items[len(items)-1].Key
		}
		if strings.Join(got, ",") != strings.Join(all, ",") || pages != 15 {
			t.Fatalf("router %d paged %d keys in %d pages: %v", ri, len(got), pages, got)
		}
		// One request per page to each other member (16 pages, the last empty).
		for _, mb := range tc.members {
			want := int64(16)
			if r == mb.router {
				want = 0 // its own slots are read in-process
			}
			if n := mb.count(MethodScan) - before[mb.id]; n != want {
				t.Errorf("router %d: member %s served %d scans, want %d", ri, mb.id, n, want)
			}
		}
	}
	// A hash-tagged prefix reads one slot, on one member.
	for i := range 5 {
		if _, err := tc.member("a").router.Set(ctx, statestore.Write{Key: fmt.Sprintf("app||{u7}:s%d", i), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string]int64{}
	for _, mb := range tc.members {
		before[mb.id] = mb.count(MethodScan)
	}
	items, err := tc.client.Scan(ctx, "app||{u7}:", "", 0)
	if err != nil || len(items) != 5 || items[0].Key != "app||{u7}:s0" {
		t.Fatalf("a tagged scan: %v %v", items, err)
	}
	leader := tc.m.Slot(statestore.SlotOf("app||{u7}:")).Leader
	for _, mb := range tc.members {
		want := int64(0)
		if mb.id == leader {
			want = 1
		}
		if n := mb.count(MethodScan) - before[mb.id]; n != want {
			t.Errorf("a tagged scan: member %s served %d, want %d (leader %s)", mb.id, n, want, leader)
		}
	}
	// Delete with prefix fans out too.
	n, err := tc.member("b").router.DeleteChildren(ctx, "app||")
	if err != nil || n != 205 {
		t.Fatalf("delete children: %d %v", n, err)
	}
	if items, err := tc.client.Scan(ctx, "app||", "", 0); err != nil || len(items) != 0 {
		t.Fatalf("after delete children: %d keys, %v", len(items), err)
	}
}

// transfer moves slot's leadership to id and returns the new map.
func transfer(t *testing.T, m *clustermap.Map, slot int, id string) *clustermap.Map {
	t.Helper()
	g := m.Slot(slot)
	m2, err := clustermap.Apply(m, clustermap.LeaderTransfer{Ref: clustermap.SlotRef(slot), To: id, Epoch: g.Epoch})
	if err != nil {
		t.Fatal(err)
	}
	return m2
}

func TestMovedRetries(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	key := tc.keyLedBy("a", "app||mv")
	slot := statestore.SlotOf(key)
	old := tc.m
	moved := transfer(t, old, slot, "b")
	// The members know; the client does not yet.
	for _, mb := range tc.members {
		mb.maps.Store(moved)
	}
	a, b := tc.member("a"), tc.member("b")
	a0, b0 := a.count(MethodSet), b.count(MethodSet)
	// The client's map is refreshed a moment after the first "moved".
	timer := time.AfterFunc(50*time.Millisecond, func() { tc.cmaps.Store(moved) })
	defer timer.Stop()
	v, err := tc.client.Set(ctx, statestore.Write{Key: key, Value: []byte("v")})
	if err != nil {
		t.Fatalf("set through a stale map: %v", err)
	}
	if n, m := a.count(MethodSet)-a0, b.count(MethodSet)-b0; n != 1 || m != 1 {
		t.Fatalf("old leader got %d calls, new leader %d; want one each (one retry)", n, m)
	}
	if it, ok, _ := b.eng.Get(key); !ok || it.Version != v {
		t.Fatalf("the write is not on the new leader: %v %v", it, ok)
	}

	// A map that never catches up: retries (backing off) for RetryFor,
	// then unavailable.
	key2 := tc.keyLedBy("c", "app||mv2")
	moved2 := transfer(t, moved, statestore.SlotOf(key2), "a")
	for _, mb := range tc.members {
		mb.maps.Store(moved2)
	}
	c := tc.member("c")
	c0 := c.count(MethodGet)
	start := time.Now()
	_, _, err = tc.client.Get(ctx, key2)
	took := time.Since(start)
	var un *UnavailableError
	if !errors.As(err, &un) || !errors.Is(err, ErrUnavailable) || un.Slot != statestore.SlotOf(key2) {
		t.Fatalf("a map that stays stale: %v, want UnavailableError", err)
	}
	if took < tc.retryFor || took > tc.retryFor+3*time.Second {
		t.Errorf("gave up after %v, want RetryFor (%v) and the map wait", took, tc.retryFor)
	}
	// Backing off from 5 ms, doubling up to 200 ms: a handful of calls,
	// not a spin.
	if n := c.count(MethodGet) - c0; n < 3 || n > 20 {
		t.Errorf("the stale leader got %d calls in %v", n, took)
	}
}

func TestLeaderlessSlot(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	m := tc.m
	var err error
	// Kill every member but one: the slots it does not replicate are
	// still led (replicas=3), so kill all three in turn.
	for _, id := range []string{"a", "b", "c"} {
		if m, err = clustermap.Apply(m, clustermap.MemberDead{ID: id, At: 2}); err != nil {
			t.Fatal(err)
		}
	}
	tc.publish(m)
	_, err = tc.client.Set(ctx, statestore.Write{Key: "app||x", Value: []byte("v")})
	var un *UnavailableError
	if !errors.As(err, &un) || un.Slot != statestore.SlotOf("app||x") || !strings.Contains(err.Error(), fmt.Sprintf("slot %d", un.Slot)) {
		t.Fatalf("a leaderless slot: %v", err)
	}
	if _, err := tc.client.Scan(ctx, "app||", "", 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a scan over leaderless slots: %v", err)
	}
}

func TestServerRefusesForeignKeys(t *testing.T) {
	tc := newCluster(t)
	a := tc.member("a")
	key := tc.keyLedBy("a", "app||f")
	other := tc.keyLedBy("b", "app||f")
	slot := statestore.SlotOf(key)
	body := AppendRequest(nil, MethodGet, &Request{Store: testStore, Slots: []SlotEpoch{{Slot: slot, Epoch: tc.m.Slot(slot).Epoch}}, Key: other})
	out, err := a.srv.Handle(context.Background(), MethodGet, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := DecodeResponse(MethodGet, out)
	if err != nil || resp.Err == nil || resp.Err.Code != CodeBadRequest {
		t.Fatalf("a key of another slot: %+v %v", resp, err)
	}
	out, _ = a.srv.Handle(context.Background(), MethodGet, []byte{1, 2, 3})
	if resp, err := DecodeResponse(MethodGet, out); err != nil || resp.Err == nil || resp.Err.Code != CodeBadRequest || !errors.Is(resp.Err, ErrBadRequest) {
		t.Fatalf("a malformed request: %+v %v", resp, err)
	}
	if _, err := a.srv.Handle(context.Background(), 0x02FF, nil); !errors.Is(err, muxconn.ErrUnknownMethod) {
		t.Fatalf("an unknown method: %v", err)
	}
}

// A member whose map is behind the caller's waits for it before it
// answers: a deposed leader that has not heard does not serve, and a new
// leader that has not heard yet does not answer "moved" back.
func TestServerWaitsForItsMap(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	key := tc.keyLedBy("a", "app||w")
	slot := statestore.SlotOf(key)
	moved := transfer(t, tc.m, slot, "b")
	// The client knows b leads; b does not yet.
	tc.cmaps.Store(moved)
	b := tc.member("b")
	timer := time.AfterFunc(50*time.Millisecond, func() { b.maps.Store(moved) })
	defer timer.Stop()
	b0 := b.count(MethodSet)
	if _, err := tc.client.Set(ctx, statestore.Write{Key: key, Value: []byte("v")}); err != nil {
		t.Fatalf("set while the new leader's map is behind: %v", err)
	}
	if n := b.count(MethodSet) - b0; n != 1 {
		t.Errorf("the new leader got %d calls, want 1", n)
	}
	// a never hears: a caller at the new epoch is told to come back.
	a := tc.member("a")
	a.srv.mapWait = 50 * time.Millisecond
	body := AppendRequest(nil, MethodGet, &Request{Store: testStore, Slots: []SlotEpoch{{Slot: slot, Epoch: moved.Slot(slot).Epoch}}, Key: key})
	out, _ := a.srv.Handle(ctx, MethodGet, body)
	resp, err := DecodeResponse(MethodGet, out)
	if err != nil || resp.Err == nil || resp.Err.Code != CodeRetry {
		t.Fatalf("a deposed leader with an old map: %+v %v, want CodeRetry", resp, err)
	}
}

// The client of a member that leaves the map is closed.
func TestClientsPrune(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	key := tc.keyLedBy("c", "app||p")
	if _, _, err := tc.client.Get(ctx, key); err != nil {
		t.Fatal(err)
	}
	tc.clients.mu.Lock()
	cl := tc.clients.m["c"]
	tc.clients.mu.Unlock()
	if cl == nil {
		t.Fatal("no client for c after a call to it")
	}
	m, err := clustermap.Apply(tc.m, clustermap.MemberLeave{ID: "c", At: 3})
	if err != nil {
		t.Fatal(err)
	}
	tc.clients.Prune(m)
	tc.clients.mu.Lock()
	_, still := tc.clients.m["c"]
	tc.clients.mu.Unlock()
	if still {
		t.Fatal("the client of a member that left is kept")
	}
	if _, err := cl.Call(ctx, MethodGet, nil); !errors.Is(err, muxconn.ErrClosed) {
		t.Fatalf("the client of a member that left: %v, want closed", err)
	}
}

// With one data member (a single node, or the runtimes of one host
// storing through its owner), a transaction may span slots, atomic on
// that member's engine, from the member itself and from a client-only
// router.
func TestOneDataMemberTransactionSpansSlots(t *testing.T) {
	eng, err := statestore.Open(statestore.Options{Dir: t.TempDir(), Logger: quiet(), SnapshotLogBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	m := clustermap.New()
	for _, c := range []clustermap.Command{clustermap.Bootstrap{ClusterID: "one", Replicas: 1}} {
		if m, err = clustermap.Apply(m, c); err != nil {
			t.Fatal(err)
		}
	}
	maps := NewMapVar(nil)
	srv := NewServer("solo", maps, quiet())
	srv.Attach(testStore, eng)
	addr := serveMux(t, &muxconn.Server{Token: "tok", Logger: quiet(), Handler: srv.Handle})
	for _, c := range []clustermap.Command{clustermap.MemberJoin{ID: "solo", Addr: addr, Roles: []string{clustermap.RoleData}, At: 1}} {
		if m, err = clustermap.Apply(m, c); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clustermap.Plan(m, clustermap.PlanConfig{}) {
		if m, err = clustermap.Apply(m, c); err != nil {
			t.Fatal(err)
		}
	}
	maps.Store(m)
	clients := &Clients{Token: "tok"}
	t.Cleanup(func() { clients.Close() })
	local := NewRouter(RouterConfig{Member: "solo", Store: testStore, Maps: maps, Engine: eng, Clients: clients, Logger: quiet()})
	client := NewRouter(RouterConfig{Member: "client", Store: testStore, Maps: NewMapVar(m), Clients: clients, Logger: quiet()})
	ctx := context.Background()
	a, b := "app||a", "app||b"
	if statestore.SlotOf(a) == statestore.SlotOf(b) {
		t.Fatal("pick keys in different slots")
	}
	for i, r := range []*Router{local, client} {
		v := fmt.Sprint(i)
		if _, err := r.Apply(ctx, []statestore.Write{{Key: a, Value: []byte(v)}, {Key: b, Value: []byte(v)}}); err != nil {
			t.Fatalf("router %d: a transaction across slots on one data member: %v", i, err)
		}
		for _, k := range []string{a, b} {
			if it, _, _ := eng.Get(k); string(it.Value) != v {
				t.Fatalf("router %d: %s = %q", i, k, it.Value)
			}
		}
		// All or nothing: a stale etag on one key fails both.
		bad := statestore.ETag(999)
		_, err := r.Apply(ctx, []statestore.Write{{Key: a, Value: []byte("no")}, {Key: b, Value: []byte("no"), ETag: &bad}})
		if !errors.Is(err, statestore.ErrETagMismatch) {
			t.Fatalf("router %d: stale etag: %v", i, err)
		}
		if it, _, _ := eng.Get(a); string(it.Value) != v {
			t.Fatalf("router %d: a failed transaction wrote %q", i, it.Value)
		}
	}
}
