package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"mecha/internal/clustermap"
	"mecha/internal/muxconn"
	"mecha/statestore"
)

// RouterConfig configures a Router.
type RouterConfig struct {
	// Member is this runtime's member id in the map.
	Member string
	// Store is the component's name: requests name the store they are for.
	Store string
	// Maps gives the cluster map.
	Maps MapSource
	// Engine is this member's engine of the store, served in-process for
	// the slots this member leads; nil for a runtime with no data role.
	Engine *statestore.Engine
	// Clients reach the other members.
	Clients *Clients
	// MapWait bounds the wait for a newer map after a "moved" answer;
	// DefaultMapWait when zero.
	MapWait time.Duration
	// RetryFor bounds how long an operation follows "moved" and
	// CodeRetry answers (a leadership changing hands) before it fails
	// as unavailable; DefaultRetryFor when zero.
	RetryFor time.Duration
	// GetStrong, when set, serves a strong read of a local slot (the
	// Server's GetStrong); Engine.Get otherwise.
	GetStrong func(ctx context.Context, key string) (statestore.Item, bool, error)
	// OnStoreFailure, when set, is told when the local engine cannot
	// write (DiskFailure).
	OnStoreFailure func(store string, err error)
	// OnClose, when set, runs at Close (the runtime detaches the store
	// from its Server there).
	OnClose func()
	// Stats, when set, counts the routing decisions.
	Stats  *Stats
	Logger *slog.Logger
}

// Router sends each operation of a store to its slot's leader: in-process
// when that is this member, over muxconn otherwise. It implements
// statestore.Backend, so state.crux serves from it unchanged.
type Router struct {
	cfg RouterConfig
	log *slog.Logger
}

var _ statestore.Backend = (*Router)(nil)

