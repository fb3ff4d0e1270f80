package broker

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFetchLongPollWaitsIdle: a fetch asking for more bytes than the
// partition holds waits its MaxWait for an append, without rereading the
// log in a loop, and answers with what there is.
func TestFetchLongPollWaitsIdle(t *testing.T) {
	b := startBroker(t)
	cl := newKgo(t, b.Addr(), kgo.AllowAutoTopicCreation())
	ctx := context.Background()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "quiet", Value: []byte("one small record")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, b.Addr())
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 11, 1000, 1<<20, 50<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = "quiet"
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = []kmsg.FetchRequestTopicPartition{rp}
	req.Topics = []kmsg.FetchRequestTopic{rt}
	before, start := cpuTime(t), time.Now()
	resp := c.roundTrip(req).(*kmsg.FetchResponse)
	waited, used := time.Since(start), cpuTime(t)-before
	if waited < 900*time.Millisecond {
		t.Fatalf("fetch answered after %s, want about its 1 s MaxWait (MinBytes not reached)", waited)
	}
	if used > 300*time.Millisecond {
		t.Fatalf("the waiting fetch used %s of CPU in %s: it spins instead of waiting for an append", used, waited)
	}
	if got := len(resp.Topics[0].Partitions[0].RecordBatches); got == 0 {
		t.Fatal("the answer after MaxWait lacks the record that was there")
	}
}

// TestDeleteThenAutoCreateStartsEmpty: a topic deleted while producers
// still write is auto-created again empty, not from the deleted files.
func TestDeleteThenAutoCreateStartsEmpty(t *testing.T) {
	b := startBroker(t)
	cl := newKgo(t, b.Addr(), kgo.AllowAutoTopicCreation())
	adm := newAdmin(t, b.Addr())
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "recycled", Value: []byte("old")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := adm.DeleteTopics(ctx, "recycled"); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "recycled", Value: []byte("new")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if ends := endOffsets(t, adm, "recycled"); ends[0] != 1 {
		t.Fatalf("end offset after delete and re-create = %d, want 1: the deleted records came back", ends[0])
	}
}
