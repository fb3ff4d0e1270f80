package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"mecha/internal/fsutil"
)

// spec describes a test record batch. Zero values give a plain
// (non-idempotent) batch of one record stamped at ts 1000.
type spec struct {
	n        int   // records; 0 means 1
	ts       int64 // first timestamp; the max is ts+n-1
	pid      int64 // producer id; 0 means -1 (none)
	epoch    int16
	seq      int32
	valueLen int // bytes per record value; 0 means 8
	tag      byte
}

// makeBatch builds one v2 record batch with kmsg and fills in its length
// and CRC-32C, as a producer would send it (base offset 0).
func makeBatch(s spec) []byte {
	if s.n == 0 {
		s.n = 1
	}
	if s.ts == 0 {
		s.ts = 1000
	}
	if s.pid == 0 {
		s.pid = -1
		s.epoch = -1
		s.seq = -1
	}
	if s.valueLen == 0 {
		s.valueLen = 8
	}
	var recs []byte
	for i := 0; i < s.n; i++ {
		r := kmsg.Record{
			TimestampDelta64: int64(i),
			OffsetDelta:      int32(i),
			Key:              []byte(fmt.Sprintf("k%d", i)),
			Value:            bytes.Repeat([]byte{s.tag + byte(i)}, s.valueLen),
		}
		body := r.AppendTo(nil)
		r.Length = int32(len(body) - 1) // the zero length took one byte
		recs = r.AppendTo(recs)
	}
	rb := kmsg.RecordBatch{
		Length:          int32(49 + len(recs)),
		Magic:           2,
		LastOffsetDelta: int32(s.n - 1),
		FirstTimestamp:  s.ts,
		MaxTimestamp:    s.ts + int64(s.n) - 1,
		ProducerID:      s.pid,
		ProducerEpoch:   s.epoch,
		FirstSequence:   s.seq,
		NumRecords:      int32(s.n),
		Records:         recs,
	}
	return fixCRC(rb.AppendTo(nil))
}

// fixCRC recomputes the CRC of the batch at the start of b.
func fixCRC(b []byte) []byte {
	size := int(binary.BigEndian.Uint32(b[lengthOffset:])) + logOverhead
	binary.BigEndian.PutUint32(b[crcOffset:], crc32.Checksum(b[crcStart:size], fsutil.Castagnoli))
	return b
}

// cat concatenates batches into one produce request's records.
func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// tb is what the helpers need of a *testing.T or a *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// testConfig is a config with small segments and a dense index.
func testConfig() Config {
	c := DefaultConfig()
	c.SegmentBytes = 1 << 20
	c.IndexIntervalBytes = 64
	c.RetentionMs = -1
	return c
}

func openT(t testing.TB, dir string, cfg Config) *Partition {
	t.Helper()
	p, err := Open(dir, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// appendT validates and appends records, failing the test on error.
func appendT(t tb, p *Partition, records []byte) AppendResult {
	t.Helper()
	res, err := appendRaw(p, records)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return res
}

func appendRaw(p *Partition, records []byte) (AppendResult, error) {
	records = bytes.Clone(records)
	infos, err := ValidateBatches(records, p.cfg.MaxBatchBytes)
	if err != nil {
		return AppendResult{}, err
	}
	return p.Append(records, infos)
}

// stored is one batch as read back: its base offset, offset count and
// payload from the attributes on (what the producer sent, unchanged).
type stored struct {
	base    int64
	n       int32
	payload string
}

// splitBatches splits read data into batches, checking each CRC.
func splitBatches(t tb, data []byte) []stored {
	t.Helper()
	var out []stored
	for len(data) > 0 {
		base, info, ok := scanBatch(data, true)
		if !ok {
			t.Fatalf("read returned a bad batch: % x", data[:min(len(data), 64)])
		}
		out = append(out, stored{base: base, n: info.LastOffsetDelta + 1, payload: string(data[crcStart:info.Size])})
		data = data[info.Size:]
	}
	return out
}

// readAll reads the whole log from the log start, batch by batch.
func readAll(t tb, p *Partition) []stored {
	t.Helper()
	start, end := p.Offsets()
	var out []stored
	for off := start; off < end; {
		res, err := p.Read(off, 1)
		if err != nil {
			t.Fatalf("Read(%d): %v", off, err)
		}
		bs := splitBatches(t, res.Batches)
		if len(bs) != 1 {
			t.Fatalf("Read(%d, 1) returned %d batches, want 1", off, len(bs))
		}
		out = append(out, bs[0])
		off = bs[0].base + int64(bs[0].n)
	}
	return out
}

func payload(b []byte) string { return string(b[crcStart:]) }

func activeLog(t tb, dir string) string {
	t.Helper()
	bases, err := listSegments(dir)
	if err != nil || len(bases) == 0 {
		t.Fatalf("listSegments: %v %v", bases, err)
	}
	return segPath(dir, bases[len(bases)-1], ".log")
}

func fileSize(t tb, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func appendFile(t tb, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies the regular files of src into dst, as a crash would
// leave them (no Close, no index save).
func copyDir(t tb, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func wantErr(t tb, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
}
