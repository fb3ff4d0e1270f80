package replica

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// The simulation: 3–5 replicas of one log, a tiny controller (the
// control plane: it elects from the ISR only, applies ISR proposals by
// compare-and-set, finds crashed replicas and publishes its state), and
// a network that loses and delays messages. Fetches go through the wire
// codec. rapid draws the actions (writes, crashes, restarts, spurious
// elections, failure detection, retention, idle time); a seeded PRNG
// drawn by rapid decides each message's loss and delay. After the run
// the network heals and every replica restarts, and the cluster must
// converge. Time is ticks of a millisecond.

// simTrace logs what the simulation does, to read a failing sequence.
var simTrace = flag.Bool("simtrace", false, "log the replication simulation's steps")

func (s *sim) logf(format string, args ...any) {
	if *simTrace {
		s.t.Logf("tick %d: "+format, append([]any{s.tick}, args...)...)
	}
}

// simConfig is the replicas' configuration, in ticks.
func simConfig(minISR int) Config {
	return Config{
		MaxLag:        10 * time.Millisecond,
		MinISR:        minISR,
		AckTimeout:    40 * time.Millisecond,
		ProposalRetry: 5 * time.Millisecond,
		FetchMaxBytes: 64,
		FetchTimeout:  8 * time.Millisecond,
		RetryBackoff:  time.Millisecond,
	}
}

// ctrlState is what the controller publishes.
type ctrlState struct {
	epoch   Epoch
	leader  ReplicaID // 0: none yet
	isr     []ReplicaID
	version uint64
}

type msgKind uint8

const (
	msgFetch msgKind = iota
	msgFetchResp
	msgProposal
	msgState
)

type simMsg struct {
	at, seq  int
	kind     msgKind
	from, to ReplicaID // to 0 is the controller
	frame    []byte
	proposal Event
	state    ctrlState
}

type simNode struct {
	id       ReplicaID
	log      *MemLog
	up       bool
	leader   *Leader
	follower *Follower
	// epoch is the newest epoch the replica heard of, ledEpoch the
	// newest it led: both survive a crash (a checkpoint), so that a
	// restarted replica never leads an epoch twice.
	epoch, ledEpoch Epoch
	// savedHW is the high watermark checkpointed at a crash; maxHW the
	// highest it ever had, which it must never go below.
	savedHW, maxHW int64
}

func (n *simNode) hw() int64 {
	switch {
	case n.leader != nil:
		return n.leader.HighWatermark()
	case n.follower != nil:
		return n.follower.HighWatermark()
	}
	return n.savedHW
}

// simWrite is one write a client made.
type simWrite struct {
	id        uint64
	strong    bool
	base, end int64
	epoch     Epoch
	issued    int
	acked     bool
	ackedAt   int
	failed    error
}

// simStats add up over every sequence, for the test's log.
type simStats struct {
	sequences, steps, strongAcked, strongFailed, eventual, eventualLost  int
	zombieAcks, fenced, truncations, resets, elections, crashes, dropped int
}

type sim struct {
	t       *rapid.T
	rng     *rand.Rand
	cfg     Config
	ids     []ReplicaID
	nodes   map[ReplicaID]*simNode
	ctrl    ctrlState
	alive   map[ReplicaID]bool // the controller's belief
	net     []simMsg
	seq     int
	tick    int
	loss    float64
	delay   int
	nextID  uint64
	writes  map[uint64]*simWrite
	pending map[*Leader]map[int64]*simWrite
	// fencedLeaders are the Leaders that reported EventFenced.
	fencedLeaders map[*Leader]bool
	// committed is every record any replica exposed below its high
	// watermark, by base offset: the one history all reads must agree
	// with.
	committed map[int64]Batch
	stats     *simStats
	events    []Event
}

func (s *sim) now() time.Time { return t0.Add(time.Duration(s.tick) * time.Millisecond) }

func (s *sim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("tick %d: "+format, append([]any{s.tick}, args...)...)
}

