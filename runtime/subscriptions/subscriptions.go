// Package subscriptions keeps the app's topic subscriptions running: it
// collects them from the app and from Subscription YAML, subscribes to the
// pubsub components, routes each event with CEL rules, delivers CloudEvents
// to the app with retries, dead-letters what keeps failing, and batches
// events for bulk subscriptions.
package subscriptions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/google/uuid"

	"mecha/components"
	"mecha/internal/backoff"
	"mecha/runtime/appchannel"
	"mecha/runtime/cloudevent"
	"mecha/runtime/inflight"
	"mecha/runtime/metrics"
	"mecha/runtime/resiliency"
)

// Sink receives events: the app channel, or a streaming gRPC subscriber.
type Sink interface {
	DeliverEvent(ctx context.Context, ev *appchannel.TopicEvent) (appchannel.EventStatus, error)
	DeliverBulk(ctx context.Context, ev *appchannel.BulkEvent) (map[string]appchannel.EventStatus, error)
}

// Retry is the delivery retry policy applied before an event is
// dead-lettered or handed back to the component.
type Retry struct {
	// MaxRetries after the first attempt.
	MaxRetries int
	// Initial backoff, doubled each retry up to Max.
	Initial, Max time.Duration
}

// DefaultRetry retries three times: after about 100ms, 200ms and 400ms
// (±20% jitter).
var DefaultRetry = Retry{MaxRetries: 3, Initial: 100 * time.Millisecond, Max: 2 * time.Second}

// errRetry is the app's RETRY answer.
var errRetry = errors.New("app asked to retry the event")

// Info describes an active subscription for the metadata API.
type Info struct {
	PubsubName      string
	Topic           string
	DeadLetterTopic string
	Metadata        map[string]string
	Rules           []appchannel.Rule
	// Type is DECLARATIVE, PROGRAMMATIC or STREAMING, as Dapr reports it.
	Type string
}

// Options configure a Manager.
type Options struct {
	AppID      string
	Components components.Source
	Metrics    *metrics.Metrics
	Logger     *slog.Logger
	// Retry applies to deliveries whose pubsub has no inbound resiliency
	// policy.
	Retry Retry
	// Resiliency holds the components' inbound policies: a pubsub's
	// policy decides how its deliveries are retried and timed out.
	Resiliency *resiliency.Store
}

// Manager owns the running subscriptions.
type Manager struct {
	opts Options
	log  *slog.Logger

	// inflight counts deliveries under way, for graceful drain.
	inflight inflight.Tracker
	// deliverCtx is what deliveries run under, instead of the component's
	// subscription context: stopping a subscription (drain, hot reload)
	// must not abort a delivery under way. Drain cancels it once its grace
	// period is over.
	deliverCtx    context.Context
	deliverCancel context.CancelFunc

	// mu guards the fields below.
	mu           sync.Mutex
	sink         Sink
	declarative  []appchannel.Subscription
	programmatic []appchannel.Subscription
	active       map[string]*running // key: pubsub/topic/type
	draining     bool
}

type running struct {
	sub    appchannel.Subscription
	typ    string
	sink   Sink
	cancel context.CancelFunc
	// sig identifies the declaration and the component instance; a change
	// of either restarts the subscription.
	sig string
	// ps is the component instance a streaming subscription reads, and
	// ended is closed when a reload replaces or removes it.
	ps    any
	ended chan struct{}
}

// New returns a manager with no subscriptions.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Retry.MaxRetries == 0 && opts.Retry.Initial == 0 {
		opts.Retry = DefaultRetry
	}
	m := &Manager{opts: opts, log: opts.Logger, active: map[string]*running{}}
	m.deliverCtx, m.deliverCancel = context.WithCancel(context.Background())
	return m
}

// declared is one Subscription document: v1alpha1 (route) and v2alpha1
// (routes) share this shape.
type declared struct {
	APIVersion string                `json:"apiVersion"`
	Kind       string                `json:"kind"`
	Metadata   components.ObjectMeta `json:"metadata"`
	Spec       struct {
		PubsubName      string                    `json:"pubsubname"`
		Topic           string                    `json:"topic"`
		Route           string                    `json:"route,omitempty"`
		Routes          *appchannel.Routes        `json:"routes,omitempty"`
		Metadata        map[string]string         `json:"metadata,omitempty"`
		DeadLetterTopic string                    `json:"deadLetterTopic,omitempty"`
		BulkSubscribe   *appchannel.BulkSubscribe `json:"bulkSubscribe,omitempty"`
	} `json:"spec"`
	Scopes []string `json:"scopes,omitempty"`
}

