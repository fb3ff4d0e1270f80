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
	"slices"
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
			return nil, apierr.StateStoresNotConfigured(name)
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

// OwnState returns the named store for the runtime's own keys, which no
// app's key prefix applies to (a stream job's checkpoints); release must
// be called when the call is over.
func (b *Blocks) OwnState(name string) (st state.Store, release func(), err error) {
	s, err := b.stateStore(name)
	if err != nil {
		return nil, nil, err
	}
	return s.Store, s.Gate.Leave, nil
}

// CheckState returns the error a call to the named store fails with
// before its request is read: none loaded, not found, and, with
// transactional, not transactional. The HTTP API asks it when it cannot
// decode a body, so that it answers as daprd does, which looks the
// store up first.
func (b *Blocks) CheckState(store string, transactional bool) error {
	s, err := b.stateStore(store)
	if err != nil {
		return err
	}
	defer s.Gate.Leave()
	if transactional && s.Txn == nil {
		return apierr.StateNotTransactional(store)
	}
	return nil
}

// writeErr maps the error of a store's Set or Delete as daprd does: an
// ETag mismatch is 409 / Aborted, an invalid ETag 400 / InvalidArgument,
// anything else fallback (500 / Internal). Errors a store marks as the
// caller's (InvalidInput: an oversize value, a bad TTL) are 500 too, as
// daprd answers them: the message says what to change. Reads and
// transactions do not single out ETag errors (nor does daprd).
func writeErr(err error, fallback *apierr.Error) error {
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
	return fallback
}

