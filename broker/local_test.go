package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// localValues decodes the batches Fetch returned for one partition with
// franz-go's decoder, and returns the values and offsets from offset on.
func localValues(t testing.TB, fp FetchedPartition, from int64) (values []string, offsets []int64) {
	t.Helper()
	rp := kmsg.NewFetchResponseTopicPartition()
	rp.Partition, rp.HighWatermark, rp.RecordBatches = fp.Partition, fp.HighWatermark, fp.Batches
	p, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: fp.Topic, Partition: fp.Partition, Offset: from}, &rp, kgo.DefaultDecompressor(), nil)
	if p.Err != nil {
		t.Fatalf("decoding %s/%d: %v", fp.Topic, fp.Partition, p.Err)
	}
	for _, r := range p.Records {
		values, offsets = append(values, string(r.Value)), append(offsets, r.Offset)
	}
	return values, offsets
}

// Records produced in-process are read back in order, by the in-process
// Fetch and by a Kafka client; records a Kafka client produced are read
// in-process: one log, whichever way in.
func TestLocalProduceFetchRoundTrip(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	var want []string
	for i := range 20 {
		vals := []string{fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)}
		base, err := b.Produce(ctx, "local", 0, encodeBatch(batchSpec{producerID: -1, values: vals}))
		if err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
		if base != int64(2*i) {
			t.Fatalf("produce %d: base offset %d, want %d", i, base, 2*i)
		}
		want = append(want, vals...)
	}
	cl := newKgo(t, b.Addr(), kgo.DefaultProduceTopic("local"))
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("from-kgo")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	want = append(want, "from-kgo")

	var got []string
	next := int64(0)
	for len(got) < len(want) {
		fs, err := b.Fetch(ctx, []FetchPartition{{Topic: "local", Partition: 0, Offset: next, MaxBytes: 100}}, time.Second)
		if err != nil || fs[0].Err != nil {
			t.Fatalf("fetch from %d: %v, %v", next, err, fs[0].Err)
		}
		if fs[0].HighWatermark != int64(len(want)) || fs[0].LogStart != 0 {
			t.Fatalf("fetch: high watermark %d, log start %d; want %d, 0", fs[0].HighWatermark, fs[0].LogStart, len(want))
		}
		vals, offs := localValues(t, fs[0], next)
		for i, o := range offs {
			if o != next+int64(i) {
				t.Fatalf("offsets %v from %d: not contiguous", offs, next)
			}
		}
		got = append(got, vals...)
		next += int64(len(vals))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("in-process fetch read %v, want %v", got, want)
	}

	consumer := newKgo(t, b.Addr(), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"local": {0: kgo.NewOffset().AtStart()}}))
	var viaKafka []string
	for len(viaKafka) < len(want) {
		fs := consumer.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) { viaKafka = append(viaKafka, string(r.Value)) })
	}
	if fmt.Sprint(viaKafka) != fmt.Sprint(want) {
		t.Fatalf("a Kafka client read %v, want %v", viaKafka, want)
	}
}