// ParseDeclarative decodes the Subscription documents among docs and
// validates them; errors name the file and field.
func ParseDeclarative(docs []components.Document, appID string) ([]appchannel.Subscription, error) {
	var out []appchannel.Subscription
	for _, d := range docs {
		if d.Kind != "Subscription" {
			continue
		}
		var s declared
		dec := json.NewDecoder(strings.NewReader(string(d.Raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalidSubscription, d.Where(), strings.TrimPrefix(err.Error(), "json: "))
		}
		sub := appchannel.Subscription{
			PubsubName: s.Spec.PubsubName, Topic: s.Spec.Topic, Route: s.Spec.Route, Routes: s.Spec.Routes,
			Metadata: s.Spec.Metadata, DeadLetterTopic: s.Spec.DeadLetterTopic, BulkSubscribe: s.Spec.BulkSubscribe,
		}
		switch {
		case sub.PubsubName == "":
			return nil, fmt.Errorf("%w: %s: subscription %q: spec.pubsubname: must be set", ErrInvalidSubscription, d.Where(), s.Metadata.Name)
		case sub.Topic == "":
			return nil, fmt.Errorf("%w: %s: subscription %q: spec.topic: must be set", ErrInvalidSubscription, d.Where(), s.Metadata.Name)
		}
		if _, err := newRouter(&sub); err != nil {
			return nil, fmt.Errorf("%w: %s: subscription %q: spec.%v", ErrInvalidSubscription, d.Where(), s.Metadata.Name, err)
		}
		if len(s.Scopes) > 0 && !contains(s.Scopes, appID) {
			continue
		}
		out = append(out, sub)
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// SetDeclarative replaces the declarative subscriptions.
func (m *Manager) SetDeclarative(subs []appchannel.Subscription) {
	m.mu.Lock()
	m.declarative = subs
	m.mu.Unlock()
}

// SetApp sets the sink for declarative and programmatic subscriptions and
// the app's programmatic subscriptions.
func (m *Manager) SetApp(sink Sink, programmatic []appchannel.Subscription) {
	m.mu.Lock()
	m.sink = sink
	m.programmatic = programmatic
	m.mu.Unlock()
}

// Sync starts, restarts or stops subscriptions so that the running set
// matches the declarations and the loaded components. Call it after the
// app is up and after every component reload.
func (m *Manager) Sync(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.draining || m.sink == nil {
		return
	}
	snap := m.opts.Components.Snapshot()
	want := map[string]*running{}
	add := func(subs []appchannel.Subscription, typ string) {
		for _, s := range subs {
			key := s.PubsubName + "/" + s.Topic
			if _, dup := want[key]; dup {
				m.log.Warn("duplicate subscription ignored", "pubsub", s.PubsubName, "topic", s.Topic, "type", typ)
				continue
			}
			ps, ok := snap.PubSub[s.PubsubName]
			if !ok {
				m.log.Warn("subscription to a pubsub that is not loaded", "pubsub", s.PubsubName, "topic", s.Topic)
				continue
			}
			decl, _ := json.Marshal(s)
			want[key] = &running{sub: s, typ: typ, sink: m.sink, sig: fmt.Sprintf("%s|%p", decl, ps.PS)}
		}
	}
	add(m.declarative, "DECLARATIVE")
	add(m.programmatic, "PROGRAMMATIC")
	for key, r := range m.active {
		if r.typ == "STREAMING" {
			// A stream cannot move to a new component instance by
			// itself: end it, and the client subscribes again.
			if ps, ok := snap.PubSub[r.sub.PubsubName]; !ok || any(ps.PS) != r.ps {
				r.cancel()
				close(r.ended)
				delete(m.active, key)
			}
			continue
		}
		if w, ok := want[key]; !ok || w.sig != r.sig {
			r.cancel()
			delete(m.active, key)
		}
	}
	for key, w := range want {
		if _, ok := m.active[key]; ok {
			continue
		}
		if err := m.startLocked(ctx, key, w); err != nil {
			m.log.Error("subscription not started", "pubsub", w.sub.PubsubName, "topic", w.sub.Topic, "err", err)
		}
	}
}

func (m *Manager) startLocked(ctx context.Context, key string, r *running) error {
	ps, ok := m.opts.Components.Snapshot().PubSub[r.sub.PubsubName]
	if !ok {
		return fmt.Errorf("pubsub %q is not loaded", r.sub.PubsubName)
	}
	rt, err := newRouter(&r.sub)
	if err != nil {
		return fmt.Errorf("%w: pubsub %s topic %s: %v", ErrInvalidSubscription, r.sub.PubsubName, r.sub.Topic, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	d := &deliverer{m: m, sub: r.sub, router: rt, sink: r.sink, ps: ps}
	// Stopping refuses new events at once (the component may call the
	// handler until it has unsubscribed); deliveries under way finish.
	r.cancel = func() {
		d.stopped.Store(true)
		cancel()
	}
	req := pubsub.SubscribeRequest{Topic: r.sub.Topic, Metadata: r.sub.Metadata}
	if bs := r.sub.BulkSubscribe; bs != nil && bs.Enabled {
		req.BulkSubscribeConfig = pubsub.BulkSubscribeConfig{MaxMessagesCount: int(bs.MaxMessagesCount), MaxAwaitDurationMs: int(bs.MaxAwaitDurationMs)}
		if req.BulkSubscribeConfig.MaxMessagesCount <= 0 {
			req.BulkSubscribeConfig.MaxMessagesCount = 100
		}
		if req.BulkSubscribeConfig.MaxAwaitDurationMs <= 0 {
			req.BulkSubscribeConfig.MaxAwaitDurationMs = 1000
		}
		if ps.BulkSub != nil {
			err = ps.BulkSub.BulkSubscribe(sctx, req, d.handleBulk)
		} else {
			b := newBatcher(sctx, req.BulkSubscribeConfig, d.handleBulk)
			err = ps.PS.Subscribe(sctx, req, b.handle)
		}
	} else {
		err = ps.PS.Subscribe(sctx, req, d.handle)
	}
	if err != nil {
		cancel()
		return fmt.Errorf("subscribing to %s/%s: %w", r.sub.PubsubName, r.sub.Topic, err)
	}
	m.active[key] = r
	m.log.Info("subscribed", "pubsub", r.sub.PubsubName, "topic", r.sub.Topic, "type", r.typ, "dead_letter_topic", r.sub.DeadLetterTopic)
	return nil
}

// AddStream subscribes a streaming subscriber (gRPC
// SubscribeTopicEventsAlpha1). It returns the function that removes it
// and a channel closed when a component reload ended the subscription.
func (m *Manager) AddStream(ctx context.Context, sub appchannel.Subscription, sink Sink) (func(), <-chan struct{}, error) {
	if sub.Route == "" && sub.Routes == nil {
		sub.Route = "/"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.draining {
		return nil, nil, fmt.Errorf("runtime is shutting down")
	}
	key := sub.PubsubName + "/" + sub.Topic + "/stream/" + uuid.NewString()
	r := &running{sub: sub, typ: "STREAMING", sink: sink, ended: make(chan struct{})}
	if ps, ok := m.opts.Components.Snapshot().PubSub[sub.PubsubName]; ok {
		r.ps = ps.PS
	}
	if err := m.startLocked(ctx, key, r); err != nil {
		return nil, nil, err
	}
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if a, ok := m.active[key]; ok {
			a.cancel()
			delete(m.active, key)
		}
	}, r.ended, nil
}

// List describes the active subscriptions, sorted by pubsub and topic.
func (m *Manager) List() []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Info, 0, len(m.active))
	for _, r := range m.active {
		info := Info{PubsubName: r.sub.PubsubName, Topic: r.sub.Topic, DeadLetterTopic: r.sub.DeadLetterTopic, Metadata: r.sub.Metadata, Type: r.typ}
		if r.sub.Routes != nil {
			info.Rules = append(info.Rules, r.sub.Routes.Rules...)
			if r.sub.Routes.Default != "" {
				info.Rules = append(info.Rules, appchannel.Rule{Path: r.sub.Routes.Default})
			}
		}
		if r.sub.Route != "" {
			info.Rules = append(info.Rules, appchannel.Rule{Path: r.sub.Route})
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].PubsubName != out[j].PubsubName {
			return out[i].PubsubName < out[j].PubsubName
		}
		return out[i].Topic < out[j].Topic
	})
	return out
}

// Drain stops every subscription, so no new event is taken, and waits for
// the deliveries under way to finish or for ctx to end.
func (m *Manager) Drain(ctx context.Context) {
	m.mu.Lock()
	m.draining = true
	for key, r := range m.active {
		r.cancel()
		delete(m.active, key)
	}
	m.mu.Unlock()
	if !m.inflight.Close(ctx) {
		m.log.Warn("shutdown: deliveries still in flight at the drain deadline")
	}
	m.deliverCancel()
}

// errDraining is returned to components for events that arrive after Drain
// began; they are not acked, so the component keeps them.
var errDraining = errors.New("subscription stopped (shutdown, pause or reload); event not taken")

// deliverer runs the delivery of one subscription.
type deliverer struct {
	m      *Manager
	sub    appchannel.Subscription
	router *router
	sink   Sink
	ps     *components.PubSub
	// stopped is set when the subscription is stopped (pause, drain,
	// reload): events that still arrive are refused, not acked.
	stopped atomic.Bool
}

// prepare turns a component message into the CloudEvent to deliver and
// finds its route. Raw payloads (metadata rawPayload=true) are wrapped in a
// CloudEvent with data_base64 first, as Dapr does.
func (d *deliverer) prepare(data []byte, topic string, contentType *string) (ce []byte, path string, ev *cloudevent.Event, err error) {
	ce = data
	switch raw := isTrue(d.sub.Metadata["rawPayload"]); {
	case raw, !cloudevent.IsEnvelope(data):
		// A raw-payload subscription, or a record without a CloudEvent
		// envelope (from a plain Kafka client): wrapped as Dapr wraps
		// raw payloads, with the record's content type when it has one.
		ct := "application/octet-stream"
		if !raw && contentType != nil && *contentType != "" && *contentType != cloudevent.ContentType {
			ct = *contentType
		}
		ce = cloudevent.Append(nil, &cloudevent.Envelope{Source: d.m.opts.AppID, Topic: topic, PubsubName: d.sub.PubsubName, ContentType: ct, Data: data})
	}
	if d.router.needsFields() {
		ev, err = cloudevent.Parse(ce)
		if err != nil {
			return nil, "", nil, err
		}
		fields, err := ev.Fields()
		if err != nil {
			return nil, "", nil, err
		}
		path, err = d.router.route(fields)
		return ce, path, ev, err
	}
	return ce, d.router.def, nil, nil
}

func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "true", "1", "yes":
		return true
	}
	return false
}

