package replica

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The wire codec of fetch requests and responses, for the transport that
// carries them between runtimes over the internal port. A frame is
//
//	length  uint32, big endian: the bytes that follow
//	version byte (WireVersion)
//	kind    byte (FrameKind)
//	body    uvarints, a code byte, a flags byte, batch data
//
// Integers are uvarints and must be minimal, so a frame has exactly one
// encoding and re-encoding a decoded frame gives the same bytes. Decoders
// bound every count by the bytes left (a hostile frame cannot make them
// allocate more than it is long) and reject trailing bytes: a new layout
// takes a new WireVersion. The frame says nothing of which log it is
// about: the transport puts that (a Crux slot, a topic and partition) in
// its own envelope and multiplexes many logs on one connection.

// WireVersion is the layout version every frame starts with. Version 3
// carries fetch offsets plus one (a follower's probe of where the
// leader's log is asks at -1) and a request's flags byte (partial).
const WireVersion = 3

// MaxFrame bounds a frame's length. A fetch response holds up to the
// request's MaxBytes of records, and one batch more when the first is
// larger: a store keeps its batches well below this.
const MaxFrame = 64 << 20

// FrameKind says what a frame holds.
type FrameKind uint8

// The frame kinds.
const (
	KindFetchRequest  FrameKind = 1
	KindFetchResponse FrameKind = 2
)

const (
	frameHeader  = 4 + 1 + 1 // length, version, kind
	flagDiverged = 1
	flagPartial  = 1 // a request's
	// minBatchLen is a batch's smallest encoding: base, epoch, count
	// and length, one byte each.
	minBatchLen = 4
)

// SplitFrame cuts the first frame off buf, a stream's bytes. frame is
// nil (and err nil) while buf holds less than a whole frame; err is set
// when the length is over MaxFrame, and the stream is then unusable.
func SplitFrame(buf []byte) (frame, rest []byte, err error) {
	if len(buf) < 4 {
		return nil, buf, nil
	}
	n := binary.BigEndian.Uint32(buf)
	if n > MaxFrame {
		return nil, buf, fmt.Errorf("%w: frame of %d bytes, at most %d", ErrMalformed, n, MaxFrame)
	}
	if uint64(len(buf)) < 4+uint64(n) {
		return nil, buf, nil
	}
	return buf[:4+n], buf[4+n:], nil
}

// PeekKind checks a frame's length and version and returns its kind.
func PeekKind(frame []byte) (FrameKind, error) {
	if len(frame) < frameHeader {
		return 0, fmt.Errorf("%w: %d bytes, shorter than a header", ErrMalformed, len(frame))
	}
	if n := binary.BigEndian.Uint32(frame); uint64(n) != uint64(len(frame)-4) || n > MaxFrame {
		return 0, fmt.Errorf("%w: length %d for %d bytes", ErrMalformed, n, len(frame)-4)
	}
	if frame[4] != WireVersion {
		return 0, fmt.Errorf("%w: version %d, want %d", ErrMalformed, frame[4], WireVersion)
	}
	k := FrameKind(frame[5])
	if k != KindFetchRequest && k != KindFetchResponse {
		return 0, fmt.Errorf("%w: kind %d", ErrMalformed, k)
	}
	return k, nil
}

// begin appends a header with the length left to fill by finish.
func begin(dst []byte, k FrameKind) ([]byte, int) {
	at := len(dst)
	return append(dst, 0, 0, 0, 0, WireVersion, byte(k)), at
}

func finish(dst []byte, at int) []byte {
	binary.BigEndian.PutUint32(dst[at:], uint32(len(dst)-at-4))
	return dst
}

// AppendFetchRequest appends r's frame to dst.
func AppendFetchRequest(dst []byte, r *FetchRequest) []byte {
	dst, at := begin(dst, KindFetchRequest)
	dst = binary.AppendUvarint(dst, uint64(r.Replica))
	dst = binary.AppendUvarint(dst, uint64(r.Epoch))
	dst = binary.AppendUvarint(dst, r.Corr)
	dst = binary.AppendUvarint(dst, uint64(r.FetchOffset+1))
	dst = binary.AppendUvarint(dst, uint64(r.LastEpoch))
	dst = binary.AppendUvarint(dst, uint64(r.MaxBytes))
	dst = binary.AppendUvarint(dst, r.Barrier)
	if r.Partial {
		dst = append(dst, flagPartial)
	} else {
		dst = append(dst, 0)
	}
	return finish(dst, at)
}

// AppendFetchResponse appends r's frame to dst. The divergence fields go
// only when Diverging is set.
func AppendFetchResponse(dst []byte, r *FetchResponse) []byte {
	dst, at := begin(dst, KindFetchResponse)
	dst = binary.AppendUvarint(dst, r.Corr)
	dst = binary.AppendUvarint(dst, uint64(r.FetchOffset+1))
	dst = binary.AppendUvarint(dst, uint64(r.Epoch))
	dst = append(dst, byte(r.Code))
	dst = binary.AppendUvarint(dst, uint64(r.HighWatermark))
	dst = binary.AppendUvarint(dst, uint64(r.LogStart))
	dst = binary.AppendUvarint(dst, uint64(r.LogEnd))
	dst = binary.AppendUvarint(dst, r.Barrier)
	if r.Diverging {
		dst = append(dst, flagDiverged)
		dst = binary.AppendUvarint(dst, uint64(r.DivergingEpoch))
		dst = binary.AppendUvarint(dst, uint64(r.DivergingEnd))
	} else {
		dst = append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Batches)))
	for _, b := range r.Batches {
		dst = binary.AppendUvarint(dst, uint64(b.Base))
		dst = binary.AppendUvarint(dst, uint64(b.Epoch))
		dst = binary.AppendUvarint(dst, uint64(b.Count))
		dst = binary.AppendUvarint(dst, uint64(len(b.Data)))
		dst = append(dst, b.Data...)
	}
	return finish(dst, at)
}

