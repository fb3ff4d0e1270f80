package replica

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func newTestFollower(t testing.TB, log Log, hw int64) *Follower {
	t.Helper()
	f, err := NewFollower(log, testConfig(), 2, hw)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFollowerFetch(t *testing.T) {
	f := newTestFollower(t, leaderLog(t), 0)
	if _, ok := f.Fetch(at(0)); ok {
		t.Fatal("fetched without a leader")
	}
	if !f.SetLeader(1, 5) {
		t.Fatal("SetLeader refused")
	}
	req, ok := f.Fetch(at(0))
	want := FetchRequest{Replica: 2, Epoch: 5, Corr: req.Corr, FetchOffset: 6, LastEpoch: 3, MaxBytes: int32(testConfig().FetchMaxBytes)}
	if !ok || req != want {
		t.Fatalf("request %+v, want %+v", req, want)
	}
	if _, ok := f.Fetch(at(29)); ok {
		t.Fatal("a second fetch while one is in flight")
	}
	again, ok := f.Fetch(at(30))
	if !ok || again.Corr == req.Corr {
		t.Fatalf("no new fetch after the timeout: %+v %v", again, ok)
	}
	// The given-up request's answer is dropped.
	if err := f.HandleResponse(&FetchResponse{Corr: req.Corr, FetchOffset: 6, Epoch: 5, HighWatermark: 6}, at(31)); err != nil || f.HighWatermark() != 0 {
		t.Fatalf("took a stale answer: %v, hw %d", err, f.HighWatermark())
	}
	// An error answer backs off.
	err := f.HandleResponse(&FetchResponse{Corr: again.Corr, FetchOffset: 6, Epoch: 6, Code: CodeStaleEpoch}, at(32))
	if !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("err = %v", err)
	}
	if _, ok := f.Fetch(at(41)); ok {
		t.Fatal("fetched during the backoff")
	}
	if _, ok := f.Fetch(at(42)); !ok {
		t.Fatal("no fetch after the backoff")
	}
}

// A follower echoes the largest read barrier it took from its leader at
// this epoch, never one from a dropped answer, and starts over with a
// new leader.
func TestFollowerEchoesBarrier(t *testing.T) {
	f := newTestFollower(t, leaderLog(t), 0)
	f.SetLeader(1, 5)
	req, _ := f.Fetch(at(0))
	if req.Barrier != 0 {
		t.Fatalf("first fetch barrier %d", req.Barrier)
	}
	if err := f.HandleResponse(&FetchResponse{Corr: req.Corr, FetchOffset: req.FetchOffset, Epoch: 5, HighWatermark: 6, Barrier: 7}, at(1)); err != nil {
		t.Fatal(err)
	}
	req, _ = f.Fetch(at(2))
	if req.Barrier != 7 {
		t.Fatalf("echoed barrier %d, want 7", req.Barrier)
	}
	// A late answer to another request carries no barrier in.
	_ = f.HandleResponse(&FetchResponse{Corr: req.Corr + 9, FetchOffset: req.FetchOffset, Epoch: 5, Barrier: 99}, at(3))
	// A lower barrier does not lower it.
	_ = f.HandleResponse(&FetchResponse{Corr: req.Corr, FetchOffset: req.FetchOffset, Epoch: 5, HighWatermark: 6, Barrier: 3}, at(3))
	if req, _ = f.Fetch(at(4)); req.Barrier != 7 {
		t.Fatalf("echoed barrier %d, want 7", req.Barrier)
	}
	f.SetLeader(1, 6)
	if req, _ = f.Fetch(at(5)); req.Barrier != 0 {
		t.Fatalf("barrier %d carried to a new epoch", req.Barrier)
	}
}

