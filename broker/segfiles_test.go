package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// openSegmentFDs counts this process's descriptors open on segment files
// (.log under dir/topics: the committed offsets' file is another .log),
// deleted ones included.
func openSegmentFDs(t testing.TB, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("needs /proc/self/fd: %v", err)
	}
	dir = filepath.Join(dir, "topics")
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		target = strings.TrimSuffix(target, " (deleted)")
		if strings.HasPrefix(target, dir+string(filepath.Separator)) && strings.HasSuffix(target, ".log") {
			n++
		}
	}
	return n
}

// With more partitions than MaxOpenSegmentFiles, producing to and
// fetching from every one of them works, and the broker never holds more
// segment files open than the bound once requests are done.
func TestOpenSegmentFilesAreBounded(t *testing.T) {
	const maxOpen, partitions, perPartition = 8, 40, 5
	dir := t.TempDir()
	// No periodic fsync: it takes files while it runs, which would make
	// the counts below racy.
	b := startBroker(t, func(c *Config) { c.DataDir, c.MaxOpenSegmentFiles, c.FlushInterval = dir, maxOpen, time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	createTopic(t, newAdmin(t, b.Addr()), "wide", partitions, nil)
	prod := newKgo(t, b.Addr(), kgo.DefaultProduceTopic("wide"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for round := 0; round < perPartition; round++ {
		for p := int32(0); p < partitions; p++ {
			r := &kgo.Record{Partition: p, Value: []byte(fmt.Sprintf("%d/%d", p, round))}
			if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("produce to partition %d: %v", p, err)
			}
		}
		if n := openSegmentFDs(t, dir); n > maxOpen {
			t.Fatalf("after produce round %d: %d segment files open, bound %d", round, n, maxOpen)
		}
	}
	if n := metric(t, b, "mecha_broker_open_segment_files"); n > maxOpen || n == 0 {
		t.Fatalf("open segment files gauge %v, bound %d", n, maxOpen)
	}
	cons := newKgo(t, b.Addr(), kgo.ConsumeTopics("wide"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[string]bool{}
	for len(seen) < partitions*perPartition {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("fetched %d of %d records: %v", len(seen), partitions*perPartition, err)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if want := fmt.Sprintf("%d/", r.Partition); !strings.HasPrefix(string(r.Value), want) {
				t.Fatalf("partition %d holds %q", r.Partition, r.Value)
			}
			seen[string(r.Value)] = true
		})
	}
	cons.Close() // its fetches hold files only while they read
	if n := openSegmentFDs(t, dir); n > maxOpen {
		t.Fatalf("after fetching every partition: %d segment files open, bound %d", n, maxOpen)
	}
}
