package gen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker/brokertest"
	"mecha/internal/poll"
)

func TestConfigValidate(t *testing.T) {
	tp, err := ParseTemplate([]byte(`{"user":{"dist":"sequence"},"o":{"a":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := Config{Mode: ModeTemplate, Brokers: []string{"b:9092"}, Topic: "t", Template: tp}
	replay := Config{Mode: ModeReplay, Brokers: []string{"b:9092"}, Topic: "t", FromTopic: "s"}
	double := Config{Mode: ModeDouble, Brokers: []string{"b:9092"}, Topic: "t", FromTopic: "s", Copies: 2}
	for _, c := range []Config{tmpl, replay, double} {
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", c.Mode, err)
		}
	}
	for _, c := range []struct {
		name  string
		base  Config
		edit  func(*Config)
		field string
	}{
		{"no brokers", tmpl, func(c *Config) { c.Brokers = nil }, "brokers"},
		{"no topic", tmpl, func(c *Config) { c.Topic = "" }, "topic"},
		{"negative rate", tmpl, func(c *Config) { c.Rate = -1 }, "rate"},
		{"negative count", tmpl, func(c *Config) { c.Count = -1 }, "count"},
		{"bad mode", tmpl, func(c *Config) { c.Mode = "fast" }, "mode"},
		{"no template", tmpl, func(c *Config) { c.Template = nil }, "template"},
		{"template and source", tmpl, func(c *Config) { c.FromTopic = "s" }, "from-topic"},
		{"unknown key", tmpl, func(c *Config) { c.Key = "nope" }, "key"},
		{"object key", tmpl, func(c *Config) { c.Key = "o" }, "key"},
		{"speedup in template mode", tmpl, func(c *Config) { c.Speedup = 2 }, "speedup"},
		{"copies in template mode", tmpl, func(c *Config) { c.Copies = 2 }, "copies"},
		{"no source", replay, func(c *Config) { c.FromTopic = "" }, "from-topic"},
		{"same topic", replay, func(c *Config) { c.Topic = "s" }, "topic"},
		{"negative speedup", replay, func(c *Config) { c.Speedup = -1 }, "speedup"},
		{"retime without speedup", replay, func(c *Config) { c.Retime = true }, "retime"},
		{"key in replay", replay, func(c *Config) { c.Key = "k" }, "key"},
		{"seed in replay", replay, func(c *Config) { c.Seed = 1 }, "seed"},
		{"vary in replay", replay, func(c *Config) { c.Vary = "f" }, "vary"},
		{"no copies", double, func(c *Config) { c.Copies = 0 }, "copies"},
		{"retime in doubling", double, func(c *Config) { c.Retime = true }, "retime"},
		{"template in doubling", double, func(c *Config) { c.Template = tp }, "template"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.base
			c.edit(&cfg)
			var ce *ConfigError
			if err := cfg.Validate(); !errors.As(err, &ce) || ce.Field != c.field {
				t.Fatalf("error %v, want one naming %s", err, c.field)
			}
		})
	}
}

// TestRunTemplate writes exactly Count records, each a valid object of
// the template, keyed by its user field, with no record lost or
// duplicated (the sequence field covers 0..Count-1 once each).
func TestRunTemplate(t *testing.T) {
	addr := brokertest.Start(t)
	tp, err := ParseTemplate([]byte(`{"n":{"dist":"sequence"},"user":{"dist":"string","prefix":"u-","of":{"dist":"zipf","s":1.2,"max":50}},"ts":{"dist":"now"}}`))
	if err != nil {
		t.Fatal(err)
	}
	const count = 3000
	st, err := Run(context.Background(), Config{Mode: ModeTemplate, Brokers: []string{addr}, Topic: "clicks",
		Template: tp, Count: count, Key: "user", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != count || st.Seed != 3 || st.Bytes == 0 {
		t.Fatalf("stats %+v, want %d records with seed 3", st, count)
	}
	recs := readTopic(t, addr, "clicks")
	if len(recs) != count {
		t.Fatalf("topic holds %d records, want %d", len(recs), count)
	}
	seen := make([]bool, count)
	for _, r := range recs {
		var v struct {
			N    int
			User string
			Ts   int64
		}
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("record %s: %v", r.Value, err)
		}
		if v.N < 0 || v.N >= count || seen[v.N] {
			t.Fatalf("sequence %d repeated or out of range", v.N)
		}
		seen[v.N] = true
		if string(r.Key) != v.User || !strings.HasPrefix(v.User, "u-") || v.Ts < time.Now().Add(-time.Hour).UnixMilli() {
			t.Fatalf("record %s keyed %q", r.Value, r.Key)
		}
	}
}

// TestRunTemplateUntilCancelled: with no count, Run writes until ctx
// ends, then flushes; the topic holds exactly what it reports. The rate
// holds it back: 200 records/s cannot write 100 records in under 0.45 s.
func TestRunTemplateUntilCancelled(t *testing.T) {
	addr := brokertest.Start(t)
	tp, _ := ParseTemplate([]byte(`{"n":{"dist":"sequence"}}`))
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		st  Stats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := Run(ctx, Config{Mode: ModeTemplate, Brokers: []string{addr}, Topic: "ticks", Template: tp, Rate: 200})
		done <- result{st, err}
	}()
	poll.Until(t, 30*time.Second, "100 records on ticks", func() bool { return endOffsets(t, addr, "ticks") >= 100 })
	cancel()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if n := endOffsets(t, addr, "ticks"); res.st.Records < 100 || n != res.st.Records {
		t.Fatalf("reported %d records, topic holds %d", res.st.Records, n)
	}
	if min := time.Duration(float64(res.st.Records-1) / 200 * float64(time.Second)); res.st.Elapsed < min {
		t.Fatalf("%d records at 200/s took %v, less than %v", res.st.Records, res.st.Elapsed, min)
	}
}

// srcRecord is a source record as the tests compare it.
type srcRecord struct {
	Partition int32
	Key       string
	Value     string
	Headers   string
	Timestamp int64
}

func asSrc(r *kgo.Record) srcRecord {
	var hs []string
	for _, h := range r.Headers {
		hs = append(hs, h.Key+"="+string(h.Value))
	}
	return srcRecord{r.Partition, string(r.Key), string(r.Value), strings.Join(hs, ","), r.Timestamp.UnixMilli()}
}

// fillSource writes n records over the 3 partitions of topic, with keys,
// headers and timestamps 100 ms apart from base.
func fillSource(t *testing.T, addr, topic string, n int, base int64) []srcRecord {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 3, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range n {
		r := &kgo.Record{Topic: topic, Partition: int32(i % 3), Value: []byte(fmt.Sprintf(`{"deviceId":"d%d","n":%d}`, i%5, i)),
			Timestamp: time.UnixMilli(base + int64(i)*100), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(fmt.Sprint(i))}}}
		if i%4 != 0 { // some records have no key
			r.Key = []byte(fmt.Sprintf("d%d", i%5))
		}
		recs = append(recs, r)
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var out []srcRecord
	for _, r := range recs {
		out = append(out, asSrc(r))
	}
	return out
}

// byPartition groups records by partition, in offset order.
func byPartition(recs []srcRecord) map[int32][]srcRecord {
	m := map[int32][]srcRecord{}
	for _, r := range recs {
		m[r.Partition] = append(m[r.Partition], r)
	}
	return m
}

// TestReplay copies every partition in order, with keys, values, headers
// and timestamps, into a topic it creates with as many partitions.
func TestReplay(t *testing.T) {
	addr := brokertest.Start(t)
	src := fillSource(t, addr, "src", 60, 1_600_000_000_000)
	st, err := Run(context.Background(), Config{Mode: ModeReplay, Brokers: []string{addr}, Topic: "dst", FromTopic: "src"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 60 {
		t.Fatalf("wrote %d records, want 60", st.Records)
	}
	var got []srcRecord
	for _, r := range readTopic(t, addr, "dst") {
		got = append(got, asSrc(r))
	}
	want := byPartition(src)
	for p, recs := range byPartition(got) {
		if !slices.Equal(recs, want[p]) {
			t.Fatalf("partition %d:\n got %v\nwant %v", p, recs, want[p])
		}
	}
	if len(got) != 60 {
		t.Fatalf("dst holds %d records, want 60", len(got))
	}
}

// TestReplayFewerPartitions: into a one-partition topic, the records
// arrive merged in timestamp order, each source partition's order kept.
func TestReplayFewerPartitions(t *testing.T) {
	addr := brokertest.Start(t)
	src := fillSource(t, addr, "src", 30, 1_600_000_000_000)
	cl, _ := kgo.NewClient(kgo.SeedBrokers(addr))
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, nil, "one"); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	if _, err := Run(context.Background(), Config{Mode: ModeReplay, Brokers: []string{addr}, Topic: "one", FromTopic: "src"}); err != nil {
		t.Fatal(err)
	}
	got := readTopic(t, addr, "one")
	if len(got) != len(src) {
		t.Fatalf("one holds %d records, want %d", len(got), len(src))
	}
	for i, r := range got {
		w := src[i] // fillSource's timestamps rise with i
		if string(r.Value) != w.Value || r.Timestamp.UnixMilli() != w.Timestamp {
			t.Fatalf("record %d: %s at %d, want %s at %d", i, r.Value, r.Timestamp.UnixMilli(), w.Value, w.Timestamp)
		}
	}
}

// TestReplayRetime: speedup 100 with retime turns source gaps of 100 ms
// into 1 ms gaps of event time starting at the wall clock, and the run
// takes the compressed span (less the 1 ms a record may go early).
func TestReplayRetime(t *testing.T) {
	addr := brokertest.Start(t)
	src := fillSource(t, addr, "src", 30, 1_600_000_000_000)
	before := time.Now().UnixMilli()
	st, err := Run(context.Background(), Config{Mode: ModeReplay, Brokers: []string{addr}, Topic: "fast", FromTopic: "src",
		Speedup: 100, Retime: true})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixMilli()
	// The pacer sends a record up to 1 ms early rather than sleep less.
	if span := 29*100*time.Millisecond/100 - time.Millisecond; st.Elapsed < span {
		t.Fatalf("replay took %v, less than the compressed span less 1 ms, %v", st.Elapsed, span)
	}
	got := readTopic(t, addr, "fast")
	if len(got) != len(src) {
		t.Fatalf("fast holds %d records, want %d", len(got), len(src))
	}
	var first int64
	for _, r := range got {
		var v struct{ N int64 }
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatal(err)
		}
		if v.N == 0 {
			first = r.Timestamp.UnixMilli()
		}
	}
	if first < before || first > after {
		t.Fatalf("first retimed timestamp %d, want within the run [%d, %d]", first, before, after)
	}
	for _, r := range got {
		var v struct{ N int64 }
		_ = json.Unmarshal(r.Value, &v)
		if ts := r.Timestamp.UnixMilli(); ts != first+v.N {
			t.Fatalf("record %d retimed to first+%d ms, want first+%d", v.N, ts-first, v.N)
		}
	}
	for p, recs := range byPartition(asSrcs(got)) {
		if !slices.IsSortedFunc(recs, func(a, b srcRecord) int { return int(a.Timestamp - b.Timestamp) }) {
			t.Fatalf("partition %d out of order: %v", p, recs)
		}
	}
}

func asSrcs(recs []*kgo.Record) []srcRecord {
	var out []srcRecord
	for _, r := range recs {
		out = append(out, asSrc(r))
	}
	return out
}

// TestDouble writes each record Copies times with a mecha-copy header;
// with Vary the field (and a key equal to it) differs per copy, so its
// distinct count is multiplied; without Vary the copies are identical.
func TestDouble(t *testing.T) {
	addr := brokertest.Start(t)
	fillSource(t, addr, "src", 30, 1_600_000_000_000)
	cl, _ := kgo.NewClient(kgo.SeedBrokers(addr))
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "src", Value: []byte(`[1]`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	for _, c := range []struct {
		vary     string
		distinct int
	}{{"deviceId", 20}, {"", 5}} {
		topic := "x4" + c.vary
		st, err := Run(context.Background(), Config{Mode: ModeDouble, Brokers: []string{addr}, Topic: topic, FromTopic: "src",
			Copies: 4, Vary: c.vary})
		if err != nil {
			t.Fatal(err)
		}
		if st.Records != 124 || (c.vary != "") != (st.Unvaried == 1) {
			t.Fatalf("vary %q: stats %+v, want 124 records, 1 unvaried", c.vary, st)
		}
		got := readTopic(t, addr, topic)
		if len(got) != 124 {
			t.Fatalf("%s holds %d records, want 124", topic, len(got))
		}
		devices := map[string]bool{}
		copies := map[string]int{}
		for _, r := range got {
			copies[string(r.Headers[len(r.Headers)-1].Value)]++
			if r.Headers[len(r.Headers)-1].Key != CopyHeader {
				t.Fatalf("last header %v, want %s", r.Headers, CopyHeader)
			}
			var v struct {
				DeviceID string
				N        int
			}
			if string(r.Value) == "[1]" {
				continue
			}
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Fatalf("%s: %v", r.Value, err)
			}
			devices[v.DeviceID] = true
			if r.Key != nil && string(r.Key) != v.DeviceID {
				t.Fatalf("record %s keyed %q, want its deviceId", r.Value, r.Key)
			}
			if want := fmt.Sprint(v.N); string(r.Headers[0].Value) != want {
				t.Fatalf("record %s lost its header: %v", r.Value, r.Headers)
			}
		}
		if len(devices) != c.distinct {
			t.Fatalf("vary %q: %d distinct devices, want %d", c.vary, len(devices), c.distinct)
		}
		if copies["0"] != 31 || copies["3"] != 31 {
			t.Fatalf("copy headers %v, want 31 of each", copies)
		}
	}
}

func TestVariantCopy(t *testing.T) {
	for _, c := range []struct{ value, key, want, wantKey string }{
		{`{"a":1,"d":"x\"y","b":2}`, `x"y`, `{"a":1,"d":"x\"y-2","b":2}`, `x"y-2`},
		{`{"d": 42}`, "42", `{"d": "42-2"}`, "42-2"},
		{`{"d":{"k":"v"}}`, "k", `{"d":"{\"k\":\"v\"}-2"}`, "k"},
		{`{"e":1}`, "", `{"e":1}`, ""},
		{`not json`, "", `not json`, ""},
	} {
		r := &kgo.Record{Value: []byte(c.value)}
		if c.key != "" {
			r.Key = []byte(c.key)
		}
		key, value := newVariant(r, "d").copy(2)
		if string(value) != c.want || string(key) != c.wantKey {
			t.Errorf("%s: copy 2 is %s keyed %q, want %s keyed %q", c.value, value, key, c.want, c.wantKey)
		}
	}
}

