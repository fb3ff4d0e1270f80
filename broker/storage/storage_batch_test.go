package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestValidateBatches(t *testing.T) {
	one := makeBatch(spec{n: 3, ts: 5000})
	two := makeBatch(spec{n: 1, ts: 7000, pid: 9, epoch: 2, seq: 4})
	mut := func(b []byte, fn func([]byte)) []byte {
		b = bytes.Clone(b)
		fn(b)
		return b
	}
	cases := []struct {
		name     string
		buf      []byte
		maxBatch int
		want     error
		infos    []BatchInfo
	}{
		{name: "single", buf: one, infos: []BatchInfo{
			{Pos: 0, Size: len(one), LastOffsetDelta: 2, FirstTimestamp: 5000, MaxTimestamp: 5002, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, NumRecords: 3},
		}},
		{name: "multiple", buf: cat(one, two), infos: []BatchInfo{
			{Pos: 0, Size: len(one), LastOffsetDelta: 2, FirstTimestamp: 5000, MaxTimestamp: 5002, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, NumRecords: 3},
			{Pos: len(one), Size: len(two), LastOffsetDelta: 0, FirstTimestamp: 7000, MaxTimestamp: 7000, ProducerID: 9, ProducerEpoch: 2, BaseSequence: 4, NumRecords: 1},
		}},
		{name: "transactional flag", buf: fixCRC(mut(one, func(b []byte) { b[22] |= 0x10 })), infos: []BatchInfo{
			{Pos: 0, Size: len(one), LastOffsetDelta: 2, FirstTimestamp: 5000, MaxTimestamp: 5002, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, NumRecords: 3, Transactional: true},
		}},
		{name: "max batch exactly", buf: one, maxBatch: len(one), infos: []BatchInfo{
			{Pos: 0, Size: len(one), LastOffsetDelta: 2, FirstTimestamp: 5000, MaxTimestamp: 5002, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, NumRecords: 3},
		}},
		{name: "empty", buf: nil, want: ErrCorruptBatch},
		{name: "bad crc", buf: mut(one, func(b []byte) { b[len(b)-1] ^= 1 }), want: ErrCorruptBatch},
		{name: "bad crc in second", buf: cat(one, mut(two, func(b []byte) { b[crcOffset] ^= 0x80 })), want: ErrCorruptBatch},
		{name: "magic 0", buf: mut(one, func(b []byte) { b[magicOffset] = 0 }), want: ErrUnsupportedMagic},
		{name: "magic 1", buf: mut(one, func(b []byte) { b[magicOffset] = 1 }), want: ErrUnsupportedMagic},
		{name: "magic 1 short", buf: mut(one[:20], func(b []byte) { b[magicOffset] = 1 }), want: ErrUnsupportedMagic},
		{name: "truncated header", buf: one[:40], want: ErrCorruptBatch},
		{name: "truncated before magic", buf: one[:10], want: ErrCorruptBatch},
		{name: "truncated records", buf: one[:len(one)-1], want: ErrCorruptBatch},
		{name: "trailing partial batch", buf: cat(one, two[:30]), want: ErrCorruptBatch},
		{name: "length negative", buf: mut(one, func(b []byte) { binary.BigEndian.PutUint32(b[lengthOffset:], 0xfffffff0) }), want: ErrCorruptBatch},
		{name: "length below header", buf: mut(one, func(b []byte) { binary.BigEndian.PutUint32(b[lengthOffset:], 48) }), want: ErrCorruptBatch},
		{name: "length huge", buf: mut(one, func(b []byte) { binary.BigEndian.PutUint32(b[lengthOffset:], 0x7fffffff) }), want: ErrCorruptBatch},
		{name: "length short of records", buf: fixCRC(mut(one, func(b []byte) {
			binary.BigEndian.PutUint32(b[lengthOffset:], binary.BigEndian.Uint32(b[lengthOffset:])-5)
		})), want: ErrCorruptBatch},
		{name: "num records above delta", buf: fixCRC(mut(one, func(b []byte) { binary.BigEndian.PutUint32(b[57:], 4) })), want: ErrCorruptBatch},
		{name: "num records below delta", buf: fixCRC(mut(one, func(b []byte) { binary.BigEndian.PutUint32(b[23:], 3) })), want: ErrCorruptBatch},
		{name: "zero records", buf: fixCRC(mut(one, func(b []byte) {
			binary.BigEndian.PutUint32(b[57:], 0)
			binary.BigEndian.PutUint32(b[23:], 0xffffffff)
		})), want: ErrCorruptBatch},
		{name: "over max batch", buf: one, maxBatch: len(one) - 1, want: ErrBatchTooLarge},
		{name: "second over max batch", buf: cat(two, one), maxBatch: len(two), want: ErrBatchTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			infos, err := ValidateBatches(tc.buf, tc.maxBatch)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if len(infos) != len(tc.infos) {
				t.Fatalf("%d infos, want %d", len(infos), len(tc.infos))
			}
			for i := range infos {
				if infos[i] != tc.infos[i] {
					t.Errorf("info %d = %+v, want %+v", i, infos[i], tc.infos[i])
				}
			}
		})
	}
}

// TestScanBatchAgrees checks that the header scan the log uses on stored
// batches reads what ValidateBatches read on the way in.
func TestScanBatchAgrees(t *testing.T) {
	for _, b := range [][]byte{
		makeBatch(spec{}),
		makeBatch(spec{n: 17, ts: 1 << 40, pid: 77, epoch: 3, seq: 100, valueLen: 300}),
		fixCRC(func() []byte { b := makeBatch(spec{n: 2}); b[22] |= 0x10; return b }()),
	} {
		infos, err := ValidateBatches(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, check := range []bool{true, false} {
			base, info, ok := scanBatch(b, check)
			if !ok || base != 0 {
				t.Fatalf("scanBatch(check=%v) = %d, %v", check, base, ok)
			}
			if info != infos[0] {
				t.Errorf("scanBatch(check=%v) = %+v, ValidateBatches = %+v", check, info, infos[0])
			}
		}
	}
	// A torn batch fails the checked scan but its header still reads.
	b := makeBatch(spec{n: 4})
	if _, _, ok := scanBatch(b[:len(b)-1], true); ok {
		t.Error("checked scan accepted a torn batch")
	}
	if _, _, ok := scanBatch(b[:batchHeaderLen], false); !ok {
		t.Error("header scan refused a whole header")
	}
	b[len(b)-1] ^= 0xff
	if _, _, ok := scanBatch(b, true); ok {
		t.Error("checked scan accepted a bad CRC")
	}
}
