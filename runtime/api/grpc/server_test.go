package grpcapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/dapr/go-sdk/client"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"mecha/components"
	"mecha/runtime/api"
	"mecha/runtime/appchannel"
	"mecha/runtime/blocks"
	"mecha/runtime/invoke"
	"mecha/runtime/metrics"
	"mecha/runtime/subscriptions"
	"mecha/runtime/tracecontext"
)

// ---- test environment ----

// fakeMetadata serves the metadata API from the live components and
// subscriptions plus its own extended map.
type fakeMetadata struct {
	mgr  *components.Manager
	subs *subscriptions.Manager

	mu       sync.Mutex
	extended map[string]string
}

func (f *fakeMetadata) Metadata() *api.Metadata {
	m := &api.Metadata{
		ID:              "app",
		RuntimeVersion:  "test-1.0",
		EnabledFeatures: []string{"FeatureA"},
		Extended:        map[string]string{},
		AppConnectionProperties: &api.AppConnectionProperties{
			Port: 3000, Protocol: "http", ChannelAddress: "127.0.0.1", MaxConcurrency: 7,
			Health: &api.AppHealth{HealthCheckPath: "/healthz", HealthProbeInterval: "5s", HealthProbeTimeout: "500ms", HealthThreshold: 3},
		},
	}
	f.mu.Lock()
	for k, v := range f.extended {
		m.Extended[k] = v
	}
	f.mu.Unlock()
	m.AddComponents(f.mgr.Snapshot().Infos)
	m.AddSubscriptions(f.subs.List())
	return m
}

func (f *fakeMetadata) SetExtended(key, value string) error {
	f.mu.Lock()
	f.extended[key] = value
	f.mu.Unlock()
	return nil
}

// appEcho is what the test app answers on /echo.
type appEcho struct {
	Method      string   `json:"method"`
	Path        string   `json:"path"`
	Query       string   `json:"query"`
	Body        string   `json:"body"`
	ContentType string   `json:"contentType"`
	Custom      string   `json:"custom"`
	Headers     []string `json:"headers"`
}

