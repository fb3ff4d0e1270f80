package storage

import (
	"bytes"
	"testing"
)

// The tail cache serves reads at the tail from memory and only those: a
// read older than what it holds goes to the files, and the bytes are the
// same either way. Truncation empties it.
func TestTailCache(t *testing.T) {
	cfg := testConfig()
	cfg.TailCacheBytes = 2000
	p := openT(t, t.TempDir(), cfg)
	uncached := openT(t, t.TempDir(), testConfig())
	for i := range 100 {
		b := makeBatch(spec{n: 2, valueLen: 100, tag: byte(i)})
		appendT(t, p, b)
		appendT(t, uncached, b)
	}
	first, ok := p.tail.start()
	if !ok || first <= 0 || p.tail.bytes > cfg.TailCacheBytes {
		t.Fatalf("cache from %d (%v), %d bytes: want the newest batches within %d bytes", first, ok, p.tail.bytes, cfg.TailCacheBytes)
	}
	read := func(q *Partition, offset int64) []byte {
		t.Helper()
		res, err := q.Read(offset, 1500)
		if err != nil {
			t.Fatal(err)
		}
		return res.Batches
	}
	for _, off := range []int64{first, first + 1, 199, 0, 57, first - 1} {
		tail0, file0 := p.files.Reads()
		got, want := read(p, off), read(uncached, off)
		if !bytes.HasPrefix(got, want) && !bytes.HasPrefix(want, got) || len(got) == 0 {
			t.Fatalf("read at %d: %d bytes from the cache, %d from the files, not the same batches", off, len(got), len(want))
		}
		tail1, file1 := p.files.Reads()
		if fromTail := off >= first; (tail1-tail0 == 1) != fromTail || (file1-file0 == 1) == fromTail {
			t.Fatalf("read at %d (cache from %d): %d from the cache, %d from the files", off, first, tail1-tail0, file1-file0)
		}
	}
	if err := p.Truncate(150); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.tail.start(); ok {
		t.Fatal("the cache outlived a truncation")
	}
	appendT(t, p, makeBatch(spec{n: 1, tag: 1}))
	if start, ok := p.tail.start(); !ok || start != 150 {
		t.Fatalf("cache after the truncation starts at %d (%v), want 150", start, ok)
	}
}
