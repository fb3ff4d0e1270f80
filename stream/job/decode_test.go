package job

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"
)

// referenceDecode is the decode the engine had before its own, on
// encoding/json: the decoder must agree with it on what is valid and on
// the values. One difference is on purpose: the old decode took a stray
// '}' or ']' after the object (json.Decoder.More reports no more there),
// which is not JSON; the reference, like the decoder, refuses it.
func referenceDecode(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("want a JSON object, got null")
	}
	if len(bytes.TrimLeft(b[dec.InputOffset():], " \t\r\n")) > 0 {
		return nil, fmt.Errorf("data after the JSON object")
	}
	for k, v := range m {
		m[k] = referenceNumbers(v)
	}
	return m, nil
}

func referenceNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = referenceNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = referenceNumbers(e)
		}
	}
	return v
}

var decodeCorpus = []string{
	`{}`,
	`{"a":1,"b":-2,"c":1.5,"d":1e3,"e":-0,"f":9223372036854775807,"g":9223372036854775808,"h":1.0}`,
	`{"s":"plain","e":"esc \"q\" \\ \/ \b\f\n\r\t \u00e9 \ud83d\ude00","u":""}`,
	`{"t":true,"f":false,"n":null}`,
	`{"nested":{"x":[1,"two",{"y":3.25}],"z":{}},"arr":[]}`,
	`  {"ws" : 1 }  `,
	`{"dup":1,"dup":2}`,
	"{\"bad utf8\":\"a\xffb\xc3\"}",
	"{\"k\xfe\":1}",
	string(benchBid), string(benchAuction), string(benchPerson),
	// Invalid: each must fail both ways.
	`null`, `[1,2]`, `"s"`, `12`, `{not json`, `{"a":1} {"b":2}`, `{"a":1}x`, ``, `{"a":01}`, `{"a":1.}`, `{"a":.5}`,
	`{"a":+1}`, `{"a":inf}`, `{"a":nan}`, `{"a":1.2.3}`, `{"a":"\x01"}`, `{"a":"\q"}`, `{"a":"\u12"}`, `{"a":tru}`,
	`{"a":1,}`, `{"a"}`, `{}}`, `{}]`, `{"a":-}`, `{"a":-01}`, `{"a":1e}`, `{"a":1e+}`, `{"a":"\ud800\u0041"}`, `{"a":"\ud83d\ude00x"}`,
	`{"a":[[[[]]]],"b":{"c":{"d":null}}}`, `{"a":1 "b":2}`, `{"a" 1}`, `{,}`, `[`, `{"a":[1 2]}`, "{\"a\":\"\\u00e9\"}", `{'a':1}`, `{"a":[1,]}`, `{"a":"unterminated}`,
}

// The decoder accepts exactly what encoding/json accepts and gives the
// same values.
func TestDecodeMatchesEncodingJSON(t *testing.T) {
	var d decoder
	for _, in := range decodeCorpus {
		want, werr := referenceDecode([]byte(in))
		got, err := d.decode([]byte(in))
		if (err != nil) != (werr != nil) {
			t.Errorf("%q: error %v, encoding/json %v", in, err, werr)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q:\n got %#v\nwant %#v", in, got, want)
		}
	}
	if _, err := d.decode([]byte(`null`)); err == nil || err.Error() != "want a JSON object, got null" {
		t.Errorf("null: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, in := range decodeCorpus {
		f.Add([]byte(in))
	}
	var all decoder
	some := newDecoder(map[string]struct{}{"a": {}, "0": {}, "": {}})
	f.Fuzz(func(t *testing.T, in []byte) {
		want, werr := referenceDecode(in)
		got, err := all.decode(in)
		if (err != nil) != (werr != nil) {
			t.Fatalf("%q: error %v, encoding/json %v", in, err, werr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %#v\nwant %#v", in, got, want)
		}
		// Decoding some fields checks all of the record the same way,
		// and gives those fields' values.
		got, err = some.decode(in)
		if (err != nil) != (werr != nil) {
			t.Fatalf("%q, some fields: error %v, encoding/json %v", in, err, werr)
		}
		if err == nil {
			maps.DeleteFunc(want, func(k string, _ any) bool { _, ok := some.only[k]; return !ok })
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%q, some fields:\n got %#v\nwant %#v", in, got, want)
			}
		}
	})
}

// A job decodes only the fields it reads, unless a record reaches its
// sink whole or an expression reads $env.
func TestDecodedFields(t *testing.T) {
	win := Window{Type: "tumbling", Size: Duration{time.Second}}
	base := Spec{Name: "f", Source: Source{Topic: "t", EventTimeField: "ts"}, Sink: Sink{Type: "topic", Topic: "o"}}
	for _, tc := range []struct {
		name string
		edit func(*Spec)
		want []string // nil: every field
	}{
		{"pass-through to a topic needs the whole record", func(s *Spec) { s.Filter = "a > 1" }, nil},
		{"pass-through to the blackhole", func(s *Spec) { s.Filter = "a > 1"; s.Sink = Sink{Type: "blackhole"} }, []string{"a", "ts"}},
		{"a map reads its inputs", func(s *Spec) { s.Map = map[string]string{"x": "b * 2", "y": "c"}; s.KeyBy = "x" }, []string{"b", "c", "ts"}},
		{"a window reads the key and the field", func(s *Spec) {
			s.Filter, s.KeyBy, s.Window, s.Aggregate = "kind == 'bid'", "auction", win, Aggregate{Type: "sum", Field: "price"}
		}, []string{"auction", "kind", "price", "ts"}},
		{"$env reads everything", func(s *Spec) { s.Filter = `$env["a"] > 1`; s.Window, s.Aggregate = win, Aggregate{Type: "count"} }, nil},
		{"a join emits whole records", func(s *Spec) {
			s.KeyBy, s.Window = "id", win
			s.Join = &Join{Topic: "r", KeyBy: "rid"}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			tc.edit(&s)
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			p, err := compile(s)
			if err != nil {
				t.Fatal(err)
			}
			got := decodedFields(s, p)
			if tc.want == nil {
				if got != nil {
					t.Fatalf("decodes %v, want every field", slices.Sorted(maps.Keys(got)))
				}
				return
			}
			for _, f := range tc.want {
				if _, ok := got[f]; !ok {
					t.Errorf("does not decode %s (decodes %v)", f, slices.Sorted(maps.Keys(got)))
				}
			}
			d := newDecoder(got)
			m, err := d.decode([]byte(`{"a":2,"b":3,"c":"x","kind":"bid","auction":7,"price":5,"ts":100,"unused":{"big":[1,2,3]}}`))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m["unused"]; ok {
				t.Errorf("decoded a field no expression reads: %v", m)
			}
		})
	}
}
