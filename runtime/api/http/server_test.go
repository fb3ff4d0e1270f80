package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/dapr/components-contrib/state"
	inmemorystate "github.com/dapr/components-contrib/state/in-memory"
	"github.com/dapr/kit/logger"
	"github.com/valyala/fasthttp"

	"mecha/components"
	"mecha/runtime/api"
	"mecha/runtime/blocks"
	"mecha/runtime/invoke"
	"mecha/runtime/metrics"
	"mecha/runtime/resiliency"
	"mecha/runtime/subscriptions"
)

type fakeMeta struct{ ext map[string]string }

func (f *fakeMeta) Metadata() *api.Metadata             { return &api.Metadata{ID: "app", Extended: f.ext} }
func (f *fakeMeta) SetExtended(key, value string) error { f.ext[key] = value; return nil }

func newTestServer(tb testing.TB) *Server {
	return newTestServerWith(tb, testOpts{components: components.EmbeddedDefaults(false)})
}

// testOpts configure newTestServerWith.
type testOpts struct {
	// components are loaded; none means no component at all.
	components []*components.Component
	// token is DAPR_API_TOKEN.
	token string
	// notReady makes /v1.0/healthz answer not ready.
	notReady bool
	// maxValueBytes is state.crux's --max-value-bytes.
	maxValueBytes int
	// shutdown is called by the shutdown API.
	shutdown func()
}

