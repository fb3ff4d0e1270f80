package broker

import (
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"mecha/internal/poll"
)

// A topic whose produce queue is full fails its produce requests at once
// with the retriable REQUEST_TIMED_OUT, while other topics, in the same
// request or not, and control requests go on.
func TestFullTopicQueueFailsFast(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.TopicQueueDepth = 1 })
	adm := newAdmin(t, b.Addr())
	createTopic(t, adm, "slow", 1, nil)
	createTopic(t, adm, "fast", 1, nil)
	c := dialRaw(t, b.Addr())
	batch := func(v string) []byte { return encodeBatch(batchSpec{producerID: -1, values: []string{v}}) }

	// An append in progress on "slow" holds its only queue slot, as a
	// partition stuck on a slow disk would.
	slow := b.topics.get("slow")
	slow.inflight.Add(1)
	r := produceResult(t, c.roundTrip(produceReq("slow", 0, batch("x"))))
	if r.ErrorCode != kerr.RequestTimedOut.Code {
		t.Fatalf("produce to the full topic: %v, want REQUEST_TIMED_OUT", kerr.ErrorForCode(r.ErrorCode))
	}
	// One request for both topics: only the full one fails.
	both := produceReq("fast", 0, batch("f1"))
	st := kmsg.NewProduceRequestTopic()
	st.Topic = "slow"
	sp := kmsg.NewProduceRequestTopicPartition()
	sp.Records = batch("s1")
	st.Partitions = append(st.Partitions, sp)
	both.Topics = append(both.Topics, st)
	resp := c.roundTrip(both).(*kmsg.ProduceResponse)
	codes := map[string]int16{}
	for _, rt := range resp.Topics {
		codes[rt.Topic] = rt.Partitions[0].ErrorCode
	}
	if codes["fast"] != 0 || codes["slow"] != kerr.RequestTimedOut.Code {
		t.Fatalf("produce to both topics: fast %v, slow %v; want fast written and slow REQUEST_TIMED_OUT",
			kerr.ErrorForCode(codes["fast"]), kerr.ErrorForCode(codes["slow"]))
	}
	if r := produceResult(t, c.roundTrip(produceReq("fast", 0, batch("f2")))); r.ErrorCode != 0 || r.BaseOffset != 1 {
		t.Fatalf("produce to the other topic: %v at %d", kerr.ErrorForCode(r.ErrorCode), r.BaseOffset)
	}
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(9)
	if mr := c.roundTrip(md).(*kmsg.MetadataResponse); len(mr.Topics) != 2 {
		t.Fatalf("metadata while a topic is full: %d topics, want 2", len(mr.Topics))
	}
	ends := endOffsets(t, adm, "slow")
	if ends[0] != 0 {
		t.Fatalf("the full topic took %d records", ends[0])
	}
	// The slot frees: the topic takes writes again.
	slow.inflight.Add(-1)
	if r := produceResult(t, c.roundTrip(produceReq("slow", 0, batch("y")))); r.ErrorCode != 0 {
		t.Fatalf("produce after the slot freed: %v", kerr.ErrorForCode(r.ErrorCode))
	}
}

// The same, end to end: many concurrent produce requests to one topic
// with a queue of one. Those that find the queue full are refused with
// REQUEST_TIMED_OUT and write nothing; the rest are written; a produce to
// another topic and a Metadata request are answered meanwhile.
func TestConcurrentProduceOverflowsTopicQueue(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.TopicQueueDepth = 1 })
	adm := newAdmin(t, b.Addr())
	createTopic(t, adm, "hot", 1, nil)
	createTopic(t, adm, "cold", 1, nil)
	const conns = 16
	cs := make([]*rawConn, conns)
	for i := range cs {
		cs[i] = dialRaw(t, b.Addr())
	}
	// 64 records per request, so an append takes a moment.
	values := make([]string, 64)
	for i := range values {
		values[i] = "a record of some length to make the append take a little while"
	}
	batch := encodeBatch(batchSpec{producerID: -1, values: values})
	var written, timedOut int
	// Rounds until one request found the queue full: overlap is certain
	// to happen but not in any one round.
	rounds := 0
	poll.Until(t, waitLong, "a produce request to find the topic queue full", func() bool {
		rounds++
		var wg sync.WaitGroup
		codes := make([]int16, conns)
		frames := make([][]byte, conns)
		corrs := make([]int32, conns)
		reqs := make([]*kmsg.ProduceRequest, conns)
		for i, c := range cs {
			reqs[i] = produceReq("hot", 0, batch)
			frames[i], corrs[i] = c.frame(reqs[i])
		}
		for i, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.nc.Write(frames[i]); err != nil {
					codes[i] = -2
					return
				}
				b, err := c.readFrame()
				if err != nil {
					codes[i] = -2
					return
				}
				resp := reqs[i].ResponseKind().(*kmsg.ProduceResponse)
				resp.SetVersion(9)
				if err := resp.ReadFrom(b[5:]); err != nil {
					codes[i] = -2
					return
				}
				codes[i] = resp.Topics[0].Partitions[0].ErrorCode
			}()
		}
		// Meanwhile, on its own connection: another topic and metadata.
		other := dialRaw(t, b.Addr())
		if r := produceResult(t, other.roundTrip(produceReq("cold", 0, batch))); r.ErrorCode != 0 {
			t.Errorf("produce to another topic during the burst: %v", kerr.ErrorForCode(r.ErrorCode))
		}
		metadataWorks(t, b.Addr())
		wg.Wait()
		full := false
		for _, code := range codes {
			switch code {
			case 0:
				written++
			case kerr.RequestTimedOut.Code:
				timedOut++
				full = true
			default:
				t.Fatalf("produce during the burst: code %d, want success or REQUEST_TIMED_OUT", code)
			}
		}
		return full
	})
	if end := endOffsets(t, adm, "hot")[0]; end != int64(written*len(values)) {
		t.Errorf("topic holds %d records; %d requests of %d were acknowledged", end, written, len(values))
	}
	t.Logf("%d rounds: %d requests written, %d refused", rounds, written, timedOut)
}