// NewRouter returns a router for one store.
func NewRouter(cfg RouterConfig) *Router {
	if cfg.MapWait <= 0 {
		cfg.MapWait = DefaultMapWait
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = DefaultRetryFor
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Router{cfg: cfg, log: log}
}

// Close runs OnClose. The clients belong to the runtime.
func (r *Router) Close() error {
	if r.cfg.OnClose != nil {
		r.cfg.OnClose()
	}
	return nil
}

// target is where a slot's operation goes under map m.
type target struct {
	m     *clustermap.Map
	slot  int
	epoch uint64
	// local is set when this member leads the slot and has the engine.
	local  bool
	leader string
}

// DefaultRetryFor is RouterConfig.RetryFor's default.
const DefaultRetryFor = 5 * time.Second

// on runs call on slot's leader, following "moved" and CodeRetry answers,
// which say nothing was written: after "moved" the router waits (up to
// MapWait) for a map at least as new as the answer's and calls the
// leader it names; after CodeRetry it backs off a little and calls again.
// Past RetryFor (or ctx) the operation fails with an UnavailableError,
// as does a leaderless slot.
func (r *Router) on(ctx context.Context, slot int, call func(t target) error) error {
	m := r.cfg.Maps.Map()
	var (
		deadline time.Time
		pause    = 5 * time.Millisecond
	)
	for attempt := 0; ; attempt++ {
		t, err := r.target(m, slot)
		if err != nil {
			return err
		}
		err = call(t)
		if t.local && err != nil && r.cfg.OnStoreFailure != nil && DiskFailure(err) {
			r.cfg.OnStoreFailure(r.cfg.Store, err)
		}
		var e *Error
		if !errors.As(err, &e) || (e.Code != CodeMoved && e.Code != CodeRetry) {
			return err
		}
		if attempt == 0 {
			deadline = time.Now().Add(r.cfg.RetryFor)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return &UnavailableError{Slot: slot, Reason: fmt.Sprintf("its leadership kept changing hands for %v", r.cfg.RetryFor), Err: err}
		}
		r.cfg.Stats.moved()
		if e.Code == CodeMoved && (e.Epoch > t.epoch || e.Leader != t.leader) {
			r.log.Debug("crux cluster: slot moved, refreshing the map", "slot", slot, "leader", e.Leader, "epoch", e.Epoch)
			m = awaitEpoch(ctx, r.cfg.Maps, r.cfg.MapWait, m, e.Slot, e.Epoch)
			if g := m.Slot(slot); g == nil || g.Epoch != t.epoch || g.Leader != t.leader {
				continue // a new leader to call
			}
		}
		// Nothing newer to go by: the leadership is changing hands.
		timer := time.NewTimer(pause)
		select {
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		pause = min(2*pause, 200*time.Millisecond)
		m = r.cfg.Maps.Map()
	}
}

func (r *Router) target(m *clustermap.Map, slot int) (target, error) {
	g := m.Slot(slot)
	if g == nil {
		r.cfg.Stats.unavailable()
		reason := "no cluster map yet"
		if p, ok := r.cfg.Maps.(interface{ Problem() error }); ok {
			if err := p.Problem(); err != nil {
				reason += ": " + err.Error()
			}
		}
		return target{}, &UnavailableError{Slot: slot, Reason: reason}
	}
	if g.Leader == "" {
		r.cfg.Stats.unavailable()
		return target{}, &UnavailableError{Slot: slot, Reason: fmt.Sprintf("it has no leader (epoch %d)", g.Epoch)}
	}
	local := g.Leader == r.cfg.Member && r.cfg.Engine != nil
	r.cfg.Stats.routed(local)
	return target{m: m, slot: slot, epoch: g.Epoch, leader: g.Leader, local: local}, nil
}

// remote sends req to t's leader and returns its answer; a failed answer
// is its *Error, a transport failure an UnavailableError.
func (r *Router) remote(ctx context.Context, t target, method uint16, req *Request) (*Response, error) {
	req.Store = r.cfg.Store
	if req.Slots == nil {
		req.Slots = []SlotEpoch{{Slot: t.slot, Epoch: t.epoch}}
	}
	cl, err := r.cfg.Clients.client(t.m, t.leader)
	if err != nil {
		return nil, &UnavailableError{Slot: t.slot, Reason: "its leader cannot be reached", Err: err}
	}
	out, err := cl.Call(ctx, method, AppendRequest(nil, method, req))
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		var me *muxconn.Error
		if errors.Is(err, muxconn.ErrNotSent) || errors.As(err, &me) && (me.Code == muxconn.CodeStopping || me.Code == muxconn.CodeBusy) {
			// Not sent (no connection), or refused unread: the leader's
			// runtime is stopping (its leaderships are handed on first)
			// or too busy.
			return nil, &Error{Code: CodeRetry, Msg: fmt.Sprintf("crux cluster: %q did not take the request: %v", t.leader, err)}
		}
		return nil, &UnavailableError{Slot: t.slot, Reason: fmt.Sprintf("its leader %q did not answer", t.leader), Err: err}
	}
	resp, err := DecodeResponse(method, out)
	if err != nil {
		return nil, fmt.Errorf("crux cluster: the answer of %q: %w", t.leader, err)
	}
	if resp.Err != nil {
		if resp.Err.Code == CodeUnavailable {
			// The leader could not serve it now (a leadership or replica
			// change, too few in sync): retriable, as a local refusal is.
			return nil, &UnavailableError{Slot: t.slot, Reason: fmt.Sprintf("its leader %q answered", t.leader), Err: resp.Err}
		}
		return nil, resp.Err
	}
	return resp, nil
}

// Get implements statestore.Backend.
func (r *Router) Get(ctx context.Context, key string) (it statestore.Item, ok bool, err error) {
	err = r.on(ctx, statestore.SlotOf(key), func(t target) error {
		if t.local {
			it, ok, err = r.cfg.Engine.Get(key)
			return err
		}
		resp, err := r.remote(ctx, t, MethodGet, &Request{Key: key})
		if err != nil {
			return err
		}
		if resp.Found {
			it, ok = resp.Item, true
			it.Key = key
		}
		return nil
	})
	return it, ok, err
}

// GetStrong implements statestore.StrongGetter: a read the slot's leader
// confirms with its in-sync replicas (linearizable).
func (r *Router) GetStrong(ctx context.Context, key string) (it statestore.Item, ok bool, err error) {
	err = r.on(ctx, statestore.SlotOf(key), func(t target) error {
		if t.local {
			if r.cfg.GetStrong == nil {
				it, ok, err = r.cfg.Engine.Get(key)
				return err
			}
			it, ok, err = r.cfg.GetStrong(ctx, key)
			return err
		}
		resp, err := r.remote(ctx, t, MethodGetStrong, &Request{Key: key})
		if err != nil {
			return err
		}
		if resp.Found {
			it, ok = resp.Item, true
			it.Key = key
		}
		return nil
	})
	return it, ok, err
}

// Set implements statestore.Backend.
func (r *Router) Set(ctx context.Context, w statestore.Write) (v uint64, err error) {
	w.Delete = false
	err = r.on(ctx, statestore.SlotOf(w.Key), func(t target) error {
		if t.local {
			v, err = r.cfg.Engine.Set(w)
			return err
		}
		resp, err := r.remote(ctx, t, MethodSet, &Request{Writes: []statestore.Write{w}})
		if err != nil {
			return err
		}
		if len(resp.Versions) != 1 {
			return fmt.Errorf("crux cluster: %q answered %d versions for one write", t.leader, len(resp.Versions))
		}
		v = resp.Versions[0]
		return nil
	})
	return v, err
}

// Delete implements statestore.Backend.
func (r *Router) Delete(ctx context.Context, w statestore.Write) error {
	w.Delete = true
	return r.on(ctx, statestore.SlotOf(w.Key), func(t target) error {
		if t.local {
			return r.cfg.Engine.Delete(w)
		}
		_, err := r.remote(ctx, t, MethodDelete, &Request{Writes: []statestore.Write{w}})
		return err
	})
}

// Apply implements statestore.Backend: a transaction runs on its slot's
// leader, so every key must be in one slot (a CrossSlotError otherwise).
func (r *Router) Apply(ctx context.Context, writes []statestore.Write) (vs []uint64, err error) {
	if len(writes) == 0 {
		return nil, nil
	}
	slots, idx := bySlot(len(writes), func(i int) string { return writes[i].Key })
	crossSlot := func(s int) error {
		return &CrossSlotError{Keys: [2]string{writes[0].Key, writes[idx[s][0]].Key}, Slots: [2]int{slots[0], s}}
	}
	if len(slots) > 1 && !oneDataMember(r.cfg.Maps.Map()) {
		return nil, crossSlot(slots[1])
	}
	err = r.on(ctx, slots[0], func(t target) error {
		// With one data member (a single node, the runtimes of one
		// host), a transaction may span slots, as on one engine.
		ses := make([]SlotEpoch, len(slots))
		for i, s := range slots {
			g := t.m.Slot(s)
			if g == nil || g.Leader != t.leader {
				return crossSlot(s)
			}
			ses[i] = SlotEpoch{Slot: s, Epoch: g.Epoch}
		}
		if t.local {
			vs, err = r.cfg.Engine.Apply(writes)
			return err
		}
		resp, err := r.remote(ctx, t, MethodApply, &Request{Writes: writes, Slots: ses})
		if err != nil {
			return err
		}
		if len(resp.Versions) != len(writes) {
			return fmt.Errorf("crux cluster: %q answered %d versions for %d writes", t.leader, len(resp.Versions), len(writes))
		}
		vs = resp.Versions
		return nil
	})
	return vs, err
}

// oneDataMember reports whether m has a single member with the data
// role: then every slot is that member's, and a transaction may span
// slots. With several, a transaction's keys must share a slot, as in
// Redis Cluster, whichever members lead their slots today.
func oneDataMember(m *clustermap.Map) bool {
	n := 0
	for _, mb := range m.Members {
		if slices.Contains(mb.Roles, clustermap.RoleData) {
			n++
		}
	}
	return n == 1
}

// bySlot groups the indexes of keys by slot, in first-seen order.
func bySlot(n int, key func(i int) string) (slots []int, idx map[int][]int) {
	idx = map[int][]int{}
	for i := range n {
		s := statestore.SlotOf(key(i))
		if _, ok := idx[s]; !ok {
			slots = append(slots, s)
		}
		idx[s] = append(idx[s], i)
	}
	return slots, idx
}

// perSlot runs call once per slot of the n keys (key(i) is the i-th),
// the slots in parallel, each on its slot's leader with r.on, and hands
// a slot's failure to fail with the indexes of its keys.
func (r *Router) perSlot(ctx context.Context, n int, key func(i int) string, call func(t target, is []int) error, fail func(is []int, err error)) {
	slots, idx := bySlot(n, key)
	var wg sync.WaitGroup
	for _, s := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			is := idx[s]
			if err := r.on(ctx, s, func(t target) error { return call(t, is) }); err != nil {
				fail(is, err)
			}
		}()
	}
	wg.Wait()
}

