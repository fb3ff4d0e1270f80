// Package blocks implements the Dapr building blocks (state, pub/sub
// publishing, output bindings, secrets) independently of the API they are
// called through. runtime/api/http and runtime/api/grpc translate their
// requests into these calls and render the *apierr.Error values they return.
package blocks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/components-contrib/secretstores"
	"github.com/dapr/components-contrib/state"

	"mecha/components"
	"mecha/runtime/apierr"
	"mecha/runtime/cloudevent"
	"mecha/runtime/resiliency"
)

// Blocks serves the building blocks for one app.
type Blocks struct {
	// AppID is the app these blocks serve: state keys are prefixed with it
	// and it is the source of published CloudEvents.
	AppID string
	// Components is the app's view of the components.
	Components components.Source
	Log        *slog.Logger
	// Resiliency holds the components' outbound policies (timeouts,
	// retries, circuit breakers, …); nil applies none.
	Resiliency *resiliency.Store
}

// Dapr's names of the component levels, as default policies use them.
const (
	levelState   = "Statestore"
	levelPubSub  = "Pubsub"
	levelBinding = "Binding"
	levelSecret  = "Secretstore"
)

// policy is the named component's outbound resiliency policy, or nil
// when it has none.
func (b *Blocks) policy(name, level string) *resiliency.Runner {
	if b.Resiliency == nil {
		return nil
	}
	if r := b.Resiliency.ForComponent(name, level, resiliency.Outbound); !r.Passthrough() {
		return r
	}
	return nil
}

// outbound runs op, a call into the named component, under the
// component's outbound resiliency policy.
func (b *Blocks) outbound(ctx context.Context, name, level string, op func(context.Context) error) error {
	if r := b.policy(name, level); r != nil {
		return r.Do(ctx, permanentCallersFault(op))
	}
	return op(ctx)
}

// permanentCallersFault marks the errors the request caused as not worth
// a retry: sending it again cannot help.
func permanentCallersFault(op func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		err := op(ctx)
		if callersFault(err) {
			return resiliency.Permanent(err)
		}
		return err
	}
}

// callersFault reports whether a component's error was caused by the
// request: an ETag mismatch or an invalid input.
func callersFault(err error) bool {
	if err == nil {
		return false
	}
	var ee *state.ETagError
	var in interface{ InvalidInput() bool }
	return errors.As(err, &ee) || errors.As(err, &in) && in.InvalidInput()
}

// ---- state ----

// stateStore takes the named store for one call: s.Gate.Leave must be
// called when the call is over, so that a hot reload can wait for it.
func (b *Blocks) stateStore(name string) (*components.StateStore, error) {
	for {
		snap := b.Components.Snapshot()
		if len(snap.State) == 0 {
			return nil, apierr.StateStoresNotConfigured()
		}
		s, ok := snap.State[name]
		if !ok {
			return nil, apierr.StateStoreNotFound(name)
		}
		if s.Gate.Enter() {
			return s, nil
		}
	}
}

// stateErr maps a store error: ETag mismatches and invalid ETags keep their
// own statuses (409 and 400); anything else becomes fallback.
func stateErr(err error, fallback *apierr.Error) error {
	var ee *state.ETagError
	if errors.As(err, &ee) {
		e := *fallback
		switch ee.Kind() {
		case state.ETagMismatch:
			e.HTTP, e.GRPC = 409, 10 // codes.Aborted
			return &e
		case state.ETagInvalid:
			e.HTTP, e.GRPC = 400, 3 // codes.InvalidArgument
			return &e
		}
	}
	var ke *components.KeyPrefixInvalid
	if errors.As(err, &ke) {
		return apierr.Malformed("%v", ke)
	}
	// Stores mark errors the request caused (an oversize value, a bad
	// TTL): those are the caller's, 400 / InvalidArgument.
	var in interface{ InvalidInput() bool }
	if errors.As(err, &in) && in.InvalidInput() {
		e := *fallback
		e.HTTP, e.GRPC = 400, 3 // codes.InvalidArgument
		return &e
	}
	return fallback
}

