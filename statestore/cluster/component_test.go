package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"

	contribmeta "github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/state"
	"github.com/dapr/kit/logger"

	"mecha/statestore"
)

// newComponent returns state.crux wired as the runtime wires it, on a
// runtime of the cluster (a member's id with its Server, or a client's).
func newComponent(t *testing.T, tc *testCluster, n *Node) *statestore.Component {
	t.Helper()
	c := statestore.NewComponent(logger.NewLogger("crux-cluster"), statestore.ComponentDefaults{DataDir: t.TempDir(), Logger: quiet(), Backend: n.Backend})
	if err := c.Init(context.Background(), state.Metadata{Base: contribmeta.Base{Name: testStore}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestComponentOverTheCluster(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	c := newComponent(t, tc, &Node{Member: "client", Maps: tc.cmaps, Clients: tc.clients, Logger: quiet()})
	key := tc.keyLedBy("b", "app||comp")
	if err := c.Set(ctx, &state.SetRequest{Key: key, Value: map[string]int{"n": 1}, Metadata: map[string]string{"ttlInSeconds": "60"}}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, &state.GetRequest{Key: key})
	if err != nil || string(got.Data) != `{"n":1}` || got.ETag == nil || got.Metadata["ttlExpireTime"] == "" {
		t.Fatalf("get: %+v %v", got, err)
	}
	if it, ok, _ := tc.member("b").eng.Get(key); !ok || statestore.ETag(it.Version) != *got.ETag {
		t.Fatalf("the leader's engine holds %+v %v", it, ok)
	}
	// ETag errors are contrib's, as on one node.
	err = c.Set(ctx, &state.SetRequest{Key: key, Value: "x", ETag: ptr("12345")})
	var ee *state.ETagError
	if !errors.As(err, &ee) || ee.Kind() != state.ETagMismatch {
		t.Fatalf("a stale etag: %v", err)
	}
	err = c.Delete(ctx, &state.DeleteRequest{Key: key, ETag: ptr("x")})
	if !errors.As(err, &ee) || ee.Kind() != state.ETagInvalid {
		t.Fatalf("an invalid etag: %v", err)
	}
	// Transactions: one slot, or a 400 naming the keys.
	err = c.Multi(ctx, &state.TransactionalStateRequest{Operations: []state.TransactionalStateOperation{
		state.SetRequest{Key: "app||{u}a", Value: "1"}, state.SetRequest{Key: "app||{u}b", Value: "2"}, state.DeleteRequest{Key: key},
	}})
	var cs *CrossSlotError
	if !errors.As(err, &cs) || !strings.Contains(err.Error(), "app||{u}a") {
		t.Fatalf("a cross-slot transaction: %v", err)
	}
	if err := c.Multi(ctx, &state.TransactionalStateRequest{Operations: []state.TransactionalStateOperation{
		state.SetRequest{Key: "app||{u}a", Value: "1"}, state.SetRequest{Key: "app||{u}b", Value: "2"},
	}}); err != nil {
		t.Fatal(err)
	}
	bulk, err := c.BulkGet(ctx, []state.GetRequest{{Key: "app||{u}a"}, {Key: key}, {Key: "app||none"}}, state.BulkGetOpts{})
	if err != nil || string(bulk[0].Data) != `"1"` || string(bulk[1].Data) != `{"n":1}` || bulk[2].Data != nil || bulk[2].Error != "" {
		t.Fatalf("bulk get: %+v %v", bulk, err)
	}
	items, err := c.Scan(ctx, "app||", 0)
	if err != nil || len(items) != 3 || items[0].Key != key {
		t.Fatalf("scan: %+v %v", items, err)
	}
	res, err := c.DeleteWithPrefix(ctx, state.DeleteWithPrefixRequest{Prefix: "app||"})
	if err != nil || res.Count != 3 {
		t.Fatalf("delete with prefix: %+v %v", res, err)
	}
}

// A member's component serves its own slots from its engine and attaches
// it to its Server until it closes.
func TestComponentOnAMember(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	a := tc.member("a")
	srv := NewServer("a", a.maps, quiet())
	c := newComponent(t, tc, &Node{Member: "a", Maps: a.maps, Clients: tc.clients, Server: srv, Logger: quiet()})
	srv.mu.RLock()
	attached := srv.stores[testStore]
	srv.mu.RUnlock()
	if attached != c.Engine() {
		t.Fatal("the component's engine is not attached to the server")
	}
	key := tc.keyLedBy("a", "app||own")
	if err := c.Set(ctx, &state.SetRequest{Key: key, Value: "v"}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Engine().Get(key); !ok {
		t.Fatal("a key this member leads is not in its engine")
	}
	c.Close()
	srv.mu.RLock()
	n := len(srv.stores)
	srv.mu.RUnlock()
	if n != 0 {
		t.Fatal("the store is still attached after Close")
	}
}
