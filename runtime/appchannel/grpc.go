package appchannel

// The gRPC channel speaks Dapr's AppCallback contract (appcallback.proto of
// dapr v1.14) to apps started with --app-protocol grpc. Its verdicts mirror
// Dapr's runtime (pkg/runtime/subscription, pkg/messaging/v1) so an app
// written against Dapr behaves the same behind mecha:
//
//   - An app's gRPC status on invocation is an answer, not a failure: it
//     becomes an HTTP status (grpc-gateway mapping) with the message as body.
//   - codes.Unavailable is the transport saying it could not reach the app;
//     it is reported as ErrAppUnreachable everywhere. An app that itself
//     answers Unavailable is indistinguishable and is treated the same.
//   - codes.Unimplemented means "the app has no such callback": no
//     subscriptions, no bindings, drop the event, fall back from bulk to
//     single delivery, fall back from the health service to the connection
//     state.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"mecha/runtime/cloudevent"
)

const (
	defaultGRPCMaxMessageBytes = 4 << 20
	// readyWait bounds how long Health waits for the connection to become
	// READY when the app has no health service and ctx has no earlier
	// deadline.
	readyWait = 2 * time.Second
	// protobufContentType is what Dapr reports for typed (type_url) data.
	protobufContentType = "application/x-protobuf"
)

// GRPCOptions configure a gRPC channel.
type GRPCOptions struct {
	// Address is the gRPC target of the app: host:port, or any target
	// grpc.NewClient accepts ("unix:///path", "dns:///host:port").
	Address string
	// MaxMessageBytes caps messages sent to and received from the app;
	// 0 means 4 MiB, as the HTTP channel's MaxResponseBytes.
	MaxMessageBytes int
}

// GRPC calls an app over Dapr's AppCallback gRPC services. One HTTP/2
// connection is multiplexed by all calls; it connects lazily and reconnects
// with a short backoff, since the app is local and may start after the
// runtime.
type GRPC struct {
	addr   string
	conn   *grpc.ClientConn
	app    runtimev1pb.AppCallbackClient
	alpha  runtimev1pb.AppCallbackAlphaClient
	health runtimev1pb.AppCallbackHealthCheckClient

	// bindingsSem is a one-slot semaphore serializing the first
	// ListInputBindings call; unlike a mutex, waiters can give up with
	// their ctx. Whoever holds it owns bindings; bindings is nil until a
	// call succeeds and never changes after.
	bindingsSem chan struct{}
	bindings    map[string]struct{}
}

var _ Channel = (*GRPC)(nil)

// NewGRPC returns a channel to the gRPC app at opts.Address. It does not
// wait for the app: the connection is made by the first call (or Health),
// so the runtime may start before its app. ctx only guards construction.
func NewGRPC(ctx context.Context, opts GRPCOptions) (*GRPC, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("grpc app channel: %w", err)
	}
	if opts.Address == "" {
		return nil, errors.New("grpc app channel: empty app address")
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = defaultGRPCMaxMessageBytes
	}
	conn, err := grpc.NewClient(opts.Address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(opts.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(opts.MaxMessageBytes),
		),
		// The default backoff grows to two minutes; an app that starts
		// slowly on localhost would then stay unreachable long after it
		// listens.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   2 * time.Second,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
		// As the API server: writes share buffers, reads take them from
		// a pool (deliveries and invocations are many small calls).
		grpc.WithSharedWriteBuffer(true),
		experimental.WithRecvBufferPool(grpc.NewSharedBufferPool()),
	)
	if err != nil {
		return nil, fmt.Errorf("grpc app channel: %s: %w", opts.Address, err)
	}
	return &GRPC{
		addr:        opts.Address,
		conn:        conn,
		app:         runtimev1pb.NewAppCallbackClient(conn),
		alpha:       runtimev1pb.NewAppCallbackAlphaClient(conn),
		health:      runtimev1pb.NewAppCallbackHealthCheckClient(conn),
		bindingsSem: make(chan struct{}, 1),
	}, nil
}

