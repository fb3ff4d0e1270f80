package inproc

import (
	"encoding/binary"
	"hash/crc32"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The fixed part of a v2 record batch, as Kafka lays it out: base offset
// (8), length (4), partition leader epoch (4), magic (1), CRC-32C (4),
// attributes (2), last offset delta (4), first and max timestamps (8+8),
// producer id (8), producer epoch (2), base sequence (4), record count (4).
const (
	batchHeaderLen = 61
	crcAt          = 17 // the CRC covers what follows it
	crcFrom        = 21
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordSize is the bytes r takes in a batch whose first timestamp is
// base and whose first record is offset delta 0, when r is the delta-th,
// length prefix included; body is the size without that prefix.
func recordSize(r *kgo.Record, base int64, delta int) (size, body int) {
	body = 1 + varintLen(r.Timestamp.UnixMilli()-base) + varintLen(int64(delta)) +
		bytesLen(r.Key) + bytesLen(r.Value) + varintLen(int64(len(r.Headers)))
	for _, h := range r.Headers {
		body += varintLen(int64(len(h.Key))) + len(h.Key) + bytesLen(h.Value)
	}
	return varintLen(int64(body)) + body, body
}

// appendBatch appends recs as one uncompressed v2 record batch, without a
// producer id, as a non-idempotent producer writes it; the broker assigns
// the offsets. Records without a timestamp get now's.
func appendBatch(dst []byte, recs []*kgo.Record, now time.Time) []byte {
	first, maxTs := int64(0), int64(0)
	for i, r := range recs {
		if r.Timestamp.IsZero() {
			r.Timestamp = now
		}
		ts := r.Timestamp.UnixMilli()
		if i == 0 {
			first, maxTs = ts, ts
		}
		maxTs = max(maxTs, ts)
	}
	start := len(dst)
	dst = binary.BigEndian.AppendUint64(dst, 0) // base offset: the broker's to set
	dst = append(dst, 0, 0, 0, 0)               // length, below
	dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
	dst = append(dst, 2)          // magic
	dst = append(dst, 0, 0, 0, 0) // CRC, below
	dst = binary.BigEndian.AppendUint16(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(recs)-1))
	dst = binary.BigEndian.AppendUint64(dst, uint64(first))
	dst = binary.BigEndian.AppendUint64(dst, uint64(maxTs))
	dst = binary.BigEndian.AppendUint64(dst, 0xffffffffffffffff) // producer id -1
	dst = binary.BigEndian.AppendUint16(dst, 0xffff)             // producer epoch -1
	dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)         // base sequence -1
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(recs)))
	for i, r := range recs {
		_, body := recordSize(r, first, i)
		dst = binary.AppendVarint(dst, int64(body))
		dst = append(dst, 0) // record attributes
		dst = binary.AppendVarint(dst, r.Timestamp.UnixMilli()-first)
		dst = binary.AppendVarint(dst, int64(i))
		dst = appendBytes(dst, r.Key)
		dst = appendBytes(dst, r.Value)
		dst = binary.AppendVarint(dst, int64(len(r.Headers)))
		for _, h := range r.Headers {
			dst = binary.AppendVarint(dst, int64(len(h.Key)))
			dst = append(dst, h.Key...)
			dst = appendBytes(dst, h.Value)
		}
	}
	b := dst[start:]
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[crcAt:], crc32.Checksum(b[crcFrom:], castagnoli))
	return dst
}

// appendBytes appends a varint length and b; a nil b is length -1 (null).
func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	return append(binary.AppendVarint(dst, int64(len(b))), b...)
}

func bytesLen(b []byte) int {
	if b == nil {
		return 1
	}
	return varintLen(int64(len(b))) + len(b)
}

// varintLen is the bytes of v as a zig-zag varint (binary.AppendVarint).
func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63)
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}
