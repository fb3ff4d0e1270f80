// Command tailcache measures the broker's tail cache (Kuaishou's): tail
// consumers' delivery latency while a lagging consumer reads a large
// history, with the cache on and off, in the same run.
//
// For each mode it starts `mecha broker` (--tail-cache-bytes, 0 for off),
// optionally inside a memory cgroup (-cgroup-mb, cgroup v1 or v2; the page
// cache the broker's reads bring in counts there, as it does for a broker
// on a busy host), writes -history bytes of incompressible 1 KiB records
// to one topic, then runs a fixed-rate tail load (a producer at -rate
// records/s over 4 partitions, four consumers at the tail) for -duration
// alone, then again while a consumer reads the whole history from offset
// 0. The page cache is dropped before each phase when the machine allows
// (root). The figure is the tail records' delivery latency (consumer
// receipt minus produce timestamp), p50 and p99, of all the records of
// the first phase and of those produced during the lagging read in the
// second, and the lagging read's rate.
//
//	go run ./bench/tailcache -mecha /path/to/mecha
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"mecha/bench/internal/benchnet"
)

func main() {
	bin := flag.String("mecha", "mecha", "the mecha binary")
	history := flag.Int64("history", 1<<30, "bytes of history the lagging consumer reads")
	rate := flag.Int("rate", 5000, "tail records a second")
	dur := flag.Duration("duration", 10*time.Second, "length of each tail phase")
	cgroupMB := flag.Int("cgroup-mb", 512, "the broker's memory cgroup limit in MiB (0: none)")
	cache := flag.Int("cache-bytes", 512<<10, "the tail cache per partition when on")
	flag.Parse()
	for _, c := range []int{*cache, 0} {
		if err := run(*bin, c, *history, *rate, *dur, *cgroupMB); err != nil {
			fmt.Fprintln(os.Stderr, "tailcache:", err)
			os.Exit(1)
		}
	}
}

// cgroup puts pid in a memory cgroup of limit bytes; the returned func
// removes it. v2 (memory.max) or v1 (memory.limit_in_bytes).
func cgroup(pid int, limit int64) (func(), error) {
	for _, c := range []struct{ dir, limit, procs string }{
		{"/sys/fs/cgroup/mecha-tailcache", "memory.max", "cgroup.procs"},
		{"/sys/fs/cgroup/memory/mecha-tailcache", "memory.limit_in_bytes", "cgroup.procs"},
	} {
		if _, err := os.Stat(filepath.Dir(c.dir)); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(c.dir), c.limit)); err != nil && c.limit == "memory.max" {
			continue // not a v2 hierarchy with the memory controller
		}
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(c.dir, c.limit), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(c.dir, c.procs), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return nil, err
		}
		return func() { _ = os.Remove(c.dir) }, nil
	}
	return nil, errors.New("no memory cgroup hierarchy to use")
}

// dropCaches asks the kernel to drop the clean page cache (root only).
func dropCaches() bool {
	exec.Command("sync").Run()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0o644) == nil
}