// GetState reads one key.
func (b *Blocks) GetState(ctx context.Context, store, key, consistency string, meta map[string]string) (*state.GetResponse, error) {
	s, err := b.stateStore(store)
	if err != nil {
		return nil, err
	}
	defer s.Gate.Leave()
	k, err := s.Key(key)
	if err != nil {
		return nil, apierr.Malformed("%v", err)
	}
	req := &state.GetRequest{Key: k, Metadata: meta, Options: state.GetStateOption{Consistency: consistency}}
	var resp *state.GetResponse
	if r := b.policy(store, levelState); r == nil {
		// The hot path builds no closure.
		resp, err = s.Store.Get(ctx, req)
	} else {
		var out *state.GetResponse
		st := s.Store
		err = r.Do(ctx, permanentCallersFault(func(ctx context.Context) (err error) {
			out, err = st.Get(ctx, req)
			return err
		}))
		resp = out
	}
	if err != nil {
		return nil, stateErr(err, apierr.StateGet(key, store, err))
	}
	return resp, nil
}

// SaveState writes the items, one Set for a single item and BulkSet for
// several. Keys are given as the app sees them; SaveState rewrites them in
// place to the stored form, so the slice must not be reused.
func (b *Blocks) SaveState(ctx context.Context, store string, items []state.SetRequest) error {
	s, err := b.stateStore(store)
	if err != nil {
		return err
	}
	defer s.Gate.Leave()
	for i := range items {
		if items[i].Key == "" {
			return apierr.Malformed("failed saving state in state store %s: key at index %d is empty", store, i)
		}
		k, err := s.Key(items[i].Key)
		if err != nil {
			return apierr.Malformed("%v", err)
		}
		items[i].Key = k
	}
	switch len(items) {
	case 0:
		return nil
	case 1:
		if r := b.policy(store, levelState); r == nil {
			err = s.Store.Set(ctx, &items[0]) // the hot path builds no closure
		} else {
			st, item := s.Store, &items[0]
			err = r.Do(ctx, permanentCallersFault(func(ctx context.Context) error { return st.Set(ctx, item) }))
		}
	default:
		err = b.outbound(ctx, store, levelState, func(ctx context.Context) error { return s.Store.BulkSet(ctx, items, state.BulkStoreOpts{}) })
	}
	if err != nil {
		return stateErr(err, apierr.StateSave(store, err))
	}
	return nil
}

// DeleteState deletes one key, with an optional ETag.
func (b *Blocks) DeleteState(ctx context.Context, store string, req *state.DeleteRequest) error {
	s, err := b.stateStore(store)
	if err != nil {
		return err
	}
	defer s.Gate.Leave()
	orig := req.Key
	if req.Key, err = s.Key(req.Key); err != nil {
		return apierr.Malformed("%v", err)
	}
	if err := b.outbound(ctx, store, levelState, func(ctx context.Context) error { return s.Store.Delete(ctx, req) }); err != nil {
		return stateErr(err, apierr.StateDelete(orig, err))
	}
	return nil
}

// DeleteBulkState deletes several keys.
func (b *Blocks) DeleteBulkState(ctx context.Context, store string, reqs []state.DeleteRequest) error {
	s, err := b.stateStore(store)
	if err != nil {
		return err
	}
	defer s.Gate.Leave()
	for i := range reqs {
		if reqs[i].Key, err = s.Key(reqs[i].Key); err != nil {
			return apierr.Malformed("%v", err)
		}
	}
	if err := b.outbound(ctx, store, levelState, func(ctx context.Context) error { return s.Store.BulkDelete(ctx, reqs, state.BulkStoreOpts{}) }); err != nil {
		return stateErr(err, apierr.StateDelete("(bulk)", err))
	}
	return nil
}

