package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/cloudevent"
	"mecha/runtime/subscriptions"
)

// ErrStreamClosed is wrapped by the delivery errors of a streaming
// subscription whose client went away; the event is retried.
var ErrStreamClosed = errors.New("subscription stream closed")

// streamRoute is the route of a streaming subscription, "/" as in Dapr.
const streamRoute = "/"

// SubscribeTopicEventsAlpha1 serves a streaming subscription, Dapr v1.14's
// protocol: the client's first message is an InitialRequest naming pubsub
// and topic; the server subscribes and answers an InitialResponse; then
// each event goes out as an EventMessage (a TopicEventRequest) and the
// client answers an EventProcessed with the event's id and SUCCESS, RETRY
// or DROP. The subscription ends with the stream: when the client closes
// its side (the RPC ends OK), on a stream error, or when the server stops.
func (s *Server) SubscribeTopicEventsAlpha1(stream runtimev1pb.Dapr_SubscribeTopicEventsAlpha1Server) error {
	// daprd answers a bad first message with a plain error, which gRPC
	// sends as Unknown; mecha keeps the code and daprd's messages.
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return status.Error(codes.Unknown, "initial request is required")
		}
		return err
	}
	init := first.GetInitialRequest()
	switch {
	case init == nil:
		return status.Error(codes.Unknown, "initial request is required")
	case init.GetPubsubName() == "":
		return status.Error(codes.Unknown, "pubsubName is required")
	case init.GetTopic() == "":
		return status.Error(codes.Unknown, "topic is required")
	}
	if s.d.Subs == nil {
		return status.Error(codes.Unimplemented, "streaming subscriptions are not available")
	}
	if err := s.checkPubSub(init.GetPubsubName()); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	sink := &streamSink{
		stream:  stream,
		done:    make(chan struct{}),
		recvErr: make(chan error, 1),
		waiters: map[string][]chan *runtimev1pb.TopicEventResponse{},
	}
	// Hold the send lock until the InitialResponse is out, so that no event
	// delivered right after subscribing overtakes it.
	sink.sendMu.Lock()
	remove, ended, err := s.d.Subs.AddStream(ctx, appchannel.Subscription{
		PubsubName:      init.GetPubsubName(),
		Topic:           init.GetTopic(),
		Metadata:        init.GetMetadata(),
		DeadLetterTopic: init.GetDeadLetterTopic(),
		Route:           streamRoute,
	}, sink)
	if err != nil {
		sink.sendMu.Unlock()
		return status.Errorf(codes.Unknown, "subscribing to pubsub %s topic %s: %v", init.GetPubsubName(), init.GetTopic(), err)
	}
	defer func() {
		sink.close()
		remove()
	}()
	err = stream.Send(&runtimev1pb.SubscribeTopicEventsResponseAlpha1{
		SubscribeTopicEventsResponseType: &runtimev1pb.SubscribeTopicEventsResponseAlpha1_InitialResponse{
			InitialResponse: &runtimev1pb.SubscribeTopicEventsResponseInitialAlpha1{},
		},
	})
	sink.sendMu.Unlock()
	if err != nil {
		return err
	}
	s.log.Info("streaming subscription started", "pubsub", init.GetPubsubName(), "topic", init.GetTopic())
	defer s.log.Info("streaming subscription ended", "pubsub", init.GetPubsubName(), "topic", init.GetTopic())

	// The reader goroutine is owned by this handler: it is the only caller
	// of stream.Recv from here on, and it ends when the stream does, which
	// returning from the handler guarantees.
	go sink.readLoop()
	select {
	case err := <-sink.recvErr:
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case <-s.closing:
		// daprd ends the stream with a plain error ("api server closed"):
		// Unknown.
		return status.Error(codes.Unknown, "runtime is shutting down")
	case <-ended:
		// Mecha only: a hot reload of the pubsub ends its streams.
		return status.Errorf(codes.Unavailable, "pubsub %s was reloaded or removed; subscribe again", init.GetPubsubName())
	}
}

