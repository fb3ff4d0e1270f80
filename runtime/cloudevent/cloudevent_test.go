package cloudevent

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAppendRoundTrip(t *testing.T) {
	cases := []struct {
		name     string
		ct       string
		data     string
		wantData any
		b64      bool
	}{
		{"json object", "application/json", `{"a": 1}`, map[string]any{"a": 1.0}, false},
		{"text/plain is the default ct, as in Dapr", "", `[1,2]`, "[1,2]", false},
		{"invalid json becomes string", "application/json", `{oops`, "{oops", false},
		{"text", "text/plain", "hello \"world\"\n", "hello \"world\"\n", false},
		{"binary", "application/octet-stream", "\x00\x01\xff", nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := Append(nil, &Envelope{Source: "app", Topic: "t", PubsubName: "ps", ContentType: c.ct, TraceParent: "00-abc-def-01", Data: []byte(c.data)})
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("envelope is not JSON: %v\n%s", err, b)
			}
			for k, want := range map[string]string{"specversion": "1.0", "source": "app", "topic": "t", "pubsubname": "ps", "type": EventType, "traceparent": "00-abc-def-01"} {
				if m[k] != want {
					t.Errorf("%s = %v, want %v", k, m[k], want)
				}
			}
			if id, _ := m["id"].(string); len(id) != 36 {
				t.Errorf("id %q is not a uuid", id)
			}
			ev, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if c.b64 {
				if string(ev.Data) != c.data {
					t.Errorf("base64 data = %q, want %q", ev.Data, c.data)
				}
				return
			}
			got, _ := json.Marshal(m["data"])
			want, _ := json.Marshal(c.wantData)
			if string(got) != string(want) {
				t.Errorf("data = %s, want %s", got, want)
			}
		})
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "quo\"te", "back\\slash", "ctl\x01\x1f", "tab\tnl\n", "ünïcødé", "bad\xffutf8", "<html>&"} {
		got := AppendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q: %v (%s)", s, err, got)
		}
		want := s
		if !utf8.ValidString(s) {
			want = string([]rune(s))
		}
		if back != want {
			t.Errorf("round trip %q -> %s -> %q", s, got, back)
		}
	}
}

func TestComplete(t *testing.T) {
	out, err := Complete([]byte(`{"id":"x1","type":"my.type","data":{"n":1}}`), "app", "orders", "pubsub", "")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(out, &m)
	if m["id"] != "x1" || m["type"] != "my.type" || m["topic"] != "orders" || m["source"] != "app" || m["specversion"] != "1.0" {
		t.Errorf("unexpected %v", m)
	}
	if _, err := Complete([]byte(`[1]`), "a", "b", "c", ""); err == nil {
		t.Error("want error for non-object")
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{``, `null`, `[1]`, `{"id":5}`, `{"data_base64":"!!"}`, `{"data_base64":3}`} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) succeeded", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"1","data":{"a":1}}`))
	f.Add([]byte(`{"data_base64":"AAE="}`))
	f.Add([]byte(`{"id":"1","data":{"n":1e400},"x":-1e999}`))
	f.Add([]byte(`{"data":"text","datacontenttype":"text/plain"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever parsed must re-wrap into valid JSON.
		out := Append(nil, &Envelope{Source: ev.Source, Topic: ev.Topic, PubsubName: ev.PubsubName, ContentType: ev.DataContentType, Data: ev.Data})
		if !json.Valid(out) {
			t.Fatalf("re-wrapped event is not JSON: %s", out)
		}
		// The attributes decode as encoding/json decodes them.
		checkAsEncodingJSON(t, b, ev)
	})
}

// checkAsEncodingJSON compares ev's attributes with encoding/json's
// reading of b: the core strings, Fields and Extensions.
func checkAsEncodingJSON(t *testing.T, b []byte, ev *Event) {
	t.Helper()
	var want map[string]any
	got, err := ev.Fields()
	if jerr := json.Unmarshal(b, &want); jerr != nil {
		// Parse keeps attributes undecoded (a number no float64
		// holds); decoding them must fail as encoding/json does.
		if err == nil {
			t.Fatalf("Fields decoded what encoding/json refuses (%v): %v", jerr, got)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Fields = %#v, encoding/json reads %#v", got, want)
	}
	for name, v := range map[string]string{"id": ev.ID, "source": ev.Source, "type": ev.Type, "topic": ev.Topic, "traceparent": ev.TraceParent} {
		if w, _ := want[name].(string); w != v {
			t.Fatalf("%s = %q, encoding/json reads %q", name, v, w)
		}
	}
	ext, err := ev.Extensions()
	if err != nil {
		return // a value structpb cannot hold (an invalid UTF-8 key)
	}
	for k, v := range ext.AsMap() {
		if coreKeys[k] || !reflect.DeepEqual(v, want[k]) {
			t.Fatalf("extension %s = %#v, encoding/json reads %#v", k, v, want[k])
		}
	}
	for k := range want {
		if _, ok := ext.GetFields()[k]; !ok && !coreKeys[k] {
			t.Fatalf("extension %s missing", k)
		}
	}
}

// Escaped strings, invalid UTF-8, nested data and extensions of every
// JSON type read as encoding/json reads them.
func TestParseAsEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{"specversion":"1.0","id":"a\"b","source":"caf\u00e9","type":"t","topic":"orders","pubsubname":"p","traceparent":"00-x","time":"2026-01-01T00:00:00Z","n":3.5,"flag":true,"none":null,"obj":{"k":[1,"x"]},"data":{"orderId":42}}`,
		"{\"id\":\"\xff\xfe\",\"source\":\"s\",\"data\":\"text\",\"datacontenttype\":\"text/plain\"}",
		`{"id":"1","data":"\"quoted\"","datacontenttype":"application/json"}`,
		`{"id":"1","data":{"n":1e400}}`,
	} {
		ev, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("Parse(%s): %v", in, err)
		}
		checkAsEncodingJSON(t, []byte(in), ev)
	}
	ev, _ := Parse([]byte(`{"id":"1","topic":"orders","data":{"a":1},"custom":"x"}`))
	ext, err := ev.Extensions()
	if err != nil {
		t.Fatal(err)
	}
	if m := ext.AsMap(); len(m) != 2 || m["topic"] != "orders" || m["custom"] != "x" {
		t.Fatalf("Extensions = %v, want topic and custom only", m)
	}
}

func FuzzComplete(f *testing.F) {
	f.Add([]byte(`{"id":"1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := Complete(b, "s", "t", "p", "")
		if err == nil && !json.Valid(out) {
			t.Fatalf("invalid JSON out: %s", out)
		}
	})
}

func TestExpiration(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := Append(nil, &Envelope{Source: "a", Topic: "t", PubsubName: "p", Expiration: now.Add(-time.Second).Format(time.RFC3339), Data: []byte("x")})
	if !Expired(b, now) {
		t.Fatalf("past expiration not expired: %s", b)
	}
	if Expired(b, now.Add(-time.Hour)) {
		t.Fatal("expired before its time")
	}
	if Expired(Append(nil, &Envelope{Source: "a", Data: []byte("x")}), now) {
		t.Fatal("event without expiration expired")
	}
	if Expired([]byte(`{"expiration":"not a time"}`), now) {
		t.Fatal("unparseable expiration expired")
	}
}
