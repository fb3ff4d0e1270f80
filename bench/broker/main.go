// Command broker benchmarks mecha's Kafka-compatible broker against
// franz-go's in-memory fake cluster (kfake), side by side in one run.
//
// Each round starts a broker as its own process (`mecha broker` writing to
// a fresh data dir, or this program re-executed as a kfake server), then
// with franz-go:
//  1. produces -records records of -size bytes into a -partitions topic
//     (acks=all, idempotent: the kgo defaults) and reports records/s, MB/s;
//  2. consumes them all from the start and reports records/s, MB/s;
//  3. produces -lat-size records at a fixed -lat-rate for -lat-duration
//     with acks=all, one record per produce call, and reports p50/p99/p999
//     of the time from the call to the acknowledgement.
//
// It reports the broker process's peak RSS (VmHWM). Rounds alternate
// brokers; the summary gives medians and the mecha/kfake ratios.
//
//	go build -o bin/mecha ./cmd/mecha
//	go run ./bench/broker -mecha bin/mecha -rounds 3
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

type opts struct {
	mechaBin    string
	records     int
	size        int
	partitions  int
	latRate     int
	latSize     int
	latDuration time.Duration
	rounds      int
	fsync       string
	only        string
	compression string
}

type result struct {
	broker                 string
	produceRate, produceMB float64
	consumeRate, consumeMB float64
	produceCPU, consumeCPU float64 // broker CPU µs per 1,000 records
	p50, p99, p999         time.Duration
	latSent                int
	rssMB                  float64
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-kfake" {
		serveKfake()
		return
	}
	var o opts
	flag.StringVar(&o.mechaBin, "mecha", "bin/mecha", "the mecha binary")
	flag.IntVar(&o.records, "records", 1_000_000, "records to produce and consume")
	flag.IntVar(&o.size, "size", 100, "record value size in bytes")
	flag.IntVar(&o.partitions, "partitions", 3, "partitions of the throughput topic")
	flag.IntVar(&o.latRate, "lat-rate", 10_000, "records per second in the latency phase")
	flag.IntVar(&o.latSize, "lat-size", 1024, "record size in the latency phase")
	flag.DurationVar(&o.latDuration, "lat-duration", 10*time.Second, "length of the latency phase")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per broker, interleaved")
	flag.StringVar(&o.fsync, "fsync", "interval", "mecha's --fsync policy: interval or always")
	flag.StringVar(&o.only, "only", "", "run only this broker: mecha or kfake")
	flag.StringVar(&o.compression, "compression", "snappy", "producer batch compression: snappy (kgo's default), lz4, zstd or none")
	flag.Parse()

	var all []result
	for r := 0; r < o.rounds; r++ {
		for _, name := range []string{"mecha", "kfake"} {
			if o.only != "" && o.only != name {
				continue
			}
			res, err := round(o, name)
			if err != nil {
				fmt.Fprintf(os.Stderr, "round %d %s: %v\n", r+1, name, err)
				os.Exit(1)
			}
			fmt.Printf("round %d %-5s produce %9.0f rec/s %6.1f MB/s (broker %5.0f CPU µs/1k rec) | consume %9.0f rec/s %6.1f MB/s (broker %5.0f CPU µs/1k rec) | latency@%d/s p50 %s p99 %s p999 %s (%d sent) | peak RSS %.0f MB\n",
				r+1, name, res.produceRate, res.produceMB, res.produceCPU, res.consumeRate, res.consumeMB, res.consumeCPU, o.latRate,
				res.p50.Round(time.Microsecond), res.p99.Round(time.Microsecond), res.p999.Round(time.Microsecond), res.latSent, res.rssMB)
			all = append(all, res)
		}
	}
	summarize(all)
}

func summarize(all []result) {
	med := func(name string, f func(result) float64) float64 {
		var v []float64
		for _, r := range all {
			if r.broker == name {
				v = append(v, f(r))
			}
		}
		if len(v) == 0 {
			return 0
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	fields := []struct {
		name string
		f    func(result) float64
		unit string
	}{
		{"produce rec/s", func(r result) float64 { return r.produceRate }, ""},
		{"produce MB/s", func(r result) float64 { return r.produceMB }, ""},
		{"produce broker CPU µs/1k", func(r result) float64 { return r.produceCPU }, ""},
		{"consume rec/s", func(r result) float64 { return r.consumeRate }, ""},
		{"consume MB/s", func(r result) float64 { return r.consumeMB }, ""},
		{"consume broker CPU µs/1k", func(r result) float64 { return r.consumeCPU }, ""},
		{"latency p50 µs", func(r result) float64 { return float64(r.p50.Microseconds()) }, ""},
		{"latency p99 µs", func(r result) float64 { return float64(r.p99.Microseconds()) }, ""},
		{"latency p999 µs", func(r result) float64 { return float64(r.p999.Microseconds()) }, ""},
		{"peak RSS MB", func(r result) float64 { return r.rssMB }, ""},
	}
	fmt.Printf("\nmedians                  %15s %15s %8s\n", "mecha", "kfake", "ratio")
	for _, f := range fields {
		m, k := med("mecha", f.f), med("kfake", f.f)
		ratio := "-"
		if k > 0 && m > 0 {
			ratio = fmt.Sprintf("%.2f", m/k)
		}
		fmt.Printf("%-24s %15.1f %15.1f %8s\n", f.name, m, k, ratio)
	}
}

var addrRE = regexp.MustCompile(`addr=(\S+)`)

// startBroker starts the named broker as a process and returns its address.
func startBroker(o opts, name string) (*exec.Cmd, string, func(), error) {
	var cmd *exec.Cmd
	dir, err := os.MkdirTemp("", "bench-broker-")
	if err != nil {
		return nil, "", nil, err
	}
	switch name {
	case "mecha":
		cmd = exec.Command(o.mechaBin, "broker", "--port", "0", "--data-dir", dir, "--fsync", o.fsync, "--log-level", "warn")
	default:
		self, _ := os.Executable()
		cmd = exec.Command(self, "serve-kfake")
	}
	cmd.Stdout = os.Stderr
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", nil, err
	}
	if name == "mecha" {
		// The listening line is logged at info; keep warn for the rest.
		cmd.Args[len(cmd.Args)-1] = "info"
	}
	if err := cmd.Start(); err != nil {
		return nil, "", nil, err
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	cleanup := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				cleanup()
				return nil, "", nil, errors.New(name + " exited before listening")
			}
			if m := addrRE.FindStringSubmatch(l); m != nil && strings.Contains(l, "listening") {
				return cmd, m[1], cleanup, nil
			}
		case <-timeout:
			cleanup()
			return nil, "", nil, errors.New(name + " did not report its address")
		}
	}
}

