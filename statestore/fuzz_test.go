package statestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzOps are valid op lists: the seeds of the log decoders.
func fuzzOps() [][]op {
	return [][]op{
		{},
		{{kind: opSet, slot: 1, seq: 1, key: "a", value: []byte("1")}},
		{{kind: opSet, slot: NumSlots - 1, seq: 1 << 40, expires: time.Unix(1_700_000_000, 0).UnixNano(), key: "{t}||k", value: []byte{0, 0}}},
		{{kind: opSet, slot: 7, seq: 3, key: "empty"}},
		{{kind: opDelete, slot: 2, seq: 9, key: "gone"}},
		{{kind: opDeletePrefix, slot: 3, seq: 4, key: "a||"}},
		{{kind: opDeleteChildren, slot: 5, seq: 6, key: "a||b||"}},
		{
			{kind: opSet, slot: 1, seq: 2, key: "x", value: []byte("txn")},
			{kind: opDelete, slot: 1, seq: 3, key: "y"},
			{kind: opSet, slot: 900, seq: 1, expires: -1, key: "z", value: bytes.Repeat([]byte{0xff}, 130)},
		},
	}
}

func sameOps(a, b []op) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.kind != y.kind || x.slot != y.slot || x.seq != y.seq || x.expires != y.expires || x.key != y.key || !bytes.Equal(x.value, y.value) {
			return false
		}
	}
	return true
}

// FuzzDecodePayload checks that decodePayload never panics and that
// whatever it accepts survives a round trip through appendRecord.
func FuzzDecodePayload(f *testing.F) {
	for _, ops := range fuzzOps() {
		f.Add(appendRecord(nil, ops)[recordHeader:])
	}
	f.Add([]byte{})
	f.Add([]byte{recordFormat})
	f.Add([]byte{recordFormat, 0})
	f.Add([]byte{2, 0})
	f.Add([]byte{recordFormat, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, input []byte) {
		payload := bytes.Clone(input) // scribbled on below
		ops, err := decodePayload(payload)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("error %v does not wrap errBadRecord", err)
			}
			return
		}
		for i, o := range ops {
			if o.kind < opSet || o.kind > opDeleteChildren || int(o.slot) >= NumSlots {
				t.Fatalf("op %d decoded with kind %d slot %d", i, o.kind, o.slot)
			}
			if o.kind != opSet && o.value != nil {
				t.Fatalf("op %d of kind %d kept a value", i, o.kind)
			}
		}
		rec := appendRecord(nil, ops)
		if n := binary.BigEndian.Uint32(rec); int(n) != len(rec)-recordHeader {
			t.Fatalf("record length %d, payload %d bytes", n, len(rec)-recordHeader)
		}
		again, err := decodePayload(rec[recordHeader:])
		if err != nil {
			t.Fatalf("re-encoded ops do not decode: %v", err)
		}
		if !sameOps(ops, again) {
			t.Fatalf("round trip changed the ops:\n%+v\n%+v", ops, again)
		}
		// The encoding of decoded ops is canonical: a fixed point.
		if rec2 := appendRecord(nil, again); !bytes.Equal(rec, rec2) {
			t.Fatal("encoding is not a fixed point")
		}
		// Decoded keys and values are copies: the payload buffer is
		// reused by recovery.
		for i := range payload {
			payload[i] ^= 0xff
		}
		if !sameOps(ops, again) {
			t.Fatal("decoded ops alias the payload")
		}
	})
}

// fuzzSegments are segment contents as the log writes them, clean, with
// preallocated zeros, and torn.
func fuzzSegments() [][]byte {
	var all []byte
	for _, ops := range fuzzOps()[1:] {
		all = appendRecord(all, ops)
	}
	one := appendRecord(nil, fuzzOps()[1])
	return [][]byte{
		nil,
		one,
		all,
		append(bytes.Clone(all), make([]byte, 64)...),
		all[:len(all)-3],
		append(bytes.Clone(all[:len(all)-3]), make([]byte, 16)...),
		append(bytes.Clone(one), 0, 0, 0, 0, 0, 0, 0, 0, 1),
		make([]byte, recordHeader+1),
	}
}

