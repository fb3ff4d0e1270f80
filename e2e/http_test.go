package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStateHTTP(t *testing.T) {
	m := startMecha(t, "--app-id", "state-app")
	base := m.url("/v1.0/state/statestore")

	expectStatus(t, do(t, "POST", base, `[{"key":"k1","value":{"name":"ann"}},{"key":"k2","value":"plain"}]`), 204)
	r := do(t, "GET", base+"/k1", nil)
	expectStatus(t, r, 200)
	if string(r.Body) != `{"name":"ann"}` {
		t.Fatalf("GET k1 = %s", r.Body)
	}
	etag := r.Header.Get("ETag")
	if etag == "" {
		t.Fatal("GET returned no ETag header")
	}
	if r := do(t, "GET", base+"/k2", nil); string(r.Body) != `"plain"` {
		t.Fatalf("GET k2 = %s", r.Body)
	}
	expectStatus(t, do(t, "GET", base+"/missing", nil), 204)

	// A stale ETag is refused with 409; the current one is accepted.
	expectError(t, do(t, "POST", base, `[{"key":"k1","value":1,"etag":"999999"}]`), 409, "ERR_STATE_SAVE")
	expectStatus(t, do(t, "POST", base, fmt.Sprintf(`[{"key":"k1","value":2,"etag":%q,"options":{"concurrency":"first-write"}}]`, etag)), 204)
	if r := do(t, "GET", base+"/k1", nil); string(r.Body) != "2" || r.Header.Get("ETag") == etag {
		t.Fatalf("after etag update: %s etag %q (old %q)", r.Body, r.Header.Get("ETag"), etag)
	}
	// first-write without an ETag on an existing key fails.
	expectStatus(t, do(t, "POST", base, `[{"key":"k1","value":3,"options":{"concurrency":"first-write"}}]`), 409)

	// Delete with a wrong If-Match fails, then without succeeds.
	expectStatus(t, do(t, "DELETE", base+"/k2", nil, "If-Match", "12345"), 409)
	expectStatus(t, do(t, "DELETE", base+"/k2", nil), 204)
	expectStatus(t, do(t, "GET", base+"/k2", nil), 204)

	// TTL: the key expires by itself.
	expectStatus(t, do(t, "POST", base, `[{"key":"short","value":"x","metadata":{"ttlInSeconds":"1"}}]`), 204)
	expectStatus(t, do(t, "GET", base+"/short", nil), 200)
	eventually(t, 5*time.Second, func() error {
		if r := do(t, "GET", base+"/short", nil); r.Status != 204 {
			return fmt.Errorf("still there: %d %s", r.Status, r.Body)
		}
		return nil
	})

	// Bulk get returns each key with data and etag.
	expectStatus(t, do(t, "POST", base, `[{"key":"b1","value":{"n":1}},{"key":"b2","value":[2]}]`), 204)
	r = do(t, "POST", base+"/bulk", `{"keys":["b1","b2","nope"]}`)
	expectStatus(t, r, 200)
	var items []struct {
		Key  string          `json:"key"`
		Data json.RawMessage `json:"data"`
		ETag string          `json:"etag"`
	}
	r.json(t, &items)
	got := map[string]string{}
	for _, it := range items {
		got[it.Key] = string(it.Data)
	}
	if got["b1"] != `{"n":1}` || got["b2"] != `[2]` || got["nope"] != "" || len(items) != 3 {
		t.Fatalf("bulk get = %s", r.Body)
	}

	// Transactions apply upserts and deletes together.
	expectStatus(t, do(t, "POST", base+"/transaction", `{"operations":[
		{"operation":"upsert","request":{"key":"t1","value":"one"}},
		{"operation":"delete","request":{"key":"b1"}}]}`), 204)
	if r := do(t, "GET", base+"/t1", nil); string(r.Body) != `"one"` {
		t.Fatalf("t1 = %s", r.Body)
	}
	expectStatus(t, do(t, "GET", base+"/b1", nil), 204)
	expectError(t, do(t, "POST", base+"/transaction", `{"operations":[{"operation":"merge","request":{"key":"x"}}]}`), 400, "ERR_NOT_SUPPORTED_STATE_OPERATION")
}

