package broker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mecha/broker/storage"
	"mecha/internal/clustermap"
	"mecha/internal/poll"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// testCluster is brokers in one process and the control plane's part
// played by the test: it applies their proposals to one map and
// publishes it to each; replica fetches are direct calls.
type testCluster struct {
	t       *testing.T
	mu      sync.Mutex
	m       *clustermap.Map
	brokers map[string]*Broker
	dirs    map[string]string
	addrs   map[string]string
	maps    map[string]*clustermap.Var
	// cut are members partitioned away: no maps reach them, and no
	// replica fetch goes to or from them.
	cut map[string]bool
}

func newTestCluster(t *testing.T, ids ...string) *testCluster {
	tc := &testCluster{t: t, m: clustermap.New(), brokers: map[string]*Broker{}, dirs: map[string]string{}, addrs: map[string]string{}, maps: map[string]*clustermap.Var{}, cut: map[string]bool{}}
	tc.apply(clustermap.Bootstrap{ClusterID: "test", Replicas: 3})
	for _, id := range ids {
		tc.dirs[id] = t.TempDir()
		tc.start(id)
		tc.apply(clustermap.MemberJoin{ID: id, Addr: "127.0.0.1:1", Roles: []string{clustermap.RoleData}, At: 1})
	}
	t.Cleanup(func() {
		for _, id := range ids {
			tc.stop(id)
		}
	})
	return tc
}

func (tc *testCluster) apply(c clustermap.Command) error {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	m, err := clustermap.Apply(tc.m, c)
	if err != nil {
		return err
	}
	tc.m = m
	for id, v := range tc.maps {
		if !tc.cut[id] {
			v.Store(m)
		}
	}
	return nil
}

func (tc *testCluster) mapNow() *clustermap.Map {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.m
}

func (tc *testCluster) start(id string) {
	tc.mu.Lock()
	v := clustermap.NewVar(tc.m)
	tc.maps[id] = v
	addr := "127.0.0.1:0"
	if a := tc.addrs[id]; a != "" {
		addr = a
	}
	tc.mu.Unlock()
	b := startBroker(tc.t, func(c *Config) {
		c.Addr, c.DataDir = addr, tc.dirs[id]
		from := id
		c.Cluster = &ClusterConfig{Fetch: func(ctx context.Context, member string, req []byte) ([]byte, error) {
			return tc.fetch(ctx, from, member, req)
		}, Self: id, Maps: v, Propose: func(_ context.Context, c clustermap.Command) error { return tc.apply(c) }, Addr: tc.addr, FetchWait: 200 * time.Millisecond}
	})
	tc.mu.Lock()
	tc.brokers[id], tc.addrs[id] = b, b.Addr()
	tc.mu.Unlock()
}

func (tc *testCluster) stop(id string) {
	tc.mu.Lock()
	b := tc.brokers[id]
	delete(tc.brokers, id)
	delete(tc.maps, id)
	tc.mu.Unlock()
	if b != nil {
		b.Close()
	}
}

func (tc *testCluster) addr(member string) (string, int32, bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	host, port, err := net.SplitHostPort(tc.addrs[member])
	if err != nil {
		return "", 0, false
	}
	p, _ := strconv.Atoi(port)
	return host, int32(p), true
}

func (tc *testCluster) fetch(ctx context.Context, from, member string, req []byte) ([]byte, error) {
	tc.mu.Lock()
	b := tc.brokers[member]
	cut := tc.cut[from] || tc.cut[member]
	tc.mu.Unlock()
	if b == nil || cut {
		return nil, errors.New("connection refused")
	}
	resp, err := b.HandleReplicaFetch(ctx, req)
	tc.mu.Lock()
	cut = tc.cut[from] || tc.cut[member]
	tc.mu.Unlock()
	if cut { // the answer was lost in the partition
		return nil, errors.New("connection reset")
	}
	return resp, err
}

// partition cuts id off (heal false) or brings it back with the newest
// map.
func (tc *testCluster) partition(id string, cut bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.cut[id] = cut
	if !cut {
		tc.maps[id].Store(tc.m)
	}
}

func (tc *testCluster) seeds() []string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	var out []string
	for _, a := range tc.addrs {
		out = append(out, a)
	}
	return out
}

