package e2e

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mecha/internal/apicatalog"
	"mecha/sdk"
)

// mechaSDK is a client of m through mecha's own SDK.
func mechaSDK(t *testing.T, m *mecha, opts ...sdk.Option) *sdk.Client {
	t.Helper()
	c, err := sdk.New(append([]sdk.Option{sdk.WithAddress(fmt.Sprintf("127.0.0.1:%d", m.grpcPort))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sdkComponents adds an output binding; the embedded statestore and
// pubsub stay loaded beside it.
const sdkComponents = `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: out
spec:
  type: bindings.mecha
  version: v1
  metadata:
  - name: publishTopic
    value: from-binding
`

// TestGoSDK drives every part of mecha's Go SDK against a real runtime:
// state with ETags, first write, TTL, bulk calls, a transaction, the key
// scan and strong consistency; publish and the streaming subscription
// (redelivery after a handler error, a binding's record); invocation and
// one named instance; metadata; and the typed errors.
func TestGoSDK(t *testing.T) {
	appPort := startHTTPApp(t)
	dir := t.TempDir()
	writeFile(t, dir, "components.yaml", sdkComponents)
	m := startMecha(t, "--app-id", "sdkapp", "--app-port", fmt.Sprint(appPort), "--resources-path", dir)
	c := mechaSDK(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// State.
	if err := c.SaveState(ctx, "statestore", "{u1}:name", []byte("ada")); err != nil {
		t.Fatal(err)
	}
	it, err := c.GetState(ctx, "statestore", "{u1}:name")
	if err != nil || string(it.Value) != "ada" || !it.Exists() {
		t.Fatalf("get: %+v %v", it, err)
	}
	if err := c.SaveState(ctx, "statestore", "{u1}:name", []byte("bob"), sdk.WithETag("999")); !errors.Is(err, sdk.ErrETagMismatch) {
		t.Fatalf("a stale ETag: %v, want ErrETagMismatch", err)
	}
	var se *sdk.Error
	if err := c.SaveState(ctx, "statestore", "{u1}:name", []byte("bob"), sdk.WithETag("999")); !errors.As(err, &se) || se.Code != "ERR_STATE_SAVE" {
		t.Fatalf("the error carries Dapr's code: %#v", err)
	}
	if err := c.SaveState(ctx, "statestore", "{u1}:name", []byte("bob"), sdk.WithETag(it.ETag), sdk.Strong()); err != nil {
		t.Fatalf("the current ETag, strong: %v", err)
	}
	if err := c.SaveState(ctx, "statestore", "{u1}:name", []byte("eve"), sdk.FirstWrite()); !errors.Is(err, sdk.ErrETagMismatch) {
		t.Fatalf("first write over an existing key: %v", err)
	}
	if it, err := c.GetState(ctx, "statestore", "nobody"); err != nil || it.Exists() {
		t.Fatalf("a missing key: %+v %v", it, err)
	}
	if err := c.SaveBulkState(ctx, "statestore",
		sdk.SetItem{Key: "{u1}:dev:1", Value: []byte("phone")},
		sdk.SetItem{Key: "{u1}:dev:2", Value: []byte("laptop")},
		sdk.SetItem{Key: "{u1}:tmp", Value: []byte("x"), Opts: []sdk.StateOption{sdk.WithTTL(time.Second)}}); err != nil {
		t.Fatal(err)
	}
	items, err := c.GetBulkState(ctx, "statestore", []string{"{u1}:dev:1", "{u1}:dev:2"})
	if err != nil || len(items) != 2 || string(items[0].Value) != "phone" || string(items[1].Value) != "laptop" {
		t.Fatalf("bulk get: %+v %v", items, err)
	}
	if err := c.ExecuteStateTransaction(ctx, "statestore", []sdk.Op{
		{Key: "{u1}:dev:3", Value: []byte("watch")},
		{Key: "{u1}:dev:1", Delete: true},
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.ExecuteStateTransaction(ctx, "statestore", []sdk.Op{{Key: "{u1}:a", Value: []byte("1")}, {Key: "{u2}:b", Value: []byte("2")}}); err != nil {
		t.Fatalf("one runtime holds every slot: a cross-slot transaction works: %v", err)
	}
	got, err := c.ScanState(ctx, "statestore", "{u1}:dev:", 0)
	var keys []string
	for _, it := range got {
		keys = append(keys, it.Key+"="+string(it.Value))
	}
	if err != nil || strings.Join(keys, ",") != "{u1}:dev:2=laptop,{u1}:dev:3=watch" {
		t.Fatalf("scan: %v %v", keys, err)
	}
	if got, err := c.ScanState(ctx, "statestore", "{u1}:dev:", 1); err != nil || len(got) != 1 {
		t.Fatalf("scan with a limit: %d items, %v", len(got), err)
	}
	eventually(t, 10*time.Second, func() error {
		it, err := c.GetState(ctx, "statestore", "{u1}:tmp")
		if err != nil || it.Exists() {
			return fmt.Errorf("the TTL key is still there: %+v %v", it, err)
		}
		return nil
	})
	if err := c.DeleteState(ctx, "statestore", "{u1}:dev:2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetState(ctx, "nostore", "k"); !errors.As(err, &se) || se.Code != "ERR_STATE_STORE_NOT_FOUND" {
		t.Fatalf("an unknown store: %v", err)
	}

	// Publish and the streaming subscription: the first delivery of
	// each event fails and comes again.
	var mu sync.Mutex
	seen := map[string]int{}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Subscribe(sctx, "pubsub", "orders-sdk", func(_ context.Context, ev *sdk.Event) error {
			mu.Lock()
			defer mu.Unlock()
			seen[string(ev.Data)]++
			if seen[string(ev.Data)] == 1 {
				return errors.New("try again")
			}
			return nil
		})
	}()
	eventually(t, 10*time.Second, func() error {
		if err := c.Publish(ctx, "pubsub", "orders-sdk", []byte("probe"), sdk.WithContentType("text/plain")); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if seen["probe"] < 2 {
			return fmt.Errorf("probe delivered %d times", seen["probe"])
		}
		return nil
	})
	for i := range 5 {
		if err := c.Publish(ctx, "pubsub", "orders-sdk", fmt.Appendf(nil, "e%d", i), sdk.WithContentType("text/plain")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 15*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for i := range 5 {
			if n := seen[fmt.Sprintf("e%d", i)]; n != 2 {
				return fmt.Errorf("e%d delivered %d times, want 2 (a retry after the error)", i, n)
			}
		}
		return nil
	})
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe ended with %v, want its context's end", err)
	}
	if err := c.Subscribe(ctx, "nopubsub", "t", func(context.Context, *sdk.Event) error { return nil }); err == nil {
		t.Fatal("a subscription to an unknown pubsub did not fail")
	}

	// A binding.
	if _, _, err := c.InvokeBinding(ctx, "out", "create", []byte(`{"n":1}`), map[string]string{"key": "k"}); err != nil {
		t.Fatalf("binding: %v", err)
	}

	// Invocation, to any instance and to one.
	md, err := c.Metadata(ctx)
	if err != nil || md.AppID != "sdkapp" || md.InstanceID == "" || md.Components["statestore"] != "state.crux" {
		t.Fatalf("metadata: %+v %v", md, err)
	}
	r, err := c.Invoke(ctx, "sdkapp", "echo/x", []byte("hi"), sdk.Verb("put"), sdk.ContentType("text/plain"), sdk.Header("x-one", "1"), sdk.Instance(md.InstanceID))
	if err != nil || !strings.Contains(string(r.Data), `"method":"PUT"`) || !strings.Contains(string(r.Data), `"X-One":"1"`) {
		t.Fatalf("invoke: %s %v", r.Data, err)
	}
	if _, err := c.Invoke(ctx, "sdkapp", "echo/x", nil, sdk.Instance("gone-1")); !errors.Is(err, sdk.ErrInstanceNotFound) {
		t.Fatalf("a gone instance: %v, want ErrInstanceNotFound", err)
	}
	// The context is honoured.
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if _, err := c.Invoke(short, "sdkapp", "slow", []byte(`{"ms":3000}`)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call past its deadline: %v", err)
	}
}

// TestSDKFallback: while the app's runtime restarts (SIGTERM, then
// started again on its ports), a client with the fallback keeps working
// through the other runtime its catalog lists; one without it fails.
func TestSDKFallback(t *testing.T) {
	aApp, bApp := startHTTPApp(t), startHTTPApp(t)
	b := startMecha(t, "--app-id", "gw", "--app-port", fmt.Sprint(bApp))
	aDir, grpcPort := t.TempDir(), freePort(t)
	args := []string{"--app-id", "gw", "--app-port", fmt.Sprint(aApp), "--data-dir", aDir, "--dapr-grpc-port", fmt.Sprint(grpcPort),
		"--join", fmt.Sprintf("127.0.0.1:%d", b.gossipPort)}
	a := startMecha(t, args...)
	catalog := filepath.Join(aDir, "membership", "catalog.json")
	with := mechaSDK(t, a, sdk.WithCatalog(catalog), sdk.WithAppID("gw"))
	without := mechaSDK(t, a, sdk.WithoutFallback())
	ctx := context.Background()
	call := func(c *sdk.Client) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := c.Invoke(cctx, "gw", "orders", []byte(`{}`))
		return err
	}
	// The catalog file lists both runtimes' APIs.
	eventually(t, 15*time.Second, func() error {
		f, err := apicatalog.Read(catalog)
		if err != nil || len(f.APIs) != 2 {
			return fmt.Errorf("catalog APIs %v (%v)", f.APIs, err)
		}
		return nil
	})
	for _, c := range []*sdk.Client{with, without} {
		if err := call(c); err != nil {
			t.Fatal(err)
		}
	}

	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	failedWith, failedWithout, calls := 0, 0, 0
	// While a stops, is down and starts again, until it answers.
	down := time.Now()
	for restarted := false; ; {
		if err := call(with); err != nil {
			failedWith++
			t.Logf("with the fallback: %v", err)
		}
		err := call(without)
		if err != nil {
			failedWithout++
		}
		calls++
		if !restarted {
			select {
			case <-a.done:
				startEnv(t, nil, bins.mecha, mechaArgs(t, args...)...)
				restarted = true
			default:
			}
			continue
		}
		if err == nil {
			break
		}
		if time.Since(down) > 60*time.Second {
			t.Fatal("the restarted runtime did not answer within 60 s")
		}
	}
	t.Logf("%d calls each during the restart: %d failed with the fallback, %d without; %d served by the other runtime", calls, failedWith, failedWithout, with.Fallbacks())
	if failedWith != 0 {
		t.Fatalf("%d of %d calls failed with the fallback", failedWith, calls)
	}
	if failedWithout == 0 || with.Fallbacks() == 0 {
		t.Fatalf("the restart went unnoticed (%d failures without the fallback, %d fallbacks): the test tests nothing", failedWithout, with.Fallbacks())
	}
	if n := receivedCount(t, bApp, "orders"); n == 0 {
		t.Fatal("no call reached the other runtime's app")
	}
}
