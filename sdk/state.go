package sdk

import (
	"context"
	"encoding/json"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
)

// Item is a key's state.
type Item struct {
	Key   string
	Value []byte
	// ETag is the key's version: pass it back (WithETag) to write only
	// if nobody wrote since. Empty when the key does not exist.
	ETag     string
	Metadata map[string]string
}

// Exists reports whether the key had a value.
func (i Item) Exists() bool { return i.ETag != "" }

// StateOption tunes one state call.
type StateOption func(*stateOpts)

type stateOpts struct {
	etag       *string
	ttl        time.Duration
	firstWrite bool
	strong     bool
	md         map[string]string
}

// WithETag writes or deletes only if the key's version is etag.
func WithETag(etag string) StateOption { return func(o *stateOpts) { o.etag = &etag } }

// WithTTL expires the written key after d (rounded up to seconds).
func WithTTL(d time.Duration) StateOption { return func(o *stateOpts) { o.ttl = d } }

// FirstWrite writes only if the key does not exist (without an ETag),
// Dapr's first-write concurrency.
func FirstWrite() StateOption { return func(o *stateOpts) { o.firstWrite = true } }

// Strong asks for strong consistency: a write is acknowledged once the
// store's replicas have it, a read goes to the key's leader.
func Strong() StateOption { return func(o *stateOpts) { o.strong = true } }

// WithStateMetadata passes a metadata entry to the state store.
func WithStateMetadata(key, value string) StateOption {
	return func(o *stateOpts) {
		if o.md == nil {
			o.md = map[string]string{}
		}
		o.md[key] = value
	}
}

func stateOptions(opts []StateOption) stateOpts {
	var o stateOpts
	for _, f := range opts {
		f(&o)
	}
	return o
}

func (o *stateOpts) consistency() commonv1pb.StateOptions_StateConsistency {
	if o.strong {
		return commonv1pb.StateOptions_CONSISTENCY_STRONG
	}
	return commonv1pb.StateOptions_CONSISTENCY_UNSPECIFIED
}

func (o *stateOpts) options() *commonv1pb.StateOptions {
	if !o.strong && !o.firstWrite {
		return nil
	}
	so := &commonv1pb.StateOptions{Consistency: o.consistency()}
	if o.firstWrite {
		so.Concurrency = commonv1pb.StateOptions_CONCURRENCY_FIRST_WRITE
	}
	return so
}

// metadata is the call's metadata, with the TTL.
func (o *stateOpts) metadata() map[string]string {
	if o.ttl <= 0 {
		return o.md
	}
	md := make(map[string]string, len(o.md)+1)
	for k, v := range o.md {
		md[k] = v
	}
	md[ttlMetadata] = ttlSeconds(o.ttl)
	return md
}

func (o *stateOpts) item(key string, value []byte) *commonv1pb.StateItem {
	it := &commonv1pb.StateItem{Key: key, Value: value, Metadata: o.metadata(), Options: o.options()}
	if o.etag != nil {
		it.Etag = &commonv1pb.Etag{Value: *o.etag}
	}
	return it
}

// GetState reads key. A missing key is an Item that does not Exist, not
// an error.
func (c *Client) GetState(ctx context.Context, store, key string, opts ...StateOption) (Item, error) {
	o := stateOptions(opts)
	var out Item
	err := c.call(ctx, func(ctx context.Context, api runtimev1pb.DaprClient) error {
		r, err := api.GetState(ctx, &runtimev1pb.GetStateRequest{StoreName: store, Key: key, Consistency: o.consistency(), Metadata: o.md})
		if err != nil {
			return err
		}
		out = Item{Key: key, Value: r.GetData(), ETag: r.GetEtag(), Metadata: r.GetMetadata()}
		return nil
	})
	return out, err
}

// SaveState writes key.
func (c *Client) SaveState(ctx context.Context, store, key string, value []byte, opts ...StateOption) error {
	o := stateOptions(opts)
	return c.saveItems(ctx, store, []*commonv1pb.StateItem{o.item(key, value)})
}

// SetItem is one write of SaveBulkState.
type SetItem struct {
	Key   string
	Value []byte
	// Opts are the write's own options (ETag, TTL, first write,
	// consistency).
	Opts []StateOption
}

