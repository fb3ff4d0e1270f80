package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestPublishLimits: publishes of the sizes the HTTP API takes go through
// with the embedded defaults; one over a component's limit gets a 413
// naming the limit to raise (reproduced: a 500 naming sarama's
// Producer.MaxMessageBytes); a topic name Kafka cannot take gets a 400
// naming what is wrong, over HTTP and gRPC.
func TestPublishLimits(t *testing.T) {
	appPort := startHTTPApp(t)
	res := t.TempDir()
	writeFile(t, res, "small.yaml", `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: small
spec:
  type: pubsub.mecha
  version: v1
  metadata:
  - name: maxMessageBytes
    value: "1000"
`)
	m := startMecha(t, "--app-id", "limits", "--app-port", fmt.Sprint(appPort), "--resources-path", res)

	t.Run("a 3 MB event is published and delivered", func(t *testing.T) {
		blob := strings.Repeat("x", 3<<20)
		r := do(t, "POST", m.url("/v1.0/publish/pubsub/orders"), `{"blob":"`+blob+`"}`, "Content-Type", "application/json")
		expectStatus(t, r, 204)
		got := waitReceived(t, appPort, "orders", 1)
		var ev ce
		if err := json.Unmarshal(got[0].Body, &ev); err != nil {
			t.Fatal(err)
		}
		var data struct{ Blob string }
		if err := json.Unmarshal(ev.Data, &data); err != nil || data.Blob != blob {
			t.Fatalf("delivered data is %d bytes (%v), want the 3 MB blob", len(data.Blob), err)
		}
	})
	t.Run("over maxMessageBytes is 413 naming the limit", func(t *testing.T) {
		r := do(t, "POST", m.url("/v1.0/publish/small/orders"), `{"blob":"`+strings.Repeat("y", 2000)+`"}`, "Content-Type", "application/json")
		expectError(t, r, 413, "ERR_PUBSUB_PUBLISH_MESSAGE")
		if !strings.Contains(string(r.Body), "maxMessageBytes (1000 bytes") {
			t.Fatalf("the error does not name the limit: %s", r.Body)
		}
	})
	t.Run("a bad topic name is 400", func(t *testing.T) {
		r := do(t, "POST", m.url("/v1.0/publish/pubsub/bad%21topic"), `{}`, "Content-Type", "application/json")
		expectError(t, r, 400, "ERR_PUBSUB_PUBLISH_MESSAGE")
		if !strings.Contains(string(r.Body), `character '!'`) {
			t.Fatalf("the error does not name the character: %s", r.Body)
		}
		r = do(t, "POST", m.url("/v1.0/publish/pubsub/"+strings.Repeat("t", 250)), `{}`, "Content-Type", "application/json")
		expectError(t, r, 400, "ERR_PUBSUB_PUBLISH_MESSAGE")
		if !strings.Contains(string(r.Body), "250 characters long, over Kafka's limit of 249") {
			t.Fatalf("the error does not name the length: %s", r.Body)
		}
	})
	t.Run("over gRPC", func(t *testing.T) {
		c := sdkClient(t, m)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := c.PublishEvent(ctx, "pubsub", "bad topic", map[string]int{"n": 1})
		if s, _ := status.FromError(err); s.Code() != codes.InvalidArgument {
			t.Fatalf("bad topic over gRPC: %v, want InvalidArgument", err)
		}
		err = c.PublishEvent(ctx, "small", "orders", []byte(strings.Repeat("z", 2000)))
		if s, _ := status.FromError(err); s.Code() != codes.ResourceExhausted || !strings.Contains(s.Message(), "maxMessageBytes") {
			t.Fatalf("too large over gRPC: %v, want ResourceExhausted naming maxMessageBytes", err)
		}
	})
}
