package broker

import (
	"bytes"
	"errors"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// fuzzFrame encodes req as a request frame body (no size prefix), the
// header as kmsg's formatter writes it.
func fuzzFrame(req kmsg.Request, corr int32, clientID string) []byte {
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID)).AppendRequest(nil, req, corr)[4:]
}

// fuzzSeedRequests returns requests with some content for the APIs whose
// bodies have nested arrays; every other API is seeded empty.
func fuzzSeedRequests() []kmsg.Request {
	var out []kmsg.Request

	prod := kmsg.NewPtrProduceRequest()
	prod.Acks, prod.TimeoutMillis = -1, 5000
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = "t"
	pp := kmsg.NewProduceRequestTopicPartition()
	pp.Records = []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 49, 0, 0, 0, 0, 2}
	pt.Partitions = append(pt.Partitions, pp)
	prod.Topics = append(prod.Topics, pt)
	out = append(out, prod)

	fetch := kmsg.NewPtrFetchRequest()
	fetch.MaxBytes, fetch.ReplicaID, fetch.SessionEpoch = 1<<20, 0, 0
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "t"
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes, fp.CurrentLeaderEpoch, fp.LogStartOffset, fp.LastFetchedEpoch = 1<<20, 0, 0, 0
	ft.Partitions = append(ft.Partitions, fp, fp)
	fetch.Topics = append(fetch.Topics, ft)
	out = append(out, fetch)

	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr("t")
	meta.Topics = append(meta.Topics, mt)
	out = append(out, meta)

	commit := kmsg.NewPtrOffsetCommitRequest()
	commit.Group, commit.MemberID, commit.Generation = "g", "m", 3
	ct := kmsg.NewOffsetCommitRequestTopic()
	ct.Topic = "t"
	cp := kmsg.NewOffsetCommitRequestTopicPartition()
	cp.Offset, cp.Metadata, cp.LeaderEpoch = 42, kmsg.StringPtr("meta"), 0
	ct.Partitions = append(ct.Partitions, cp)
	commit.Topics = append(commit.Topics, ct)
	out = append(out, commit)

	join := kmsg.NewPtrJoinGroupRequest()
	join.Group, join.ProtocolType = "g", "consumer"
	join.SessionTimeoutMillis, join.RebalanceTimeoutMillis = 10000, 10000
	jp := kmsg.NewJoinGroupRequestProtocol()
	jp.Name, jp.Metadata = "range", []byte{0, 1, 0, 0, 0, 1, 0, 1, 't', 0, 0, 0, 0}
	join.Protocols = append(join.Protocols, jp)
	out = append(out, join)

	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID = "g", "m"
	sa := kmsg.NewSyncGroupRequestGroupAssignment()
	sa.MemberID, sa.MemberAssignment = "m", []byte{0, 1, 0, 0, 0, 0}
	sync.GroupAssignment = append(sync.GroupAssignment, sa)
	out = append(out, sync)

	create := kmsg.NewPtrCreateTopicsRequest()
	cr := kmsg.NewCreateTopicsRequestTopic()
	cr.Topic, cr.NumPartitions, cr.ReplicationFactor = "t", 3, 1
	cc := kmsg.NewCreateTopicsRequestTopicConfig()
	cc.Name, cc.Value = "retention.ms", kmsg.StringPtr("1000")
	cr.Configs = append(cr.Configs, cc)
	create.Topics = append(create.Topics, cr)
	out = append(out, create)

	lo := kmsg.NewPtrListOffsetsRequest()
	lo.ReplicaID = 0
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = "t"
	lp := kmsg.NewListOffsetsRequestTopicPartition()
	lp.Timestamp, lp.CurrentLeaderEpoch = 0, 0
	lt.Partitions = append(lt.Partitions, lp)
	lo.Topics = append(lo.Topics, lt)
	out = append(out, lo)

	dr := kmsg.NewPtrDeleteRecordsRequest()
	dt := kmsg.NewDeleteRecordsRequestTopic()
	dt.Topic = "t"
	dp := kmsg.NewDeleteRecordsRequestTopicPartition()
	dp.Offset = 5
	dt.Partitions = append(dt.Partitions, dp)
	dr.Topics = append(dr.Topics, dt)
	out = append(out, dr)

	dc := kmsg.NewPtrDescribeConfigsRequest()
	dcr := kmsg.NewDescribeConfigsRequestResource()
	dcr.ResourceType, dcr.ResourceName = kmsg.ConfigResourceTypeTopic, "t"
	dc.Resources = append(dc.Resources, dcr)
	out = append(out, dc)

	ip := kmsg.NewPtrInitProducerIDRequest()
	ip.TransactionTimeoutMillis, ip.ProducerID, ip.ProducerEpoch = 60000, 0, 0
	out = append(out, ip)

	av := kmsg.NewPtrApiVersionsRequest()
	av.ClientSoftwareName, av.ClientSoftwareVersion = "fuzz", "1"
	out = append(out, av)
	return out
}

