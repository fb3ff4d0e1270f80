package replica

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// t0 is the tests' clock origin; at(ms) is ms milliseconds after it.
var t0 = time.Unix(1_700_000_000, 0)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func testConfig() Config {
	c := DefaultConfig()
	c.MaxLag = 100 * time.Millisecond
	c.ProposalRetry = 50 * time.Millisecond
	c.AckTimeout = 0
	c.FetchTimeout = 30 * time.Millisecond
	c.RetryBackoff = 10 * time.Millisecond
	return c
}

// leaderLog is the log the leader tests start from: epochs 1 and 3,
// ending at 6.
func leaderLog(t testing.TB) *MemLog {
	return memLogOf(t, batch(0, 1, 2, "aa"), batch(2, 1, 1, "b"), batch(3, 3, 3, "ccc"))
}

// newTestLeader makes replica 1 the leader at epoch 5 of replicas 1, 2, 3
// with the given ISR (version 1).
func newTestLeader(t testing.TB, log Log, cfg Config, hw int64, isr ...ReplicaID) *Leader {
	t.Helper()
	l, err := NewLeader(log, cfg, Assignment{Self: 1, Epoch: 5, Replicas: []ReplicaID{1, 2, 3}, ISR: isr, ISRVersion: 1}, hw, at(0))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// fetchFrom sends the leader a checked-looking fetch from id.
func fetchFrom(t testing.TB, l *Leader, id ReplicaID, offset int64, last Epoch, now time.Time) FetchResponse {
	t.Helper()
	var resp FetchResponse
	if err := l.HandleFetch(&FetchRequest{Replica: id, Epoch: l.Epoch(), FetchOffset: offset, LastEpoch: last, MaxBytes: 1 << 20}, now, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func eventsOf(l interface{ Events([]Event) []Event }) []Event { return l.Events(nil) }

// only keeps the events of kind k.
func only(es []Event, k EventKind) []Event {
	var out []Event
	for _, e := range es {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

func TestNewLeaderChecks(t *testing.T) {
	tests := []struct {
		name    string
		log     *MemLog
		a       Assignment
		wantErr error
	}{
		{"epoch 0", NewMemLog(), Assignment{Self: 1, Replicas: []ReplicaID{1}, ISR: []ReplicaID{1}}, ErrInvalid},
		{"not a replica", NewMemLog(), Assignment{Self: 1, Epoch: 1, Replicas: []ReplicaID{2}, ISR: []ReplicaID{1}}, ErrInvalid},
		{"not in the ISR", NewMemLog(), Assignment{Self: 1, Epoch: 1, Replicas: []ReplicaID{1, 2}, ISR: []ReplicaID{2}}, ErrInvalid},
		{"ISR member not a replica", NewMemLog(), Assignment{Self: 1, Epoch: 1, Replicas: []ReplicaID{1, 2}, ISR: []ReplicaID{1, 3}}, ErrUnknownReplica},
		{"replica twice", NewMemLog(), Assignment{Self: 1, Epoch: 1, Replicas: []ReplicaID{1, 2, 2}, ISR: []ReplicaID{1}}, ErrInvalid},
		{"log from a newer epoch", memLogOf(t, batch(0, 7, 1, "x")), Assignment{Self: 1, Epoch: 5, Replicas: []ReplicaID{1}, ISR: []ReplicaID{1}}, ErrEpochRegress},
		{"fine", leaderLog(t), Assignment{Self: 1, Epoch: 5, Replicas: []ReplicaID{1, 2}, ISR: []ReplicaID{1, 2}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewLeader(tt.log, testConfig(), tt.a, 0, at(0))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	bad := testConfig()
	bad.MinISR = 0
	if _, err := NewLeader(NewMemLog(), bad, Assignment{Self: 1, Epoch: 1, Replicas: []ReplicaID{1}, ISR: []ReplicaID{1}}, 0, at(0)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("MinISR 0: err = %v", err)
	}
}

func TestLeaderHandleFetch(t *testing.T) {
	tests := []struct {
		name string
		// trim is the leader's log start (retention), 0 for none.
		trim          int64
		req           FetchRequest
		wantCode      Code
		wantDiverging bool
		wantDivEpoch  Epoch
		wantDivEnd    int64
		wantBases     []int64
		wantPos       int64 // follower 2's offset at the leader afterwards
		wantFenced    bool
	}{
		{name: "caught-up follower", req: FetchRequest{Replica: 2, Epoch: 5, FetchOffset: 6, LastEpoch: 3}, wantPos: 6},
		{name: "empty follower gets everything", req: FetchRequest{Replica: 2, Epoch: 5}, wantBases: []int64{0, 2, 3}, wantPos: 0},
		{name: "behind on a shared epoch", req: FetchRequest{Replica: 2, Epoch: 5, FetchOffset: 3, LastEpoch: 1}, wantBases: []int64{3}, wantPos: 3},
		{name: "tail of an epoch the leader lacks", req: FetchRequest{Replica: 2, Epoch: 5, FetchOffset: 5, LastEpoch: 2}, wantDiverging: true, wantDivEpoch: 1, wantDivEnd: 3, wantPos: -1},
		{name: "longer tail of the leader's last epoch", req: FetchRequest{Replica: 2, Epoch: 5, FetchOffset: 8, LastEpoch: 3}, wantDiverging: true, wantDivEpoch: 3, wantDivEnd: 6, wantPos: -1},
		{name: "records of an epoch after the leader's records", req: FetchRequest{Replica: 2, Epoch: 5, FetchOffset: 7, LastEpoch: 4}, wantDiverging: true, wantDivEpoch: 3, wantDivEnd: 6, wantPos: -1},
		{name: "past the end without an epoch", req: FetchRequest{Replica: 2, Epoch: 5, FetchOffset: 9}, wantCode: CodeOutOfRange, wantPos: -1},
		{name: "below the start", trim: 3, req: FetchRequest{Replica: 2, Epoch: 5, FetchOffset: 2, LastEpoch: 1}, wantCode: CodeOutOfRange, wantPos: -1},
		{name: "follower of an older epoch", req: FetchRequest{Replica: 2, Epoch: 4, FetchOffset: 6, LastEpoch: 3}, wantCode: CodeStaleEpoch, wantPos: -1},
		{name: "follower of a newer epoch fences", req: FetchRequest{Replica: 2, Epoch: 6, FetchOffset: 6, LastEpoch: 3}, wantCode: CodeFenced, wantPos: -1, wantFenced: true},
		{name: "unknown replica", req: FetchRequest{Replica: 9, Epoch: 5}, wantCode: CodeUnknownReplica, wantPos: -1},
		{name: "the leader itself", req: FetchRequest{Replica: 1, Epoch: 5}, wantCode: CodeUnknownReplica, wantPos: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := leaderLog(t)
			if err := log.TrimTo(tt.trim); err != nil {
				t.Fatal(err)
			}
			l := newTestLeader(t, log, testConfig(), 0, 1, 2, 3)
			req := tt.req
			req.Corr, req.MaxBytes = 42, 1<<20
			var resp FetchResponse
			if err := l.HandleFetch(&req, at(1), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Corr != 42 || resp.FetchOffset != req.FetchOffset {
				t.Fatalf("echo: corr %d offset %d", resp.Corr, resp.FetchOffset)
			}
			if resp.Code != tt.wantCode || resp.Diverging != tt.wantDiverging || resp.DivergingEpoch != tt.wantDivEpoch || resp.DivergingEnd != tt.wantDivEnd {
				t.Fatalf("answer: code %d diverging %v (%d, %d); want code %d diverging %v (%d, %d)",
					resp.Code, resp.Diverging, resp.DivergingEpoch, resp.DivergingEnd, tt.wantCode, tt.wantDiverging, tt.wantDivEpoch, tt.wantDivEnd)
			}
			if !slices.Equal(bases(resp.Batches), tt.wantBases) {
				t.Fatalf("batches %v, want %v", bases(resp.Batches), tt.wantBases)
			}
			if st, _ := l.Follower(2); st.Offset != tt.wantPos {
				t.Fatalf("follower 2 at %d, want %d", st.Offset, tt.wantPos)
			}
			if l.Fenced() != tt.wantFenced {
				t.Fatalf("fenced = %v", l.Fenced())
			}
			if tt.wantFenced {
				if es := only(eventsOf(l), EventFenced); len(es) != 1 || es[0].Epoch != 6 {
					t.Fatalf("fenced events %v", es)
				}
			}
		})
	}
}

func TestLeaderHighWatermark(t *testing.T) {
	type fetch struct {
		id  ReplicaID
		off int64
	}
	tests := []struct {
		name    string
		isr     []ReplicaID
		hw      int64 // the new leader's starting watermark
		fetches []fetch
		want    int64
	}{
		{"alone in the ISR: the log end", []ReplicaID{1}, 0, nil, 6},
		{"followers not heard from hold it", []ReplicaID{1, 2, 3}, 2, nil, 2},
		{"one follower not heard from holds it", []ReplicaID{1, 2, 3}, 0, []fetch{{2, 6}}, 0},
		{"smallest ISR log end", []ReplicaID{1, 2, 3}, 0, []fetch{{2, 6}, {3, 3}}, 3},
		{"both caught up", []ReplicaID{1, 2, 3}, 0, []fetch{{2, 6}, {3, 6}}, 6},
		{"out-of-sync replicas do not count", []ReplicaID{1, 2}, 0, []fetch{{2, 6}, {3, 0}}, 6},
		{"never goes down", []ReplicaID{1, 2}, 3, []fetch{{2, 0}}, 3},
		{"a late lower fetch changes nothing", []ReplicaID{1, 2}, 0, []fetch{{2, 6}, {2, 3}}, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newTestLeader(t, leaderLog(t), testConfig(), tt.hw, tt.isr...)
			for _, f := range tt.fetches {
				// The epoch of the follower's last record, as the
				// leader's log has it.
				last := map[int64]Epoch{0: 0, 3: 1, 6: 3}[f.off]
				if r := fetchFrom(t, l, f.id, f.off, last, at(1)); r.Code != CodeOK || r.Diverging {
					t.Fatalf("fetch %+v: %+v", f, r)
				}
			}
			if l.HighWatermark() != tt.want {
				t.Fatalf("hw = %d, want %d", l.HighWatermark(), tt.want)
			}
			if r := fetchFrom(t, l, 2, 6, 3, at(2)); r.HighWatermark != l.HighWatermark() {
				t.Fatalf("response carries hw %d, leader has %d", r.HighWatermark, l.HighWatermark())
			}
		})
	}
}

func TestLeaderAcks(t *testing.T) {
	data := func(s string) Batch { return Batch{Count: 1, Data: []byte(s)} }
	tests := []struct {
		name   string
		minISR int
		isr    []ReplicaID
		// run drives the leader and returns the outcomes seen, in
		// order: "acked", an error's text, or "refused: <err>".
		run  func(t *testing.T, l *Leader) []error
		want []error
	}{
		{
			name: "eventual is acknowledged on append", minISR: 2, isr: []ReplicaID{1, 2, 3},
			run: func(t *testing.T, l *Leader) []error {
				_, err := l.Append(data("x"), Eventual, at(1))
				return []error{err}
			},
			want: []error{nil},
		},
		{
			name: "strong waits for the whole ISR", minISR: 2, isr: []ReplicaID{1, 2, 3},
			run: func(t *testing.T, l *Leader) []error {
				base, err := l.Append(data("x"), Strong, at(1))
				if err != nil || base != 6 {
					t.Fatalf("append: %d, %v", base, err)
				}
				fetchFrom(t, l, 2, 7, 5, at(2))
				out := outcomes(l)
				if len(out) != 0 || l.Pending() != 1 {
					t.Fatalf("acknowledged before replica 3 had it: %v", out)
				}
				fetchFrom(t, l, 3, 7, 5, at(3))
				return outcomes(l)
			},
			want: []error{nil},
		},
		{
			name: "strong refused below MinISR", minISR: 2, isr: []ReplicaID{1},
			run: func(t *testing.T, l *Leader) []error {
				_, err := l.Append(data("x"), Strong, at(1))
				if l.EndOffset() != 6 {
					t.Fatalf("a refused write was appended")
				}
				return []error{err}
			},
			want: []error{ErrNotEnoughReplicas},
		},
		{
			name: "strong fails when the ISR shrank below MinISR before the watermark passed it", minISR: 2, isr: []ReplicaID{1, 2},
			run: func(t *testing.T, l *Leader) []error {
				if _, err := l.Append(data("x"), Strong, at(1)); err != nil {
					t.Fatal(err)
				}
				if err := l.CommitISR([]ReplicaID{1}, 2, at(2)); err != nil {
					t.Fatal(err)
				}
				return outcomes(l)
			},
			want: []error{ErrNotEnoughReplicas},
		},
		{
			name: "strong times out", minISR: 1, isr: []ReplicaID{1, 2},
			run: func(t *testing.T, l *Leader) []error {
				if _, err := l.Append(data("x"), Strong, at(1)); err != nil {
					t.Fatal(err)
				}
				l.Tick(at(50))
				if out := outcomes(l); len(out) != 0 {
					t.Fatalf("early: %v", out)
				}
				l.Tick(at(61))
				return outcomes(l)
			},
			want: []error{ErrTimeout},
		},
		{
			name: "fencing fails pending and new writes, and nothing is acknowledged after", minISR: 1, isr: []ReplicaID{1, 2},
			run: func(t *testing.T, l *Leader) []error {
				if _, err := l.Append(data("x"), Strong, at(1)); err != nil {
					t.Fatal(err)
				}
				if !l.ObserveEpoch(6) {
					t.Fatal("not fenced by epoch 6")
				}
				out := outcomes(l)
				_, err := l.Append(data("y"), Eventual, at(2))
				out = append(out, err)
				var resp FetchResponse
				_ = l.HandleFetch(&FetchRequest{Replica: 2, Epoch: 5, FetchOffset: 7, LastEpoch: 5}, at(3), &resp)
				if resp.Code != CodeFenced {
					t.Fatalf("fenced leader answered %d", resp.Code)
				}
				if l.HighWatermark() != 0 || len(outcomes(l)) != 0 {
					t.Fatal("a fenced leader moved on")
				}
				return out
			},
			want: []error{ErrFenced, ErrFenced},
		},
		{
			name: "an older epoch does not fence", minISR: 1, isr: []ReplicaID{1},
			run: func(t *testing.T, l *Leader) []error {
				if l.ObserveEpoch(5) || l.ObserveEpoch(4) {
					t.Fatal("fenced by an old epoch")
				}
				_, err := l.Append(data("x"), Strong, at(1))
				return append([]error{err}, outcomes(l)...)
			},
			want: []error{nil, nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MinISR = tt.minISR
			cfg.AckTimeout = 60 * time.Millisecond
			l := newTestLeader(t, leaderLog(t), cfg, 0, tt.isr...)
			l.Events(nil)
			got := tt.run(t, l)
			if len(got) != len(tt.want) {
				t.Fatalf("outcomes %v, want %v", got, tt.want)
			}
			for i := range got {
				if !errors.Is(got[i], tt.want[i]) || (got[i] == nil) != (tt.want[i] == nil) {
					t.Fatalf("outcome %d = %v, want %v (all: %v)", i, got[i], tt.want[i], got)
				}
			}
		})
	}
}

// outcomes drains the leader's write outcomes: nil for acknowledged.
func outcomes(l *Leader) []error {
	var out []error
	for _, e := range l.Events(nil) {
		switch e.Kind {
		case EventAcked:
			out = append(out, nil)
		case EventWriteFailed:
			out = append(out, e.Err)
		}
	}
	return out
}

func TestLeaderISRShrink(t *testing.T) {
	l := newTestLeader(t, leaderLog(t), testConfig(), 0, 1, 2, 3)
	// Replica 2 keeps up; 3 never fetches.
	for ms := 10; ms <= 100; ms += 10 {
		fetchFrom(t, l, 2, 6, 3, at(ms))
		l.Tick(at(ms))
	}
	if ps := only(eventsOf(l), EventISRProposal); len(ps) != 0 {
		t.Fatalf("proposed within MaxLag: %v", ps)
	}
	if l.HighWatermark() != 0 {
		t.Fatalf("hw %d without replica 3", l.HighWatermark())
	}
	l.Tick(at(101))
	ps := only(eventsOf(l), EventISRProposal)
	if len(ps) != 1 || !slices.Equal(ps[0].ISR, []ReplicaID{1, 2}) || ps[0].Epoch != 5 || ps[0].Version != 1 {
		t.Fatalf("proposals %v, want {1 2} at epoch 5 version 1", ps)
	}
	// Until the control plane answers, replica 3 may still be in its
	// ISR: the watermark waits for it.
	fetchFrom(t, l, 2, 6, 3, at(110))
	if l.HighWatermark() != 0 {
		t.Fatalf("hw %d before the shrink committed", l.HighWatermark())
	}
	// Unanswered, the same proposal goes again.
	l.Tick(at(150))
	if ps := only(eventsOf(l), EventISRProposal); len(ps) != 0 {
		t.Fatalf("resent early: %v", ps)
	}
	l.Tick(at(151))
	if ps := only(eventsOf(l), EventISRProposal); len(ps) != 1 || !slices.Equal(ps[0].ISR, []ReplicaID{1, 2}) || ps[0].Version != 1 {
		t.Fatalf("resent %v", ps)
	}
	// Old news changes nothing.
	if err := l.CommitISR([]ReplicaID{1}, 1, at(151)); err != nil {
		t.Fatal(err)
	}
	if isr, v := l.ISR(); v != 1 || len(isr) != 3 {
		t.Fatalf("isr %v v%d after old news", isr, v)
	}
	if err := l.CommitISR([]ReplicaID{1, 2}, 2, at(151)); err != nil {
		t.Fatal(err)
	}
	if l.HighWatermark() != 6 {
		t.Fatalf("hw %d after the shrink, want 6", l.HighWatermark())
	}
	if err := l.CommitISR([]ReplicaID{1, 7}, 3, at(151)); !errors.Is(err, ErrUnknownReplica) {
		t.Fatalf("unknown member: %v", err)
	}
}

func TestLeaderISRExpand(t *testing.T) {
	l := newTestLeader(t, leaderLog(t), testConfig(), 0, 1, 2)
	fetchFrom(t, l, 2, 6, 3, at(1)) // hw 6
	if l.HighWatermark() != 6 {
		t.Fatalf("hw %d", l.HighWatermark())
	}
	// Replica 3 is behind the watermark: it stays out.
	fetchFrom(t, l, 3, 3, 1, at(2))
	fetchFrom(t, l, 3, 3, 1, at(3))
	if ps := only(eventsOf(l), EventISRProposal); len(ps) != 0 {
		t.Fatalf("proposed a lagging replica: %v", ps)
	}
	if _, err := l.Append(Batch{Count: 1, Data: []byte("x")}, Strong, at(4)); err != nil {
		t.Fatal(err)
	}
	// Caught up to where the log ended at its previous fetch and past
	// the watermark: it joins.
	fetchFrom(t, l, 3, 6, 3, at(5))
	ps := only(eventsOf(l), EventISRProposal)
	if len(ps) != 1 || !slices.Equal(ps[0].ISR, []ReplicaID{1, 2, 3}) {
		t.Fatalf("proposals %v, want {1 2 3}", ps)
	}
	// While the expansion is pending, the watermark counts replica 3.
	fetchFrom(t, l, 2, 7, 5, at(6))
	if l.HighWatermark() != 6 {
		t.Fatalf("hw %d passed the joining replica", l.HighWatermark())
	}
	fetchFrom(t, l, 3, 7, 5, at(7))
	if l.HighWatermark() != 7 || len(only(l.Events(nil), EventAcked)) != 1 {
		t.Fatalf("hw %d, write not acknowledged", l.HighWatermark())
	}
}

// A follower that is always one append behind — it reaches where the
// log ended at its previous fetch — stays in sync (Kafka's rule); one
// that stops making progress leaves after MaxLag.
func TestLeaderCaughtUpRule(t *testing.T) {
	l := newTestLeader(t, NewMemLog(), testConfig(), 0, 1, 2)
	pos := int64(0)
	for ms := 1; ms <= 300; ms += 10 {
		if _, err := l.Append(Batch{Count: 1, Data: []byte("x")}, Eventual, at(ms)); err != nil {
			t.Fatal(err)
		}
		last := Epoch(0)
		if pos > 0 {
			last = 5
		}
		fetchFrom(t, l, 2, pos, last, at(ms+5))
		pos = l.EndOffset()
		l.Tick(at(ms + 5))
	}
	if ps := only(eventsOf(l), EventISRProposal); len(ps) != 0 {
		t.Fatalf("a follower keeping up was proposed out: %v", ps)
	}
	for ms := 310; ms <= 450; ms += 10 {
		if _, err := l.Append(Batch{Count: 1, Data: []byte("x")}, Eventual, at(ms)); err != nil {
			t.Fatal(err)
		}
		fetchFrom(t, l, 2, pos, 5, at(ms+5)) // stuck at pos
		l.Tick(at(ms + 5))
	}
	// Unanswered, it is sent again every ProposalRetry.
	ps := only(eventsOf(l), EventISRProposal)
	if len(ps) == 0 {
		t.Fatal("the stuck follower was not proposed out")
	}
	for _, p := range ps {
		if !slices.Equal(p.ISR, []ReplicaID{1}) {
			t.Fatalf("proposals %v, want {1}", ps)
		}
	}
}

// TestLeaderSetReplicas: a move adds replica 4 and then drops replica 3
// at one epoch; a strong write pending across both is acknowledged once
// the replicas that count hold it, and the newcomer counts only once the
// control plane put it in the ISR.
func TestLeaderSetReplicas(t *testing.T) {
	cfg := testConfig()
	cfg.MinISR = 2
	l := newTestLeader(t, leaderLog(t), cfg, 6, 1, 2, 3)
	fetchFrom(t, l, 2, 6, 3, at(1))
	fetchFrom(t, l, 3, 6, 3, at(1))
	base, err := l.Append(Batch{Count: 1, Data: []byte("w")}, Strong, at(2))
	if err != nil {
		t.Fatal(err)
	}
	// 4 joins out of sync: nothing changes for the write yet.
	if err := l.SetReplicas([]ReplicaID{1, 2, 3, 4}, []ReplicaID{1, 2, 3}, 2, at(3)); err != nil {
		t.Fatal(err)
	}
	if evs := only(eventsOf(l), EventAcked); len(evs) != 0 {
		t.Fatalf("acked before the followers fetched: %v", evs)
	}
	fetchFrom(t, l, 2, 7, 5, at(4))
	fetchFrom(t, l, 3, 7, 5, at(4))
	if evs := only(eventsOf(l), EventAcked); len(evs) != 1 || evs[0].Offset != base {
		t.Fatalf("the pending write across the reassignment: %v", evs)
	}
	// 4 fetched everything: it may join; then 3 is dropped.
	fetchFrom(t, l, 4, 7, 5, at(5))
	if err := l.SetReplicas([]ReplicaID{1, 2, 4}, []ReplicaID{1, 2, 4}, 3, at(6)); err != nil {
		t.Fatal(err)
	}
	if isr, v := l.ISR(); !slices.Equal(isr, []ReplicaID{1, 2, 4}) || v != 3 {
		t.Fatalf("ISR %v version %d", isr, v)
	}
	if _, ok := l.Follower(3); ok {
		t.Fatal("a dropped replica is still a follower")
	}
	// A fetch from the dropped replica is refused.
	var resp FetchResponse
	if err := l.HandleFetch(&FetchRequest{Replica: 3, Epoch: 5, FetchOffset: 7, LastEpoch: 5}, at(7), &resp); err != nil || resp.Code != CodeUnknownReplica {
		t.Fatalf("a fetch from the dropped replica: %v %v", resp.Code, err)
	}
	if err := l.SetReplicas([]ReplicaID{2, 4}, []ReplicaID{2, 4}, 4, at(8)); err == nil {
		t.Fatal("a reassignment without the leader was accepted")
	}
}

// A follower the control plane takes out of the in-sync set (it found
// the member dead) is not proposed back on what it showed before: a dead
// member would be proposed, refused and proposed again at every tick.
// It rejoins once it fetches again.
func TestLeaderRemovedFollowerRejoinsOnlyByFetching(t *testing.T) {
	l := newTestLeader(t, leaderLog(t), testConfig(), 0, 1, 2, 3)
	fetchFrom(t, l, 2, 6, 3, at(1))
	fetchFrom(t, l, 3, 6, 3, at(1))
	if l.HighWatermark() != 6 {
		t.Fatalf("hw %d", l.HighWatermark())
	}
	_ = eventsOf(l)
	// A fetch of 3's that came before, held for long polling.
	held := FetchRequest{Replica: 3, Epoch: l.Epoch(), FetchOffset: 6, LastEpoch: 3, MaxBytes: 1 << 20, Received: at(1)}
	// Replica 3 is found dead: the control plane's own change.
	if err := l.CommitISR([]ReplicaID{1, 2}, 2, at(2)); err != nil {
		t.Fatal(err)
	}
	for ms := 2; ms <= 90; ms += 5 { // within MaxLag of its last fetch
		fetchFrom(t, l, 2, 6, 3, at(ms))
		l.Tick(at(ms))
		// The held fetch answered again (the log moved, say) is no
		// fetch made since.
		var resp FetchResponse
		if err := l.HandleFetch(&held, at(ms), &resp); err != nil {
			t.Fatal(err)
		}
	}
	if ps := only(eventsOf(l), EventISRProposal); len(ps) != 0 {
		t.Fatalf("proposed a member the control plane took out, with no fetch since: %v", ps)
	}
	// A refused expansion (as for a member the map holds dead) is the
	// same: no new proposal until the follower fetches again.
	fetchFrom(t, l, 3, 6, 3, at(91))
	ps := only(eventsOf(l), EventISRProposal)
	if len(ps) != 1 || !slices.Equal(ps[0].ISR, []ReplicaID{1, 2, 3}) {
		t.Fatalf("after a fetch at the log end: proposals %v, want {1 2 3}", ps)
	}
	if err := l.CommitISR([]ReplicaID{1, 2}, 3, at(91)); err != nil { // refused: version moves on, 3 stays out
		t.Fatal(err)
	}
	l.Tick(at(92))
	fetchFrom(t, l, 2, 6, 3, at(150))
	l.Tick(at(150)) // past ProposalRetry
	if ps := only(eventsOf(l), EventISRProposal); len(ps) != 0 {
		t.Fatalf("proposed again after a refusal with no fetch since: %v", ps)
	}
	fetchFrom(t, l, 3, 6, 3, at(151))
	if ps := only(eventsOf(l), EventISRProposal); len(ps) != 1 {
		t.Fatalf("a fetching follower did not rejoin: %v", ps)
	}
}