// BulkGetState reads several keys. Per-key failures are reported in the
// items; keys come back as the app sees them.
func (b *Blocks) BulkGetState(ctx context.Context, store string, keys []string, parallelism int, meta map[string]string) ([]state.BulkGetResponse, error) {
	s, err := b.stateStore(store)
	if err != nil {
		return nil, err
	}
	defer s.Gate.Leave()
	reqs := make([]state.GetRequest, len(keys))
	for i, k := range keys {
		sk, err := s.Key(k)
		if err != nil {
			return nil, apierr.Malformed("%v", err)
		}
		reqs[i] = state.GetRequest{Key: sk, Metadata: meta}
	}
	if len(reqs) == 0 {
		return []state.BulkGetResponse{}, nil
	}
	var resp []state.BulkGetResponse
	err = b.outbound(ctx, store, levelState, func(ctx context.Context) (err error) {
		resp, err = s.Store.BulkGet(ctx, reqs, state.BulkGetOpts{Parallelism: parallelism})
		return err
	})
	if err != nil {
		return nil, apierr.StateBulkGet(store, err)
	}
	for i := range resp {
		resp[i].Key = s.OriginalKey(resp[i].Key)
	}
	return resp, nil
}

// Scanner is implemented by stores that list keys by prefix (state.crux).
type Scanner interface {
	Scan(ctx context.Context, prefix string, limit int) ([]state.BulkGetResponse, error)
}

// ScanState lists the app's keys that start with prefix, sorted, with
// their values: mecha's extension for stores that implement Scanner.
func (b *Blocks) ScanState(ctx context.Context, store, prefix string, limit int) ([]state.BulkGetResponse, error) {
	s, err := b.stateStore(store)
	if err != nil {
		return nil, err
	}
	defer s.Gate.Leave()
	sc, ok := s.Store.(Scanner)
	if !ok {
		return nil, &apierr.Error{Code: "ERR_STATE_STORE_NOT_SUPPORTED", HTTP: 500, GRPC: 12,
			Message: fmt.Sprintf("state store %s does not support scanning keys by prefix", store)}
	}
	if limit < 0 {
		return nil, apierr.Malformed("limit %d must not be negative", limit)
	}
	p, err := s.Key(prefix)
	if err != nil {
		return nil, apierr.Malformed("%v", err)
	}
	var items []state.BulkGetResponse
	err = b.outbound(ctx, store, levelState, func(ctx context.Context) (err error) {
		items, err = sc.Scan(ctx, p, limit)
		return err
	})
	if err != nil {
		return nil, apierr.StateBulkGet(store, err)
	}
	for i := range items {
		items[i].Key = s.OriginalKey(items[i].Key)
	}
	return items, nil
}

// TxOp is one operation of a transaction, as the app sends it.
type TxOp struct {
	// Operation is "upsert" or "delete".
	Operation string
	Set       state.SetRequest    // for upsert
	Delete    state.DeleteRequest // for delete
}

// Transaction runs ops atomically on a transactional store.
func (b *Blocks) Transaction(ctx context.Context, store string, ops []TxOp, meta map[string]string) error {
	s, err := b.stateStore(store)
	if err != nil {
		return err
	}
	defer s.Gate.Leave()
	if s.Txn == nil {
		return apierr.StateNotTransactional(store)
	}
	if s.MultiMaxSize > 0 && len(ops) > s.MultiMaxSize {
		return apierr.StateTooManyTransactions(store, len(ops), s.MultiMaxSize)
	}
	req := &state.TransactionalStateRequest{Metadata: meta, Operations: make([]state.TransactionalStateOperation, 0, len(ops))}
	for i, op := range ops {
		switch strings.ToLower(op.Operation) {
		case string(state.OperationUpsert):
			if op.Set.Key == "" {
				return apierr.Malformed("operations[%d]: key is empty", i)
			}
			if op.Set.Key, err = s.Key(op.Set.Key); err != nil {
				return apierr.Malformed("operations[%d]: %v", i, err)
			}
			req.Operations = append(req.Operations, op.Set)
		case string(state.OperationDelete):
			if op.Delete.Key == "" {
				return apierr.Malformed("operations[%d]: key is empty", i)
			}
			if op.Delete.Key, err = s.Key(op.Delete.Key); err != nil {
				return apierr.Malformed("operations[%d]: %v", i, err)
			}
			req.Operations = append(req.Operations, op.Delete)
		default:
			return apierr.BadRequest("operations[%d]: operation type %q not supported", i, op.Operation)
		}
	}
	if err := b.outbound(ctx, store, levelState, func(ctx context.Context) error { return s.Txn.Multi(ctx, req) }); err != nil {
		return stateErr(err, apierr.StateTransaction(err))
	}
	return nil
}