func testApp(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e := appEcho{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(body),
			ContentType: r.Header.Get("Content-Type"), Custom: r.Header.Get("X-Custom")}
		for k := range r.Header {
			e.Headers = append(e.Headers, strings.ToLower(k))
		}
		sort.Strings(e.Headers)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-App", "yes")
		_ = json.NewEncoder(w).Encode(e)
	})
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if err != nil {
			code = 500
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, "app says "+strconv.Itoa(code))
	})
	mux.HandleFunc("/binding", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(append([]byte("bound:"), body...))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

type envOpts struct {
	maxRequestBytes int
	// maxValueBytes is state.crux's --max-value-bytes.
	maxValueBytes int
	// noComponents loads no component at all.
	noComponents bool
}

type env struct {
	srv      *Server
	deps     *api.Deps
	addr     string
	sdk      client.Client
	raw      runtimev1pb.DaprClient
	subs     *subscriptions.Manager
	metrics  *metrics.Metrics
	shutdown chan struct{}
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	ctx := context.Background()
	app := testApp(t)

	r := components.NewRegistry()
	components.RegisterContrib(r)
	components.RegisterMecha(r, components.MechaOptions{DataDir: t.TempDir(), MaxValueBytes: o.maxValueBytes})
	defaults := append(components.EmbeddedDefaults(false),
		&components.Component{APIVersion: "dapr.io/v1alpha1", Kind: "Component",
			Metadata: components.ObjectMeta{Name: "envsecrets"},
			Spec: components.ComponentSpec{Type: "secretstores.local.env", Version: "v1", Metadata: []components.MetadataItem{
				{Name: "prefix", Value: components.DynamicValue{S: "MECHATEST_", Set: true}},
			}}},
		&components.Component{APIVersion: "dapr.io/v1alpha1", Kind: "Component",
			Metadata: components.ObjectMeta{Name: "apphttp"},
			Spec: components.ComponentSpec{Type: "bindings.http", Version: "v1", Metadata: []components.MetadataItem{
				{Name: "url", Value: components.DynamicValue{S: app.URL, Set: true}},
			}}},
	)
	if o.noComponents {
		defaults = nil
	}
	mgr := components.NewManager(components.Options{AppID: "app", Registry: r, Defaults: defaults})
	if _, err := mgr.Load(ctx); err != nil {
		t.Fatalf("loading components: %v", err)
	}
	t.Cleanup(func() { _ = mgr.Close() })

	local := &invoke.Local{AppID: "app"}
	local.SetChannel(appchannel.NewHTTP(appchannel.HTTPOptions{Address: strings.TrimPrefix(app.URL, "http://")}))
	m := metrics.New()
	subs := subscriptions.New(subscriptions.Options{AppID: "app", Components: mgr, Metrics: m,
		Retry: subscriptions.Retry{MaxRetries: 5, Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	shutdown := make(chan struct{})
	var once sync.Once
	d := &api.Deps{
		AppID:           "app",
		Blocks:          &blocks.Blocks{AppID: "app", Components: mgr},
		Invoker:         &invoke.Invoker{Resolver: local},
		Local:           local,
		Subs:            subs,
		Metrics:         m,
		Metadata:        &fakeMetadata{mgr: mgr, subs: subs, extended: map[string]string{}},
		APILogging:      true,
		MaxRequestBytes: o.maxRequestBytes,
		Shutdown:        func() { once.Do(func() { close(shutdown) }) },
	}
	srv := New(d)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.GracefulStop(sctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	// The SDK dials with WithBlock: it returns once the server accepts.
	sdk, err := client.NewClientWithAddress(lis.Addr().String())
	if err != nil {
		t.Fatalf("SDK client: %v", err)
	}
	t.Cleanup(sdk.Close)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &env{srv: srv, deps: d, addr: lis.Addr().String(), sdk: sdk, raw: runtimev1pb.NewDaprClient(conn),
		subs: subs, metrics: m, shutdown: shutdown}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 10ms until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("code = %v (err %v), want %v", got, err, want)
	}
}

// ---- state ----

func TestStateETag(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)

	if err := e.sdk.SaveState(ctx, "statestore", "k1", []byte(`{"a":1}`), nil); err != nil {
		t.Fatalf("SaveState: %v", err)
	}
	item, err := e.sdk.GetState(ctx, "statestore", "k1", nil)
	if err != nil {
		t.Fatalf("GetState: %v", err)
	}
	if string(item.Value) != `{"a":1}` || item.Etag == "" {
		t.Fatalf("GetState = %q etag %q", item.Value, item.Etag)
	}

	err = e.sdk.SaveStateWithETag(ctx, "statestore", "k1", []byte("v2"), "9"+item.Etag+"9", nil)
	wantCode(t, err, codes.Aborted)
	// A malformed ETag is the caller's error.
	err = e.sdk.SaveStateWithETag(ctx, "statestore", "k1", []byte("v2"), "not-"+item.Etag, nil)
	wantCode(t, err, codes.InvalidArgument)
	if err := e.sdk.SaveStateWithETag(ctx, "statestore", "k1", []byte("v2"), item.Etag, nil); err != nil {
		t.Fatalf("SaveStateWithETag with the current etag: %v", err)
	}
	item2, err := e.sdk.GetState(ctx, "statestore", "k1", nil)
	if err != nil || string(item2.Value) != "v2" || item2.Etag == item.Etag {
		t.Fatalf("after etag save: %q etag %q (old %q), err %v", item2.Value, item2.Etag, item.Etag, err)
	}

	err = e.sdk.DeleteStateWithETag(ctx, "statestore", "k1", &client.ETag{Value: item.Etag}, nil, nil)
	wantCode(t, err, codes.Aborted)
	if err := e.sdk.DeleteStateWithETag(ctx, "statestore", "k1", &client.ETag{Value: item2.Etag}, nil,
		&client.StateOptions{Concurrency: client.StateConcurrencyFirstWrite, Consistency: client.StateConsistencyStrong}); err != nil {
		t.Fatalf("DeleteStateWithETag with the current etag: %v", err)
	}

	// A missing key is an empty answer, not an error.
	resp, err := e.raw.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: "statestore", Key: "k1"})
	if err != nil {
		t.Fatalf("GetState of a deleted key: %v", err)
	}
	if len(resp.GetData()) != 0 || resp.GetEtag() != "" {
		t.Fatalf("GetState of a deleted key = %q etag %q, want empty", resp.GetData(), resp.GetEtag())
	}
}

func TestStateTTL(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	if err := e.sdk.SaveState(ctx, "statestore", "short", []byte("lived"), map[string]string{"ttlInSeconds": "1"}); err != nil {
		t.Fatalf("SaveState: %v", err)
	}
	item, err := e.sdk.GetState(ctx, "statestore", "short", nil)
	if err != nil || string(item.Value) != "lived" {
		t.Fatalf("GetState before expiry = %q, %v", item.Value, err)
	}
	if item.Metadata["ttlExpireTime"] == "" {
		t.Errorf("GetState metadata %v lacks ttlExpireTime", item.Metadata)
	}
	eventually(t, "the key to expire", func() bool {
		item, err := e.sdk.GetState(ctx, "statestore", "short", nil)
		if err != nil {
			t.Fatalf("GetState: %v", err)
		}
		return len(item.Value) == 0
	})
}

func TestStateBulk(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	err := e.sdk.SaveBulkState(ctx, "statestore",
		&client.SetStateItem{Key: "b1", Value: []byte("one")},
		&client.SetStateItem{Key: "b2", Value: []byte("two")})
	if err != nil {
		t.Fatalf("SaveBulkState: %v", err)
	}
	items, err := e.sdk.GetBulkState(ctx, "statestore", []string{"b1", "b2", "nope"}, nil, 2)
	if err != nil {
		t.Fatalf("GetBulkState: %v", err)
	}
	got := map[string]string{}
	for _, it := range items {
		if it.Error != "" {
			t.Errorf("item %s error %q", it.Key, it.Error)
		}
		got[it.Key] = string(it.Value)
	}
	want := map[string]string{"b1": "one", "b2": "two", "nope": ""}
	if len(got) != len(want) {
		t.Fatalf("GetBulkState = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("GetBulkState[%s] = %q, want %q", k, got[k], v)
		}
	}

	if err := e.sdk.DeleteBulkState(ctx, "statestore", []string{"b1", "b2"}, nil); err != nil {
		t.Fatalf("DeleteBulkState: %v", err)
	}
	items, err = e.sdk.GetBulkState(ctx, "statestore", []string{"b1", "b2"}, nil, 1)
	if err != nil {
		t.Fatalf("GetBulkState: %v", err)
	}
	for _, it := range items {
		if len(it.Value) != 0 {
			t.Errorf("%s still holds %q after DeleteBulkState", it.Key, it.Value)
		}
	}
}

func TestStateTransaction(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	if err := e.sdk.SaveState(ctx, "statestore", "gone", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	err := e.sdk.ExecuteStateTransaction(ctx, "statestore", nil, []*client.StateOperation{
		{Type: client.StateOperationTypeUpsert, Item: &client.SetStateItem{Key: "t1", Value: []byte("tx-value")}},
		{Type: client.StateOperationTypeDelete, Item: &client.SetStateItem{Key: "gone"}},
	})
	if err != nil {
		t.Fatalf("ExecuteStateTransaction: %v", err)
	}
	if it, err := e.sdk.GetState(ctx, "statestore", "t1", nil); err != nil || string(it.Value) != "tx-value" {
		t.Fatalf("t1 = %q, %v", it.Value, err)
	}
	if it, err := e.sdk.GetState(ctx, "statestore", "gone", nil); err != nil || len(it.Value) != 0 {
		t.Fatalf("gone = %q, %v; want deleted", it.Value, err)
	}

	_, err = e.raw.ExecuteStateTransaction(ctx, &runtimev1pb.ExecuteStateTransactionRequest{
		StoreName:  "statestore",
		Operations: []*runtimev1pb.TransactionalStateOperation{{OperationType: "merge", Request: &commonv1pb.StateItem{Key: "t1"}}},
	})
	wantCode(t, err, codes.Unimplemented)
}

// ---- errors and unimplemented RPCs ----

func TestErrors(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	tests := []struct {
		name    string
		call    func() error
		code    codes.Code
		message string // substring of the status message, when set
	}{
		{"unknown state store", func() error {
			_, err := e.raw.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: "nostore", Key: "k"})
			return err
		}, codes.InvalidArgument, "nostore"},
		{"scan query that is not JSON", func() error {
			_, err := e.raw.QueryStateAlpha1(ctx, &runtimev1pb.QueryStateRequest{StoreName: "statestore", Query: `{"prefix":`})
			return err
		}, codes.InvalidArgument, "key scan"},
		{"Dapr query language", func() error {
			_, err := e.raw.QueryStateAlpha1(ctx, &runtimev1pb.QueryStateRequest{StoreName: "statestore", Query: `{"filter":{"EQ":{"a":1}}}`})
			return err
		}, codes.InvalidArgument, `unknown field "filter"`},
		{"scan query without a prefix", func() error {
			_, err := e.raw.QueryStateAlpha1(ctx, &runtimev1pb.QueryStateRequest{StoreName: "statestore", Query: `{"page":{"limit":3}}`})
			return err
		}, codes.InvalidArgument, "no \"prefix\""},
		{"scan query with data after it", func() error {
			_, err := e.raw.QueryStateAlpha1(ctx, &runtimev1pb.QueryStateRequest{StoreName: "statestore", Query: `{"prefix":"a"} {"prefix":"b"}`})
			return err
		}, codes.InvalidArgument, "data after the query"},
		{"scan with a negative limit", func() error {
			_, err := e.raw.QueryStateAlpha1(ctx, &runtimev1pb.QueryStateRequest{StoreName: "statestore", Query: `{"prefix":"a","page":{"limit":-1}}`})
			return err
		}, codes.InvalidArgument, "negative"},
		{"save to unknown state store", func() error {
			_, err := e.raw.SaveState(ctx, &runtimev1pb.SaveStateRequest{StoreName: "nostore",
				States: []*commonv1pb.StateItem{{Key: "k", Value: []byte("v")}}})
			return err
		}, codes.InvalidArgument, "state store nostore is not found"},
		{"empty state key", func() error {
			_, err := e.raw.SaveState(ctx, &runtimev1pb.SaveStateRequest{StoreName: "statestore",
				States: []*commonv1pb.StateItem{{Key: "", Value: []byte("v")}}})
			return err
		}, codes.InvalidArgument, ""},
		{"secret store not found", func() error {
			_, err := e.sdk.GetSecret(ctx, "nosecrets", "key", nil)
			return err
		}, codes.InvalidArgument, "nosecrets"},
		{"output binding not found", func() error {
			_, err := e.sdk.InvokeBinding(ctx, &client.InvokeBindingRequest{Name: "nobinding", Operation: "create"})
			return err
		}, codes.Internal, "nobinding"},
		{"publish to unknown pubsub", func() error {
			return e.sdk.PublishEvent(ctx, "nopubsub", "t", []byte("x"))
		}, codes.InvalidArgument, "nopubsub"},
		{"invoke unknown app", func() error {
			_, err := e.sdk.InvokeMethod(ctx, "otherapp", "echo", "get")
			return err
		}, codes.Internal, "otherapp"},
		{"save: key with ||", func() error {
			_, err := e.raw.SaveState(ctx, &runtimev1pb.SaveStateRequest{StoreName: "statestore",
				States: []*commonv1pb.StateItem{{Key: "a||b", Value: []byte("v")}}})
			return err
		}, codes.InvalidArgument, "can't contain '||'"},
		{"get: key with ||", func() error {
			_, err := e.raw.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: "statestore", Key: "a||b"})
			return err
		}, codes.InvalidArgument, "can't contain '||'"},
		{"bulk get: unknown state store", func() error {
			_, err := e.raw.GetBulkState(ctx, &runtimev1pb.GetBulkStateRequest{StoreName: "nostore", Keys: []string{"a"}})
			return err
		}, codes.InvalidArgument, "nostore"},
		{"bulk delete: unknown state store", func() error {
			_, err := e.raw.DeleteBulkState(ctx, &runtimev1pb.DeleteBulkStateRequest{StoreName: "nostore",
				States: []*commonv1pb.StateItem{{Key: "a"}}})
			return err
		}, codes.InvalidArgument, "nostore"},
		{"transaction: operation 'merge'", func() error {
			_, err := e.raw.ExecuteStateTransaction(ctx, &runtimev1pb.ExecuteStateTransactionRequest{StoreName: "statestore",
				Operations: []*runtimev1pb.TransactionalStateOperation{{OperationType: "merge", Request: &commonv1pb.StateItem{Key: "t1"}}}})
			return err
		}, codes.Unimplemented, "operation type merge not supported"},
		{"transaction: operation 'Upsert'", func() error {
			_, err := e.raw.ExecuteStateTransaction(ctx, &runtimev1pb.ExecuteStateTransactionRequest{StoreName: "statestore",
				Operations: []*runtimev1pb.TransactionalStateOperation{{OperationType: "Upsert", Request: &commonv1pb.StateItem{Key: "t1"}}}})
			return err
		}, codes.Unimplemented, "Upsert"},
		{"transaction: unknown store before an unknown operation", func() error {
			_, err := e.raw.ExecuteStateTransaction(ctx, &runtimev1pb.ExecuteStateTransactionRequest{StoreName: "nostore",
				Operations: []*runtimev1pb.TransactionalStateOperation{{OperationType: "merge", Request: &commonv1pb.StateItem{Key: "t1"}}}})
			return err
		}, codes.InvalidArgument, "nostore"},
		{"transaction: ETag mismatch", func() error {
			if err := e.sdk.SaveState(ctx, "statestore", "tx-etag", []byte("1"), nil); err != nil {
				return err
			}
			_, err := e.raw.ExecuteStateTransaction(ctx, &runtimev1pb.ExecuteStateTransactionRequest{StoreName: "statestore",
				Operations: []*runtimev1pb.TransactionalStateOperation{{OperationType: "upsert",
					Request: &commonv1pb.StateItem{Key: "tx-etag", Value: []byte("2"), Etag: &commonv1pb.Etag{Value: "999999"}}}}})
			return err
		}, codes.Internal, "state transaction"},
		{"publish: pubsub name empty", func() error {
			_, err := e.raw.PublishEvent(ctx, &runtimev1pb.PublishEventRequest{Topic: "t"})
			return err
		}, codes.InvalidArgument, "pubsub name is empty"},
		{"publish: topic empty", func() error {
			_, err := e.raw.PublishEvent(ctx, &runtimev1pb.PublishEventRequest{PubsubName: "pubsub"})
			return err
		}, codes.InvalidArgument, "topic is empty"},
		{"publish: rawPayload not a boolean", func() error {
			_, err := e.raw.PublishEvent(ctx, &runtimev1pb.PublishEventRequest{PubsubName: "pubsub", Topic: "t", Metadata: map[string]string{"rawPayload": "yes"}})
			return err
		}, codes.InvalidArgument, "rawPayload"},
		{"publish: invalid CloudEvent", func() error {
			_, err := e.raw.PublishEvent(ctx, &runtimev1pb.PublishEventRequest{PubsubName: "pubsub", Topic: "t",
				Data: []byte("[1]"), DataContentType: "application/cloudevents+json"})
			return err
		}, codes.InvalidArgument, "cloud event"},
		{"bulk publish: unknown pubsub", func() error {
			_, err := e.raw.BulkPublishEventAlpha1(ctx, &runtimev1pb.BulkPublishRequest{PubsubName: "nopubsub", Topic: "t",
				Entries: []*runtimev1pb.BulkPublishRequestEntry{{EntryId: "1", Event: []byte("a")}}})
			return err
		}, codes.InvalidArgument, "nopubsub"},
		{"bulk publish: entryId missing", func() error {
			_, err := e.raw.BulkPublishEventAlpha1(ctx, &runtimev1pb.BulkPublishRequest{PubsubName: "pubsub", Topic: "t",
				Entries: []*runtimev1pb.BulkPublishRequestEntry{{Event: []byte("a")}}})
			return err
		}, codes.InvalidArgument, "entryId"},
		{"binding: operation missing", func() error {
			_, err := e.raw.InvokeBinding(ctx, &runtimev1pb.InvokeBindingRequest{Name: "nobinding"})
			return err
		}, codes.Internal, "operation field is missing"},
		{"binding: operation not supported", func() error {
			_, err := e.raw.InvokeBinding(ctx, &runtimev1pb.InvokeBindingRequest{Name: "apphttp", Operation: "frobnicate"})
			return err
		}, codes.Internal, "does not support operation frobnicate"},
		{"bulk secret store not found", func() error {
			_, err := e.raw.GetBulkSecret(ctx, &runtimev1pb.GetBulkSecretRequest{StoreName: "nosecrets"})
			return err
		}, codes.InvalidArgument, "nosecrets"},
		{"invoke: no app id", func() error {
			_, err := e.raw.InvokeService(ctx, &runtimev1pb.InvokeServiceRequest{Message: &commonv1pb.InvokeRequest{Method: "echo"}})
			return err
		}, codes.Internal, "app id"},
		{"GetConfiguration is unimplemented", func() error {
			_, err := e.raw.GetConfiguration(ctx, &runtimev1pb.GetConfigurationRequest{StoreName: "cfg"})
			return err
		}, codes.Unimplemented, ""},
		{"TryLockAlpha1 is unimplemented", func() error {
			_, err := e.raw.TryLockAlpha1(ctx, &runtimev1pb.TryLockRequest{StoreName: "lock"})
			return err
		}, codes.Unimplemented, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			wantCode(t, err, tc.code)
			if tc.message != "" && !strings.Contains(err.Error(), tc.message) {
				t.Errorf("error %q does not mention %q", err, tc.message)
			}
		})
	}
}