// checkPubSub fails with Dapr's error when the pubsub is not loaded (with
// none loaded too, as in daprd).
func (s *Server) checkPubSub(name string) error {
	if s.d.Blocks == nil || s.d.Blocks.Components == nil {
		return nil
	}
	if _, ok := s.d.Blocks.Components.Snapshot().PubSub[name]; !ok {
		return apierr.PubSubNotFound(name)
	}
	return nil
}

// streamSink delivers a subscription's events on one gRPC stream. Many
// deliveries may be under way at once; each registers a waiter under its
// event id before sending, and the reader hands it the client's answer.
type streamSink struct {
	stream runtimev1pb.Dapr_SubscribeTopicEventsAlpha1Server

	// done is closed when the handler returns; waiters give up then.
	done chan struct{}
	// recvErr carries the reader's final error to the handler.
	recvErr chan error

	// sendMu serializes stream.Send and guards closed: once closed is set
	// (the handler is returning) nothing is sent any more.
	sendMu sync.Mutex
	closed bool

	// mu guards waiters: event id -> channels of the deliveries waiting for
	// that id, oldest first (an id sent twice is answered in order).
	mu      sync.Mutex
	waiters map[string][]chan *runtimev1pb.TopicEventResponse
}

var _ subscriptions.Sink = (*streamSink)(nil)

// close stops all sends and wakes the waiters. Called once, by the handler.
func (k *streamSink) close() {
	k.sendMu.Lock()
	k.closed = true
	k.sendMu.Unlock()
	close(k.done)
}

// readLoop receives the client's answers and routes each to the delivery
// waiting for its id, until Recv fails.
func (k *streamSink) readLoop() {
	for {
		req, err := k.stream.Recv()
		if err != nil {
			k.recvErr <- err
			return
		}
		p := req.GetEventProcessed()
		if p == nil {
			k.recvErr <- status.Error(codes.Unknown, "duplicate initial request received")
			return
		}
		k.resolve(p.GetId(), p.GetStatus())
	}
}

func (k *streamSink) register(id string, ch chan *runtimev1pb.TopicEventResponse) {
	k.mu.Lock()
	k.waiters[id] = append(k.waiters[id], ch)
	k.mu.Unlock()
}

func (k *streamSink) unregister(id string, ch chan *runtimev1pb.TopicEventResponse) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ws := k.waiters[id]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(k.waiters, id)
	} else {
		k.waiters[id] = ws
	}
}

// resolve hands an answer to the oldest delivery waiting for id. Answers
// for ids nobody waits for (late, or made up) are ignored.
func (k *streamSink) resolve(id string, st *runtimev1pb.TopicEventResponse) {
	if st == nil {
		// An absent status is the zero value, SUCCESS, as in Dapr.
		st = &runtimev1pb.TopicEventResponse{}
	}
	k.mu.Lock()
	ws := k.waiters[id]
	if len(ws) == 0 {
		k.mu.Unlock()
		return
	}
	ch := ws[0]
	if len(ws) == 1 {
		delete(k.waiters, id)
	} else {
		k.waiters[id] = ws[1:]
	}
	k.mu.Unlock()
	ch <- st // buffered, and this waiter is no longer reachable by anyone else
}

