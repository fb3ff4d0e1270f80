package broker

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// kgo's default producer is idempotent: many records over many
// partitions land once each, in the order produced per partition, at the
// offsets the producer was told.
func TestKgoIdempotentProducerOrder(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	const topic, parts, n = "idem", 6, 6000
	createTopic(t, adm, topic, parts, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()

	prod := newKgo(t, b.Addr(), kgo.DefaultProduceTopic(topic))
	type place struct {
		part int32
		off  int64
	}
	var mu sync.Mutex
	acked := map[place]int{}
	for i := 0; i < n; i++ {
		r := &kgo.Record{Key: []byte(strconv.Itoa(i % 50)), Value: []byte(strconv.Itoa(i))}
		prod.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce %s: %v", r.Value, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if prev, dup := acked[place{r.Partition, r.Offset}]; dup {
				t.Errorf("records %d and %s both acknowledged at %d/%d", prev, r.Value, r.Partition, r.Offset)
			}
			acked[place{r.Partition, r.Offset}], _ = strconv.Atoi(string(r.Value))
		})
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(acked) != n {
		t.Fatalf("%d of %d records acknowledged", len(acked), n)
	}

	cons := newKgo(t, b.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	byPart := map[int32][]*kgo.Record{}
	for got := 0; got < n; {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d: %v", got, n, err)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			byPart[r.Partition] = append(byPart[r.Partition], r)
			got++
		})
	}
	seen := map[string]bool{}
	for p, recs := range byPart {
		last := -1
		for i, r := range recs {
			v, _ := strconv.Atoi(string(r.Value))
			switch {
			case seen[string(r.Value)]:
				t.Fatalf("record %s is in the log twice", r.Value)
			case r.Offset != int64(i):
				t.Fatalf("partition %d: record %d at offset %d: offsets have a gap", p, i, r.Offset)
			case v <= last:
				t.Fatalf("partition %d: record %d after %d: not in produce order", p, v, last)
			case acked[place{p, r.Offset}] != v:
				t.Fatalf("partition %d offset %d holds %d; the producer was told %d", p, r.Offset, v, acked[place{p, r.Offset}])
			case r.ProducerID < 0:
				t.Fatalf("record %d has no producer id: the producer was not idempotent", v)
			}
			seen[string(r.Value)], last = true, v
		}
	}
	if len(byPart) != parts {
		t.Errorf("records landed in %d partitions, want all %d", len(byPart), parts)
	}
	for p, end := range endOffsets(t, adm, topic) {
		if end != int64(len(byPart[p])) {
			t.Errorf("partition %d ends at %d, consumed %d records", p, end, len(byPart[p]))
		}
	}
}

