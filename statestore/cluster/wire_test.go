package cluster

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"mecha/statestore"
)

var methods = []uint16{MethodGet, MethodSet, MethodDelete, MethodApply, MethodBulkGet, MethodBulkSet, MethodScan, MethodDeleteChildren}

// sampleRequests are valid requests of every method: the round trip
// test's cases and the request fuzzer's seeds.
func sampleRequests() map[uint16][]*Request {
	one := []SlotEpoch{{Slot: 7, Epoch: 3}}
	set := statestore.Write{Key: "app||k", Value: []byte("v"), ETag: ptr("12"), FirstWrite: true, TTLSeconds: -1}
	del := statestore.Write{Key: "app||k", Delete: true, ETag: ptr("")}
	return map[uint16][]*Request{
		MethodGet:            {{Store: "s", Slots: one, Key: "app||k"}},
		MethodSet:            {{Store: "s", Slots: one, Writes: []statestore.Write{set}}, {Store: "", Slots: one, Writes: []statestore.Write{{Key: "k", TTLSeconds: 60}}}},
		MethodDelete:         {{Store: "s", Slots: one, Writes: []statestore.Write{del}}},
		MethodApply:          {{Store: "s", Slots: one, Writes: []statestore.Write{set, del, {Key: "x", Value: []byte{}}}}},
		MethodBulkGet:        {{Store: "s", Slots: one, Keys: []string{"a", "b", ""}}},
		MethodBulkSet:        {{Store: "s", Slots: one, Writes: []statestore.Write{set, del}}},
		MethodScan:           {{Store: "s", Slots: []SlotEpoch{{0, 1}, {1023, 1 << 40}}, Prefix: "app||", After: "app||k", Limit: 100}},
		MethodDeleteChildren: {{Store: "s", Slots: one, Prefix: "app||"}},
	}
}

func sampleResponses() map[uint16][]*Response {
	it := statestore.Item{Value: []byte("v"), Version: 9, Expires: time.Unix(0, 1_800_000_000_123_456_789)}
	moved := &Response{Err: &Error{Code: CodeMoved, Slot: 5, Epoch: 4, Leader: "b"}}
	mismatch := &Error{Code: CodeETagMismatch, Msg: `etag mismatch: key "k"`}
	scanned := it
	scanned.Key = "app||k"
	return map[uint16][]*Response{
		MethodGet:            {{Found: true, Item: it}, {}, moved},
		MethodSet:            {{Versions: []uint64{3}}, {Err: mismatch}},
		MethodDelete:         {{}, {Err: &Error{Code: CodeUnavailable, Msg: "later"}}},
		MethodApply:          {{Versions: []uint64{3, 4, 5}}},
		MethodBulkGet:        {{Results: []Result{{Found: true, Item: it}, {}, {Err: mismatch}}}},
		MethodBulkSet:        {{Results: []Result{{Version: 4}, {Err: mismatch}}}},
		MethodScan:           {{Items: []statestore.Item{scanned, {Key: "z", Version: 1}}}},
		MethodDeleteChildren: {{Count: 42}},
	}
}

