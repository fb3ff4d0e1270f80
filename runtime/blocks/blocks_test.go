package blocks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mecha/internal/poll"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/components-contrib/state"
	inmemorystate "github.com/dapr/components-contrib/state/in-memory"
	"github.com/dapr/kit/logger"
	"google.golang.org/grpc/codes"

	"mecha/components"
	"mecha/runtime/apierr"
	"mecha/runtime/blocks"
	"mecha/runtime/cloudevent"
)

// badETagStore rejects every ETag as malformed, as stores with numeric
// ETags do. It is not transactional: it only has state.Store's methods.
type badETagStore struct{ state.Store }

func (badETagStore) Set(context.Context, *state.SetRequest) error {
	return state.NewETagError(state.ETagInvalid, errors.New("etag is not a number"))
}

// failingStore fails every read and write the way a store can: Get with
// an ETag error (which reads do not single out), Set and Delete with an
// error marked as the caller's (InvalidInput), BulkGet outright.
type failingStore struct{ state.Store }

type inputError string

func (e inputError) Error() string      { return string(e) }
func (e inputError) InvalidInput() bool { return true }

func (failingStore) Get(context.Context, *state.GetRequest) (*state.GetResponse, error) {
	return nil, state.NewETagError(state.ETagMismatch, errors.New("etag mismatch on a read"))
}

func (failingStore) Set(context.Context, *state.SetRequest) error {
	return inputError("value is larger than the configured maximum")
}

func (failingStore) Delete(context.Context, *state.DeleteRequest) error {
	return inputError("key is longer than allowed")
}

func (failingStore) BulkGet(context.Context, []state.GetRequest, state.BulkGetOpts) ([]state.BulkGetResponse, error) {
	return nil, errors.New("store unreachable")
}

// echoBinding is an output binding that answers with the request data, or
// fails for the operation "fail"; "nil" answers nothing.
type echoBinding struct{}

func (echoBinding) Init(context.Context, bindings.Metadata) error { return nil }
func (echoBinding) Operations() []bindings.OperationKind {
	return []bindings.OperationKind{bindings.CreateOperation, "fail", "nil"}
}

func (echoBinding) Invoke(_ context.Context, req *bindings.InvokeRequest) (*bindings.InvokeResponse, error) {
	switch req.Operation {
	case "fail":
		return nil, errors.New("downstream refused")
	case "nil":
		return nil, nil
	}
	return &bindings.InvokeResponse{Data: req.Data, Metadata: map[string]string{"op": string(req.Operation)}}, nil
}

func comp(name, typ string) *components.Component {
	return &components.Component{APIVersion: "dapr.io/v1alpha1", Kind: "Component",
		Metadata: components.ObjectMeta{Name: name}, Spec: components.ComponentSpec{Type: typ, Version: "v1"}}
}

// newBlocks returns blocks for app "app" over a manager loaded with the
// embedded defaults plus extra; with loaded false the manager is empty.
func newBlocks(t *testing.T, loaded bool, extra ...*components.Component) *blocks.Blocks {
	t.Helper()
	reg := components.NewRegistry()
	components.RegisterContrib(reg)
	components.RegisterMecha(reg, components.MechaOptions{DataDir: t.TempDir()})
	reg.Register("state.badetag", "v1", func(l logger.Logger) any { return badETagStore{inmemorystate.NewInMemoryStateStore(l)} })
	reg.Register("state.failing", "v1", func(l logger.Logger) any { return failingStore{inmemorystate.NewInMemoryStateStore(l)} })
	reg.Register("bindings.echo", "v1", func(logger.Logger) any { return echoBinding{} })
	log := slog.New(slog.DiscardHandler)
	m := components.NewManager(components.Options{AppID: "app", Registry: reg,
		Defaults: append(components.EmbeddedDefaults(false), extra...), Logger: log})
	t.Cleanup(func() { _ = m.Close() })
	if loaded {
		if _, err := m.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	return &blocks.Blocks{AppID: "app", Components: m, Log: log}
}

// wantAPIErr checks that err is an *apierr.Error with the given code and
// statuses.
func wantAPIErr(t *testing.T, err error, code string, httpStatus int, grpcCode codes.Code) {
	t.Helper()
	var e *apierr.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *apierr.Error", err, err)
	}
	if e.Code != code || e.HTTP != httpStatus || e.GRPC != grpcCode {
		t.Errorf("error = {Code:%s HTTP:%d GRPC:%v} %q, want {%s %d %v}", e.Code, e.HTTP, e.GRPC, e.Message, code, httpStatus, grpcCode)
	}
}

