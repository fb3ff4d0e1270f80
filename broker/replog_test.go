package broker

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"mecha/broker/storage"
	"mecha/internal/replica"

	"pgregory.net/rapid"
)

// TestPartitionLogConformsToMemLog runs the same random appends, reads,
// truncations, trims, resets and reopens on a partitionLog and on
// replica.MemLog, the reference Log, and compares what they hold.
func TestPartitionLogConformsToMemLog(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		cfg := storage.DefaultConfig()
		cfg.RetentionMs = -1
		cfg.SegmentBytes = int64(rapid.IntRange(200, 3000).Draw(rt, "segmentBytes"))
		cfg.IndexIntervalBytes = int64(rapid.IntRange(0, 500).Draw(rt, "indexInterval"))
		dir, err := os.MkdirTemp(t.TempDir(), "log")
		if err != nil {
			rt.Fatal(err)
		}
		dir = filepath.Join(dir, "p")
		part, err := storage.Open(dir, cfg)
		if err != nil {
			rt.Fatal(err)
		}
		defer func() { _ = part.Close() }()
		pl, ml := newPartitionLog(part), replica.NewMemLog()
		epoch := replica.Epoch(1)
		same := func(rt *rapid.T) {
			rt.Helper()
			if pl.StartOffset() != ml.StartOffset() || pl.EndOffset() != ml.EndOffset() {
				rt.Fatalf("partition log [%d, %d), MemLog [%d, %d)", pl.StartOffset(), pl.EndOffset(), ml.StartOffset(), ml.EndOffset())
			}
			if !slices.Equal(pl.Epochs(), ml.Epochs()) {
				rt.Fatalf("epochs %v, MemLog %v", pl.Epochs(), ml.Epochs())
			}
			var got []replica.Batch
			for off := pl.StartOffset(); off < pl.EndOffset(); {
				bs, err := pl.Read(off, 1, nil)
				if err != nil || len(bs) != 1 {
					rt.Fatalf("Read(%d): %d batches, %v", off, len(bs), err)
				}
				got = append(got, bs[0])
				off = bs[0].End()
			}
			want := ml.Batches()
			if len(got) != len(want) {
				rt.Fatalf("%d batches, MemLog %d", len(got), len(want))
			}
			for i := range want {
				g, w := got[i], want[i]
				if g.Base != w.Base || g.Epoch != w.Epoch || g.Count != w.Count || len(g.Data) != len(w.Data) {
					rt.Fatalf("batch %d: %d/e%d/%d records, MemLog %d/e%d/%d", i, g.Base, g.Epoch, g.Count, w.Base, w.Epoch, w.Count)
				}
			}
		}
		tag := byte(0)
		rt.Repeat(map[string]func(*rapid.T){
			"append": func(rt *rapid.T) {
				if rapid.IntRange(0, 3).Draw(rt, "newEpoch") == 0 {
					epoch += replica.Epoch(rapid.IntRange(1, 2).Draw(rt, "step"))
				}
				var bs []replica.Batch
				end := ml.EndOffset()
				for range rapid.IntRange(1, 3).Draw(rt, "batches") {
					n := rapid.IntRange(1, 4).Draw(rt, "records")
					tag++
					vals := make([]string, n)
					for i := range vals {
						vals[i] = string(rune('a'+tag%26)) + "-value"
					}
					data := encodeBatch(batchSpec{producerID: -1, values: vals})
					bs = append(bs, replica.Batch{Base: end, Epoch: epoch, Count: int32(n), Data: data})
					end += int64(n)
				}
				if err := ml.Append(bs); err != nil {
					rt.Fatal(err)
				}
				if err := pl.Append(bs); err != nil {
					rt.Fatalf("partition log Append: %v", err)
				}
			},
			"read": func(rt *rapid.T) {
				if ml.EndOffset() == ml.StartOffset() {
					return
				}
				off := rapid.Int64Range(ml.StartOffset(), ml.EndOffset()-1).Draw(rt, "offset")
				max := rapid.IntRange(1, 600).Draw(rt, "maxBytes")
				got, err := pl.Read(off, max, nil)
				if err != nil {
					rt.Fatal(err)
				}
				want, _ := ml.Read(off, max, nil)
				// At least one batch, and a prefix of the reference's
				// (a sparse index may end a read early).
				if len(got) == 0 || len(got) > len(want) {
					rt.Fatalf("Read(%d, %d): %d batches, MemLog %d", off, max, len(got), len(want))
				}
				for i := range got {
					if got[i].Base != want[i].Base {
						rt.Fatalf("Read(%d, %d) batch %d at %d, MemLog %d", off, max, i, got[i].Base, want[i].Base)
					}
				}
			},
			"truncate": func(rt *rapid.T) {
				off := rapid.Int64Range(ml.StartOffset(), ml.EndOffset()).Draw(rt, "offset")
				if err := ml.Truncate(off); err != nil {
					rt.Fatal(err)
				}
				if err := pl.Truncate(off); err != nil {
					rt.Fatalf("partition log Truncate(%d): %v", off, err)
				}
				same(rt)
			},
			"trim": func(rt *rapid.T) {
				// To a batch boundary: retention and a leader's log start
				// (the broker's DeleteRecords may stop mid batch, which
				// MemLog does not model).
				bs := ml.Batches()
				if len(bs) == 0 {
					return
				}
				to := bs[rapid.IntRange(0, len(bs)-1).Draw(rt, "batch")].Base
				if err := ml.TrimTo(to); err != nil {
					rt.Fatal(err)
				}
				if err := pl.TrimTo(to); err != nil {
					rt.Fatalf("partition log TrimTo(%d): %v", to, err)
				}
				same(rt)
			},
			"reset": func(rt *rapid.T) {
				off := ml.EndOffset() + rapid.Int64Range(0, 5).Draw(rt, "ahead")
				if err := ml.Reset(off); err != nil {
					rt.Fatal(err)
				}
				if err := pl.Reset(off); err != nil {
					rt.Fatal(err)
				}
			},
			"reopen": func(rt *rapid.T) {
				if err := part.Close(); err != nil {
					rt.Fatal(err)
				}
				if part, err = storage.Open(dir, cfg); err != nil {
					rt.Fatal(err)
				}
				pl = newPartitionLog(part)
				same(rt)
			},
			"": same,
		})
	})
}