func newSim(t *rapid.T, stats *simStats) *sim {
	n := rapid.IntRange(3, 5).Draw(t, "replicas")
	s := &sim{
		t:             t,
		rng:           rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 1)),
		cfg:           simConfig(rapid.IntRange(1, n-1).Draw(t, "minISR")),
		nodes:         map[ReplicaID]*simNode{},
		alive:         map[ReplicaID]bool{},
		loss:          rapid.SampledFrom([]float64{0, 0.05, 0.15, 0.3}).Draw(t, "loss"),
		delay:         rapid.IntRange(0, 4).Draw(t, "maxDelay"),
		writes:        map[uint64]*simWrite{},
		pending:       map[*Leader]map[int64]*simWrite{},
		fencedLeaders: map[*Leader]bool{},
		committed:     map[int64]Batch{},
		stats:         stats,
	}
	for i := 1; i <= n; i++ {
		id := ReplicaID(i)
		s.ids = append(s.ids, id)
		f, err := NewFollower(NewMemLog(), s.cfg, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		s.nodes[id] = &simNode{id: id, log: f.log.(*MemLog), up: true, follower: f}
		s.alive[id] = true
	}
	s.ctrl = ctrlState{isr: slices.Clone(s.ids), version: 1}
	s.elect(0, false)
	return s
}

// send queues m, or loses it.
func (s *sim) send(m simMsg) {
	if s.rng.Float64() < s.loss {
		s.stats.dropped++
		return
	}
	m.at = s.tick + 1 + s.rng.IntN(s.delay+1)
	m.seq = s.seq
	s.seq++
	s.net = append(s.net, m)
}

// publish sends the controller's state to every replica.
func (s *sim) publish() {
	for _, id := range s.ids {
		s.send(simMsg{kind: msgState, to: id, state: ctrlState{s.ctrl.epoch, s.ctrl.leader, slices.Clone(s.ctrl.isr), s.ctrl.version}})
	}
}

// elect makes an alive ISR member other than old the leader at a new
// epoch (dropping old from the ISR when drop is set). It reports false
// when there is no candidate: the log stays offline.
func (s *sim) elect(old ReplicaID, drop bool) bool {
	var cands []ReplicaID
	for _, id := range s.ctrl.isr {
		if id != old && s.alive[id] {
			cands = append(cands, id)
		}
	}
	if len(cands) == 0 {
		return false
	}
	pick := cands[rapid.IntRange(0, len(cands)-1).Draw(s.t, "candidate")]
	if drop && len(s.ctrl.isr) > 1 {
		s.ctrl.isr = slices.DeleteFunc(slices.Clone(s.ctrl.isr), func(id ReplicaID) bool { return id == old })
	}
	s.ctrl.epoch++
	s.ctrl.version++
	s.ctrl.leader = pick
	s.stats.elections++
	s.logf("controller elects %d at epoch %d, isr %v v%d", pick, s.ctrl.epoch, s.ctrl.isr, s.ctrl.version)
	s.publish()
	return true
}

// detect is the controller finding crashed replicas: out of the ISR
// (never emptying it), and a new leader if the leader is one of them.
func (s *sim) detect() {
	changed := false
	for _, id := range s.ids {
		n := s.nodes[id]
		if n.up || !s.alive[id] {
			continue
		}
		s.alive[id] = false
		if id == s.ctrl.leader {
			if s.elect(id, true) {
				continue
			}
		} else if len(s.ctrl.isr) > 1 && slices.Contains(s.ctrl.isr, id) {
			s.ctrl.isr = slices.DeleteFunc(slices.Clone(s.ctrl.isr), func(x ReplicaID) bool { return x == id })
			s.ctrl.version++
			changed = true
		}
	}
	if changed {
		s.publish()
	}
}

// onProposal is the controller's compare-and-set of the ISR.
func (s *sim) onProposal(from ReplicaID, p Event) {
	if p.Epoch == s.ctrl.epoch && from == s.ctrl.leader && p.Version == s.ctrl.version {
		s.ctrl.isr = slices.Clone(p.ISR)
		s.ctrl.version++
		s.logf("controller applies %d's proposal: isr %v v%d", from, s.ctrl.isr, s.ctrl.version)
	}
	// Applied or not, the proposer learns the current state.
	s.publish()
}

