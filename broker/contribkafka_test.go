package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	kafkapubsub "github.com/dapr/components-contrib/pubsub/kafka"
	"github.com/dapr/kit/logger"
)

// TestContribKafkaPubSub points contrib's pubsub.kafka (sarama underneath,
// at contrib's default Kafka version) at the broker: what a user gets by
// swapping pubsub.mecha for pubsub.kafka in YAML.
func TestContribKafkaPubSub(t *testing.T) {
	b := startBroker(t)
	ps := kafkapubsub.NewKafka(logger.NewLogger("contrib-kafka"))
	err := ps.Init(context.Background(), pubsub.Metadata{Base: metadata.Base{Name: "kafka", Properties: map[string]string{
		"brokers":       b.Addr(),
		"consumerGroup": "contrib-app",
		"authType":      "none",
		"initialOffset": "oldest",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan string, 100)
	err = ps.Subscribe(ctx, pubsub.SubscribeRequest{Topic: "contrib-orders"}, func(_ context.Context, m *pubsub.NewMessage) error {
		got <- string(m.Data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := 0; i < n; i++ {
		if err := ps.Publish(ctx, &pubsub.PublishRequest{PubsubName: "kafka", Topic: "contrib-orders", Data: []byte(fmt.Sprintf("m%d", i))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for i := 0; i < n; i++ {
		select {
		case v := <-got:
			if want := fmt.Sprintf("m%d", i); v != want {
				t.Fatalf("message %d = %q, want %q", i, v, want)
			}
		case <-ctx.Done():
			t.Fatalf("got %d of %d messages", i, n)
		}
	}
}
