package storage

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"testing"
)

// A follower's copy of the leader's batches is byte for byte the leader's:
// offsets and epochs as the leader stamped them, across segment rolls and
// a reopen.
func TestAppendReplicaCopiesTheLeader(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.SegmentBytes = 400
	leader := openT(t, filepath.Join(dir, "leader"), cfg)
	follower := openT(t, filepath.Join(dir, "follower"), cfg)
	for e := int32(1); e <= 3; e++ {
		leader.SetLeaderEpoch(e * 2)
		for i := range 4 {
			appendT(t, leader, makeBatch(spec{n: i + 1, tag: byte(e*10) + byte(i), valueLen: 30}))
		}
	}
	// Copy by uncommitted reads, a few batches at a time.
	for off := int64(0); off < leader.EndOffset(); {
		res, err := leader.ReadUncommitted(off, 200, nil)
		if err != nil {
			t.Fatal(err)
		}
		buf := bytes.Clone(res.Batches)
		infos, err := ValidateBatches(buf, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := follower.AppendReplica(buf, infos); err != nil {
			t.Fatalf("AppendReplica at %d: %v", off, err)
		}
		off = follower.EndOffset()
	}
	same := func() {
		t.Helper()
		a, _ := leader.ReadUncommitted(0, 1<<20, nil)
		b, _ := follower.ReadUncommitted(0, 1<<20, nil)
		if !bytes.Equal(a.Batches, b.Batches) || len(a.Batches) == 0 {
			t.Fatalf("the follower's log (%d bytes) is not the leader's (%d bytes)", len(b.Batches), len(a.Batches))
		}
		if !slices.Equal(leader.Epochs(), follower.Epochs()) {
			t.Fatalf("epoch histories differ: leader %v, follower %v", leader.Epochs(), follower.Epochs())
		}
	}
	same()
	if want := []EpochStart{{2, 0}, {4, 10}, {6, 20}}; !slices.Equal(leader.Epochs(), want) {
		t.Fatalf("leader's epochs %v, want %v", leader.Epochs(), want)
	}
	if err := follower.Close(); err != nil {
		t.Fatal(err)
	}
	follower = openT(t, filepath.Join(dir, "follower"), cfg)
	same()

	// Refused: a gap, a batch behind the end, an epoch going back.
	res, _ := leader.ReadUncommitted(0, 1, nil)
	buf := bytes.Clone(res.Batches)
	infos, _ := ValidateBatches(buf, 0)
	if err := follower.AppendReplica(buf, infos); !errors.Is(err, ErrNotContiguous) {
		t.Fatalf("a batch behind the end: %v, want ErrNotContiguous", err)
	}
	if err := follower.Truncate(20); err != nil {
		t.Fatal(err)
	}
	old := makeBatch(spec{n: 1})
	copy(old[epochOffset:], []byte{0, 0, 0, 1}) // epoch 1, below 4
	old = fixCRC(old)
	old[7] = 20 // base offset 20
	infos, _ = ValidateBatches(old, 0)
	if err := follower.AppendReplica(old, infos); !errors.Is(err, ErrEpochRegress) {
		t.Fatalf("an older epoch: %v, want ErrEpochRegress", err)
	}
}

// With replication owning it, the high watermark moves only when told:
// consumers read below it, wait for it, and a follower reads past it.
func TestReplicatedHighWatermark(t *testing.T) {
	p := openT(t, t.TempDir(), testConfig())
	p.SetReplicated(true)
	appendT(t, p, makeBatch(spec{n: 3}))
	appendT(t, p, makeBatch(spec{n: 2}))
	if _, hw := p.Offsets(); hw != 0 {
		t.Fatalf("hw %d before replication moved it", hw)
	}
	if res, err := p.Read(0, 1<<20); err != nil || len(res.Batches) != 0 || res.HighWatermark != 0 {
		t.Fatalf("a consumer read above the hw: %d bytes, hw %d, %v", len(res.Batches), res.HighWatermark, err)
	}
	if res, _ := p.ReadUncommitted(0, 1<<20, nil); len(splitBatches(t, res.Batches)) != 2 {
		t.Fatal("a follower's read does not see the uncommitted batches")
	}
	ch := make(chan struct{}, 1)
	if !p.Wait(0, ch) {
		t.Fatal("Wait did not register below the hw")
	}
	p.SetHighWatermark(3)
	select {
	case <-ch:
	default:
		t.Fatal("moving the hw did not wake the waiting consumer")
	}
	res, _ := p.Read(0, 1<<20)
	if got := splitBatches(t, res.Batches); len(got) != 1 || got[0].n != 3 || res.HighWatermark != 3 {
		t.Fatalf("a consumer reads %v (hw %d), want the first batch only", got, res.HighWatermark)
	}
	if _, err := p.DeleteRecords(4); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("DeleteRecords above the hw: %v", err)
	}
	p.SetHighWatermark(99) // capped at the log end
	if _, hw := p.Offsets(); hw != 5 {
		t.Fatalf("hw %d, want the log end 5", hw)
	}
	if err := p.Truncate(3); err != nil {
		t.Fatal(err)
	}
	if _, hw := p.Offsets(); hw != 3 {
		t.Fatalf("hw %d after truncating to 3", hw)
	}
}

// Truncation takes the producer state back with the log: a retry of a
// truncated batch is written again, not answered as a duplicate.
func TestTruncateRewindsProducers(t *testing.T) {
	p := openT(t, t.TempDir(), testConfig())
	appendT(t, p, makeBatch(spec{pid: 7, epoch: 0, seq: 0, n: 2}))
	second := makeBatch(spec{pid: 7, epoch: 0, seq: 2, n: 2})
	appendT(t, p, second)
	if res := appendT(t, p, second); !res.Duplicate {
		t.Fatal("a retry was not a duplicate")
	}
	if err := p.Truncate(3); err != nil { // mid second batch: it goes whole
		t.Fatal(err)
	}
	if end := p.EndOffset(); end != 2 {
		t.Fatalf("end %d after truncating mid batch, want 2", end)
	}
	res := appendT(t, p, second)
	if res.Duplicate || res.Base != 2 {
		t.Fatalf("the retry after truncation: %+v, want written at 2", res)
	}
	// Reset starts over at an offset with nothing.
	if err := p.Reset(40); err != nil {
		t.Fatal(err)
	}
	if start, hw := p.Offsets(); start != 40 || hw != 40 || p.EndOffset() != 40 || len(p.Epochs()) != 0 {
		t.Fatalf("after Reset(40): %d-%d end %d epochs %v", start, hw, p.EndOffset(), p.Epochs())
	}
	if _, err := appendRaw(p, makeBatch(spec{pid: 7, epoch: 0, seq: 4})); !errors.Is(err, ErrUnknownProducerID) {
		t.Fatalf("a producer after Reset: %v, want ErrUnknownProducerID", err)
	}
}
