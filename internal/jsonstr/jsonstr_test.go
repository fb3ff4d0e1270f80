package jsonstr

import (
	"encoding/json"
	"testing"
)

// FuzzAppendString: what it writes is what encoding/json reads back as
// the same string (after encoding/json's own invalid-UTF-8 replacement).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "q\"b\\s\n\r\t\x01", "héllo", "\xff\xfe", "日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var got string
		b := AppendString(nil, s)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encoded as %s, which is not JSON: %v", s, b, err)
		}
		want, _ := json.Marshal(s)
		var wantS string
		_ = json.Unmarshal(want, &wantS)
		if got != wantS {
			t.Fatalf("%q round-tripped to %q, want %q", s, got, wantS)
		}
	})
}
