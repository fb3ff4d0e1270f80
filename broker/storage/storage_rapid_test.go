package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"pgregory.net/rapid"
)

// logModel is what the partition must hold: every acknowledged batch in
// offset order (deleted ones included, below logStart), and the log start.
type logModel struct {
	batches  []stored
	sizes    []int
	epochs   []int32 // each batch's leader epoch
	logStart int64
	end      int64
	epoch    int32 // the epoch appends are stamped with
}

func (m *logModel) next() int64 { return m.end }

// find returns the index of the batch holding offset.
func (m *logModel) find(offset int64) int {
	for i, b := range m.batches {
		if offset < b.base+int64(b.n) {
			return i
		}
	}
	return len(m.batches)
}

// live returns the batches a reader from the log start sees.
func (m *logModel) live() []stored {
	if m.logStart >= m.next() {
		return nil
	}
	return m.batches[m.find(m.logStart):]
}

// TestPartitionModel runs random appends, reads, DeleteRecords, clean
// reopens and crashes (the files copied as they are, without Close, the
// active segment's tail optionally cut) against logModel.
func TestPartitionModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		cfg := DefaultConfig()
		cfg.RetentionMs = -1
		cfg.SegmentBytes = int64(rapid.IntRange(150, 2000).Draw(rt, "segmentBytes"))
		cfg.IndexIntervalBytes = int64(rapid.IntRange(0, 600).Draw(rt, "indexInterval"))
		// No tail cache, one smaller than a batch, and larger ones: the
		// reads it serves must be the files'.
		cfg.TailCacheBytes = rapid.SampledFrom([]int{0, 1, 400, 5000}).Draw(rt, "tailCacheBytes")
		// 0 is no bound; 1 and 2 make every read of an older segment
		// close and reopen files.
		files := NewSegmentFiles(rapid.IntRange(0, 2).Draw(rt, "maxOpenFiles"))
		root, err := os.MkdirTemp(t.TempDir(), "model")
		if err != nil {
			rt.Fatal(err)
		}
		generation := 0
		dir := filepath.Join(root, "0")
		p, err := files.OpenPartition(dir, cfg)
		if err != nil {
			rt.Fatal(err)
		}
		defer func() { _ = p.Close() }()
		m := &logModel{}
		tag := byte(0)

		checkAll := func(rt *rapid.T) {
			rt.Helper()
			start, end := p.Offsets()
			if start != m.logStart || end != m.next() {
				rt.Fatalf("Offsets %d-%d, model %d-%d", start, end, m.logStart, m.next())
			}
			got, want := readAll(rt, p), m.live()
			if len(got) != len(want) {
				rt.Fatalf("%d batches readable, model has %d", len(got), len(want))
			}
			if end := p.EndOffset(); end != m.next() {
				rt.Fatalf("EndOffset %d, model %d", end, m.next())
			}
			// The epoch history gives each live batch its epoch, and
			// goes up in both epoch and start.
			h := p.Epochs()
			for i := 1; i < len(h); i++ {
				if h[i].Epoch <= h[i-1].Epoch || h[i].Start <= h[i-1].Start {
					rt.Fatalf("epoch history %v does not go up", h)
				}
			}
			for i, b := range want {
				j := len(h) - 1
				for j >= 0 && h[j].Start > b.base {
					j--
				}
				if e := m.epochs[m.find(b.base)]; j < 0 || h[j].Epoch != e {
					rt.Fatalf("batch %d at %d has epoch %d, history %v says otherwise", i, b.base, e, h)
				}
			}
			for i := range want {
				if got[i] != want[i] {
					rt.Fatalf("batch %d: base %d n %d, model base %d n %d", i, got[i].base, got[i].n, want[i].base, want[i].n)
				}
			}
		}

		rt.Repeat(map[string]func(*rapid.T){
			"append": func(rt *rapid.T) {
				k := rapid.IntRange(1, 3).Draw(rt, "batches")
				var recs []byte
				var add []stored
				var sizes []int
				off := m.next()
				for i := 0; i < k; i++ {
					n := rapid.IntRange(1, 5).Draw(rt, "records")
					tag++
					b := makeBatch(spec{n: n, tag: tag, valueLen: rapid.IntRange(1, 150).Draw(rt, "valueLen")})
					recs = append(recs, b...)
					add = append(add, stored{off, int32(n), payload(b)})
					sizes = append(sizes, len(b))
					m.epochs = append(m.epochs, m.epoch)
					off += int64(n)
				}
				res, err := appendRaw(p, recs)
				if err != nil || res.Base != m.next() {
					rt.Fatalf("Append: %+v, %v; want base %d", res, err, m.next())
				}
				m.batches = append(m.batches, add...)
				m.sizes = append(m.sizes, sizes...)
				m.end = off
			},
			"read": func(rt *rapid.T) {
				offset := rapid.Int64Range(m.logStart-2, m.next()+2).Draw(rt, "offset")
				maxBytes := rapid.IntRange(1, 3000).Draw(rt, "maxBytes")
				res, err := p.Read(offset, maxBytes)
				if res.HighWatermark != m.next() || res.LogStart != m.logStart {
					rt.Fatalf("Read reports %d-%d, model %d-%d", res.LogStart, res.HighWatermark, m.logStart, m.next())
				}
				if offset < m.logStart || offset > m.next() {
					if !errors.Is(err, ErrOffsetOutOfRange) {
						rt.Fatalf("Read(%d) outside %d-%d: %v", offset, m.logStart, m.next(), err)
					}
					return
				}
				if err != nil {
					rt.Fatalf("Read(%d): %v", offset, err)
				}
				got := splitBatches(rt, res.Batches)
				if offset == m.next() {
					if len(got) != 0 {
						rt.Fatalf("Read at the end returned %d batches", len(got))
					}
					return
				}
				if len(got) == 0 {
					rt.Fatalf("Read(%d) below the end returned nothing", offset)
				}
				if len(got) > 1 && len(res.Batches) > maxBytes {
					rt.Fatalf("Read(%d, %d) returned %d bytes in %d batches", offset, maxBytes, len(res.Batches), len(got))
				}
				i := m.find(offset)
				for j, g := range got {
					if i+j >= len(m.batches) || g != m.batches[i+j] {
						rt.Fatalf("Read(%d) batch %d: base %d, model batch %d", offset, j, g.base, i+j)
					}
				}
			},
			"deleteRecords": func(rt *rapid.T) {
				offset := rapid.Int64Range(m.logStart, m.next()).Draw(rt, "offset")
				if rapid.IntRange(0, 4).Draw(rt, "hw") == 0 {
					offset = -1
				}
				got, err := p.DeleteRecords(offset)
				if offset == -1 {
					offset = m.next()
				}
				if err != nil || got != offset {
					rt.Fatalf("DeleteRecords(%d) = %d, %v", offset, got, err)
				}
				m.logStart = offset
			},
			"reopen": func(rt *rapid.T) {
				if err := p.Close(); err != nil {
					rt.Fatal(err)
				}
				if p, err = files.OpenPartition(dir, cfg); err != nil {
					rt.Fatal(err)
				}
				p.SetLeaderEpoch(m.epoch) // the owner's, not the log's
				checkAll(rt)
			},
			"crash": func(rt *rapid.T) {
				generation++
				crashed := filepath.Join(root, fmt.Sprint(generation))
				copyDir(rt, dir, crashed)
				active := activeLog(rt, crashed)
				size := fileSize(rt, active)
				cut := int64(0)
				if rapid.Bool().Draw(rt, "torn") {
					cut = rapid.Int64Range(0, min(size, 300)).Draw(rt, "cut")
				}
				if err := os.Truncate(active, size-cut); err != nil {
					rt.Fatal(err)
				}
				_ = p.Close()
				dir = crashed
				if p, err = files.OpenPartition(dir, cfg); err != nil {
					rt.Fatalf("Open after crash: %v", err)
				}
				p.SetLeaderEpoch(m.epoch)
				// Only a suffix of whole batches is lost: those the cut
				// reached, no more. The log then ends where the first of
				// them started, or at the log start if that is further.
				j, lost := len(m.batches), int64(0)
				for j > 0 && lost < cut {
					j--
					lost += int64(m.sizes[j])
				}
				if j < len(m.batches) {
					m.end = max(m.batches[j].base, m.logStart)
				}
				m.batches, m.sizes, m.epochs = m.batches[:j], m.sizes[:j], m.epochs[:j]
				checkAll(rt)
			},
			"newEpoch": func(rt *rapid.T) {
				m.epoch += int32(rapid.IntRange(1, 3).Draw(rt, "step"))
				p.SetLeaderEpoch(m.epoch)
			},
			"truncate": func(rt *rapid.T) {
				offset := rapid.Int64Range(m.logStart, m.next()).Draw(rt, "offset")
				if err := p.Truncate(offset); err != nil {
					rt.Fatalf("Truncate(%d): %v", offset, err)
				}
				// The batch holding offset goes whole.
				j := m.find(offset)
				if j < len(m.batches) {
					m.end = m.batches[j].base
					m.batches, m.sizes, m.epochs = m.batches[:j], m.sizes[:j], m.epochs[:j]
					if m.logStart > m.end {
						m.logStart = m.end
					}
				}
				checkAll(rt)
			},
			"": checkAll,
		})
	})
}