func (s *sim) crash(id ReplicaID) {
	n := s.nodes[id]
	if !n.up {
		return
	}
	s.stats.crashes++
	n.savedHW = n.hw()
	s.logf("replica %d crashes, log [%d,%d) hw %d", id, n.log.StartOffset(), n.log.EndOffset(), n.savedHW)
	if n.leader != nil {
		// Its pending writes are neither acknowledged nor failed:
		// the clients time out.
		delete(s.pending, n.leader)
	}
	n.up, n.leader, n.follower = false, nil, nil
}

func (s *sim) restart(id ReplicaID) {
	n := s.nodes[id]
	if n.up {
		return
	}
	f, err := NewFollower(n.log, s.cfg, id, n.savedHW)
	if err != nil {
		s.fatalf("restart %d: %v", id, err)
	}
	n.up, n.follower = true, f
	s.alive[id] = true
	s.logf("replica %d restarts", id)
	switch {
	case id == s.ctrl.leader:
		// A restarted leader never resumes its epoch.
		if !s.elect(0, false) {
			s.fatalf("no candidate although %d is alive", id)
		}
	case !s.alive[s.ctrl.leader] && slices.Contains(s.ctrl.isr, id):
		s.elect(s.ctrl.leader, false)
	default:
		s.publish()
	}
}

// demote turns a fenced leader into a follower that knows epoch.
func (s *sim) demote(n *simNode, epoch Epoch) {
	hw := n.leader.HighWatermark()
	delete(s.pending, n.leader)
	f, err := NewFollower(n.log, s.cfg, n.id, hw)
	if err != nil {
		s.fatalf("demote: %v", err)
	}
	n.leader, n.follower = nil, f
	n.epoch = max(n.epoch, epoch)
	s.logf("replica %d fenced by epoch %d, follows: log %s hw %d", n.id, epoch, batchList(n.log.Batches()), hw)
}

func (s *sim) onState(n *simNode, st ctrlState) {
	if st.epoch < n.epoch {
		return
	}
	if n.leader != nil {
		if st.epoch == n.leader.Epoch() {
			if err := n.leader.CommitISR(st.isr, st.version, s.now()); err != nil {
				s.fatalf("CommitISR: %v", err)
			}
			s.drainLeader(n)
			return
		}
		n.leader.ObserveEpoch(st.epoch)
		s.drainLeader(n) // demotes it
	}
	n.epoch = max(n.epoch, st.epoch)
	switch {
	case st.leader == 0:
	case st.leader == n.id:
		if st.epoch <= n.ledEpoch {
			return
		}
		l, err := NewLeader(n.log, s.cfg, Assignment{Self: n.id, Epoch: st.epoch, Replicas: s.ids, ISR: st.isr, ISRVersion: st.version}, n.follower.HighWatermark(), s.now())
		if err != nil {
			s.fatalf("replica %d leads epoch %d: %v", n.id, st.epoch, err)
		}
		n.leader, n.follower, n.ledEpoch = l, nil, st.epoch
		s.logf("replica %d leads epoch %d: log %s hw %d isr %v", n.id, st.epoch, batchList(n.log.Batches()), l.HighWatermark(), st.isr)
		s.pending[l] = map[int64]*simWrite{}
		s.drainLeader(n)
	default:
		if _, e, _ := n.follower.Leader(); n.follower.SetLeader(st.leader, st.epoch) && e != st.epoch {
			s.logf("replica %d follows %d at epoch %d", n.id, st.leader, st.epoch)
		}
	}
}

func (s *sim) onFetch(n *simNode, m simMsg) {
	req, err := DecodeFetchRequest(m.frame)
	if err != nil {
		s.fatalf("decode request: %v", err)
	}
	var resp FetchResponse
	if n.leader != nil {
		if err := n.leader.HandleFetch(&req, s.now(), &resp); err != nil {
			s.fatalf("HandleFetch: %v", err)
		}
		s.logf("leader %d answers %+v: code %d diverging %v (%d,%d), history %v", n.id, req, resp.Code, resp.Diverging, resp.DivergingEpoch, resp.DivergingEnd, n.log.Epochs())
		s.drainLeader(n)
	} else {
		Refuse(&req, CodeNotLeader, n.epoch, &resp)
	}
	s.send(simMsg{kind: msgFetchResp, from: n.id, to: m.from, frame: AppendFetchResponse(nil, &resp)})
}