// SaveBulkState writes several keys in one call. Each write is checked
// on its own (ETags): use ExecuteStateTransaction for all or nothing.
func (c *Client) SaveBulkState(ctx context.Context, store string, items ...SetItem) error {
	its := make([]*commonv1pb.StateItem, len(items))
	for i, it := range items {
		o := stateOptions(it.Opts)
		its[i] = o.item(it.Key, it.Value)
	}
	return c.saveItems(ctx, store, its)
}

func (c *Client) saveItems(ctx context.Context, store string, items []*commonv1pb.StateItem) error {
	return c.call(ctx, func(ctx context.Context, api runtimev1pb.DaprClient) error {
		_, err := api.SaveState(ctx, &runtimev1pb.SaveStateRequest{StoreName: store, States: items})
		return err
	})
}

// DeleteState deletes key; deleting a missing key (without an ETag) is
// not an error.
func (c *Client) DeleteState(ctx context.Context, store, key string, opts ...StateOption) error {
	o := stateOptions(opts)
	req := &runtimev1pb.DeleteStateRequest{StoreName: store, Key: key, Metadata: o.md, Options: o.options()}
	if o.etag != nil {
		req.Etag = &commonv1pb.Etag{Value: *o.etag}
	}
	return c.call(ctx, func(ctx context.Context, api runtimev1pb.DaprClient) error {
		_, err := api.DeleteState(ctx, req)
		return err
	})
}

// GetBulkState reads several keys, in the order given. A key the store
// could not read fails the call.
func (c *Client) GetBulkState(ctx context.Context, store string, keys []string, opts ...StateOption) ([]Item, error) {
	o := stateOptions(opts)
	var out []Item
	err := c.call(ctx, func(ctx context.Context, api runtimev1pb.DaprClient) error {
		r, err := api.GetBulkState(ctx, &runtimev1pb.GetBulkStateRequest{StoreName: store, Keys: keys, Metadata: o.md})
		if err != nil {
			return err
		}
		out = make([]Item, 0, len(r.GetItems()))
		for _, it := range r.GetItems() {
			if it.GetError() != "" {
				return &Error{Code: "ERR_STATE_BULK_GET", Message: "key " + it.GetKey() + ": " + it.GetError()}
			}
			out = append(out, Item{Key: it.GetKey(), Value: it.GetData(), ETag: it.GetEtag(), Metadata: it.GetMetadata()})
		}
		return nil
	})
	return out, err
}

// Op is one operation of a transaction: a write, or a delete.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
	Opts   []StateOption
}

// ExecuteStateTransaction applies ops atomically: all or none. With
// Crux, every key must be in one slot: give a user's keys one {hash tag}.
func (c *Client) ExecuteStateTransaction(ctx context.Context, store string, ops []Op) error {
	req := &runtimev1pb.ExecuteStateTransactionRequest{StoreName: store, Operations: make([]*runtimev1pb.TransactionalStateOperation, len(ops))}
	for i, op := range ops {
		o := stateOptions(op.Opts)
		kind := "upsert"
		if op.Delete {
			kind = "delete"
		}
		req.Operations[i] = &runtimev1pb.TransactionalStateOperation{OperationType: kind, Request: o.item(op.Key, op.Value)}
	}
	return c.call(ctx, func(ctx context.Context, api runtimev1pb.DaprClient) error {
		_, err := api.ExecuteStateTransaction(ctx, req)
		return err
	})
}

// ScanState returns the keys starting with prefix, sorted, with their
// values (limit 0: all of them; a store answers a bounded number). It is
// mecha's extension for state.crux: a prefix with a {hash tag} reads
// one slot.
func (c *Client) ScanState(ctx context.Context, store, prefix string, limit int) ([]Item, error) {
	q := struct {
		Prefix string `json:"prefix"`
		Page   struct {
			Limit int `json:"limit"`
		} `json:"page"`
	}{Prefix: prefix}
	q.Page.Limit = limit
	b, err := json.Marshal(q)
	if err != nil {
		return nil, err
	}
	var out []Item
	err = c.call(ctx, func(ctx context.Context, api runtimev1pb.DaprClient) error {
		r, err := api.QueryStateAlpha1(ctx, &runtimev1pb.QueryStateRequest{StoreName: store, Query: string(b)})
		if err != nil {
			return err
		}
		out = make([]Item, len(r.GetResults()))
		for i, it := range r.GetResults() {
			out[i] = Item{Key: it.GetKey(), Value: it.GetData(), ETag: it.GetEtag()}
		}
		return nil
	})
	return out, err
}