// TestErrorsNothingLoaded: with no component loaded, daprd says "not
// configured" for state and secret stores, and "not found" for a pubsub.
func TestErrorsNothingLoaded(t *testing.T) {
	e := newEnv(t, envOpts{noComponents: true})
	ctx := testCtx(t)
	_, err := e.raw.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: "statestore", Key: "k"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = e.raw.PublishEvent(ctx, &runtimev1pb.PublishEventRequest{PubsubName: "pubsub", Topic: "t"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = e.raw.GetSecret(ctx, &runtimev1pb.GetSecretRequest{StoreName: "s", Key: "k"})
	wantCode(t, err, codes.FailedPrecondition)
	stream, err := e.raw.SubscribeTopicEventsAlpha1(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&runtimev1pb.SubscribeTopicEventsRequestAlpha1{
		SubscribeTopicEventsRequestType: &runtimev1pb.SubscribeTopicEventsRequestAlpha1_InitialRequest{
			InitialRequest: &runtimev1pb.SubscribeTopicEventsRequestInitialAlpha1{PubsubName: "pubsub", Topic: "t"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.InvalidArgument)
}

// TestStoreErrorCodes: a store's own errors are Internal whatever the
// store says, but for ETag errors on writes (Aborted, InvalidArgument).
func TestStoreErrorCodes(t *testing.T) {
	e := newEnv(t, envOpts{maxValueBytes: 100})
	ctx := testCtx(t)
	err := e.sdk.SaveState(ctx, "statestore", "k", make([]byte, 200), nil)
	wantCode(t, err, codes.Internal)
	err = e.sdk.SaveState(ctx, "statestore", "k", []byte("1"), map[string]string{"ttlInSeconds": "soon"})
	wantCode(t, err, codes.Internal)
	err = e.sdk.SaveStateWithETag(ctx, "statestore", "k", []byte("1"), "not-a-version", nil)
	wantCode(t, err, codes.InvalidArgument)
}

// TestBulkPublishFailedEntries: as in daprd, failed entries fail the call
// with Internal.
func TestBulkPublishFailedEntries(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	ps := e.deps.Blocks.Components.Snapshot().PubSub["pubsub"]
	if err := ps.PS.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	_, err := e.raw.BulkPublishEventAlpha1(ctx, &runtimev1pb.BulkPublishRequest{PubsubName: "pubsub", Topic: "t",
		Entries: []*runtimev1pb.BulkPublishRequestEntry{{EntryId: "1", Event: []byte("a"), ContentType: "text/plain"}}})
	wantCode(t, err, codes.Internal)
	if !strings.Contains(err.Error(), "entry 1") {
		t.Errorf("error %v does not name the failed entry", err)
	}
	_, err = e.raw.PublishEvent(ctx, &runtimev1pb.PublishEventRequest{PubsubName: "pubsub", Topic: "t", Data: []byte("a")})
	wantCode(t, err, codes.Internal)
}

func TestMaxRequestBytes(t *testing.T) {
	e := newEnv(t, envOpts{maxRequestBytes: 1024})
	ctx := testCtx(t)
	_, err := e.raw.SaveState(ctx, &runtimev1pb.SaveStateRequest{StoreName: "statestore",
		States: []*commonv1pb.StateItem{{Key: "big", Value: make([]byte, 4096)}}})
	wantCode(t, err, codes.ResourceExhausted)
	if _, err := e.raw.SaveState(ctx, &runtimev1pb.SaveStateRequest{StoreName: "statestore",
		States: []*commonv1pb.StateItem{{Key: "small", Value: []byte("ok")}}}); err != nil {
		t.Fatalf("small SaveState: %v", err)
	}
}

// ---- pub/sub ----

func TestPublishStreamingSubscription(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)

	sub, err := e.sdk.Subscribe(ctx, client.SubscriptionOptions{PubsubName: "pubsub", Topic: "orders"})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	// Subscribe returns after the InitialResponse, so the subscription is
	// live: the metadata API lists it.
	md, err := e.raw.GetMetadata(ctx, &runtimev1pb.GetMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.GetSubscriptions()) != 1 || md.GetSubscriptions()[0].GetTopic() != "orders" ||
		md.GetSubscriptions()[0].GetType() != runtimev1pb.PubsubSubscriptionType_STREAMING {
		t.Fatalf("metadata subscriptions = %v, want one STREAMING on orders", md.GetSubscriptions())
	}

	if err := e.sdk.PublishEvent(ctx, "pubsub", "orders", map[string]any{"orderId": 7}); err != nil {
		t.Fatalf("PublishEvent: %v", err)
	}
	msg, err := sub.Receive()
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if msg.Topic != "orders" || msg.PubsubName != "pubsub" || msg.DataContentType != "application/json" ||
		string(msg.RawData) != `{"orderId":7}` || msg.Source != "app" || msg.ID == "" {
		t.Fatalf("event = %+v (data %s)", msg.TopicEvent, msg.RawData)
	}
	// RETRY: the same event comes again.
	if err := msg.Retry(); err != nil {
		t.Fatal(err)
	}
	again, err := sub.Receive()
	if err != nil {
		t.Fatalf("Receive after RETRY: %v", err)
	}
	if again.ID != msg.ID || string(again.RawData) != `{"orderId":7}` {
		t.Fatalf("redelivered %s %s, want %s", again.ID, again.RawData, msg.ID)
	}
	if err := again.Success(); err != nil {
		t.Fatal(err)
	}

	// SUCCESS acked it: the next event received is the next one published.
	if err := e.sdk.PublishEvent(ctx, "pubsub", "orders", "hello", client.PublishEventWithContentType("text/plain")); err != nil {
		t.Fatalf("PublishEvent: %v", err)
	}
	next, err := sub.Receive()
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if next.ID == msg.ID || next.DataContentType != "text/plain" || next.Data != "hello" {
		t.Fatalf("next event = %+v", next.TopicEvent)
	}
	if err := next.Drop(); err != nil {
		t.Fatal(err)
	}

	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the subscription to be removed", func() bool { return len(e.subs.List()) == 0 })
}

// rawSubscribe opens a stream, sends the initial request and waits for the
// initial response.
func rawSubscribe(t *testing.T, ctx context.Context, e *env, topic string) runtimev1pb.Dapr_SubscribeTopicEventsAlpha1Client {
	t.Helper()
	stream, err := e.raw.SubscribeTopicEventsAlpha1(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&runtimev1pb.SubscribeTopicEventsRequestAlpha1{
		SubscribeTopicEventsRequestType: &runtimev1pb.SubscribeTopicEventsRequestAlpha1_InitialRequest{
			InitialRequest: &runtimev1pb.SubscribeTopicEventsRequestInitialAlpha1{PubsubName: "pubsub", Topic: topic},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("initial response: %v", err)
	}
	if first.GetInitialResponse() == nil {
		t.Fatalf("first message = %v, want InitialResponse", first)
	}
	return stream
}

func recvEvent(t *testing.T, stream runtimev1pb.Dapr_SubscribeTopicEventsAlpha1Client) *runtimev1pb.TopicEventRequest {
	t.Helper()
	m, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	ev := m.GetEventMessage()
	if ev == nil {
		t.Fatalf("message = %v, want EventMessage", m)
	}
	return ev
}

func answer(t *testing.T, stream runtimev1pb.Dapr_SubscribeTopicEventsAlpha1Client, id string, st runtimev1pb.TopicEventResponse_TopicEventResponseStatus) {
	t.Helper()
	err := stream.Send(&runtimev1pb.SubscribeTopicEventsRequestAlpha1{
		SubscribeTopicEventsRequestType: &runtimev1pb.SubscribeTopicEventsRequestAlpha1_EventProcessed{
			EventProcessed: &runtimev1pb.SubscribeTopicEventsRequestProcessedAlpha1{Id: id, Status: &runtimev1pb.TopicEventResponse{Status: st}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRawSubscriptionTraceAndBulkPublish(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	stream := rawSubscribe(t, ctx, e, "bulk")

	tp := tracecontext.New()
	pctx := metadata.AppendToOutgoingContext(ctx, "traceparent", tp)
	_, err := e.raw.PublishEvent(pctx, &runtimev1pb.PublishEventRequest{PubsubName: "pubsub", Topic: "bulk",
		Data: []byte(`{"n":0}`), DataContentType: "application/json", Metadata: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatalf("PublishEvent: %v", err)
	}
	ev := recvEvent(t, stream)
	if ev.GetPath() != "/" || ev.GetTopic() != "bulk" || string(ev.GetData()) != `{"n":0}` {
		t.Fatalf("event = %v", ev)
	}
	if got := ev.GetExtensions().GetFields()["traceparent"].GetStringValue(); got != tp {
		t.Errorf("traceparent extension = %q, want %q", got, tp)
	}
	answer(t, stream, ev.GetId(), runtimev1pb.TopicEventResponse_SUCCESS)

	// The in-memory pubsub delivers to a subscriber one event at a time
	// and blocks publishers meanwhile, so the bulk publish runs while this
	// goroutine answers the events.
	type bulkResult struct {
		resp *runtimev1pb.BulkPublishResponse
		err  error
	}
	bulkDone := make(chan bulkResult, 1)
	go func() {
		resp, err := e.raw.BulkPublishEventAlpha1(ctx, &runtimev1pb.BulkPublishRequest{PubsubName: "pubsub", Topic: "bulk",
			Entries: []*runtimev1pb.BulkPublishRequestEntry{
				{EntryId: "1", Event: []byte(`{"n":1}`), ContentType: "application/json"},
				{EntryId: "2", Event: []byte("two"), ContentType: "text/plain"},
			}})
		bulkDone <- bulkResult{resp, err}
	}()
	got := map[string]bool{}
	for range 2 {
		ev := recvEvent(t, stream)
		got[string(ev.GetData())] = true
		answer(t, stream, ev.GetId(), runtimev1pb.TopicEventResponse_SUCCESS)
	}
	if !got[`{"n":1}`] || !got["two"] {
		t.Fatalf("bulk events received: %v", got)
	}
	res := <-bulkDone
	if res.err != nil {
		t.Fatalf("BulkPublishEventAlpha1: %v", res.err)
	}
	if len(res.resp.GetFailedEntries()) != 0 {
		t.Fatalf("failed entries: %v", res.resp.GetFailedEntries())
	}

	_, err = e.raw.BulkPublishEventAlpha1(ctx, &runtimev1pb.BulkPublishRequest{PubsubName: "pubsub", Topic: "bulk",
		Entries: []*runtimev1pb.BulkPublishRequestEntry{{EntryId: "1", Event: []byte("a")}, {EntryId: "1", Event: []byte("b")}}})
	wantCode(t, err, codes.InvalidArgument)

	// Closing our side ends the RPC with OK and removes the subscription.
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend = %v, want io.EOF", err)
	}
	eventually(t, "the subscription to be removed", func() bool { return len(e.subs.List()) == 0 })
}

func TestSubscribeInvalid(t *testing.T) {
	e := newEnv(t, envOpts{})
	tests := []struct {
		name  string
		first *runtimev1pb.SubscribeTopicEventsRequestAlpha1
		code  codes.Code
	}{
		// daprd answers a bad first message with a plain error: Unknown.
		{"event before initial request", &runtimev1pb.SubscribeTopicEventsRequestAlpha1{
			SubscribeTopicEventsRequestType: &runtimev1pb.SubscribeTopicEventsRequestAlpha1_EventProcessed{
				EventProcessed: &runtimev1pb.SubscribeTopicEventsRequestProcessedAlpha1{Id: "x"}}}, codes.Unknown},
		{"no pubsub name", &runtimev1pb.SubscribeTopicEventsRequestAlpha1{
			SubscribeTopicEventsRequestType: &runtimev1pb.SubscribeTopicEventsRequestAlpha1_InitialRequest{
				InitialRequest: &runtimev1pb.SubscribeTopicEventsRequestInitialAlpha1{Topic: "t"}}}, codes.Unknown},
		{"no topic", &runtimev1pb.SubscribeTopicEventsRequestAlpha1{
			SubscribeTopicEventsRequestType: &runtimev1pb.SubscribeTopicEventsRequestAlpha1_InitialRequest{
				InitialRequest: &runtimev1pb.SubscribeTopicEventsRequestInitialAlpha1{PubsubName: "pubsub"}}}, codes.Unknown},
		{"unknown pubsub", &runtimev1pb.SubscribeTopicEventsRequestAlpha1{
			SubscribeTopicEventsRequestType: &runtimev1pb.SubscribeTopicEventsRequestAlpha1_InitialRequest{
				InitialRequest: &runtimev1pb.SubscribeTopicEventsRequestInitialAlpha1{PubsubName: "nopubsub", Topic: "t"}}}, codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			stream, err := e.raw.SubscribeTopicEventsAlpha1(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(tc.first); err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			wantCode(t, err, tc.code)
		})
	}
}

func TestStreamEndsWhileWaiting(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	sctx, cancel := context.WithCancel(ctx)
	stream := rawSubscribe(t, sctx, e, "abandoned")
	if err := e.sdk.PublishEvent(ctx, "pubsub", "abandoned", []byte("x")); err != nil {
		t.Fatal(err)
	}
	recvEvent(t, stream)
	// Hang up without answering: the delivery waiting for the answer gives
	// up and the subscription goes away.
	cancel()
	eventually(t, "the subscription to be removed", func() bool { return len(e.subs.List()) == 0 })

	// A new subscriber on the same topic works.
	stream2 := rawSubscribe(t, ctx, e, "abandoned")
	if err := e.sdk.PublishEvent(ctx, "pubsub", "abandoned", []byte("y")); err != nil {
		t.Fatal(err)
	}
	ev := recvEvent(t, stream2)
	answer(t, stream2, ev.GetId(), runtimev1pb.TopicEventResponse_SUCCESS)
}

func TestSinkStreamClosed(t *testing.T) {
	k := &streamSink{done: make(chan struct{}), waiters: map[string][]chan *runtimev1pb.TopicEventResponse{}}
	k.close()
	st, err := k.DeliverEvent(context.Background(), &appchannel.TopicEvent{Topic: "t", CloudEvent: []byte(`{"id":"1","specversion":"1.0"}`)})
	if st != appchannel.StatusRetry || !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("DeliverEvent on a closed stream = %v, %v; want retry, ErrStreamClosed", st, err)
	}
	if len(k.waiters) != 0 {
		t.Fatalf("waiters left behind: %v", k.waiters)
	}
}

func TestGracefulStopEndsSubscriptions(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	stream := rawSubscribe(t, ctx, e, "stopping")
	stopped := make(chan struct{})
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.srv.GracefulStop(sctx)
		close(stopped)
	}()
	// daprd ends the stream with a plain error ("api server closed").
	_, err := stream.Recv()
	wantCode(t, err, codes.Unknown)
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("GracefulStop did not return")
	}
}

// ---- invocation ----

func TestInvokeService(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	ictx := metadata.AppendToOutgoingContext(ctx, "x-custom", "from-caller")
	out, err := e.sdk.InvokeMethodWithContent(ictx, "app", "echo?x=1&y=two", "put",
		&client.DataContent{Data: []byte("hi there"), ContentType: "text/plain"})
	if err != nil {
		t.Fatalf("InvokeMethodWithContent: %v", err)
	}
	var got appEcho
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("app answered %q: %v", out, err)
	}
	if got.Method != "PUT" || got.Path != "/echo" || got.Query != "x=1&y=two" || got.Body != "hi there" ||
		got.ContentType != "text/plain" || got.Custom != "from-caller" {
		t.Fatalf("app saw %+v", got)
	}
	for _, h := range got.Headers {
		if strings.HasPrefix(h, ":") || strings.HasPrefix(h, "grpc-") || h == "user-agent" {
			t.Errorf("transport header %q reached the app (headers %v)", h, got.Headers)
		}
	}

	// Raw: the response carries content type and the app's headers.
	var hdr metadata.MD
	resp, err := e.raw.InvokeService(ctx, &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{
		Method: "echo", Data: &anypb.Any{Value: []byte("b")}, ContentType: "application/octet-stream",
		HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_NONE}}}, grpc.Header(&hdr))
	if err != nil {
		t.Fatalf("InvokeService: %v", err)
	}
	if resp.GetContentType() != "application/json" {
		t.Errorf("content type = %q", resp.GetContentType())
	}
	if err := json.Unmarshal(resp.GetData().GetValue(), &got); err != nil || got.Method != "POST" {
		t.Errorf("verb NONE reached the app as %q (%v), want POST", got.Method, err)
	}
	if v := hdr.Get("x-app"); len(v) != 1 || v[0] != "yes" {
		t.Errorf("x-app header = %v (all %v)", v, hdr)
	}
	if v := hdr.Get("dapr-http-status"); len(v) != 1 || v[0] != "200" {
		t.Errorf("dapr-http-status = %v", v)
	}
	if v := hdr.Get("dapr-content-type"); len(v) != 1 || v[0] != "application/json" {
		t.Errorf("dapr-content-type = %v", v)
	}
}

func TestInvokeServiceAppErrors(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)

	// The SDK sees the status code.
	_, err := e.sdk.InvokeMethod(ctx, "app", "status/404", "get")
	wantCode(t, err, codes.NotFound)

	// Codes follow Dapr 1.14's CodeFromHTTPStatus.
	tests := []struct {
		http int
		code codes.Code
	}{
		{400, codes.Internal},
		{401, codes.Unauthenticated},
		{403, codes.PermissionDenied},
		{404, codes.NotFound},
		{408, codes.Canceled},
		{409, codes.AlreadyExists},
		{429, codes.ResourceExhausted},
		{500, codes.Unknown},
		{501, codes.Unimplemented},
		{503, codes.Unavailable},
		{504, codes.DeadlineExceeded},
		{418, codes.Unknown},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.http), func(t *testing.T) {
			var hdr metadata.MD
			_, err := e.raw.InvokeService(ctx, &runtimev1pb.InvokeServiceRequest{Id: "app", Message: &commonv1pb.InvokeRequest{
				Method: "status/" + strconv.Itoa(tc.http), HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_GET}}},
				grpc.Header(&hdr))
			wantCode(t, err, tc.code)
			st := status.Convert(err)
			if st.Message() != http.StatusText(tc.http) {
				t.Errorf("message = %q, want %q", st.Message(), http.StatusText(tc.http))
			}
			var info *errdetails.ErrorInfo
			for _, d := range st.Details() {
				if ei, ok := d.(*errdetails.ErrorInfo); ok {
					info = ei
				}
			}
			if info == nil || info.GetDomain() != "dapr.io" || info.GetMetadata()["http.code"] != strconv.Itoa(tc.http) ||
				info.GetMetadata()["http.error_message"] != "app says "+strconv.Itoa(tc.http) {
				t.Errorf("ErrorInfo = %v", info)
			}
			if v := hdr.Get("dapr-http-status"); len(v) != 1 || v[0] != strconv.Itoa(tc.http) {
				t.Errorf("dapr-http-status = %v", v)
			}
		})
	}
}

func TestCodeFromAppStatusInvertsHTTPStatusFromCode(t *testing.T) {
	// A gRPC app's error code survives the trip through an HTTP status,
	// except for the codes HTTPStatusFromCode merges.
	merged := map[codes.Code]codes.Code{
		codes.FailedPrecondition: codes.InvalidArgument, codes.OutOfRange: codes.InvalidArgument,
		codes.AlreadyExists: codes.Aborted, codes.Internal: codes.Unknown, codes.DataLoss: codes.Unknown,
	}
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		want := c
		if m, ok := merged[c]; ok {
			want = m
		}
		if got := codeFromAppStatus(appchannel.HTTPStatusFromCode(c)); got != want {
			t.Errorf("%v -> %d -> %v, want %v", c, appchannel.HTTPStatusFromCode(c), got, want)
		}
	}
}