// ---- pub/sub ----

// PublishRequest is one event to publish.
type PublishRequest struct {
	PubsubName  string
	Topic       string
	Data        []byte
	ContentType string
	Metadata    map[string]string
	TraceParent string
	TraceState  string
}

// pubsub takes the named pubsub for one publish; ps.Gate.Leave must be
// called when it is over.
func (b *Blocks) pubsub(name, topic string) (*components.PubSub, error) {
	if name == "" {
		return nil, apierr.PubSubEmpty()
	}
	for {
		snap := b.Components.Snapshot()
		if len(snap.PubSub) == 0 {
			return nil, apierr.PubSubNotConfigured()
		}
		ps, ok := snap.PubSub[name]
		if !ok {
			return nil, apierr.PubSubNotFound(name)
		}
		if topic == "" {
			return nil, apierr.TopicEmpty(name)
		}
		if ps.Gate.Enter() {
			return ps, nil
		}
	}
}

// Envelope wraps data the way Dapr does before publishing: as is with
// metadata rawPayload=true, completed when the app sent a CloudEvent
// already, wrapped in a new CloudEvent otherwise.
//
// As in Dapr, metadata ttlInSeconds adds an "expiration" attribute when the
// component has no message TTL of its own (the runtime drops expired
// events on delivery), and metadata cloudevent.id, .source, .type,
// .traceparent and .tracestate override those attributes.
func (b *Blocks) Envelope(req *PublishRequest) ([]byte, error) {
	return b.envelope(nil, req)
}

func (b *Blocks) envelope(ps *components.PubSub, req *PublishRequest) ([]byte, error) {
	if isTrue(req.Metadata["rawPayload"]) {
		// Components may keep the data after Publish returns (the
		// in-memory pubsub delivers and retries on other goroutines):
		// never hand them the caller's buffer.
		return bytes.Clone(req.Data), nil
	}
	if strings.HasPrefix(strings.ToLower(req.ContentType), cloudevent.ContentType) {
		out, err := cloudevent.Complete(req.Data, b.AppID, req.Topic, req.PubsubName, req.TraceParent)
		if err != nil {
			return nil, apierr.CloudEventsSer(req.Topic, req.PubsubName, err)
		}
		return out, nil
	}
	env := &cloudevent.Envelope{
		Source: b.AppID, Topic: req.Topic, PubsubName: req.PubsubName, ContentType: req.ContentType,
		TraceParent: req.TraceParent, TraceState: req.TraceState, Data: req.Data,
	}
	if len(req.Metadata) > 0 {
		if v := req.Metadata["ttlInSeconds"]; v != "" {
			secs, err := strconv.ParseInt(v, 10, 64)
			if err != nil || secs <= 0 {
				return nil, apierr.PubSubMetadata(fmt.Errorf("ttlInSeconds %q is not a positive number of seconds", v))
			}
			if ps == nil || !pubsub.FeatureMessageTTL.IsPresent(ps.PS.Features()) {
				env.Expiration = time.Now().UTC().Add(time.Duration(secs) * time.Second).Format(time.RFC3339)
			}
		}
		for key, dst := range map[string]*string{"cloudevent.id": &env.ID, "cloudevent.source": &env.Source,
			"cloudevent.type": &env.Type, "cloudevent.traceparent": &env.TraceParent, "cloudevent.tracestate": &env.TraceState} {
			if v := req.Metadata[key]; v != "" {
				*dst = v
			}
		}
	}
	return cloudevent.Append(make([]byte, 0, len(req.Data)+320), env), nil
}