// pick returns all's elements at the indexes is, in order.
func pick[T any](all []T, is []int) []T {
	out := make([]T, len(is))
	for j, i := range is {
		out[j] = all[i]
	}
	return out
}

// remoteBulk sends a bulk request of n keys to t's leader and checks
// that the answer has a result for each.
func (r *Router) remoteBulk(ctx context.Context, t target, method uint16, req *Request, n int) (*Response, error) {
	resp, err := r.remote(ctx, t, method, req)
	if err != nil {
		return nil, err
	}
	if len(resp.Results) != n {
		return nil, fmt.Errorf("crux cluster: %q answered %d results for %d keys", t.leader, len(resp.Results), n)
	}
	return resp, nil
}

// BulkGet implements statestore.Backend: keys are read one request per
// slot, the slots in parallel; a failure is per key.
func (r *Router) BulkGet(ctx context.Context, keys []string) []statestore.GetResult {
	out := make([]statestore.GetResult, len(keys))
	r.perSlot(ctx, len(keys), func(i int) string { return keys[i] }, func(t target, is []int) error {
		if t.local {
			for _, i := range is {
				res := &out[i]
				res.Item, res.Found, res.Err = r.cfg.Engine.Get(keys[i])
			}
			return nil
		}
		resp, err := r.remoteBulk(ctx, t, MethodBulkGet, &Request{Keys: pick(keys, is)}, len(is))
		if err != nil {
			return err
		}
		for j, i := range is {
			res := &out[i]
			rr := &resp.Results[j]
			switch {
			case rr.Err != nil:
				res.Err = rr.Err
			case rr.Found:
				res.Item, res.Found = rr.Item, true
				res.Item.Key = keys[i]
			}
		}
		return nil
	}, func(is []int, err error) {
		for _, i := range is {
			out[i] = statestore.GetResult{Err: err}
		}
	})
	return out
}

