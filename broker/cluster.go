package broker

// Cluster mode (issue 15): the brokers of a DC's data members are one
// Kafka cluster. The control plane's cluster map (internal/clustermap)
// says which topics exist, each partition's replicas, leader, leader
// epoch and in-sync set; this broker follows it. Each partition it
// replicates runs internal/replica's state machines over its log
// (partitionLog): a Leader when the map names this member, a Follower
// otherwise. Followers fetch from their leaders over the transport the
// runtime gives (its internal port, authenticated), one batched request
// per leader at a time, held at the leader while it has nothing new
// (Kafka's replica fetcher). The leader's high watermark gates what
// consumers read (storage.SetReplicated), acks=all waits for the
// in-sync set, and the leader's in-sync changes go to the control plane
// as ISRChange proposals.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"mecha/broker/acl"
	"mecha/broker/storage"
	"mecha/internal/clustermap"
	"mecha/internal/replica"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// MethodReplicaFetch is the runtime's internal-port (muxconn) method
// that carries replica fetches to HandleReplicaFetch; the runtime routes
// it here.
const MethodReplicaFetch uint16 = 0x0300

// ClusterConfig makes the broker one broker of a cluster.
type ClusterConfig struct {
	// Self is this runtime's member id in the map.
	Self string
	// Maps is the cluster map.
	Maps clustermap.Source
	// Propose sends a command to the control plane (in-sync set changes,
	// topic creation) and returns once it applied or was refused.
	Propose func(ctx context.Context, c clustermap.Command) error
	// Addr is the Kafka address (host, port) of a member's broker, for
	// Metadata; ok false when unknown.
	Addr func(member string) (host string, port int32, ok bool)
	// Fetch carries a replica fetch batch to a member's broker
	// (HandleReplicaFetch there) and returns its answer.
	Fetch func(ctx context.Context, member string, req []byte) ([]byte, error)
	// Replica tunes replication; DefaultClusterReplicaConfig when zero.
	Replica replica.Config
	// FetchWait is how long a leader holds a follower's fetch with
	// nothing new (500 ms when zero).
	FetchWait time.Duration
}

// DefaultClusterReplicaConfig is the broker's replication tuning, from
// Kafka's: a follower out of touch for 10 s leaves the in-sync set
// (replica.lag.time.max.ms), and an acks=all write waits up to 30 s.
func DefaultClusterReplicaConfig() replica.Config {
	c := replica.DefaultConfig()
	c.MaxLag = 10 * time.Second
	c.FetchTimeout = 5 * time.Second
	return c
}

// NodeID is a member's Kafka broker id: a hash of its member id, so that
// every runtime derives the same one without asking.
func NodeID(member string) int32 {
	h := fnv.New32a()
	h.Write([]byte(member))
	return int32(h.Sum32() & 0x7fffffff)
}

func replicaOf(member string) replica.ReplicaID { return replica.ReplicaID(NodeID(member)) }

func replicaIDs(members []string) []replica.ReplicaID {
	out := make([]replica.ReplicaID, len(members))
	for i, m := range members {
		out[i] = replicaOf(m)
	}
	return out
}

type partKey struct {
	topic string
	part  int32
}

// partReplica is this broker's replica of one partition.
type partReplica struct {
	key partKey
	p   *storage.Partition
	log *partitionLog

	mu       sync.Mutex // guards what follows
	role     int        // roleNone, roleLeader, roleFollower
	epoch    uint64
	leaderID string // the member followed
	leader   *replica.Leader
	follower *replica.Follower
	replicas []string
	isr      []string // the committed in-sync set the leader holds
	isrVer   uint64
	minISR   int
	waiters  map[int64][]chan error // acks=all produces by base offset
	events   []replica.Event

	proposing atomic.Bool // an ISR proposal is on its way
	// loaded: this leader of a __consumer_offsets partition has replayed
	// it and coordinates its groups (cluster_groups.go).
	loaded atomic.Bool
}

const (
	roleNone = iota
	roleLeader
	roleFollower
)

// clusterState is the broker's cluster mode.
type clusterState struct {
	cfg  ClusterConfig
	self string
	node int32

	mu       sync.Mutex
	parts    map[partKey]*partReplica
	fetchers map[string]bool // leaders a fetch loop runs for
	// moved is closed and replaced when any leader's log grows: held
	// replica fetches look again.
	moved chan struct{}
}

