package storage

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAppendAssignsConsecutiveOffsets(t *testing.T) {
	p := openT(t, t.TempDir(), testConfig())
	reqs := [][]byte{
		makeBatch(spec{n: 3, tag: 1}),
		cat(makeBatch(spec{n: 2, tag: 2}), makeBatch(spec{n: 5, tag: 3})),
		makeBatch(spec{n: 1, tag: 4}),
	}
	wantBase := []int64{0, 3, 10}
	for i, r := range reqs {
		if res := appendT(t, p, r); res.Base != wantBase[i] || res.Duplicate {
			t.Fatalf("request %d: %+v, want base %d", i, res, wantBase[i])
		}
	}
	if start, end := p.Offsets(); start != 0 || end != 11 {
		t.Fatalf("Offsets = %d, %d; want 0, 11", start, end)
	}
	got := readAll(t, p)
	want := []stored{
		{0, 3, payload(makeBatch(spec{n: 3, tag: 1}))},
		{3, 2, payload(makeBatch(spec{n: 2, tag: 2}))},
		{5, 5, payload(makeBatch(spec{n: 5, tag: 3}))},
		{10, 1, payload(makeBatch(spec{n: 1, tag: 4}))},
	}
	if len(got) != len(want) {
		t.Fatalf("read %d batches, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("batch %d: base %d n %d, want base %d n %d (payload equal: %v)", i, got[i].base, got[i].n, want[i].base, want[i].n, got[i].payload == want[i].payload)
		}
	}
	var size int64
	for _, r := range reqs {
		size += int64(len(r))
	}
	if p.Size() != size {
		t.Errorf("Size = %d, want %d", p.Size(), size)
	}
}

func TestReadFromAnyOffsetInsideABatch(t *testing.T) {
	cfg := testConfig()
	// 0 and 1: an index entry per batch; 4096: one for the segment.
	for _, interval := range []int64{0, 1, 4096} {
		cfg.IndexIntervalBytes = interval
		p := openT(t, t.TempDir(), cfg)
		sizes := []int{4, 1, 7, 2, 3}
		var bases []int64
		for i, n := range sizes {
			bases = append(bases, appendT(t, p, makeBatch(spec{n: n, tag: byte(i)})).Base)
		}
		for i, n := range sizes {
			for off := bases[i]; off < bases[i]+int64(n); off++ {
				// Read twice: the second read of an offset goes through the
				// hint the first one left when reading on.
				for _, maxBytes := range []int{1, 1 << 20} {
					res, err := p.Read(off, maxBytes)
					if err != nil {
						t.Fatalf("interval %d: Read(%d): %v", interval, off, err)
					}
					bs := splitBatches(t, res.Batches)
					if len(bs) == 0 || bs[0].base != bases[i] {
						t.Fatalf("interval %d: Read(%d) first batch %+v, want base %d", interval, off, bs, bases[i])
					}
					if maxBytes > 1 && len(bs) != len(sizes)-i {
						t.Fatalf("interval %d: Read(%d, big) returned %d batches, want %d", interval, off, len(bs), len(sizes)-i)
					}
					if res.HighWatermark != 17 || res.LogStart != 0 {
						t.Fatalf("Read(%d) hw %d start %d", off, res.HighWatermark, res.LogStart)
					}
				}
			}
		}
	}
}

func TestReadMaxBytesKeepsWholeBatches(t *testing.T) {
	p := openT(t, t.TempDir(), testConfig())
	small := makeBatch(spec{n: 2, valueLen: 10})
	s := len(small)
	for i := 0; i < 4; i++ {
		appendT(t, p, small)
	}
	big := makeBatch(spec{n: 1, valueLen: 10000})
	appendT(t, p, big) // offset 8
	appendT(t, p, small)
	cases := []struct {
		offset      int64
		maxBytes    int
		wantBatches int
		wantBytes   int
	}{
		{0, 1, 1, s},             // below one batch: the first anyway (KIP-74)
		{0, s, 1, s},             // exactly one
		{0, 2*s - 1, 1, s},       // not two
		{0, 2 * s, 2, 2 * s},     // exactly two
		{3, 3 * s, 3, 3 * s},     // from inside batch 1
		{0, 4*s + 100, 4, 4 * s}, // the big batch does not fit
		{7, 1, 1, s},             // last small batch before the big one
		{8, 1, 1, len(big)},      // the big batch whole, far above maxBytes
		{8, len(big) + s, 2, len(big) + s},
		{9, 1 << 20, 1, s},
		{0, 1 << 20, 6, 5*s + len(big)},
		{11, 1 << 20, 0, 0}, // at the end
	}
	for _, tc := range cases {
		res, err := p.Read(tc.offset, tc.maxBytes)
		if err != nil {
			t.Fatalf("Read(%d, %d): %v", tc.offset, tc.maxBytes, err)
		}
		bs := splitBatches(t, res.Batches)
		if len(bs) != tc.wantBatches || len(res.Batches) != tc.wantBytes {
			t.Errorf("Read(%d, %d): %d batches, %d bytes; want %d, %d", tc.offset, tc.maxBytes, len(bs), len(res.Batches), tc.wantBatches, tc.wantBytes)
		}
	}
}