func ptr[T any](v T) *T { return &v }

func TestStateRoundTrip(t *testing.T) {
	b := newBlocks(t, true)
	ctx := t.Context()
	if err := b.SaveState(ctx, "statestore", []state.SetRequest{{Key: "k", Value: []byte(`"v"`)}}); err != nil {
		t.Fatal(err)
	}
	got, err := b.GetState(ctx, "statestore", "k", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Data) != `"v"` || got.ETag == nil || *got.ETag == "" {
		t.Errorf("GetState = data %q etag %v", got.Data, got.ETag)
	}

	// The key is stored with the app id prefix.
	raw := b.Components.Snapshot().State["statestore"].Store
	stored, err := raw.Get(ctx, &state.GetRequest{Key: "app||k"})
	if err != nil || string(stored.Data) != `"v"` {
		t.Errorf("raw Get(app||k) = %v, %v; want the saved value", stored, err)
	}
	if unprefixed, _ := raw.Get(ctx, &state.GetRequest{Key: "k"}); unprefixed != nil && unprefixed.Data != nil {
		t.Errorf("raw Get(k) = %q: the key was stored without its prefix", unprefixed.Data)
	}

	// Several items go in one call; an ETag that matches is accepted.
	if err := b.SaveState(ctx, "statestore", []state.SetRequest{
		{Key: "k", Value: []byte(`"v2"`), ETag: got.ETag},
		{Key: "k2", Value: []byte(`2`)},
	}); err != nil {
		t.Fatal(err)
	}
	bulk, err := b.BulkGetState(ctx, "statestore", []string{"k", "k2", "missing"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{}
	for _, r := range bulk {
		values[r.Key] = string(r.Data)
	}
	if want := map[string]string{"k": `"v2"`, "k2": "2", "missing": ""}; fmt.Sprint(values) != fmt.Sprint(want) {
		t.Errorf("BulkGetState = %v, want %v (keys as the app sees them)", values, want)
	}

	if err := b.DeleteState(ctx, "statestore", &state.DeleteRequest{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteBulkState(ctx, "statestore", []state.DeleteRequest{{Key: "k2"}}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k", "k2"} {
		if got, err := b.GetState(ctx, "statestore", k, "", nil); err != nil || got.Data != nil {
			t.Errorf("GetState(%s) after delete = %q, %v", k, got.Data, err)
		}
	}
	if got, err := b.BulkGetState(ctx, "statestore", nil, 0, nil); err != nil || got == nil || len(got) != 0 {
		t.Errorf("BulkGetState of no keys = %v, %v; want an empty list", got, err)
	}
}

func TestTransaction(t *testing.T) {
	b := newBlocks(t, true)
	ctx := t.Context()
	if err := b.SaveState(ctx, "statestore", []state.SetRequest{{Key: "gone", Value: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	err := b.Transaction(ctx, "statestore", []blocks.TxOp{
		{Operation: "upsert", Set: state.SetRequest{Key: "new", Value: []byte("2")}},
		{Operation: "delete", Delete: state.DeleteRequest{Key: "gone"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := b.GetState(ctx, "statestore", "new", "", nil); got == nil || string(got.Data) != "2" {
		t.Errorf("upserted key = %v", got)
	}
	if got, _ := b.GetState(ctx, "statestore", "gone", "", nil); got == nil || got.Data != nil {
		t.Errorf("deleted key still holds %q", got.Data)
	}
	raw := b.Components.Snapshot().State["statestore"].Store
	if got, _ := raw.Get(ctx, &state.GetRequest{Key: "app||new"}); got == nil || string(got.Data) != "2" {
		t.Errorf("transaction did not prefix its keys: raw Get(app||new) = %v", got)
	}
	// An empty key is the store's to judge, as in daprd: with the app-id
	// prefix it is a key like any other.
	if err := b.Transaction(ctx, "statestore", []blocks.TxOp{{Operation: "upsert", Set: state.SetRequest{Key: "", Value: []byte("3")}}}, nil); err != nil {
		t.Errorf("transaction with an empty key: %v", err)
	}
}

func TestStateErrors(t *testing.T) {
	ctx := context.Background()
	// seeded has "k" saved in the default store.
	seeded := func(t *testing.T, extra ...*components.Component) *blocks.Blocks {
		b := newBlocks(t, true, extra...)
		if err := b.SaveState(ctx, "statestore", []state.SetRequest{{Key: "k", Value: []byte("1")}}); err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		run  func(t *testing.T) error
		code string
		http int
		grpc codes.Code
	}{
		{
			name: "etag mismatch on save",
			run: func(t *testing.T) error {
				return seeded(t).SaveState(ctx, "statestore", []state.SetRequest{{Key: "k", Value: []byte("2"), ETag: ptr("999999")}})
			},
			code: "ERR_STATE_SAVE", http: http.StatusConflict, grpc: codes.Aborted,
		},
		{
			name: "etag mismatch on delete",
			run: func(t *testing.T) error {
				return seeded(t).DeleteState(ctx, "statestore", &state.DeleteRequest{Key: "k", ETag: ptr("999999")})
			},
			code: "ERR_STATE_DELETE", http: http.StatusConflict, grpc: codes.Aborted,
		},
		{
			// daprd does not single out ETag errors in transactions.
			name: "etag mismatch in a transaction",
			run: func(t *testing.T) error {
				return seeded(t).Transaction(ctx, "statestore", []blocks.TxOp{
					{Operation: "upsert", Set: state.SetRequest{Key: "k", Value: []byte("2"), ETag: ptr("999999")}},
				}, nil)
			},
			code: "ERR_STATE_TRANSACTION", http: http.StatusInternalServerError, grpc: codes.Internal,
		},
		{
			name: "invalid etag",
			run: func(t *testing.T) error {
				return newBlocks(t, true, comp("numeric", "state.badetag")).SaveState(ctx, "numeric", []state.SetRequest{{Key: "k", Value: []byte("2"), ETag: ptr("abc")}})
			},
			code: "ERR_STATE_SAVE", http: http.StatusBadRequest, grpc: codes.InvalidArgument,
		},
		{
			name: "unknown store",
			run: func(t *testing.T) error {
				_, err := newBlocks(t, true).GetState(ctx, "nope", "k", "", nil)
				return err
			},
			code: "ERR_STATE_STORE_NOT_FOUND", http: http.StatusBadRequest, grpc: codes.InvalidArgument,
		},
		{
			name: "no stores configured",
			run: func(t *testing.T) error {
				return newBlocks(t, false).SaveState(ctx, "statestore", []state.SetRequest{{Key: "k"}})
			},
			code: "ERR_STATE_STORE_NOT_CONFIGURED", http: http.StatusInternalServerError, grpc: codes.FailedPrecondition,
		},
		{
			name: "empty key",
			run: func(t *testing.T) error {
				return newBlocks(t, true).SaveState(ctx, "statestore", []state.SetRequest{{Key: "a"}, {Key: ""}})
			},
			code: "ERR_MALFORMED_REQUEST", http: http.StatusBadRequest, grpc: codes.InvalidArgument,
		},
		{
			name: "key with the prefix separator",
			run: func(t *testing.T) error {
				_, err := newBlocks(t, true).GetState(ctx, "statestore", "a||b", "", nil)
				return err
			},
			code: "ERR_MALFORMED_REQUEST", http: http.StatusBadRequest, grpc: codes.InvalidArgument,
		},
		{
			name: "transaction with an unknown operation",
			run: func(t *testing.T) error {
				return seeded(t).Transaction(ctx, "statestore", []blocks.TxOp{
					{Operation: "upsert", Set: state.SetRequest{Key: "k", Value: []byte("changed")}},
					{Operation: "patch", Set: state.SetRequest{Key: "k", Value: []byte("x")}},
				}, nil)
			},
			code: "ERR_NOT_SUPPORTED_STATE_OPERATION", http: http.StatusBadRequest, grpc: codes.Unimplemented,
		},
		{
			name: "transaction operation in another letter case",
			run: func(t *testing.T) error {
				return seeded(t).Transaction(ctx, "statestore", []blocks.TxOp{{Operation: "Upsert", Set: state.SetRequest{Key: "k"}}}, nil)
			},
			code: "ERR_NOT_SUPPORTED_STATE_OPERATION", http: http.StatusBadRequest, grpc: codes.Unimplemented,
		},
		{
			name: "transaction with an unknown operation on an unknown store",
			run: func(t *testing.T) error {
				return seeded(t).Transaction(ctx, "nope", []blocks.TxOp{{Operation: "patch"}}, nil)
			},
			code: "ERR_STATE_STORE_NOT_FOUND", http: http.StatusBadRequest, grpc: codes.InvalidArgument,
		},
		{
			name: "transaction with a key with the prefix separator",
			run: func(t *testing.T) error {
				return seeded(t).Transaction(ctx, "statestore", []blocks.TxOp{{Operation: "delete", Delete: state.DeleteRequest{Key: "a||b"}}}, nil)
			},
			code: "ERR_MALFORMED_REQUEST", http: http.StatusBadRequest, grpc: codes.InvalidArgument,
		},
		{
			name: "transaction with an unknown concurrency",
			run: func(t *testing.T) error {
				return seeded(t).Transaction(ctx, "statestore", []blocks.TxOp{{Operation: "upsert",
					Set: state.SetRequest{Key: "k", Options: state.SetStateOption{Concurrency: "sometimes"}}}}, nil)
			},
			code: "ERR_STATE_TRANSACTION", http: http.StatusInternalServerError, grpc: codes.Internal,
		},
		{
			name: "save with an unknown concurrency",
			run: func(t *testing.T) error {
				return seeded(t).SaveState(ctx, "statestore", []state.SetRequest{{Key: "k", Options: state.SetStateOption{Concurrency: "sometimes"}}})
			},
			code: "ERR_STATE_SAVE", http: http.StatusInternalServerError, grpc: codes.Internal,
		},
		{
			name: "delete with an unknown consistency",
			run: func(t *testing.T) error {
				return seeded(t).DeleteState(ctx, "statestore", &state.DeleteRequest{Key: "k", Options: state.DeleteStateOption{Consistency: "often"}})
			},
			code: "ERR_STATE_DELETE", http: http.StatusInternalServerError, grpc: codes.Internal,
		},
		{
			name: "bulk delete with an unknown concurrency",
			run: func(t *testing.T) error {
				return seeded(t).DeleteBulkState(ctx, "statestore", []state.DeleteRequest{{Key: "k", Options: state.DeleteStateOption{Concurrency: "x"}}})
			},
			code: "ERR_STATE_DELETE", http: http.StatusInternalServerError, grpc: codes.Internal,
		},
		{
			name: "etag mismatch on bulk delete",
			run: func(t *testing.T) error {
				return seeded(t).DeleteBulkState(ctx, "statestore", []state.DeleteRequest{{Key: "k", ETag: ptr("999999")}})
			},
			code: "ERR_STATE_DELETE", http: http.StatusConflict, grpc: codes.Aborted,
		},
		{
			name: "store error on get, even an ETag error",
			run: func(t *testing.T) error {
				_, err := newBlocks(t, true, comp("failing", "state.failing")).GetState(ctx, "failing", "k", "", nil)
				return err
			},
			code: "ERR_STATE_GET", http: http.StatusInternalServerError, grpc: codes.Internal,
		},
		{
			name: "store error the store marks as the caller's, on save",
			run: func(t *testing.T) error {
				return newBlocks(t, true, comp("failing", "state.failing")).SaveState(ctx, "failing", []state.SetRequest{{Key: "k", Value: []byte("1")}})
			},
			code: "ERR_STATE_SAVE", http: http.StatusInternalServerError, grpc: codes.Internal,
		},
		{
			name: "store error the store marks as the caller's, on delete",
			run: func(t *testing.T) error {
				return newBlocks(t, true, comp("failing", "state.failing")).DeleteState(ctx, "failing", &state.DeleteRequest{Key: "k"})
			},
			code: "ERR_STATE_DELETE", http: http.StatusInternalServerError, grpc: codes.Internal,
		},
		{
			name: "store error on bulk get",
			run: func(t *testing.T) error {
				_, err := newBlocks(t, true, comp("failing", "state.failing")).BulkGetState(ctx, "failing", []string{"a"}, 0, nil)
				return err
			},
			code: "ERR_STATE_BULK_GET", http: http.StatusInternalServerError, grpc: codes.Unknown,
		},
		{
			name: "scan on a store that cannot scan",
			run: func(t *testing.T) error {
				_, err := newBlocks(t, true, comp("plain", "state.badetag")).ScanState(ctx, "plain", "", 0)
				return err
			},
			code: "ERR_STATE_STORE_NOT_SUPPORTED", http: http.StatusInternalServerError, grpc: codes.Internal,
		},
		{
			name: "check: unknown store",
			run: func(t *testing.T) error {
				return newBlocks(t, true).CheckState("nope", false)
			},
			code: "ERR_STATE_STORE_NOT_FOUND", http: http.StatusBadRequest, grpc: codes.InvalidArgument,
		},
		{
			name: "check: no transactions",
			run: func(t *testing.T) error {
				return newBlocks(t, true, comp("plain", "state.badetag")).CheckState("plain", true)
			},
			code: "ERR_STATE_STORE_NOT_SUPPORTED", http: http.StatusInternalServerError, grpc: codes.Unimplemented,
		},
		{
			name: "transaction on a store without transactions",
			run: func(t *testing.T) error {
				return newBlocks(t, true, comp("plain", "state.badetag")).Transaction(ctx, "plain", []blocks.TxOp{{Operation: "upsert", Set: state.SetRequest{Key: "k"}}}, nil)
			},
			code: "ERR_STATE_STORE_NOT_SUPPORTED", http: http.StatusInternalServerError, grpc: codes.Unimplemented,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantAPIErr(t, c.run(t), c.code, c.http, c.grpc)
		})
	}
}

func TestTransactionUnknownOpIsAtomic(t *testing.T) {
	b := newBlocks(t, true)
	ctx := t.Context()
	err := b.Transaction(ctx, "statestore", []blocks.TxOp{
		{Operation: "upsert", Set: state.SetRequest{Key: "first", Value: []byte("1")}},
		{Operation: "merge"},
	}, nil)
	wantAPIErr(t, err, "ERR_NOT_SUPPORTED_STATE_OPERATION", http.StatusBadRequest, codes.Unimplemented)
	if got, _ := b.GetState(ctx, "statestore", "first", "", nil); got == nil || got.Data != nil {
		t.Errorf("the upsert before the bad operation was applied: %q", got.Data)
	}
}

func TestEnvelope(t *testing.T) {
	b := newBlocks(t, false)
	cases := []struct {
		name string
		req  blocks.PublishRequest
		// raw is the exact output expected; otherwise attrs are checked.
		raw   string
		attrs map[string]any
	}{
		{
			name: "rawPayload passes data as is",
			req:  blocks.PublishRequest{PubsubName: "ps", Topic: "t", Data: []byte("not json \x00"), ContentType: "application/json", Metadata: map[string]string{"rawPayload": "True"}},
			raw:  "not json \x00",
		},
		{
			name: "an app CloudEvent is completed, keeping its attributes",
			req: blocks.PublishRequest{PubsubName: "ps", Topic: "t", ContentType: "application/cloudevents+json; charset=utf-8",
				Data: []byte(`{"id":"given","specversion":"1.0","type":"my.type","source":"elsewhere","topic":"old","data":{"a":1}}`)},
			attrs: map[string]any{"id": "given", "type": "my.type", "source": "elsewhere", "specversion": "1.0",
				"topic": "t", "pubsubname": "ps", "data": map[string]any{"a": 1.0}},
		},
		{
			name: "a minimal app CloudEvent gets the missing attributes",
			req:  blocks.PublishRequest{PubsubName: "ps", Topic: "t", ContentType: "application/cloudevents+json", Data: []byte(`{"data":"x"}`), TraceParent: "00-1-2-01"},
			attrs: map[string]any{"source": "app", "type": cloudevent.EventType, "specversion": "1.0", "topic": "t", "pubsubname": "ps",
				"data": "x", "traceparent": "00-1-2-01"},
		},
		{
			name: "JSON data gets a new envelope",
			req:  blocks.PublishRequest{PubsubName: "ps", Topic: "t", ContentType: "application/json", Data: []byte(`{"order": 7}`), TraceParent: "00-1-2-01", TraceState: "k=v"},
			attrs: map[string]any{"source": "app", "type": cloudevent.EventType, "specversion": "1.0", "topic": "t", "pubsubname": "ps",
				"datacontenttype": "application/json", "data": map[string]any{"order": 7.0}, "traceparent": "00-1-2-01", "tracestate": "k=v"},
		},
		{
			name:  "text data becomes a string",
			req:   blocks.PublishRequest{PubsubName: "ps", Topic: "t", ContentType: "text/plain", Data: []byte("hello")},
			attrs: map[string]any{"source": "app", "datacontenttype": "text/plain", "data": "hello"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := b.Envelope(&c.req)
			if err != nil {
				t.Fatal(err)
			}
			if c.attrs == nil {
				if string(out) != c.raw {
					t.Errorf("Envelope = %q, want %q", out, c.raw)
				}
				return
			}
			var m map[string]any
			if err := json.Unmarshal(out, &m); err != nil {
				t.Fatalf("envelope is not JSON: %v: %s", err, out)
			}
			for k, want := range c.attrs {
				if fmt.Sprint(m[k]) != fmt.Sprint(want) {
					t.Errorf("%s = %v, want %v in %s", k, m[k], want, out)
				}
			}
			if id, _ := m["id"].(string); id == "" {
				t.Errorf("envelope has no id: %s", out)
			}
		})
	}
	t.Run("an invalid app CloudEvent", func(t *testing.T) {
		_, err := b.Envelope(&blocks.PublishRequest{PubsubName: "ps", Topic: "t", ContentType: "application/cloudevents+json", Data: []byte(`[1]`)})
		wantAPIErr(t, err, "ERR_PUBSUB_CLOUD_EVENTS_SER", http.StatusInternalServerError, codes.InvalidArgument)
	})
}

// collect subscribes to topic on the default in-memory pubsub and returns
// what arrives.
func collect(t *testing.T, b *blocks.Blocks, topic string) func() [][]byte {
	t.Helper()
	var mu sync.Mutex
	var got [][]byte
	ps := b.Components.Snapshot().PubSub["pubsub"]
	err := ps.PS.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, func(_ context.Context, msg *pubsub.NewMessage) error {
		mu.Lock()
		got = append(got, msg.Data)
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// waitFor polls cond until it holds, for at most 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

func TestPublish(t *testing.T) {
	b := newBlocks(t, true)
	received := collect(t, b, "orders")
	if err := b.Publish(t.Context(), &blocks.PublishRequest{PubsubName: "pubsub", Topic: "orders", ContentType: "application/json", Data: []byte(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(t.Context(), &blocks.PublishRequest{PubsubName: "pubsub", Topic: "orders", Data: []byte("raw"), Metadata: map[string]string{"rawPayload": "true"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both events", func() bool { return len(received()) == 2 })
	byRaw := map[bool][]byte{}
	for _, d := range received() {
		byRaw[string(d) == "raw"] = d
	}
	if byRaw[true] == nil {
		t.Errorf("the raw payload was not published as is: %q", received())
	}
	ev, err := cloudevent.Parse(byRaw[false])
	if err != nil || ev.Source != "app" || ev.Topic != "orders" || ev.PubsubName != "pubsub" || string(ev.Data) != `{"n":1}` {
		t.Errorf("published CloudEvent %s (%v)", byRaw[false], err)
	}
}

func TestBulkPublish(t *testing.T) {
	b := newBlocks(t, true)
	received := collect(t, b, "orders")
	failed, err := b.BulkPublish(t.Context(), "pubsub", "orders", []blocks.BulkEntry{
		{EntryID: "1", Data: []byte(`1`), ContentType: "application/json"},
		{EntryID: "2", Data: []byte(`"two"`), ContentType: "application/json"},
		{EntryID: "3", Data: []byte("three"), ContentType: "text/plain", Metadata: map[string]string{"rawPayload": "true"}},
	}, nil, "")
	if err != nil || len(failed) != 0 {
		t.Fatalf("BulkPublish = %v, %v", failed, err)
	}
	waitFor(t, "three events", func() bool { return len(received()) == 3 })
	var datas []string
	for _, d := range received() {
		if string(d) == "three" {
			datas = append(datas, "three (raw)")
			continue
		}
		ev, err := cloudevent.Parse(d)
		if err != nil || ev.Source != "app" {
			t.Errorf("entry %s (%v)", d, err)
			continue
		}
		datas = append(datas, string(ev.Data))
	}
	slices.Sort(datas)
	if want := []string{`"two"`, "1", "three (raw)"}; !slices.Equal(datas, want) {
		t.Errorf("received %v, want %v", datas, want)
	}
}

func TestPubSubErrors(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		run  func(t *testing.T) error
		code string
		http int
		grpc codes.Code
	}{
		{"unknown pubsub", func(t *testing.T) error {
			return newBlocks(t, true).Publish(ctx, &blocks.PublishRequest{PubsubName: "nope", Topic: "t"})
		}, "ERR_PUBSUB_NOT_FOUND", http.StatusNotFound, codes.InvalidArgument},
		{"empty topic", func(t *testing.T) error {
			return newBlocks(t, true).Publish(ctx, &blocks.PublishRequest{PubsubName: "pubsub"})
		}, "ERR_TOPIC_NAME_EMPTY", http.StatusNotFound, codes.InvalidArgument},
		{"empty pubsub name", func(t *testing.T) error {
			return newBlocks(t, true).Publish(ctx, &blocks.PublishRequest{Topic: "t"})
		}, "ERR_PUBSUB_EMPTY", http.StatusNotFound, codes.InvalidArgument},
		// daprd's publisher always exists: with no pubsub loaded, the
		// name is not found (ERR_PUBSUB_NOT_CONFIGURED never comes).
		{"no pubsub configured", func(t *testing.T) error {
			return newBlocks(t, false).Publish(ctx, &blocks.PublishRequest{PubsubName: "pubsub", Topic: "t"})
		}, "ERR_PUBSUB_NOT_FOUND", http.StatusNotFound, codes.InvalidArgument},
		{"rawPayload that is not a boolean", func(t *testing.T) error {
			return newBlocks(t, true).Publish(ctx, &blocks.PublishRequest{PubsubName: "pubsub", Topic: "t", Metadata: map[string]string{"rawPayload": "yes"}})
		}, "ERR_PUBSUB_REQUEST_METADATA", http.StatusBadRequest, codes.InvalidArgument},
		{"bulk: rawPayload that is not a boolean", func(t *testing.T) error {
			_, err := newBlocks(t, true).BulkPublish(ctx, "pubsub", "t", []blocks.BulkEntry{{EntryID: "a"}}, map[string]string{"rawPayload": "on"}, "")
			return err
		}, "ERR_PUBSUB_REQUEST_METADATA", http.StatusBadRequest, codes.InvalidArgument},
		{"check: empty topic", func(t *testing.T) error {
			return newBlocks(t, true).CheckPubSub("pubsub", "", nil)
		}, "ERR_TOPIC_NAME_EMPTY", http.StatusNotFound, codes.InvalidArgument},
		{"component fails", func(t *testing.T) error {
			b := newBlocks(t, true)
			if err := b.Components.Snapshot().PubSub["pubsub"].PS.(io.Closer).Close(); err != nil {
				t.Fatal(err)
			}
			return b.Publish(ctx, &blocks.PublishRequest{PubsubName: "pubsub", Topic: "t", Data: []byte("1")})
		}, "ERR_PUBSUB_PUBLISH_MESSAGE", http.StatusInternalServerError, codes.Internal},
		{"bulk: duplicate entryId", func(t *testing.T) error {
			_, err := newBlocks(t, true).BulkPublish(ctx, "pubsub", "t", []blocks.BulkEntry{{EntryID: "a"}, {EntryID: "b"}, {EntryID: "a"}}, nil, "")
			return err
		}, "ERR_PUBSUB_EVENTS_SER", http.StatusBadRequest, codes.InvalidArgument},
		{"bulk: missing entryId", func(t *testing.T) error {
			_, err := newBlocks(t, true).BulkPublish(ctx, "pubsub", "t", []blocks.BulkEntry{{EntryID: "a"}, {}}, nil, "")
			return err
		}, "ERR_PUBSUB_EVENTS_SER", http.StatusBadRequest, codes.InvalidArgument},
		{"bulk: unknown pubsub", func(t *testing.T) error {
			_, err := newBlocks(t, true).BulkPublish(ctx, "nope", "t", []blocks.BulkEntry{{EntryID: "a"}}, nil, "")
			return err
		}, "ERR_PUBSUB_NOT_FOUND", http.StatusNotFound, codes.InvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantAPIErr(t, c.run(t), c.code, c.http, c.grpc)
		})
	}
}

func TestInvokeBinding(t *testing.T) {
	b := newBlocks(t, true, comp("echo", "bindings.echo"))
	ctx := t.Context()
	resp, err := b.InvokeBinding(ctx, "echo", "create", []byte("payload"), nil)
	if err != nil || string(resp.Data) != "payload" || resp.Metadata["op"] != "create" {
		t.Errorf("InvokeBinding = %+v, %v", resp, err)
	}
	// A binding that answers nothing gives a nil response (HTTP 204).
	resp, err = b.InvokeBinding(ctx, "echo", "nil", nil, nil)
	if err != nil || resp != nil {
		t.Errorf("a nil binding response became %v, %v; want nil", resp, err)
	}

	_, err = b.InvokeBinding(ctx, "missing", "create", nil, nil)
	wantAPIErr(t, err, "ERR_INVOKE_OUTPUT_BINDING", http.StatusInternalServerError, codes.Internal)
	_, err = b.InvokeBinding(ctx, "echo", "fail", nil, nil)
	wantAPIErr(t, err, "ERR_INVOKE_OUTPUT_BINDING", http.StatusInternalServerError, codes.Internal)
	_, err = b.InvokeBinding(ctx, "echo", "", nil, nil)
	wantAPIErr(t, err, "ERR_INVOKE_OUTPUT_BINDING", http.StatusInternalServerError, codes.Internal)
	// As in daprd, a missing operation is found before a missing binding,
	// and an operation the binding does not list is refused.
	_, err = b.InvokeBinding(ctx, "missing", "", nil, nil)
	wantAPIErr(t, err, "ERR_INVOKE_OUTPUT_BINDING", http.StatusInternalServerError, codes.Internal)
	if !strings.Contains(err.Error(), "operation field is missing") {
		t.Errorf("missing operation on a missing binding: %v", err)
	}
	_, err = b.InvokeBinding(ctx, "echo", "delete", nil, nil)
	wantAPIErr(t, err, "ERR_INVOKE_OUTPUT_BINDING", http.StatusInternalServerError, codes.Internal)
	if !strings.Contains(err.Error(), "does not support operation delete") {
		t.Errorf("unsupported operation: %v", err)
	}
}

func TestSecrets(t *testing.T) {
	ctx := context.Background()
	t.Run("no store configured", func(t *testing.T) {
		b := newBlocks(t, true)
		_, err := b.GetSecret(ctx, "envsecrets", "x", nil)
		wantAPIErr(t, err, "ERR_SECRET_STORES_NOT_CONFIGURED", http.StatusInternalServerError, codes.FailedPrecondition)
		_, err = b.BulkGetSecret(ctx, "envsecrets", nil)
		wantAPIErr(t, err, "ERR_SECRET_STORES_NOT_CONFIGURED", http.StatusInternalServerError, codes.FailedPrecondition)
	})
	t.Run("env store", func(t *testing.T) {
		t.Setenv("MECHA_BLOCKS_TEST_SECRET", "s3cr3t")
		b := newBlocks(t, true, comp("envsecrets", "secretstores.local.env"))
		got, err := b.GetSecret(ctx, "envsecrets", "MECHA_BLOCKS_TEST_SECRET", nil)
		if err != nil || got["MECHA_BLOCKS_TEST_SECRET"] != "s3cr3t" {
			t.Errorf("GetSecret = %v, %v", got, err)
		}
		all, err := b.BulkGetSecret(ctx, "envsecrets", nil)
		if err != nil || all["MECHA_BLOCKS_TEST_SECRET"]["MECHA_BLOCKS_TEST_SECRET"] != "s3cr3t" {
			t.Errorf("BulkGetSecret is missing the secret (err %v)", err)
		}
		_, err = b.GetSecret(ctx, "other", "x", nil)
		wantAPIErr(t, err, "ERR_SECRET_STORE_NOT_FOUND", http.StatusUnauthorized, codes.InvalidArgument)
	})
}

func TestEnvelopeTTLAndOverrides(t *testing.T) {
	b := newBlocks(t, true)
	out, err := b.Envelope(&blocks.PublishRequest{PubsubName: "pubsub", Topic: "t", ContentType: "application/json", Data: []byte(`{}`),
		Metadata: map[string]string{"ttlInSeconds": "60", "cloudevent.id": "my-id", "cloudevent.type": "my.type", "cloudevent.source": "elsewhere"}})
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(out, &ev); err != nil {
		t.Fatal(err)
	}
	if ev["id"] != "my-id" || ev["type"] != "my.type" || ev["source"] != "elsewhere" {
		t.Errorf("overrides not applied: %s", out)
	}
	exp, err := time.Parse(time.RFC3339, fmt.Sprint(ev["expiration"]))
	if err != nil || exp.Before(time.Now().Add(50*time.Second)) || exp.After(time.Now().Add(70*time.Second)) {
		t.Errorf("expiration = %v (%v), want about a minute from now", ev["expiration"], err)
	}
	_, err = b.Envelope(&blocks.PublishRequest{PubsubName: "pubsub", Topic: "t", Data: []byte(`x`), Metadata: map[string]string{"ttlInSeconds": "soon"}})
	wantAPIErr(t, err, "ERR_PUBSUB_REQUEST_METADATA", http.StatusBadRequest, codes.InvalidArgument)
}
