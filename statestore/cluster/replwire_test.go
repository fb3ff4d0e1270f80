package cluster

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"mecha/internal/replica"
	"mecha/statestore"
)

func sampleCopy() *SlotCopy {
	return &SlotCopy{Seq: 42, HW: 40,
		History: replica.EpochHistory{{Epoch: 1, Start: 0}, {Epoch: 3, Start: 30}},
		Items: []statestore.Item{
			{Key: "{u1}a", Value: []byte("v"), Version: 7},
			{Key: "{u1}b", Value: nil, Version: 41, Expires: time.Unix(0, 1_800_000_000_000_000_000)},
		}}
}

func TestReplicationWireRoundTrip(t *testing.T) {
	fb := &FetchBatch{Store: "s", Member: "m", WaitMs: 500, Slots: []SlotFetch{{Slot: 3, Frame: []byte{1, 2}}, {Slot: 1023, Frame: nil}}}
	got, err := DecodeFetchBatch(AppendFetchBatch(nil, fb))
	if err != nil || got.Store != "s" || got.Member != "m" || got.WaitMs != 500 || len(got.Slots) != 2 || got.Slots[1].Slot != 1023 || !bytes.Equal(got.Slots[0].Frame, []byte{1, 2}) {
		t.Fatalf("fetch batch: %+v %v", got, err)
	}
	cr, err := DecodeCopyRequest(AppendCopyRequest(nil, &CopyRequest{Store: "s", Slot: 9, Epoch: 4}))
	if err != nil || *cr != (CopyRequest{Store: "s", Slot: 9, Epoch: 4}) {
		t.Fatalf("copy request: %+v %v", cr, err)
	}
	sc, err := DecodeSlotCopy(AppendSlotCopy(nil, sampleCopy()))
	if err != nil || sc.Seq != 42 || sc.HW != 40 || len(sc.History) != 2 || len(sc.Items) != 2 || sc.Items[1].Version != 41 || !sc.Items[1].Expires.Equal(sampleCopy().Items[1].Expires) {
		t.Fatalf("slot copy: %+v %v", sc, err)
	}
	// Bad input names what was wrong.
	if _, err := DecodeFetchBatch([]byte{WireVersion, 1, 's', 0, 0, 1, 0xff, 0xff, 0x01}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a slot out of range: %v", err)
	}
	bad := sampleCopy()
	bad.History = replica.EpochHistory{{Epoch: 3, Start: 0}, {Epoch: 2, Start: 5}}
	if _, err := DecodeSlotCopy(AppendSlotCopy(nil, bad)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a history out of order: %v", err)
	}
}

func FuzzDecodeFetchBatch(f *testing.F) {
	f.Add(AppendFetchBatch(nil, &FetchBatch{Store: "s", Member: "m", WaitMs: 5, Slots: []SlotFetch{{Slot: 1, Frame: []byte{1}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fb, err := DecodeFetchBatch(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error that is not ErrMalformed: %v", err)
			}
			return
		}
		if again := AppendFetchBatch(nil, fb); !bytes.Equal(again, b) {
			t.Fatalf("decoded %x, encodes to %x", b, again)
		}
	})
}

func FuzzDecodeSlotCopy(f *testing.F) {
	f.Add(AppendSlotCopy(nil, sampleCopy()))
	f.Add(AppendCopyRequest(nil, &CopyRequest{Store: "s", Slot: 1, Epoch: 2}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := DecodeCopyRequest(b); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("copy request: an error that is not ErrMalformed: %v", err)
		}
		if _, err := DecodeSlotFetches(b); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("fetch answer: an error that is not ErrMalformed: %v", err)
		}
		c, err := DecodeSlotCopy(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error that is not ErrMalformed: %v", err)
			}
			return
		}
		if again := AppendSlotCopy(nil, c); !bytes.Equal(again, b) {
			t.Fatalf("decoded %x, encodes to %x", b, again)
		}
	})
}
