package storage

import (
	"errors"
	"testing"
)

// produce is one idempotent append and what the log must answer.
type produce struct {
	pid     int64
	epoch   int16
	seq     int32
	n       int
	base    int64 // wanted base offset (the original one for a duplicate)
	dup     bool
	err     error
	comment string
}

func runProduces(t *testing.T, p *Partition, steps []produce) {
	t.Helper()
	for i, st := range steps {
		_, endBefore := p.Offsets()
		sizeBefore := p.Size()
		res, err := appendRaw(p, makeBatch(spec{pid: st.pid, epoch: st.epoch, seq: st.seq, n: st.n, tag: byte(i)}))
		if st.err != nil {
			if !errors.Is(err, st.err) {
				t.Fatalf("step %d (%s): err %v, want %v", i, st.comment, err, st.err)
			}
		} else if err != nil {
			t.Fatalf("step %d (%s): %v", i, st.comment, err)
		} else if res.Base != st.base || res.Duplicate != st.dup {
			t.Fatalf("step %d (%s): %+v, want base %d duplicate %v", i, st.comment, res, st.base, st.dup)
		}
		if st.err != nil || st.dup {
			if _, end := p.Offsets(); end != endBefore || p.Size() != sizeBefore {
				t.Fatalf("step %d (%s): refused or duplicate batch was written (end %d -> %d)", i, st.comment, endBefore, end)
			}
		}
	}
}

func TestIdempotentProducer(t *testing.T) {
	cases := []struct {
		name  string
		steps []produce
	}{
		{"retries and errors", []produce{
			{pid: 1, seq: 0, n: 3, base: 0, comment: "first batch"},
			{pid: 1, seq: 3, n: 2, base: 3, comment: "next batch"},
			{pid: 1, seq: 0, n: 3, base: 0, dup: true, comment: "retry of the first"},
			{pid: 1, seq: 3, n: 2, base: 3, dup: true, comment: "retry of the second"},
			{pid: 1, seq: 6, n: 1, err: ErrOutOfOrderSequence, comment: "gap: 5 expected"},
			{pid: 1, seq: 5, n: 1, base: 5, comment: "in order again"},
			{pid: 1, seq: 1, n: 2, err: ErrDuplicateSequence, comment: "old sequence not matching a cached batch"},
			{pid: 2, seq: 3, n: 1, err: ErrUnknownProducerID, comment: "new producer not starting at 0"},
			{pid: 2, seq: 0, n: 2, base: 6, comment: "new producer at 0"},
			{pid: 1, epoch: 1, seq: 6, n: 1, err: ErrOutOfOrderSequence, comment: "new epoch not starting at 0"},
			{pid: 1, epoch: 1, seq: 0, n: 1, base: 8, comment: "new epoch at 0"},
			{pid: 1, epoch: 0, seq: 6, n: 1, err: ErrInvalidProducerEpoch, comment: "fenced epoch"},
			{pid: 1, epoch: 0, seq: 0, n: 3, err: ErrInvalidProducerEpoch, comment: "fenced epoch retrying an old batch"},
			{pid: 1, epoch: 1, seq: 0, n: 1, base: 8, dup: true, comment: "retry in the new epoch"},
			{pid: 1, epoch: 1, seq: 1, n: 1, base: 9, comment: "go on in the new epoch"},
			{pid: 2, seq: 2, n: 1, base: 10, comment: "the other producer is unaffected"},
		}},
		{"only the last five are cached", []produce{
			{pid: 7, seq: 0, n: 1, base: 0},
			{pid: 7, seq: 1, n: 1, base: 1},
			{pid: 7, seq: 2, n: 1, base: 2},
			{pid: 7, seq: 3, n: 1, base: 3},
			{pid: 7, seq: 4, n: 1, base: 4},
			{pid: 7, seq: 5, n: 1, base: 5},
			{pid: 7, seq: 0, n: 1, err: ErrDuplicateSequence, comment: "sixth from last"},
			{pid: 7, seq: 1, n: 1, base: 1, dup: true, comment: "fifth from last"},
			{pid: 7, seq: 5, n: 1, base: 5, dup: true, comment: "last"},
			{pid: 7, seq: 5, n: 2, err: ErrDuplicateSequence, comment: "same first sequence, other length"},
		}},
		{"interleaved producers", []produce{
			{pid: 1, seq: 0, n: 2, base: 0},
			{pid: 2, seq: 0, n: 2, base: 2},
			{pid: 1, seq: 2, n: 2, base: 4},
			{pid: 2, seq: 0, n: 2, base: 2, dup: true},
			{pid: 1, seq: 0, n: 2, base: 0, dup: true},
			{pid: 2, seq: 2, n: 1, base: 6},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runProduces(t, openT(t, t.TempDir(), testConfig()), tc.steps)
		})
	}
}