// handle is the component's per-message handler. Returning nil acks the
// message; an error hands it back to the component for redelivery.
func (d *deliverer) handle(_ context.Context, msg *pubsub.NewMessage) error {
	if d.stopped.Load() || !d.m.inflight.Enter() {
		return errDraining
	}
	defer d.m.inflight.Leave()
	ctx := d.m.deliverCtx
	start := time.Now()
	ct := msg.ContentType
	if ct == nil {
		// A Kafka record's own content type travels as a header.
		for _, k := range []string{"content-type", "Content-Type", "contentType"} {
			if v, ok := msg.Metadata[k]; ok {
				ct = &v
				break
			}
		}
	}
	ce, path, ev, err := d.prepare(msg.Data, msg.Topic, ct)
	if err != nil {
		// An event that cannot be read will never be deliverable.
		d.m.log.Warn("dropping undecodable event", "pubsub", d.sub.PubsubName, "topic", msg.Topic, "err", err)
		d.deadLetter(ctx, msg.Data)
		d.observe("drop", start)
		return nil
	}
	if cloudevent.Expired(ce, time.Now()) {
		// Published with ttlInSeconds on a component without message
		// TTL: the runtime enforces it, as Dapr does.
		d.m.log.Debug("expired event dropped", "pubsub", d.sub.PubsubName, "topic", msg.Topic)
		d.observe("expired", start)
		return nil
	}
	if path == "" {
		// As in Dapr: an event no rule routes is dropped, to the dead
		// letter topic when there is one.
		d.m.log.Debug("no route matched; event dropped", "pubsub", d.sub.PubsubName, "topic", msg.Topic)
		d.deadLetter(ctx, ce)
		d.observe("drop", start)
		return nil
	}
	te := &appchannel.TopicEvent{Path: strings.TrimPrefix(path, "/"), PubsubName: d.sub.PubsubName, Topic: msg.Topic, CloudEvent: ce, Metadata: msg.Metadata}
	if ev != nil {
		te.TraceParent = ev.TraceParent
	}
	dropped := false
	err = d.withRetries(ctx, func(ctx context.Context) error {
		st, err := d.sink.DeliverEvent(ctx, te)
		switch {
		case err == nil && st == appchannel.StatusSuccess:
			return nil
		case err == nil && st == appchannel.StatusDrop:
			dropped = true
			return nil
		case err == nil:
			err = errRetry
		}
		d.observe("retry", start)
		return err
	})
	switch {
	case err == nil && dropped:
		// Dropped events go to the dead letter topic when there is
		// one (Dapr 1.14 does the same).
		d.m.log.Warn("app dropped event", "pubsub", d.sub.PubsubName, "topic", msg.Topic, "route", path)
		d.deadLetter(ctx, ce)
		d.observe("drop", start)
		return nil
	case err == nil:
		d.observe("success", start)
		return nil
	}
	if ctx.Err() != nil || !appAnswered(err) {
		// The app could not be reached (or the runtime is stopping): the
		// event goes back to the component, to come again later.
		d.m.log.Warn("delivery failed; the event comes again", "pubsub", d.sub.PubsubName, "topic", msg.Topic, "route", path, "err", err)
		return err
	}
	// The app took the event and failed it every time: a poison event.
	// It must not hold its partition forever.
	if d.sub.DeadLetterTopic != "" {
		d.m.log.Warn("delivery failed after retries; to the dead-letter topic", "pubsub", d.sub.PubsubName, "topic", msg.Topic, "route", path,
			"dead_letter_topic", d.sub.DeadLetterTopic, "err", err)
		d.deadLetter(ctx, ce)
		d.observe("deadletter", start)
		return nil
	}
	d.m.log.Error("delivery failed after retries; event dropped (give the subscription a deadLetterTopic to keep such events)", "pubsub", d.sub.PubsubName,
		"topic", msg.Topic, "route", path, "err", err)
	d.observe("drop", start)
	return nil
}