func newTestServerWith(tb testing.TB, o testOpts) *Server {
	tb.Helper()
	reg := components.NewRegistry()
	components.RegisterContrib(reg)
	components.RegisterMecha(reg, components.MechaOptions{DataDir: tb.TempDir(), MaxValueBytes: o.maxValueBytes})
	// state.plain is a store without transactions.
	reg.Register("state.plain", "v1", func(l logger.Logger) any {
		return struct{ state.Store }{inmemorystate.NewInMemoryStateStore(l)}
	})
	mgr := components.NewManager(components.Options{AppID: "app", Registry: reg, Defaults: o.components,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if _, err := mgr.Load(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = mgr.Close() })
	if o.shutdown == nil {
		o.shutdown = func() {}
	}
	m := metrics.New()
	local := &invoke.Local{AppID: "app"}
	// As the runtime has it: a policy store, empty unless documents say.
	resil := resiliency.NewStore(resiliency.Options{AppID: "app"})
	return New(&api.Deps{
		AppID: "app", Blocks: &blocks.Blocks{AppID: "app", Components: mgr, Resiliency: resil}, Invoker: &invoke.Invoker{Resolver: local, Resiliency: resil},
		Local: local, Subs: subscriptions.New(subscriptions.Options{AppID: "app", Components: mgr, Metrics: m}),
		Metrics: m, Metadata: &fakeMeta{ext: map[string]string{}}, Shutdown: o.shutdown, APIToken: o.token,
		Ready: func() bool { return !o.notReady }, OutboundReady: func() bool { return true },
	})
}

func call(s *Server, method, uri, body string, headers ...string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(uri)
	for i := 0; i+1 < len(headers); i += 2 {
		ctx.Request.Header.Set(headers[i], headers[i+1])
	}
	if body != "" {
		ctx.Request.SetBodyString(body)
	}
	s.handle(&ctx)
	return &ctx
}

func TestRouting(t *testing.T) {
	s := newTestServer(t)
	cases := []struct {
		method, uri, body string
		status            int
	}{
		{"POST", "/v1.0/state/statestore", `[{"key":"a","value":{"x":1}}]`, 204},
		{"GET", "/v1.0/state/statestore/a", "", 200},
		{"GET", "/v1.0/state/statestore/nested/key", "", 204},
		{"POST", "/v1.0/state/statestore/bulk", `{"keys":["a"]}`, 200},
		{"POST", "/v1.0/state/statestore/transaction", `{"operations":[{"operation":"delete","request":{"key":"a"}}]}`, 204},
		{"DELETE", "/v1.0/state/statestore/a", "", 204},
		{"PUT", "/v1.0/state/statestore/a", "", 404},
		{"POST", "/v1.0/publish/pubsub/topic/with/slashes", `{}`, 204},
		{"POST", "/v1.0-alpha1/publish/bulk/pubsub/t", `[{"entryId":"1","event":{},"contentType":"application/json"}]`, 204},
		{"GET", "/v1.0/healthz", "", 204},
		{"GET", "/v1.0/healthz/outbound", "", 204},
		{"GET", "/v1.0/healthz?appid=app", "", 204},
		{"GET", "/v1.0/healthz?appid=other", "", 500},
		{"GET", "/v1.0/shutdown", "", 404},
		{"PUT", "/v1.0/metadata/k", "v", 204},
		{"GET", "/v1.0/metadata", "", 200},
		{"PUT", "/v1.0/state/statestore", `[{"key":"p","value":1}]`, 204},
		{"PUT", "/v1.0/publish/pubsub/topic", `{}`, 204},
		{"POST", "/v1.0/state/statestore/", `[{"key":"a","value":1}]`, 204},
		{"GET", "/v1.0/healthz/", "", 204},
		{"POST", "/v1.0/healthz", "", 404},
		{"GET", "/v1.0/actors/x/y", "", 501},
		{"GET", "/", "", 404},
	}
	for _, c := range cases {
		ctx := call(s, c.method, c.uri, c.body)
		if ctx.Response.StatusCode() != c.status {
			t.Errorf("%s %s = %d, want %d (%s)", c.method, c.uri, ctx.Response.StatusCode(), c.status, ctx.Response.Body())
		}
		if ctx.Response.StatusCode() >= 400 {
			var e errorBody
			if err := json.Unmarshal(ctx.Response.Body(), &e); err != nil || e.ErrorCode == "" {
				t.Errorf("%s %s: error body %q is not a Dapr error", c.method, c.uri, ctx.Response.Body())
			}
		}
	}
	if got := string(call(s, "GET", "/v1.0/state/statestore/nested/key", "").Response.Body()); got != "" {
		t.Errorf("unexpected body %q", got)
	}
}

func TestQueryMetadataAndHeaders(t *testing.T) {
	s := newTestServer(t)
	call(s, "POST", "/v1.0/state/statestore", `[{"key":"ttl","value":1,"metadata":{"ttlInSeconds":"100"}}]`)
	ctx := call(s, "GET", "/v1.0/state/statestore/ttl?metadata.foo=bar", "")
	if ctx.Response.StatusCode() != 200 || len(ctx.Response.Header.Peek("ETag")) == 0 {
		t.Fatalf("GET = %d etag %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("ETag"))
	}
	if exp := ctx.Response.Header.Peek("metadata.ttlExpireTime"); len(exp) == 0 {
		t.Errorf("ttlExpireTime metadata header missing; headers: %s", ctx.Response.Header.String())
	}
	// If-Match is honoured in any letter case.
	ctx = call(s, "DELETE", "/v1.0/state/statestore/ttl", "", "if-match", "999999")
	if ctx.Response.StatusCode() != 409 {
		t.Errorf("DELETE with stale if-match = %d", ctx.Response.StatusCode())
	}
}

// FuzzRoute feeds arbitrary methods, paths and bodies to the router: it must
// never panic and every error must be a Dapr error body.
func FuzzRoute(f *testing.F) {
	s := newTestServer(f)
	f.Add("POST", "/v1.0/state/statestore", `[{"key":"a","value":1}]`)
	f.Add("GET", "/v1.0/state//", "")
	f.Add("POST", "/v1.0/state/statestore/transaction", `{"operations":[{"operation":"upsert","request":{"key":"k","value":null,"etag":"x"}}]}`)
	f.Add("POST", "/v1.0-alpha1/publish/bulk/pubsub/t", `[{"entryId":"1","event":"x"}]`)
	f.Add("POST", "/v1.0/bindings/x", `{"operation":"create","data":"x"}`)
	f.Add("GET", "/v1.0/invoke//method/", "")
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if method == "" || strings.ContainsAny(method, " \r\n") || strings.ContainsAny(path, " \r\n") {
			return
		}
		if method == "POST" && strings.HasPrefix(path, "/v1.0/shutdown") {
			return
		}
		ctx := call(s, method, path, body)
		if code := ctx.Response.StatusCode(); code >= 400 {
			var e errorBody
			if err := json.Unmarshal(ctx.Response.Body(), &e); err != nil || e.ErrorCode == "" || e.Message == "" {
				t.Fatalf("%s %q -> %d with non-Dapr error body %q", method, path, code, ctx.Response.Body())
			}
		}
	})
}

func BenchmarkStateGet(b *testing.B) {
	s := newTestServer(b)
	call(s, "POST", "/v1.0/state/statestore", `[{"key":"bench","value":{"user":"u-1","conn":"c-1"}}]`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		for pb.Next() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod("GET")
			ctx.Request.SetRequestURI("/v1.0/state/statestore/bench")
			s.handle(&ctx)
		}
	})
}

func BenchmarkStateSet(b *testing.B) {
	s := newTestServer(b)
	body := []byte(`[{"key":"bench","value":{"user":"u-1","conn":"c-1","gateway":"gw-1"}}]`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		for pb.Next() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod("POST")
			ctx.Request.SetRequestURI("/v1.0/state/statestore")
			ctx.Request.SetBody(body)
			s.handle(&ctx)
		}
	})
}

func BenchmarkPublish(b *testing.B) {
	s := newTestServer(b)
	body := []byte(`{"orderId":42,"item":"book","qty":1}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		for pb.Next() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod("POST")
			ctx.Request.Header.SetContentType("application/json")
			ctx.Request.SetRequestURI("/v1.0/publish/pubsub/orders")
			ctx.Request.SetBody(body)
			s.handle(&ctx)
		}
	})
}
