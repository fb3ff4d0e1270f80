package gen

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseTemplateErrors(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70)
	for _, c := range []struct{ name, tmpl, want string }{
		{"uniform min > max", `{"device":{"id":{"dist":"uniform","min":10,"max":5}}}`, "template: $.device.id: uniform: min 10 > max 5"},
		{"unknown dist", `{"a":{"dist":"poisson"}}`, `template: $.a: dist: unknown distribution "poisson"`},
		{"dist not a string", `{"a":{"dist":3}}`, "template: $.a: dist: want a string"},
		{"missing param", `{"a":{"dist":"uniform","min":1}}`, "template: $.a: uniform: max: required"},
		{"unknown param", `{"a":{"dist":"uniform","min":1,"mx":2,"max":3}}`, `template: $.a: uniform: unknown parameter "mx" (want min, max)`},
		{"not an integer", `{"a":{"dist":"uniform","min":1.5,"max":3}}`, "template: $.a: uniform: min: want an integer, got 1.5"},
		{"number as string", `{"a":{"dist":"uniform","min":"1","max":3}}`, `template: $.a: uniform: min: want an integer, got "1"`},
		{"negative stddev", `{"x":{"dist":"normal","mean":1,"stddev":-1}}`, "template: $.x: normal: stddev -1 < 0"},
		{"too many decimals", `{"x":{"dist":"normal","stddev":1,"decimals":20}}`, "template: $.x: normal: decimals 20: want 0 to 15"},
		{"zipf s", `{"u":{"dist":"zipf","s":1,"max":10}}`, "template: $.u: zipf: s 1: want > 1"},
		{"zipf v", `{"u":{"dist":"zipf","s":1.2,"v":0.5,"max":10}}`, "template: $.u: zipf: v 0.5: want ≥ 1"},
		{"zipf max", `{"u":{"dist":"zipf","s":1.2,"max":0}}`, "template: $.u: zipf: max 0: want ≥ 1"},
		{"choice no values", `{"c":{"dist":"choice"}}`, "template: $.c: choice: values: required"},
		{"choice empty values", `{"c":{"dist":"choice","values":[]}}`, "template: $.c: choice: values: want a non-empty array, got []"},
		{"choice weights count", `{"c":{"dist":"choice","values":["a","b"],"weights":[1]}}`, "template: $.c: choice: weights: want an array of 2 numbers, one per value, got [1]"},
		{"choice negative weight", `{"c":{"dist":"choice","values":["a","b"],"weights":[1,-2]}}`, "template: $.c: choice: weights[1]: want a number ≥ 0, got -2"},
		{"choice zero weights", `{"c":{"dist":"choice","values":["a","b"],"weights":[0,0]}}`, "template: $.c: choice: weights: want a finite sum > 0, got 0"},
		{"string without of", `{"user":{"dist":"string","prefix":"u-"}}`, "template: $.user: string: of: required"},
		{"string of a float", `{"user":{"dist":"string","of":{"dist":"normal","stddev":1}}}`, "template: $.user: string: of: want an integer generator (sequence, uniform or zipf), got normal"},
		{"string of a constant", `{"user":{"dist":"string","of":7}}`, "template: $.user: string: of: want a generator object"},
		{"string inner", `{"user":{"dist":"string","of":{"dist":"uniform","min":3,"max":1}}}`, "template: $.user.of: uniform: min 3 > max 1"},
		{"string prefix type", `{"user":{"dist":"string","prefix":3,"of":{"dist":"sequence"}}}`, "template: $.user: string: prefix: want a string, got 3"},
		{"now jitter", `{"ts":{"dist":"now","jitter":-1}}`, "template: $.ts: now: jitter -1: want 0 to"},
		{"bool p", `{"b":{"dist":"bool","p":2}}`, "template: $.b: bool: p 2: want 0 to 1"},
		{"in an array", `{"tags":[1,{"dist":"bool","p":-1}]}`, "template: $.tags[1]: bool: p -1: want 0 to 1"},
		{"odd key", `{"a b":{"dist":"x"}}`, `template: $["a b"]: dist: unknown distribution "x"`},
		{"out of range", `{"a":{"dist":"normal","stddev":1e999}}`, "template: $.a: normal: stddev: 1e999 is out of range"},
		{"not an object", `[1,2]`, "template: $: want a JSON object"},
		{"record is a generator", `{"dist":"bool"}`, "template: $: the record itself cannot be a generator"},
		{"trailing data", `{} {}`, "template: $: data after the top-level object"},
		{"syntax", `{"a": }`, "template: $.a: invalid character '}'"},
		{"duplicate key", `{"a":1,"a":2}`, "template: $.a: duplicate key"},
		{"too deep", deep, "nested deeper than 64 levels"},
		{"empty", ``, "template: $: unexpected EOF"},
		{"truncated", `{"a":{"dist":"bool"`, "template: $.a:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseTemplate([]byte(c.tmpl))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to say %q", err, c.want)
			}
			if !errors.Is(err, ErrTemplate) {
				t.Fatalf("error %v does not wrap ErrTemplate", err)
			}
		})
	}
}

