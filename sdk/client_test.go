package sdk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestErrors: a runtime's status becomes an *Error with Dapr's code from
// its ErrorInfo, the sentinels match by code or status, and a call cut by
// its context matches the context's error.
func TestErrors(t *testing.T) {
	st, _ := status.New(codes.Aborted, "etag mismatch").WithDetails(&errdetails.ErrorInfo{Reason: "ERR_STATE_SAVE", Domain: "dapr.io"})
	err := fromGRPC(st.Err())
	var e *Error
	if !errors.As(err, &e) || e.Code != "ERR_STATE_SAVE" || e.Status != codes.Aborted || e.Message != "etag mismatch" {
		t.Fatalf("fromGRPC: %#v", err)
	}
	if !errors.Is(err, ErrETagMismatch) || errors.Is(err, ErrInstanceNotFound) || errors.Is(err, ErrNotFound) {
		t.Fatalf("sentinels on %v", err)
	}
	st, _ = status.New(codes.NotFound, "gone").WithDetails(&errdetails.ErrorInfo{Reason: "ERR_INSTANCE_NOT_FOUND"})
	if err := fromGRPC(st.Err()); !errors.Is(err, ErrInstanceNotFound) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("instance not found: %v", err)
	}
	if err := fromGRPC(status.Error(codes.DeadlineExceeded, "late")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call past its deadline: %v", err)
	}
	if err := fromGRPC(status.Error(codes.Canceled, "gone")); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled call: %v", err)
	}
	if fromGRPC(nil) != nil {
		t.Fatal("no error became one")
	}
	plain := errors.New("not a status")
	if err := fromGRPC(plain); err != plain {
		t.Fatalf("a non-status error: %v", err)
	}
}

// TestFallbackList: the fallback runtimes are the catalog's gRPC
// endpoints but the local runtime's (by node and by address), read
// again when the file changes, and kept when it turns unreadable.
func TestFallbackList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.json")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"node":"a","dc":"dc1","apis":[{"node":"a","addr":"10.0.0.1","grpcPort":50001,"apps":["gw"]},{"node":"b","addr":"127.0.0.1","grpcPort":50011,"apps":["gw"]},{"node":"c","addr":"10.0.0.3","grpcPort":50001,"apps":["gw"]},{"node":"d","addr":"10.0.0.4","apps":["gw"]},{"node":"o","addr":"10.0.0.7","grpcPort":50001,"apps":["orders"]},{"node":"m","addr":"10.0.0.8","grpcPort":50001,"apps":["gw","orders"]}]}`)
	c, err := New(WithAddress("127.0.0.1:50011"), WithCatalog(path), WithAppID("gw"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := func() []string {
		var out []string
		for _, e := range c.others() {
			out = append(out, e.addr)
		}
		return out
	}
	if got := addrs(); len(got) != 1 || got[0] != "10.0.0.3:50001" {
		t.Fatalf("fallbacks %v, want only c's (a wrote the file, b is this client's address, d has no gRPC port, o and m host another app)", got)
	}
	write(`{"node":"a","dc":"dc1","apis":[{"node":"e","addr":"10.0.0.5","grpcPort":50001,"apps":["gw"]},{"node":"f","addr":"10.0.0.6","grpcPort":50001,"apps":["gw"]}]}`)
	if got := addrs(); len(got) != 2 || got[0] != "10.0.0.5:50001" {
		t.Fatalf("after the file changed: %v", got)
	}
	write(`{not json`)
	if got := addrs(); len(got) != 2 {
		t.Fatalf("a broken file dropped the list: %v", got)
	}
	for _, opts := range [][]Option{{WithCatalog("")}, {WithCatalog(path), WithAppID("")}} {
		c2, _ := New(append(opts, WithAddress("127.0.0.1:1"))...)
		if got := c2.others(); len(got) != 0 {
			t.Fatalf("fallbacks without a catalog or an app-id: %d", len(got))
		}
		c2.Close()
	}
	c.Close()
	if got := c.others(); len(got) != 0 {
		t.Fatal("a closed client dials fallbacks")
	}
}
