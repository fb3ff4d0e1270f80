package httpapi

import (
	"encoding/json"
	"strings"
	"testing"

	"mecha/components"
)

// errorCase is one request and the status and errorCode daprd 1.14.4
// answers it with (docs/errors.md); code "" is a success without a body
// to check.
type errorCase struct {
	name              string
	method, uri, body string
	headers           []string
	status            int
	code              string
}

func checkCases(t *testing.T, s *Server, cases []errorCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := call(s, c.method, c.uri, c.body, c.headers...)
			got := ctx.Response.StatusCode()
			var e errorBody
			if c.code != "" {
				if err := json.Unmarshal(ctx.Response.Body(), &e); err != nil || e.Message == "" {
					t.Fatalf("%s %s: body %q is not a Dapr error (%v)", c.method, c.uri, ctx.Response.Body(), err)
				}
			}
			if got != c.status || e.ErrorCode != c.code {
				t.Errorf("%s %s = %d %s, want %d %s (%s)", c.method, c.uri, got, e.ErrorCode, c.status, c.code, ctx.Response.Body())
			}
		})
	}
}

func comp(name, typ string, meta ...string) *components.Component {
	c := &components.Component{APIVersion: "dapr.io/v1alpha1", Kind: "Component",
		Metadata: components.ObjectMeta{Name: name}, Spec: components.ComponentSpec{Type: typ, Version: "v1"}}
	for i := 0; i+1 < len(meta); i += 2 {
		c.Spec.Metadata = append(c.Spec.Metadata, components.MetadataItem{Name: meta[i], Value: components.DynamicValue{S: meta[i+1], Set: true}})
	}
	return c
}