func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "true", "1", "yes", "y", "on":
		return true
	}
	return false
}

// Publish publishes one event.
func (b *Blocks) Publish(ctx context.Context, req *PublishRequest) error {
	ps, err := b.pubsub(req.PubsubName, req.Topic)
	if err != nil {
		return err
	}
	defer ps.Gate.Leave()
	data, err := b.envelope(ps, req)
	if err != nil {
		return err
	}
	ct := cloudevent.ContentType
	if isTrue(req.Metadata["rawPayload"]) && req.ContentType != "" {
		ct = req.ContentType
	}
	preq := &pubsub.PublishRequest{Data: data, PubsubName: req.PubsubName, Topic: req.Topic, Metadata: req.Metadata, ContentType: &ct}
	if err := b.outbound(ctx, req.PubsubName, levelPubSub, func(ctx context.Context) error { return ps.PS.Publish(ctx, preq) }); err != nil {
		return apierr.PublishFailed(req.Topic, req.PubsubName, err)
	}
	return nil
}

// BulkEntry is one event of a bulk publish.
type BulkEntry struct {
	EntryID     string
	Data        []byte
	ContentType string
	Metadata    map[string]string
}

// FailedEntry reports one entry a bulk publish could not deliver.
type FailedEntry struct {
	EntryID string `json:"entryId"`
	Error   string `json:"error"`
}

// BulkPublish publishes several events to one topic. It returns the entries
// that failed; err is set when the whole request is invalid or failed.
func (b *Blocks) BulkPublish(ctx context.Context, pubsubName, topic string, entries []BulkEntry, meta map[string]string, traceParent string) ([]FailedEntry, error) {
	ps, err := b.pubsub(pubsubName, topic)
	if err != nil {
		return nil, err
	}
	defer ps.Gate.Leave()
	seen := make(map[string]bool, len(entries))
	msgs := make([]pubsub.BulkMessageEntry, len(entries))
	for i, e := range entries {
		if e.EntryID == "" {
			return nil, apierr.PublishEventsSer("entryId is duplicated or not present for entry %d", i)
		}
		if seen[e.EntryID] {
			return nil, apierr.PublishEventsSer("entryId is duplicated or not present for entry %d (%q)", i, e.EntryID)
		}
		seen[e.EntryID] = true
		em := mergeMeta(meta, e.Metadata)
		data, err := b.envelope(ps, &PublishRequest{PubsubName: pubsubName, Topic: topic, Data: e.Data, ContentType: e.ContentType, Metadata: em, TraceParent: traceParent})
		if err != nil {
			return nil, err
		}
		ct := cloudevent.ContentType
		if isTrue(em["rawPayload"]) && e.ContentType != "" {
			ct = e.ContentType
		}
		msgs[i] = pubsub.BulkMessageEntry{EntryId: e.EntryID, Event: data, ContentType: ct, Metadata: e.Metadata}
	}
	if ps.Bulk != nil {
		var res pubsub.BulkPublishResponse
		err := b.outbound(ctx, pubsubName, levelPubSub, func(ctx context.Context) (err error) {
			res, err = ps.Bulk.BulkPublish(ctx, &pubsub.BulkPublishRequest{Entries: msgs, PubsubName: pubsubName, Topic: topic, Metadata: meta})
			return err
		})
		var failed []FailedEntry
		for _, f := range res.FailedEntries {
			msg := "unknown error"
			if f.Error != nil {
				msg = f.Error.Error()
			}
			failed = append(failed, FailedEntry{EntryID: f.EntryId, Error: msg})
		}
		if err != nil && len(failed) == 0 {
			for _, m := range msgs {
				failed = append(failed, FailedEntry{EntryID: m.EntryId, Error: err.Error()})
			}
		}
		return failed, nil
	}
	// No native bulk publish: publish concurrently, in bounded parallelism.
	var mu sync.Mutex
	var failed []FailedEntry
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range msgs {
		wg.Add(1)
		sem <- struct{}{}
		go func(m *pubsub.BulkMessageEntry) {
			defer func() { <-sem; wg.Done() }()
			ct := m.ContentType
			preq := &pubsub.PublishRequest{Data: m.Event, PubsubName: pubsubName, Topic: topic, Metadata: mergeMeta(meta, m.Metadata), ContentType: &ct}
			err := b.outbound(ctx, pubsubName, levelPubSub, func(ctx context.Context) error { return ps.PS.Publish(ctx, preq) })
			if err != nil {
				mu.Lock()
				failed = append(failed, FailedEntry{EntryID: m.EntryId, Error: err.Error()})
				mu.Unlock()
			}
		}(&msgs[i])
	}
	wg.Wait()
	return failed, nil
}

