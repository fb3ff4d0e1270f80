package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCruxIsTheDurableDefault checks that the default statestore is
// state.crux and that what it acknowledged survives a restart of mecha
// run, over HTTP and gRPC (the Dapr Go SDK).
func TestCruxIsTheDurableDefault(t *testing.T) {
	dataDir := t.TempDir()
	m := startMecha(t, "--app-id", "im", "--data-dir", dataDir)
	if r := do(t, "GET", m.url("/v1.0/metadata"), nil); !strings.Contains(string(r.Body), `"type":"state.crux"`) {
		t.Fatalf("default statestore is not state.crux: %s", r.Body)
	}
	expectStatus(t, do(t, "POST", m.url("/v1.0/state/statestore"), `[
		{"key":"session-1","value":{"conn":"c1","gw":"gw-3"}},
		{"key":"session-2","value":{"conn":"c2","gw":"gw-4"},"metadata":{"ttlInSeconds":"3600"}},
		{"key":"gone","value":1}]`), 204)
	expectStatus(t, do(t, "DELETE", m.url("/v1.0/state/statestore/gone"), nil), 204)
	c := sdkClient(t, m)
	if err := c.SaveState(context.Background(), "statestore", "via-grpc", []byte("g"), nil); err != nil {
		t.Fatal(err)
	}
	etag := do(t, "GET", m.url("/v1.0/state/statestore/session-1"), nil).Header.Get("ETag")

	// A graceful stop, then the same data dir.
	m.stop()
	m = startMecha(t, "--app-id", "im", "--data-dir", dataDir)
	r := do(t, "GET", m.url("/v1.0/state/statestore/session-1"), nil)
	if r.Status != 200 || string(r.Body) != `{"conn":"c1","gw":"gw-3"}` || r.Header.Get("ETag") != etag {
		t.Fatalf("after restart: %d %s etag %q (was %q)", r.Status, r.Body, r.Header.Get("ETag"), etag)
	}
	if r := do(t, "GET", m.url("/v1.0/state/statestore/session-2"), nil); r.Header.Get("metadata.ttlExpireTime") == "" {
		t.Fatalf("TTL lost across restart: %v", r.Header)
	}
	expectStatus(t, do(t, "GET", m.url("/v1.0/state/statestore/gone"), nil), 204)
	c = sdkClient(t, m)
	it, err := c.GetState(context.Background(), "statestore", "via-grpc", nil)
	if err != nil || string(it.Value) != "g" {
		t.Fatalf("gRPC write lost: %+v %v", it, err)
	}
}

func TestCruxBadInput(t *testing.T) {
	m := startMecha(t, "--app-id", "im", "--max-value-bytes", "100")
	base := m.url("/v1.0/state/statestore")
	big := strings.Repeat("x", 200)
	// As daprd answers a store's errors: 500, but for an invalid ETag
	// (400); the message names the limit.
	expectError(t, do(t, "POST", base, fmt.Sprintf(`[{"key":"k","value":%q}]`, big)), 500, "ERR_STATE_SAVE")
	expectError(t, do(t, "POST", base, `[{"key":"k","value":1,"metadata":{"ttlInSeconds":"soon"}}]`), 500, "ERR_STATE_SAVE")
	expectError(t, do(t, "POST", base, `[{"key":"k","value":1,"metadata":{"ttlInSeconds":"-5"}}]`), 500, "ERR_STATE_SAVE")
	expectError(t, do(t, "POST", base, `[{"key":"k","value":1,"etag":"not-a-version"}]`), 400, "ERR_STATE_SAVE")
	expectError(t, do(t, "POST", base, fmt.Sprintf(`[{"key":%q,"value":1}]`, strings.Repeat("k", 70<<10))), 500, "ERR_STATE_SAVE")
	expectError(t, do(t, "DELETE", base+"/k", nil, "If-Match", "nope"), 400, "ERR_STATE_DELETE")
	if r := do(t, "POST", base, fmt.Sprintf(`[{"key":"k","value":%q}]`, big)); !strings.Contains(string(r.Body), "--max-value-bytes") {
		t.Errorf("oversize value: %s does not name --max-value-bytes", r.Body)
	}
	// The SDK sees the same as Internal.
	c := sdkClient(t, m)
	err := c.SaveState(context.Background(), "statestore", "k", []byte(big), nil)
	if status.Code(err) != codes.Internal {
		t.Fatalf("oversize value over gRPC: %v", err)
	}
	// Nothing was stored by the refused writes.
	expectStatus(t, do(t, "GET", base+"/k", nil), 204)
}

// TestCruxKill9 kills mecha with SIGKILL right after acknowledged writes
// with fsync: always: every acknowledged write is there after a restart.
func TestCruxKill9(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "crux.yaml", fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: sessions
spec:
  type: state.crux
  version: v1
  metadata:
  - name: fsync
    value: always
  - name: dataDir
    value: %s/data
`, dir))
	m := startMecha(t, "--app-id", "im", "--resources-path", dir)
	const n = 200
	for i := 0; i < n; i++ {
		expectStatus(t, do(t, "POST", m.url("/v1.0/state/sessions"), fmt.Sprintf(`[{"key":"s%d","value":%d}]`, i, i)), 204)
	}
	_ = m.cmd.Process.Kill()
	m.wait(10 * time.Second)
	m = startMecha(t, "--app-id", "im", "--resources-path", dir)
	for i := 0; i < n; i++ {
		r := do(t, "GET", m.url(fmt.Sprintf("/v1.0/state/sessions/s%d", i)), nil)
		if r.Status != 200 || string(r.Body) != fmt.Sprint(i) {
			t.Fatalf("acknowledged write s%d lost after kill -9: %d %q", i, r.Status, r.Body)
		}
	}
}

// TestCruxScanSessions lists one user's sessions the way the IM service
// does: keys tagged with the user, scanned by prefix through mecha's
// extension endpoint.
func TestCruxScanSessions(t *testing.T) {
	m := startMecha(t, "--app-id", "im")
	expectStatus(t, do(t, "POST", m.url("/v1.0/state/statestore"), `[
		{"key":"{user-7}:conn-1","value":{"gw":"gw-1"}},
		{"key":"{user-7}:conn-2","value":{"gw":"gw-2"},"metadata":{"ttlInSeconds":"600"}},
		{"key":"{user-8}:conn-1","value":{"gw":"gw-3"}}]`), 204)
	r := do(t, "GET", m.url("/v1.0-alpha1/state/statestore/scan?prefix="+url.QueryEscape("{user-7}:")), nil)
	expectStatus(t, r, 200)
	var items []struct {
		Key      string            `json:"key"`
		Data     json.RawMessage   `json:"data"`
		ETag     string            `json:"etag"`
		Metadata map[string]string `json:"metadata"`
	}
	r.json(t, &items)
	if len(items) != 2 || items[0].Key != "{user-7}:conn-1" || string(items[0].Data) != `{"gw":"gw-1"}` ||
		items[1].Key != "{user-7}:conn-2" || items[0].ETag == "" || items[1].Metadata["ttlExpireTime"] == "" {
		t.Fatalf("scan = %s", r.Body)
	}
	r = do(t, "GET", m.url("/v1.0-alpha1/state/statestore/scan?limit=1&prefix="+url.QueryEscape("{user-")), nil)
	r.json(t, &items)
	if len(items) != 1 {
		t.Fatalf("limit=1 gave %s", r.Body)
	}
	expectError(t, do(t, "GET", m.url("/v1.0-alpha1/state/statestore/scan?limit=-1"), nil), 400, "ERR_MALFORMED_REQUEST")
}