// TestErrorCodes asserts the status and errorCode of every error the HTTP
// API answers, as daprd 1.14.4 answers the same request, and mecha's own
// where daprd has no such case (marked "mecha only").
func TestErrorCodes(t *testing.T) {
	s := newTestServerWith(t, testOpts{maxValueBytes: 100, components: append(components.EmbeddedDefaults(false),
		comp("plain", "state.plain"),
		comp("envsecrets", "secretstores.local.env"),
		comp("apphttp", "bindings.http", "url", "http://127.0.0.1:1"),
	)})
	if ctx := call(s, "POST", "/v1.0/state/statestore", `[{"key":"k","value":1}]`); ctx.Response.StatusCode() != 204 {
		t.Fatalf("seeding: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	big := `"` + strings.Repeat("x", 200) + `"`
	checkCases(t, s, []errorCase{
		// State.
		{name: "state store not found", method: "GET", uri: "/v1.0/state/nostore/k", status: 400, code: "ERR_STATE_STORE_NOT_FOUND"},
		{name: "state store not found before a bad body", method: "POST", uri: "/v1.0/state/nostore", body: `[{`, status: 400, code: "ERR_STATE_STORE_NOT_FOUND"},
		{name: "state store name empty", method: "POST", uri: "/v1.0/state/", body: `[]`, status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "state key empty on get", method: "GET", uri: "/v1.0/state/statestore/", status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "save: invalid JSON", method: "POST", uri: "/v1.0/state/statestore", body: `[{"key":`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "save: not a list", method: "POST", uri: "/v1.0/state/statestore", body: `{"key":"a"}`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "save: key empty", method: "POST", uri: "/v1.0/state/statestore", body: `[{"key":"","value":1}]`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "save: key with ||", method: "POST", uri: "/v1.0/state/statestore", body: `[{"key":"a||b","value":1}]`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "get: key with ||", method: "GET", uri: "/v1.0/state/statestore/a||b", status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "save: unknown concurrency", method: "POST", uri: "/v1.0/state/statestore", body: `[{"key":"a","value":1,"options":{"concurrency":"sometimes"}}]`, status: 500, code: "ERR_STATE_SAVE"},
		{name: "save: ETag mismatch", method: "POST", uri: "/v1.0/state/statestore", body: `[{"key":"k","value":2,"etag":"999999"}]`, status: 409, code: "ERR_STATE_SAVE"},
		{name: "save: ETag invalid", method: "POST", uri: "/v1.0/state/statestore", body: `[{"key":"k","value":2,"etag":"not-a-version"}]`, status: 400, code: "ERR_STATE_SAVE"},
		{name: "save: value over the store's limit", method: "POST", uri: "/v1.0/state/statestore", body: `[{"key":"k","value":` + big + `}]`, status: 500, code: "ERR_STATE_SAVE"},
		{name: "save: bad ttlInSeconds", method: "POST", uri: "/v1.0/state/statestore", body: `[{"key":"k","value":1,"metadata":{"ttlInSeconds":"soon"}}]`, status: 500, code: "ERR_STATE_SAVE"},
		{name: "delete: ETag mismatch", method: "DELETE", uri: "/v1.0/state/statestore/k", headers: []string{"If-Match", "999999"}, status: 409, code: "ERR_STATE_DELETE"},
		{name: "delete: ETag invalid", method: "DELETE", uri: "/v1.0/state/statestore/k", headers: []string{"If-Match", "nope"}, status: 400, code: "ERR_STATE_DELETE"},
		{name: "delete: unknown consistency", method: "DELETE", uri: "/v1.0/state/statestore/k?consistency=often", status: 500, code: "ERR_STATE_DELETE"},
		{name: "bulk get: invalid JSON", method: "POST", uri: "/v1.0/state/statestore/bulk", body: `{"keys":`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "bulk get: store not found before a bad body", method: "POST", uri: "/v1.0/state/nostore/bulk", body: `{`, status: 400, code: "ERR_STATE_STORE_NOT_FOUND"},
		{name: "bulk get: key with ||", method: "POST", uri: "/v1.0/state/statestore/bulk", body: `{"keys":["a||b"]}`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "transaction: operation 'merge'", method: "POST", uri: "/v1.0/state/statestore/transaction", body: `{"operations":[{"operation":"merge","request":{"key":"x"}}]}`, status: 400, code: "ERR_NOT_SUPPORTED_STATE_OPERATION"},
		{name: "transaction: operation 'Upsert'", method: "POST", uri: "/v1.0/state/statestore/transaction", body: `{"operations":[{"operation":"Upsert","request":{"key":"x"}}]}`, status: 400, code: "ERR_NOT_SUPPORTED_STATE_OPERATION"},
		{name: "transaction: invalid JSON", method: "POST", uri: "/v1.0/state/statestore/transaction", body: `{"operations":[`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "transaction: store without transactions, before a bad body", method: "POST", uri: "/v1.0/state/plain/transaction", body: `{`, status: 500, code: "ERR_STATE_STORE_NOT_SUPPORTED"},
		{name: "transaction: store without transactions, no operations", method: "POST", uri: "/v1.0/state/plain/transaction", body: `{"operations":[]}`, status: 500, code: "ERR_STATE_STORE_NOT_SUPPORTED"},
		{name: "transaction: no operations", method: "POST", uri: "/v1.0/state/statestore/transaction", body: `{"operations":[]}`, status: 204},
		{name: "transaction: key with ||", method: "POST", uri: "/v1.0/state/statestore/transaction", body: `{"operations":[{"operation":"delete","request":{"key":"a||b"}}]}`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "transaction: ETag mismatch", method: "POST", uri: "/v1.0/state/statestore/transaction", body: `{"operations":[{"operation":"upsert","request":{"key":"k","value":3,"etag":"999999"}}]}`, status: 500, code: "ERR_STATE_TRANSACTION"},
		{name: "transaction: unknown concurrency", method: "POST", uri: "/v1.0/state/statestore/transaction", body: `{"operations":[{"operation":"upsert","request":{"key":"k","value":3,"options":{"concurrency":"x"}}}]}`, status: 500, code: "ERR_STATE_TRANSACTION"},
		{name: "transaction: key empty is the store's to judge", method: "PUT", uri: "/v1.0/state/statestore/transaction", body: `{"operations":[{"operation":"upsert","request":{"value":3}}]}`, status: 204},
		{name: "state query: mecha only, unimplemented", method: "POST", uri: "/v1.0-alpha1/state/statestore/query", body: `{}`, status: 501, code: "ERR_API_UNIMPLEMENTED"},
		{name: "scan: mecha only, negative limit", method: "GET", uri: "/v1.0-alpha1/state/statestore/scan?limit=-1", status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "scan: mecha only, store cannot scan", method: "GET", uri: "/v1.0-alpha1/state/plain/scan", status: 500, code: "ERR_STATE_STORE_NOT_SUPPORTED"},

		// Publish.
		{name: "pubsub not found", method: "POST", uri: "/v1.0/publish/nopubsub/topic", body: `{}`, status: 404, code: "ERR_PUBSUB_NOT_FOUND"},
		{name: "topic empty", method: "POST", uri: "/v1.0/publish/pubsub/", body: `{}`, status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "topic missing", method: "POST", uri: "/v1.0/publish/pubsub", body: `{}`, status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "rawPayload not a boolean", method: "POST", uri: "/v1.0/publish/pubsub/t?metadata.rawPayload=yes", body: `{}`, status: 400, code: "ERR_PUBSUB_REQUEST_METADATA"},
		{name: "invalid CloudEvent", method: "POST", uri: "/v1.0/publish/pubsub/t", body: `[1]`, headers: []string{"Content-Type", "application/cloudevents+json"}, status: 500, code: "ERR_PUBSUB_CLOUD_EVENTS_SER"},
		{name: "bulk publish: invalid JSON", method: "POST", uri: "/v1.0-alpha1/publish/bulk/pubsub/t", body: `[{`, status: 400, code: "ERR_PUBSUB_EVENTS_SER"},
		{name: "bulk publish: pubsub not found before a bad body", method: "POST", uri: "/v1.0-alpha1/publish/bulk/nopubsub/t", body: `[{`, status: 404, code: "ERR_PUBSUB_NOT_FOUND"},
		{name: "bulk publish: no entryId", method: "POST", uri: "/v1.0-alpha1/publish/bulk/pubsub/t", body: `[{"event":"x","contentType":"text/plain"}]`, status: 400, code: "ERR_PUBSUB_EVENTS_SER"},
		{name: "bulk publish: duplicate entryId", method: "POST", uri: "/v1.0-alpha1/publish/bulk/pubsub/t", body: `[{"entryId":"1","event":1},{"entryId":"1","event":2}]`, status: 400, code: "ERR_PUBSUB_EVENTS_SER"},
		{name: "bulk publish: event not base64", method: "POST", uri: "/v1.0-alpha1/publish/bulk/pubsub/t", body: `[{"entryId":"1","event":"%%","contentType":"application/octet-stream"}]`, status: 400, code: "ERR_PUBSUB_EVENTS_SER"},
		{name: "bulk publish: topic empty", method: "POST", uri: "/v1.0-alpha1/publish/bulk/pubsub/", body: `[]`, status: 404, code: "ERR_DIRECT_INVOKE"},

		// Bindings.
		{name: "binding not found", method: "POST", uri: "/v1.0/bindings/nobinding", body: `{"operation":"create"}`, status: 500, code: "ERR_INVOKE_OUTPUT_BINDING"},
		{name: "binding: invalid JSON", method: "POST", uri: "/v1.0/bindings/apphttp", body: `nope`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "binding: operation missing", method: "POST", uri: "/v1.0/bindings/nobinding", body: `{}`, status: 500, code: "ERR_INVOKE_OUTPUT_BINDING"},
		{name: "binding: operation not supported", method: "PUT", uri: "/v1.0/bindings/apphttp", body: `{"operation":"frobnicate"}`, status: 500, code: "ERR_INVOKE_OUTPUT_BINDING"},
		{name: "binding name empty", method: "POST", uri: "/v1.0/bindings/", body: `{}`, status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "binding name with a slash", method: "POST", uri: "/v1.0/bindings/a/b", body: `{}`, status: 404, code: "ERR_DIRECT_INVOKE"},

		// Secrets.
		{name: "secret store not found", method: "GET", uri: "/v1.0/secrets/nostore/k", status: 401, code: "ERR_SECRET_STORE_NOT_FOUND"},
		{name: "bulk secret store not found", method: "GET", uri: "/v1.0/secrets/nostore/bulk", status: 401, code: "ERR_SECRET_STORE_NOT_FOUND"},
		{name: "secret key empty", method: "GET", uri: "/v1.0/secrets/envsecrets/", status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "secret: body not a JSON object", method: "GET", uri: "/v1.0/secrets/envsecrets/k", body: `[]`, status: 400, code: "ERR_MALFORMED_REQUEST"},

		// Invocation and unknown paths.
		{name: "invoke: no app id", method: "GET", uri: "/v1.0/invoke//method/x", status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "invoke: no method segment", method: "GET", uri: "/v1.0/invoke/app/method", status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "invoke: no app channel", method: "POST", uri: "/v1.0/invoke/app/method/x", status: 500, code: "ERR_DIRECT_INVOKE"},
		{name: "unknown path", method: "GET", uri: "/v1.0/nothing", status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "wrong method", method: "GET", uri: "/v1.0/publish/pubsub/t", status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "unknown path with dapr-app-id invokes", method: "GET", uri: "/anything", headers: []string{"dapr-app-id", "app"}, status: 500, code: "ERR_DIRECT_INVOKE"},
		{name: "actors: mecha only, unimplemented", method: "PUT", uri: "/v1.0/actors/t/1/state", body: `[]`, status: 501, code: "ERR_API_UNIMPLEMENTED"},
		{name: "workflows: mecha only, unimplemented", method: "GET", uri: "/v1.0-beta1/workflows/dapr/x", status: 501, code: "ERR_API_UNIMPLEMENTED"},
		{name: "locks: mecha only, unimplemented", method: "POST", uri: "/v1.0-alpha1/lock/store", body: `{}`, status: 501, code: "ERR_API_UNIMPLEMENTED"},

		// Metadata, health, shutdown.
		{name: "metadata: body not a JSON object", method: "GET", uri: "/v1.0/metadata", body: `x`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "shutdown: body not a JSON object", method: "POST", uri: "/v1.0/shutdown", body: `[]`, status: 400, code: "ERR_MALFORMED_REQUEST"},
		{name: "shutdown: GET", method: "GET", uri: "/v1.0/shutdown", status: 404, code: "ERR_DIRECT_INVOKE"},
		{name: "healthz: other app id", method: "GET", uri: "/v1.0/healthz?appid=other", status: 500, code: "ERR_HEALTH_APPID_NOT_MATCH"},
		{name: "healthz: empty app id", method: "GET", uri: "/v1.0/healthz?appid=", status: 500, code: "ERR_HEALTH_APPID_NOT_MATCH"},
		{name: "healthz: POST", method: "POST", uri: "/v1.0/healthz", status: 404, code: "ERR_DIRECT_INVOKE"},
	})
}

// TestErrorCodesNothingLoaded: with no component loaded, daprd says
// "not configured" for state and secret stores, and "not found" for a
// pubsub (its publisher always exists).
func TestErrorCodesNothingLoaded(t *testing.T) {
	s := newTestServerWith(t, testOpts{notReady: true})
	checkCases(t, s, []errorCase{
		{name: "no state stores", method: "GET", uri: "/v1.0/state/s/k", status: 500, code: "ERR_STATE_STORE_NOT_CONFIGURED"},
		{name: "no state stores, bad body", method: "POST", uri: "/v1.0/state/s", body: `{`, status: 500, code: "ERR_STATE_STORE_NOT_CONFIGURED"},
		{name: "no pubsubs", method: "POST", uri: "/v1.0/publish/p/t", body: `{}`, status: 404, code: "ERR_PUBSUB_NOT_FOUND"},
		{name: "no secret stores", method: "GET", uri: "/v1.0/secrets/s/k", status: 500, code: "ERR_SECRET_STORES_NOT_CONFIGURED"},
		{name: "no bindings", method: "POST", uri: "/v1.0/bindings/b", body: `{"operation":"create"}`, status: 500, code: "ERR_INVOKE_OUTPUT_BINDING"},
		{name: "not ready", method: "GET", uri: "/v1.0/healthz", status: 500, code: "ERR_HEALTH_NOT_READY"},
		{name: "not ready comes before the app id", method: "GET", uri: "/v1.0/healthz?appid=other", status: 500, code: "ERR_HEALTH_NOT_READY"},
	})
}

// TestErrorCodesToken: without the API token every call is 401 (mecha's
// body: daprd sends the text "invalid api token"), but GET of the health
// probes.
func TestErrorCodesToken(t *testing.T) {
	s := newTestServerWith(t, testOpts{token: "s3cret", components: components.EmbeddedDefaults(false)})
	checkCases(t, s, []errorCase{
		{name: "no token", method: "GET", uri: "/v1.0/metadata", status: 401, code: "ERR_API_TOKEN"},
		{name: "wrong token", method: "GET", uri: "/v1.0/metadata", headers: []string{"dapr-api-token", "nope"}, status: 401, code: "ERR_API_TOKEN"},
		{name: "unknown path", method: "GET", uri: "/v1.0/nothing", status: 401, code: "ERR_API_TOKEN"},
		{name: "token", method: "GET", uri: "/v1.0/metadata", headers: []string{"dapr-api-token", "s3cret"}, status: 200},
		{name: "healthz", method: "GET", uri: "/v1.0/healthz", status: 204},
		{name: "healthz with a slash", method: "GET", uri: "/v1.0/healthz/", status: 204},
		{name: "outbound healthz", method: "GET", uri: "/v1.0/healthz/outbound", status: 204},
		{name: "healthz POST", method: "POST", uri: "/v1.0/healthz", status: 401, code: "ERR_API_TOKEN"},
		{name: "below healthz", method: "GET", uri: "/v1.0/healthz/other", status: 401, code: "ERR_API_TOKEN"},
	})
}

// TestShutdownBody: a body that is not a JSON object does not shut the
// runtime down; an empty object does.
func TestShutdownBody(t *testing.T) {
	called := make(chan struct{}, 2)
	s := newTestServerWith(t, testOpts{shutdown: func() { called <- struct{}{} }})
	if ctx := call(s, "POST", "/v1.0/shutdown", "nope"); ctx.Response.StatusCode() != 400 {
		t.Fatalf("shutdown with a bad body = %d", ctx.Response.StatusCode())
	}
	if ctx := call(s, "POST", "/v1.0/shutdown", "{}"); ctx.Response.StatusCode() != 204 {
		t.Fatalf("shutdown = %d", ctx.Response.StatusCode())
	}
	<-called
	if len(called) != 0 {
		t.Fatal("the refused shutdown ran too")
	}
}
