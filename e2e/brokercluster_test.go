package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mecha/broker"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// TestBrokerClusterKillLeader: three runtimes' brokers are one Kafka
// cluster (--broker-cluster). franz-go and kcat (librdkafka) produce with
// acks=all, idempotently, to a topic of three replicas while the runtime
// leading a partition is killed -9: the producers carry on against the
// new leader, and afterwards every acknowledged record is read back
// exactly once.
func TestBrokerClusterKillLeader(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	args := func(i int, extra ...string) []string {
		return append([]string{"--app-id", "bc", "--bootstrap-expect", "3", "--broker-cluster", "--broker-port", "0",
			"--cluster-id", "e2e-broker", "--data-dir", dirs[i]}, extra...)
	}
	a := startMecha(t, args(0)...)
	join := fmt.Sprintf("127.0.0.1:%d", a.gossipPort)
	b := startMecha(t, args(1, "--join", join)...)
	c := startMecha(t, args(2, "--join", join)...)
	runtimes := []*mecha{a, b, c}
	var seeds []string
	for _, m := range runtimes {
		seeds = append(seeds, fmt.Sprintf("127.0.0.1:%d", m.brokerPort))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	eventually(t, 60*time.Second, func() error {
		// A direct request: kadm's BrokerMetadata answers from the
		// client's cache, which keeps the first answer's brokers (one,
		// while the map was still filling) until a topic's metadata is
		// refreshed.
		md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, admCl)
		if err != nil {
			return err
		}
		if len(md.Brokers) != 3 {
			return fmt.Errorf("brokers %v, want 3", md.Brokers)
		}
		return nil
	})
	eventually(t, 30*time.Second, func() error {
		res, err := adm.CreateTopic(ctx, 3, -1, nil, "events")
		if err != nil {
			return err
		}
		if res.Err != nil {
			return res.Err
		}
		if res.ReplicationFactor != 3 {
			t.Fatalf("replication factor %d, want 3", res.ReplicationFactor)
		}
		return nil
	})
	// The runtime leading partition 0 is the one to kill.
	var victim *mecha
	eventually(t, 30*time.Second, func() error {
		md, err := adm.Metadata(ctx, "events")
		if err != nil {
			return err
		}
		p := md.Topics["events"].Partitions[0]
		if len(p.ISR) != 3 {
			return fmt.Errorf("partition 0's in-sync set %v", p.ISR)
		}
		for _, br := range md.Brokers {
			if br.NodeID == p.Leader {
				for _, m := range runtimes {
					if int(br.Port) == m.brokerPort {
						victim = m
						return nil
					}
				}
			}
		}
		return fmt.Errorf("no runtime has the leader %d's port", p.Leader)
	})

	prod, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("events"),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.RecordDeliveryTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var (
		mu       sync.Mutex
		acked    = map[string]bool{}
		failed   int
		lastAck  time.Time
		longest  time.Duration
		killedAt time.Time
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sem := make(chan struct{}, 16)
		for i := 0; ; i++ {
			select {
			case <-stop:
				for range cap(sem) {
					sem <- struct{}{}
				}
				return
			case sem <- struct{}{}:
			}
			v := strconv.Itoa(i)
			prod.Produce(ctx, &kgo.Record{Value: []byte(v)}, func(_ *kgo.Record, err error) {
				mu.Lock()
				if err == nil {
					acked[v] = true
					now := time.Now()
					if !killedAt.IsZero() && !lastAck.IsZero() && now.Sub(lastAck) > longest {
						longest = now.Sub(lastAck)
					}
					lastAck = now
				} else {
					failed++
				}
				mu.Unlock()
				<-sem
			})
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	// librdkafka too: kcat, idempotent with acks=all, produces a line
	// every few milliseconds across the kill.
	kcatBin, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is not on PATH (make deps installs it)")
	}
	kcat := exec.Command(kcatBin, "-b", strings.Join(seeds, ","), "-P", "-t", "events", "-X", "acks=all", "-X", "enable.idempotence=true",
		"-X", "message.timeout.ms=60000", "-X", "topic.metadata.refresh.interval.ms=500")
	kcatIn, err := kcat.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var kcatErr strings.Builder
	kcat.Stderr = &kcatErr
	if err := kcat.Start(); err != nil {
		t.Fatal(err)
	}
	kcatLines := 0
	kcatStop, kcatWrote := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(kcatWrote)
		defer kcatIn.Close()
		for ; ; kcatLines++ {
			select {
			case <-kcatStop:
				return
			case <-time.After(3 * time.Millisecond):
			}
			if _, err := fmt.Fprintf(kcatIn, "kcat-%d\n", kcatLines); err != nil {
				return
			}
		}
	}()
	eventually(t, 30*time.Second, func() error {
		if n := count(); n < 500 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})
	mu.Lock()
	killedAt = time.Now()
	before := len(acked)
	mu.Unlock()
	_ = victim.cmd.Process.Kill()
	eventually(t, 60*time.Second, func() error {
		if n := count(); n < before+500 {
			return fmt.Errorf("%d acknowledged since the kill", n-before)
		}
		return nil
	})
	close(stop)
	<-done
	close(kcatStop)
	<-kcatWrote
	kcatDone := make(chan error, 1)
	go func() { kcatDone <- kcat.Wait() }()
	select {
	case err := <-kcatDone:
		// (It logs its lost connections to the dead broker; a lost
		// record is "Delivery failed".)
		if err != nil || strings.Contains(kcatErr.String(), "Delivery failed") {
			t.Fatalf("kcat: %v\n%s", err, kcatErr.String())
		}
	case <-time.After(90 * time.Second):
		_ = kcat.Process.Kill()
		t.Fatalf("kcat has not delivered its %d lines in 90 s:\n%s", kcatLines, kcatErr.String())
	}
	mu.Lock()
	// Every line kcat took is acknowledged: it exited without a failed
	// delivery.
	for i := range kcatLines {
		acked[fmt.Sprintf("kcat-%d", i)] = true
	}
	t.Logf("%d records acknowledged (%d by kcat, %d franz-go failed); the longest gap between franz-go's acknowledgements after the kill: %v", len(acked), kcatLines, failed, longest)
	mu.Unlock()

	var alive []string
	for _, m := range runtimes {
		if m != victim {
			alive = append(alive, fmt.Sprintf("127.0.0.1:%d", m.brokerPort))
		}
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(alive...), kgo.ConsumeTopics("events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	seen := map[string]int{}
	missing := func() int {
		n := 0
		for v := range acked {
			if seen[v] == 0 {
				n++
			}
		}
		return n
	}
	for missing() > 0 {
		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		fs := cons.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		pcancel()
		if timedOut {
			t.Fatalf("%d acknowledged records never read (%d read)", missing(), len(seen))
		}
		for _, e := range fs.Errors() {
			t.Fatalf("consume %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		for _, r := range fs.Records() {
			seen[string(r.Value)]++
		}
	}
	for v, n := range seen {
		if n > 1 {
			t.Fatalf("record %s read %d times: the idempotent producer's retry was written twice", v, n)
		}
	}
}

// TestBrokerClusterPubSub: with the broker cluster, pubsub.mecha is a
// client of the cluster. Events published through the runtime of one
// host reach the subscribing app-id on the others, each event to one of
// its two instances (competing consumers), every event once.
func TestBrokerClusterPubSub(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	// The brokers authenticate and authorize: the runtimes' own pubsub
	// clients get through as the runtime's user, Kafka clients as the
	// users of the file.
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("ops:ops-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := func(i int, extra ...string) []string {
		return append([]string{"--bootstrap-expect", "3", "--broker-cluster", "--broker-port", "0", "--broker-default-partitions", "4",
			"--broker-sasl-users", users, "--broker-acls", "--broker-super-users", "ops",
			"--cluster-id", "e2e-pubsub", "--data-dir", dirs[i]}, extra...)
	}
	ops := kgo.SASL(scram.Auth{User: "ops", Pass: "ops-secret"}.AsSha512Mechanism())
	bApp, cApp := startHTTPApp(t), startHTTPApp(t)
	a := startMecha(t, args(0, "--app-id", "pub")...)
	join := fmt.Sprintf("127.0.0.1:%d", a.gossipPort)
	b := startMecha(t, args(1, "--app-id", "sub", "--app-port", fmt.Sprint(bApp), "--join", join)...)
	c := startMecha(t, args(2, "--app-id", "sub", "--app-port", fmt.Sprint(cApp), "--join", join)...)
	// The first publish waits for the cluster to form and the topic to
	// be created.
	eventually(t, 60*time.Second, func() error {
		r := do(t, "POST", a.url("/v1.0/publish/pubsub/orders"), `{"n":0}`, "Content-Type", "application/json")
		if r.Status != 204 {
			return fmt.Errorf("publish: %d %s", r.Status, r.Body)
		}
		return nil
	})
	// Both instances of sub in its consumer group before the rest.
	cl, err := kgo.NewClient(kgo.SeedBrokers(fmt.Sprintf("127.0.0.1:%d", a.brokerPort)), ops)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	anon, err := kgo.NewClient(kgo.SeedBrokers(fmt.Sprintf("127.0.0.1:%d", b.brokerPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(context.Background(), anon); err == nil {
		t.Fatal("a client without credentials was served")
	}
	eventually(t, 60*time.Second, func() error {
		dg, err := adm.DescribeGroups(context.Background(), "sub")
		if err != nil || dg["sub"].Err != nil || len(dg["sub"].Members) != 2 || dg["sub"].State != "Stable" {
			return fmt.Errorf("group sub: %+v %v", dg["sub"], err)
		}
		return nil
	})
	// Keyed, so that the events spread over the partitions (unkeyed
	// ones may all go to one partition, hence one instance).
	for i := 1; i < 40; i++ {
		expectStatus(t, do(t, "POST", a.url(fmt.Sprintf("/v1.0/publish/pubsub/orders?metadata.partitionKey=k%d", i)), fmt.Sprintf(`{"n":%d}`, i), "Content-Type", "application/json"), 204)
	}
	numbers := func(port int) []int {
		var out []int
		for _, r := range received(t, port, "orders") {
			var ev struct {
				Data struct{ N int } `json:"data"`
			}
			if err := json.Unmarshal(r.Body, &ev); err != nil {
				t.Fatalf("delivery is not a CloudEvent: %s", r.Body)
			}
			out = append(out, ev.Data.N)
		}
		return out
	}
	eventually(t, 60*time.Second, func() error {
		if n := len(numbers(bApp)) + len(numbers(cApp)); n < 40 {
			return fmt.Errorf("%d of 40 events delivered", n)
		}
		return nil
	})
	seen := map[int]int{}
	nb, nc := numbers(bApp), numbers(cApp)
	for _, n := range append(nb, nc...) {
		seen[n]++
	}
	for i := range 40 {
		if seen[i] != 1 {
			t.Fatalf("event %d delivered %d times (b got %v, c got %v)", i, seen[i], nb, nc)
		}
	}
	if len(nb) == 0 || len(nc) == 0 {
		t.Fatalf("one instance got every event (b %d, c %d): the app's instances do not share the partitions", len(nb), len(nc))
	}
	smoothReassign(t, adm, []kgo.Opt{ops}, a, b, c)
}

// smoothReassign runs `mecha broker reassign --from-latest` against a
// cluster of three runtimes: a topic of two replicas moves one to the
// third broker, which starts at the high watermark, stays out of the
// in-sync set while the leader holds history it did not copy, and joins
// (the reassignment completing) once that history is deleted.
func smoothReassign(t *testing.T, adm *kadm.Client, opts []kgo.Opt, rts ...*mecha) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 1, 2, nil, "grow"); err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(append(opts, kgo.SeedBrokers(fmt.Sprintf("127.0.0.1:%d", rts[0].brokerPort)), kgo.RequiredAcks(kgo.AllISRAcks()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for i := range 50 {
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "grow", Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	part := func() kadm.PartitionDetail {
		t.Helper()
		md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, prod)
		if err != nil {
			t.Fatal(err)
		}
		for _, tp := range md.Topics {
			if tp.Topic != nil && *tp.Topic == "grow" && len(tp.Partitions) == 1 {
				p := tp.Partitions[0]
				return kadm.PartitionDetail{Leader: p.Leader, Replicas: p.Replicas, ISR: p.ISR}
			}
		}
		t.Fatal("no metadata for grow")
		return kadm.PartitionDetail{}
	}
	nodes := map[int32]bool{}
	md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, prod)
	if err != nil {
		t.Fatal(err)
	}
	for _, br := range md.Brokers {
		nodes[br.NodeID] = true
	}
	p := part()
	var spare int32 = -1
	for n := range nodes {
		if !slices.Contains(p.Replicas, n) {
			spare = n
		}
	}
	if spare < 0 || len(nodes) != 3 {
		t.Fatalf("brokers %v, replicas %v: no spare broker", nodes, p.Replicas)
	}
	target := []int32{p.Leader, spare}
	out, err := exec.Command(bins.mecha, "broker", "reassign", "--admin", fmt.Sprintf("127.0.0.1:%d", rts[1].metricsPort), "--from-latest",
		"grow", "0", fmt.Sprintf("%d,%d", target[0], target[1])).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"fromLatest": true`) {
		t.Fatalf("mecha broker reassign: %v\n%s", err, out)
	}
	eventually(t, 20*time.Second, func() error {
		if p := part(); !slices.Contains(p.Replicas, spare) {
			return fmt.Errorf("replicas %v, want %d among them", p.Replicas, spare)
		}
		return nil
	})
	if p := part(); slices.Contains(p.ISR, spare) {
		t.Fatalf("the new replica is in sync (isr %v) while the leader holds history it did not copy", p.ISR)
	}
	// The history below the high watermark goes: it joins, and the
	// reassignment completes.
	if _, err := adm.DeleteRecords(ctx, kadm.Offsets{"grow": {0: kadm.Offset{At: 50}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		p := part()
		if !slices.Equal(p.Replicas, target) || !slices.Contains(p.ISR, spare) {
			return fmt.Errorf("replicas %v isr %v, want %v all in sync", p.Replicas, p.ISR, target)
		}
		return nil
	})
	if bad, err := exec.Command(bins.mecha, "broker", "reassign", "--admin", fmt.Sprintf("127.0.0.1:%d", rts[1].metricsPort), "grow", "0", "1,x").CombinedOutput(); err == nil || !strings.Contains(string(bad), `"x" is not a node id`) {
		t.Fatalf("a bad broker id: %v\n%s", err, bad)
	}
}

// TestBrokerClusterRollingRestart: each of the three runtimes is stopped
// (SIGTERM) and started again in turn while franz-go produces with
// acks=all and an app publishes through the runtimes' Dapr API to its
// own subscribers on all three; the next waits until no partition is
// under-replicated, as a Kafka operator does. Every acknowledged record
// is there afterwards, once; every acknowledged event was delivered, and
// those delivered twice were published around a restart.
func TestBrokerClusterRollingRestart(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	ports := []int{freePort(t), freePort(t), freePort(t)}
	// Each runtime has an instance of app roll, which subscribes to
	// orders: the three share its consumer group.
	apps := []int{startHTTPApp(t), startHTTPApp(t), startHTTPApp(t)}
	args := func(i int, extra ...string) []string {
		return append([]string{"--app-id", "roll", "--app-port", fmt.Sprint(apps[i]), "--bootstrap-expect", "3", "--broker-cluster", "--broker-port", fmt.Sprint(ports[i]),
			"--cluster-id", "e2e-broker-roll", "--data-dir", dirs[i]}, extra...)
	}
	runtimes := []*mecha{startMecha(t, args(0)...)}
	join := fmt.Sprintf("127.0.0.1:%d", runtimes[0].gossipPort)
	runtimes = append(runtimes, startMecha(t, args(1, "--join", join)...), startMecha(t, args(2, "--join", join)...))
	var seeds []string
	for _, p := range ports {
		seeds = append(seeds, fmt.Sprintf("127.0.0.1:%d", p))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	eventually(t, 60*time.Second, func() error {
		res, err := adm.CreateTopic(ctx, 3, -1, nil, "roll")
		if err == nil {
			err = res.Err
		}
		return err
	})
	healthy := func() error {
		md, err := adm.Metadata(ctx, "roll")
		if err != nil {
			return err
		}
		if len(md.Brokers) != 3 {
			return fmt.Errorf("%d brokers", len(md.Brokers))
		}
		for _, p := range md.Topics["roll"].Partitions {
			if len(p.ISR) != 3 || p.Leader < 0 {
				return fmt.Errorf("partition %d: leader %d, in sync %v", p.Partition, p.Leader, p.ISR)
			}
		}
		return nil
	}
	eventually(t, 30*time.Second, healthy)
	prod, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("roll"),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.RecordDeliveryTimeout(90*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var (
		mu     sync.Mutex
		acked  = map[string]bool{}
		failed []error
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sem := make(chan struct{}, 8)
		for i := 0; ; i++ {
			select {
			case <-stop:
				for range cap(sem) {
					sem <- struct{}{}
				}
				return
			case sem <- struct{}{}:
			}
			v := strconv.Itoa(i)
			prod.Produce(ctx, &kgo.Record{Value: []byte(v)}, func(_ *kgo.Record, err error) {
				mu.Lock()
				if err == nil {
					acked[v] = true
				} else {
					failed = append(failed, err)
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond) // a steady load, not a flood
				<-sem
			})
		}
	}()
	// A publish load through the Dapr API, to whichever runtime is up:
	// a 204 is an acknowledged event.
	var (
		rtMu      sync.Mutex
		published []int
		pubAt     = map[int]time.Time{} // when each acknowledged event was published
		changes   []time.Time           // when the group's membership changed: a stop, a start
	)
	pubStop, pubDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-pubStop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			rtMu.Lock()
			m := runtimes[i%3]
			rtMu.Unlock()
			r, err := http.Post(m.url(fmt.Sprintf("/v1.0/publish/pubsub/orders?metadata.partitionKey=k%d", i)), "application/json", strings.NewReader(fmt.Sprintf(`{"n":%d}`, i)))
			if err != nil {
				continue
			}
			r.Body.Close()
			if r.StatusCode == 204 {
				rtMu.Lock()
				published = append(published, i)
				pubAt[i] = time.Now()
				rtMu.Unlock()
			}
		}
	}()
	for i := range runtimes {
		time.Sleep(time.Second)
		rtMu.Lock()
		changes = append(changes, time.Now())
		rtMu.Unlock()
		runtimes[i].proc.stop()
		next := startMecha(t, args(i, "--join", fmt.Sprintf("127.0.0.1:%d", runtimes[(i+1)%3].gossipPort))...)
		rtMu.Lock()
		runtimes[i] = next
		changes = append(changes, time.Now())
		rtMu.Unlock()
		eventually(t, 60*time.Second, healthy)
	}
	time.Sleep(time.Second)
	close(stop)
	<-done
	close(pubStop)
	<-pubDone
	// Every acknowledged event reaches one of the app's instances; the
	// ones delivered twice are those a stopping instance had taken but
	// not committed (at-least-once), and are counted.
	delivered := map[int]int{}
	eventually(t, 60*time.Second, func() error {
		clear(delivered)
		for _, port := range apps {
			for _, r := range received(t, port, "orders") {
				var ev struct {
					Data struct{ N int } `json:"data"`
				}
				if err := json.Unmarshal(r.Body, &ev); err != nil {
					t.Fatalf("delivery is not a CloudEvent: %s", r.Body)
				}
				delivered[ev.Data.N]++
			}
		}
		for _, n := range published {
			if delivered[n] == 0 {
				return fmt.Errorf("published event %d not delivered (%d of %d delivered)", n, len(delivered), len(published))
			}
		}
		return nil
	})
	dups := 0
	var far time.Duration // the furthest a duplicate was published from a membership change
	for n, c := range delivered {
		if c < 2 {
			continue
		}
		dups += c - 1
		near := time.Hour
		for _, at := range changes {
			near = min(near, max(at.Sub(pubAt[n]), pubAt[n].Sub(at)))
		}
		far = max(far, near)
	}
	t.Logf("pub/sub across the rolling restart: %d events acknowledged, all delivered, %d delivered twice, published at most %v from a restart",
		len(published), dups, far.Round(time.Millisecond))
	// At-least-once (docs/broker.md): what a member handled since its
	// last commit (every second, and on revocation) may come again when
	// the group's membership changes; nothing further from one.
	if far > 5*time.Second {
		t.Fatalf("an event published %v from any restart was delivered twice: outside the at-least-once window", far)
	}
	if len(published) < 100 {
		t.Fatalf("only %d events were published", len(published))
	}
	mu.Lock()
	t.Logf("rolling restart: %d records acknowledged, %d failed", len(acked), len(failed))
	if len(failed) > 0 {
		t.Fatalf("%d records failed, the first: %v", len(failed), failed[0])
	}
	mu.Unlock()
	cons, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics("roll"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	seen := map[string]int{}
	for missing := len(acked); missing > 0; {
		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		fs := cons.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		pcancel()
		if timedOut {
			t.Fatalf("%d acknowledged records never read (%d read)", missing, len(seen))
		}
		for _, e := range fs.Errors() {
			t.Fatalf("consume %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		for _, r := range fs.Records() {
			v := string(r.Value)
			seen[v]++
			if seen[v] == 1 && acked[v] {
				missing--
			}
		}
	}
	for v, n := range seen {
		if n > 1 {
			t.Fatalf("record %s read %d times", v, n)
		}
	}
}

// TestBrokerClusterPartitionedLeader: the runtime leading a partition
// runs in its own network namespace. Its link is cut; a producer inside
// the namespace still writes to it with acks=1, which no follower gets,
// while gossip finds it dead and the control plane elects another leader,
// which takes acks=all writes. Once the link heals, the old leader
// follows the new one and truncates its divergent tail: when it leads
// again (a preferred election), consumers read exactly the acknowledged
// acks=all records, and none of the tail.
func TestBrokerClusterPartitionedLeader(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not on PATH (make deps installs it)")
	}
	const key = "cGFydGl0aW9uLWtleS0xNg=="
	ns := newNetns(t, "mecha-bk", "10.233.0.1", "10.233.0.2")
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	args := func(i int, bind string) []string {
		return []string{"--app-id", "part", "--bootstrap-expect", "3", "--broker-cluster", "--cluster-id", "e2e-broker-part", "--data-dir", dirs[i],
			"--gossip-bind-address", bind, "--gossip-key", key, "--dapr-listen-addresses", bind,
			"--broker-port", "0", "--broker-listen-address", bind, "--allow-insecure-broker"}
	}
	a := startMechaNoWait(t, args(0, ns.hostIP)...)
	join := fmt.Sprintf("%s:%d", ns.hostIP, a.gossipPort)
	b := startMechaNoWait(t, append(args(1, ns.hostIP), "--join", join)...)
	c := listening(startEnv(t, nil, "ip", append([]string{"netns", "exec", ns.name, bins.mecha}, mechaArgs(t, append(args(2, ns.nsIP), "--join", join)...)...)...), 20*time.Second)
	name := func(i int) string {
		bs, err := os.ReadFile(filepath.Join(dirs[i], "node-name"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(bs))
	}
	hostSeeds := []string{fmt.Sprintf("%s:%d", ns.hostIP, a.brokerPort), fmt.Sprintf("%s:%d", ns.hostIP, b.brokerPort)}
	cAddr := fmt.Sprintf("%s:%d", ns.nsIP, c.brokerPort)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(append(hostSeeds, cAddr)...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("dt"),
		kgo.RecordDeliveryTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	// One partition, led by c (its first replica).
	nodes := []int32{broker.NodeID(name(2)), broker.NodeID(name(0)), broker.NodeID(name(1))}
	eventually(t, 60*time.Second, func() error {
		req := kmsg.NewPtrCreateTopicsRequest()
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "dt", -1, -1
		ra := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
		ra.Partition, ra.Replicas = 0, nodes
		rt.ReplicaAssignment = append(rt.ReplicaAssignment, ra)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return err
		}
		if code := resp.Topics[0].ErrorCode; code != 0 && code != 36 {
			return fmt.Errorf("create: %v", kerr.ErrorForCode(code))
		}
		md, err := adm.Metadata(ctx, "dt")
		if err != nil || len(md.Topics["dt"].Partitions) != 1 || len(md.Topics["dt"].Partitions[0].ISR) != 3 {
			return fmt.Errorf("metadata %+v %v", md.Topics["dt"].Partitions, err)
		}
		return nil
	})
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint("before-", i))}).FirstErr(); err != nil {
			t.Fatalf("acks=all before the cut: %v", err)
		}
	}
	ns.cut(t)
	// Inside the namespace, c still leads in its own map: acks=1 writes
	// land there alone.
	var tail strings.Builder
	for i := range 5 {
		fmt.Fprintf(&tail, "lost-%d\n", i)
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.name, kcat, "-b", cAddr, "-P", "-t", "dt", "-p", "0", "-X", "acks=1")
	cmd.Stdin = strings.NewReader(tail.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat inside the namespace: %v\n%s", err, out)
	}
	// c's own log holds them now.
	cLog := func() string {
		files, _ := filepath.Glob(filepath.Join(dirs[2], "broker", "topics", "dt", "0", "*.log"))
		var sb strings.Builder
		for _, f := range files {
			bs, _ := os.ReadFile(f)
			sb.Write(bs)
		}
		return sb.String()
	}
	if !strings.Contains(cLog(), "lost-4") {
		t.Fatal("the acks=1 writes are not in the cut-off leader's log")
	}
	// The control plane (a and b) elects a new leader; acks=all writes go on.
	hostCl, err := kgo.NewClient(kgo.SeedBrokers(hostSeeds...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("dt"),
		kgo.RecordDeliveryTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer hostCl.Close()
	for i := range 10 {
		if err := hostCl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint("after-", i))}).FirstErr(); err != nil {
			t.Fatalf("acks=all after the failover: %v", err)
		}
	}
	ns.heal(t)
	hostAdm := kadm.NewClient(hostCl)
	eventually(t, 90*time.Second, func() error {
		md, err := hostAdm.Metadata(ctx, "dt")
		if err != nil {
			return err
		}
		if p := md.Topics["dt"].Partitions[0]; len(p.ISR) != 3 {
			return fmt.Errorf("in sync %v", p.ISR)
		}
		return nil
	})
	// c back in sync: give it the leadership back and read from it.
	eventually(t, 30*time.Second, func() error {
		res, err := hostAdm.ElectLeaders(ctx, kadm.ElectPreferredReplica, kadm.TopicsSet{"dt": {0: {}}})
		if err != nil {
			return err
		}
		if e := res["dt"][0].Err; e != nil && !errors.Is(e, kerr.ElectionNotNeeded) {
			return e
		}
		md, err := hostAdm.Metadata(ctx, "dt")
		if err != nil || md.Topics["dt"].Partitions[0].Leader != nodes[0] {
			return fmt.Errorf("leader %d, want c (%d): %v", md.Topics["dt"].Partitions[0].Leader, nodes[0], err)
		}
		return nil
	})
	cons, err := kgo.NewClient(kgo.SeedBrokers(hostSeeds...), kgo.ConsumeTopics("dt"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var got []string
	for len(got) < 20 {
		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		fs := cons.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		pcancel()
		if timedOut {
			t.Fatalf("read %v from c, want the 20 acknowledged records", got)
		}
		for _, r := range fs.Records() {
			got = append(got, string(r.Value))
		}
	}
	for _, v := range got {
		if strings.HasPrefix(v, "lost-") {
			t.Fatalf("c served its divergent tail: %v", got)
		}
	}
	if len(got) != 20 {
		t.Fatalf("read %d records from c: %v", len(got), got)
	}
	if strings.Contains(cLog(), "lost-") {
		t.Fatal("c's log still holds its divergent tail")
	}
}