// ---- bindings, secrets, metadata, shutdown, metrics ----

func TestInvokeBinding(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	out, err := e.sdk.InvokeBinding(ctx, &client.InvokeBindingRequest{Name: "apphttp", Operation: "post",
		Data: []byte("payload"), Metadata: map[string]string{"path": "/binding"}})
	if err != nil {
		t.Fatalf("InvokeBinding: %v", err)
	}
	if string(out.Data) != "bound:payload" || out.Metadata["statusCode"] != "200" {
		t.Fatalf("InvokeBinding = %q %v", out.Data, out.Metadata)
	}
	_, err = e.sdk.InvokeBinding(ctx, &client.InvokeBindingRequest{Name: "apphttp", Operation: "",
		Data: []byte("payload")})
	if err == nil {
		t.Fatal("InvokeBinding without an operation succeeded")
	}
}

func TestSecrets(t *testing.T) {
	t.Setenv("MECHATEST_DB_PASSWORD", "s3cret")
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	got, err := e.sdk.GetSecret(ctx, "envsecrets", "DB_PASSWORD", nil)
	if err != nil {
		t.Fatalf("GetSecret: %v", err)
	}
	if got["DB_PASSWORD"] != "s3cret" {
		t.Fatalf("GetSecret = %v", got)
	}
	bulk, err := e.sdk.GetBulkSecret(ctx, "envsecrets", nil)
	if err != nil {
		t.Fatalf("GetBulkSecret: %v", err)
	}
	if bulk["DB_PASSWORD"]["DB_PASSWORD"] != "s3cret" {
		t.Fatalf("GetBulkSecret = %v", bulk)
	}
}

