// Command brokercluster measures the broker cluster (--broker-cluster)
// against a single broker in the same run, with franz-go:
//
//   - produce rate with acks=all and consume rate, on a topic of three
//     partitions: three replicas on three runtimes' brokers, one replica
//     on a single runtime's broker (the floor);
//   - produce latency (p50, p99) at a fixed rate, acks=all, both;
//   - failover: the longest gap between acknowledgements while the
//     runtime leading a partition is killed with SIGKILL, under the same
//     fixed-rate load.
//
// Run it through bench/brokercluster.sh, which builds mecha.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/bench/internal/benchnet"
)

func main() {
	bin := flag.String("mecha", "mecha", "the mecha binary")
	records := flag.Int("records", 200000, "records produced (and consumed) per throughput run")
	size := flag.Int("size", 100, "record value bytes")
	rate := flag.Int("rate", 10000, "records a second in the latency and failover runs")
	dur := flag.Duration("duration", 10*time.Second, "length of the latency run")
	flag.Parse()
	if err := run(*bin, *records, *size, *rate, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "brokercluster:", err)
		os.Exit(1)
	}
}

type proc struct {
	cmd    *exec.Cmd
	broker string
}

func start(bin, dir string, args ...string) (*proc, error) {
	if os.Getenv("LOG_LEVEL") == "" {
		os.Setenv("LOG_LEVEL", "warn")
	}
	p := &proc{broker: fmt.Sprintf("127.0.0.1:%d", benchnet.FreePort())}
	_, port, _ := net.SplitHostPort(p.broker)
	args = append([]string{"run", "--app-id", "bench", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0",
		"--internal-port", "0", "--broker-port", port, "--log-level", os.Getenv("LOG_LEVEL"), "--data-dir", dir}, args...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, os.Stderr
	return p, p.cmd.Start()
}

func run(bin string, records, size, rate int, dur time.Duration) error {
	work, err := os.MkdirTemp("", "brokercluster")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	var procs []*proc
	defer func() {
		for _, p := range procs {
			_ = p.cmd.Process.Kill()
			_, _ = p.cmd.Process.Wait()
		}
	}()
	single, err := start(bin, filepath.Join(work, "single"))
	if err != nil {
		return err
	}
	procs = append(procs, single)
	gossip := benchnet.FreePort()
	var cluster []*proc
	for i := range 3 {
		args := []string{"--bootstrap-expect", "3", "--broker-cluster", "--cluster-id", "bench-broker"}
		if i == 0 {
			args = append(args, "--gossip-port", strconv.Itoa(gossip))
		} else {
			args = append(args, "--gossip-port", "0", "--join", fmt.Sprintf("127.0.0.1:%d", gossip))
		}
		p, err := start(bin, filepath.Join(work, fmt.Sprint("c", i)), args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		cluster = append(cluster, p)
	}
	ctx := context.Background()
	seeds := []string{cluster[0].broker, cluster[1].broker, cluster[2].broker}
	if err := ready(ctx, []string{single.broker}, 1); err != nil {
		return err
	}
	if err := ready(ctx, seeds, 3); err != nil {
		return err
	}
	value := make([]byte, size)
	fmt.Printf("records %d of %d bytes, 3 partitions, acks=all, franz-go\n", records, size)
	type side struct {
		name  string
		seeds []string
	}
	sides := []side{{"single broker", []string{single.broker}}, {"3 brokers RF=3", seeds}}
	for _, s := range sides {
		if err := createTopic(ctx, s.seeds, "tp"); err != nil {
			return err
		}
		prod, err := throughputProduce(ctx, s.seeds, records, value)
		if err != nil {
			return err
		}
		cons, err := throughputConsume(ctx, s.seeds, records)
		if err != nil {
			return err
		}
		fmt.Printf("%-16s produce %8.0f rec/s  consume %8.0f rec/s\n", s.name, prod, cons)
	}
	for _, s := range sides {
		if err := createTopic(ctx, s.seeds, "lat"); err != nil {
			return err
		}
		// Warm-up, not counted: the new topic's followers start fetching.
		if _, _, err := fixedRate(ctx, s.seeds, "lat", rate, time.Second, value, nil); err != nil {
			return err
		}
		lat, _, err := fixedRate(ctx, s.seeds, "lat", rate, dur, value, nil)
		if err != nil {
			return err
		}
		fmt.Printf("%-16s at %d rec/s: produce latency p50 %v p99 %v (%d records)\n", s.name, rate, pct(lat, 50), pct(lat, 99), len(lat))
	}
	// Failover: kill the runtime leading partition 0 of a busy topic.
	if err := createTopic(ctx, seeds, "fo"); err != nil {
		return err
	}
	victim, err := leaderOf(ctx, seeds, "fo", cluster)
	if err != nil {
		return err
	}
	kill := func() { _ = victim.cmd.Process.Kill() }
	_, gap, err := fixedRate(ctx, seeds, "fo", rate, 15*time.Second, value, kill)
	if err != nil {
		return err
	}
	fmt.Printf("failover: kill -9 of a partition leader's runtime at %d rec/s: longest gap between acknowledgements %v\n", rate, gap.Round(time.Millisecond))
	return nil
}

func client(seeds []string, opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
}

// ready waits until the brokers' metadata lists n brokers.
func ready(ctx context.Context, seeds []string, n int) error {
	cl, err := client(seeds)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(90 * time.Second)
	for {
		md, err := adm.BrokerMetadata(ctx)
		if err == nil && len(md.Brokers) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("brokers %v: %d of %d after 90 s (%v)", seeds, len(md.Brokers), n, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func createTopic(ctx context.Context, seeds []string, name string) error {
	cl, err := client(seeds)
	if err != nil {
		return err
	}
	defer cl.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := kadm.NewClient(cl).CreateTopic(ctx, 3, -1, nil, name)
		if err == nil {
			err = res.Err
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("create %s: %w", name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Until every partition has a leader.
	for time.Now().Before(deadline) {
		md, err := kadm.NewClient(cl).Metadata(ctx, name)
		ok := err == nil && len(md.Topics[name].Partitions) == 3
		for _, p := range md.Topics[name].Partitions {
			ok = ok && p.Leader >= 0 && p.Err == nil
		}
		if ok {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("topic %s has no leaders after 30 s", name)
}

func throughputProduce(ctx context.Context, seeds []string, n int, value []byte) (float64, error) {
	cl, err := client(seeds, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("tp"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var wg sync.WaitGroup
	var failed error
	var mu sync.Mutex
	t0 := time.Now()
	for range n {
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	return float64(n) / time.Since(t0).Seconds(), failed
}

func throughputConsume(ctx context.Context, seeds []string, n int) (float64, error) {
	cl, err := client(seeds, kgo.ConsumeTopics("tp"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	t0 := time.Now()
	got := 0
	for got < n {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		fs := cl.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		cancel()
		if timedOut {
			return 0, fmt.Errorf("consumed %d of %d", got, n)
		}
		if err := fs.Err0(); err != nil {
			return 0, err
		}
		got += fs.NumRecords()
	}
	return float64(got) / time.Since(t0).Seconds(), nil
}

// fixedRate produces rate records a second for d (in steps of 10 ms)
// with acks=all and returns each record's latency and the longest time
// without an acknowledgement; during, if set, runs a third of the way in.
func fixedRate(ctx context.Context, seeds []string, topic string, rate int, d time.Duration, value []byte, during func()) ([]time.Duration, time.Duration, error) {
	cl, err := client(seeds, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
		kgo.RecordDeliveryTimeout(60*time.Second), kgo.ProducerLinger(0))
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	var (
		mu      sync.Mutex
		lat     []time.Duration
		lastAck = time.Now()
		gap     time.Duration
		failed  error
		wg      sync.WaitGroup
	)
	per := rate / 100
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(d)
	fired := during == nil
	for now := range tick.C {
		if now.After(end) {
			break
		}
		if !fired && now.After(end.Add(-d*2/3)) {
			fired = true
			during()
		}
		for range per {
			wg.Add(1)
			sent := time.Now()
			cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
				at := time.Now()
				mu.Lock()
				if err != nil {
					failed = err
				} else {
					lat = append(lat, at.Sub(sent))
					if at.Sub(lastAck) > gap {
						gap = at.Sub(lastAck)
					}
					if at.After(lastAck) {
						lastAck = at
					}
				}
				mu.Unlock()
				wg.Done()
			})
		}
	}
	wg.Wait()
	if failed != nil {
		return lat, gap, fmt.Errorf("a record failed: %w", failed)
	}
	return lat, gap, nil
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}

// leaderOf is the runtime leading partition 0 of topic.
func leaderOf(ctx context.Context, seeds []string, topic string, procs []*proc) (*proc, error) {
	cl, err := client(seeds)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return nil, err
	}
	leader := md.Topics[topic].Partitions[0].Leader
	for _, b := range md.Brokers {
		if b.NodeID == leader {
			addr := net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
			for _, p := range procs {
				if p.broker == addr {
					return p, nil
				}
			}
		}
	}
	return nil, errors.New("no runtime leads partition 0")
}