// FuzzScanSegment checks that scanSegment never panics on any file, that
// what it calls valid ends inside the file with only zeros after it, that
// a torn tail is reported only for the last segment, and that the file
// cut where it says is a clean segment holding the same records.
func FuzzScanSegment(f *testing.F) {
	for _, seg := range fuzzSegments() {
		f.Add(seg, true)
		f.Add(seg, false)
	}
	dir := f.TempDir()
	path := filepath.Join(dir, segName(0))
	f.Fuzz(func(t *testing.T, data []byte, last bool) {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		scan := func(last bool) (int64, bool, int, error) {
			records := 0
			end, torn, err := scanSegment(path, last, func(ops []op) error {
				records++
				for i, o := range ops {
					if o.kind < opSet || o.kind > opDeleteChildren || int(o.slot) >= NumSlots {
						t.Fatalf("op %d handed out with kind %d slot %d", i, o.kind, o.slot)
					}
				}
				return nil
			})
			return end, torn, records, err
		}
		end, torn, records, err := scan(last)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if end < 0 || end > int64(len(data)) {
			t.Fatalf("end %d outside the file of %d bytes", end, len(data))
		}
		if torn && !last {
			t.Fatal("torn tail reported for a segment that is not the last")
		}
		if !torn {
			for i := end; i < int64(len(data)); i++ {
				if data[i] != 0 {
					t.Fatalf("valid data ends at %d but byte %d is %#x", end, i, data[i])
				}
			}
		}
		if !last {
			// What is clean as a middle segment is clean as the last.
			end2, torn2, records2, err := scan(true)
			if err != nil || torn2 || end2 != end || records2 != records {
				t.Fatalf("as last segment: end %d torn %v records %d err %v; as middle: end %d records %d", end2, torn2, records2, err, end, records)
			}
		}
		// Recovery zeroes the last segment after end (zeroTail) and
		// rotation cuts a sealed one there: either must be a clean
		// segment holding the same records.
		for _, clean := range [][]byte{append(bytes.Clone(data[:end]), make([]byte, int64(len(data))-end)...), data[:end]} {
			if err := os.WriteFile(path, clean, 0o644); err != nil {
				t.Fatal(err)
			}
			end2, torn2, records2, err := scan(false)
			if err != nil || torn2 || end2 != end || records2 != records {
				t.Fatalf("cleaned at %d (%d bytes): end %d torn %v records %d err %v; before: %d records", end, len(clean), end2, torn2, records2, err, records)
			}
		}
	})
}

