package e2e

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	commonv1 "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1 "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// instanceID reads the instance id a runtime gives its app from the
// metadata API.
func instanceID(t *testing.T, m *mecha) string {
	t.Helper()
	var md struct {
		Extended map[string]string `json:"extended"`
	}
	do(t, "GET", m.url("/v1.0/metadata"), nil).json(t, &md)
	if md.Extended["instanceId"] == "" {
		t.Fatalf("the metadata API names no instanceId: %v", md.Extended)
	}
	return md.Extended["instanceId"]
}

// TestInstanceInvocation: two runtimes host app gw. A call naming an
// instance (mecha-instance-id) reaches that instance only, over the HTTP
// API and the gRPC API, from either runtime; an instance no runtime
// hosts gets 404 ERR_INSTANCE_NOT_FOUND (gRPC NotFound), and so does the
// instance of a runtime killed with -9, before and after gossip notices,
// and after it started again (a new instance, under the same name).
// An app started by its runtime learns its id from MECHA_INSTANCE_ID.
func TestInstanceInvocation(t *testing.T) {
	aPort, bPort := startHTTPApp(t), startHTTPApp(t)
	b := startMecha(t, "--app-id", "gw", "--app-port", fmt.Sprint(bPort), "--node-name", "gw-b")
	a := startMecha(t, "--app-id", "gw", "--app-port", fmt.Sprint(aPort), "--join", fmt.Sprintf("127.0.0.1:%d", b.gossipPort))
	aID, bID := instanceID(t, a), instanceID(t, b)
	if aID == bID {
		t.Fatalf("both runtimes are instance %q", aID)
	}
	call := func(m *mecha, inst string) response {
		return do(t, "POST", m.url("/v1.0/invoke/gw/method/orders"), `{}`, "mecha-instance-id", inst)
	}
	eventually(t, 10*time.Second, func() error {
		if r := call(a, bID); r.Status != 200 {
			return fmt.Errorf("A calling instance %s: %d %s", bID, r.Status, r.Body)
		}
		if r := call(b, aID); r.Status != 200 {
			return fmt.Errorf("B calling instance %s: %d %s", aID, r.Status, r.Body)
		}
		return nil
	})
	a0, b0 := receivedCount(t, aPort, "orders"), receivedCount(t, bPort, "orders")
	for range 10 {
		expectStatus(t, call(a, bID), 200) // remote, never balanced to A's own app
		expectStatus(t, call(a, aID), 200) // this runtime's own instance
		expectStatus(t, call(b, aID), 200) // the other way
	}
	if da, db := receivedCount(t, aPort, "orders")-a0, receivedCount(t, bPort, "orders")-b0; da != 20 || db != 10 {
		t.Fatalf("A's app got %d calls and B's %d, want 20 and 10", da, db)
	}
	expectError(t, call(a, "nobody-1"), 404, "ERR_INSTANCE_NOT_FOUND")
	expectError(t, do(t, "POST", a.url("/v1.0/invoke/nothere/method/x"), `{}`, "mecha-instance-id", bID), 404, "ERR_INSTANCE_NOT_FOUND")

	// The gRPC API: metadata names the instance.
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", a.grpcPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := runtimev1.NewDaprClient(conn)
	grpcCall := func(inst string) error {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "mecha-instance-id", inst)
		_, err := cl.InvokeService(ctx, &runtimev1.InvokeServiceRequest{Id: "gw", Message: &commonv1.InvokeRequest{
			Method: "orders", Data: &anypb.Any{Value: []byte(`{}`)}, ContentType: "application/json",
			HttpExtension: &commonv1.HTTPExtension{Verb: commonv1.HTTPExtension_POST}}})
		return err
	}
	b1 := receivedCount(t, bPort, "orders")
	for range 5 {
		if err := grpcCall(bID); err != nil {
			t.Fatalf("gRPC call for instance %s: %v", bID, err)
		}
	}
	if d := receivedCount(t, bPort, "orders") - b1; d != 5 {
		t.Fatalf("B's app got %d of 5 gRPC calls naming it", d)
	}
	if err := grpcCall("nobody-1"); status.Code(err) != codes.NotFound {
		t.Fatalf("gRPC call for a missing instance: %v, want NotFound", err)
	}
	md, err := cl.GetMetadata(context.Background(), &runtimev1.GetMetadataRequest{})
	if err != nil || md.GetExtendedMetadata()["instanceId"] != aID {
		t.Fatalf("gRPC metadata: %v %v, want instanceId %s", md.GetExtendedMetadata(), err, aID)
	}

	// kill -9 of B's runtime: at once (B unreachable) and after gossip
	// drops it, a call naming B gets ERR_INSTANCE_NOT_FOUND, never a
	// call to A's app.
	_ = b.cmd.Process.Kill()
	<-b.done
	a1 := receivedCount(t, aPort, "orders")
	expectError(t, call(a, bID), 404, "ERR_INSTANCE_NOT_FOUND")
	eventually(t, 15*time.Second, func() error {
		r := call(a, bID)
		if r.Status != 404 || !regexp.MustCompile(`no runtime hosts|not healthy`).Match(r.Body) {
			return fmt.Errorf("after gossip: %d %s", r.Status, r.Body)
		}
		return nil
	})
	if d := receivedCount(t, aPort, "orders") - a1; d != 0 {
		t.Fatalf("%d calls naming dead instance B reached A's app", d)
	}

	// B started again, under the same node name, is another instance:
	// calls naming the new one reach it, calls naming the old one get
	// ERR_INSTANCE_NOT_FOUND and never reach B's app.
	b = startMecha(t, "--app-id", "gw", "--app-port", fmt.Sprint(bPort), "--node-name", "gw-b", "--join", fmt.Sprintf("127.0.0.1:%d", a.gossipPort))
	newB := instanceID(t, b)
	if newB == bID {
		t.Fatalf("the restarted runtime kept instance id %q", bID)
	}
	eventually(t, 15*time.Second, func() error {
		if r := call(a, newB); r.Status != 200 {
			return fmt.Errorf("A calling the restarted instance %s: %d %s", newB, r.Status, r.Body)
		}
		return nil
	})
	b2 := receivedCount(t, bPort, "orders")
	expectError(t, call(a, bID), 404, "ERR_INSTANCE_NOT_FOUND")
	if d := receivedCount(t, bPort, "orders") - b2; d != 0 {
		t.Fatalf("a call naming B's old instance reached the restarted B's app (%d)", d)
	}

	// An app started by its runtime learns its instance id.
	c := startMechaNoWait(t, "--app-id", "child", "--", "sh", "-c", "echo instance=$MECHA_INSTANCE_ID; exec sleep 60")
	g := c.waitLine(regexp.MustCompile(`^instance=(\S+)$`), 20*time.Second)
	if want := instanceID(t, c); g[1] != want {
		t.Fatalf("the child app got MECHA_INSTANCE_ID %q, the metadata API says %q", g[1], want)
	}
}
