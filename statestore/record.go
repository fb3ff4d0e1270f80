package statestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"mecha/internal/fsutil"
)

// Log record layout. A record is one atomic unit: a single mutation or a
// whole transaction, so a torn record loses all of a transaction or none.
//
//	record  = length u32 | crc32c(payload) u32 | payload
//	payload = format u8 (1) | op count uvarint | op...
//	op      = kind u8 | slot u16 | seq uvarint | expires varint (unix ns, 0 none)
//	          | key length uvarint | key | value length uvarint | value
//
// A zero length marks the end of the written part of a segment (segments
// are preallocated with zeros).
const (
	recordHeader = 8
	recordFormat = 1
	// maxRecord bounds a record so that a corrupt length cannot make
	// recovery allocate without limit.
	maxRecord = 1 << 30
)

// Op kinds.
const (
	opSet          = 1
	opDelete       = 2
	opDeletePrefix = 3
	// opDeleteChildren deletes the keys right under a prefix: those that
	// start with it and hold no further "||" (Dapr's DeleteWithPrefix).
	opDeleteChildren = 4
	// opInstall replaces a slot with a replica's copy (statestore/cluster
	// installs one on a follower that cannot continue from its log): it
	// empties the slot and sets its seq to the op's, even below the
	// slot's; the opInstallItem ops after it in the same record are the
	// copy's keys, each with its version in the seq field. Recovery
	// applies an install wherever it finds one: the records after it are
	// newer.
	opInstall     = 5
	opInstallItem = 6
)

// errBadRecord is wrapped by errors about a record that cannot be decoded.
var errBadRecord = errors.New("bad log record")

// op is one mutation. Every mutation carries its slot and the slot's
// sequence number: replicas tail a slot by (slot, seq).
type op struct {
	kind    byte
	slot    uint16
	seq     uint64
	expires int64
	key     string
	value   []byte
}

// appendRecord encodes ops as one record onto dst.
func appendRecord(dst []byte, ops []op) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, recordHeader)...)
	dst = append(dst, recordFormat)
	dst = binary.AppendUvarint(dst, uint64(len(ops)))
	for i := range ops {
		o := &ops[i]
		dst = append(dst, o.kind)
		dst = binary.BigEndian.AppendUint16(dst, o.slot)
		dst = binary.AppendUvarint(dst, o.seq)
		dst = binary.AppendVarint(dst, o.expires)
		dst = binary.AppendUvarint(dst, uint64(len(o.key)))
		dst = append(dst, o.key...)
		dst = binary.AppendUvarint(dst, uint64(len(o.value)))
		dst = append(dst, o.value...)
	}
	payload := dst[start+recordHeader:]
	binary.BigEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, fsutil.Castagnoli))
	return dst
}

// decodePayload decodes a record payload whose CRC has been checked. Keys
// and values are copied: the payload buffer is reused.
func decodePayload(p []byte) ([]op, error) {
	if len(p) < 1 || p[0] != recordFormat {
		return nil, fmt.Errorf("%w: unknown format", errBadRecord)
	}
	p = p[1:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)) {
		return nil, fmt.Errorf("%w: bad op count", errBadRecord)
	}
	p = p[k:]
	ops := make([]op, 0, n)
	for i := uint64(0); i < n; i++ {
		if len(p) < 3 {
			return nil, fmt.Errorf("%w: op %d truncated", errBadRecord, i)
		}
		o := op{kind: p[0], slot: binary.BigEndian.Uint16(p[1:3])}
		p = p[3:]
		if o.kind < opSet || o.kind > opInstallItem || int(o.slot) >= NumSlots {
			return nil, fmt.Errorf("%w: op %d: bad kind or slot", errBadRecord, i)
		}
		var k int
		if o.seq, k = binary.Uvarint(p); k <= 0 {
			return nil, fmt.Errorf("%w: op %d: bad seq", errBadRecord, i)
		}
		p = p[k:]
		if o.expires, k = binary.Varint(p); k <= 0 {
			return nil, fmt.Errorf("%w: op %d: bad expiry", errBadRecord, i)
		}
		p = p[k:]
		kl, k := binary.Uvarint(p)
		if k <= 0 || (kl == 0) != (o.kind == opInstall) || kl > uint64(len(p)-k) {
			return nil, fmt.Errorf("%w: op %d: bad key length", errBadRecord, i)
		}
		p = p[k:]
		o.key = string(p[:kl])
		p = p[kl:]
		vl, k := binary.Uvarint(p)
		if k <= 0 || vl > uint64(len(p)-k) {
			return nil, fmt.Errorf("%w: op %d: bad value length", errBadRecord, i)
		}
		p = p[k:]
		if o.kind == opSet || o.kind == opInstallItem {
			o.value = append(make([]byte, 0, vl), p[:vl]...)
		}
		p = p[vl:]
		ops = append(ops, o)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBadRecord, len(p))
	}
	return ops, nil
}