// Three brokers, one topic of three partitions with three replicas:
// acks=all produces reach every replica; after the leader of some
// partitions dies, the clients carry on against the new leaders and no
// acknowledged record is lost or written twice.
func TestClusterReplicatesAndFailsOver(t *testing.T) {
	tc := newTestCluster(t, "a", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := newKgo(t, tc.seeds()[0], kgo.SeedBrokers(tc.seeds()...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.RecordDeliveryTimeout(20*time.Second))
	adm := kadm.NewClient(cl)
	res, err := adm.CreateTopic(ctx, 3, -1, nil, "orders")
	if err != nil || res.Err != nil {
		t.Fatalf("CreateTopic: %v %v", err, res.Err)
	}
	if res.ReplicationFactor != 3 {
		t.Fatalf("replication factor %d, want 3 (min of 3 and the brokers)", res.ReplicationFactor)
	}
	md, err := adm.Metadata(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 3 {
		t.Fatalf("metadata lists %d brokers, want 3", len(md.Brokers))
	}
	leaders := map[int32]bool{}
	for _, p := range md.Topics["orders"].Partitions {
		if len(p.Replicas) != 3 || len(p.ISR) != 3 {
			t.Fatalf("partition %d: replicas %v isr %v", p.Partition, p.Replicas, p.ISR)
		}
		leaders[p.Leader] = true
	}
	if len(leaders) != 3 {
		t.Fatalf("partition leaders %v: want one on each broker", leaders)
	}
	produce := func(from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
				t.Fatalf("produce %d: %v", i, err)
			}
		}
	}
	produce(0, 150)
	// Acknowledged with acks=all: every replica holds it.
	for id, b := range tc.brokers {
		var total int64
		for p := range int32(3) {
			total += b.topics.get("orders").partition(p).EndOffset()
		}
		if total != 150 {
			t.Fatalf("broker %s holds %d records, want 150", id, total)
		}
	}
	// The leader of partition 0 dies; the control plane elects another.
	dead := tc.mapNow().Topic("orders").Partitions[0].Leader
	tc.stop(dead)
	if err := tc.apply(clustermap.MemberDead{ID: dead, At: 2}); err != nil {
		t.Fatal(err)
	}
	if l := tc.mapNow().Topic("orders").Partitions[0].Leader; l == dead || l == "" {
		t.Fatalf("partition 0 led by %q after %s died", l, dead)
	}
	produce(150, 150)
	// Everything acknowledged is there, once, in order per partition.
	seen := map[string]int{}
	cons := newKgo(t, tc.seeds()[0], kgo.SeedBrokers(tc.seeds()...), kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	last := map[int32]int64{}
	for len(seen) < 300 {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume (%d seen): %v", len(seen), err)
		}
		for _, r := range fs.Records() {
			seen[string(r.Value)]++
			if o, ok := last[r.Partition]; ok && r.Offset != o+1 {
				t.Fatalf("partition %d: offset %d after %d", r.Partition, r.Offset, o)
			}
			last[r.Partition] = r.Offset
		}
	}
	for v, n := range seen {
		if n != 1 {
			t.Fatalf("record %s read %d times", v, n)
		}
	}
	poll.Until(t, 10*time.Second, "the survivors to agree on every partition", func() bool {
		var ends []int64
		for _, b := range tc.brokers {
			for p := range int32(3) {
				ends = append(ends, b.topics.get("orders").partition(p).EndOffset())
			}
		}
		return ends[0] == ends[3] && ends[1] == ends[4] && ends[2] == ends[5]
	})
}

// The replica fetch batch decoder refuses what does not fit and round
// trips what it accepts.
func FuzzDecodeReplicaFetch(f *testing.F) {
	f.Add(encodeReplicaFetch(nil, &replicaFetchBatch{waitMs: 500, parts: []replicaFetchPart{{"orders", 2, []byte{1, 2, 3}}, {"x", 0, nil}}}))
	f.Add([]byte("MRF1\x00\xff\xff\xff\xff\x0f"))
	f.Add([]byte("MRF"))
	f.Fuzz(func(t *testing.T, buf []byte) {
		b, err := decodeReplicaFetch(buf)
		if err != nil {
			return
		}
		again, err := decodeReplicaFetch(encodeReplicaFetch(nil, &b))
		if err != nil || again.waitMs != b.waitMs || len(again.parts) != len(b.parts) {
			t.Fatalf("round trip: %v, %+v vs %+v", err, again, b)
		}
		for i := range b.parts {
			if again.parts[i].topic != b.parts[i].topic || again.parts[i].part != b.parts[i].part || string(again.parts[i].frame) != string(b.parts[i].frame) {
				t.Fatalf("part %d differs", i)
			}
		}
	})
}

// librdkafka (kcat) produces with acks=all to the cluster, before and
// after a leader dies, and reads everything back.
func TestKcatCluster(t *testing.T) {
	kcat := kcatPath(t)
	tc := newTestCluster(t, "a", "b", "c")
	lines := func(from, n int) string {
		var sb strings.Builder
		for i := from; i < from+n; i++ {
			fmt.Fprintf(&sb, "k%d:v%d\n", i, i)
		}
		return sb.String()
	}
	brokers := strings.Join(tc.seeds(), ",")
	runKcat(t, kcat, lines(0, 100), "-b", brokers, "-P", "-t", "kc", "-K:", "-X", "acks=all", "-X", "topic.metadata.refresh.interval.ms=500")
	dead := tc.mapNow().Topic("kc").Partitions[0].Leader
	tc.stop(dead)
	if err := tc.apply(clustermap.MemberDead{ID: dead, At: 2}); err != nil {
		t.Fatal(err)
	}
	var alive []string
	for _, s := range tc.seeds() {
		if s != tc.addrs[dead] {
			alive = append(alive, s)
		}
	}
	brokers = strings.Join(alive, ",")
	runKcat(t, kcat, lines(100, 100), "-b", brokers, "-P", "-t", "kc", "-K:", "-X", "acks=all")
	got := runKcat(t, kcat, "", "-b", brokers, "-C", "-t", "kc", "-o", "beginning", "-e", "-q", "-K:")
	seen := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
		seen[l]++
	}
	for i := range 200 {
		if l := fmt.Sprintf("k%d:v%d", i, i); seen[l] != 1 {
			t.Fatalf("%s read %d times; kcat read %d lines", l, seen[l], len(seen))
		}
	}
}