func TestMissingSource(t *testing.T) {
	addr := brokertest.Start(t)
	_, err := Run(context.Background(), Config{Mode: ModeReplay, Brokers: []string{addr}, Topic: "dst", FromTopic: "nosuch"})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "from-topic" {
		t.Fatalf("error %v, want one naming from-topic", err)
	}
}

// endOffsets sums topic's end offsets (0 while it does not exist).
func endOffsets(t *testing.T, addr, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		return 0
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += o.Offset
		}
	})
	return n
}

// readTopic reads every partition of topic to its end, each in order.
func readTopic(t *testing.T, addr, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil || ends.Error() != nil {
		t.Fatalf("end offsets of %s: %v %v", topic, err, ends.Error())
	}
	want := map[int32]int64{}
	from := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			from[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	var recs []*kgo.Record
	if len(from) == 0 {
		return nil
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	next := map[int32]int64{}
	for len(next) < len(want) || !func() bool {
		for p, end := range want {
			if next[p] < end {
				return false
			}
		}
		return true
	}() {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: got %v of %v", topic, next, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < want[r.Partition] {
				recs = append(recs, r)
				next[r.Partition] = r.Offset + 1
			}
		})
	}
	slices.SortStableFunc(recs, func(a, b *kgo.Record) int { return int(a.Partition - b.Partition) })
	return recs
}

