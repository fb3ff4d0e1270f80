package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"mecha/internal/fsutil"
)

func FuzzValidateBatches(f *testing.F) {
	one := makeBatch(spec{n: 3})
	idem := makeBatch(spec{n: 2, pid: 5, epoch: 1, seq: 7, valueLen: 30})
	f.Add(one, 0, false)
	f.Add(cat(one, idem), 0, true)
	f.Add(cat(one, idem, makeBatch(spec{})), len(idem), false)
	f.Add(one[:len(one)-1], 0, false)
	f.Add(fixCRC(func() []byte { b := bytes.Clone(one); b[22] |= 0x10; return b }()), 0, true)
	f.Add([]byte{}, 0, false)
	// fixCRCs recomputes the CRC of every whole batch, so that the fuzzer
	// gets past the CRC check to the decode and the count checks.
	f.Fuzz(func(t *testing.T, data []byte, maxBatch int, fixCRCs bool) {
		if fixCRCs {
			data = fixAllCRCs(data)
		}
		buf := bytes.Clone(data)
		infos, err := ValidateBatches(buf, maxBatch)
		if !bytes.Equal(buf, data) {
			t.Fatal("ValidateBatches changed its input")
		}
		if err != nil {
			if !errors.Is(err, ErrCorruptBatch) && !errors.Is(err, ErrUnsupportedMagic) && !errors.Is(err, ErrBatchTooLarge) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		pos := 0
		for i, in := range infos {
			if in.Pos != pos {
				t.Fatalf("batch %d at %d, want %d", i, in.Pos, pos)
			}
			if in.NumRecords <= 0 || in.LastOffsetDelta != in.NumRecords-1 {
				t.Fatalf("batch %d accepted with %d records, last delta %d", i, in.NumRecords, in.LastOffsetDelta)
			}
			if maxBatch > 0 && in.Size > maxBatch {
				t.Fatalf("batch %d of %d bytes accepted over %d", i, in.Size, maxBatch)
			}
			// What the log scans later reads the same, CRC included.
			_, got, ok := scanBatch(data[pos:pos+in.Size], true)
			got.Pos = in.Pos
			if !ok || got != in {
				t.Fatalf("batch %d: scanBatch %+v %v, ValidateBatches %+v", i, got, ok, in)
			}
			pos += in.Size
		}
		if pos != len(data) {
			t.Fatalf("batches cover %d of %d bytes", pos, len(data))
		}
	})
}

// fixAllCRCs returns data with the CRC of every whole batch recomputed.
func fixAllCRCs(data []byte) []byte {
	data = bytes.Clone(data)
	for pos := 0; pos+batchHeaderLen <= len(data); {
		size := int64(int32(binary.BigEndian.Uint32(data[pos+lengthOffset:]))) + logOverhead
		if size < batchHeaderLen || int64(pos)+size > int64(len(data)) {
			break
		}
		fixCRC(data[pos:])
		pos += int(size)
	}
	return data
}

// validLog is a segment file as the log writes it.
func validLog(f *testing.F, batches ...[]byte) []byte {
	dir := f.TempDir()
	p, err := Open(dir, testConfig())
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range batches {
		if _, err := appendRaw(p, b); err != nil {
			f.Fatal(err)
		}
	}
	_ = p.Close()
	b, err := os.ReadFile(segPath(dir, 0, ".log"))
	if err != nil {
		f.Fatal(err)
	}
	return b
}

func FuzzSegmentRecovery(f *testing.F) {
	log := validLog(f, makeBatch(spec{n: 2}), makeBatch(spec{n: 1, pid: 3, seq: 0}), makeBatch(spec{n: 4, valueLen: 100}), makeBatch(spec{}))
	f.Add(log, false)
	f.Add(log, true)
	f.Add(log[:len(log)-1], false)
	f.Add(log[:len(log)-30], true)
	f.Add(append(bytes.Clone(log), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), false)
	f.Add(append(bytes.Clone(log), log[:70]...), true)
	f.Add(func() []byte { b := bytes.Clone(log); b[100] ^= 1; return b }(), false)
	f.Add([]byte{}, false)
	// fixCRCs recomputes the CRC of every whole batch, so that the fuzzer
	// also reaches the fields the CRC covers.
	f.Fuzz(func(t *testing.T, data []byte, fixCRCs bool) {
		if len(data) > 64<<10 {
			return
		}
		if fixCRCs {
			data = fixAllCRCs(data)
		}
		cfg := testConfig()
		dir := t.TempDir()
		path := segPath(dir, 0, ".log")
		mustWrite(t, path, data)

		// As a sealed segment without index files: a header scan that
		// may refuse the file but must not panic.
		if s, err := openSegment(dir, 0, false, cfg.IndexIntervalBytes, NewSegmentFiles(0)); err == nil {
			if s.size != int64(len(data)) {
				t.Fatalf("sealed segment opened with %d of %d bytes", s.size, len(data))
			}
			_ = s.file.retire()
		}

		// As the active segment: recovery keeps an intact prefix.
		p, err := Open(dir, cfg)
		if err != nil {
			t.Fatalf("Open of garbage in the active segment: %v", err)
		}
		defer func() { _ = p.Close() }()
		kept := mustRead(t, path)
		if !bytes.HasPrefix(data, kept) || p.Size() != int64(len(kept)) {
			t.Fatalf("recovery kept %d bytes (Size %d), not a prefix of the %d written", len(kept), p.Size(), len(data))
		}
		// Only batches a producer could have had accepted survive.
		if len(kept) > 0 {
			if _, err := ValidateBatches(bytes.Clone(kept), 0); err != nil {
				t.Fatalf("recovery kept a batch ValidateBatches refuses: %v", err)
			}
		}
		var n int
		for _, b := range readAll(t, p) { // readAll checks every CRC
			n += crcStart + len(b.payload)
		}
		if n != len(kept) {
			t.Fatalf("reads return %d bytes of the %d kept", n, len(kept))
		}
		start, end := p.Offsets()
		if start > end || start < 0 {
			t.Fatalf("Offsets %d-%d", start, end)
		}
		res, err := appendRaw(p, makeBatch(spec{n: 2}))
		if err != nil || res.Base != end {
			t.Fatalf("append after recovery: %+v, %v; want base %d", res, err, end)
		}
		_ = p.Close()
		p, err = Open(dir, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, e := p.Offsets(); e != end+2 {
			t.Fatalf("after reopen end %d, want %d", e, end+2)
		}
	})
}

func FuzzReplayOffsets(f *testing.F) {
	var rec []byte
	rec = appendOffset(rec, OffsetKey{"group", "topic", 3}, Committed{Offset: 42, LeaderEpoch: 1, Metadata: "m"})
	rec = appendOffset(rec, OffsetKey{"g", "", -1}, Committed{Offset: -1, LeaderEpoch: -1})
	rec = appendOffset(rec, OffsetKey{"", "t", 0}, Committed{Offset: 1 << 50})
	f.Add(rec, false)
	f.Add(rec, true)
	f.Add(rec[:len(rec)-1], false)
	f.Add(rec[:9], true)
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0}, true)
	f.Add([]byte{}, false)
	// fixCRCs recomputes the CRC of every whole record, so that the fuzzer
	// reaches the payload decoder.
	f.Fuzz(func(t *testing.T, data []byte, fixCRCs bool) {
		if fixCRCs {
			data = bytes.Clone(data)
			for pos := 0; pos+8 <= len(data); {
				n := int64(binary.BigEndian.Uint32(data[pos:]))
				if n < 4 || int64(pos)+4+n > int64(len(data)) {
					break
				}
				binary.BigEndian.PutUint32(data[pos+4:], crc32.Checksum(data[pos+8:pos+4+int(n)], fsutil.Castagnoli))
				pos += 4 + int(n)
			}
		}
		type entry struct {
			k OffsetKey
			c Committed
		}
		var got []entry
		good := ReplayOffsets(data, func(k OffsetKey, c Committed) { got = append(got, entry{k, c}) })
		if good < 0 || good > len(data) {
			t.Fatalf("intact prefix %d of %d bytes", good, len(data))
		}
		var enc []byte
		live := map[OffsetKey]Committed{}
		for _, e := range got {
			enc = appendOffset(enc, e.k, e.c)
			if e.c.Offset < 0 {
				delete(live, e.k)
			} else {
				live[e.k] = e.c
			}
		}
		if !bytes.Equal(enc, data[:good]) {
			t.Fatalf("re-encoding %d records gives %d bytes, not the %d replayed", len(got), len(enc), good)
		}
		// The store opened on these bytes holds what was replayed and cuts
		// the rest.
		dir := t.TempDir()
		mustWrite(t, filepath.Join(dir, "offsets.log"), data)
		s, err := OpenOffsetStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if size := fileSize(t, filepath.Join(dir, "offsets.log")); size != int64(good) {
			t.Fatalf("offsets.log %d bytes after open, want %d", size, good)
		}
		sameOffsets(t, snapshot(s), live)
	})
}