func TestFollowerSetLeader(t *testing.T) {
	tests := []struct {
		name   string
		steps  [][2]uint64 // (leader, epoch)
		want   []bool
		leader ReplicaID
		epoch  Epoch
	}{
		{"first", [][2]uint64{{1, 5}}, []bool{true}, 1, 5},
		{"newer", [][2]uint64{{1, 5}, {3, 6}}, []bool{true, true}, 3, 6},
		{"older is stale", [][2]uint64{{1, 5}, {3, 4}}, []bool{true, false}, 1, 5},
		{"same again", [][2]uint64{{1, 5}, {1, 5}}, []bool{true, true}, 1, 5},
		{"another leader at the same epoch", [][2]uint64{{1, 5}, {3, 5}}, []bool{true, false}, 1, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFollower(t, NewMemLog(), 0)
			for i, s := range tt.steps {
				if got := f.SetLeader(ReplicaID(s[0]), Epoch(s[1])); got != tt.want[i] {
					t.Fatalf("step %d: %v", i, got)
				}
			}
			if l, e, ok := f.Leader(); !ok || l != tt.leader || e != tt.epoch {
				t.Fatalf("leader %d epoch %d", l, e)
			}
		})
	}
	// A new leader drops the fetch in flight.
	f := newTestFollower(t, NewMemLog(), 0)
	f.SetLeader(1, 5)
	old, _ := f.Fetch(at(0))
	f.SetLeader(3, 6)
	req, ok := f.Fetch(at(1))
	if !ok || req.Epoch != 6 {
		t.Fatalf("no fetch to the new leader: %+v", req)
	}
	if err := f.HandleResponse(&FetchResponse{Corr: old.Corr, Epoch: 5, HighWatermark: 9}, at(2)); err != nil || f.HighWatermark() != 0 {
		t.Fatalf("took the old leader's answer")
	}
}

