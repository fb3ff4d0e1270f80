package cluster

import (
	"encoding/binary"
	"fmt"

	"mecha/internal/replica"
	"mecha/statestore"
)

// Replication methods, between the members holding a slot's replicas.
const (
	// MethodReplicaFetch is a follower's fetch for many slots it follows
	// from one leader, long-polled.
	MethodReplicaFetch uint16 = 0x0280
	// MethodSlotCopy is a follower asking its leader for a copy of a
	// slot, to start over from.
	MethodSlotCopy uint16 = 0x0281
)

// SlotFetch is one slot's part of a fetch: the slot and its request or
// response frame (internal/replica's wire).
type SlotFetch struct {
	Slot  int
	Frame []byte
}

// FetchBatch is MethodReplicaFetch's request: the follower, its slots'
// fetches, and how long the leader may hold the request while none of
// them has anything new (milliseconds).
type FetchBatch struct {
	Store  string
	Member string
	WaitMs uint32
	Slots  []SlotFetch
}

// maxWaitMs bounds a fetch's hold.
const maxWaitMs = 10_000

// AppendFetchBatch encodes b:
//
//	version byte | store string | member string | wait uvarint |
//	count uvarint | (slot uvarint, frame bytes) each
func AppendFetchBatch(dst []byte, b *FetchBatch) []byte {
	dst = append(dst, WireVersion)
	dst = appendString(dst, b.Store)
	dst = appendString(dst, b.Member)
	dst = binary.AppendUvarint(dst, uint64(b.WaitMs))
	return appendSlotFetches(dst, b.Slots)
}

func appendSlotFetches(dst []byte, s []SlotFetch) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	for _, f := range s {
		dst = binary.AppendUvarint(dst, uint64(f.Slot))
		dst = appendBytes(dst, f.Frame)
	}
	return dst
}

// DecodeFetchBatch decodes a MethodReplicaFetch request. Frames alias
// body.
func DecodeFetchBatch(body []byte) (*FetchBatch, error) {
	r := &reader{b: body}
	if v := r.byte("version"); r.err == nil && v != WireVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, v, WireVersion)
	}
	b := &FetchBatch{Store: r.string("store"), Member: r.string("member")}
	b.WaitMs = uint32(r.uvarint("wait", maxWaitMs))
	b.Slots = r.slotFetches()
	if err := r.end(); err != nil {
		return nil, err
	}
	return b, nil
}

// DecodeSlotFetches decodes a MethodReplicaFetch response: the slots'
// response frames. Frames alias body.
func DecodeSlotFetches(body []byte) ([]SlotFetch, error) {
	r := &reader{b: body}
	s := r.slotFetches()
	if err := r.end(); err != nil {
		return nil, err
	}
	return s, nil
}

func (r *reader) slotFetches() []SlotFetch {
	n := r.uvarint("slot count", statestore.NumSlots)
	if r.err != nil {
		return nil
	}
	out := make([]SlotFetch, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		s := int(r.uvarint("slot", statestore.NumSlots-1))
		f := r.bytes("frame")
		out = append(out, SlotFetch{Slot: s, Frame: f})
	}
	return out
}

// CopyRequest is MethodSlotCopy's request: a copy of slot from the
// leader of epoch.
type CopyRequest struct {
	Store string
	Slot  int
	Epoch uint64
}

// AppendCopyRequest encodes r: version byte | store string | slot
// uvarint | epoch uvarint.
func AppendCopyRequest(dst []byte, r *CopyRequest) []byte {
	dst = append(dst, WireVersion)
	dst = appendString(dst, r.Store)
	dst = binary.AppendUvarint(dst, uint64(r.Slot))
	return binary.AppendUvarint(dst, r.Epoch)
}

// DecodeCopyRequest decodes a MethodSlotCopy request.
func DecodeCopyRequest(body []byte) (*CopyRequest, error) {
	r := &reader{b: body}
	if v := r.byte("version"); r.err == nil && v != WireVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, v, WireVersion)
	}
	c := &CopyRequest{Store: r.string("store")}
	c.Slot = int(r.uvarint("slot", statestore.NumSlots-1))
	c.Epoch = r.uvarint("epoch", 1<<63)
	if err := r.end(); err != nil {
		return nil, err
	}
	return c, nil
}

// SlotCopy is a slot's state at Seq on its leader: what a follower
// installs. History is the leader's epoch history up to Seq, HW its high
// watermark.
type SlotCopy struct {
	Seq     uint64
	HW      int64
	History replica.EpochHistory
	Items   []statestore.Item
}

// AppendSlotCopy encodes c: seq uvarint | hw uvarint | history count,
// (epoch, start) uvarints each | item count, (key string, value bytes,
// version uvarint, expires varint) each.
func AppendSlotCopy(dst []byte, c *SlotCopy) []byte {
	dst = binary.AppendUvarint(dst, c.Seq)
	dst = binary.AppendUvarint(dst, uint64(c.HW))
	dst = binary.AppendUvarint(dst, uint64(len(c.History)))
	for _, h := range c.History {
		dst = binary.AppendUvarint(dst, uint64(h.Epoch))
		dst = binary.AppendUvarint(dst, uint64(h.Start))
	}
	dst = binary.AppendUvarint(dst, uint64(len(c.Items)))
	for i := range c.Items {
		it := &c.Items[i]
		dst = appendString(dst, it.Key)
		dst = appendBytes(dst, it.Value)
		dst = binary.AppendUvarint(dst, it.Version)
		dst = appendExpires(dst, it.Expires)
	}
	return dst
}

// DecodeSlotCopy decodes a MethodSlotCopy answer. Values alias body.
func DecodeSlotCopy(body []byte) (*SlotCopy, error) {
	r := &reader{b: body}
	c := &SlotCopy{Seq: r.uvarint("seq", 1<<63)}
	c.HW = int64(r.uvarint("high watermark", 1<<63))
	n := r.uvarint("history count", uint64(len(body)))
	for i := uint64(0); i < n && r.err == nil; i++ {
		e := replica.Epoch(r.uvarint("epoch", 1<<63))
		s := int64(r.uvarint("epoch start", 1<<63))
		c.History = append(c.History, replica.EpochStart{Epoch: e, Start: s})
	}
	n = r.uvarint("item count", uint64(len(body)))
	for i := uint64(0); i < n && r.err == nil; i++ {
		it := statestore.Item{Key: r.string("key")}
		it.Value = r.bytes("value")
		it.Version = r.uvarint("version", 1<<63)
		it.Expires = r.expires("expiry")
		c.Items = append(c.Items, it)
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	for i := 1; i < len(c.History); i++ {
		if c.History[i].Epoch <= c.History[i-1].Epoch || c.History[i].Start <= c.History[i-1].Start {
			return nil, fmt.Errorf("%w: epoch history out of order at entry %d", ErrMalformed, i)
		}
	}
	return c, nil
}