// Concurrent in-process producers to one partition each get their own
// offsets, and the log holds every record once.
func TestLocalConcurrentProduce(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	const writers, each = 8, 50
	var mu sync.Mutex
	bases := map[int64]string{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				v := fmt.Sprintf("w%d-%d", w, i)
				base, err := b.Produce(ctx, "many", 0, encodeBatch(batchSpec{producerID: -1, values: []string{v}}))
				if err != nil {
					t.Errorf("produce %s: %v", v, err)
					return
				}
				mu.Lock()
				if prev, dup := bases[base]; dup {
					t.Errorf("%s and %s both at offset %d", prev, v, base)
				}
				bases[base] = v
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fs, err := b.Fetch(ctx, []FetchPartition{{Topic: "many", Offset: 0, MaxBytes: 1 << 20}}, 0)
	if err != nil || fs[0].Err != nil {
		t.Fatalf("fetch: %v, %v", err, fs[0].Err)
	}
	vals, offs := localValues(t, fs[0], 0)
	if len(vals) != writers*each {
		t.Fatalf("log holds %d records, want %d", len(vals), writers*each)
	}
	for i, v := range vals {
		if bases[offs[i]] != v {
			t.Fatalf("offset %d holds %s, its producer was told %s", offs[i], v, bases[offs[i]])
		}
	}
}

// In-process produce refuses what the Produce API refuses, with the same
// Kafka errors.
func TestLocalProduceErrors(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	small := "10"
	createTopic(t, newAdmin(t, b.Addr()), "small", 1, map[string]*string{"max.message.bytes": &small})
	ok := encodeBatch(batchSpec{producerID: -1, values: []string{"x"}})
	corrupt := encodeBatch(batchSpec{producerID: -1, values: []string{"x"}})
	corrupt[len(corrupt)-1] ^= 0xff
	for _, tc := range []struct {
		name      string
		topic     string
		partition int32
		records   []byte
		want      error
	}{
		{"too large", "small", 0, ok, kerr.MessageTooLarge},
		{"no such partition", "small", 7, ok, kerr.UnknownTopicOrPartition},
		{"invalid topic name", "bad name", 0, ok, kerr.InvalidTopicException},
		{"bad crc", "fine", 0, corrupt, kerr.CorruptMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.Produce(ctx, tc.topic, tc.partition, append([]byte(nil), tc.records...))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Produce: %v, want %v", err, tc.want)
			}
		})
	}
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := b.Produce(cctx, "fine", 0, ok); !errors.Is(err, context.Canceled) {
		t.Errorf("Produce with an ended context: %v, want context.Canceled", err)
	}
}