func TestFollowerHandleResponse(t *testing.T) {
	// The follower's log: epoch 1 at [0, 3), epoch 3 at [3, 6) in two
	// batches, epoch 4 at [6, 8).
	mk := func(t *testing.T) *MemLog {
		return memLogOf(t, batch(0, 1, 2, "aa"), batch(2, 1, 1, "b"), batch(3, 3, 1, "c"), batch(4, 3, 2, "cc"), batch(6, 4, 2, "dd"))
	}
	tests := []struct {
		name string
		// start trims the follower's log first.
		start     int64
		hw        int64
		resp      FetchResponse // Corr, FetchOffset and Epoch are filled in
		wantErr   error
		wantStart int64
		wantEnd   int64
		wantHW    int64
		wantEvent []EventKind
	}{
		{
			name: "records appended, watermark follows", hw: 2,
			resp:    FetchResponse{HighWatermark: 9, Batches: []Batch{batch(8, 5, 1, "e")}},
			wantEnd: 9, wantHW: 9, wantEvent: []EventKind{EventHighWatermark},
		},
		{
			name: "watermark not above the log end", hw: 2,
			resp:    FetchResponse{HighWatermark: 20, Batches: []Batch{batch(8, 5, 1, "e")}},
			wantEnd: 9, wantHW: 9, wantEvent: []EventKind{EventHighWatermark},
		},
		{
			name: "empty answer, watermark follows", hw: 2,
			resp:    FetchResponse{HighWatermark: 6},
			wantEnd: 8, wantHW: 6, wantEvent: []EventKind{EventHighWatermark},
		},
		{
			name: "watermark never goes down", hw: 5,
			resp:    FetchResponse{HighWatermark: 3},
			wantEnd: 8, wantHW: 5,
		},
		{
			name: "the log start follows the leader's", hw: 2,
			resp:      FetchResponse{HighWatermark: 9, LogStart: 4, Batches: []Batch{batch(8, 5, 1, "e")}},
			wantStart: 4, wantEnd: 9, wantHW: 9, wantEvent: []EventKind{EventHighWatermark},
		},
		{
			name: "diverging inside a batch: it goes whole", hw: 2,
			resp:    FetchResponse{HighWatermark: 9, Diverging: true, DivergingEpoch: 3, DivergingEnd: 5},
			wantEnd: 4, wantHW: 2, wantEvent: []EventKind{EventTruncated},
		},
		{
			name: "records not at the log end", hw: 2,
			resp:    FetchResponse{HighWatermark: 9, Batches: []Batch{batch(9, 5, 1, "e")}},
			wantErr: ErrNotContiguous, wantEnd: 8, wantHW: 2,
		},
		{
			name: "diverging inside the follower's last epoch", hw: 2,
			resp:    FetchResponse{HighWatermark: 9, Diverging: true, DivergingEpoch: 4, DivergingEnd: 6},
			wantEnd: 6, wantHW: 2, wantEvent: []EventKind{EventTruncated},
		},
		{
			name: "diverging at an epoch the follower ends earlier", hw: 2,
			resp:    FetchResponse{HighWatermark: 9, Diverging: true, DivergingEpoch: 3, DivergingEnd: 7},
			wantEnd: 6, wantHW: 2, wantEvent: []EventKind{EventTruncated},
		},
		{
			name: "diverging where the leader's epoch ends first", hw: 2,
			resp:    FetchResponse{HighWatermark: 9, Diverging: true, DivergingEpoch: 3, DivergingEnd: 4},
			wantEnd: 4, wantHW: 2, wantEvent: []EventKind{EventTruncated},
		},
		{
			name: "diverging at an epoch the follower lacks: cut to its older one", hw: 2,
			resp:    FetchResponse{HighWatermark: 9, Diverging: true, DivergingEpoch: 2, DivergingEnd: 5},
			wantEnd: 3, wantHW: 2, wantEvent: []EventKind{EventTruncated},
		},
		{
			name: "diverging below everything the follower has", start: 3, hw: 3,
			resp:      FetchResponse{HighWatermark: 9, Diverging: true, DivergingEpoch: 1, DivergingEnd: 2},
			wantStart: 2, wantEnd: 2, wantHW: 2, wantEvent: []EventKind{EventReset},
		},
		{
			name: "out of range below the leader's start: reset", hw: 2,
			resp:      FetchResponse{Code: CodeOutOfRange, LogStart: 20, LogEnd: 30},
			wantStart: 20, wantEnd: 20, wantHW: 20, wantEvent: []EventKind{EventReset, EventHighWatermark},
		},
		{
			name: "out of range above the leader's end: truncate", hw: 2,
			resp:    FetchResponse{Code: CodeOutOfRange, LogStart: 0, LogEnd: 3},
			wantEnd: 3, wantHW: 2, wantEvent: []EventKind{EventTruncated},
		},
		{
			name: "not leader", hw: 2,
			resp:    FetchResponse{Code: CodeNotLeader},
			wantErr: ErrNotLeader, wantEnd: 8, wantHW: 2,
		},
		{
			name: "fenced leader", hw: 2,
			resp:    FetchResponse{Code: CodeFenced},
			wantErr: ErrFenced, wantEnd: 8, wantHW: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := mk(t)
			if err := log.TrimTo(tt.start); err != nil {
				t.Fatal(err)
			}
			f := newTestFollower(t, log, tt.hw)
			f.SetLeader(1, 5)
			req, _ := f.Fetch(at(0))
			resp := tt.resp
			resp.Corr, resp.FetchOffset, resp.Epoch = req.Corr, req.FetchOffset, 5
			err := f.HandleResponse(&resp, at(1))
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if log.StartOffset() != tt.wantStart || log.EndOffset() != tt.wantEnd || f.HighWatermark() != tt.wantHW {
				t.Fatalf("log [%d, %d) hw %d; want [%d, %d) hw %d", log.StartOffset(), log.EndOffset(), f.HighWatermark(), tt.wantStart, tt.wantEnd, tt.wantHW)
			}
			var kinds []EventKind
			for _, e := range f.Events(nil) {
				kinds = append(kinds, e.Kind)
			}
			if !slices.Equal(kinds, tt.wantEvent) {
				t.Fatalf("events %v, want %v", kinds, tt.wantEvent)
			}
		})
	}
}

// TestFollowerDropsForeignAnswers: an answer is taken only for the fetch
// in flight, from its epoch, for its log end.
func TestFollowerDropsForeignAnswers(t *testing.T) {
	tests := []struct {
		name   string
		change func(r *FetchResponse)
	}{
		{"other correlation id", func(r *FetchResponse) { r.Corr++ }},
		{"other fetch offset", func(r *FetchResponse) { r.FetchOffset-- }},
		{"other epoch", func(r *FetchResponse) { r.Epoch = 4 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFollower(t, leaderLog(t), 0)
			f.SetLeader(1, 5)
			req, _ := f.Fetch(at(0))
			resp := FetchResponse{Corr: req.Corr, FetchOffset: req.FetchOffset, Epoch: 5, HighWatermark: 6, Diverging: true, DivergingEpoch: 1, DivergingEnd: 3}
			tt.change(&resp)
			if err := f.HandleResponse(&resp, at(1)); err != nil {
				t.Fatal(err)
			}
			if f.log.EndOffset() != 6 || f.HighWatermark() != 0 {
				t.Fatalf("took a foreign answer: end %d hw %d", f.log.EndOffset(), f.HighWatermark())
			}
		})
	}
}