func (s *sim) onFetchResp(n *simNode, m simMsg) {
	if n.follower == nil {
		return
	}
	var resp FetchResponse
	if err := DecodeFetchResponse(m.frame, &resp); err != nil {
		s.fatalf("decode response: %v", err)
	}
	hw := n.follower.HighWatermark()
	f := n.follower
	taken := f.inflight && resp.Corr == f.corr && resp.FetchOffset == f.fetchAt && resp.Epoch == f.epoch
	err := f.HandleResponse(&resp, s.now())
	switch {
	case err == nil:
	case errors.Is(err, ErrStaleEpoch), errors.Is(err, ErrNotLeader), errors.Is(err, ErrFenced):
	default:
		s.fatalf("replica %d HandleResponse: %v", n.id, err)
	}
	s.events = n.follower.Events(s.events[:0])
	s.logf("replica %d took %v answer (code %d diverging %v (%d,%d) batches %s hw %d) to fetch at %d: log %s %v hw %d", n.id, taken, resp.Code, resp.Diverging, resp.DivergingEpoch, resp.DivergingEnd, batchList(resp.Batches), resp.HighWatermark, resp.FetchOffset, batchList(n.log.Batches()), n.log.Epochs(), f.HighWatermark())
	for _, e := range s.events {
		switch e.Kind {
		case EventTruncated, EventReset:
			s.logf("replica %d %v to %d: log %s hw %d", n.id, e.Kind, e.Offset, batchList(n.log.Batches()), f.HighWatermark())
			if e.Kind == EventTruncated {
				s.stats.truncations++
			} else {
				s.stats.resets++
			}
			// Invariant: a divergent tail is always above the high
			// watermark: committed records are never cut.
			if e.Offset < hw {
				s.fatalf("replica %d cut its log to %d below its high watermark %d", n.id, e.Offset, hw)
			}
		}
	}
	// Invariant: a follower that took records from the current leader
	// holds nothing that leader lacks.
	leader, epoch, _ := f.Leader()
	ln := s.nodes[leader]
	if taken && err == nil && m.from == leader && resp.Code == CodeOK && !resp.Diverging && ln.leader != nil && ln.leader.Epoch() == epoch && !ln.leader.Fenced() {
		s.samePrefix(n, ln, n.log.EndOffset())
		if n.log.EndOffset() > ln.log.EndOffset() {
			s.fatalf("replica %d ends at %d past its leader %d at %d", n.id, n.log.EndOffset(), ln.id, ln.log.EndOffset())
		}
	}
}

// samePrefix checks that a's log and b's hold the same batches below
// end, where both hold them.
func (s *sim) samePrefix(a, b *simNode, end int64) {
	from := max(a.log.StartOffset(), b.log.StartOffset())
	x := batchesIn(a.log, from, end)
	y := batchesIn(b.log, from, end)
	if len(x) != len(y) {
		s.fatalf("replicas %d and %d differ in [%d, %d): %s vs %s", a.id, b.id, from, end, show(x), show(y))
	}
	for i := range x {
		if !sameBatch(x[i], y[i]) {
			s.fatalf("replicas %d and %d differ at %d: %s vs %s", a.id, b.id, x[i].Base, show(x), show(y))
		}
	}
}

func batchesIn(l *MemLog, from, end int64) []Batch {
	var out []Batch
	for _, b := range l.Batches() {
		if b.Base >= from && b.End() <= end {
			out = append(out, b)
		}
	}
	return out
}

func sameBatch(a, b Batch) bool {
	return a.Base == b.Base && a.Count == b.Count && a.Epoch == b.Epoch && string(a.Data) == string(b.Data)
}

// batchList formats as show does, only when printed: the trace's
// arguments cost nothing when it is off.
type batchList []Batch

func (b batchList) String() string { return show(b) }

func show(bs []Batch) string {
	s := ""
	for _, b := range bs {
		s += fmt.Sprintf("[%d+%d e%d #%d]", b.Base, b.Count, b.Epoch, binary.BigEndian.Uint64(b.Data))
	}
	return s
}