// BulkSet writes (sets and deletes), each on its own as a bulk set is
// not atomic: one request per slot, the slots in parallel. It returns
// each write's new version (0 for a delete) and error.
func (r *Router) BulkSet(ctx context.Context, writes []statestore.Write) ([]uint64, []error) {
	vs, errs := make([]uint64, len(writes)), make([]error, len(writes))
	r.perSlot(ctx, len(writes), func(i int) string { return writes[i].Key }, func(t target, is []int) error {
		if t.local {
			for _, i := range is {
				if writes[i].Delete {
					errs[i] = r.cfg.Engine.Delete(writes[i])
				} else {
					vs[i], errs[i] = r.cfg.Engine.Set(writes[i])
				}
			}
			return nil
		}
		resp, err := r.remoteBulk(ctx, t, MethodBulkSet, &Request{Writes: pick(writes, is)}, len(is))
		if err != nil {
			return err
		}
		for j, i := range is {
			vs[i] = resp.Results[j].Version
			if e := resp.Results[j].Err; e != nil {
				errs[i] = e
			}
		}
		return nil
	}, func(is []int, err error) {
		for _, i := range is {
			errs[i] = err
		}
	})
	return vs, errs
}

// prefixSlots lists the slots that can hold keys starting with prefix:
// the hash tag's one, or all.
func prefixSlots(prefix string) []int {
	if s, ok := statestore.PrefixSlot(prefix); ok {
		return []int{s}
	}
	out := make([]int, statestore.NumSlots)
	for i := range out {
		out[i] = i
	}
	return out
}

// group is one member's part of a fan-out.
type group struct {
	leader string
	local  bool
	slots  []SlotEpoch
}