// DeliverEvent sends one event and waits for the client's verdict. A
// failed send, the stream ending or ctx ending retry the event with an
// error.
func (k *streamSink) DeliverEvent(ctx context.Context, ev *appchannel.TopicEvent) (appchannel.EventStatus, error) {
	req, err := topicEventRequest(ev)
	if err != nil {
		return appchannel.StatusRetry, err
	}
	ch := make(chan *runtimev1pb.TopicEventResponse, 1)
	k.register(req.GetId(), ch)
	defer k.unregister(req.GetId(), ch)

	k.sendMu.Lock()
	if k.closed {
		k.sendMu.Unlock()
		return appchannel.StatusRetry, fmt.Errorf("deliver event %s on topic %s: %w", req.GetId(), req.GetTopic(), ErrStreamClosed)
	}
	err = k.stream.Send(&runtimev1pb.SubscribeTopicEventsResponseAlpha1{
		SubscribeTopicEventsResponseType: &runtimev1pb.SubscribeTopicEventsResponseAlpha1_EventMessage{EventMessage: req},
	})
	k.sendMu.Unlock()
	if err != nil {
		return appchannel.StatusRetry, fmt.Errorf("deliver event %s on topic %s: %w: %w", req.GetId(), req.GetTopic(), ErrStreamClosed, err)
	}

	select {
	case st := <-ch:
		switch st.GetStatus() {
		case runtimev1pb.TopicEventResponse_SUCCESS:
			return appchannel.StatusSuccess, nil
		case runtimev1pb.TopicEventResponse_RETRY:
			return appchannel.StatusRetry, nil
		case runtimev1pb.TopicEventResponse_DROP:
			return appchannel.StatusDrop, nil
		}
		return appchannel.StatusRetry, fmt.Errorf("event %s: subscriber answered unknown status %d", req.GetId(), st.GetStatus())
	case <-k.done:
		return appchannel.StatusRetry, fmt.Errorf("deliver event %s on topic %s: %w before the subscriber answered", req.GetId(), req.GetTopic(), ErrStreamClosed)
	case <-ctx.Done():
		return appchannel.StatusRetry, fmt.Errorf("deliver event %s on topic %s: %w", req.GetId(), req.GetTopic(), ctx.Err())
	}
}

// DeliverBulk delivers the entries one by one: the streaming protocol has
// no batch message. An entry that could not be delivered is left out of
// the map (so it is retried); the stream ending stops the batch.
func (k *streamSink) DeliverBulk(ctx context.Context, ev *appchannel.BulkEvent) (map[string]appchannel.EventStatus, error) {
	out := make(map[string]appchannel.EventStatus, len(ev.Entries))
	for _, e := range ev.Entries {
		st, err := k.DeliverEvent(ctx, &appchannel.TopicEvent{
			Path: ev.Path, PubsubName: ev.PubsubName, Topic: ev.Topic, CloudEvent: e.Event, Raw: ev.Raw, Metadata: e.Metadata,
		})
		if err != nil {
			if errors.Is(err, ErrStreamClosed) || ctx.Err() != nil {
				return out, err
			}
			continue
		}
		out[e.EntryID] = st
	}
	return out, nil
}

// topicEventRequest unpacks a structured CloudEvent into a
// TopicEventRequest; a raw event travels as octet-stream data of a
// synthetic event. An event without an id gets one, since answers are
// matched by id.
func topicEventRequest(ev *appchannel.TopicEvent) (*runtimev1pb.TopicEventRequest, error) {
	// Path is always "/", the route Dapr gives streaming subscriptions,
	// whatever route the subscription manager used internally.
	req := &runtimev1pb.TopicEventRequest{Topic: ev.Topic, PubsubName: ev.PubsubName, Path: "/"}
	if ev.Raw {
		req.Id = uuid.NewString()
		req.Type = cloudevent.EventType
		req.SpecVersion = "1.0"
		req.DataContentType = "application/octet-stream"
		req.Data = ev.CloudEvent
		return req, nil
	}
	e, err := cloudevent.Parse(ev.CloudEvent)
	if err != nil {
		return nil, fmt.Errorf("deliver event on topic %s: %w", ev.Topic, err)
	}
	if req.Extensions, err = e.Extensions(); err != nil {
		return nil, fmt.Errorf("deliver event %s on topic %s: %w", e.ID, ev.Topic, err)
	}
	req.Id, req.Source, req.Type = e.ID, e.Source, e.Type
	req.SpecVersion, req.DataContentType, req.Data = e.SpecVersion, e.DataContentType, e.Data
	if req.Id == "" {
		req.Id = uuid.NewString()
	}
	if req.Topic == "" {
		req.Topic = e.Topic
	}
	if req.PubsubName == "" {
		req.PubsubName = e.PubsubName
	}
	return req, nil
}