// drainLeader handles a leader's events.
func (s *sim) drainLeader(n *simNode) {
	l := n.leader
	var fencedBy Epoch
	s.events = l.Events(s.events[:0])
	for _, e := range s.events {
		switch e.Kind {
		case EventAcked:
			// Invariant: a fenced leader acknowledges nothing more.
			if s.fencedLeaders[l] {
				s.fatalf("replica %d acknowledged [%d, %d) after it was fenced", n.id, e.Offset, e.End)
			}
			w := s.pending[l][e.Offset]
			if w == nil || w.end != e.End {
				s.fatalf("replica %d acknowledged an unknown write [%d, %d)", n.id, e.Offset, e.End)
			}
			delete(s.pending[l], e.Offset)
			w.acked, w.ackedAt = true, s.tick
			// Invariant: min.insync.replicas is a durability
			// promise: an acknowledged write is on MinISR replicas.
			copies := 0
			for _, id := range s.ids {
				if holds(s.nodes[id].log, w) {
					copies++
				}
			}
			if copies < s.cfg.MinISR {
				s.fatalf("write #%d acknowledged on %d replicas, MinISR %d", w.id, copies, s.cfg.MinISR)
			}
			s.stats.strongAcked++
			if l.Epoch() < s.ctrl.epoch {
				s.stats.zombieAcks++
			}
			s.commit(n, Batch{Base: w.base, Count: int32(w.end - w.base), Epoch: w.epoch, Data: binary.BigEndian.AppendUint64(nil, w.id)})
		case EventWriteFailed:
			if w := s.pending[l][e.Offset]; w != nil {
				w.failed = e.Err
				delete(s.pending[l], e.Offset)
				s.stats.strongFailed++
			}
		case EventISRProposal:
			s.send(simMsg{kind: msgProposal, from: n.id, to: 0, proposal: e})
		case EventFenced:
			s.fencedLeaders[l] = true
			s.stats.fenced++
			fencedBy = e.Epoch
		}
	}
	if l.Fenced() {
		// Invariant: fencing fails every pending write.
		if len(s.pending[l]) > 0 {
			s.fatalf("replica %d fenced with %d writes neither acknowledged nor failed", n.id, len(s.pending[l]))
		}
		s.demote(n, fencedBy)
	}
}

// commit adds a record to the committed history, which must agree.
func (s *sim) commit(n *simNode, b Batch) {
	if c, ok := s.committed[b.Base]; ok {
		if !sameBatch(c, b) {
			s.fatalf("replica %d commits %s at %d, history has %s", n.id, show([]Batch{b}), b.Base, show([]Batch{c}))
		}
		return
	}
	b.Data = slices.Clone(b.Data)
	s.committed[b.Base] = b
}

func (s *sim) write(strong bool, count int32) {
	var leaders []*simNode
	for _, id := range s.ids {
		if n := s.nodes[id]; n.up && n.leader != nil {
			leaders = append(leaders, n)
		}
	}
	if len(leaders) == 0 {
		return
	}
	// Any replica that thinks it leads may take a client's write, an
	// unfenced old leader included.
	n := leaders[rapid.IntRange(0, len(leaders)-1).Draw(s.t, "writeTo")]
	s.nextID++
	w := &simWrite{id: s.nextID, strong: strong, issued: s.tick, epoch: n.leader.Epoch()}
	c := Eventual
	if strong {
		c = Strong
	}
	base, err := n.leader.Append(Batch{Count: count, Data: binary.BigEndian.AppendUint64(nil, w.id)}, c, s.now())
	switch {
	case err == nil:
	case strong && errors.Is(err, ErrNotEnoughReplicas):
		return
	default:
		s.fatalf("append on replica %d: %v", n.id, err)
	}
	w.base, w.end = base, base+int64(count)
	s.logf("replica %d appends #%d at %d (strong %v) epoch %d", n.id, w.id, base, strong, w.epoch)
	s.writes[w.id] = w
	if strong {
		s.pending[n.leader][base] = w
	} else {
		s.stats.eventual++
	}
	s.drainLeader(n)
}