func newClusterState(cfg ClusterConfig) *clusterState {
	if cfg.Replica == (replica.Config{}) {
		cfg.Replica = DefaultClusterReplicaConfig()
	}
	if cfg.FetchWait <= 0 {
		cfg.FetchWait = 500 * time.Millisecond
	}
	return &clusterState{cfg: cfg, self: cfg.Self, node: NodeID(cfg.Self), parts: map[partKey]*partReplica{},
		fetchers: map[string]bool{}, moved: make(chan struct{})}
}

// startCluster follows the map and ticks the leaders.
func (b *Broker) startCluster() {
	b.wg.Add(2)
	go func() { defer b.wg.Done(); b.followMap() }()
	go func() { defer b.wg.Done(); b.tickReplicas() }()
}

func (b *Broker) followMap() {
	var seen uint64
	for {
		m := b.cl.cfg.Maps.Map()
		if m.Version != seen || seen == 0 {
			seen = m.Version
			b.reconcile(m)
		}
		if err := b.cl.cfg.Maps.WaitNewer(b.ctx, seen); err != nil {
			return
		}
	}
}

// reconcile makes the local replicas what map m says.
func (b *Broker) reconcile(m *clustermap.Map) {
	cl := b.cl
	wanted := map[partKey]bool{}
	for _, tp := range m.Topics {
		t, err := b.topics.ensure(tp.Name, true, int32(len(tp.Partitions)))
		if err == nil && t.numPartitions() < int32(len(tp.Partitions)) {
			err = b.topics.addPartitions(tp.Name, int32(len(tp.Partitions)), false)
		}
		if err == nil {
			err = b.topics.setConfigs(tp.Name, tp.Overrides)
		}
		if err != nil {
			b.log.Error("broker: cluster topic", "topic", tp.Name, "err", err)
			continue
		}
		for i, g := range tp.Partitions {
			k := partKey{tp.Name, int32(i)}
			if !slices.Contains(g.Replicas, cl.self) {
				continue
			}
			wanted[k] = true
			p := t.partition(int32(i))
			if p == nil {
				continue
			}
			cl.mu.Lock()
			pr := cl.parts[k]
			if pr == nil {
				pr = &partReplica{key: k, p: p, log: newPartitionLog(p), waiters: map[int64][]chan error{}}
				cl.parts[k] = pr
			}
			cl.mu.Unlock()
			b.applyGroup(pr, g, tp.Config)
		}
	}
	cl.mu.Lock()
	var gone []*partReplica
	for k, pr := range cl.parts {
		if !wanted[k] {
			gone = append(gone, pr)
			delete(cl.parts, k)
		}
	}
	cl.mu.Unlock()
	for _, pr := range gone {
		pr.mu.Lock()
		b.becomeNone(pr, kerr.NotLeaderForPartition)
		pr.mu.Unlock()
	}
	cl.logMoved() // held replica fetches look again: roles changed
	if !m.Bootstrapped() {
		return // (the empty map before the control plane runs says nothing)
	}
	for _, t := range b.topics.all() {
		if m.Topic(t.name) != nil {
			continue
		}
		// Deleted from the cluster: its log and committed offsets go.
		if err := b.topics.remove(t.name); err != nil {
			b.log.Error("broker: removing a deleted topic", "topic", t.name, "err", err)
		} else if err := b.offsets.DeleteTopic(t.name); err != nil {
			b.log.Error("broker: removing a deleted topic's offsets", "topic", t.name, "err", err)
		}
	}
}

