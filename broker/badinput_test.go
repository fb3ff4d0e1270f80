package broker

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"mecha/internal/poll"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Frames a client would never send close that connection and nothing
// else: after each, a new client is served. A null client id (length -1)
// is fine; the test's own requests send one.
func TestBadFramesCloseTheConnection(t *testing.T) {
	const maxReq = 64 << 10
	b := startBroker(t, func(c *Config) { c.MaxRequestBytes = maxReq })
	sizeOnly := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	header := func(key, version int16) []byte {
		h := binary.BigEndian.AppendUint16(nil, uint16(key))
		h = binary.BigEndian.AppendUint16(h, uint16(version))
		h = binary.BigEndian.AppendUint32(h, 1) // correlation id
		return binary.BigEndian.AppendUint16(h, 0)
	}
	withSize := func(body []byte) []byte { return append(sizeOnly(uint32(len(body))), body...) }
	metadata := func(version int16) []byte {
		req := kmsg.NewPtrMetadataRequest()
		req.SetVersion(version)
		b, _ := (&rawConn{f: kmsg.NewRequestFormatter()}).frame(req)
		return b
	}
	// clientIDLength is a whole Metadata v9 request whose client id
	// length (-1, null, as kmsg writes it) is replaced by n.
	clientIDLength := func(n int16) []byte {
		b := metadata(9)
		binary.BigEndian.PutUint16(b[4+8:], uint16(n))
		return b
	}
	for _, tc := range []struct {
		name  string
		bytes []byte
		// halfClose ends the client's side after the bytes, as a client
		// that dies mid-frame does.
		halfClose bool
	}{
		{"negative size", sizeOnly(0xFFFFFFF0), false},
		// Nothing follows: the broker must not wait for more bytes.
		{"zero size", sizeOnly(0), false},
		{"size shorter than a header", withSize([]byte{0, 3, 0, 9, 0, 0, 0, 1, 0}), false},
		{"client id length -2", clientIDLength(-2), false},
		{"client id length -32768", clientIDLength(-32768), false},
		{"size over MaxRequestBytes", sizeOnly(maxReq + 1), false},
		{"frame shorter than a header", withSize([]byte{0, 3, 0}), false},
		{"client id past the frame", withSize(append(header(3, 0)[:8], 0, 50, 'x')), false},
		{"frame cut short by the client", metadata(9)[:len(metadata(9))-1], true},
		{"connection ends after the header", append(sizeOnly(100), header(3, 1)...), true},
		{"request body shorter than its fields", withSize(metadata(9)[4 : len(metadata(9))-1]), false},
		{"topic array longer than the body", withSize(append(header(3, 4), 0, 0, 0, 5)), false},
		{"unknown api key", withSize(header(999, 0)), false},
		{"api key with no handler (AlterConfigs)", withSize(header(33, 0)), false},
		{"unsupported Metadata version", metadata(12), false},
		{"Metadata below no version", withSize(header(3, -1)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			poll.Until(t, waitLong, "the last test's connections to end", func() bool { return openConns(b) == 0 })
			c := dialRaw(t, b.Addr())
			// A good request first: the connection was served until then.
			c.roundTrip(kmsg.NewPtrApiVersionsRequest())
			c.write(tc.bytes)
			if tc.halfClose {
				if err := c.nc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			c.expectClosed(tc.name)
			metadataWorks(t, b.Addr())
		})
	}
}

// An ApiVersions request at a version the broker does not know is
// answered (KIP-511) with UNSUPPORTED_VERSION and the v0 body listing what
// the broker serves; the connection stays open for the retry.
func TestApiVersionsUnsupportedVersion(t *testing.T) {
	b := startBroker(t)
	c := dialRaw(t, b.Addr())
	// A future version whose body this broker cannot parse.
	frame := binary.BigEndian.AppendUint16(nil, 18)
	frame = binary.BigEndian.AppendUint16(frame, 99)
	frame = binary.BigEndian.AppendUint32(frame, 42)
	frame = binary.BigEndian.AppendUint16(frame, 0)
	frame = append(frame, 0xde, 0xad, 0xbe, 0xef)
	c.write(append(binary.BigEndian.AppendUint32(nil, uint32(len(frame))), frame...))
	raw, err := c.readFrame()
	if err != nil {
		t.Fatalf("ApiVersions v99: %v, want an answer", err)
	}
	if corr := int32(binary.BigEndian.Uint32(raw)); corr != 42 {
		t.Fatalf("correlation id %d, want 42", corr)
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(0)
	if err := resp.ReadFrom(raw[4:]); err != nil {
		t.Fatalf("the answer is not a v0 ApiVersions body: %v", err)
	}
	if resp.ErrorCode != kerr.UnsupportedVersion.Code {
		t.Errorf("error code %d, want 35 (UNSUPPORTED_VERSION)", resp.ErrorCode)
	}
	got := map[int16][2]int16{}
	for _, k := range resp.ApiKeys {
		got[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
	}
	for key, v := range supportedAPIs {
		if got[key] != [2]int16{v.min, v.max} {
			t.Errorf("%s listed as %v, want %d-%d", kmsg.NameForKey(key), got[key], v.min, v.max)
		}
	}
	if len(got) != len(supportedAPIs) {
		t.Errorf("%d keys listed, the broker serves %d", len(got), len(supportedAPIs))
	}
	// The client retries at v3 on the same connection.
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(3)
	req.ClientSoftwareName, req.ClientSoftwareVersion = "test", "1"
	if r := c.roundTrip(req).(*kmsg.ApiVersionsResponse); r.ErrorCode != 0 || len(r.ApiKeys) != len(supportedAPIs) {
		t.Errorf("ApiVersions v3 after the retry: error %d, %d keys", r.ErrorCode, len(r.ApiKeys))
	}
	metadataWorks(t, b.Addr())
}

// A batch with a bad CRC is refused with CORRUPT_MESSAGE and one over
// max.message.bytes with MESSAGE_TOO_LARGE; nothing is written, and the
// same connection goes on serving.
func TestProduceRejectsBadBatches(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	createTopic(t, adm, "small", 1, map[string]*string{"max.message.bytes": strp("1000")})
	c := dialRaw(t, b.Addr())

	good := encodeBatch(batchSpec{producerID: -1, values: []string{"fine"}})
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)-2] ^= 0xff // a byte of the record value
	big := encodeBatch(batchSpec{producerID: -1, values: []string{strings.Repeat("x", 2000)}})
	truncated := good[:len(good)-3]
	oldMagic := append([]byte(nil), good...)
	oldMagic[16] = 1

	for _, tc := range []struct {
		name  string
		batch []byte
		want  *kerr.Error
	}{
		{"corrupted CRC", corrupt, kerr.CorruptMessage},
		{"over max.message.bytes", big, kerr.MessageTooLarge},
		{"batch shorter than its length", truncated, kerr.CorruptMessage},
		{"magic 1", oldMagic, kerr.UnsupportedForMessageFormat},
		{"good batch after a bad one", append(append([]byte(nil), good...), corrupt...), kerr.CorruptMessage},
	} {
		r := produceResult(t, c.roundTrip(produceReq("small", 0, tc.batch)))
		if r.ErrorCode != tc.want.Code {
			t.Errorf("%s: error %v, want %s", tc.name, kerr.ErrorForCode(r.ErrorCode), tc.want.Message)
		}
		if e := endOffsets(t, adm, "small")[0]; e != 0 {
			t.Fatalf("%s: log end %d, want 0: a refused batch was written", tc.name, e)
		}
		metadataWorks(t, b.Addr())
	}
	// The same connection and a new client are served.
	if r := produceResult(t, c.roundTrip(produceReq("small", 0, good))); r.ErrorCode != 0 || r.BaseOffset != 0 {
		t.Fatalf("good batch after the bad ones: error %v base %d", kerr.ErrorForCode(r.ErrorCode), r.BaseOffset)
	}
	metadataWorks(t, b.Addr())
}

// Only Produce may use frames up to MaxRequestBytes; any other request
// over 8 MiB closes the connection before its body is read.
func TestLargeFramesOnlyForProduce(t *testing.T) {
	b := startBroker(t)
	c := dialRaw(t, b.Addr())
	frame := binary.BigEndian.AppendUint32(nil, 9<<20)
	frame = binary.BigEndian.AppendUint16(frame, 3) // Metadata
	frame = binary.BigEndian.AppendUint16(frame, 9)
	c.write(frame)
	c.expectClosed("a 9 MiB Metadata request")
	metadataWorks(t, b.Addr())

	// A 9 MiB Produce is read whole and answered: its batch is over the
	// default max.message.bytes.
	createTopic(t, newAdmin(t, b.Addr()), "big", 1, nil)
	c = dialRaw(t, b.Addr())
	big := encodeBatch(batchSpec{producerID: -1, values: []string{strings.Repeat("x", 9<<20)}})
	if r := produceResult(t, c.roundTrip(produceReq("big", 0, big))); r.ErrorCode != kerr.MessageTooLarge.Code {
		t.Fatalf("9 MiB produce: %v, want MESSAGE_TOO_LARGE", kerr.ErrorForCode(r.ErrorCode))
	}
}

// openConns is how many connections the broker is serving.
func openConns(b *Broker) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// hugeCount is a uvarint of 2^32-1, the largest count a flexible request
// can claim.
var hugeCount = []byte{0xff, 0xff, 0xff, 0xff, 0x0f}

// withHugeCount returns req encoded as a whole frame with the byte at
// back bytes from the end, the count of an empty tag section, replaced by
// hugeCount.
func withHugeCount(t *testing.T, req kmsg.Request, back int) []byte {
	t.Helper()
	frame := kmsg.NewRequestFormatter(kmsg.FormatterClientID("trap")).AppendRequest(nil, req, 7)
	at := len(frame) - back
	if frame[at] != 0 {
		t.Fatalf("byte %d from the end is %#x, not an empty tag section", back, frame[at])
	}
	out := append(append(append([]byte(nil), frame[:at]...), hugeCount...), frame[at+1:]...)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out
}

// A flexible request claiming a count near 2^32 that its bytes cannot
// back is refused at once, wherever the count sits: kmsg would loop over
// the missing tags for minutes, holding a core after the client has left.
// The connection is closed and its goroutine ends.
func TestHugeCountsAreRefusedAtOnce(t *testing.T) {
	b := startBroker(t)
	apiVersions := kmsg.NewPtrApiVersionsRequest()
	apiVersions.SetVersion(3)
	apiVersions.ClientSoftwareName, apiVersions.ClientSoftwareVersion = "a", "b"
	metadata := kmsg.NewPtrMetadataRequest()
	metadata.SetVersion(9)
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr("t")
	metadata.Topics = append(metadata.Topics, mt)
	fetch := kmsg.NewPtrFetchRequest()
	fetch.SetVersion(12)
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "t"
	ft.Partitions = append(ft.Partitions, kmsg.NewFetchRequestTopicPartition())
	fetch.Topics = append(fetch.Topics, ft)
	fetch.Rack = "r"
	produce := produceReq("t", 0, nil)
	produce.Acks = 1

	// A Fetch whose ReplicaState tag (key 1, decoded by kmsg at any
	// version) holds a huge tag count of its own.
	nested := kmsg.NewRequestFormatter(kmsg.FormatterClientID("trap")).AppendRequest(nil, fetch, 7)
	nested = nested[:len(nested)-1]                 // the top-level tag count (0)
	nested = append(nested, 1, 1, 4+8+5)            // one tag: key 1, 17 bytes
	nested = append(nested, 0, 0, 0, 1)             // ID
	nested = append(nested, 0, 0, 0, 0, 0, 0, 0, 1) // Epoch
	nested = append(nested, hugeCount...)
	binary.BigEndian.PutUint32(nested, uint32(len(nested)-4))

	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		// Size, key 18 v3, correlation id, null client id, no header
		// tags, two empty compact strings, then the count: 22 bytes.
		{"ApiVersions v3 body tag count", append(binary.BigEndian.AppendUint32(nil, 18),
			0, 18, 0, 3, 0, 0, 0, 7, 0xff, 0xff, 0, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"ApiVersions v3 top-level tag count", withHugeCount(t, apiVersions, 1)},
		{"Metadata v9 topic tag count", withHugeCount(t, metadata, 5)},
		{"Fetch v12 partition tag count", withHugeCount(t, fetch, 6)},
		{"Fetch v12 nested tag count in a known tag", nested},
		{"Produce v9 partition tag count", withHugeCount(t, produce, 3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			poll.Until(t, waitLong, "the last test's connections to end", func() bool { return openConns(b) == 0 })
			c := dialRaw(t, b.Addr())
			c.roundTrip(kmsg.NewPtrApiVersionsRequest())
			poll.Until(t, waitLong, "the first connection to be counted", func() bool { return openConns(b) == 1 })
			c.write(tc.frame)
			c.expectClosed(tc.name)
			poll.Until(t, 5*time.Second, "the connection's goroutine to end", func() bool { return openConns(b) == 0 })
			metadataWorks(t, b.Addr())
		})
	}
}

// A produce with acks other than -1, 0 or 1 gets INVALID_REQUIRED_ACKS
// (21) for every partition, as Kafka answers, and nothing is written.
func TestProduceInvalidAcks(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	createTopic(t, adm, "acks", 2, nil)
	c := dialRaw(t, b.Addr())
	batch := encodeBatch(batchSpec{producerID: -1, values: []string{"v"}})
	for _, acks := range []int16{2, -2, 5, 32767, -32768} {
		req := produceReq("acks", 0, batch)
		req.Topics[0].Partitions = append(req.Topics[0].Partitions, req.Topics[0].Partitions[0])
		req.Topics[0].Partitions[1].Partition = 1
		req.Acks = acks
		resp := c.roundTrip(req).(*kmsg.ProduceResponse)
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 2 {
			t.Fatalf("acks=%d: response %+v, want both partitions answered", acks, resp)
		}
		for _, p := range resp.Topics[0].Partitions {
			if p.ErrorCode != kerr.InvalidRequiredAcks.Code {
				t.Errorf("acks=%d partition %d: %v, want INVALID_REQUIRED_ACKS", acks, p.Partition, kerr.ErrorForCode(p.ErrorCode))
			}
		}
		if e := endOffsets(t, adm, "acks"); e[0] != 0 || e[1] != 0 {
			t.Fatalf("acks=%d: end offsets %v, want nothing written", acks, e)
		}
	}
	// The same connection goes on serving the valid settings.
	for _, acks := range []int16{-1, 1} {
		req := produceReq("acks", 0, batch)
		req.Acks = acks
		if r := produceResult(t, c.roundTrip(req)); r.ErrorCode != 0 {
			t.Fatalf("acks=%d: %v", acks, kerr.ErrorForCode(r.ErrorCode))
		}
	}
}