// trim is retention on the leader, below its high watermark.
func (s *sim) trim() {
	n := s.nodes[s.ctrl.leader]
	if n == nil || n.leader == nil {
		return
	}
	hw := n.leader.HighWatermark()
	var cuts []int64
	for _, b := range n.log.Batches() {
		if b.End() <= hw {
			cuts = append(cuts, b.End())
		}
	}
	if len(cuts) == 0 {
		return
	}
	if err := n.log.TrimTo(cuts[rapid.IntRange(0, len(cuts)-1).Draw(s.t, "trimTo")]); err != nil {
		s.fatalf("trim: %v", err)
	}
}

// step moves the simulation one tick on.
func (s *sim) step() {
	s.tick++
	now := s.now()
	sort.Slice(s.net, func(i, j int) bool {
		if s.net[i].at != s.net[j].at {
			return s.net[i].at < s.net[j].at
		}
		return s.net[i].seq < s.net[j].seq
	})
	due := 0
	for due < len(s.net) && s.net[due].at <= s.tick {
		due++
	}
	msgs := slices.Clone(s.net[:due])
	s.net = slices.Delete(s.net, 0, due)
	for _, m := range msgs {
		if m.to == 0 {
			s.onProposal(m.from, m.proposal)
			continue
		}
		n := s.nodes[m.to]
		if !n.up {
			continue
		}
		switch m.kind {
		case msgState:
			s.onState(n, m.state)
		case msgFetch:
			s.onFetch(n, m)
		case msgFetchResp:
			s.onFetchResp(n, m)
		}
	}
	for _, id := range s.ids {
		n := s.nodes[id]
		switch {
		case !n.up:
		case n.leader != nil:
			n.leader.Tick(now)
			s.drainLeader(n)
		case n.follower != nil:
			if req, ok := n.follower.Fetch(now); ok {
				to, _, _ := n.follower.Leader()
				s.send(simMsg{kind: msgFetch, from: id, to: to, frame: AppendFetchRequest(nil, &req)})
			}
		}
	}
	if s.tick%7 == 0 {
		s.publish()
	}
	s.check()
}

// check is the invariants that hold after every tick.
func (s *sim) check() {
	for _, id := range s.ids {
		n := s.nodes[id]
		hw := n.hw()
		// Invariant: the high watermark never goes down, and never
		// passes the log end.
		if hw < n.maxHW {
			s.fatalf("replica %d high watermark went from %d to %d", id, n.maxHW, hw)
		}
		n.maxHW = hw
		if hw > n.log.EndOffset() {
			s.fatalf("replica %d high watermark %d past its log end %d", id, hw, n.log.EndOffset())
		}
		// Invariant: what every replica exposes to readers, below
		// its high watermark, is one history (so replicas agree below
		// it, and what a reader saw never changes).
		visible, err := ReadCommitted(n.log, n.log.StartOffset(), 1<<30, hw, nil)
		if err != nil {
			s.fatalf("replica %d read: %v", id, err)
		}
		for _, b := range visible {
			s.commit(n, b)
		}
	}
	// Invariant: every acknowledged strong write is, at its offset, on
	// every member of the controller's ISR — so on any leader it can
	// elect, the current one included.
	for _, w := range s.writes {
		if !w.acked {
			continue
		}
		for _, id := range s.ctrl.isr {
			l := s.nodes[id].log
			if w.base < l.StartOffset() {
				continue
			}
			if !holds(l, w) {
				s.fatalf("acknowledged write #%d at [%d, %d) missing on ISR member %d: %s", w.id, w.base, w.end, id, show(l.Batches()))
			}
		}
	}
}

// holds says whether l has w's batch at w's offset.
func holds(l *MemLog, w *simWrite) bool {
	bs := l.Batches()
	i := sort.Search(len(bs), func(i int) bool { return bs[i].Base >= w.base })
	return i < len(bs) && bs[i].Base == w.base && bs[i].End() == w.end && binary.BigEndian.Uint64(bs[i].Data) == w.id
}