func TestBadInputHTTP(t *testing.T) {
	m := startMecha(t, "--app-id", "bad-app", "--dapr-http-max-request-size", "1")
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"malformed state JSON", "POST", "/v1.0/state/statestore", `[{"key":`, 400, "ERR_MALFORMED_REQUEST"},
		{"state not an array", "POST", "/v1.0/state/statestore", `{"key":"a"}`, 400, "ERR_MALFORMED_REQUEST"},
		{"empty key", "POST", "/v1.0/state/statestore", `[{"key":"","value":1}]`, 400, "ERR_MALFORMED_REQUEST"},
		{"key with separator", "GET", "/v1.0/state/statestore/a||b", "", 400, "ERR_MALFORMED_REQUEST"},
		{"bad concurrency", "POST", "/v1.0/state/statestore", `[{"key":"a","value":1,"options":{"concurrency":"sometimes"}}]`, 500, "ERR_STATE_SAVE"},
		{"unknown store", "GET", "/v1.0/state/nostore/k", "", 400, "ERR_STATE_STORE_NOT_FOUND"},
		{"unknown pubsub", "POST", "/v1.0/publish/nopubsub/topic", `{}`, 404, "ERR_PUBSUB_NOT_FOUND"},
		{"missing topic", "POST", "/v1.0/publish/pubsub/", `{}`, 404, "ERR_DIRECT_INVOKE"},
		{"malformed bulk publish", "POST", "/v1.0-alpha1/publish/bulk/pubsub/t", `[{`, 400, "ERR_PUBSUB_EVENTS_SER"},
		{"bulk publish without entryId", "POST", "/v1.0-alpha1/publish/bulk/pubsub/t", `[{"event":"x","contentType":"text/plain"}]`, 400, "ERR_PUBSUB_EVENTS_SER"},
		{"unknown binding", "POST", "/v1.0/bindings/nobinding", `{"operation":"create"}`, 500, "ERR_INVOKE_OUTPUT_BINDING"},
		{"malformed binding", "POST", "/v1.0/bindings/x", `nope`, 400, "ERR_MALFORMED_REQUEST"},
		{"no secret stores", "GET", "/v1.0/secrets/nostore/k", "", 500, "ERR_SECRET_STORES_NOT_CONFIGURED"},
		{"unknown app", "POST", "/v1.0/invoke/other-app/method/x", "", 500, "ERR_DIRECT_INVOKE"},
		{"no app channel", "POST", "/v1.0/invoke/bad-app/method/x", "", 500, "ERR_DIRECT_INVOKE"},
		{"unknown path", "GET", "/v1.0/nothing", "", 404, "ERR_DIRECT_INVOKE"},
		{"unserved Dapr API", "GET", "/v1.0/actors/a/b/state/k", "", 501, "ERR_API_UNIMPLEMENTED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.body != "" {
				body = c.body
			}
			expectError(t, do(t, c.method, m.url(c.path), body), c.status, c.code)
		})
	}
	t.Run("oversize body", func(t *testing.T) {
		// A 2 MiB body over the 1 MiB limit: the runtime reads it to the
		// end (bodies stream, so that invocations can pass large ones on)
		// and answers 413, which the client sees instead of a reset.
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.httpPort))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", 2<<20)
		go func() { _, _ = conn.Write(make([]byte, 2<<20)) }()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		expectError(t, response{Status: resp.StatusCode, Body: body}, http.StatusRequestEntityTooLarge, "ERR_BODY_TOO_LARGE")
	})
	// After all that, the runtime still serves.
	expectStatus(t, do(t, "GET", m.url("/v1.0/healthz"), nil), 204)
}

func TestInvokeHTTP(t *testing.T) {
	appPort := startHTTPApp(t)
	m := startMecha(t, "--app-id", "inv", "--app-port", fmt.Sprint(appPort))
	checkEchoVerbs(t, m.url("/v1.0/invoke/inv/method/echo/a/b?x=1&y=two"), "inv")
	// The path reaches the app as the caller encoded it.
	r0 := do(t, "GET", m.url("/v1.0/invoke/inv/method/echo/a%3Fb%20c?x=1"), nil)
	expectStatus(t, r0, 200)
	var e0 echo
	r0.json(t, &e0)
	if e0.Path != "/echo/a?b c" || e0.Query != "x=1" {
		t.Fatalf("encoded path reached the app as %q query %q", e0.Path, e0.Query)
	}
	// The app's status passes through.
	expectStatus(t, do(t, "GET", m.url("/v1.0/invoke/inv/method/echo/x?status=418"), nil), 418)
	// dapr-app-id header form.
	r := do(t, "POST", m.url("/echo/hdr?q=1"), "hi", "dapr-app-id", "inv")
	expectStatus(t, r, 200)
	var e echo
	r.json(t, &e)
	if e.Path != "/echo/hdr" || e.Query != "q=1" || e.Body != "hi" {
		t.Fatalf("header form: %+v", e)
	}
	// A fresh traceparent is made when the caller sends none.
	r = do(t, "GET", m.url("/v1.0/invoke/inv/method/echo/t"), nil)
	r.json(t, &e)
	if len(e.Headers["Traceparent"]) != 55 {
		t.Fatalf("no generated traceparent: %v", e.Headers)
	}
}