func TestMetadata(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	if err := e.sdk.SetMetadata(ctx, "team", "core"); err != nil {
		t.Fatalf("SetMetadata: %v", err)
	}
	md, err := e.sdk.GetMetadata(ctx)
	if err != nil {
		t.Fatalf("GetMetadata: %v", err)
	}
	if md.ID != "app" || md.ExtendedMetadata["team"] != "core" {
		t.Fatalf("GetMetadata = %+v", md)
	}
	names := map[string]string{}
	for _, c := range md.RegisteredComponents {
		names[c.Name] = c.Type
	}
	for name, typ := range map[string]string{"statestore": "state.crux", "pubsub": "pubsub.in-memory", "envsecrets": "secretstores.local.env"} {
		if names[name] != typ {
			t.Errorf("component %s type %q, want %q (all %v)", name, names[name], typ, names)
		}
	}

	raw, err := e.raw.GetMetadata(ctx, &runtimev1pb.GetMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	acp := raw.GetAppConnectionProperties()
	if raw.GetRuntimeVersion() != "test-1.0" || len(raw.GetEnabledFeatures()) != 1 || acp.GetPort() != 3000 ||
		acp.GetProtocol() != "http" || acp.GetMaxConcurrency() != 7 || acp.GetHealth().GetHealthCheckPath() != "/healthz" ||
		acp.GetHealth().GetHealthThreshold() != 3 {
		t.Fatalf("GetMetadata = %v", raw)
	}

	// An empty key is a no-op, as in Dapr.
	if _, err := e.raw.SetMetadata(ctx, &runtimev1pb.SetMetadataRequest{Key: "", Value: "x"}); err != nil {
		t.Fatal(err)
	}
}

func TestShutdown(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	if _, err := e.raw.Shutdown(ctx, &runtimev1pb.ShutdownRequest{}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case <-e.shutdown:
	default:
		t.Fatal("Shutdown RPC returned without starting the runtime's shutdown")
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	_, _ = e.raw.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: "statestore", Key: "m"})
	_, _ = e.raw.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: "nostore", Key: "m"})
	_, _ = e.raw.GetConfiguration(ctx, &runtimev1pb.GetConfigurationRequest{})

	fams, err := e.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "mecha_api_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			got[l["protocol"]+"/"+l["block"]+"/"+l["op"]+"/"+l["status"]] = m.GetCounter().GetValue()
		}
	}
	for _, want := range []string{"grpc/state/get/OK", "grpc/state/get/InvalidArgument", "grpc/unimplemented/GetConfiguration/Unimplemented"} {
		if got[want] != 1 {
			t.Errorf("%s = %v, want 1 (all %v)", want, got[want], got)
		}
	}
}

// TestPeerError: another runtime's own error answer (marked with
// mecha-error-code) keeps its Dapr code and message, with the gRPC code
// of its HTTP status, in the status the caller gets.
func TestPeerError(t *testing.T) {
	err := grpcErr(peerError("ERR_INSTANCE_NOT_FOUND", 404, []byte(`{"errorCode":"ERR_INSTANCE_NOT_FOUND","message":"failed to invoke, id: gw, instance: n2: gone"}`)))
	st := status.Convert(err)
	if st.Code() != codes.NotFound || st.Message() != "failed to invoke, id: gw, instance: n2: gone" {
		t.Fatalf("status %v %q", st.Code(), st.Message())
	}
	var reason string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	if reason != "ERR_INSTANCE_NOT_FOUND" {
		t.Fatalf("ErrorInfo reason %q", reason)
	}
	if st := status.Convert(grpcErr(peerError("ERR_DIRECT_INVOKE", 500, []byte("not json")))); st.Code() != codeFromHTTPStatus(500) || st.Message() != "Internal Server Error" {
		t.Fatalf("a body that is not JSON: %v %q", st.Code(), st.Message())
	}
}