func round(o opts, name string) (result, error) {
	res := result{broker: name}
	cmd, addr, cleanup, err := startBroker(o, name)
	if err != nil {
		return res, err
	}
	defer cleanup()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	admCl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return res, err
	}
	adm := kadm.NewClient(admCl)
	if _, err := adm.CreateTopic(ctx, int32(o.partitions), 1, nil, "bench"); err != nil {
		return res, fmt.Errorf("create topic: %w", err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "latency"); err != nil {
		return res, fmt.Errorf("create topic: %w", err)
	}
	admCl.Close()

	// 1. Produce.
	codec, err := compressionCodec(o.compression)
	if err != nil {
		return res, err
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("bench"),
		kgo.MaxBufferedRecords(1<<20), kgo.ProducerBatchMaxBytes(1<<20), kgo.ProducerBatchCompression(codec))
	if err != nil {
		return res, err
	}
	value := make([]byte, o.size)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	var failed atomic.Int64
	var firstErr atomic.Value
	pid := cmd.Process.Pid
	cpu0 := cpuSeconds(pid)
	start := time.Now()
	for i := 0; i < o.records; i++ {
		prod.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		return res, err
	}
	el := time.Since(start)
	prod.Close()
	if n := failed.Load(); n > 0 {
		return res, fmt.Errorf("%d records failed: %v", n, firstErr.Load())
	}
	res.produceCPU = (cpuSeconds(pid) - cpu0) * 1e6 / float64(o.records) * 1000
	res.produceRate = float64(o.records) / el.Seconds()
	res.produceMB = float64(o.records*o.size) / el.Seconds() / 1e6

	// 2. Consume.
	cons, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("bench"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return res, err
	}
	got := 0
	cpu0 = cpuSeconds(pid)
	start = time.Now()
	for got < o.records {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("consumed %d of %d: %w", got, o.records, err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err) })
		if ferr != nil {
			return res, ferr
		}
		got += fs.NumRecords()
	}
	el = time.Since(start)
	cons.Close()
	res.consumeCPU = (cpuSeconds(pid) - cpu0) * 1e6 / float64(o.records) * 1000
	res.consumeRate = float64(o.records) / el.Seconds()
	res.consumeMB = float64(o.records*o.size) / el.Seconds() / 1e6

	// 3. Latency at a fixed rate.
	lat, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("latency"), kgo.ProducerLinger(0))
	if err != nil {
		return res, err
	}
	lv := make([]byte, o.latSize)
	total := int(o.latDuration.Seconds() * float64(o.latRate))
	durs := make([]time.Duration, total)
	var acked atomic.Int64
	interval := time.Second / time.Duration(o.latRate)
	start = time.Now()
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		i := i
		sent := time.Now()
		lat.Produce(ctx, &kgo.Record{Value: lv}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			durs[i] = time.Since(sent)
			acked.Add(1)
		})
	}
	if err := lat.Flush(ctx); err != nil {
		return res, err
	}
	lat.Close()
	if n := failed.Load(); n > 0 {
		return res, fmt.Errorf("%d latency records failed: %v", n, firstErr.Load())
	}
	sort.Slice(durs, func(i, j int) bool { return durs[i] < durs[j] })
	res.latSent = total
	res.p50, res.p99, res.p999 = durs[total/2], durs[total*99/100], durs[total*999/1000]
	res.rssMB = peakRSS(cmd.Process.Pid)
	return res, nil
}

func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	case "none":
		return kgo.NoCompression(), nil
	}
	return kgo.NoCompression(), fmt.Errorf("-compression %q: want snappy, lz4, zstd or none", name)
}

// cpuSeconds is the user+system CPU time a process has used.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// peakRSS reads VmHWM of a process in MB.
func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// serveKfake runs a one-broker kfake cluster until SIGTERM, logging its
// address as the mecha broker does.
func serveKfake() {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "kfake listening addr=%s\n", c.ListenAddrs()[0])
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	<-sigs
	c.Close()
}