// reader decodes a frame's body; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

// uvarint reads a minimal uvarint no larger than limit.
func (r *reader) uvarint(what string, limit uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	switch {
	case n <= 0:
		r.fail("%s: bad varint", what)
		return 0
	case n != uvarintLen(v):
		r.fail("%s: varint not minimal", what)
		return 0
	case v > limit:
		r.fail("%s: %d over %d", what, v, limit)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("%s: missing", what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) offset(what string) int64 { return int64(r.uvarint(what, math.MaxInt64)) }

// fetchOffset reads a fetch offset, sent plus one: -1 is a probe.
func (r *reader) fetchOffset() int64 { return int64(r.uvarint("fetch offset", math.MaxInt64)) - 1 }

func (r *reader) end() error {
	if r.err == nil && len(r.b) > 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}

// uvarintLen is the length of v's minimal encoding.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// body checks frame's header for kind and returns a reader of its body.
func body(frame []byte, want FrameKind) (reader, error) {
	k, err := PeekKind(frame)
	if err != nil {
		return reader{}, err
	}
	if k != want {
		return reader{}, fmt.Errorf("%w: kind %d, want %d", ErrMalformed, k, want)
	}
	return reader{b: frame[frameHeader:]}, nil
}

// DecodeFetchRequest decodes a fetch request frame.
func DecodeFetchRequest(frame []byte) (FetchRequest, error) {
	r, err := body(frame, KindFetchRequest)
	if err != nil {
		return FetchRequest{}, err
	}
	q := FetchRequest{
		Replica:     ReplicaID(r.uvarint("replica", math.MaxUint32)),
		Epoch:       Epoch(r.uvarint("epoch", math.MaxUint64)),
		Corr:        r.uvarint("corr", math.MaxUint64),
		FetchOffset: r.fetchOffset(),
		LastEpoch:   Epoch(r.uvarint("last epoch", math.MaxUint64)),
		MaxBytes:    int32(r.uvarint("max bytes", math.MaxInt32)),
	}
	q.Barrier = r.uvarint("barrier", math.MaxUint64)
	switch flags := r.byte("flags"); flags {
	case 0:
	case flagPartial:
		q.Partial = true
	default:
		r.fail("flags %#x", flags)
	}
	if err := r.end(); err != nil {
		return FetchRequest{}, err
	}
	return q, nil
}

// DecodeFetchResponse decodes a fetch response frame into resp, reusing
// its Batches array. The batches' Data alias frame: the caller keeps
// frame unchanged while it uses them (Log.Append copies).
func DecodeFetchResponse(frame []byte, resp *FetchResponse) error {
	resp.reset()
	r, err := body(frame, KindFetchResponse)
	if err != nil {
		return err
	}
	resp.Corr = r.uvarint("corr", math.MaxUint64)
	resp.FetchOffset = r.fetchOffset()
	resp.Epoch = Epoch(r.uvarint("epoch", math.MaxUint64))
	if c := Code(r.byte("code")); c < codeCount {
		resp.Code = c
	} else {
		r.fail("code %d", c)
	}
	resp.HighWatermark = r.offset("high watermark")
	resp.LogStart = r.offset("log start")
	resp.LogEnd = r.offset("log end")
	resp.Barrier = r.uvarint("barrier", math.MaxUint64)
	switch flags := r.byte("flags"); flags {
	case 0:
	case flagDiverged:
		resp.Diverging = true
		resp.DivergingEpoch = Epoch(r.uvarint("diverging epoch", math.MaxUint64))
		resp.DivergingEnd = r.offset("diverging end")
	default:
		r.fail("flags %#x", flags)
	}
	n := r.uvarint("batches", uint64(len(r.b)/minBatchLen))
	for i := uint64(0); i < n && r.err == nil; i++ {
		b := Batch{
			Base:  r.offset("batch base"),
			Epoch: Epoch(r.uvarint("batch epoch", math.MaxUint64)),
			Count: int32(r.uvarint("batch count", math.MaxInt32)),
		}
		size := r.uvarint("batch size", MaxFrame)
		switch {
		case r.err != nil:
		case size > uint64(len(r.b)):
			r.fail("batch %d of %d bytes, %d left", i, size, len(r.b))
		case b.Count < 1 || b.Base > math.MaxInt64-int64(b.Count):
			r.fail("batch %d at %d of %d records", i, b.Base, b.Count)
		}
		if r.err != nil {
			break
		}
		b.Data = r.b[:size:size]
		r.b = r.b[size:]
		resp.Batches = append(resp.Batches, b)
	}
	if err := r.end(); err != nil {
		resp.reset()
		return err
	}
	return nil
}