type ce struct {
	ID          string          `json:"id"`
	Source      string          `json:"source"`
	Type        string          `json:"type"`
	SpecVersion string          `json:"specversion"`
	Topic       string          `json:"topic"`
	PubsubName  string          `json:"pubsubname"`
	TraceParent string          `json:"traceparent"`
	Data        json.RawMessage `json:"data"`
}

type rec struct {
	Route   string            `json:"route"`
	Body    json.RawMessage   `json:"body"`
	Headers map[string]string `json:"headers"`
}

func received(t *testing.T, appPort int, route string) []rec {
	t.Helper()
	r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/received?route=%s", appPort, route), nil)
	var out []rec
	r.json(t, &out)
	return out
}

func waitReceived(t *testing.T, appPort int, route string, n int) []rec {
	t.Helper()
	var got []rec
	eventually(t, 15*time.Second, func() error {
		got = received(t, appPort, route)
		if len(got) < n {
			return fmt.Errorf("route %s got %d deliveries, want %d", route, len(got), n)
		}
		return nil
	})
	return got
}

func TestPubSubHTTP(t *testing.T) {
	appPort := startHTTPApp(t)
	m := startMecha(t, "--app-id", "subber", "--app-port", fmt.Sprint(appPort))
	pub := func(topic, body string, headers ...string) {
		t.Helper()
		expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/"+topic), body, append([]string{"Content-Type", "application/json"}, headers...)...), 204)
	}

	t.Run("delivery as CloudEvent", func(t *testing.T) {
		pub("orders", `{"orderId":7}`, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		got := waitReceived(t, appPort, "orders", 1)
		var ev ce
		if err := json.Unmarshal(got[0].Body, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.SpecVersion != "1.0" || ev.Source != "subber" || ev.Topic != "orders" || ev.PubsubName != "pubsub" ||
			ev.Type != "com.dapr.event.sent" || string(ev.Data) != `{"orderId":7}` || ev.ID == "" {
			t.Fatalf("cloudevent = %s", got[0].Body)
		}
		if ev.TraceParent != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
			t.Fatalf("traceparent not propagated into the event: %s", got[0].Body)
		}
		if ct := got[0].Headers["Content-Type"]; ct != "application/cloudevents+json" {
			t.Fatalf("content type %q", ct)
		}
	})
	t.Run("RETRY redelivers", func(t *testing.T) {
		pub("retry-topic", `{"n":1}`)
		got := waitReceived(t, appPort, "retry", 2)
		var a, b ce
		_ = json.Unmarshal(got[0].Body, &a)
		_ = json.Unmarshal(got[1].Body, &b)
		if a.ID != b.ID {
			t.Fatalf("redelivery is a different event: %s vs %s", a.ID, b.ID)
		}
	})
	t.Run("500 retries then dead-letters", func(t *testing.T) {
		pub("fail-topic", `{"poison":true}`)
		dead := waitReceived(t, appPort, "dead", 1)
		var ev ce
		_ = json.Unmarshal(dead[0].Body, &ev)
		if string(ev.Data) != `{"poison":true}` {
			t.Fatalf("dead letter = %s", dead[0].Body)
		}
		if n := len(received(t, appPort, "fail")); n != 4 {
			t.Fatalf("failing route got %d attempts, want 4 (1 + 3 retries)", n)
		}
	})
	t.Run("DROP is not retried and goes to the dead-letter topic", func(t *testing.T) {
		before := len(received(t, appPort, "dead"))
		pub("drop-topic", `{"d":1}`)
		waitReceived(t, appPort, "drop", 1)
		// Publish a marker through the same subscription path: once the
		// marker is processed the drop has been final for a while.
		pub("orders", `{"marker":"after-drop"}`)
		eventually(t, 10*time.Second, func() error {
			for _, r := range received(t, appPort, "orders") {
				if strings.Contains(string(r.Body), "after-drop") {
					return nil
				}
			}
			return fmt.Errorf("marker not delivered")
		})
		if n := len(received(t, appPort, "drop")); n != 1 {
			t.Fatalf("dropped event delivered %d times", n)
		}
		// Dapr 1.14 sends dropped events to the dead-letter topic.
		dead := waitReceived(t, appPort, "dead", before+1)
		if !strings.Contains(string(dead[before].Body), `"d":1`) {
			t.Fatalf("dead letter = %s", dead[before].Body)
		}
	})
	t.Run("CEL routing", func(t *testing.T) {
		pub("routed", `{"kind":"big","n":1}`)
		pub("routed", `{"kind":"small","n":2}`)
		big := waitReceived(t, appPort, "big", 1)
		small := waitReceived(t, appPort, "small", 1)
		if !strings.Contains(string(big[0].Body), `"big"`) || !strings.Contains(string(small[0].Body), `"small"`) {
			t.Fatalf("misrouted: big=%s small=%s", big[0].Body, small[0].Body)
		}
	})
	t.Run("bulk subscribe", func(t *testing.T) {
		pub("bulk-topic", `{"b":1}`)
		got := waitReceived(t, appPort, "bulk", 1)
		var batch struct {
			Entries []struct {
				EntryID string          `json:"entryId"`
				Event   json.RawMessage `json:"event"`
			} `json:"entries"`
			Topic      string `json:"topic"`
			PubsubName string `json:"pubsubname"`
		}
		if err := json.Unmarshal(got[0].Body, &batch); err != nil {
			t.Fatal(err)
		}
		if len(batch.Entries) != 1 || batch.Topic != "bulk-topic" || !strings.Contains(string(batch.Entries[0].Event), `"b":1`) {
			t.Fatalf("bulk delivery = %s", got[0].Body)
		}
	})
	t.Run("bulk publish", func(t *testing.T) {
		before := len(received(t, appPort, "orders"))
		r := do(t, "POST", m.url("/v1.0-alpha1/publish/bulk/pubsub/orders"), `[
			{"entryId":"1","event":{"bulk":1},"contentType":"application/json"},
			{"entryId":"2","event":{"bulk":2},"contentType":"application/json"},
			{"entryId":"3","event":"text three","contentType":"text/plain"}]`)
		expectStatus(t, r, 204)
		got := waitReceived(t, appPort, "orders", before+3)
		seen := map[string]bool{}
		for _, g := range got[before:] {
			var ev ce
			_ = json.Unmarshal(g.Body, &ev)
			seen[string(ev.Data)] = true
		}
		if !seen[`{"bulk":1}`] || !seen[`{"bulk":2}`] || !seen[`"text three"`] {
			t.Fatalf("bulk published events = %v", seen)
		}
	})
	t.Run("deliveries are counted", func(t *testing.T) {
		r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/metrics", m.metricsPort), nil)
		for _, want := range []string{
			`mecha_app_deliveries_total{component="pubsub",kind="pubsub",status="success"}`,
			`mecha_app_deliveries_total{component="pubsub",kind="pubsub",status="retry"}`,
			`mecha_app_deliveries_total{component="pubsub",kind="pubsub",status="drop"}`,
			`mecha_app_deliveries_total{component="pubsub",kind="pubsub",status="deadletter"}`,
			`mecha_api_requests_total{block="pubsub",op="publish",protocol="http",status="204"}`,
		} {
			if !strings.Contains(string(r.Body), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
	t.Run("metadata lists subscriptions", func(t *testing.T) {
		r := do(t, "GET", m.url("/v1.0/metadata"), nil)
		var md struct {
			Subscriptions []struct {
				Topic string `json:"topic"`
				Type  string `json:"type"`
			} `json:"subscriptions"`
		}
		r.json(t, &md)
		found := false
		for _, s := range md.Subscriptions {
			if s.Topic == "orders" && s.Type == "PROGRAMMATIC" {
				found = true
			}
		}
		if !found {
			t.Fatalf("metadata subscriptions = %s", r.Body)
		}
	})
}

// echo is what the HTTP test app's /echo/ route answers.
type echo struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// checkEchoVerbs invokes the test app's /echo/a/b?x=1&y=two at url with
// every verb, a header and a traceparent, and checks that the app saw
// them all, from caller, and that its answer came back whole.
func checkEchoVerbs(t *testing.T, url, caller string) {
	t.Helper()
	for _, verb := range []string{"GET", "POST", "PUT", "DELETE", "PATCH"} {
		r := do(t, verb, url, "payload", "X-Custom", "v1",
			"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate", "vendor=abc")
		expectStatus(t, r, 200)
		var e echo
		r.json(t, &e)
		if e.Method != verb || e.Path != "/echo/a/b" || e.Query != "x=1&y=two" || e.Headers["X-Custom"] != "v1" {
			t.Fatalf("%s: app saw %+v", verb, e)
		}
		if verb != "GET" && e.Body != "payload" {
			t.Fatalf("%s: body %q", verb, e.Body)
		}
		// Each runtime on the way is a new span in the caller's trace.
		if tp := e.Headers["Traceparent"]; !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || !strings.HasSuffix(tp, "-01") ||
			strings.Contains(tp, "00f067aa0ba902b7") || len(tp) != 55 {
			t.Fatalf("traceparent not continued as a child span of the caller's: %v", e.Headers)
		}
		if e.Headers["Tracestate"] != "vendor=abc" {
			t.Fatalf("tracestate not passed on: %v", e.Headers)
		}
		if e.Headers["Dapr-Caller-App-Id"] != caller {
			t.Fatalf("caller header %q, want %q: %v", e.Headers["Dapr-Caller-App-Id"], caller, e.Headers)
		}
		if r.Header.Get("X-Echo") != "yes" {
			t.Fatalf("app response header lost: %v", r.Header)
		}
	}
}