// A leader cut off from the cluster keeps taking acks=1 writes that no
// follower gets; the control plane elects another. When it comes back it
// follows the new leader: its divergent tail is truncated, so it holds
// exactly the new leader's log, and no consumer ever saw that tail.
func TestClusterDivergentTailTruncated(t *testing.T) {
	tc := newTestCluster(t, "a", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := newKgo(t, tc.seeds()[0], kgo.SeedBrokers(tc.seeds()...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("d"),
		kgo.AllowAutoTopicCreation(), kgo.RecordDeliveryTimeout(20*time.Second), kgo.ProduceRequestTimeout(time.Second))
	for i := range 10 {
		if err := all.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint("committed-", i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	old := tc.mapNow().Topic("d").Partitions[0].Leader
	oldB := tc.brokers[old]
	oldP := oldB.topics.get("d").partition(0)
	poll.Until(t, 10*time.Second, "every replica to hold the 10 committed records", func() bool {
		for _, b := range tc.brokers {
			if b.topics.get("d").partition(0).EndOffset() != 10 {
				return false
			}
		}
		_, hw := oldP.Offsets()
		return hw == 10
	})
	tc.partition(old, true)
	// A client that only reaches the old leader, which still leads in
	// its own map: acks=1 writes land there alone.
	lone := newKgo(t, tc.addrs[old], kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite(), kgo.DefaultProduceTopic("d"))
	for i := range 5 {
		if err := lone.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint("lost-", i))}).FirstErr(); err != nil {
			t.Fatalf("acks=1 produce to the cut-off leader: %v", err)
		}
	}
	if end, _ := oldP.EndOffset(), 0; end != 15 {
		t.Fatalf("the cut-off leader's log ends at %d, want 15", end)
	}
	// Nobody acknowledged the tail's replication: consumers of the old
	// leader see none of it.
	if _, hw := oldP.Offsets(); hw != 10 {
		t.Fatalf("the cut-off leader's high watermark is %d, want 10", hw)
	}
	if code := fetchCode(ctx, t, lone.Broker(int(NodeID(old))), "d"); code != 0 {
		t.Fatalf("fetch from the cut-off leader: code %d", code)
	}
	if res, _ := oldP.Read(10, 1<<20); len(res.Batches) != 0 {
		t.Fatal("a consumer of the cut-off leader reads its uncommitted tail")
	}
	if err := tc.apply(clustermap.MemberDead{ID: old, At: 2}); err != nil {
		t.Fatal(err)
	}
	next := tc.mapNow().Topic("d").Partitions[0].Leader
	if next == old || next == "" {
		t.Fatalf("leader %q after %s was cut off", next, old)
	}
	for i := range 7 {
		if err := all.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint("new-", i))}).FirstErr(); err != nil {
			t.Fatalf("acks=all produce to the new leader: %v", err)
		}
	}
	tc.partition(old, false)
	if err := tc.apply(clustermap.MemberAlive{ID: old}); err != nil {
		t.Fatal(err)
	}
	nextP := tc.brokers[next].topics.get("d").partition(0)
	poll.Until(t, 15*time.Second, "the old leader to hold exactly the new leader's log", func() bool {
		if oldP.EndOffset() != nextP.EndOffset() {
			return false
		}
		a, _ := oldP.ReadUncommitted(0, 1<<20, nil)
		b, _ := nextP.ReadUncommitted(0, 1<<20, nil)
		return string(a.Batches) == string(b.Batches)
	})
	res, _ := oldP.ReadUncommitted(0, 1<<20, nil)
	if strings.Contains(string(res.Batches), "lost-") {
		t.Fatal("the old leader kept its divergent tail")
	}
	if !strings.Contains(string(res.Batches), "new-6") || oldP.EndOffset() != 17 {
		t.Fatalf("the old leader ends at %d without the new leader's records", oldP.EndOffset())
	}
}

// The admin APIs see one cluster and act through the control plane:
// DescribeCluster lists the brokers Metadata lists, a reassignment moves
// a partition's replicas (and is listed while it runs), a preferred
// leader election gives the leadership back to the first replica, and a
// deleted topic leaves every broker.
func TestClusterAdmin(t *testing.T) {
	tc := newTestCluster(t, "a", "b", "c", "d")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := newKgo(t, tc.seeds()[0], kgo.SeedBrokers(tc.seeds()...))
	adm := kadm.NewClient(cl)
	dreq := kmsg.NewPtrDescribeClusterRequest()
	dreq.EndpointType = 1
	dc, err := dreq.RequestWith(ctx, cl)
	if err != nil || len(dc.Brokers) != 4 {
		t.Fatalf("DescribeCluster: %+v %v, want 4 brokers", dc, err)
	}
	if _, err := adm.CreateTopic(ctx, 2, 3, nil, "adm"); err != nil {
		t.Fatal(err)
	}
	g := tc.mapNow().Topic("adm").Partitions[0]
	// Move partition 0 to the member that does not hold it, in place of
	// its last replica.
	var spare string
	for _, id := range []string{"a", "b", "c", "d"} {
		if !slices.Contains(g.Replicas, id) {
			spare = id
		}
	}
	target := []int32{NodeID(g.Replicas[0]), NodeID(g.Replicas[1]), NodeID(spare)}
	req := kadm.AlterPartitionAssignmentsReq{}
	req.Assign("adm", 0, target)
	res, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if e := res["adm"][0].Err; e != nil {
		t.Fatalf("reassignment: %v", e)
	}
	// The test's control plane runs no planner: play its part until the
	// map holds the target.
	poll.Until(t, 20*time.Second, "partition 0 to reach its target replicas", func() bool {
		tc.mu.Lock()
		cmds := clustermap.Plan(tc.m, clustermap.PlanConfig{})
		tc.mu.Unlock()
		for _, c := range cmds {
			_ = tc.apply(c)
		}
		got := tc.mapNow().Topic("adm").Partitions[0].Replicas
		return slices.Equal(got, []string{g.Replicas[0], g.Replicas[1], spare}) && tc.mapNow().Topic("adm").Partitions[0].Move == nil
	})
	if p := tc.brokers[spare].topics.get("adm"); p == nil {
		t.Fatalf("the new replica %s holds no partition", spare)
	}
	listed, err := adm.ListPartitionReassignments(ctx, nil)
	if err != nil || len(listed) != 0 {
		t.Fatalf("reassignments listed after completion: %v %v", listed, err)
	}
	// A preferred election: the first replica of partition 1 dies (the
	// next in-sync one leads), comes back and catches up; the election
	// gives it the leadership back.
	p1 := tc.mapNow().Topic("adm").Partitions[1]
	pref := p1.Replicas[0]
	tc.stop(pref)
	if err := tc.apply(clustermap.MemberDead{ID: pref, At: 2}); err != nil {
		t.Fatal(err)
	}
	if l := tc.mapNow().Topic("adm").Partitions[1].Leader; l == pref {
		t.Fatal("no failover")
	}
	tc.start(pref)
	if err := tc.apply(clustermap.MemberAlive{ID: pref, At: 3}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the preferred replica back in sync", func() bool {
		return slices.Contains(tc.mapNow().Topic("adm").Partitions[1].ISR, pref)
	})
	el, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, kadm.TopicsSet{"adm": {1: {}}})
	if err != nil {
		t.Fatal(err)
	}
	if e := el["adm"][1].Err; e != nil {
		t.Fatalf("preferred election: %v", e)
	}
	if l := tc.mapNow().Topic("adm").Partitions[1].Leader; l != pref {
		t.Fatalf("partition 1 led by %s after the election, want %s", l, pref)
	}
	el, err = adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, kadm.TopicsSet{"adm": {1: {}}})
	if err != nil || !errors.Is(el["adm"][1].Err, kerr.ElectionNotNeeded) {
		t.Fatalf("a second election: %v %v, want ELECTION_NOT_NEEDED", el, err)
	}
	// Deleted: no broker keeps it.
	if _, err := adm.DeleteTopic(ctx, "adm"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "every broker to drop the deleted topic", func() bool {
		for _, b := range tc.brokers {
			if b.topics.get("adm") != nil {
				return false
			}
		}
		return true
	})
}

