package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"testing"
)

func sampleRequests() []FetchRequest {
	return []FetchRequest{
		{},
		{Replica: 3, Epoch: 7, Corr: 99, FetchOffset: 1234, LastEpoch: 6, MaxBytes: 1 << 20, Barrier: 17},
		{Replica: math.MaxUint32, Epoch: math.MaxUint64, Corr: math.MaxUint64, FetchOffset: math.MaxInt64 - 1, LastEpoch: math.MaxUint64, MaxBytes: math.MaxInt32, Barrier: math.MaxUint64},
		{Replica: 2, Epoch: 1, Corr: 1, FetchOffset: -1, MaxBytes: 1 << 20, Partial: true},
		{Replica: 2, Epoch: 1, Corr: 2, FetchOffset: 500, LastEpoch: 1, MaxBytes: 1 << 20, Partial: true},
	}
}

func sampleResponses() []FetchResponse {
	return []FetchResponse{
		{},
		{Corr: 5, FetchOffset: 10, Epoch: 3, HighWatermark: 8, LogStart: 2, LogEnd: 12, Barrier: 41,
			Batches: []Batch{batch(10, 3, 1, "x"), batch(11, 3, 1, "")}},
		{Corr: 6, FetchOffset: 20, Epoch: 4, Diverging: true, DivergingEpoch: 2, DivergingEnd: 15, HighWatermark: 14, LogEnd: 30},
		{Corr: 7, Code: CodeOutOfRange, LogStart: 100, LogEnd: 200},
		{Corr: 9, FetchOffset: -1, Code: CodeOutOfRange, HighWatermark: 150, LogStart: 100, LogEnd: 200},
		{Corr: 8, Code: CodeFenced, Epoch: math.MaxUint64, HighWatermark: math.MaxInt64},
	}
}

func TestWireRoundTrip(t *testing.T) {
	for _, q := range sampleRequests() {
		frame := AppendFetchRequest([]byte("prefix"), &q)[len("prefix"):]
		if k, err := PeekKind(frame); err != nil || k != KindFetchRequest {
			t.Fatalf("kind %d, %v", k, err)
		}
		got, err := DecodeFetchRequest(frame)
		if err != nil || got != q {
			t.Fatalf("request %+v decoded as %+v, %v", q, got, err)
		}
	}
	for _, r := range sampleResponses() {
		frame := AppendFetchResponse(nil, &r)
		var got FetchResponse
		if err := DecodeFetchResponse(frame, &got); err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if len(r.Batches) == 0 {
			r.Batches = got.Batches[:0] // nil and empty mean the same
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("response %+v decoded as %+v", r, got)
		}
	}
}

// frameOf wraps body in a header of version v and kind k.
func frameOf(v byte, k FrameKind, body ...byte) []byte {
	f := binary.BigEndian.AppendUint32(nil, uint32(2+len(body)))
	return append(append(f, v, byte(k)), body...)
}