func TestReadAcrossSegmentRolls(t *testing.T) {
	cfg := testConfig()
	cfg.SegmentBytes = 400
	dir := t.TempDir()
	p := openT(t, dir, cfg)
	var want []stored
	for i := 0; i < 30; i++ {
		b := makeBatch(spec{n: 1 + i%4, tag: byte(i), valueLen: 20 + i})
		res := appendT(t, p, b)
		want = append(want, stored{res.Base, int32(1 + i%4), payload(b)})
	}
	if len(p.segs) < 5 {
		t.Fatalf("only %d segments with 400-byte segments", len(p.segs))
	}
	for _, s := range p.segs[:len(p.segs)-1] {
		if s.size > cfg.SegmentBytes {
			t.Errorf("segment %d holds %d bytes, above segment.bytes", s.base, s.size)
		}
	}
	check := func(p *Partition) {
		t.Helper()
		// A consumer reading on with a large maxBytes sees every batch
		// once, in order, crossing each roll.
		var got []stored
		_, end := p.Offsets()
		for off := int64(0); off < end; {
			res, err := p.Read(off, 1<<20)
			if err != nil {
				t.Fatalf("Read(%d): %v", off, err)
			}
			bs := splitBatches(t, res.Batches)
			if len(bs) == 0 {
				t.Fatalf("Read(%d) empty below the end %d", off, end)
			}
			got = append(got, bs...)
			off = bs[len(bs)-1].base + int64(bs[len(bs)-1].n)
		}
		if len(got) != len(want) {
			t.Fatalf("read %d batches, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("batch %d differs: got base %d, want %d", i, got[i].base, want[i].base)
			}
		}
		// Every offset, including each segment's first and last.
		for i, w := range want {
			for off := w.base; off < w.base+int64(w.n); off++ {
				res, err := p.Read(off, 1)
				if err != nil {
					t.Fatalf("Read(%d): %v", off, err)
				}
				if bs := splitBatches(t, res.Batches); len(bs) != 1 || bs[0] != want[i] {
					t.Fatalf("Read(%d, 1) = %+v, want batch %d", off, bs, i)
				}
			}
		}
	}
	check(p)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	check(openT(t, dir, cfg))
}

