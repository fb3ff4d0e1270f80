package components_test

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/pubsub"
	inmemorypubsub "github.com/dapr/components-contrib/pubsub/in-memory"
	"github.com/dapr/kit/logger"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker/brokertest"
	"mecha/components"
	"mecha/internal/poll"
)

// recordingPubSub is an in-memory pubsub that remembers its properties.
type recordingPubSub struct {
	pubsub.PubSub
	mu    *sync.Mutex
	props map[string]map[string]string // by component name
}

func (p recordingPubSub) Init(ctx context.Context, md pubsub.Metadata) error {
	p.mu.Lock()
	p.props[md.Name] = maps.Clone(md.Properties)
	p.mu.Unlock()
	return p.PubSub.Init(ctx, md)
}

// The runtime gives every pubsub a consumerID, the app-id, unless the YAML
// sets one, as daprd does; other components get none.
func TestPubSubConsumerIDDefaultsToAppID(t *testing.T) {
	var mu sync.Mutex
	props := map[string]map[string]string{}
	rec := &recorder{}
	reg := testRegistry(rec)
	reg.Register("pubsub.recording", "v1", func(l logger.Logger) any {
		return recordingPubSub{PubSub: inmemorypubsub.New(l), mu: &mu, props: props}
	})
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), component("plain", "pubsub.recording", ""))
	write(t, filepath.Join(dir, "b.yaml"), component("custom", "pubsub.recording", "  metadata:\n  - name: consumerID\n    value: shared-{appID}\n"))
	write(t, filepath.Join(dir, "c.yaml"), component("store", "state.recording", ""))
	m := components.NewManager(components.Options{AppID: "orders", Paths: []string{dir}, Registry: reg, Logger: quietLogger()})
	t.Cleanup(func() { _ = m.Close() })
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := props["plain"]["consumerID"]; got != "orders" {
		t.Errorf("plain pubsub consumerID = %q, want the app-id orders", got)
	}
	if got := props["custom"]["consumerID"]; got != "shared-orders" {
		t.Errorf("custom pubsub consumerID = %q, want the YAML's shared-orders", got)
	}
	if _, ok := rec.last(t, "store").props["consumerID"]; ok {
		t.Error("a state store was given a consumerID")
	}
}

// pubsub.mecha and bindings.mecha load from YAML on the broker given in
// MechaOptions, and the pubsub's group is named after the app.
func TestMechaBrokerComponents(t *testing.T) {
	brokers := brokertest.Start(t)
	reg := testRegistry(&recorder{})
	components.RegisterMecha(reg, components.MechaOptions{DataDir: t.TempDir(), Brokers: brokers, Logger: quietLogger()})
	dir := t.TempDir()
	write(t, filepath.Join(dir, "ps.yaml"), component("events", "pubsub.mecha", ""))
	write(t, filepath.Join(dir, "b.yaml"), component("feed", "bindings.mecha", "  metadata:\n  - name: publishTopic\n    value: feed\n  - name: topics\n    value: feed\n  - name: consumerGroup\n    value: feed-reader\n"))
	m := components.NewManager(components.Options{AppID: "orders", Paths: []string{dir}, Registry: reg, Logger: quietLogger()})
	t.Cleanup(func() { _ = m.Close() })
	if _, err := m.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	snap := m.Snapshot()
	ps := snap.PubSub["events"]
	if ps == nil {
		t.Fatal("pubsub.mecha did not load")
	}
	var mu sync.Mutex
	var got []*pubsub.NewMessage
	if err := ps.PS.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: "t"}, func(_ context.Context, msg *pubsub.NewMessage) error {
		mu.Lock()
		got = append(got, msg)
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := ps.PS.Publish(t.Context(), &pubsub.PublishRequest{Topic: "t", Data: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the event", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	groups, err := kadm.NewClient(cl).ListGroups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(groups.Groups(), "orders") {
		t.Errorf("consumer groups %v, want the app-id orders", groups.Groups())
	}

	in, out := snap.InputBindings["feed"], snap.OutputBindings["feed"]
	if in == nil || out.OutputBinding == nil {
		t.Fatalf("bindings.mecha is not both an input (%v) and an output (%v) binding", in != nil, out.OutputBinding != nil)
	}
	var read []string
	if err := in.Read(t.Context(), func(_ context.Context, r *bindings.ReadResponse) ([]byte, error) {
		mu.Lock()
		read = append(read, string(r.Data))
		mu.Unlock()
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Invoke(t.Context(), &bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: []byte("row")}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the binding record", func() bool { mu.Lock(); defer mu.Unlock(); return len(read) == 1 })
}

func TestMechaBrokerComponentsWithoutBroker(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "ps.yaml"), component("events", "pubsub.mecha", ""))
	m := newManager(t, &recorder{}, "orders", dir)
	_, err := m.Load(t.Context())
	if err == nil || !strings.Contains(err.Error(), "metadata brokers") || !strings.Contains(err.Error(), "ps.yaml") {
		t.Fatalf("pubsub.mecha without a broker loaded: %v", err)
	}
}
