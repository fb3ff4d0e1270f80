package sdk

import (
	"context"
	"errors"
	"time"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc/codes"
)

// PublishOption tunes one publish.
type PublishOption func(*runtimev1pb.PublishEventRequest)

// WithContentType is the data's content type (the runtime's default is
// application/json when the data is JSON, else text/plain… as Dapr).
func WithContentType(ct string) PublishOption {
	return func(r *runtimev1pb.PublishEventRequest) { r.DataContentType = ct }
}

// WithPublishMetadata passes a metadata entry to the pub/sub component
// (partitionKey, rawPayload, ttlInSeconds, …).
func WithPublishMetadata(key, value string) PublishOption {
	return func(r *runtimev1pb.PublishEventRequest) {
		if r.Metadata == nil {
			r.Metadata = map[string]string{}
		}
		r.Metadata[key] = value
	}
}

// Publish publishes data to topic; the runtime wraps it in a
// CloudEvent.
func (c *Client) Publish(ctx context.Context, pubsub, topic string, data []byte, opts ...PublishOption) error {
	req := &runtimev1pb.PublishEventRequest{PubsubName: pubsub, Topic: topic, Data: data}
	for _, f := range opts {
		f(req)
	}
	return c.call(ctx, func(ctx context.Context, api runtimev1pb.DaprClient) error {
		_, err := api.PublishEvent(ctx, req)
		return err
	})
}

// Event is one delivered event.
type Event struct {
	ID, Source, Type, ContentType, Topic, PubsubName string
	Data                                             []byte
}

// Handler takes one event. nil acknowledges it; ErrDrop drops it (no
// redelivery, its dead-letter topic if any); any other error asks for
// it again.
type Handler func(context.Context, *Event) error

// ErrDrop is what a Handler returns to drop an event.
var ErrDrop = errors.New("sdk: drop the event")

// Subscribe receives topic's events over a streaming subscription and
// hands them to h one at a time, until ctx ends (it then returns
// ctx.Err()) or the runtime refuses the subscription for good (an
// *Error: an unknown pubsub, a denied topic, a bad token). Any other
// failure (the stream breaks, the runtime restarts or drains, the broker
// fails) subscribes again with a backoff up to 2 s, to another runtime
// of the catalog while its own is unreachable; events not acknowledged
// come again.
func (c *Client) Subscribe(ctx context.Context, pubsub, topic string, h Handler) error {
	const first, most = 50 * time.Millisecond, 2 * time.Second
	wait := first
	for {
		began := time.Now()
		on, err := c.subscribeOnce(ctx, pubsub, topic, h)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !on && refused(err) {
			return err
		}
		if on && time.Since(began) > 5*time.Second {
			wait = first // the stream lived: the next failure is a new one
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, most)
	}
}

// refused reports whether a runtime refused a subscription for a reason
// that trying again does not change.
func refused(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Status {
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented, codes.FailedPrecondition:
		return true
	}
	return false
}

// subscribeOnce runs one stream until it breaks; on says whether the
// runtime took the subscription.
func (c *Client) subscribeOnce(ctx context.Context, pubsub, topic string, h Handler) (on bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stream runtimev1pb.Dapr_SubscribeTopicEventsAlpha1Client
	err = c.call(sctx, func(ctx context.Context, api runtimev1pb.DaprClient) error {
		s, err := api.SubscribeTopicEventsAlpha1(ctx)
		if err != nil {
			return err
		}
		if err := s.Send(&runtimev1pb.SubscribeTopicEventsRequestAlpha1{SubscribeTopicEventsRequestType: &runtimev1pb.SubscribeTopicEventsRequestAlpha1_InitialRequest{
			InitialRequest: &runtimev1pb.SubscribeTopicEventsRequestInitialAlpha1{PubsubName: pubsub, Topic: topic}}}); err != nil {
			return err
		}
		// The first answer says the subscription is on (or why not).
		if _, err := s.Recv(); err != nil {
			return err
		}
		stream = s
		return nil
	})
	if err != nil {
		return false, err
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return true, fromGRPC(err)
		}
		ev := m.GetEventMessage()
		if ev == nil {
			continue
		}
		st := runtimev1pb.TopicEventResponse_SUCCESS
		if herr := h(ctx, &Event{ID: ev.GetId(), Source: ev.GetSource(), Type: ev.GetType(), ContentType: ev.GetDataContentType(),
			Topic: ev.GetTopic(), PubsubName: ev.GetPubsubName(), Data: ev.GetData()}); herr != nil {
			st = runtimev1pb.TopicEventResponse_RETRY
			if errors.Is(herr, ErrDrop) {
				st = runtimev1pb.TopicEventResponse_DROP
			}
		}
		if err := stream.Send(&runtimev1pb.SubscribeTopicEventsRequestAlpha1{SubscribeTopicEventsRequestType: &runtimev1pb.SubscribeTopicEventsRequestAlpha1_EventProcessed{
			EventProcessed: &runtimev1pb.SubscribeTopicEventsRequestProcessedAlpha1{Id: ev.GetId(), Status: &runtimev1pb.TopicEventResponse{Status: st}}}}); err != nil {
			return true, fromGRPC(err)
		}
	}
}