func TestReadBounds(t *testing.T) {
	cfg := testConfig()
	cfg.SegmentBytes = 200
	p := openT(t, t.TempDir(), cfg)
	for i := 0; i < 10; i++ {
		appendT(t, p, makeBatch(spec{n: 2}))
	}
	if _, err := p.DeleteRecords(5); err != nil {
		t.Fatal(err)
	}
	res, err := p.Read(20, 100)
	if err != nil || len(res.Batches) != 0 || res.HighWatermark != 20 || res.LogStart != 5 {
		t.Fatalf("Read at end = %+v, %v", res, err)
	}
	for _, off := range []int64{-1, 0, 4, 21, 1 << 40} {
		res, err := p.Read(off, 100)
		wantErr(t, err, ErrOffsetOutOfRange)
		if res.HighWatermark != 20 || res.LogStart != 5 {
			t.Errorf("Read(%d) out of range reports hw %d start %d", off, res.HighWatermark, res.LogStart)
		}
	}
	res, err = p.Read(5, 1)
	if bs := splitBatches(t, res.Batches); err != nil || len(bs) != 1 || bs[0].base != 4 {
		t.Fatalf("Read(5) = %+v, %v; want the batch at 4 holding it", bs, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = p.Read(5, 1)
	wantErr(t, err, ErrClosed)
	_, err = appendRaw(p, makeBatch(spec{}))
	wantErr(t, err, ErrClosed)
}

func TestWaitSignalsOnAppend(t *testing.T) {
	p := openT(t, t.TempDir(), testConfig())
	ch := make(chan struct{}, 1)
	if !p.Wait(0, ch) {
		t.Fatal("Wait at the end of an empty log did not register")
	}
	select {
	case <-ch:
		t.Fatal("signalled before any append")
	default:
	}
	appendT(t, p, makeBatch(spec{n: 2}))
	select {
	case <-ch:
	default:
		t.Fatal("append did not signal the waiter")
	}
	if p.Wait(1, ch) {
		t.Fatal("Wait below the end registered")
	}
	// A waiter that gave up is not signalled.
	if !p.Wait(2, ch) {
		t.Fatal("Wait at the end did not register")
	}
	p.Unwait(ch)
	appendT(t, p, makeBatch(spec{}))
	select {
	case <-ch:
		t.Fatal("signalled after Unwait")
	default:
	}
	// A full channel does not block the append.
	full := make(chan struct{})
	other := make(chan struct{}, 1)
	p.Wait(3, full)
	p.Wait(3, other)
	done := make(chan struct{})
	go func() { appendT(t, p, makeBatch(spec{})); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("append blocked on a waiter")
	}
	select {
	case <-other:
	default:
		t.Fatal("second waiter not signalled")
	}
	// Close wakes waiters.
	p.Wait(4, other)
	_ = p.Close()
	select {
	case <-other:
	default:
		t.Fatal("Close did not wake the waiter")
	}
	if p.Wait(4, other) {
		t.Fatal("Wait on a closed partition registered")
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	cfg := testConfig()
	cfg.SegmentBytes = 500
	dir := t.TempDir()
	p := openT(t, dir, cfg)
	for i := 0; i < 25; i++ {
		appendT(t, p, makeBatch(spec{n: 1 + i%3, ts: int64(1000 * (i + 1)), tag: byte(i)}))
	}
	before := readAll(t, p)
	start, end := p.Offsets()
	size := p.Size()
	ts1, ts2 := p.OffsetForTime(7500)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p = openT(t, dir, cfg)
	if s, e := p.Offsets(); s != start || e != end || p.Size() != size {
		t.Fatalf("after reopen offsets %d-%d size %d, want %d-%d size %d", s, e, p.Size(), start, end, size)
	}
	after := readAll(t, p)
	if len(after) != len(before) {
		t.Fatalf("%d batches after reopen, want %d", len(after), len(before))
	}
	for i := range before {
		if after[i] != before[i] {
			t.Fatalf("batch %d differs after reopen", i)
		}
	}
	if a, b := p.OffsetForTime(7500); a != ts1 || b != ts2 {
		t.Errorf("OffsetForTime after reopen = %d, %d; want %d, %d", a, b, ts1, ts2)
	}
	if res := appendT(t, p, makeBatch(spec{})); res.Base != end {
		t.Errorf("append after reopen at %d, want %d", res.Base, end)
	}
}

func TestRecoveryCutsTornTail(t *testing.T) {
	last := makeBatch(spec{n: 3, tag: 9, valueLen: 50})
	// torn is the start of the batch that would have followed last, at
	// the offset it would have had, so only its tearing gives it away.
	torn := func(n int) []byte {
		b := makeBatch(spec{n: 2, tag: 10})
		binary.BigEndian.PutUint64(b, 13)
		return b[:n]
	}
	cases := []struct {
		name string
		// tail corrupts the active log, whose last batch is last.
		tail func(t *testing.T, path string)
		// keepLast says whether the last batch survives.
		keepLast bool
	}{
		{"clean", func(*testing.T, string) {}, true},
		{"garbage after", func(t *testing.T, path string) {
			appendFile(t, path, []byte("not a batch at all, just junk bytes; more than a header's worth of them......"))
		}, true},
		{"zeros after", func(t *testing.T, path string) { appendFile(t, path, make([]byte, 4096)) }, true},
		{"few bytes after", func(t *testing.T, path string) { appendFile(t, path, []byte{0, 0, 0}) }, true},
		{"partial header after", func(t *testing.T, path string) { appendFile(t, path, torn(40)) }, true},
		{"header only after", func(t *testing.T, path string) { appendFile(t, path, torn(batchHeaderLen)) }, true},
		{"batch less one byte after", func(t *testing.T, path string) {
			appendFile(t, path, torn(len(makeBatch(spec{n: 2, tag: 10}))-1))
		}, true},
		// The CRC does not cover the base offset: a whole batch whose
		// offset goes back, or jumps past what a segment can index, is
		// as bad as a torn one.
		{"whole batch going back after", func(t *testing.T, path string) { appendFile(t, path, makeBatch(spec{n: 2})) }, true},
		{"whole batch 2^32 ahead after", func(t *testing.T, path string) {
			b := makeBatch(spec{n: 2})
			binary.BigEndian.PutUint64(b, 13+1<<32)
			appendFile(t, path, b)
		}, true},
		{"last batch torn", func(t *testing.T, path string) {
			if err := os.Truncate(path, fileSize(t, path)-1); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"last batch cut in its header", func(t *testing.T, path string) {
			if err := os.Truncate(path, fileSize(t, path)-int64(len(last))+20); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"flipped byte in last batch", func(t *testing.T, path string) { flipByte(t, path, fileSize(t, path)-10) }, false},
		{"flipped crc of last batch", func(t *testing.T, path string) {
			flipByte(t, path, fileSize(t, path)-int64(len(last))+crcOffset)
		}, false},
		{"length of last batch too long", func(t *testing.T, path string) {
			flipByte(t, path, fileSize(t, path)-int64(len(last))+lengthOffset+2)
		}, false},
		{"last batch magic", func(t *testing.T, path string) {
			flipByte(t, path, fileSize(t, path)-int64(len(last))+magicOffset)
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			dir := t.TempDir()
			p := openT(t, dir, cfg)
			var want []stored
			for i := 0; i < 5; i++ {
				b := makeBatch(spec{n: 2, tag: byte(i)})
				want = append(want, stored{appendT(t, p, b).Base, 2, payload(b)})
			}
			goodSize := p.Size()
			want = append(want, stored{appendT(t, p, last).Base, 3, payload(last)})
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			tc.tail(t, activeLog(t, dir))
			if tc.keepLast {
				goodSize += int64(len(last))
			} else {
				want = want[:len(want)-1]
			}
			p = openT(t, dir, cfg)
			next := want[len(want)-1].base + int64(want[len(want)-1].n)
			if _, end := p.Offsets(); end != next {
				t.Fatalf("end after recovery %d, want %d", end, next)
			}
			if got := fileSize(t, activeLog(t, dir)); got != goodSize || p.Size() != goodSize {
				t.Fatalf("log file %d bytes (Size %d) after recovery, want %d", got, p.Size(), goodSize)
			}
			got := readAll(t, p)
			if len(got) != len(want) {
				t.Fatalf("%d batches survive, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("batch %d differs", i)
				}
			}
			// Appends go on at the recovered end and survive a reopen.
			b := makeBatch(spec{n: 4, tag: 77})
			if res := appendT(t, p, b); res.Base != next {
				t.Fatalf("append after recovery at %d, want %d", res.Base, next)
			}
			want = append(want, stored{next, 4, payload(b)})
			_ = p.Close()
			p = openT(t, dir, cfg)
			got = readAll(t, p)
			if len(got) != len(want) || got[len(got)-1] != want[len(want)-1] {
				t.Fatalf("after reopen: %d batches, want %d", len(got), len(want))
			}
		})
	}
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRecoveryCutsAtFirstBadBatch(t *testing.T) {
	// A bad batch in the middle of the active segment: what follows it
	// cannot be trusted to be contiguous, so recovery cuts there.
	dir := t.TempDir()
	cfg := testConfig()
	p := openT(t, dir, cfg)
	var sizes []int64
	for i := 0; i < 4; i++ {
		b := makeBatch(spec{n: 1, tag: byte(i)})
		appendT(t, p, b)
		sizes = append(sizes, int64(len(b)))
	}
	_ = p.Close()
	flipByte(t, activeLog(t, dir), sizes[0]+sizes[1]+batchHeaderLen+2)
	p = openT(t, dir, cfg)
	if _, end := p.Offsets(); end != 2 {
		t.Fatalf("end %d after a bad third batch, want 2", end)
	}
	if res := appendT(t, p, makeBatch(spec{})); res.Base != 2 {
		t.Fatalf("append at %d, want 2", res.Base)
	}
}

func TestSealedIndexesRebuilt(t *testing.T) {
	writeLog := func(t *testing.T) (string, Config) {
		cfg := testConfig()
		cfg.SegmentBytes = 600
		cfg.IndexIntervalBytes = 100
		dir := t.TempDir()
		p := openT(t, dir, cfg)
		for i := 0; i < 40; i++ {
			appendT(t, p, makeBatch(spec{n: 1 + i%3, ts: int64(10000 + 100*i), tag: byte(i)}))
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		return dir, cfg
	}
	first := segPath("", 0, "")
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"intact", func(*testing.T, string) {}},
		{"index missing", func(t *testing.T, dir string) { mustRemove(t, filepath.Join(dir, first+".index")) }},
		{"timeindex missing", func(t *testing.T, dir string) { mustRemove(t, filepath.Join(dir, first+".timeindex")) }},
		{"index empty", func(t *testing.T, dir string) { mustWrite(t, filepath.Join(dir, first+".index"), nil) }},
		{"index torn", func(t *testing.T, dir string) { truncBy(t, filepath.Join(dir, first+".index"), 3) }},
		{"index header only", func(t *testing.T, dir string) { truncTo(t, filepath.Join(dir, first+".index"), 16) }},
		{"index entry past the log", func(t *testing.T, dir string) {
			path := filepath.Join(dir, first+".index")
			b := mustRead(t, path)
			b = append(b, 0, 0, 0, 100, 0x7f, 0, 0, 0)
			mustWrite(t, path, b)
		}},
		{"index entries out of order", func(t *testing.T, dir string) {
			path := filepath.Join(dir, first+".index")
			b := mustRead(t, path)
			if len(b) < 32 {
				t.Fatalf("index of %d bytes has fewer than 2 entries", len(b))
			}
			copy(b[16:24], []byte{0, 0, 0, 0xff, 0, 0, 0, 0xff})
			mustWrite(t, path, b)
		}},
		{"index next below base", func(t *testing.T, dir string) {
			// The second segment's index says it ends before it starts.
			bases, _ := listSegments(dir)
			path := segPath(dir, bases[1], ".index")
			b := mustRead(t, path)
			copy(b[:8], []byte{0, 0, 0, 0, 0, 0, 0, 0})
			mustWrite(t, path, b)
		}},
		{"timeindex empty", func(t *testing.T, dir string) { mustWrite(t, filepath.Join(dir, first+".timeindex"), nil) }},
		{"timeindex torn", func(t *testing.T, dir string) { truncBy(t, filepath.Join(dir, first+".timeindex"), 5) }},
		{"timeindex short a whole entry", func(t *testing.T, dir string) { truncBy(t, filepath.Join(dir, first+".timeindex"), timeEntrySize) }},
		{"timeindex garbage", func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, first+".timeindex"), []byte("0123456789ab0123456789ab"))
		}},
		{"all index files missing", func(t *testing.T, dir string) {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if filepath.Ext(e.Name()) == ".index" || filepath.Ext(e.Name()) == ".timeindex" {
					mustRemove(t, filepath.Join(dir, e.Name()))
				}
			}
		}},
	}
	// The reference: what an intact log answers.
	refDir, cfg := writeLog(t)
	ref := openT(t, refDir, cfg)
	refBatches := readAll(t, ref)
	type tq struct{ off, ts int64 }
	var refTimes []tq
	for ts := int64(9000); ts < 15000; ts += 37 {
		o, m := ref.OffsetForTime(ts)
		refTimes = append(refTimes, tq{o, m})
	}
	refMaxOff, refMaxTs := ref.OffsetForMaxTimestamp()
	if refMaxTs != 10000+100*39+int64(39%3) {
		t.Fatalf("reference max timestamp %d", refMaxTs)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, cfg := writeLog(t)
			if n, _ := listSegments(dir); len(n) < 4 {
				t.Fatalf("only %d segments", len(n))
			}
			tc.damage(t, dir)
			p := openT(t, dir, cfg)
			got := readAll(t, p)
			if len(got) != len(refBatches) {
				t.Fatalf("%d batches, want %d", len(got), len(refBatches))
			}
			for i := range got {
				if got[i] != refBatches[i] {
					t.Fatalf("batch %d differs", i)
				}
			}
			i := 0
			for ts := int64(9000); ts < 15000; ts += 37 {
				o, m := p.OffsetForTime(ts)
				if (tq{o, m}) != refTimes[i] {
					t.Fatalf("OffsetForTime(%d) = %d, %d; want %d, %d", ts, o, m, refTimes[i].off, refTimes[i].ts)
				}
				i++
			}
			if o, m := p.OffsetForMaxTimestamp(); o != refMaxOff || m != refMaxTs {
				t.Fatalf("OffsetForMaxTimestamp = %d, %d; want %d, %d", o, m, refMaxOff, refMaxTs)
			}
			_, end := p.Offsets()
			if res := appendT(t, p, makeBatch(spec{})); res.Base != end {
				t.Fatalf("append at %d, want %d", res.Base, end)
			}
		})
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func truncBy(t *testing.T, path string, n int64) { t.Helper(); truncTo(t, path, fileSize(t, path)-n) }

func truncTo(t *testing.T, path string, n int64) {
	t.Helper()
	if err := os.Truncate(path, n); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteRecordsPersistsLogStart(t *testing.T) {
	cfg := testConfig()
	cfg.SegmentBytes = 300
	dir := t.TempDir()
	p := openT(t, dir, cfg)
	for i := 0; i < 20; i++ {
		appendT(t, p, makeBatch(spec{n: 2, tag: byte(i)}))
	}
	segsBefore := len(p.segs)
	got, err := p.DeleteRecords(13)
	if err != nil || got != 13 {
		t.Fatalf("DeleteRecords(13) = %d, %v", got, err)
	}
	if len(p.segs) >= segsBefore {
		t.Fatalf("no segment deleted: %d before, %d after", segsBefore, len(p.segs))
	}
	if p.segs[0].base > 12 || p.segs[0].next <= 13 {
		t.Fatalf("first segment %d-%d does not hold offset 13", p.segs[0].base, p.segs[0].next)
	}
	bases, _ := listSegments(dir)
	if len(bases) != len(p.segs) {
		t.Fatalf("%d segment files, %d segments", len(bases), len(p.segs))
	}
	// Moving back is a no-op; past the end is refused.
	if got, err := p.DeleteRecords(4); err != nil || got != 13 {
		t.Fatalf("DeleteRecords(4) = %d, %v; want 13", got, err)
	}
	_, err = p.DeleteRecords(41)
	wantErr(t, err, ErrOffsetOutOfRange)
	_, err = p.DeleteRecords(-2)
	wantErr(t, err, ErrOffsetOutOfRange)

	check := func(p *Partition, start int64) {
		t.Helper()
		if s, e := p.Offsets(); s != start || e != 40 {
			t.Fatalf("Offsets = %d, %d; want %d, 40", s, e, start)
		}
		_, err := p.Read(start-1, 1)
		wantErr(t, err, ErrOffsetOutOfRange)
		if start < 40 {
			res, err := p.Read(start, 1)
			if bs := splitBatches(t, res.Batches); err != nil || len(bs) != 1 || bs[0].base > start || bs[0].base+2 <= start {
				t.Fatalf("Read(%d) = %+v, %v", start, bs, err)
			}
		}
	}
	check(p, 13)
	_ = p.Close()
	p = openT(t, dir, cfg)
	check(p, 13)

	// -1 is the high watermark: everything goes but the active segment.
	if got, err := p.DeleteRecords(-1); err != nil || got != 40 {
		t.Fatalf("DeleteRecords(-1) = %d, %v", got, err)
	}
	if len(p.segs) != 1 {
		t.Fatalf("%d segments after deleting all records", len(p.segs))
	}
	_ = p.Close()
	p = openT(t, dir, cfg)
	check(p, 40)
	if res := appendT(t, p, makeBatch(spec{})); res.Base != 40 {
		t.Fatalf("append at %d, want 40", res.Base)
	}
}

func TestRetentionByBytes(t *testing.T) {
	cfg := testConfig()
	b := makeBatch(spec{n: 2, valueLen: 40})
	cfg.SegmentBytes = int64(3 * len(b)) // three batches a segment
	dir := t.TempDir()
	p := openT(t, dir, cfg)
	for i := 0; i < 20; i++ {
		appendT(t, p, b)
	}
	segBytes := int64(3 * len(b))
	if n := len(p.segs); n != 7 {
		t.Fatalf("%d segments, want 7", n)
	}
	cfg.RetentionBytes = 2*segBytes + 10
	if err := p.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// 20 batches: six sealed segments of 3 and an active one of 2. As in
	// Kafka, a segment goes only while the rest still holds
	// retention.bytes: 4 go, leaving 2 sealed and the active one (8
	// batches), as 5 batches would be below 6 and a bit.
	if n := p.EnforceRetention(now); n != 4 {
		t.Fatalf("deleted %d segments, want 4", n)
	}
	if start, end := p.Offsets(); start != 24 || end != 40 {
		t.Fatalf("Offsets = %d, %d; want 24, 40", start, end)
	}
	if p.Size() != int64(8*len(b)) {
		t.Fatalf("Size %d, want %d", p.Size(), 8*len(b))
	}
	if bases, _ := listSegments(dir); len(bases) != 3 || bases[0] != 24 {
		t.Fatalf("segment files %v, want 3 from 24", bases)
	}
	_, err := p.Read(23, 1)
	wantErr(t, err, ErrOffsetOutOfRange)
	if n := p.EnforceRetention(now); n != 0 {
		t.Fatalf("second pass deleted %d", n)
	}
	// retention.bytes 0 deletes every sealed segment but never the active one.
	cfg.RetentionBytes = 0
	_ = p.SetConfig(cfg)
	if n := p.EnforceRetention(now); n != 2 {
		t.Fatalf("deleted %d, want 2", n)
	}
	if len(p.segs) != 1 || p.segs[0].size != int64(2*len(b)) {
		t.Fatalf("left %d segments", len(p.segs))
	}
	if start, _ := p.Offsets(); start != 36 {
		t.Fatalf("log start %d, want 36", start)
	}
	if n := p.EnforceRetention(now); n != 0 {
		t.Fatalf("deleted the active segment")
	}
	got := readAll(t, p)
	if len(got) != 2 || got[0].base != 36 {
		t.Fatalf("left %+v", got)
	}
	// The log start survives a reopen (it is the first segment's base).
	_ = p.Close()
	p = openT(t, dir, cfg)
	if start, end := p.Offsets(); start != 36 || end != 40 {
		t.Fatalf("after reopen Offsets = %d, %d", start, end)
	}
}

func TestRetentionByTime(t *testing.T) {
	cfg := testConfig()
	cfg.RetentionMs = 60_000
	now := time.Now()
	old := now.Add(-time.Hour).UnixMilli()
	recent := now.Add(-time.Second).UnixMilli()
	b := makeBatch(spec{n: 1, ts: old})
	cfg.SegmentBytes = int64(2 * len(b))
	dir := t.TempDir()
	p := openT(t, dir, cfg)
	// Segments: [old old] [old recent] [old old] [old] — a segment goes by
	// its newest record, so only the first and third may be deleted, and
	// deletion stops at the first segment that is kept.
	for _, ts := range []int64{old, old, old, recent, old, old, old} {
		appendT(t, p, makeBatch(spec{n: 1, ts: ts}))
	}
	if len(p.segs) != 4 {
		t.Fatalf("%d segments, want 4", len(p.segs))
	}
	if n := p.EnforceRetention(now); n != 1 {
		t.Fatalf("deleted %d, want 1", n)
	}
	if start, _ := p.Offsets(); start != 2 {
		t.Fatalf("log start %d, want 2", start)
	}
	// An hour later, everything sealed is past retention; the active
	// segment stays though its records are old too.
	if n := p.EnforceRetention(now.Add(time.Hour)); n != 2 {
		t.Fatalf("deleted %d, want 2", n)
	}
	if start, end := p.Offsets(); start != 6 || end != 7 || len(p.segs) != 1 {
		t.Fatalf("Offsets %d-%d with %d segments, want 6-7 and 1", start, end, len(p.segs))
	}
	// Negative retention keeps everything.
	appendT(t, p, makeBatch(spec{n: 1, ts: old}))
	appendT(t, p, makeBatch(spec{n: 1, ts: old}))
	cfg.RetentionMs = -1
	_ = p.SetConfig(cfg)
	if n := p.EnforceRetention(now.Add(24 * time.Hour)); n != 0 {
		t.Fatalf("retention -1 deleted %d", n)
	}
}

func TestOffsetForTime(t *testing.T) {
	cfg := testConfig()
	cfg.SegmentBytes = 250
	dir := t.TempDir()
	p := openT(t, dir, cfg)
	if o, m := p.OffsetForTime(0); o != -1 || m != -1 {
		t.Fatalf("empty log OffsetForTime = %d, %d", o, m)
	}
	if o, m := p.OffsetForMaxTimestamp(); o != -1 || m != -1 {
		t.Fatalf("empty log OffsetForMaxTimestamp = %d, %d", o, m)
	}
	// Batches of 2 records: ts, ts+1. Base offsets 0, 2, 4, ...; one batch
	// out of order (the fifth, stamped 9000) holds the max timestamp.
	stamps := []int64{1000, 2000, 3000, 4000, 9000, 5000, 6000, 7000}
	for _, ts := range stamps {
		appendT(t, p, makeBatch(spec{n: 2, ts: ts}))
	}
	if len(p.segs) < 3 {
		t.Fatalf("only %d segments", len(p.segs))
	}
	check := func(p *Partition) {
		t.Helper()
		cases := []struct{ ts, off, maxTs int64 }{
			{0, 0, 1001},
			{1001, 0, 1001},
			{1002, 2, 2001},
			{2500, 4, 3001},
			{4001, 6, 4001},
			{4002, 8, 9001}, // the first batch stamped at or after it
			{6500, 8, 9001},
			{9001, 8, 9001},
			{9002, -1, -1},
		}
		for _, tc := range cases {
			if o, m := p.OffsetForTime(tc.ts); o != tc.off || m != tc.maxTs {
				t.Errorf("OffsetForTime(%d) = %d, %d; want %d, %d", tc.ts, o, m, tc.off, tc.maxTs)
			}
		}
		if o, m := p.OffsetForMaxTimestamp(); o != 8 || m != 9001 {
			t.Errorf("OffsetForMaxTimestamp = %d, %d; want 8, 9001", o, m)
		}
	}
	check(p)
	_ = p.Close()
	p = openT(t, dir, cfg)
	check(p)
	// After the log start moves past the early batches, time lookups
	// answer no earlier than the log start.
	if _, err := p.DeleteRecords(5); err != nil {
		t.Fatal(err)
	}
	if o, _ := p.OffsetForTime(0); o != 5 {
		t.Errorf("OffsetForTime(0) after DeleteRecords(5) = %d, want 5", o)
	}
}

func TestSegmentOffsetSpanBounded(t *testing.T) {
	// A batch may claim up to 2^31-1 records in a few bytes (only the
	// header is checked). Index entries hold offsets relative to the
	// segment base in 32 bits, so a segment must roll before they wrap.
	cfg := testConfig()
	cfg.IndexIntervalBytes = 0
	dir := t.TempDir()
	p := openT(t, dir, cfg)
	huge := func(tag byte) []byte {
		b := makeBatch(spec{n: 1, tag: tag})
		putI32(b[23:], 1<<31-2) // last offset delta
		putI32(b[57:], 1<<31-1) // records
		return fixCRC(b)
	}
	var bases []int64
	for i := 0; i < 5; i++ {
		bases = append(bases, appendT(t, p, huge(byte(i))).Base)
	}
	for i, base := range bases {
		for _, off := range []int64{base, base + 1<<30, base + 1<<31 - 2} {
			res, err := p.Read(off, 1)
			if err != nil {
				t.Fatalf("Read(%d): %v", off, err)
			}
			if bs := splitBatches(t, res.Batches); len(bs) != 1 || bs[0].base != base {
				t.Fatalf("Read(%d) returned %+v, want the batch at %d (#%d)", off, bs, base, i)
			}
		}
	}
	// Two such batches in one append span more than 2^31-1 offsets.
	_, end := p.Offsets()
	_, err := appendRaw(p, cat(huge(8), huge(9)))
	wantErr(t, err, ErrCorruptBatch)
	if _, e := p.Offsets(); e != end {
		t.Fatalf("refused append moved the end from %d to %d", end, e)
	}
	_ = p.Close()
	p = openT(t, dir, cfg)
	if _, end := p.Offsets(); end != bases[4]+1<<31-1 {
		t.Fatalf("end after reopen %d", end)
	}
	for _, base := range bases {
		res, err := p.Read(base+5, 1)
		if bs := splitBatches(t, res.Batches); err != nil || len(bs) != 1 || bs[0].base != base {
			t.Fatalf("after reopen Read(%d) = %+v, %v", base+5, bs, err)
		}
	}
}

func putI32(b []byte, v int32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

// TestLogStartPastRecoveredEnd: DeleteRecords saved the log start, then a
// crash lost the unsynced records before it. The log must go on from the
// log start, not hand out offsets below it again (which the next open,
// reading the saved log start, would hide). Found by TestPartitionModel.
func TestLogStartPastRecoveredEnd(t *testing.T) {
	cfg := testConfig()
	dir := t.TempDir()
	p := openT(t, dir, cfg)
	appendT(t, p, makeBatch(spec{n: 2}))
	appendT(t, p, makeBatch(spec{n: 3}))
	if _, err := p.DeleteRecords(-1); err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	truncBy(t, activeLog(t, dir), 1) // the second batch is torn
	p = openT(t, dir, cfg)
	if start, end := p.Offsets(); start != 5 || end != 5 {
		t.Fatalf("Offsets = %d, %d; want 5, 5", start, end)
	}
	b := makeBatch(spec{n: 1, tag: 42})
	if res := appendT(t, p, b); res.Base != 5 {
		t.Fatalf("append at %d, want 5", res.Base)
	}
	_ = p.Close()
	p = openT(t, dir, cfg)
	got := readAll(t, p)
	if len(got) != 1 || got[0] != (stored{5, 1, payload(b)}) {
		t.Fatalf("after reopen %+v", got)
	}
	if bases, _ := listSegments(dir); len(bases) != 1 || bases[0] != 5 {
		t.Fatalf("segments %v, want one from 5", bases)
	}
}

// TestConcurrentAppendRead runs producers, tailing consumers and the
// periodic jobs at once (meant for -race): every consumer sees every
// batch once, in offset order, each intact.
func TestConcurrentAppendRead(t *testing.T) {
	// With one file for the partition's many segments, readers of old
	// segments and the writer take turns at opening and closing files.
	for _, max := range []int{0, 1} {
		t.Run(fmt.Sprintf("at most %d segment files", max), func(t *testing.T) {
			concurrentAppendRead(t, NewSegmentFiles(max))
		})
	}
}

func concurrentAppendRead(t *testing.T, files *SegmentFiles) {
	cfg := testConfig()
	cfg.SegmentBytes = 2000
	cfg.RetentionBytes = -1
	p := openShared(t, files, t.TempDir(), cfg)
	const producers, perProducer, consumers = 2, 150, 2
	errc := make(chan error, producers+consumers+1)
	done := make(chan struct{})
	for w := 0; w < producers; w++ {
		go func(w int) {
			for i := 0; i < perProducer; i++ {
				if _, err := appendRaw(p, makeBatch(spec{n: 1 + (w+2*i)%3, tag: byte(w)})); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}(w)
	}
	for c := 0; c < consumers; c++ {
		go func(c int) {
			ch := make(chan struct{}, 1)
			var off, seen int64
			for seen < int64(producers*perProducer) {
				if p.Wait(off, ch) {
					select {
					case <-ch:
					case <-time.After(5 * time.Second):
						p.Unwait(ch)
					}
					continue
				}
				res, err := p.Read(off, 100+c*700)
				if err != nil {
					errc <- err
					return
				}
				for data := res.Batches; len(data) > 0; {
					base, info, ok := scanBatch(data, true)
					if !ok || base != off {
						errc <- fmt.Errorf("consumer %d: batch at %d (ok %v), want %d", c, base, ok, off)
						return
					}
					off = base + int64(info.LastOffsetDelta) + 1
					data = data[info.Size:]
					seen++
				}
			}
			errc <- nil
		}(c)
	}
	go func() {
		for {
			select {
			case <-done:
				errc <- nil
				return
			default:
			}
			_ = p.Flush()
			p.EnforceRetention(time.Now())
			p.OffsetForTime(1000)
			p.OffsetForMaxTimestamp()
			p.Offsets()
			time.Sleep(time.Millisecond)
		}
	}()
	for i := 0; i < producers+consumers; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