func mergeMeta(a, b map[string]string) map[string]string {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// ---- bindings ----

// InvokeBinding calls an output binding.
func (b *Blocks) InvokeBinding(ctx context.Context, name, operation string, data []byte, meta map[string]string) (*bindings.InvokeResponse, error) {
	var ob components.OutputBinding
	for {
		var ok bool
		if ob, ok = b.Components.Snapshot().OutputBindings[name]; !ok {
			return nil, apierr.BindingNotFound(name)
		}
		if ob.Gate.Enter() {
			break
		}
	}
	defer ob.Gate.Leave()
	if operation == "" {
		return nil, apierr.BindingInvoke(name, errors.New("operation is empty"))
	}
	req := &bindings.InvokeRequest{Data: data, Metadata: meta, Operation: bindings.OperationKind(operation)}
	var resp *bindings.InvokeResponse
	err := b.outbound(ctx, name, levelBinding, func(ctx context.Context) (err error) {
		resp, err = ob.Invoke(ctx, req)
		return err
	})
	if err != nil {
		return nil, apierr.BindingInvoke(name, err)
	}
	// resp may be nil: the binding answered nothing (HTTP 204).
	return resp, nil
}

// ---- secrets ----

// secretStore takes the named store for one call; s.Gate.Leave must be
// called when it is over.
func (b *Blocks) secretStore(name string) (s components.SecretStore, err error) {
	for {
		snap := b.Components.Snapshot()
		if len(snap.Secrets) == 0 {
			return s, apierr.SecretStoresNotConfigured()
		}
		s, ok := snap.Secrets[name]
		if !ok {
			return s, apierr.SecretStoreNotFound(name)
		}
		if s.Gate.Enter() {
			return s, nil
		}
	}
}

// GetSecret reads one secret.
func (b *Blocks) GetSecret(ctx context.Context, store, key string, meta map[string]string) (map[string]string, error) {
	s, err := b.secretStore(store)
	if err != nil {
		return nil, err
	}
	defer s.Gate.Leave()
	var resp secretstores.GetSecretResponse
	err = b.outbound(ctx, store, levelSecret, func(ctx context.Context) (err error) {
		resp, err = s.GetSecret(ctx, secretstores.GetSecretRequest{Name: key, Metadata: meta})
		return err
	})
	if err != nil {
		return nil, apierr.SecretGet(key, store, err)
	}
	if resp.Data == nil {
		resp.Data = map[string]string{}
	}
	return resp.Data, nil
}

// BulkGetSecret reads every secret of a store.
func (b *Blocks) BulkGetSecret(ctx context.Context, store string, meta map[string]string) (map[string]map[string]string, error) {
	s, err := b.secretStore(store)
	if err != nil {
		return nil, err
	}
	defer s.Gate.Leave()
	var resp secretstores.BulkGetSecretResponse
	err = b.outbound(ctx, store, levelSecret, func(ctx context.Context) (err error) {
		resp, err = s.BulkGetSecret(ctx, secretstores.BulkGetSecretRequest{Metadata: meta})
		return err
	})
	if err != nil {
		return nil, apierr.BulkSecretGet(store, err)
	}
	if resp.Data == nil {
		resp.Data = map[string]map[string]string{}
	}
	return resp.Data, nil
}

// ErrShutdown is returned to callers once the runtime is shutting down.
var ErrShutdown = fmt.Errorf("runtime is shutting down")