func TestWireRoundTrip(t *testing.T) {
	for m, reqs := range sampleRequests() {
		for _, r := range reqs {
			b := AppendRequest(nil, m, r)
			got, err := DecodeRequest(m, b)
			if err != nil {
				t.Fatalf("method %#04x: %v", m, err)
			}
			if !bytes.Equal(AppendRequest(nil, m, got), b) || got.Store != r.Store || len(got.Writes) != len(r.Writes) {
				t.Errorf("method %#04x: %+v round trips to %+v", m, r, got)
			}
			for i := range r.Writes {
				w, g := r.Writes[i], got.Writes[i]
				if w.Key != g.Key || !bytes.Equal(w.Value, g.Value) || (w.ETag == nil) != (g.ETag == nil) || w.ETag != nil && *w.ETag != *g.ETag || w.TTLSeconds != g.TTLSeconds || w.FirstWrite != g.FirstWrite || w.Delete != g.Delete {
					t.Errorf("method %#04x write %d: %+v round trips to %+v", m, i, w, g)
				}
			}
		}
	}
	for m, resps := range sampleResponses() {
		for _, r := range resps {
			b := AppendResponse(nil, m, r)
			got, err := DecodeResponse(m, b)
			if err != nil {
				t.Fatalf("method %#04x: %v", m, err)
			}
			if !bytes.Equal(AppendResponse(nil, m, got), b) {
				t.Errorf("method %#04x: %+v round trips to %+v", m, r, got)
			}
			if r.Found && (!got.Item.Expires.Equal(r.Item.Expires) || got.Item.Version != r.Item.Version) {
				t.Errorf("method %#04x: item %+v round trips to %+v", m, r.Item, got.Item)
			}
		}
	}
	resp, _ := DecodeResponse(MethodSet, AppendResponse(nil, MethodSet, &Response{Err: &Error{Code: CodeETagMismatch, Msg: "etag mismatch: key \"k\""}}))
	if !errors.Is(resp.Err, statestore.ErrETagMismatch) || resp.Err.Error() != `etag mismatch: key "k"` {
		t.Errorf("an etag mismatch comes back as %v", resp.Err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	good := AppendRequest(nil, MethodGet, sampleRequests()[MethodGet][0])
	cases := map[string]struct {
		method uint16
		b      []byte
	}{
		"empty":               {MethodGet, nil},
		"version":             {MethodGet, append([]byte{2}, good[1:]...)},
		"trailing":            {MethodGet, append(append([]byte(nil), good...), 0)},
		"truncated":           {MethodGet, good[:len(good)-1]},
		"unknown method":      {0x0299, good},
		"two slots for a get": {MethodGet, AppendRequest(nil, MethodGet, &Request{Slots: []SlotEpoch{{1, 1}, {2, 1}}, Key: "k"})},
		"slot out of range":   {MethodGet, AppendRequest(nil, MethodGet, &Request{Slots: []SlotEpoch{{1024, 1}}, Key: "k"})},
		"no writes":           {MethodApply, AppendRequest(nil, MethodApply, &Request{Slots: []SlotEpoch{{1, 1}}})},
		"delete as set":       {MethodSet, AppendRequest(nil, MethodSet, &Request{Slots: []SlotEpoch{{1, 1}}, Writes: []statestore.Write{{Key: "k", Delete: true}}})},
		"not minimal":         {MethodGet, []byte{1, 0x80, 0x00}},
		"a slot twice":        {MethodScan, AppendRequest(nil, MethodScan, &Request{Slots: []SlotEpoch{{3, 1}, {3, 2}}})},
	}
	for name, c := range cases {
		if _, err := DecodeRequest(c.method, c.b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := DecodeResponse(MethodGet, []byte{codeMax + 1, 0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("an unknown status: %v", err)
	}
}

// fuzzMethod picks a method from a fuzzer's byte.
func fuzzMethod(b byte) uint16 { return methods[int(b)%len(methods)] }

func FuzzDecodeRequest(f *testing.F) {
	for i, m := range methods {
		for _, r := range sampleRequests()[m] {
			f.Add(byte(i), AppendRequest(nil, m, r))
		}
	}
	f.Add(byte(0), []byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, mb byte, b []byte) {
		m := fuzzMethod(mb)
		r, err := DecodeRequest(m, b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error that is not ErrMalformed: %v", err)
			}
			return
		}
		// One encoding per request.
		if again := AppendRequest(nil, m, r); !bytes.Equal(again, b) {
			t.Fatalf("decoded %x, encodes to %x", b, again)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	for i, m := range methods {
		for _, r := range sampleResponses()[m] {
			f.Add(byte(i), AppendResponse(nil, m, r))
		}
	}
	f.Fuzz(func(t *testing.T, mb byte, b []byte) {
		m := fuzzMethod(mb)
		r, err := DecodeResponse(m, b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error that is not ErrMalformed: %v", err)
			}
			return
		}
		if again := AppendResponse(nil, m, r); !bytes.Equal(again, b) {
			t.Fatalf("decoded %x, encodes to %x", b, again)
		}
	})
}

func TestErrorCodesKeepSentinels(t *testing.T) {
	for code, s := range sentinels {
		e := toError(s)
		if e.Code != code {
			t.Errorf("%v maps to code %d, want %d", s, e.Code, code)
		}
		back, _ := DecodeResponse(MethodSet, AppendResponse(nil, MethodSet, &Response{Err: e}))
		if !errors.Is(back.Err, s) {
			t.Errorf("code %d does not come back as %v", code, s)
		}
	}
	var in interface{ InvalidInput() bool }
	if e := toError(statestore.ErrValueTooBig); !errors.As(e, &in) || !in.InvalidInput() {
		t.Errorf("an input error stays one")
	}
}