// A consumer group across the cluster: its members, each knowing a
// different broker, find one coordinator and share the partitions; the
// offsets they commit are replicated and survive the coordinator's death,
// so a member of the group after the failover goes on from them.
func TestClusterGroups(t *testing.T) {
	tc := newTestCluster(t, "a", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	seeds := tc.seeds()
	adm := kadm.NewClient(newKgo(t, seeds[0], kgo.SeedBrokers(seeds...)))
	if _, err := adm.CreateTopic(ctx, 4, 3, nil, "gt"); err != nil {
		t.Fatal(err)
	}
	member := func(seed string) *kgo.Client {
		return newKgo(t, seed, kgo.ConsumeTopics("gt"), kgo.ConsumerGroup("cg"), kgo.DisableAutoCommit(),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.SessionTimeout(6*time.Second))
	}
	m1, m2 := member(tc.addrs["a"]), member(tc.addrs["c"])
	// Both poll so that both join.
	got := make([]map[string]int, 2)
	var wg sync.WaitGroup
	pollCtx, stopPolling := context.WithCancel(ctx)
	var mu sync.Mutex
	for i, m := range []*kgo.Client{m1, m2} {
		got[i] = map[string]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pollCtx.Err() == nil {
				fs := m.PollFetches(pollCtx)
				mu.Lock()
				for _, r := range fs.Records() {
					got[i][string(r.Value)]++
				}
				mu.Unlock()
			}
		}()
	}
	poll.Until(t, 30*time.Second, "the group to have two members", func() bool {
		dg, err := adm.DescribeGroups(ctx, "cg")
		return err == nil && dg["cg"].Err == nil && len(dg["cg"].Members) == 2 && dg["cg"].State == "Stable"
	})
	prod := newKgo(t, seeds[0], kgo.SeedBrokers(seeds...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("gt"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	for i := range 40 {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint("r", i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 30*time.Second, "the two members to read the 40 records", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got[0])+len(got[1]) == 40
	})
	stopPolling()
	wg.Wait()
	if len(got[0]) == 0 || len(got[1]) == 0 {
		t.Fatalf("the members did not share the partitions: %d and %d records", len(got[0]), len(got[1]))
	}
	for v := range got[0] {
		if got[1][v] > 0 {
			t.Fatalf("record %s read by both members", v)
		}
	}
	for _, m := range []*kgo.Client{m1, m2} {
		if err := m.CommitUncommittedOffsets(ctx); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	m1.Close()
	m2.Close()
	committed := func(a *kadm.Client) (int64, error) {
		offs, err := a.FetchOffsets(ctx, "cg")
		if err == nil {
			err = offs.Error()
		}
		var sum int64
		offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
		return sum, err
	}
	if sum, err := committed(adm); err != nil || sum != 40 {
		t.Fatalf("committed offsets sum to %d (%v), want 40", sum, err)
	}
	// The coordinator dies; the offsets partition fails over.
	coord := tc.mapNow().Topic(offsetsTopic).Partitions[groupPartition("cg")].Leader
	tc.stop(coord)
	if err := tc.apply(clustermap.MemberDead{ID: coord, At: 2}); err != nil {
		t.Fatal(err)
	}
	var alive []string
	for _, id := range []string{"a", "b", "c"} {
		if id != coord {
			alive = append(alive, tc.addrs[id])
		}
	}
	adm2 := kadm.NewClient(newKgo(t, alive[0], kgo.SeedBrokers(alive...)))
	poll.Until(t, 30*time.Second, "the new coordinator to serve the 40 committed offsets", func() bool {
		sum, err := committed(adm2)
		return err == nil && sum == 40
	})
	// A member after the failover goes on from the committed offsets.
	prod2 := newKgo(t, alive[0], kgo.SeedBrokers(alive...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("gt"))
	for i := range 10 {
		res := prod2.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint("after", i))})
		if err := res.FirstErr(); err != nil {
			t.Fatal(err)
		}
		// Offset -1 is a batch the broker took for a retry
		// (DUPLICATE_SEQUENCE_NUMBER): another producer's id.
		if r, _ := res.First(); r.Offset < 0 {
			t.Fatalf("record %d answered as a duplicate: producer ids collide across brokers", i)
		}
	}
	m3 := newKgo(t, alive[1], kgo.SeedBrokers(alive...), kgo.ConsumeTopics("gt"), kgo.ConsumerGroup("cg"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[string]bool{}
	for len(seen) < 10 {
		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		fs := m3.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		pcancel()
		if timedOut {
			t.Fatalf("the member after the failover read %v", seen)
		}
		for _, r := range fs.Records() {
			if !strings.HasPrefix(string(r.Value), "after") {
				t.Fatalf("the member after the failover read %s again: the committed offsets were lost", r.Value)
			}
			seen[string(r.Value)] = true
		}
	}
}

// The committed-offset records decode what they encode, and refuse
// anything else without a panic.
func FuzzDecodeOffsetRecords(f *testing.F) {
	f.Add(encodeOffsetBatch(map[storage.OffsetKey]storage.Committed{{Group: "g", Topic: "t", Partition: 3}: {Offset: 42, LeaderEpoch: 2, Metadata: "m"}}, time.Unix(1, 0)))
	f.Add(encodeOffsetBatch(map[storage.OffsetKey]storage.Committed{{Group: "g", Topic: "t"}: {Offset: -1}}, time.Unix(1, 0)))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries := map[storage.OffsetKey]storage.Committed{}
		if _, err := decodeOffsetRecords(b, entries); err != nil {
			return
		}
		for k, c := range entries {
			again := map[storage.OffsetKey]storage.Committed{}
			if _, err := decodeOffsetRecords(encodeOffsetBatch(map[storage.OffsetKey]storage.Committed{k: c}, time.Unix(1, 0)), again); err != nil {
				t.Fatalf("re-encoding %+v: %v", k, err)
			}
			if c.Offset < 0 {
				c = storage.Committed{Offset: -1}
			}
			if again[k] != c {
				t.Fatalf("%+v: %+v, then %+v", k, c, again[k])
			}
		}
	})
}

// Producer ids are unique across the cluster's brokers, which each hand
// them out.
func TestClusterProducerIDsUnique(t *testing.T) {
	tc := newTestCluster(t, "a", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := map[int64]string{}
	for _, id := range []string{"a", "b", "c"} {
		cl := newKgo(t, tc.addrs[id])
		for range 3 {
			resp, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(ctx, cl.Broker(int(NodeID(id))))
			if err != nil || resp.ErrorCode != 0 {
				t.Fatalf("InitProducerId on %s: %v %d", id, err, resp.ErrorCode)
			}
			if other, dup := seen[resp.ProducerID]; dup {
				t.Fatalf("producer id %d handed out by %s and %s", resp.ProducerID, other, id)
			}
			seen[resp.ProducerID] = id
		}
	}
}

// OffsetForLeaderEpoch answers from the leader's epoch history: where
// each epoch's records end, fenced and unknown current epochs, and no
// answer from a follower.
func TestClusterOffsetForLeaderEpoch(t *testing.T) {
	tc := newTestCluster(t, "a", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := newKgo(t, tc.seeds()[0], kgo.SeedBrokers(tc.seeds()...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("ep"), kgo.AllowAutoTopicCreation())
	produce := func(n int) {
		for range n {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(5)
	g := tc.mapNow().Topic("ep").Partitions[0]
	tc.stop(g.Leader)
	if err := tc.apply(clustermap.MemberDead{ID: g.Leader, At: 2}); err != nil {
		t.Fatal(err)
	}
	produce(3)
	g2 := tc.mapNow().Topic("ep").Partitions[0]
	ask := func(to string, current, epoch int32) kmsg.OffsetForLeaderEpochResponseTopicPartition {
		t.Helper()
		req := kmsg.NewPtrOffsetForLeaderEpochRequest()
		req.ReplicaID = -1
		rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
		rt.Topic = "ep"
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		rp.CurrentLeaderEpoch, rp.LeaderEpoch = current, epoch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(NodeID(to))))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Topics[0].Partitions[0]
	}
	cur := int32(g2.Epoch)
	if p := ask(g2.Leader, cur, int32(g.Epoch)); p.ErrorCode != 0 || p.LeaderEpoch != int32(g.Epoch) || p.EndOffset != 5 {
		t.Fatalf("epoch %d: %+v, want it to end at 5", g.Epoch, p)
	}
	if p := ask(g2.Leader, cur, cur); p.ErrorCode != 0 || p.LeaderEpoch != cur || p.EndOffset != 8 {
		t.Fatalf("the current epoch %d: %+v, want it to end at the high watermark 8", cur, p)
	}
	if p := ask(g2.Leader, cur-1, cur); p.ErrorCode != kerr.FencedLeaderEpoch.Code {
		t.Fatalf("an older current epoch: code %d, want FENCED_LEADER_EPOCH", p.ErrorCode)
	}
	if p := ask(g2.Leader, cur+1, cur); p.ErrorCode != kerr.UnknownLeaderEpoch.Code {
		t.Fatalf("a newer current epoch: code %d, want UNKNOWN_LEADER_EPOCH", p.ErrorCode)
	}
	for _, id := range g2.ISR {
		if id != g2.Leader {
			if p := ask(id, cur, cur); p.ErrorCode != kerr.NotLeaderForPartition.Code {
				t.Fatalf("a follower: code %d, want NOT_LEADER_OR_FOLLOWER", p.ErrorCode)
			}
		}
	}
}

// sarama (at V2_7 and its default version) produces with acks=all to the
// cluster across a leader's death and reads everything back in a
// consumer group coordinated by the cluster.
func TestSaramaCluster(t *testing.T) {
	for _, v := range saramaVersions {
		t.Run(v.name, func(t *testing.T) {
			tc := newTestCluster(t, "a", "b", "c")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if _, err := kadm.NewClient(newKgo(t, tc.seeds()[0], kgo.SeedBrokers(tc.seeds()...))).CreateTopic(ctx, 3, -1, nil, "st"); err != nil {
				t.Fatal(err)
			}
			cfg := saramaConfig(v.version)
			cfg.Producer.Retry.Max, cfg.Producer.Retry.Backoff = 20, 100*time.Millisecond
			cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
			sp, err := sarama.NewSyncProducer(tc.seeds(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer sp.Close()
			send := func(from, n int) {
				t.Helper()
				for i := from; i < from+n; i++ {
					if _, _, err := sp.SendMessage(&sarama.ProducerMessage{Topic: "st", Value: sarama.StringEncoder(fmt.Sprint("s", i))}); err != nil {
						t.Fatalf("sarama send %d: %v", i, err)
					}
				}
			}
			send(0, 30)
			dead := tc.mapNow().Topic("st").Partitions[0].Leader
			tc.stop(dead)
			if err := tc.apply(clustermap.MemberDead{ID: dead, At: 2}); err != nil {
				t.Fatal(err)
			}
			send(30, 30)
			var alive string
			for _, id := range []string{"a", "b", "c"} {
				if id != dead {
					alive = tc.addrs[id]
				}
			}
			m := startSaramaMember(t, alive, "sg", "st", "sarama-cluster", v.version)
			poll.Until(t, 30*time.Second, "sarama's group member to read the 60 records", func() bool { return m.count() == 60 })
			for val, n := range deliveries(m) {
				if n != 1 {
					t.Fatalf("%s delivered %d times", val, n)
				}
			}
		})
	}
}

// kafkajs sees the cluster: its admin, idempotent producer and consumer
// group (roundtrip.js) work against three brokers, and again after one of
// them died, going on from the group's committed offsets.
func TestKafkajsCluster(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH; make test needs Node.js for the kafkajs test")
	}
	dir := filepath.Join("testdata", "kafkajs")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "kafkajs")); err != nil {
		t.Skip("kafkajs is not installed; run `make deps` (npm install in broker/testdata/kafkajs)")
	}
	tc := newTestCluster(t, "a", "b", "c")
	run := func(seed string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "roundtrip.js", seed)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		// (The second run's CreateTopics logs TOPIC_ALREADY_EXISTS first.)
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err != nil || lines[len(lines)-1] != "OK 50" {
			t.Fatalf("kafkajs: %v\n%s", err, out)
		}
	}
	run(tc.addrs["a"])
	dead := tc.mapNow().Topic("kafkajs").Partitions[0].Leader
	tc.stop(dead)
	if err := tc.apply(clustermap.MemberDead{ID: dead, At: 2}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if id != dead {
			run(tc.addrs[id])
			return
		}
	}
}

// TestClusterTopicConfigs: a topic's configs and partition count live in
// the map, so what kadm sets through one broker every broker applies and
// describes: CreateTopics with configs (min.insync.replicas among them),
// IncrementalAlterConfigs and AlterConfigs, bad values refused with
// INVALID_CONFIG, CreatePartitions spread and assigned, and DeleteRecords
// at the leader only, its followers trimming after it.
func TestClusterTopicConfigs(t *testing.T) {
	tc := newTestCluster(t, "a", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := newKgo(t, tc.seeds()[0], kgo.SeedBrokers(tc.seeds()...))
	adm := kadm.NewClient(cl)
	ms := "3600000"
	three := "3"
	if _, err := adm.CreateTopic(ctx, 2, 3, map[string]*string{"retention.ms": &ms, "min.insync.replicas": &three}, "cfg"); err != nil {
		t.Fatal(err)
	}
	if c := tc.mapNow().Topic("cfg").Config.MinInSyncReplicas; c != 3 {
		t.Fatalf("min.insync.replicas %d in the map, want 3", c)
	}
	// describe asks one broker for the topic's configs.
	describe := func(seed string) map[string]string {
		t.Helper()
		one := newKgo(t, seed)
		rcs, err := kadm.NewClient(one).DescribeTopicConfigs(ctx, "cfg")
		if err != nil {
			t.Fatal(err)
		}
		rc, err := rcs.On("cfg", nil)
		if err != nil || rc.Err != nil {
			t.Fatalf("describe: %v %v", err, rc.Err)
		}
		out := map[string]string{}
		for _, c := range rc.Configs {
			out[c.Key] = c.MaybeValue()
		}
		return out
	}
	// applied polls until every broker's replicas use want as overrides,
	// and every broker describes them.
	applied := func(want map[string]string, minISR string) {
		t.Helper()
		poll.Until(t, 10*time.Second, fmt.Sprintf("every broker to apply %v", want), func() bool {
			for _, id := range []string{"a", "b", "c"} {
				tp := tc.brokers[id].topics.get("cfg")
				if tp == nil {
					return false
				}
				tp.mu.RLock()
				same := maps.Equal(tp.configs, want)
				tp.mu.RUnlock()
				if !same {
					return false
				}
			}
			return true
		})
		for _, seed := range tc.seeds() {
			got := describe(seed)
			for k, v := range want {
				if got[k] != v {
					t.Errorf("broker %s describes %s=%q, want %q", seed, k, got[k], v)
				}
			}
			if got["min.insync.replicas"] != minISR {
				t.Errorf("broker %s describes min.insync.replicas=%q, want %s", seed, got["min.insync.replicas"], minISR)
			}
		}
	}
	applied(map[string]string{"retention.ms": ms}, "3")

	seg := "1048576"
	res, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "segment.bytes", Value: &seg}, {Op: kadm.DeleteConfig, Name: "retention.ms"}}, "cfg")
	if err != nil || res[0].Err != nil {
		t.Fatalf("incremental alter: %v %+v", err, res)
	}
	applied(map[string]string{"segment.bytes": seg}, "3")

	// AlterConfigs replaces: min.insync.replicas goes back to its
	// default, 2 at three replicas.
	policy := "delete"
	res, err = adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "cleanup.policy", Value: &policy}}, "cfg")
	if err != nil || res[0].Err != nil {
		t.Fatalf("alter: %v %+v", err, res)
	}
	applied(map[string]string{"cleanup.policy": "delete"}, "2")

	for _, bad := range []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "min.insync.replicas", Value: kmsg.StringPtr("4")},
		{Op: kadm.SetConfig, Name: "retention.ms", Value: kmsg.StringPtr("soon")},
		{Op: kadm.SetConfig, Name: "no.such.config", Value: kmsg.StringPtr("1")},
	} {
		res, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{bad}, "cfg")
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[0].Err, kerr.InvalidConfig) || !strings.Contains(res[0].ErrMessage, bad.Name) {
			t.Errorf("%s=%s: %v %q, want INVALID_CONFIG naming it", bad.Name, *bad.Value, res[0].Err, res[0].ErrMessage)
		}
	}
	if _, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{"retention.ms": kmsg.StringPtr("-5x")}, "badcfg"); !errors.Is(err, kerr.InvalidConfig) {
		t.Errorf("create with a bad config: %v, want INVALID_CONFIG", err)
	}

	// CreatePartitions: one spread by the control plane, then one
	// assigned by hand.
	cp, err := adm.CreatePartitions(ctx, 1, "cfg")
	if err != nil || cp["cfg"].Err != nil {
		t.Fatalf("create partitions: %v %+v", err, cp)
	}
	if n := len(tc.mapNow().Topic("cfg").Partitions); n != 3 {
		t.Fatalf("%d partitions in the map, want 3", n)
	}
	areq := kmsg.NewPtrCreatePartitionsRequest()
	rt := kmsg.NewCreatePartitionsRequestTopic()
	rt.Topic, rt.Count = "cfg", 4
	as := kmsg.NewCreatePartitionsRequestTopicAssignment()
	as.Replicas = []int32{NodeID("c"), NodeID("a"), NodeID("b")}
	rt.Assignment = append(rt.Assignment, as)
	areq.Topics = append(areq.Topics, rt)
	aresp, err := areq.RequestWith(ctx, cl)
	if err != nil || aresp.Topics[0].ErrorCode != 0 {
		t.Fatalf("assigned create partitions: %v %+v", err, aresp)
	}
	if g := tc.mapNow().Topic("cfg").Partitions[3]; !slices.Equal(g.Replicas, []string{"c", "a", "b"}) || g.Leader != "c" {
		t.Fatalf("partition 3: replicas %v led by %s, want [c a b] led by c", g.Replicas, g.Leader)
	}
	rt.Count = 4
	rt.Assignment = nil
	areq.Topics = []kmsg.CreatePartitionsRequestTopic{rt}
	if aresp, err = areq.RequestWith(ctx, cl); err != nil || aresp.Topics[0].ErrorCode != kerr.InvalidPartitions.Code {
		t.Fatalf("create partitions to the same count: %v %+v, want INVALID_PARTITIONS", err, aresp)
	}
	// Every broker holds the new partitions, and acks=all writes reach
	// partition 3 through its leader.
	poll.Until(t, 10*time.Second, "every broker to hold 4 partitions", func() bool {
		for _, id := range []string{"a", "b", "c"} {
			if tp := tc.brokers[id].topics.get("cfg"); tp == nil || tp.numPartitions() != 4 {
				return false
			}
		}
		return true
	})
	prod := newKgo(t, tc.seeds()[0], kgo.SeedBrokers(tc.seeds()...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequiredAcks(kgo.AllISRAcks()))
	for i := range 10 {
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "cfg", Partition: 3, Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	// DeleteRecords: a follower refuses, the leader deletes, and the
	// followers trim to its new start.
	dreq := kmsg.NewPtrDeleteRecordsRequest()
	dt := kmsg.NewDeleteRecordsRequestTopic()
	dt.Topic = "cfg"
	dp := kmsg.NewDeleteRecordsRequestTopicPartition()
	dp.Partition, dp.Offset = 3, 4
	dt.Partitions = append(dt.Partitions, dp)
	dreq.Topics = append(dreq.Topics, dt)
	// (kgo sends a DeleteRecords to each partition's leader itself; this
	// one goes to a follower on purpose.)
	kr, err := cl.Broker(int(NodeID("a"))).Request(ctx, dreq)
	dresp, _ := kr.(*kmsg.DeleteRecordsResponse)
	if err != nil || dresp.Topics[0].Partitions[0].ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("delete records at a follower: %v %+v, want NOT_LEADER_OR_FOLLOWER", err, dresp)
	}
	del, err := adm.DeleteRecords(ctx, kadm.Offsets{"cfg": {3: kadm.Offset{At: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := del.Lookup("cfg", 3); r.Err != nil || r.LowWatermark != 4 {
		t.Fatalf("delete records: %+v", r)
	}
	poll.Until(t, 10*time.Second, "the followers to trim to offset 4", func() bool {
		for _, id := range []string{"a", "b"} {
			if start, _ := tc.brokers[id].topics.get("cfg").partition(3).Offsets(); start != 4 {
				return false
			}
		}
		return true
	})
}

// TestClusterSmoothExpansion: a reassignment with the FromLatest tag
// (Kuaishou's smooth expansion) starts its new replica at the leader's
// high watermark: the leader reads none of the history for it, the
// replica gets the tail, and it joins the in-sync set (completing the
// move) only once the leader's log starts at its start (retention; here
// DeleteRecords). The same reassignment without the tag copies the
// whole history. The bytes the leader serves its followers are compared.
func TestClusterSmoothExpansion(t *testing.T) {
	tc := newTestCluster(t, "a", "b", "c", "d")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := newKgo(t, tc.seeds()[0], kgo.SeedBrokers(tc.seeds()...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(1<<20))
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 2, 3, nil, "grow"); err != nil {
		t.Fatal(err)
	}
	produce := func(part int32, n int) {
		t.Helper()
		rs := make([]*kgo.Record, n)
		for i := range rs {
			value := make([]byte, 1024)
			rand.Read(value) // (incompressible: the bytes on disk are the bytes sent)
			rs[i] = &kgo.Record{Topic: "grow", Partition: part, Value: value}
		}
		if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	const history = 4000 // 4 MiB of history in each partition
	produce(0, history)
	produce(1, history)
	// reassign moves a partition's last replica to the member that does
	// not hold it, with the tag or without, and returns the new member
	// and the bytes its leader served while the new replica caught up.
	reassign := func(part int, fromLatest bool) (string, *Broker, int64) {
		t.Helper()
		g := tc.mapNow().Topic("grow").Partitions[part]
		var spare string
		for _, id := range []string{"a", "b", "c", "d"} {
			if !slices.Contains(g.Replicas, id) {
				spare = id
			}
		}
		leader := tc.brokers[g.Leader]
		before := leader.replicaServed.Load()
		req := kmsg.NewPtrAlterPartitionAssignmentsRequest()
		rt := kmsg.NewAlterPartitionAssignmentsRequestTopic()
		rt.Topic = "grow"
		rp := kmsg.NewAlterPartitionAssignmentsRequestTopicPartition()
		rp.Partition = int32(part)
		rp.Replicas = []int32{NodeID(g.Replicas[0]), NodeID(g.Replicas[1]), NodeID(spare)}
		if fromLatest {
			rp.UnknownTags.Set(FromLatestTag, []byte{1})
		}
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || resp.ErrorCode != 0 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
			t.Fatalf("reassignment: %v %+v", err, resp)
		}
		tc.planUntil(t, "the move to start", func(m *clustermap.Map) bool {
			mv := m.Topic("grow").Partitions[part].Move
			return mv != nil && mv.To == spare && mv.FromLatest == fromLatest
		})
		poll.Until(t, 20*time.Second, "the new replica to catch up", func() bool {
			tp := tc.brokers[spare].topics.get("grow")
			if tp == nil || tp.partition(int32(part)) == nil {
				return false
			}
			_, lhw := leader.topics.get("grow").partition(int32(part)).Offsets()
			return tp.partition(int32(part)).EndOffset() >= lhw
		})
		return spare, tc.brokers[spare], leader.replicaServed.Load() - before
	}

	// Smooth: partition 0.
	spare, nb, served := reassign(0, true)
	start, _ := nb.topics.get("grow").partition(0).Offsets()
	if start != history {
		t.Fatalf("the smooth replica's log starts at %d, want %d (the high watermark)", start, history)
	}
	// It takes the tail, but stays out of the in-sync set, and the move
	// in progress, while the leader holds history it lacks.
	produce(0, 100)
	poll.Until(t, 10*time.Second, "the tail to reach the smooth replica", func() bool {
		return nb.topics.get("grow").partition(0).EndOffset() == history+100
	})
	tc.planRounds(t, 500*time.Millisecond)
	if g := tc.mapNow().Topic("grow").Partitions[0]; slices.Contains(g.ISR, spare) || g.Move == nil {
		t.Fatalf("a partial replica in sync: isr %v move %+v", g.ISR, g.Move)
	}
	// Retention drops the history below its start: it joins and the move
	// completes.
	if _, err := adm.DeleteRecords(ctx, kadm.Offsets{"grow": {0: kadm.Offset{At: history}}}); err != nil {
		t.Fatal(err)
	}
	tc.planUntil(t, "the smooth move to complete", func(m *clustermap.Map) bool {
		g := m.Topic("grow").Partitions[0]
		return g.Move == nil && g.Target == nil && slices.Contains(g.ISR, spare) && slices.Contains(g.Replicas, spare)
	})

	// Copying: partition 1.
	_, cb, copied := reassign(1, false)
	if start, _ := cb.topics.get("grow").partition(1).Offsets(); start != 0 {
		t.Fatalf("the copying replica's log starts at %d, want 0", start)
	}
	t.Logf("bytes the leader read for the new replica: smooth %d, copying %d", served, copied)
	if copied < history*1024 || served*20 > copied {
		t.Fatalf("the leader served %d bytes for the smooth replica and %d for the copying one; want the copy to be the whole history (%d) and the smooth one under 1/20 of it", served, copied, history*1024)
	}
}

// planUntil plays the control plane's planner until done holds.
func (tc *testCluster) planUntil(t *testing.T, what string, done func(*clustermap.Map) bool) {
	t.Helper()
	poll.Until(t, 20*time.Second, what, func() bool {
		tc.planOnce()
		return done(tc.mapNow())
	})
}

// planRounds plays the planner for d.
func (tc *testCluster) planRounds(t *testing.T, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		tc.planOnce()
		runtime.Gosched()
	}
}

func (tc *testCluster) planOnce() {
	tc.mu.Lock()
	cmds := clustermap.Plan(tc.m, clustermap.PlanConfig{})
	tc.mu.Unlock()
	for _, c := range cmds {
		_ = tc.apply(c)
	}
}