// callErr wraps an error of a call to the app: Unavailable (the transport
// could not reach the app) wraps ErrAppUnreachable; an expired or canceled
// ctx wraps ctx.Err(). The gRPC status stays reachable with status.FromError.
func (g *GRPC) callErr(ctx context.Context, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s %s: %w: %w", what, g.addr, ctxErr, err)
	}
	if deadlinePassed(ctx, err) {
		return fmt.Errorf("%s %s: %w: %w", what, g.addr, context.DeadlineExceeded, err)
	}
	if status.Code(err) == codes.Unavailable {
		return fmt.Errorf("%w: %s %s: %w", ErrAppUnreachable, what, g.addr, err)
	}
	return fmt.Errorf("%s %s: %w", what, g.addr, err)
}

// deadlinePassed reports a DeadlineExceeded status caused by ctx's own
// deadline: the app can see the propagated deadline expire a moment before
// ctx's timer marks ctx done.
func deadlinePassed(ctx context.Context, err error) bool {
	if status.Code(err) != codes.DeadlineExceeded {
		return false
	}
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < 50*time.Millisecond
}

// Invoke implements Channel with AppCallback.OnInvoke. An app's gRPC error
// status is returned as an InvokeResponse whose Status is the HTTP mapping
// of its code (HTTPStatusFromCode) and whose body is the status message;
// the error result is only for failing to reach the app (ErrAppUnreachable)
// or ctx ending.
func (g *GRPC) Invoke(ctx context.Context, r *InvokeRequest) (*InvokeResponse, error) {
	in := &commonv1pb.InvokeRequest{
		Method:      r.Method,
		Data:        &anypb.Any{Value: r.Body},
		ContentType: r.ContentType,
		HttpExtension: &commonv1pb.HTTPExtension{
			Verb:        httpVerb(r.Verb),
			Querystring: r.Query,
		},
	}
	md := metadata.MD{}
	for _, h := range r.Headers {
		addMD(md, h.Key, h.Value)
	}
	var hdr metadata.MD
	resp, err := g.app.OnInvoke(withMD(ctx, md), in, grpc.Header(&hdr))
	if err != nil {
		st, ok := status.FromError(err)
		if !ok || st.Code() == codes.Unavailable || ctx.Err() != nil || deadlinePassed(ctx, err) {
			return nil, g.callErr(ctx, "invoke "+r.Method+" on", err)
		}
		return &InvokeResponse{
			Status:      HTTPStatusFromCode(st.Code()),
			ContentType: "text/plain; charset=utf-8",
			Headers:     mdHeaders(hdr),
			Body:        []byte(st.Message()),
		}, nil
	}
	out := &InvokeResponse{
		Status:      http.StatusOK,
		ContentType: resp.GetContentType(),
		Headers:     mdHeaders(hdr),
		Body:        resp.GetData().GetValue(),
	}
	if out.ContentType == "" && resp.GetData().GetTypeUrl() != "" {
		out.ContentType = protobufContentType
	}
	return out, nil
}

// httpVerb maps an HTTP verb to Dapr's enum; empty and unknown verbs are
// POST, as in Dapr's WithHTTPExtension.
func httpVerb(verb string) commonv1pb.HTTPExtension_Verb {
	v, ok := commonv1pb.HTTPExtension_Verb_value[strings.ToUpper(verb)]
	if !ok || v == int32(commonv1pb.HTTPExtension_NONE) {
		return commonv1pb.HTTPExtension_POST
	}
	return commonv1pb.HTTPExtension_Verb(v)
}

// HTTPStatusFromCode maps a gRPC code to an HTTP status the way
// grpc-gateway and Dapr do (FailedPrecondition is deliberately 400, not
// 412). Unknown codes are 500.
func HTTPStatusFromCode(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return http.StatusRequestTimeout
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// skipMD are HTTP headers that must not become gRPC metadata: hop-by-hop
// headers (an HTTP/2 peer rejects a stream carrying "connection"), headers
// describing the HTTP body, and ones gRPC sets itself.
var skipMD = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true, "te": true, "trailer": true,
	"proxy-authenticate": true, "proxy-authorization": true, "host": true,
	"content-length": true, "content-type": true, "user-agent": true,
	"accept-encoding": true,
}