// fuzzSnapshot builds a store with a few keys, snapshots it and returns
// the snapshot file.
func fuzzSnapshot(f *testing.F, writes []Write) []byte {
	dir := f.TempDir()
	e, err := Open(Options{Dir: dir, Logger: quiet(), SnapshotLogBytes: -1})
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close()
	for _, w := range writes {
		if _, err := e.Apply([]Write{w}); err != nil {
			f.Fatal(err)
		}
	}
	if err := e.Snapshot(); err != nil {
		f.Fatal(err)
	}
	snaps, err := listSnapshots(dir)
	if err != nil || len(snaps) != 1 {
		f.Fatalf("snapshots %v, %v", snaps, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, snapName(snaps[0])))
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzLoadSnapshot opens a store whose directory holds nothing but a
// snapshot file with the fuzz bytes: Open must not panic, and must either
// fail with an error wrapping ErrCorrupt or give a working store.
func FuzzLoadSnapshot(f *testing.F) {
	small := fuzzSnapshot(f, []Write{{Key: "a", Value: []byte("1")}})
	f.Add(small)
	f.Add(fuzzSnapshot(f, []Write{
		{Key: "a||x", Value: []byte("v")},
		{Key: "{t}||z", Value: []byte{}, TTLSeconds: 3600},
		{Key: "{t}||y", Value: bytes.Repeat([]byte("w"), 200)},
		{Key: "b", Delete: true},
	}))
	f.Add(small[:20])
	f.Add(small[:len(small)-1])
	f.Add([]byte(snapMagic))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		// One directory, emptied each time: a fresh one per input costs
		// more than the rest of the test.
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range ents {
			if err := os.Remove(filepath.Join(dir, de.Name())); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, snapName(0)), data, 0o644); err != nil {
			t.Fatal(err)
		}
		// No fsync: durability is not what this checks.
		opts := Options{Dir: dir, Fsync: FsyncNever, Logger: quiet(), SnapshotLogBytes: -1}
		e, err := Open(opts)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		defer func() { e.Close() }()
		n := e.Len()
		if items := e.Scan("", 0); len(items) != n {
			t.Fatalf("Scan found %d items, Len %d", len(items), n)
		}
		if _, err := e.Set(Write{Key: "fuzz-new", Value: []byte("x")}); err != nil {
			t.Fatalf("write to a recovered store: %v", err)
		}
		if err := e.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if e, err = Open(opts); err != nil {
			t.Fatalf("reopen: %v", err)
		}
		if it, ok, _ := e.Get("fuzz-new"); !ok || string(it.Value) != "x" {
			t.Fatal("a write after loading the snapshot was lost")
		}
	})
}

// FuzzLoadBlock feeds one snapshot block past its checksum, which
// FuzzLoadSnapshot's mutations rarely get through: loadBlock must not
// panic on any payload.
func FuzzLoadBlock(f *testing.F) {
	snap := fuzzSnapshot(f, []Write{
		{Key: "a", Value: []byte("1")},
		{Key: "{t}||z", Value: []byte{}, TTLSeconds: 3600},
		{Key: "{t}||y", Value: bytes.Repeat([]byte("w"), 200)},
	})
	for off := 20; off+8 <= len(snap); {
		n := int(binary.BigEndian.Uint32(snap[off:]))
		p := snap[off+8 : off+8+n]
		if len(p) > 5 || off == 20 { // the slots holding keys, and slot 0
			f.Add(bytes.Clone(p), binary.BigEndian.Uint16(p))
		}
		off += 8 + n
	}
	e := &Engine{opts: Options{Now: time.Now}, seed: maphash.MakeSeed()}
	f.Fuzz(func(t *testing.T, input []byte, slot uint16) {
		want := int(slot % NumSlots)
		for i := range e.slots {
			e.slots[i].m, e.slots[i].seq = newKeyMap(e.seed, 0), 0
		}
		payload := bytes.Clone(input) // scribbled on below
		if err := e.loadBlock(payload, want, time.Now().UnixNano()); err != nil {
			return
		}
		if seq, _ := binary.Uvarint(payload[2:]); e.SlotSeq(want) != seq {
			t.Fatalf("slot seq %d, block says %d", e.SlotSeq(want), seq)
		}
		before := e.Scan("", 0)
		for i := range before {
			before[i].Value = bytes.Clone(before[i].Value)
		}
		// Recovery reuses the block buffer for the next block: what was
		// loaded must not point into it.
		for i := range payload {
			payload[i] ^= 0xff
		}
		after := e.Scan("", 0)
		if len(after) != len(before) {
			t.Fatalf("%d items, then %d", len(before), len(after))
		}
		for i := range after {
			if after[i].Key != before[i].Key || !bytes.Equal(after[i].Value, before[i].Value) {
				t.Fatalf("item %d changed with the block buffer: %q=%q, then %q=%q", i, before[i].Key, before[i].Value, after[i].Key, after[i].Value)
			}
		}
	})
}