func TestIdempotentNonProducerBatchesIgnored(t *testing.T) {
	p := openT(t, t.TempDir(), testConfig())
	for i := 0; i < 3; i++ {
		// The same plain batch again is new data, not a retry.
		if res := appendT(t, p, makeBatch(spec{n: 2})); res.Duplicate || res.Base != int64(2*i) {
			t.Fatalf("plain batch %d: %+v", i, res)
		}
	}
}

// TestIdempotentSeveralBatchesInOneAppend: a produce request may carry
// more than one batch of the same producer for a partition; each follows
// the one before it, not only what the log held before the request.
func TestIdempotentSeveralBatchesInOneAppend(t *testing.T) {
	p := openT(t, t.TempDir(), testConfig())
	res, err := appendRaw(p, cat(makeBatch(spec{pid: 4, seq: 0, n: 2}), makeBatch(spec{pid: 4, seq: 2, n: 3})))
	if err != nil || res.Base != 0 {
		t.Fatalf("new producer, two batches: %+v, %v", res, err)
	}
	res, err = appendRaw(p, cat(makeBatch(spec{pid: 4, seq: 5, n: 1}), makeBatch(spec{pid: 9, seq: 0}), makeBatch(spec{pid: 4, seq: 6, n: 1})))
	if err != nil || res.Base != 5 {
		t.Fatalf("known producer, two batches around another: %+v, %v", res, err)
	}
	_, end := p.Offsets()
	for _, bad := range []struct {
		recs []byte
		want error
	}{
		{cat(makeBatch(spec{pid: 4, seq: 7}), makeBatch(spec{pid: 4, seq: 9})), ErrOutOfOrderSequence},
		{cat(makeBatch(spec{pid: 4, seq: 7}), makeBatch(spec{pid: 4, seq: 7})), ErrDuplicateSequence},
		{cat(makeBatch(spec{pid: 5, seq: 0}), makeBatch(spec{pid: 5, seq: 2})), ErrOutOfOrderSequence},
		{cat(makeBatch(spec{pid: 4, epoch: 1, seq: 0}), makeBatch(spec{pid: 4, epoch: 0, seq: 7})), ErrInvalidProducerEpoch},
		{cat(makeBatch(spec{pid: 4, seq: 7}), makeBatch(spec{pid: 4, seq: 5})), ErrDuplicateSequence},
	} {
		_, err := appendRaw(p, bad.recs)
		wantErr(t, err, bad.want)
	}
	if _, e := p.Offsets(); e != end {
		t.Fatalf("refused appends moved the end from %d to %d", end, e)
	}
	// A new epoch within a request starts at 0.
	if res, err := appendRaw(p, cat(makeBatch(spec{pid: 4, seq: 7}), makeBatch(spec{pid: 4, epoch: 1, seq: 0}))); err != nil || res.Base != end {
		t.Fatalf("epoch bump inside a request: %+v, %v", res, err)
	}
}

func TestIdempotentStateSurvivesReopen(t *testing.T) {
	for _, tc := range []struct {
		name         string
		segmentBytes int64
	}{
		{"one segment", 1 << 20},
		// Other producers' batches roll the segment after producer 1's
		// last write, so its state lives in sealed segments only.
		{"after rolls", 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.SegmentBytes = tc.segmentBytes
			dir := t.TempDir()
			p := openT(t, dir, cfg)
			runProduces(t, p, []produce{
				{pid: 1, seq: 0, n: 2, base: 0},
				{pid: 1, seq: 2, n: 2, base: 2},
				{pid: 1, epoch: 1, seq: 0, n: 1, base: 4},
				{pid: 1, epoch: 1, seq: 1, n: 1, base: 5},
				{pid: 2, seq: 0, n: 1, base: 6},
				{pid: 2, seq: 1, n: 1, base: 7},
				{pid: 2, seq: 2, n: 1, base: 8},
				{pid: 2, seq: 3, n: 1, base: 9},
				{pid: 2, seq: 4, n: 1, base: 10},
			})
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			p = openT(t, dir, cfg)
			if tc.segmentBytes < 1<<20 && len(p.segs) < 3 {
				t.Fatalf("only %d segments", len(p.segs))
			}
			runProduces(t, p, []produce{
				{pid: 1, epoch: 1, seq: 1, n: 1, base: 5, dup: true, comment: "retry after restart"},
				{pid: 1, epoch: 1, seq: 0, n: 1, base: 4, dup: true, comment: "older retry after restart"},
				{pid: 1, epoch: 0, seq: 2, n: 2, err: ErrInvalidProducerEpoch, comment: "fenced epoch after restart"},
				{pid: 2, seq: 4, n: 1, base: 10, dup: true},
				{pid: 2, seq: 6, n: 1, err: ErrOutOfOrderSequence},
				{pid: 1, epoch: 1, seq: 2, n: 1, base: 11, comment: "next after restart"},
				{pid: 2, seq: 5, n: 1, base: 12},
			})
		})
	}
}