// checkOptions refuses a concurrency or consistency a store does not
// know. Dapr's stores refuse them (state.CheckRequestOptions), so daprd
// answers with the operation's store error (500); mecha checks them for
// every store, and fallback carries the code. Options from the gRPC API
// are enums and always pass.
func checkOptions(concurrency, consistency string, fallback func(error) *apierr.Error) error {
	switch concurrency {
	case "", state.FirstWrite, state.LastWrite:
	default:
		return fallback(fmt.Errorf("unrecognized concurrency model '%s' (options.concurrency: use first-write or last-write)", concurrency))
	}
	switch consistency {
	case "", state.Eventual, state.Strong:
	default:
		return fallback(fmt.Errorf("unrecognized consistency model '%s' (options.consistency: use eventual or strong)", consistency))
	}
	return nil
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
		return nil, apierr.StateGet(key, store, err)
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
	for i := range items {
		o := items[i].Options
		if err := checkOptions(o.Concurrency, o.Consistency, func(err error) *apierr.Error { return apierr.StateSave(store, err) }); err != nil {
			return err
		}
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
		return writeErr(err, apierr.StateSave(store, err))
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
	if err := checkOptions(req.Options.Concurrency, req.Options.Consistency, func(err error) *apierr.Error { return apierr.StateDelete(orig, err) }); err != nil {
		return err
	}
	if err := b.outbound(ctx, store, levelState, func(ctx context.Context) error { return s.Store.Delete(ctx, req) }); err != nil {
		return writeErr(err, apierr.StateDelete(orig, err))
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
		o := reqs[i].Options
		if err := checkOptions(o.Concurrency, o.Consistency, func(err error) *apierr.Error { return apierr.StateDeleteBulk(store, err) }); err != nil {
			return err
		}
	}
	if err := b.outbound(ctx, store, levelState, func(ctx context.Context) error { return s.Store.BulkDelete(ctx, reqs, state.BulkStoreOpts{}) }); err != nil {
		return writeErr(err, apierr.StateDeleteBulk(store, err))
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
		return nil, apierr.StateScanNotSupported(store)
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
	// Operation is "upsert" or "delete", as the app wrote it: any other
	// value (other letter cases too, as in daprd) fails the transaction
	// with ERR_NOT_SUPPORTED_STATE_OPERATION.
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
	// An empty key is the store's to judge, as in daprd (it is stored
	// with its prefix); the operation type is checked first, then the
	// key, then the size of the whole transaction.
	fail := func(err error) *apierr.Error { return apierr.StateTransaction(err) }
	req := &state.TransactionalStateRequest{Metadata: meta, Operations: make([]state.TransactionalStateOperation, 0, len(ops))}
	for i, op := range ops {
		switch state.OperationType(op.Operation) {
		case state.OperationUpsert:
			if op.Set.Key, err = s.Key(op.Set.Key); err != nil {
				return apierr.Malformed("operations[%d]: %v", i, err)
			}
			if err := checkOptions(op.Set.Options.Concurrency, op.Set.Options.Consistency, fail); err != nil {
				return err
			}
			req.Operations = append(req.Operations, op.Set)
		case state.OperationDelete:
			if op.Delete.Key, err = s.Key(op.Delete.Key); err != nil {
				return apierr.Malformed("operations[%d]: %v", i, err)
			}
			if err := checkOptions(op.Delete.Options.Concurrency, op.Delete.Options.Consistency, fail); err != nil {
				return err
			}
			req.Operations = append(req.Operations, op.Delete)
		default:
			return apierr.StateOperationNotSupported(i, op.Operation)
		}
	}
	if s.MultiMaxSize > 0 && len(ops) > s.MultiMaxSize {
		return apierr.StateTooManyTransactions(store, len(ops), s.MultiMaxSize)
	}
	if err := b.outbound(ctx, store, levelState, func(ctx context.Context) error { return s.Txn.Multi(ctx, req) }); err != nil {
		return apierr.StateTransaction(err)
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
// called when it is over. It checks what daprd checks before it reads
// the events, in daprd's order: the name, the pubsub (with none loaded,
// every name is not found, as in daprd), the topic, and the request's
// rawPayload metadata.
func (b *Blocks) pubsub(name, topic string, meta map[string]string) (*components.PubSub, error) {
	if name == "" {
		return nil, apierr.PubSubEmpty()
	}
	for {
		ps, ok := b.Components.Snapshot().PubSub[name]
		if !ok {
			return nil, apierr.PubSubNotFound(name)
		}
		if topic == "" {
			return nil, apierr.TopicEmpty(name)
		}
		if _, err := rawPayload(meta); err != nil {
			return nil, apierr.PubSubMetadata(err)
		}
		if ps.Gate.Enter() {
			return ps, nil
		}
	}
}

// CheckPubSub returns the error a publish to name and topic with the
// request metadata meta fails with before its events are read. The HTTP
// API asks it when it cannot decode a bulk publish body, so that it
// answers as daprd does, which checks these first.
func (b *Blocks) CheckPubSub(name, topic string, meta map[string]string) error {
	ps, err := b.pubsub(name, topic, meta)
	if err != nil {
		return err
	}
	ps.Gate.Leave()
	return nil
}

// rawPayload reads the rawPayload metadata as Dapr does: absent or empty
// is false, otherwise it must parse as a Go boolean (true, True, 1, t, …).
func rawPayload(meta map[string]string) (bool, error) {
	v := meta["rawPayload"]
	if v == "" {
		return false, nil
	}
	raw, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("rawPayload value must be a valid boolean: actual is '%s'", v)
	}
	return raw, nil
}

// isRaw reports whether meta asks for a raw payload; a value that is not
// a boolean is false (the request's own metadata was checked by pubsub;
// an entry's is not, as in daprd).
func isRaw(meta map[string]string) bool {
	raw, _ := rawPayload(meta)
	return raw
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
	if isRaw(req.Metadata) {
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

// Publish publishes one event.
func (b *Blocks) Publish(ctx context.Context, req *PublishRequest) error {
	ps, err := b.pubsub(req.PubsubName, req.Topic, req.Metadata)
	if err != nil {
		return err
	}
	defer ps.Gate.Leave()
	data, err := b.envelope(ps, req)
	if err != nil {
		return err
	}
	ct := cloudevent.ContentType
	if isRaw(req.Metadata) && req.ContentType != "" {
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
	ps, err := b.pubsub(pubsubName, topic, meta)
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
		if isRaw(em) && e.ContentType != "" {
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
//
// As in daprd, the operation is checked first (it must be set), then the
// binding, then that the binding lists the operation among its
// Operations; every failure is ERR_INVOKE_OUTPUT_BINDING.
func (b *Blocks) InvokeBinding(ctx context.Context, name, operation string, data []byte, meta map[string]string) (*bindings.InvokeResponse, error) {
	if operation == "" {
		return nil, apierr.BindingInvoke(name, errors.New("operation field is missing from request (set \"operation\", e.g. \"create\")"))
	}
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
	if ops := ob.Operations(); !slices.Contains(ops, bindings.OperationKind(operation)) {
		names := make([]string, len(ops))
		for i, o := range ops {
			names[i] = string(o)
		}
		return nil, apierr.BindingInvoke(name, fmt.Errorf("binding %s does not support operation %s. supported operations: %s", name, operation, strings.Join(names, " ")))
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