// replicate runs fetch rounds between l and fs until no follower gets
// records or truncates.
func replicate(t testing.TB, l *Leader, now time.Time, fs ...*Follower) {
	t.Helper()
	for range 100 {
		moved := false
		for _, f := range fs {
			req, ok := f.Fetch(now)
			if !ok {
				t.Fatal("follower not fetching")
			}
			var resp FetchResponse
			if err := l.HandleFetch(&req, now, &resp); err != nil {
				t.Fatal(err)
			}
			end, hw := f.log.EndOffset(), f.HighWatermark()
			if err := f.HandleResponse(&resp, now); err != nil {
				t.Fatal(err)
			}
			moved = moved || resp.Diverging || f.log.EndOffset() != end || f.HighWatermark() != hw
		}
		if !moved {
			return
		}
	}
	t.Fatal("replication does not settle")
}

// TestLeaderChange is the whole story: a leader writes, a follower is
// elected from the ISR, the old leader comes back, is fenced, becomes a
// follower and loses only its unacknowledged tail.
func TestLeaderChange(t *testing.T) {
	cfg := testConfig()
	cfg.MinISR = 2
	logs := map[ReplicaID]*MemLog{1: NewMemLog(), 2: NewMemLog(), 3: NewMemLog()}
	all := []ReplicaID{1, 2, 3}
	a, err := NewLeader(logs[1], cfg, Assignment{Self: 1, Epoch: 1, Replicas: all, ISR: all, ISRVersion: 1}, 0, at(0))
	if err != nil {
		t.Fatal(err)
	}
	b := newTestFollower(t, logs[2], 0)
	c, _ := NewFollower(logs[3], cfg, 3, 0)
	b.SetLeader(1, 1)
	c.SetLeader(1, 1)

	if _, err := a.Append(Batch{Count: 2, Data: []byte("s1")}, Strong, at(1)); err != nil {
		t.Fatal(err)
	}
	replicate(t, a, at(2), b, c)
	if got := only(a.Events(nil), EventAcked); len(got) != 1 || got[0].Offset != 0 || got[0].End != 2 {
		t.Fatalf("acks %v", got)
	}
	// B gets one more write than C; then A writes one nobody fetches.
	if _, err := a.Append(Batch{Count: 1, Data: []byte("e2")}, Eventual, at(3)); err != nil {
		t.Fatal(err)
	}
	replicate(t, a, at(4), b)
	if _, err := a.Append(Batch{Count: 1, Data: []byte("e3")}, Eventual, at(5)); err != nil {
		t.Fatal(err)
	}

	// A is cut off; the control plane elects B at epoch 2 (C stays in
	// the ISR, A is out).
	nb, err := NewLeader(logs[2], cfg, Assignment{Self: 2, Epoch: 2, Replicas: all, ISR: []ReplicaID{2, 3}, ISRVersion: 2}, b.HighWatermark(), at(10))
	if err != nil {
		t.Fatal(err)
	}
	c.SetLeader(2, 2)
	if _, err := nb.Append(Batch{Count: 1, Data: []byte("s4")}, Strong, at(11)); err != nil {
		t.Fatal(err)
	}
	replicate(t, nb, at(12), c)

	// A still thinks it leads. C, now at epoch 2, never fetches from it;
	// the first word of epoch 2 fences it.
	if !a.ObserveEpoch(2) {
		t.Fatal("not fenced")
	}
	if _, err := a.Append(Batch{Count: 1, Data: []byte("x")}, Eventual, at(13)); !errors.Is(err, ErrFenced) {
		t.Fatalf("fenced append: %v", err)
	}
	na, err := NewFollower(logs[1], cfg, 1, a.HighWatermark())
	if err != nil {
		t.Fatal(err)
	}
	na.SetLeader(2, 2)
	replicate(t, nb, at(14), na, c)

	if len(only(na.Events(nil), EventTruncated)) == 0 {
		t.Fatal("the old leader kept its tail")
	}
	want := [][]byte{[]byte("s1"), []byte("e2"), []byte("s4")}
	for id, l := range logs {
		var got [][]byte
		for _, b := range l.Batches() {
			got = append(got, b.Data)
		}
		if !slices.EqualFunc(got, want, func(x, y []byte) bool { return string(x) == string(y) }) {
			t.Fatalf("replica %d holds %q, want %q", id, got, want)
		}
	}
	if nb.HighWatermark() != 4 || na.HighWatermark() != 4 {
		t.Fatalf("watermarks %d, %d", nb.HighWatermark(), na.HighWatermark())
	}
	if got := only(nb.Events(nil), EventAcked); len(got) != 1 || got[0].Offset != 3 {
		t.Fatalf("new leader's acks %v", got)
	}
}