// appAnswered reports whether a failed delivery reached the app (which
// answered with an error or RETRY), rather than failing on the way.
func appAnswered(err error) bool {
	return err != nil && !errors.Is(err, appchannel.ErrAppUnreachable) && !errors.Is(err, errDraining)
}

// withRetries runs a delivery under its pubsub's inbound resiliency
// policy, or else the manager's Retry with jittered backoff.
func (d *deliverer) withRetries(ctx context.Context, op func(context.Context) error) error {
	if rs := d.m.opts.Resiliency; rs != nil {
		if r := rs.ForComponent(d.sub.PubsubName, "Pubsub", resiliency.Inbound); !r.Passthrough() {
			return r.Do(ctx, op)
		}
	}
	b := backoff.Policy{Initial: d.m.opts.Retry.Initial, Max: d.m.opts.Retry.Max}.New()
	for attempt := 0; ; attempt++ {
		err := op(ctx)
		if err == nil || attempt >= d.m.opts.Retry.MaxRetries || ctx.Err() != nil {
			return err
		}
		if b.Wait(ctx) != nil {
			return err
		}
	}
}

func (d *deliverer) observe(status string, start time.Time) {
	if d.m.opts.Metrics != nil {
		d.m.opts.Metrics.Delivery("pubsub", d.sub.PubsubName, status, time.Since(start))
	}
}