// A retried idempotent batch (same producer id, epoch and sequence) is
// answered with its original offset and not written again; a batch that
// skips sequence numbers is refused with OUT_OF_ORDER_SEQUENCE_NUMBER.
func TestIdempotentRetryAndSequenceGap(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	const topic = "dedup"
	createTopic(t, adm, topic, 1, nil)
	cl := newKgo(t, b.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()

	initReq := kmsg.NewPtrInitProducerIDRequest()
	initReq.TransactionTimeoutMillis = 60000
	raw, err := cl.Request(ctx, initReq)
	if err != nil {
		t.Fatal(err)
	}
	ir := raw.(*kmsg.InitProducerIDResponse)
	if err := kerr.ErrorForCode(ir.ErrorCode); err != nil || ir.ProducerID < 0 {
		t.Fatalf("InitProducerID: id %d, %v", ir.ProducerID, err)
	}
	pid, epoch := ir.ProducerID, ir.ProducerEpoch

	produce := func(seq int32, values ...string) kmsg.ProduceResponseTopicPartition {
		t.Helper()
		batch := encodeBatch(batchSpec{producerID: pid, producerEpoch: epoch, sequence: seq, values: values})
		resp, err := cl.Request(ctx, produceReq(topic, 0, batch))
		if err != nil {
			t.Fatal(err)
		}
		return produceResult(t, resp)
	}
	end := func() int64 { return endOffsets(t, adm, topic)[0] }

	if r := produce(0, "a", "b", "c"); r.ErrorCode != 0 || r.BaseOffset != 0 {
		t.Fatalf("first batch: error %v base %d, want offset 0", kerr.ErrorForCode(r.ErrorCode), r.BaseOffset)
	}
	if r := produce(3, "d"); r.ErrorCode != 0 || r.BaseOffset != 3 {
		t.Fatalf("second batch: error %v base %d, want offset 3", kerr.ErrorForCode(r.ErrorCode), r.BaseOffset)
	}
	// The producer did not see the answer to the first batch and sends it
	// again: the answer is the original offset, with no error.
	if r := produce(0, "a", "b", "c"); r.ErrorCode != 0 || r.BaseOffset != 0 {
		t.Fatalf("retried batch: error %v base %d, want no error and the original offset 0", kerr.ErrorForCode(r.ErrorCode), r.BaseOffset)
	}
	if r := produce(3, "d"); r.ErrorCode != 0 || r.BaseOffset != 3 {
		t.Fatalf("retried second batch: error %v base %d, want the original offset 3", kerr.ErrorForCode(r.ErrorCode), r.BaseOffset)
	}
	if e := end(); e != 4 {
		t.Fatalf("log end %d after retries, want 4: a retry was written again", e)
	}
	// Sequence 4 is next; 6 skips two.
	if r := produce(6, "gap"); r.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("batch with a sequence gap: error %v, want OUT_OF_ORDER_SEQUENCE_NUMBER", kerr.ErrorForCode(r.ErrorCode))
	}
	if e := end(); e != 4 {
		t.Fatalf("log end %d after an out-of-order batch, want 4", e)
	}
	if r := produce(4, "e"); r.ErrorCode != 0 || r.BaseOffset != 4 {
		t.Fatalf("batch at the next sequence: error %v base %d, want offset 4", kerr.ErrorForCode(r.ErrorCode), r.BaseOffset)
	}

	// What a consumer reads: each record once, in order.
	cons := newKgo(t, b.Addr(), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	var got []string
	for len(got) < 5 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %v: %v", got, err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if fmt.Sprint(got) != "[a b c d e]" {
		t.Fatalf("log holds %v, want [a b c d e]", got)
	}
}

// A restarted broker still answers a retry of a batch written before the
// restart with its original offset: producer state is rebuilt from the
// log.
func TestIdempotentRetryAfterRestart(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, func(c *Config) { c.DataDir = dir })
	adm := newAdmin(t, b.Addr())
	createTopic(t, adm, "dedup", 1, nil)
	cl := newKgo(t, b.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	batch := encodeBatch(batchSpec{producerID: 7, producerEpoch: 0, sequence: 0, values: []string{"x", "y"}})
	resp, err := cl.Request(ctx, produceReq("dedup", 0, batch))
	if err != nil {
		t.Fatal(err)
	}
	if r := produceResult(t, resp); r.ErrorCode != 0 {
		t.Fatal(kerr.ErrorForCode(r.ErrorCode))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := startBroker(t, func(c *Config) { c.DataDir = dir })
	raw := dialRaw(t, b2.Addr())
	r := produceResult(t, raw.roundTrip(produceReq("dedup", 0, batch)))
	if r.ErrorCode != 0 || r.BaseOffset != 0 {
		t.Fatalf("retry after restart: error %v base %d, want the original offset 0", kerr.ErrorForCode(r.ErrorCode), r.BaseOffset)
	}
	if e := endOffsets(t, newAdmin(t, b2.Addr()), "dedup")[0]; e != 2 {
		t.Fatalf("log end %d, want 2: the retry was written again after the restart", e)
	}
}