func run(bin string, cacheBytes int, history int64, rate int, dur time.Duration, cgroupMB int) error {
	dir, err := os.MkdirTemp("", "tailcache")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	addr := fmt.Sprintf("127.0.0.1:%d", benchnet.FreePort())
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "broker", "--port", port, "--data-dir", dir, "--log-level", "warn",
		"--tail-cache-bytes", strconv.Itoa(cacheBytes), "--retention-ms", "-1")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() }()
	limit := "none"
	if cgroupMB > 0 {
		cleanup, err := cgroup(cmd.Process.Pid, int64(cgroupMB)<<20)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tailcache: no memory cgroup:", err)
		} else {
			defer cleanup()
			limit = fmt.Sprintf("%d MiB", cgroupMB)
		}
	}
	ctx := context.Background()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite(), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, "history"); err == nil {
			break
		} else if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := adm.CreateTopic(ctx, 4, 1, nil, "live"); err != nil {
		return err
	}
	// The history: 1 KiB records, random so that nothing compresses.
	pool := make([]byte, 1<<20)
	rand.Read(pool)
	var wg sync.WaitGroup
	var perr atomic.Value
	n := history / 1024
	start := time.Now()
	for i := range n {
		off := (i * 1031) % int64(len(pool)-1024)
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Topic: "history", Value: pool[off : off+1024]}, func(_ *kgo.Record, err error) {
			if err != nil {
				perr.Store(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if err, _ := perr.Load().(error); err != nil {
		return err
	}
	mode := "off"
	if cacheBytes > 0 {
		mode = fmt.Sprintf("on (%d KiB)", cacheBytes>>10)
	}
	fmt.Printf("tail cache %s, broker memory limit %s: %d MiB of history written in %v\n", mode, limit, history>>20, time.Since(start).Round(time.Millisecond))
	for _, lagging := range []bool{false, true} {
		dropped := dropCaches()
		p50, p99, got, lagRate, err := tailPhase(ctx, addr, rate, dur, lagging, n)
		if err != nil {
			return err
		}
		what := "tail alone          "
		if lagging {
			what = "with a lagging reader"
		}
		line := fmt.Sprintf("  %s: %d records, p50 %.2f ms, p99 %.2f ms", what, got, p50, p99)
		if lagging {
			line += fmt.Sprintf("; the lagging reader %.0f MiB/s", lagRate)
		}
		if !dropped {
			line += " (page cache not dropped)"
		}
		fmt.Println(line)
	}
	return nil
}

// tailPhase runs the tail load for dur, with a consumer reading the whole
// history meanwhile when lagging; it returns the tail delivery latency's
// p50 and p99 (ms), the records measured and the lagging read's MiB/s.
func tailPhase(ctx context.Context, addr string, rate int, dur time.Duration, lagging bool, history int64) (p50, p99 float64, got int, lagRate float64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	type sample struct {
		at  time.Time // when the record was produced
		lat float64   // ms until a consumer had it
	}
	var samples []sample
	var wg sync.WaitGroup
	consumers := make([]*kgo.Client, 4)
	for i := range consumers {
		c, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"live": {int32(i): kgo.NewOffset().AtEnd()}}),
			kgo.FetchMaxWait(100*time.Millisecond))
		if err != nil {
			return 0, 0, 0, 0, err
		}
		defer c.Close()
		consumers[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				fs := c.PollFetches(ctx)
				now := time.Now()
				fs.EachRecord(func(r *kgo.Record) {
					mu.Lock()
					samples = append(samples, sample{r.Timestamp, float64(now.Sub(r.Timestamp).Microseconds()) / 1000})
					mu.Unlock()
				})
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the consumers' first fetches at the end
	var lagBytes atomic.Int64
	lagStart := time.Now()
	var lagDone atomic.Int64
	if lagging {
		// Raw fetches, whose batches are counted, not decoded: the
		// reader's own CPU stays out of the way of the broker's.
		lc, err := kgo.NewClient(kgo.SeedBrokers(addr))
		if err != nil {
			return 0, 0, 0, 0, err
		}
		defer lc.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { lagDone.Store(int64(time.Since(lagStart))) }()
			var offset int64
			for ctx.Err() == nil && offset < history {
				req := kmsg.NewPtrFetchRequest()
				req.ReplicaID, req.MaxBytes, req.MaxWaitMillis = -1, 8<<20, 0
				rt := kmsg.NewFetchRequestTopic()
				rt.Topic = "history"
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.FetchOffset, rp.PartitionMaxBytes = offset, 8<<20
				rt.Partitions = append(rt.Partitions, rp)
				req.Topics = append(req.Topics, rt)
				resp, err := req.RequestWith(ctx, lc)
				if err != nil || len(resp.Topics) == 0 || len(resp.Topics[0].Partitions) == 0 {
					return
				}
				b := resp.Topics[0].Partitions[0].RecordBatches
				lagBytes.Add(int64(len(b)))
				// Batch headers: base offset, length, ..., last
				// offset delta at byte 23.
				for len(b) >= 27 {
					size := 12 + int(binary.BigEndian.Uint32(b[8:12]))
					if size > len(b) {
						break
					}
					offset = int64(binary.BigEndian.Uint64(b)) + int64(binary.BigEndian.Uint32(b[23:27])) + 1
					b = b[size:]
				}
			}
		}()
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ProducerLinger(0), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite(),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer prod.Close()
	value := make([]byte, 200)
	tick := time.NewTicker(time.Second / time.Duration(rate/100))
	defer tick.Stop()
	end := time.Now().Add(dur)
	for i := 0; time.Now().Before(end); {
		<-tick.C
		for range 100 {
			prod.Produce(ctx, &kgo.Record{Topic: "live", Partition: int32(i % 4), Value: value, Timestamp: time.Now()}, nil)
			i++
		}
	}
	if err := prod.Flush(ctx); err != nil {
		return 0, 0, 0, 0, err
	}
	time.Sleep(300 * time.Millisecond)
	took := time.Duration(lagDone.Load())
	if took == 0 {
		took = time.Since(lagStart)
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	// With a lagging reader, only the records produced while it read
	// count: the figure is the tail's latency under its load.
	var lats []float64
	for _, sm := range samples {
		if !lagging || (!sm.at.Before(lagStart) && sm.at.Before(lagStart.Add(took))) {
			lats = append(lats, sm.lat)
		}
	}
	if len(lats) == 0 {
		return 0, 0, 0, 0, errors.New("no tail record arrived")
	}
	slices.Sort(lats)
	q := func(f float64) float64 { return lats[min(len(lats)-1, int(f*float64(len(lats))))] }
	return q(0.50), q(0.99), len(lats), float64(lagBytes.Load()) / (1 << 20) / took.Seconds(), nil
}