func TestWireDecodeErrors(t *testing.T) {
	good := AppendFetchResponse(nil, &sampleResponses()[1])
	tests := []struct {
		name  string
		frame []byte
		req   bool // decode as a request
	}{
		{"empty", nil, true},
		{"short header", []byte{0, 0, 0, 1, 1}, true},
		{"length mismatch", append(AppendFetchRequest(nil, &FetchRequest{}), 0), true},
		{"version", frameOf(1, KindFetchRequest, 0, 0, 0, 0, 0, 0, 0), true},
		{"unknown kind", frameOf(WireVersion, 9, 0, 0, 0, 0, 0, 0), true},
		{"response as request", good, true},
		{"request as response", AppendFetchRequest(nil, &FetchRequest{}), false},
		{"truncated body", frameOf(WireVersion, KindFetchRequest, 0, 0, 0, 0, 0, 0), true},
		{"trailing bytes", frameOf(WireVersion, KindFetchRequest, 0, 0, 0, 0, 0, 0, 0, 0, 0), true},
		{"unknown request flag", frameOf(WireVersion, KindFetchRequest, 0, 0, 0, 0, 0, 0, 0, 2), true},
		{"varint not minimal", frameOf(WireVersion, KindFetchRequest, 0x80, 0, 0, 0, 0, 0, 0), true},
		{"replica over 32 bits", frameOf(WireVersion, KindFetchRequest, binary.AppendUvarint(nil, math.MaxUint32+1)[:]...), true},
		{"offset over int64", frameOf(WireVersion, KindFetchRequest, append([]byte{0, 0, 0}, binary.AppendUvarint(nil, math.MaxInt64+1)...)...), true},
		{"unknown code", frameOf(WireVersion, KindFetchResponse, 0, 0, 0, byte(codeCount), 0, 0, 0, 0, 0, 0), false},
		{"unknown flag", frameOf(WireVersion, KindFetchResponse, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0), false},
		{"more batches than bytes", frameOf(WireVersion, KindFetchResponse, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5), false},
		{"batch without records", frameOf(WireVersion, KindFetchResponse, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0), false},
		{"batch data past the end", frameOf(WireVersion, KindFetchResponse, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 9, 'x'), false},
		{"batch end past int64", frameOf(WireVersion, KindFetchResponse, append(append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, binary.AppendUvarint(nil, math.MaxInt64)...), 1, 2, 0)...), false},
		{"cut short", good[:len(good)-1], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.req {
				_, err = DecodeFetchRequest(tt.frame)
			} else {
				var r FetchResponse
				err = DecodeFetchResponse(tt.frame, &r)
				if err != nil && len(r.Batches) != 0 {
					t.Fatal("a failed decode left batches")
				}
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestSplitFrame(t *testing.T) {
	a := AppendFetchRequest(nil, &sampleRequests()[1])
	b := AppendFetchResponse(nil, &sampleResponses()[1])
	stream := append(append([]byte{}, a...), b...)
	for cut := 0; cut < len(a); cut++ {
		if f, rest, err := SplitFrame(stream[:cut]); f != nil || err != nil || len(rest) != cut {
			t.Fatalf("cut %d: frame %v, err %v", cut, f, err)
		}
	}
	f, rest, err := SplitFrame(stream)
	if err != nil || !bytes.Equal(f, a) {
		t.Fatalf("first frame: %v", err)
	}
	f, rest, err = SplitFrame(rest)
	if err != nil || !bytes.Equal(f, b) || len(rest) != 0 {
		t.Fatalf("second frame: %v", err)
	}
	if _, _, err := SplitFrame(binary.BigEndian.AppendUint32(nil, MaxFrame+1)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized: %v", err)
	}
}

// The fuzzers check that Decode never panics, and that what it accepts
// re-encodes to the same bytes: the encoding is canonical, so a frame
// means one thing.

func FuzzDecodeFetchRequest(f *testing.F) {
	for _, q := range sampleRequests() {
		f.Add(AppendFetchRequest(nil, &q))
	}
	f.Add(frameOf(WireVersion, KindFetchRequest, 0x80, 0, 0, 0, 0, 0, 0))
	f.Fuzz(func(t *testing.T, frame []byte) {
		q, err := DecodeFetchRequest(frame)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if again := AppendFetchRequest(nil, &q); !bytes.Equal(again, frame) {
			t.Fatalf("%x decoded as %+v, re-encoded as %x", frame, q, again)
		}
	})
}

func FuzzDecodeFetchResponse(f *testing.F) {
	for _, r := range sampleResponses() {
		f.Add(AppendFetchResponse(nil, &r))
	}
	f.Add(frameOf(WireVersion, KindFetchResponse, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 'x'))
	f.Fuzz(func(t *testing.T, frame []byte) {
		var r FetchResponse
		err := DecodeFetchResponse(frame, &r)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for _, b := range r.Batches {
			if b.Count < 1 || b.End() < b.Base {
				t.Fatalf("accepted batch %+v", b)
			}
		}
		if again := AppendFetchResponse(nil, &r); !bytes.Equal(again, frame) {
			t.Fatalf("%x decoded as %+v, re-encoded as %x", frame, r, again)
		}
	})
}