// heal ends the faults: no loss, every replica up, the controller told.
// The cluster must then converge: one leader at the controller's epoch,
// every replica in the ISR with the leader's log and high watermark.
func (s *sim) heal() {
	s.loss = 0
	for _, id := range s.ids {
		s.restart(id)
	}
	s.detect()
	for range 2000 {
		s.step()
		if s.converged() {
			return
		}
	}
	var state string
	for _, id := range s.ids {
		n := s.nodes[id]
		state += fmt.Sprintf("\n  %d: leader=%v log [%d,%d) hw %d", id, n.leader != nil, n.log.StartOffset(), n.log.EndOffset(), n.hw())
	}
	s.fatalf("no convergence: controller %+v%s", s.ctrl, state)
}

func (s *sim) converged() bool {
	ln := s.nodes[s.ctrl.leader]
	if ln.leader == nil || ln.leader.Epoch() != s.ctrl.epoch || len(s.ctrl.isr) != len(s.ids) {
		return false
	}
	end := ln.log.EndOffset()
	if ln.hw() != end {
		return false
	}
	for _, id := range s.ids {
		n := s.nodes[id]
		if n.log.EndOffset() != end || n.hw() != end {
			return false
		}
	}
	return true
}

// final checks the healed cluster: identical logs (caught-up replicas
// keep nothing the leader lacks), every acknowledged strong write on
// every replica, and real-time order among acknowledged writes.
func (s *sim) final() {
	ln := s.nodes[s.ctrl.leader]
	for _, id := range s.ids {
		s.samePrefix(s.nodes[id], ln, ln.log.EndOffset())
	}
	var acked []*simWrite
	for _, w := range s.writes {
		switch {
		case w.acked:
			acked = append(acked, w)
			for _, id := range s.ids {
				if l := s.nodes[id].log; w.base >= l.StartOffset() && !holds(l, w) {
					s.fatalf("acknowledged write #%d at %d lost on replica %d", w.id, w.base, id)
				}
			}
		case !w.strong:
			if w.base >= ln.log.StartOffset() && !holds(ln.log, w) {
				s.stats.eventualLost++
			}
		}
	}
	// Linearizability of the log: a write acknowledged before another
	// was issued sits at a lower offset.
	sort.Slice(acked, func(i, j int) bool { return acked[i].ackedAt < acked[j].ackedAt })
	for i, a := range acked {
		for _, b := range acked[i+1:] {
			if a.ackedAt < b.issued && a.base >= b.base {
				s.fatalf("write #%d acknowledged at tick %d sits at %d, after #%d issued later at tick %d at %d", a.id, a.ackedAt, a.base, b.id, b.issued, b.base)
			}
		}
	}
}

func TestReplicationProperties(t *testing.T) {
	var stats simStats
	rapid.Check(t, func(rt *rapid.T) {
		s := newSim(rt, &stats)
		stats.sequences++
		steps := rapid.IntRange(20, 200).Draw(rt, "steps")
		for range steps {
			switch a := rapid.IntRange(0, 99).Draw(rt, "action"); {
			case a < 30:
				s.write(rapid.Bool().Draw(rt, "strong"), int32(rapid.IntRange(1, 3).Draw(rt, "count")))
			case a < 34:
				s.crash(s.ids[rapid.IntRange(0, len(s.ids)-1).Draw(rt, "crash")])
			case a < 40:
				s.restart(s.ids[rapid.IntRange(0, len(s.ids)-1).Draw(rt, "restart")])
			case a < 43:
				// A spurious election: the controller moves the
				// leadership while the old leader lives on.
				s.elect(s.ctrl.leader, rapid.Bool().Draw(rt, "dropOld"))
			case a < 48:
				s.detect()
			case a < 50:
				s.trim()
			}
			s.step()
			stats.steps++
		}
		s.heal()
		s.final()
	})
	t.Logf("%d sequences, %d steps: %d strong writes acknowledged (%d by unfenced old leaders), %d failed; %d eventual, %d lost; %d elections, %d crashes, %d fenced leaders, %d truncations, %d resets, %d messages lost",
		stats.sequences, stats.steps, stats.strongAcked, stats.zombieAcks, stats.strongFailed, stats.eventual, stats.eventualLost,
		stats.elections, stats.crashes, stats.fenced, stats.truncations, stats.resets, stats.dropped)
}