// applyGroup moves pr to the role the map's group g gives it.
func (b *Broker) applyGroup(pr *partReplica, g *clustermap.Group, tc clustermap.TopicConfig) {
	cl := b.cl
	pr.mu.Lock()
	defer pr.mu.Unlock()
	now := time.Now()
	pr.minISR = max(tc.MinInSyncReplicas, 1)
	switch {
	case g.Leader == cl.self:
		if pr.role == roleLeader && pr.epoch == g.Epoch {
			if !slices.Equal(pr.replicas, g.Replicas) {
				pr.replicas = slices.Clone(g.Replicas)
				pr.isr, pr.isrVer = slices.Clone(g.ISR), pr.isrVer+1
				_ = pr.leader.SetReplicas(replicaIDs(g.Replicas), replicaIDs(g.ISR), pr.isrVer, now)
			} else if !slices.Equal(pr.isr, g.ISR) {
				pr.isr, pr.isrVer = slices.Clone(g.ISR), pr.isrVer+1
				if err := pr.leader.CommitISR(replicaIDs(g.ISR), pr.isrVer, now); err != nil {
					b.log.Error("broker: in-sync set", "topic", pr.key.topic, "partition", pr.key.part, "err", err)
				}
			}
			b.drain(pr)
			return
		}
		hw := b.roleHW(pr)
		b.becomeNone(pr, kerr.NotLeaderForPartition)
		rc := cl.cfg.Replica
		rc.MinISR = pr.minISR
		pr.isrVer++
		l, err := replica.NewLeader(pr.log, rc, replica.Assignment{Self: replicaOf(cl.self), Epoch: replica.Epoch(g.Epoch),
			Replicas: replicaIDs(g.Replicas), ISR: replicaIDs(g.ISR), ISRVersion: pr.isrVer}, hw, now)
		if err != nil {
			b.log.Error("broker: cannot lead", "topic", pr.key.topic, "partition", pr.key.part, "epoch", g.Epoch, "err", err)
			return
		}
		pr.p.SetLeaderEpoch(int32(g.Epoch))
		pr.p.SetReplicated(true)
		pr.role, pr.epoch, pr.leader, pr.leaderID = roleLeader, g.Epoch, l, cl.self
		pr.replicas, pr.isr = slices.Clone(g.Replicas), slices.Clone(g.ISR)
		b.log.Info("broker: leading", "topic", pr.key.topic, "partition", pr.key.part, "epoch", g.Epoch, "isr", g.ISR)
		b.drain(pr)
		if pr.key.topic == offsetsTopic {
			b.wg.Add(1)
			go b.loadOffsets(pr, g.Epoch)
		}
	case g.Leader == "":
		hw := b.roleHW(pr)
		b.becomeNone(pr, kerr.NotLeaderForPartition)
		pr.p.SetReplicated(true)
		pr.p.SetHighWatermark(hw)
		pr.epoch = g.Epoch
	default:
		if pr.role == roleFollower && pr.leaderID == g.Leader && pr.epoch == g.Epoch {
			return
		}
		var f *replica.Follower
		if pr.role == roleFollower {
			f = pr.follower
		} else {
			hw := b.roleHW(pr)
			b.becomeNone(pr, kerr.NotLeaderForPartition)
			var err error
			if f, err = replica.NewFollower(pr.log, cl.cfg.Replica, replicaOf(cl.self), hw); err != nil {
				b.log.Error("broker: cannot follow", "topic", pr.key.topic, "partition", pr.key.part, "err", err)
				return
			}
			if mv := g.Move; mv != nil && mv.To == cl.self && mv.FromLatest {
				// Smooth expansion: this new replica starts at the
				// leader's high watermark, copying no history.
				f.StartFromLatest()
				b.log.Info("broker: new replica starts from the latest offset", "topic", pr.key.topic, "partition", pr.key.part)
			}
		}
		f.SetLeader(replicaOf(g.Leader), replica.Epoch(g.Epoch))
		pr.p.SetReplicated(true)
		pr.role, pr.epoch, pr.follower, pr.leaderID = roleFollower, g.Epoch, f, g.Leader
		b.startFetcher(g.Leader)
	}
}

// roleHW is the high watermark pr's current role knows (a committed
// offset), or the log's. The caller holds pr.mu.
func (b *Broker) roleHW(pr *partReplica) int64 {
	switch pr.role {
	case roleLeader:
		return pr.leader.HighWatermark()
	case roleFollower:
		return pr.follower.HighWatermark()
	}
	_, hw := pr.p.Offsets()
	return hw
}

// becomeNone ends pr's role; its pending acks=all produces fail with e.
// The caller holds pr.mu.
func (b *Broker) becomeNone(pr *partReplica, e *kerr.Error) {
	for base, ws := range pr.waiters {
		for _, w := range ws {
			w <- e
		}
		delete(pr.waiters, base)
	}
	pr.role, pr.leader, pr.follower, pr.leaderID = roleNone, nil, nil, ""
	pr.loaded.Store(false)
}