// TestFollowerStartsFromLatest: a replica added with StartFromLatest
// (Kuaishou's smooth expansion) starts at the leader's high watermark
// without reading the history, fetches only the tail, and is not
// counted in sync while the leader still holds records it never copied;
// once the leader's log starts at its start (retention), it joins.
func TestFollowerStartsFromLatest(t *testing.T) {
	l := newTestLeader(t, leaderLog(t), testConfig(), 0, 1, 2)
	fetchFrom(t, l, 2, 6, 3, at(1)) // hw 6
	f, err := NewFollower(memLogOf(t), testConfig(), 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.StartFromLatest()
	f.SetLeader(1, l.Epoch())
	req, ok := f.Fetch(at(2))
	if !ok || req.FetchOffset != -1 || !req.Partial {
		t.Fatalf("first fetch %+v, want a partial probe at -1", req)
	}
	var resp FetchResponse
	if err := l.HandleFetch(&req, at(2), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Code != CodeOutOfRange || len(resp.Batches) != 0 {
		t.Fatalf("probe answered %+v, want out of range and no records", resp)
	}
	if err := f.HandleResponse(&resp, at(2)); err != nil {
		t.Fatal(err)
	}
	if f.log.StartOffset() != 6 || f.log.EndOffset() != 6 || f.HighWatermark() != 6 || !f.Partial() {
		t.Fatalf("log [%d, %d) hw %d partial %v, want [6, 6) hw 6 partial", f.log.StartOffset(), f.log.EndOffset(), f.HighWatermark(), f.Partial())
	}
	if es := only(eventsOf(f), EventReset); len(es) != 1 || es[0].Offset != 6 {
		t.Fatalf("events %v, want a reset at 6", es)
	}
	// New records reach it; caught up, it is still not proposed in.
	for i := range 3 {
		if _, err := l.Append(Batch{Count: 1, Data: []byte("t")}, Eventual, at(3+i)); err != nil {
			t.Fatal(err)
		}
		replicate(t, l, at(3+i), f)
	}
	if f.log.EndOffset() != 9 {
		t.Fatalf("log end %d, want 9", f.log.EndOffset())
	}
	l.Tick(at(10))
	if ps := only(eventsOf(l), EventISRProposal); len(ps) != 0 {
		t.Fatalf("a partial replica proposed in: %v", ps)
	}
	// Retention drops the history below 6 at the leader: the replica
	// holds all the leader holds, and joins.
	if err := l.log.TrimTo(6); err != nil {
		t.Fatal(err)
	}
	replicate(t, l, at(11), f)
	if f.Partial() {
		t.Fatal("still partial after the leader's log start reached its own")
	}
	replicate(t, l, at(12), f)
	ps := only(eventsOf(l), EventISRProposal)
	if len(ps) == 0 || !slices.Contains(ps[len(ps)-1].ISR, 3) {
		t.Fatalf("proposals %v, want replica 3 in", ps)
	}
	// A restarted replica with a log from the middle is partial again
	// until the leader's start reaches it.
	mid := memLogOf(t)
	if err := mid.Reset(20); err != nil {
		t.Fatal(err)
	}
	if err := mid.Append([]Batch{batch(20, 5, 1, "z")}); err != nil {
		t.Fatal(err)
	}
	g, err := NewFollower(mid, testConfig(), 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	g.StartFromLatest()
	if !g.Partial() {
		t.Fatal("a log starting at 20 is not partial")
	}
}