// fuzzSeeds returns frames for every supported API at every supported
// version (the seeded bodies above where there is one, empty otherwise),
// plus versions just outside the range and an unknown key.
func fuzzSeeds() [][]byte {
	filled := map[int16]kmsg.Request{}
	for _, r := range fuzzSeedRequests() {
		filled[r.Key()] = r
	}
	keys := make([]int16, 0, len(supportedAPIs))
	for k := range supportedAPIs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	var out [][]byte
	corr := int32(1)
	for _, k := range keys {
		r := supportedAPIs[k]
		for v := r.min - 1; v <= r.max+1; v++ {
			if v < 0 {
				continue
			}
			req := filled[k]
			if req == nil {
				req = kmsg.RequestForKey(k)
			}
			req.SetVersion(v)
			out = append(out, fuzzFrame(req, corr, "fuzz-client"))
			corr++
		}
	}
	unknown := kmsg.RequestForKey(18)
	unknown.SetVersion(3)
	f := fuzzFrame(unknown, corr, "")
	f[0], f[1] = 0x7f, 0x00
	out = append(out, f)
	// A flexible header with tagged fields, and a null client id.
	av := kmsg.NewPtrApiVersionsRequest()
	av.SetVersion(3)
	hdr := []byte{0, 18, 0, 3, 0, 0, 0, 9, 0xff, 0xff, 2, 0, 1, 'x', 5, 3, 'a', 'b', 'c'}
	out = append(out, append(hdr, av.AppendTo(nil)...))
	return out
}

// maxFuzzFrame caps the frames fuzzed: the parser's cost must be bounded
// by its input, which a few KB shows as well as megabytes would.
const maxFuzzFrame = 4 << 10

func FuzzParseRequest(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	var ms runtime.MemStats
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > maxFuzzFrame {
			return
		}
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		h, req, err := parseRequest(frame)
		runtime.ReadMemStats(&ms)
		// kmsg allocates every array whole from its count, which the
		// pre-scan has checked element by element: up to ~73 bytes per
		// input byte (a Fetch v12 partitions array of minimal elements).
		// More than that is the parser's own doing.
		if alloc := ms.TotalAlloc - before; alloc > 128*uint64(len(frame))+64<<10 {
			t.Fatalf("parsing a %d-byte frame allocated %d bytes", len(frame), alloc)
		}
		if err != nil {
			if !errors.Is(err, errFrame) && !errors.Is(err, errUnsupported) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			if errors.Is(err, errUnsupported) && req != nil {
				if r, ok := supportedAPIs[h.key]; ok && h.version >= r.min && h.version <= r.max {
					t.Fatalf("supported %d v%d refused as unsupported: %v", h.key, h.version, err)
				}
			}
			return
		}
		if req == nil || req.Key() != h.key || req.GetVersion() != h.version {
			t.Fatalf("parsed %+v into %T", h, req)
		}
		if r, ok := supportedAPIs[h.key]; !ok || h.version < r.min || h.version > r.max {
			t.Fatalf("accepted unsupported %d v%d", h.key, h.version)
		}
		// What the parser accepted encodes to a frame it accepts again,
		// and to the same bytes the second time.
		body := req.AppendTo(nil)
		again := fuzzFrame(req, h.corr, h.clientID)
		h2, req2, err := parseRequest(again)
		if err != nil {
			t.Fatalf("re-encoded %s v%d does not parse: %v", kmsg.NameForKey(h.key), h.version, err)
		}
		if h2.key != h.key || h2.version != h.version || h2.corr != h.corr || h2.clientID != h.clientID {
			t.Fatalf("header %+v re-parsed as %+v", h, h2)
		}
		if !bytes.Equal(req2.AppendTo(nil), body) {
			t.Fatalf("%s v%d does not re-encode to the same body", kmsg.NameForKey(h.key), h.version)
		}
	})
}

// TestParseRequestHeaderTagCount: a flexible request header whose tag
// count is 2^31 with no tags after it is refused at once (kmsg.SkipTags
// would loop 2^31 times). Body counts: TestHugeCountsAreRefusedAtOnce.
func TestParseRequestHeaderTagCount(t *testing.T) {
	frame := []byte{0, 18, 0, 3, 0, 0, 0, 1, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x08}
	done := make(chan error, 1)
	go func() {
		_, _, err := parseRequest(frame)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errFrame) {
			t.Fatalf("err %v, want errFrame", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("parseRequest still looping over header tags")
	}
}

func TestParseRequestSeeds(t *testing.T) {
	for _, frame := range fuzzSeeds() {
		h, req, err := parseRequest(frame)
		r, supported := supportedAPIs[h.key]
		inRange := supported && h.version >= r.min && h.version <= r.max
		switch {
		case inRange && err != nil:
			t.Errorf("%s v%d: %v", kmsg.NameForKey(h.key), h.version, err)
		case !inRange && !errors.Is(err, errUnsupported):
			t.Errorf("key %d v%d outside the supported range: %v", h.key, h.version, err)
		case inRange && h.clientID != "fuzz-client" && h.key != 18:
			t.Errorf("%s v%d: client id %q", kmsg.NameForKey(h.key), h.version, h.clientID)
		case inRange && req.GetVersion() != h.version:
			t.Errorf("%s v%d parsed as v%d", kmsg.NameForKey(h.key), h.version, req.GetVersion())
		}
	}
}