// drain acts on pr's queued events and publishes its high watermark.
// The caller holds pr.mu.
func (b *Broker) drain(pr *partReplica) {
	switch pr.role {
	case roleLeader:
		pr.events = pr.leader.Events(pr.events[:0])
		pr.p.SetHighWatermark(pr.leader.HighWatermark())
	case roleFollower:
		pr.events = pr.follower.Events(pr.events[:0])
		pr.p.SetHighWatermark(pr.follower.HighWatermark())
		return
	default:
		return
	}
	for _, e := range pr.events {
		switch e.Kind {
		case replica.EventAcked:
			b.answer(pr, e.Offset, nil)
		case replica.EventWriteFailed:
			code := kerr.RequestTimedOut
			switch {
			case errors.Is(e.Err, replica.ErrNotEnoughReplicas):
				code = kerr.NotEnoughReplicasAfterAppend
			case errors.Is(e.Err, replica.ErrFenced):
				code = kerr.NotLeaderForPartition
			}
			b.answer(pr, e.Offset, code)
		case replica.EventISRProposal:
			b.propose(pr, e)
		case replica.EventFenced:
			b.log.Info("broker: leader fenced", "topic", pr.key.topic, "partition", pr.key.part, "epoch", e.Epoch)
		}
	}
	clear(pr.events)
}

func (b *Broker) answer(pr *partReplica, base int64, err error) {
	for _, w := range pr.waiters[base] {
		w <- err
	}
	delete(pr.waiters, base)
}

// propose sends a leader's in-sync proposal to the control plane, one at
// a time per partition (the leader sends it again every ProposalRetry
// while unanswered). A definitive refusal settles it with the map's set.
func (b *Broker) propose(pr *partReplica, e replica.Event) {
	if !pr.proposing.CompareAndSwap(false, true) {
		return
	}
	members := map[replica.ReplicaID]string{}
	for _, m := range pr.replicas {
		members[replicaOf(m)] = m
	}
	isr := make([]string, 0, len(e.ISR))
	for _, id := range e.ISR {
		isr = append(isr, members[id])
	}
	c := clustermap.ISRChange{Ref: clustermap.PartitionRef(pr.key.topic, int(pr.key.part)), ISR: isr, Epoch: uint64(e.Epoch), From: slices.Clone(pr.isr)}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer pr.proposing.Store(false)
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		err := b.cl.cfg.Propose(ctx, c)
		cancel()
		if err != nil && clustermap.IsRefusal(err) {
			b.log.Info("broker: in-sync proposal refused", "topic", pr.key.topic, "partition", pr.key.part, "isr", isr, "err", err)
			pr.mu.Lock()
			if pr.role == roleLeader && pr.epoch == c.Epoch {
				pr.isrVer++
				_ = pr.leader.CommitISR(replicaIDs(pr.isr), pr.isrVer, time.Now())
				b.drain(pr)
			}
			pr.mu.Unlock()
		}
	}()
}

// tickReplicas ticks the leaders (in-sync set, write timeouts).
func (b *Broker) tickReplicas() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for _, pr := range b.cl.all() {
			pr.mu.Lock()
			if pr.role == roleLeader {
				pr.leader.Tick(now)
				b.drain(pr)
			}
			pr.mu.Unlock()
		}
	}
}

func (cl *clusterState) all() []*partReplica {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	out := make([]*partReplica, 0, len(cl.parts))
	for _, pr := range cl.parts {
		out = append(out, pr)
	}
	return out
}

func (cl *clusterState) part(topic string, partition int32) *partReplica {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.parts[partKey{topic, partition}]
}

// logMoved wakes the held replica fetches.
func (cl *clusterState) logMoved() {
	cl.mu.Lock()
	close(cl.moved)
	cl.moved = make(chan struct{})
	cl.mu.Unlock()
}

func (cl *clusterState) movedChan() chan struct{} {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.moved
}