// deadLetter publishes the event to the subscription's dead-letter topic on
// the same pubsub.
func (d *deliverer) deadLetter(ctx context.Context, data []byte) {
	if d.sub.DeadLetterTopic == "" {
		return
	}
	ct := cloudevent.ContentType
	if err := d.ps.PS.Publish(context.WithoutCancel(ctx), &pubsub.PublishRequest{Data: data, PubsubName: d.sub.PubsubName, Topic: d.sub.DeadLetterTopic, ContentType: &ct}); err != nil {
		d.m.log.Error("publishing to dead-letter topic failed", "pubsub", d.sub.PubsubName, "topic", d.sub.DeadLetterTopic, "err", err)
	}
}

// handleBulk delivers a batch and reports a result per entry; failed
// entries are retried, then dead-lettered.
func (d *deliverer) handleBulk(_ context.Context, msg *pubsub.BulkMessage) ([]pubsub.BulkSubscribeResponseEntry, error) {
	if d.stopped.Load() || !d.m.inflight.Enter() {
		return nil, errDraining
	}
	defer d.m.inflight.Leave()
	ctx := d.m.deliverCtx
	start := time.Now()
	results := make(map[string]error, len(msg.Entries))
	byRoute := map[string]*appchannel.BulkEvent{}
	ceByID := map[string][]byte{}
	for _, e := range msg.Entries {
		ce, path, _, err := d.prepare(e.Event, msg.Topic, nil)
		if err != nil {
			d.deadLetter(ctx, e.Event)
			results[e.EntryId] = nil
			continue
		}
		if path == "" {
			d.deadLetter(ctx, ce)
			results[e.EntryId] = nil
			continue
		}
		be := byRoute[path]
		if be == nil {
			be = &appchannel.BulkEvent{ID: uuid.NewString(), Path: strings.TrimPrefix(path, "/"), PubsubName: d.sub.PubsubName, Topic: msg.Topic, Metadata: msg.Metadata}
			byRoute[path] = be
		}
		ct := e.ContentType
		if ct == "" {
			ct = cloudevent.ContentType
		}
		be.Entries = append(be.Entries, appchannel.BulkEntry{EntryID: e.EntryId, Event: ce, ContentType: ct, Metadata: e.Metadata})
		ceByID[e.EntryId] = ce
	}
	for _, be := range byRoute {
		pending := be
		err := d.withRetries(ctx, func(ctx context.Context) error {
			statuses, err := d.sink.DeliverBulk(ctx, pending)
			var retry []appchannel.BulkEntry
			for _, e := range pending.Entries {
				st, ok := statuses[e.EntryID]
				switch {
				case err == nil && ok && st == appchannel.StatusSuccess:
					results[e.EntryID] = nil
					d.observe("success", start)
				case err == nil && ok && st == appchannel.StatusDrop:
					d.deadLetter(ctx, ceByID[e.EntryID])
					results[e.EntryID] = nil
					d.observe("drop", start)
				default:
					retry = append(retry, e)
				}
			}
			if len(retry) == 0 {
				return nil
			}
			next := *pending
			next.Entries = retry
			pending = &next
			if err == nil {
				err = errRetry
			}
			return err
		})
		if err == nil {
			continue
		}
		for _, e := range pending.Entries {
			if d.sub.DeadLetterTopic != "" && ctx.Err() == nil {
				d.deadLetter(ctx, ceByID[e.EntryID])
				results[e.EntryID] = nil
				d.observe("deadletter", start)
			} else {
				results[e.EntryID] = fmt.Errorf("delivery of entry %s failed: %w", e.EntryID, err)
				d.observe("retry", start)
			}
		}
	}
	out := make([]pubsub.BulkSubscribeResponseEntry, 0, len(msg.Entries))
	var anyErr error
	for _, e := range msg.Entries {
		err := results[e.EntryId]
		if err != nil {
			anyErr = err
		}
		out = append(out, pubsub.BulkSubscribeResponseEntry{EntryId: e.EntryId, Error: err})
	}
	return out, anyErr
}

// Pause stops the app's subscriptions (not streaming ones) without
// draining; the next Sync starts them again. Used while the app is
// unhealthy.
func (m *Manager) Pause() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, r := range m.active {
		if r.typ != "STREAMING" {
			r.cancel()
			delete(m.active, key)
		}
	}
}