// TestTemplateLiterals: constants come out as written (numbers keep
// their text, strings are escaped again), fields keep their order, and
// generators sit in place at any depth.
func TestTemplateLiterals(t *testing.T) {
	tmpl := `{"kind":"click", "n":{"dist":"sequence","start":5},
	  "meta":{"v":1.50,"tags":["a",null,true,{"dist":"sequence","start":-1}]},"s":"q\"x\u0001<é>","z":{}}`
	g := newGen(t, tmpl, 1, "")
	var got []string
	var buf []byte
	for range 2 {
		buf, _ = g.Append(buf[:0])
		got = append(got, string(buf))
	}
	want := []string{
		`{"kind":"click","n":5,"meta":{"v":1.50,"tags":["a",null,true,-1]},"s":"q\"x\u0001<é>","z":{}}`,
		`{"kind":"click","n":6,"meta":{"v":1.50,"tags":["a",null,true,0]},"s":"q\"x\u0001<é>","z":{}}`,
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

func TestDeterministicWithSeed(t *testing.T) {
	const tmpl = `{"user":{"dist":"string","prefix":"user-","of":{"dist":"zipf","s":1.1,"max":1000000}},
	  "x":{"dist":"uniform","min":0,"max":1000},"y":{"dist":"normal","mean":5,"stddev":2,"decimals":3},
	  "c":{"dist":"choice","values":["a","b","c"],"weights":[1,2,3]},"b":{"dist":"bool"},
	  "ts":{"dist":"now","jitter":500}}`
	run := func(seed uint64) string {
		g := newGen(t, tmpl, seed, "")
		g.Now = func() int64 { return 1_700_000_000_000 }
		var buf []byte
		for range 1000 {
			buf, _ = g.Append(buf)
		}
		return string(buf)
	}
	a, b, c := run(7), run(7), run(8)
	if a != b {
		t.Fatal("the same seed gave different records")
	}
	if a == c {
		t.Fatal("different seeds gave the same records")
	}
}

// TestDistributions checks each generator's range and shape on 20,000
// records from a fixed seed, with tolerances many standard deviations
// wide.
func TestDistributions(t *testing.T) {
	const n = 20000
	const tmpl = `{"seq":{"dist":"sequence","start":10},"u":{"dist":"uniform","min":-3,"max":3},
	  "z":{"dist":"zipf","s":1.5,"max":100},"c":{"dist":"choice","values":["a","b",{"k":1},"never"],"weights":[8,1,1,0]},
	  "nrm":{"dist":"normal","mean":100,"stddev":10},"b":{"dist":"bool","p":0.25},
	  "s":{"dist":"string","prefix":"user-","suffix":"!","of":{"dist":"uniform","min":1,"max":9}},
	  "ts":{"dist":"now","jitter":100},"big":{"dist":"uniform","min":-9223372036854775808,"max":9223372036854775807}}`
	g := newGen(t, tmpl, 42, "")
	const now = 1_700_000_000_000
	g.Now = func() int64 { return now }
	uniform, zipf, choice := map[int64]int{}, map[int64]int{}, map[string]int{}
	var sum float64
	trues := 0
	var buf []byte
	for i := range n {
		buf, _ = g.Append(buf[:0])
		var r struct {
			Seq, U, Z, Ts int64
			C             json.RawMessage
			Nrm           float64
			B             bool
			S             string
		}
		if err := json.Unmarshal(buf, &r); err != nil {
			t.Fatalf("record %d %s: %v", i, buf, err)
		}
		if r.Seq != int64(10+i) {
			t.Fatalf("sequence %d at record %d, want %d", r.Seq, i, 10+i)
		}
		if r.U < -3 || r.U > 3 || r.Z < 1 || r.Z > 100 {
			t.Fatalf("out of range: uniform %d, zipf %d", r.U, r.Z)
		}
		if len(r.S) != len("user-1!") || !strings.HasPrefix(r.S, "user-") || !strings.HasSuffix(r.S, "!") {
			t.Fatalf("string %q, want user-<1..9>!", r.S)
		}
		if r.Ts < now-100 || r.Ts > now {
			t.Fatalf("now %d, want within [now-100, now]", r.Ts)
		}
		uniform[r.U]++
		zipf[r.Z]++
		choice[string(r.C)]++
		sum += r.Nrm
		if r.B {
			trues++
		}
	}
	if len(uniform) != 7 {
		t.Errorf("uniform over [-3,3] gave %d distinct values, want 7", len(uniform))
	}
	for k, c := range zipf {
		if k != 1 && c >= zipf[1] {
			t.Errorf("zipf: key %d came %d times, key 1 %d times; want 1 the most frequent", k, c, zipf[1])
		}
	}
	if zipf[1] < zipf[2]*2 {
		t.Errorf("zipf s=1.5: key 1 came %d times, key 2 %d; want about 2.8×", zipf[1], zipf[2])
	}
	if share := float64(choice[`"a"`]) / n; math.Abs(share-0.8) > 0.03 {
		t.Errorf("choice: weight 8 of 10 chosen %.3f of the time", share)
	}
	if choice[`"never"`] != 0 || choice[`{"k":1}`] == 0 {
		t.Errorf("choice counts %v: want the zero-weight value never, the object sometimes", choice)
	}
	if mean := sum / n; math.Abs(mean-100) > 1 {
		t.Errorf("normal: mean %.2f, want 100±1", mean)
	}
	if share := float64(trues) / n; math.Abs(share-0.25) > 0.03 {
		t.Errorf("bool p=0.25: true %.3f of the time", share)
	}
}

func TestKeys(t *testing.T) {
	const tmpl = `{"user":{"dist":"string","prefix":"u\"","of":{"dist":"sequence","start":3}},"n":{"dist":"sequence"},
	  "region":"eu","v":1.5,"nil":null,"obj":{"a":1}}`
	for _, c := range []struct{ field, want string }{
		{"user", `u"3`}, {"n", "0"}, {"region", "eu"}, {"v", "1.5"}, {"", ""}, {"nil", ""},
	} {
		g := newGen(t, tmpl, 1, c.field)
		_, key := g.Append(nil)
		if string(key) != c.want || (c.want == "") != (key == nil) {
			t.Errorf("key %q: got %q, want %q", c.field, key, c.want)
		}
	}
	tp, _ := ParseTemplate([]byte(tmpl))
	for field, want := range map[string]string{"nope": "not a top-level field", "obj": "cannot key a record"} {
		if _, err := tp.NewGenerator(1, field); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("key %q: error %v, want %q", field, err, want)
		}
	}
}

func newGen(t testing.TB, tmpl string, seed uint64, key string) *Generator {
	t.Helper()
	tp, err := ParseTemplate([]byte(tmpl))
	if err != nil {
		t.Fatal(err)
	}
	g, err := tp.NewGenerator(seed, key)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// FuzzTemplate: a template either fails with an error naming the
// template, or makes valid JSON objects.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{
		clickTemplate,
		`{"a":1}`, `{}`, `{"a":{"dist":"uniform","min":10,"max":5}}`,
		`{"a":[{"dist":"bool"},{"b":{"dist":"now","jitter":5}}],"c":{"dist":"choice","values":[1,"x",{"dist":"bool"}]}}`,
		`{"u":{"dist":"zipf","s":1.0000001,"v":1e15,"max":9e18}}`,
		`{"n":{"dist":"normal","mean":1e308,"stddev":1e308,"decimals":2}}`,
		`{"s":{"dist":"string","prefix":"\u0000\"","of":{"dist":"uniform","min":-9223372036854775808,"max":9223372036854775807}}}`,
		`{"a b":"\ud800","k":{"dist":"sequence","start":9223372036854775807}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		tp, err := ParseTemplate(raw)
		if err != nil {
			if !errors.Is(err, ErrTemplate) || !strings.HasPrefix(err.Error(), "template: $") {
				t.Fatalf("error %q does not name a template path", err)
			}
			return
		}
		for field := range tp.top {
			g, err := tp.NewGenerator(1, field)
			if err != nil {
				continue
			}
			var buf []byte
			for range 3 {
				buf, _ = g.Append(buf[:0])
				var obj map[string]any
				dec := json.NewDecoder(bytes.NewReader(buf))
				dec.UseNumber() // a constant may be beyond float64
				if err := dec.Decode(&obj); err != nil || dec.More() {
					t.Fatalf("template %s made %s: %v", raw, buf, err)
				}
			}
		}
		g, _ := tp.NewGenerator(2, "")
		buf, key := g.Append(nil)
		if key != nil || !json.Valid(buf) || !bytes.HasPrefix(buf, []byte("{")) {
			t.Fatalf("template %s made %s (key %q)", raw, buf, key)
		}
	})
}

// clickTemplate is a click stream: hot users and pages, a device, an
// event time.
const clickTemplate = `{
  "type": "click",
  "clickId": {"dist": "sequence"},
  "userId": {"dist": "string", "prefix": "user-", "of": {"dist": "zipf", "s": 1.1, "max": 1000000}},
  "page": {"dist": "choice", "values": ["/", "/search", "/item", "/cart", "/checkout"], "weights": [40, 25, 20, 10, 5]},
  "device": {"os": {"dist": "choice", "values": ["android", "ios", "web"]}, "id": {"dist": "uniform", "min": 1, "max": 5000000}},
  "latencyMs": {"dist": "normal", "mean": 120, "stddev": 30, "decimals": 1},
  "loggedIn": {"dist": "bool", "p": 0.7},
  "ts": {"dist": "now"}
}`

// BenchmarkTemplate measures making click records into a reused buffer.
func BenchmarkTemplate(b *testing.B) {
	g := newGen(b, clickTemplate, 1, "userId")
	var buf []byte
	var n int
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = g.Append(buf[:0])
		n += len(buf)
	}
	b.SetBytes(int64(n / max(b.N, 1)))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