// FuzzVary: finding the varied field never panics, stays within the
// value, finds any top-level field encoding/json finds, and a copy of a
// JSON object is still JSON.
func FuzzVary(f *testing.F) {
	for _, s := range []string{`{"d":"x","e":1}`, `{"a":{"d":[1,"}"]},"d":"\"q\\"}`, ` { "d" : 42 } `, `{"d":{"k":"v"}}`,
		`{"d":}`, `{"d":"unterminated`, `[1]`, `{"\u0064":true}`, `{"a":"b",}`} {
		f.Add([]byte(s), "d")
	}
	f.Fuzz(func(t *testing.T, value []byte, field string) {
		start, end, ok := findField(value, field)
		if ok && (start < 0 || end <= start || end > len(value)) {
			t.Fatalf("span [%d,%d) of %d bytes", start, end, len(value))
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(value, &obj) != nil || !utf8.Valid(value) || !utf8.ValidString(field) {
			return // encoding/json replaces invalid UTF-8 in keys; findField matches bytes
		}
		if _, has := obj[field]; has != ok {
			t.Fatalf("%s: found %q: %v, encoding/json says %v", value, field, ok, has)
		}
		_, copied := newVariant(&kgo.Record{Value: value}, field).copy(3)
		if !json.Valid(copied) {
			t.Fatalf("copy of %s varying %q is not JSON: %s", value, field, copied)
		}
	})
}
