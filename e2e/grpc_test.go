package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type grpcEvent struct {
	Kind  string `json:"kind"`
	Path  string `json:"path"`
	ID    string `json:"id"`
	Topic string `json:"topic"`
	Data  string `json:"data"`
}

func grpcReceived(t *testing.T, port int, path string) []grpcEvent {
	t.Helper()
	r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/received?path=%s", port, path), nil)
	var out []grpcEvent
	r.json(t, &out)
	return out
}

func sdkClient(t *testing.T, m *mecha) dapr.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dapr.NewClientWithAddressContext(ctx, fmt.Sprintf("127.0.0.1:%d", m.grpcPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestGRPCAppWithSDK runs a gRPC app (AppCallback) behind mecha and drives
// mecha with the Dapr Go SDK.
func TestGRPCAppWithSDK(t *testing.T) {
	appPort, inspectPort := startGRPCApp(t)
	dir := t.TempDir()
	writeFile(t, dir, "components.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.in-memory
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: mybinding
spec:
  type: bindings.cron
  version: v1
  metadata:
  - name: schedule
    value: "@every 1s"
`)
	m := startMecha(t, "--app-id", "grpcapp", "--app-port", fmt.Sprint(appPort), "--app-protocol", "grpc", "--resources-path", dir)
	c := sdkClient(t, m)
	ctx := context.Background()

	t.Run("state with etag and ttl", func(t *testing.T) {
		if err := c.SaveState(ctx, "statestore", "user-1", []byte(`{"conn":"c1"}`), nil); err != nil {
			t.Fatal(err)
		}
		item, err := c.GetState(ctx, "statestore", "user-1", nil)
		if err != nil || string(item.Value) != `{"conn":"c1"}` || item.Etag == "" {
			t.Fatalf("GetState = %+v, %v", item, err)
		}
		err = c.SaveStateWithETag(ctx, "statestore", "user-1", []byte(`{"conn":"c2"}`), "not-the-etag", nil)
		if status.Code(err) != codes.Aborted && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("stale etag: err %v (code %s), want Aborted or InvalidArgument", err, status.Code(err))
		}
		if err := c.SaveStateWithETag(ctx, "statestore", "user-1", []byte(`{"conn":"c2"}`), item.Etag, nil); err != nil {
			t.Fatalf("current etag refused: %v", err)
		}
		// HTTP sees what gRPC wrote, under the same app-id prefix.
		if r := do(t, "GET", m.url("/v1.0/state/statestore/user-1"), nil); string(r.Body) != `{"conn":"c2"}` {
			t.Fatalf("HTTP view = %s", r.Body)
		}
		if err := c.SaveState(ctx, "statestore", "session", []byte("s"), map[string]string{"ttlInSeconds": "1"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, func() error {
			it, err := c.GetState(ctx, "statestore", "session", nil)
			if err != nil {
				return err
			}
			if len(it.Value) != 0 {
				return fmt.Errorf("not expired yet")
			}
			return nil
		})
		_, err = c.GetState(ctx, "nostore", "k", nil)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "nostore") {
			t.Fatalf("unknown store: %v", err)
		}
	})

	t.Run("publish and deliver over AppCallback", func(t *testing.T) {
		if err := c.PublishEvent(ctx, "pubsub", "orders", map[string]int{"order": 1}); err != nil {
			t.Fatal(err)
		}
		var got []grpcEvent
		eventually(t, 10*time.Second, func() error {
			if got = grpcReceived(t, inspectPort, "/orders"); len(got) == 0 {
				return fmt.Errorf("no event yet")
			}
			return nil
		})
		if got[0].Topic != "orders" || got[0].Data != `{"order":1}` {
			t.Fatalf("event = %+v", got[0])
		}
		if err := c.PublishEvent(ctx, "pubsub", "retry-topic", []byte(`x`)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, func() error {
			got := grpcReceived(t, inspectPort, "/retry")
			if len(got) < 2 {
				return fmt.Errorf("%d deliveries, want 2", len(got))
			}
			if got[0].ID != got[1].ID {
				return fmt.Errorf("redelivered a different event")
			}
			return nil
		})
	})

	t.Run("invoke through the SDK and HTTP", func(t *testing.T) {
		out, err := c.InvokeMethodWithContent(ctx, "grpcapp", "hello", "post", &dapr.DataContent{ContentType: "text/plain", Data: []byte("hi")})
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]string
		_ = json.Unmarshal(out, &e)
		if e["method"] != "hello" || e["data"] != "hi" {
			t.Fatalf("invoke = %s", out)
		}
		r := do(t, "PUT", m.url("/v1.0/invoke/grpcapp/method/items?x=1"), "body")
		expectStatus(t, r, http.StatusOK)
		_ = json.Unmarshal(r.Body, &e)
		if e["method"] != "items" || e["verb"] != "PUT" || e["query"] != "x=1" || e["data"] != "body" {
			t.Fatalf("HTTP invoke of gRPC app = %s", r.Body)
		}
	})

	t.Run("input binding over AppCallback", func(t *testing.T) {
		eventually(t, 10*time.Second, func() error {
			if len(grpcReceived(t, inspectPort, "mybinding")) == 0 {
				return fmt.Errorf("no binding event yet")
			}
			return nil
		})
	})

	t.Run("metadata", func(t *testing.T) {
		if err := c.SetMetadata(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
		md, err := c.GetMetadata(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if md.ID != "grpcapp" || md.ExtendedMetadata["k"] != "v" || len(md.RegisteredComponents) != 3 {
			t.Fatalf("metadata = %+v", md)
		}
	})
}

// TestSDKAgainstHTTPApp uses the Go SDK for publish and invoke against an
// HTTP app, the way a polyglot system mixes them.
func TestSDKAgainstHTTPApp(t *testing.T) {
	appPort := startHTTPApp(t)
	m := startMecha(t, "--app-id", "mixed", "--app-port", fmt.Sprint(appPort))
	c := sdkClient(t, m)
	ctx := context.Background()
	if err := c.PublishEvent(ctx, "pubsub", "orders", map[string]string{"via": "sdk"}); err != nil {
		t.Fatal(err)
	}
	got := waitReceived(t, appPort, "orders", 1)
	if !strings.Contains(string(got[0].Body), `"via":"sdk"`) {
		t.Fatalf("event = %s", got[0].Body)
	}
	out, err := c.InvokeMethodWithContent(ctx, "mixed", "echo/sdk", "post", &dapr.DataContent{ContentType: "text/plain", Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"path":"/echo/sdk"`) {
		t.Fatalf("invoke = %s", out)
	}
	_, err = c.InvokeMethod(ctx, "mixed", "echo/x?status=418", "get")
	if err == nil {
		t.Fatal("a 418 from the app should be an error through gRPC")
	}
}