// The idempotence rules of the log hold in-process: a retried batch is
// answered with its first offset and written once, a gap is refused.
func TestLocalProduceIdempotence(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	first := batchSpec{producerID: 7, values: []string{"a", "b"}}
	base, err := b.Produce(ctx, "idem", 0, encodeBatch(first))
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.Produce(ctx, "idem", 0, encodeBatch(first))
	if err != nil || again != base {
		t.Fatalf("retried batch: offset %d, %v; want the original %d", again, err, base)
	}
	if _, err := b.Produce(ctx, "idem", 0, encodeBatch(batchSpec{producerID: 7, sequence: 5, values: []string{"gap"}})); !errors.Is(err, kerr.OutOfOrderSequenceNumber) {
		t.Fatalf("sequence gap: %v, want OUT_OF_ORDER_SEQUENCE_NUMBER", err)
	}
	fs, err := b.Fetch(ctx, []FetchPartition{{Topic: "idem", MaxBytes: 1 << 20}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if vals, _ := localValues(t, fs[0], 0); fmt.Sprint(vals) != "[a b]" {
		t.Fatalf("log holds %v, want [a b] once", vals)
	}
}

// Fetch long-polls: it waits for an append to any partition it reads,
// returns at maxWait with nothing, and gives up when its context ends.
func TestLocalFetchLongPoll(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.DefaultPartitions = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := b.Produce(ctx, "lp", 0, encodeBatch(batchSpec{producerID: -1, values: []string{"old"}})); err != nil {
		t.Fatal(err)
	}
	parts := []FetchPartition{{Topic: "lp", Partition: 0, Offset: 1, MaxBytes: 1000}, {Topic: "lp", Partition: 1, Offset: 0, MaxBytes: 1000}}

	start := time.Now()
	fs, err := b.Fetch(ctx, parts, 50*time.Millisecond)
	if err != nil || len(fs[0].Batches)+len(fs[1].Batches) != 0 {
		t.Fatalf("fetch at the end of the log: %v, %+v; want nothing", err, fs)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("fetch with nothing to read returned after %s, want the 50ms wait", d)
	}

	done := make(chan []FetchedPartition, 1)
	go func() {
		fs, err := b.Fetch(ctx, parts, waitLong)
		if err != nil {
			t.Error(err)
		}
		done <- fs
	}()
	// Produce until the fetch returns: it may start waiting after the
	// first append.
	for i := 0; ; i++ {
		if _, err := b.Produce(ctx, "lp", 1, encodeBatch(batchSpec{producerID: -1, values: []string{"new" + strconv.Itoa(i)}})); err != nil {
			t.Fatal(err)
		}
		select {
		case fs := <-done:
			if vals, _ := localValues(t, fs[1], 0); len(vals) == 0 || vals[0] != "new0" {
				t.Fatalf("woken fetch read %v, want new0 first", vals)
			}
			goto woken
		case <-time.After(20 * time.Millisecond):
		}
	}
woken:
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		time.Sleep(20 * time.Millisecond)
		ccancel()
	}()
	if _, err := b.Fetch(cctx, parts[:1], waitLong); !errors.Is(err, context.Canceled) {
		t.Fatalf("fetch whose context ended: %v, want context.Canceled", err)
	}
	fs, err = b.Fetch(ctx, []FetchPartition{{Topic: "lp", Partition: 0, Offset: 99, MaxBytes: 1000}, {Topic: "nope", MaxBytes: 1000}}, waitLong)
	if err != nil || !errors.Is(fs[0].Err, kerr.OffsetOutOfRange) || !errors.Is(fs[1].Err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("bad offset and unknown topic: %v, %v, %v", err, fs[0].Err, fs[1].Err)
	}
}

// Request runs the protocol's handlers in-process; it refuses Produce,
// Fetch and versions the broker does not serve, and calls on a closed
// broker.
func TestLocalRequest(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(9)
	md.AllowAutoTopicCreation = true
	name := "created-in-process"
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = &name
	md.Topics = append(md.Topics, mt)
	resp, err := b.Request(ctx, "test", md)
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.(*kmsg.MetadataResponse); len(r.Topics) != 1 || r.Topics[0].ErrorCode != 0 || len(r.Topics[0].Partitions) != 1 {
		t.Fatalf("metadata: %+v", r.Topics)
	}

	if n, err := b.Partitions(ctx, name); err != nil || n != 1 {
		t.Errorf("Partitions(%s) = %d, %v; want 1", name, n, err)
	}
	if n, err := b.Partitions(ctx, "auto-created"); err != nil || n != 1 {
		t.Errorf("Partitions of a new topic = %d, %v; want 1 (created)", n, err)
	}
	if _, err := b.Partitions(ctx, "bad name"); !errors.Is(err, kerr.InvalidTopicException) {
		t.Errorf("Partitions of an invalid name: %v, want INVALID_TOPIC_EXCEPTION", err)
	}
	for _, req := range []kmsg.Request{produceReq("t", 0, nil), kmsg.NewPtrFetchRequest()} {
		req.SetVersion(9)
		if _, err := b.Request(ctx, "test", req); !errors.Is(err, ErrRequest) {
			t.Errorf("%s through Request: %v, want ErrRequest", kmsg.NameForKey(req.Key()), err)
		}
	}
	old := kmsg.NewPtrListOffsetsRequest() // v0 is not served
	if _, err := b.Request(ctx, "test", old); !errors.Is(err, ErrRequest) {
		t.Errorf("ListOffsets v0: %v, want ErrRequest", err)
	}
	b.Close()
	if _, err := b.Request(ctx, "test", md); !errors.Is(err, ErrClosed) {
		t.Errorf("Request on a closed broker: %v, want ErrClosed", err)
	}
	if _, err := b.Produce(ctx, "t", 0, encodeBatch(batchSpec{producerID: -1, values: []string{"x"}})); !errors.Is(err, ErrClosed) {
		t.Errorf("Produce on a closed broker: %v, want ErrClosed", err)
	}
}

// What Produce acknowledged is in the log after a restart.
func TestLocalProduceSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	b := startBroker(t, func(c *Config) { c.DataDir = dir; c.Log.SyncEveryWrite = true })
	for i := range 5 {
		if _, err := b.Produce(ctx, "kept", 0, encodeBatch(batchSpec{producerID: -1, values: []string{strconv.Itoa(i)}})); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = startBroker(t, func(c *Config) { c.DataDir = dir })
	fs, err := b.Fetch(ctx, []FetchPartition{{Topic: "kept", MaxBytes: 1 << 20}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if vals, _ := localValues(t, fs[0], 0); fmt.Sprint(vals) != "[0 1 2 3 4]" {
		t.Fatalf("after a restart the log holds %v", vals)
	}
}