// addMD adds one header to md if gRPC can carry it. Keys are lowercased;
// pseudo headers, hop-by-hop headers, grpc-* headers and pairs grpc-go
// would refuse (it fails the whole call on them) are skipped. Values of
// -bin keys arrive base64-encoded and are decoded, since gRPC encodes them
// again.
func addMD(md metadata.MD, key, value string) {
	k := strings.ToLower(strings.TrimSpace(key))
	if k == "" || k[0] == ':' || skipMD[k] || strings.HasPrefix(k, "grpc-") {
		return
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '.' && c != '-' && c != '_' {
			return
		}
	}
	if strings.HasSuffix(k, "-bin") {
		b, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			if b, err = base64.RawStdEncoding.DecodeString(value); err != nil {
				return
			}
		}
		md.Append(k, string(b))
		return
	}
	for i := 0; i < len(value); i++ {
		if value[i] < 0x20 || value[i] > 0x7e {
			return
		}
	}
	md.Append(k, value)
}

// withMD adds md to ctx's outgoing metadata, keeping what is there.
func withMD(ctx context.Context, md metadata.MD) context.Context {
	if len(md) == 0 {
		return ctx
	}
	if old, ok := metadata.FromOutgoingContext(ctx); ok {
		md = metadata.Join(old, md)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// mdHeaders turns the app's response header metadata into headers, leaving
// out pseudo headers and gRPC's own content-type, and re-encoding binary
// values as base64.
func mdHeaders(md metadata.MD) []Header {
	var out []Header
	for k, vs := range md {
		if k == "" || k[0] == ':' || k == "content-type" {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.StdEncoding.EncodeToString([]byte(v))
			}
			out = append(out, Header{Key: k, Value: v})
		}
	}
	return out
}

// Subscriptions implements Channel with AppCallback.ListTopicSubscriptions.
// Routes are returned in Routes (gRPC has no single route field); an app
// without the method (Unimplemented) has no subscriptions.
func (g *GRPC) Subscriptions(ctx context.Context) ([]Subscription, error) {
	resp, err := g.app.ListTopicSubscriptions(ctx, &emptypb.Empty{})
	if err != nil {
		if status.Code(err) == codes.Unimplemented && ctx.Err() == nil {
			return nil, nil
		}
		return nil, g.callErr(ctx, "list topic subscriptions of", err)
	}
	subs := make([]Subscription, 0, len(resp.GetSubscriptions()))
	for _, s := range resp.GetSubscriptions() {
		sub := Subscription{
			PubsubName:      s.GetPubsubName(),
			Topic:           s.GetTopic(),
			Metadata:        s.GetMetadata(),
			DeadLetterTopic: s.GetDeadLetterTopic(),
		}
		if r := s.GetRoutes(); r != nil && (len(r.GetRules()) > 0 || r.GetDefault() != "") {
			sub.Routes = &Routes{Default: r.GetDefault()}
			for _, rule := range r.GetRules() {
				sub.Routes.Rules = append(sub.Routes.Rules, Rule{Match: rule.GetMatch(), Path: rule.GetPath()})
			}
		} else {
			// As in Dapr, a gRPC app's subscription without routes gets
			// every event on the empty path ("/" here, which OnTopicEvent
			// gets without its slash).
			sub.Route = "/"
		}
		if b := s.GetBulkSubscribe(); b != nil {
			sub.BulkSubscribe = &BulkSubscribe{
				Enabled:            b.GetEnabled(),
				MaxMessagesCount:   b.GetMaxMessagesCount(),
				MaxAwaitDurationMs: b.GetMaxAwaitDurationMs(),
			}
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

// DeliverEvent implements Channel with AppCallback.OnTopicEvent. A
// structured event is unpacked into TopicEventRequest's fields; a raw one
// travels as octet-stream data of a synthetic event. Verdicts as in Dapr:
// SUCCESS, RETRY and DROP map to their statuses; NotFound (like HTTP 404)
// and Unimplemented (no OnTopicEvent at all) drop; any other failure
// retries with an error (wrapping ErrAppUnreachable for Unavailable, and
// cloudevent.ErrInvalid for an envelope that does not parse). ev.Metadata
// and ev.TraceParent travel as gRPC metadata.
func (g *GRPC) DeliverEvent(ctx context.Context, ev *TopicEvent) (EventStatus, error) {
	req := &runtimev1pb.TopicEventRequest{
		Topic:      ev.Topic,
		PubsubName: ev.PubsubName,
		Path:       "/" + ev.Path,
	}
	traceParent := ev.TraceParent
	if ev.Raw {
		req.Id = uuid.NewString()
		req.Type = cloudevent.EventType
		req.SpecVersion = "1.0"
		req.DataContentType = "application/octet-stream"
		req.Data = ev.CloudEvent
	} else {
		e, err := cloudevent.Parse(ev.CloudEvent)
		if err != nil {
			return StatusRetry, fmt.Errorf("deliver event on topic %s: %w", ev.Topic, err)
		}
		ext, err := e.Extensions()
		if err != nil {
			return StatusRetry, fmt.Errorf("deliver event %s on topic %s: %w", e.ID, ev.Topic, err)
		}
		req.Id, req.Source, req.Type = e.ID, e.Source, e.Type
		req.SpecVersion, req.DataContentType = e.SpecVersion, e.DataContentType
		req.Data, req.Extensions = e.Data, ext
		if req.Topic == "" {
			req.Topic = e.Topic
		}
		if req.PubsubName == "" {
			req.PubsubName = e.PubsubName
		}
		if traceParent == "" {
			traceParent = e.TraceParent
		}
	}
	md := eventMD(ev.Metadata)
	if traceParent != "" {
		md.Set("traceparent", traceParent)
	}
	resp, err := g.app.OnTopicEvent(withMD(ctx, md), req)
	if err != nil {
		if c := status.Code(err); (c == codes.NotFound || c == codes.Unimplemented) && ctx.Err() == nil {
			return StatusDrop, nil
		}
		return StatusRetry, g.callErr(ctx, "deliver event "+req.Id+" on topic "+req.Topic+" to", err)
	}
	return topicStatus(resp.GetStatus())
}

// eventMD turns component metadata into gRPC metadata, as Dapr's
// WithCustomGRPCMetadata does.
func eventMD(m map[string]string) metadata.MD {
	md := metadata.MD{}
	for k, v := range m {
		addMD(md, k, v)
	}
	return md
}

func topicStatus(s runtimev1pb.TopicEventResponse_TopicEventResponseStatus) (EventStatus, error) {
	switch s {
	case runtimev1pb.TopicEventResponse_SUCCESS:
		return StatusSuccess, nil
	case runtimev1pb.TopicEventResponse_RETRY:
		return StatusRetry, nil
	case runtimev1pb.TopicEventResponse_DROP:
		return StatusDrop, nil
	}
	return StatusRetry, fmt.Errorf("app answered unknown topic event status %d", s)
}

// DeliverBulk implements Channel with AppCallbackAlpha.OnBulkTopicEventAlpha1.
// Structured entries travel as TopicEventCERequest, raw ones as bytes; an
// entry whose envelope does not parse is left out of the request and of the
// result (so it is retried). Statuses for unknown entry IDs are ignored;
// unknown status values retry. NotFound drops the whole batch, like HTTP
// 404. An app without the bulk callback (Unimplemented) gets the entries
// one by one through DeliverEvent; then an unreachable app or ctx ending
// stops the batch and the map holds the verdicts obtained so far.
func (g *GRPC) DeliverBulk(ctx context.Context, ev *BulkEvent) (map[string]EventStatus, error) {
	req := &runtimev1pb.TopicEventBulkRequest{
		Id:         ev.ID,
		Metadata:   ev.Metadata,
		Topic:      ev.Topic,
		PubsubName: ev.PubsubName,
		Type:       cloudevent.EventType,
		Path:       "/" + ev.Path,
		Entries:    make([]*runtimev1pb.TopicEventBulkRequestEntry, 0, len(ev.Entries)),
	}
	if req.Id == "" {
		req.Id = uuid.NewString()
	}
	sent := make(map[string]bool, len(ev.Entries))
	for _, e := range ev.Entries {
		entry := &runtimev1pb.TopicEventBulkRequestEntry{
			EntryId:     e.EntryID,
			ContentType: e.ContentType,
			Metadata:    e.Metadata,
		}
		if ev.Raw {
			entry.Event = &runtimev1pb.TopicEventBulkRequestEntry_Bytes{Bytes: e.Event}
		} else {
			ce, err := cloudevent.Parse(e.Event)
			var ext *structpb.Struct
			if err == nil {
				ext, err = ce.Extensions()
			}
			if err != nil {
				slog.WarnContext(ctx, "grpc app channel: bulk entry is not a valid cloudevent; left for retry",
					"topic", ev.Topic, "entry", e.EntryID, "err", err)
				continue
			}
			entry.Event = &runtimev1pb.TopicEventBulkRequestEntry_CloudEvent{CloudEvent: &runtimev1pb.TopicEventCERequest{
				Id:              ce.ID,
				Source:          ce.Source,
				Type:            ce.Type,
				SpecVersion:     ce.SpecVersion,
				DataContentType: ce.DataContentType,
				Data:            ce.Data,
				Extensions:      ext,
			}}
		}
		sent[e.EntryID] = true
		req.Entries = append(req.Entries, entry)
	}
	out := make(map[string]EventStatus, len(ev.Entries))
	if len(req.Entries) == 0 {
		return out, nil
	}
	resp, err := g.alpha.OnBulkTopicEventAlpha1(ctx, req)
	if err != nil {
		switch c := status.Code(err); {
		case ctx.Err() != nil:
		case c == codes.Unimplemented:
			return g.deliverEach(ctx, ev, out)
		case c == codes.NotFound:
			for id := range sent {
				out[id] = StatusDrop
			}
			return out, nil
		}
		return nil, g.callErr(ctx, "deliver bulk event "+req.Id+" on topic "+ev.Topic+" to", err)
	}
	for _, s := range resp.GetStatuses() {
		if !sent[s.GetEntryId()] {
			continue
		}
		st, err := topicStatus(s.GetStatus())
		if err != nil {
			st = StatusRetry
		}
		out[s.GetEntryId()] = st
	}
	return out, nil
}

// deliverEach is DeliverBulk for apps without the bulk callback.
func (g *GRPC) deliverEach(ctx context.Context, ev *BulkEvent, out map[string]EventStatus) (map[string]EventStatus, error) {
	slog.DebugContext(ctx, "grpc app channel: app has no bulk callback; delivering one by one",
		"topic", ev.Topic, "entries", len(ev.Entries))
	for _, e := range ev.Entries {
		md := e.Metadata
		if len(ev.Metadata) > 0 {
			md = make(map[string]string, len(ev.Metadata)+len(e.Metadata))
			for k, v := range ev.Metadata {
				md[k] = v
			}
			for k, v := range e.Metadata {
				md[k] = v
			}
		}
		st, err := g.DeliverEvent(ctx, &TopicEvent{
			Path:       ev.Path,
			PubsubName: ev.PubsubName,
			Topic:      ev.Topic,
			CloudEvent: e.Event,
			Raw:        ev.Raw,
			Metadata:   md,
		})
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrAppUnreachable) {
				return out, err
			}
			if errors.Is(err, cloudevent.ErrInvalid) {
				continue // left out: retried, as in the bulk path
			}
			slog.DebugContext(ctx, "grpc app channel: event delivery failed", "topic", ev.Topic, "entry", e.EntryID, "err", err)
		}
		out[e.EntryID] = st
	}
	return out, nil
}

// BindingSubscribed implements Channel with AppCallback.ListInputBindings.
// The list is fetched once, on the first call that succeeds, and then
// served from memory: Dapr also reads it once at startup. An app without
// the method (Unimplemented) takes no bindings.
func (g *GRPC) BindingSubscribed(ctx context.Context, name string) (bool, error) {
	select {
	case g.bindingsSem <- struct{}{}:
	case <-ctx.Done():
		return false, fmt.Errorf("list input bindings of %s: %w", g.addr, ctx.Err())
	}
	defer func() { <-g.bindingsSem }()
	if g.bindings == nil {
		resp, err := g.app.ListInputBindings(ctx, &emptypb.Empty{})
		switch {
		case err == nil:
			g.bindings = make(map[string]struct{}, len(resp.GetBindings()))
			for _, b := range resp.GetBindings() {
				g.bindings[b] = struct{}{}
			}
		case status.Code(err) == codes.Unimplemented && ctx.Err() == nil:
			g.bindings = map[string]struct{}{}
		default:
			return false, g.callErr(ctx, "list input bindings of", err)
		}
	}
	_, ok := g.bindings[name]
	return ok, nil
}

// DeliverBinding implements Channel with AppCallback.OnBindingEvent and
// returns the app's reply data.
func (g *GRPC) DeliverBinding(ctx context.Context, ev *BindingEvent) ([]byte, error) {
	resp, err := g.DeliverBindingFull(ctx, ev)
	if err != nil {
		return nil, err
	}
	return resp.GetData(), nil
}

// DeliverBindingFull sends an input binding event like DeliverBinding and
// returns the app's whole answer, including the state to save (StoreName,
// States), the output bindings to forward Data to (To) and the requested
// Concurrency, which only gRPC apps can express. The metadata travels both
// in the request and as gRPC metadata, as in Dapr. Any gRPC error is a
// failure; Unavailable wraps ErrAppUnreachable.
func (g *GRPC) DeliverBindingFull(ctx context.Context, ev *BindingEvent) (*runtimev1pb.BindingEventResponse, error) {
	resp, err := g.app.OnBindingEvent(withMD(ctx, eventMD(ev.Metadata)), &runtimev1pb.BindingEventRequest{
		Name:     ev.Name,
		Data:     ev.Data,
		Metadata: ev.Metadata,
	})
	if err != nil {
		return nil, g.callErr(ctx, "deliver input binding "+ev.Name+" event to", err)
	}
	return resp, nil
}

// Health implements Channel with AppCallbackHealthCheck.HealthCheck: an OK
// answer is healthy, any error unhealthy (Unavailable wraps
// ErrAppUnreachable). The health service is optional in Dapr's SDKs, so an
// app that answers Unimplemented is judged by its connection instead:
// healthy once the connection is READY, waiting at most until ctx's
// deadline or two seconds.
func (g *GRPC) Health(ctx context.Context) error {
	_, err := g.health.HealthCheck(ctx, &emptypb.Empty{})
	if err == nil {
		return nil
	}
	if status.Code(err) != codes.Unimplemented || ctx.Err() != nil {
		return fmt.Errorf("app health check: %w", g.callErr(ctx, "health check of", err))
	}
	return g.waitReady(ctx)
}

// waitReady waits for the connection to the app to be READY.
func (g *GRPC) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyWait)
	defer cancel()
	for {
		s := g.conn.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.Idle:
			g.conn.Connect()
		case connectivity.Shutdown:
			return fmt.Errorf("%w: %s: channel closed", ErrAppUnreachable, g.addr)
		}
		if !g.conn.WaitForStateChange(ctx, s) {
			return fmt.Errorf("%w: %s: connection %s: %w", ErrAppUnreachable, g.addr, s, ctx.Err())
		}
	}
}

// Close implements Channel: it closes the connection; calls in flight fail.
func (g *GRPC) Close() error {
	if err := g.conn.Close(); err != nil {
		return fmt.Errorf("close grpc app channel %s: %w", g.addr, err)
	}
	return nil
}

// Conn is the connection to the app, for proxying its own gRPC services.
func (g *GRPC) Conn() *grpc.ClientConn { return g.conn }