// clusterAppend writes a produce's batches to a partition this broker
// leads. With acks=all it returns a channel that answers once the
// in-sync set holds them (nil: answered; a *kerr.Error otherwise).
func (b *Broker) clusterAppend(t *topic, partition int32, records []byte, infos []storage.BatchInfo, acks int16) (storage.AppendResult, <-chan error, error) {
	pr := b.cl.part(t.name, partition)
	if pr == nil {
		return storage.AppendResult{}, nil, kerr.NotLeaderForPartition
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.role != roleLeader {
		return storage.AppendResult{}, nil, kerr.NotLeaderForPartition
	}
	c := replica.Eventual
	if acks == -1 {
		c = replica.Strong
	}
	if err := pr.leader.Admit(c); err != nil {
		if errors.Is(err, replica.ErrNotEnoughReplicas) {
			return storage.AppendResult{}, nil, kerr.NotEnoughReplicas
		}
		return storage.AppendResult{}, nil, kerr.NotLeaderForPartition
	}
	res, err := pr.p.Append(records, infos)
	if err != nil {
		return res, nil, err
	}
	var wait chan error
	if !res.Duplicate {
		end := pr.p.EndOffset()
		pr.leader.Appended(res.Base, end, c, time.Now())
		if c == replica.Strong {
			wait = make(chan error, 1)
			pr.waiters[res.Base] = append(pr.waiters[res.Base], wait)
		}
		defer b.cl.logMoved()
	} else if c == replica.Strong && res.Base >= pr.leader.HighWatermark() {
		// A retry of a write not committed yet: answered with it.
		wait = make(chan error, 1)
		pr.waiters[res.Base] = append(pr.waiters[res.Base], wait)
	}
	b.drain(pr)
	return res, wait, nil
}

// leads reports whether this broker serves the partition's reads (its
// leader). Without cluster mode it leads everything it has.
func (b *Broker) leads(topic string, partition int32) bool {
	if b.cl == nil {
		return true
	}
	pr := b.cl.part(topic, partition)
	if pr == nil {
		return false
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.role == roleLeader
}

// errNotClustered refuses a replica fetch on a single broker.
var errNotClustered = errors.New("broker: not in cluster mode")

// HandleReplicaFetch answers a follower broker's fetch batch (see
// ClusterConfig.Fetch): each partition's fetch through its Leader, held
// up to the batch's wait while none has news.
func (b *Broker) HandleReplicaFetch(ctx context.Context, frame []byte) ([]byte, error) {
	if b.cl == nil {
		return nil, errNotClustered
	}
	req, err := decodeReplicaFetch(frame)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(min(time.Duration(req.waitMs)*time.Millisecond, 5*time.Second))
	received := time.Now()
	var out replicaFetchBatch
	for {
		moved := b.cl.movedChan()
		out.parts = out.parts[:0]
		news := false
		for _, e := range req.parts {
			fr, err := replica.DecodeFetchRequest(e.frame)
			if err != nil {
				return nil, fmt.Errorf("broker: replica fetch of %s/%d: %w", e.topic, e.part, err)
			}
			fr.Received = received
			var resp replica.FetchResponse
			pr := b.cl.part(e.topic, e.part)
			if pr == nil {
				replica.Refuse(&fr, replica.CodeNotLeader, 0, &resp)
			} else {
				pr.mu.Lock()
				if pr.role != roleLeader {
					replica.Refuse(&fr, replica.CodeNotLeader, replica.Epoch(pr.epoch), &resp)
				} else {
					if err := pr.leader.HandleFetch(&fr, time.Now(), &resp); err != nil {
						b.log.Warn("broker: answering a replica fetch", "topic", e.topic, "partition", e.part, "err", err)
					}
					b.drain(pr)
				}
				pr.mu.Unlock()
			}
			if resp.Code != replica.CodeOK || resp.Diverging || len(resp.Batches) > 0 {
				news = true
			}
			for _, bt := range resp.Batches {
				b.replicaServed.Add(int64(len(bt.Data)))
			}
			out.parts = append(out.parts, replicaFetchPart{topic: e.topic, part: e.part, frame: replica.AppendFetchResponse(nil, &resp)})
		}
		left := time.Until(deadline)
		if news || left <= 0 {
			return encodeReplicaFetch(nil, &out), nil
		}
		t := time.NewTimer(min(left, 50*time.Millisecond))
		select {
		case <-moved:
		case <-t.C:
		case <-ctx.Done():
		case <-b.ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil || b.ctx.Err() != nil {
			return encodeReplicaFetch(nil, &out), nil
		}
	}
}

// startFetcher runs the fetch loop for leader, once.
func (b *Broker) startFetcher(leader string) {
	cl := b.cl
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.fetchers[leader] || b.ctx.Err() != nil {
		return
	}
	cl.fetchers[leader] = true
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.fetchLoop(leader)
	}()
}

// fetchLoop fetches, for every partition this broker follows from
// leader, in one batch at a time; it ends when it follows none.
func (b *Broker) fetchLoop(leader string) {
	cl := b.cl
	defer func() {
		cl.mu.Lock()
		delete(cl.fetchers, leader)
		cl.mu.Unlock()
	}()
	var (
		batch replicaFetchBatch
		prs   []*partReplica
		resp  replica.FetchResponse
	)
	backoff := 50 * time.Millisecond
	for b.ctx.Err() == nil {
		batch.parts, prs = batch.parts[:0], prs[:0]
		following := false
		now := time.Now()
		for _, pr := range cl.all() {
			pr.mu.Lock()
			if pr.role == roleFollower && pr.leaderID == leader {
				following = true
				if fr, ok := pr.follower.Fetch(now); ok {
					batch.parts = append(batch.parts, replicaFetchPart{topic: pr.key.topic, part: pr.key.part, frame: replica.AppendFetchRequest(nil, &fr)})
					prs = append(prs, pr)
				}
			}
			pr.mu.Unlock()
		}
		if !following {
			return
		}
		if len(prs) == 0 {
			sleep(b.ctx, 20*time.Millisecond)
			continue
		}
		batch.waitMs = uint32(cl.cfg.FetchWait / time.Millisecond)
		ctx, cancel := context.WithTimeout(b.ctx, cl.cfg.FetchWait+cl.cfg.Replica.FetchTimeout)
		answer, err := cl.cfg.Fetch(ctx, leader, encodeReplicaFetch(nil, &batch))
		cancel()
		var got replicaFetchBatch
		if err == nil {
			got, err = decodeReplicaFetch(answer)
		}
		if err != nil {
			if b.ctx.Err() == nil {
				b.log.Debug("broker: replica fetch failed", "leader", leader, "err", err)
			}
			sleep(b.ctx, backoff)
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		now = time.Now()
		asked := make(map[partKey]*partReplica, len(prs))
		for _, pr := range prs {
			asked[pr.key] = pr
		}
		for _, e := range got.parts {
			pr := asked[partKey{e.topic, e.part}]
			if pr == nil {
				continue // not asked (a confused leader): dropped
			}
			if err := replica.DecodeFetchResponse(e.frame, &resp); err != nil {
				b.log.Warn("broker: bad replica fetch answer", "leader", leader, "topic", e.topic, "partition", e.part, "err", err)
				continue
			}
			pr.mu.Lock()
			if pr.role == roleFollower && pr.leaderID == leader {
				if err := pr.follower.HandleResponse(&resp, now); err != nil && !errors.Is(err, replica.ErrNotLeader) && !errors.Is(err, replica.ErrStaleEpoch) {
					b.log.Warn("broker: replica fetch", "leader", leader, "topic", e.topic, "partition", e.part, "err", err)
				}
				b.drain(pr)
			}
			pr.mu.Unlock()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// eachBroker calls fn with every live data member's broker in m whose
// Kafka address is known: the cluster's brokers, as Metadata and
// DescribeCluster list them.
func (b *Broker) eachBroker(m *clustermap.Map, fn func(node int32, host string, port int32)) {
	for _, id := range liveBrokers(m) {
		if host, port, ok := b.cl.cfg.Addr(id); ok {
			fn(NodeID(id), host, port)
		}
	}
}

// clusterMetadata fills a Metadata answer from the map: every live data
// member's broker, and each topic's partitions with their leader, epoch,
// replicas and in-sync set.
func (b *Broker) clusterMetadata(c caller, req *kmsg.MetadataRequest, resp *kmsg.MetadataResponse) {
	m := b.cl.cfg.Maps.Map()
	resp.Brokers = resp.Brokers[:0]
	b.eachBroker(m, func(node int32, host string, port int32) {
		br := kmsg.NewMetadataResponseBroker()
		br.NodeID, br.Host, br.Port = node, host, port
		resp.Brokers = append(resp.Brokers, br)
	})
	resp.ControllerID = b.cl.node
	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	var names []string
	if all {
		for _, tp := range m.Topics {
			names = append(names, tp.Name)
		}
	} else {
		for _, t := range req.Topics {
			if t.Topic != nil {
				names = append(names, *t.Topic)
			}
		}
	}
	auto := b.cfg.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation)
	for _, name := range names {
		mt := kmsg.NewMetadataResponseTopic()
		n := name
		mt.Topic = &n
		if !b.topicAllowed(c, acl.OpDescribe, name) {
			if all {
				continue
			}
			mt.ErrorCode = kerr.TopicAuthorizationFailed.Code
			resp.Topics = append(resp.Topics, mt)
			continue
		}
		tp := m.Topic(name)
		if tp == nil && auto && !all {
			if !b.mayCreateTopic(c, name) {
				mt.ErrorCode = kerr.TopicAuthorizationFailed.Code
				resp.Topics = append(resp.Topics, mt)
				continue
			}
			var code int16
			tp, code, _ = b.clusterCreateTopic(name, b.cfg.DefaultPartitions, -1, nil, clusterSettings{})
			if code != 0 && code != kerr.TopicAlreadyExists.Code {
				mt.ErrorCode = code
				resp.Topics = append(resp.Topics, mt)
				continue
			}
			if tp == nil {
				tp = b.cl.cfg.Maps.Map().Topic(name)
			}
		}
		if tp == nil {
			mt.ErrorCode = kerr.UnknownTopicOrPartition.Code
			resp.Topics = append(resp.Topics, mt)
			continue
		}
		for i, g := range tp.Partitions {
			mp := kmsg.NewMetadataResponseTopicPartition()
			mp.Partition, mp.LeaderEpoch, mp.Leader = int32(i), int32(g.Epoch), -1
			if g.Leader != "" {
				mp.Leader = NodeID(g.Leader)
			} else {
				mp.ErrorCode = kerr.LeaderNotAvailable.Code
			}
			for _, r := range g.Replicas {
				mp.Replicas = append(mp.Replicas, NodeID(r))
				if mb := m.Member(r); mb == nil || mb.State != clustermap.StateAlive {
					mp.OfflineReplicas = append(mp.OfflineReplicas, NodeID(r))
				}
			}
			for _, r := range g.ISR {
				mp.ISR = append(mp.ISR, NodeID(r))
			}
			mt.Partitions = append(mt.Partitions, mp)
		}
		resp.Topics = append(resp.Topics, mt)
	}
}

// clusterCreateTopic has the control plane create a topic: partitions
// (the default when -1), replication factor rf (min(3, data members)
// when -1), min.insync.replicas 2 when rf is 3 or more (else 1), or the
// manual assignment (node ids per partition). It returns once the map
// holds the topic, or a Kafka code and why.
func (b *Broker) clusterCreateTopic(name string, partitions int32, rf int16, assignment [][]int32, s clusterSettings) (*clustermap.Topic, int16, string) {
	if err := validTopicName(name); err != nil {
		return nil, kerr.InvalidTopicException.Code, err.Error()
	}
	m := b.cl.cfg.Maps.Map()
	if partitions == -1 {
		partitions = b.cfg.DefaultPartitions
	}
	cmd := clustermap.CreateTopic{Name: name, Partitions: int(partitions), Overrides: s.overrides}
	if len(assignment) > 0 {
		ids, msg := membersOfNodes(m, assignment)
		if msg != "" {
			return nil, kerr.InvalidReplicaAssignment.Code, msg
		}
		cmd.Partitions, cmd.Assignment = 0, ids
		rf = int16(len(assignment[0]))
	}
	if rf == -1 {
		rf = int16(max(min(3, len(liveBrokers(m))), 1))
	}
	cmd.Config.ReplicationFactor = int(rf)
	cmd.Config.MinInSyncReplicas = defaultMinInSync(int(rf))
	if s.minInSync != 0 {
		cmd.Config.MinInSyncReplicas = s.minInSync
	}
	cmd.Config.UncleanLeaderElection = s.unclean
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	err := b.cl.cfg.Propose(ctx, cmd)
	switch {
	case errors.Is(err, clustermap.ErrTopicExists):
		return b.cl.cfg.Maps.Map().Topic(name), kerr.TopicAlreadyExists.Code, err.Error()
	case clustermap.IsRefusal(err):
		return nil, kerr.InvalidRequest.Code, err.Error()
	case err != nil:
		return nil, kerr.RequestTimedOut.Code, err.Error()
	}
	for {
		if tp := b.cl.cfg.Maps.Map().Topic(name); tp != nil {
			return tp, 0, ""
		}
		if err := b.cl.cfg.Maps.WaitNewer(ctx, b.cl.cfg.Maps.Map().Version); err != nil {
			return nil, kerr.RequestTimedOut.Code, "the control plane did not publish the topic in time"
		}
	}
}