// fanout runs call once per leader of slots (the slots it leads), in
// parallel. The slots whose leader answered "moved" are grouped again
// on a map at least as new as the answers' and called once more.
func (r *Router) fanout(ctx context.Context, slots []int, call func(m *clustermap.Map, g group) error) error {
	m := r.cfg.Maps.Map()
	for attempt := 0; ; attempt++ {
		groups, err := r.groups(m, slots)
		if err != nil {
			return err
		}
		errs := make([]error, len(groups))
		var wg sync.WaitGroup
		for i, g := range groups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = call(m, g)
			}()
		}
		wg.Wait()
		var again []int
		var moved *Error
		for i, err := range errs {
			var e *Error
			switch {
			case err == nil:
			case errors.As(err, &e) && e.Code == CodeMoved:
				if attempt > 0 {
					return &UnavailableError{Slot: e.Slot, Reason: "its leader moved again after a map refresh", Err: err}
				}
				if moved == nil || e.Epoch > moved.Epoch {
					moved = e
				}
				again = append(again, slotsOf(groups[i].slots)...)
			default:
				return err
			}
		}
		if len(again) == 0 {
			return nil
		}
		r.log.Debug("crux cluster: slots moved, refreshing the map", "slots", len(again), "slot", moved.Slot, "leader", moved.Leader, "epoch", moved.Epoch)
		r.cfg.Stats.moved()
		m = awaitEpoch(ctx, r.cfg.Maps, r.cfg.MapWait, m, moved.Slot, moved.Epoch)
		slots = again
	}
}

func (r *Router) groups(m *clustermap.Map, slots []int) ([]group, error) {
	var out []group
	at := map[string]int{}
	for _, s := range slots {
		t, err := r.target(m, s)
		if err != nil {
			return nil, err
		}
		i, ok := at[t.leader]
		if !ok {
			i = len(out)
			at[t.leader] = i
			out = append(out, group{leader: t.leader, local: t.local})
		}
		out[i].slots = append(out[i].slots, SlotEpoch{Slot: s, Epoch: t.epoch})
	}
	return out, nil
}

// Scan implements statestore.Backend. A prefix holding a whole hash tag
// reads that slot's leader only; any other asks every leader for the
// slots it leads (one request each, in parallel) and merges the answers
// in key order. Each leader returns at most limit keys after after, so
// the merge's first limit are the scan's: after, the last key of a page,
// is the cursor of the next one, valid whatever member answers it.
func (r *Router) Scan(ctx context.Context, prefix, after string, limit int) ([]statestore.Item, error) {
	var mu sync.Mutex
	var out []statestore.Item
	err := r.fanout(ctx, prefixSlots(prefix), func(m *clustermap.Map, g group) error {
		var items []statestore.Item
		if g.local {
			items = r.cfg.Engine.ScanIn(slotsOf(g.slots), prefix, after, limit)
		} else {
			t := target{m: m, slot: g.slots[0].Slot, epoch: g.slots[0].Epoch, leader: g.leader}
			resp, err := r.remote(ctx, t, MethodScan, &Request{Slots: g.slots, Prefix: prefix, After: after, Limit: limit})
			if err != nil {
				return err
			}
			items = resp.Items
		}
		mu.Lock()
		out = append(out, items...)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// DeleteChildren implements statestore.Backend: every leader of the
// prefix's slots removes the keys right under it in the slots it leads.
// As on one node, each slot's removal is atomic, the whole is not.
func (r *Router) DeleteChildren(ctx context.Context, prefix string) (int64, error) {
	if prefix == "" {
		return 0, errors.New("prefix is empty")
	}
	var mu sync.Mutex
	var n int64
	err := r.fanout(ctx, prefixSlots(prefix), func(m *clustermap.Map, g group) error {
		var c int64
		if g.local {
			var err error
			if c, err = r.cfg.Engine.DeleteChildrenIn(prefix, slotsOf(g.slots)); err != nil {
				return err
			}
		} else {
			t := target{m: m, slot: g.slots[0].Slot, epoch: g.slots[0].Epoch, leader: g.leader}
			resp, err := r.remote(ctx, t, MethodDeleteChildren, &Request{Slots: g.slots, Prefix: prefix})
			if err != nil {
				return err
			}
			c = resp.Count
		}
		mu.Lock()
		n += c
		mu.Unlock()
		return nil
	})
	return n, err
}
