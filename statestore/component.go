package statestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"

	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/state"
	stateutils "github.com/dapr/components-contrib/state/utils"
	"github.com/dapr/kit/logger"
)

// ComponentDefaults are what the runtime knows and a Component YAML may
// leave out.
type ComponentDefaults struct {
	// DataDir is where stores keep their files, one folder per component
	// name, unless the component's metadata sets dataDir.
	DataDir string
	// MaxValueBytes is --max-value-bytes.
	MaxValueBytes int
	Logger        *slog.Logger
	// Backend, when set, is called by Init with the component's name and
	// its opened engine, and returns what the component serves from (a
	// cluster router, which may serve some keys from that engine);
	// returning nil keeps the engine. Unset, state.crux is a single node.
	Backend func(name string, local *Engine) (Backend, error)
	// ClientOnly, with Backend, opens no engine: the runtime stores
	// nothing here, and Backend is called with a nil engine.
	ClientOnly bool
}

// Component is state.crux: the Crux engine as a components-contrib
// state.Store, TransactionalStore, BulkStore and DeleteWithPrefix.
//
// Metadata: dataDir (default <--data-dir>/crux/<name>), fsync (always,
// interval, never), fsyncIntervalMs, maxValueBytes, snapshotLogBytes.
type Component struct {
	defaults ComponentDefaults
	log      logger.Logger
	engine   *Engine
	// b serves the operations: Local(engine) or the runtime's Backend.
	b Backend
}

// NewComponent returns an uninitialized state.crux.
func NewComponent(l logger.Logger, d ComponentDefaults) *Component {
	return &Component{defaults: d, log: l}
}

var (
	_ state.Store              = (*Component)(nil)
	_ state.TransactionalStore = (*Component)(nil)
	_ state.DeleteWithPrefix   = (*Component)(nil)
)

// Init opens the engine.
func (c *Component) Init(_ context.Context, md state.Metadata) error {
	p := md.Properties
	opts := Options{Logger: c.defaults.Logger, MaxValueBytes: c.defaults.MaxValueBytes}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Dir = p["dataDir"]
	if opts.Dir == "" {
		if c.defaults.DataDir == "" {
			return errors.New("state.crux: metadata dataDir is required (or run it inside mecha run, which sets --data-dir)")
		}
		opts.Dir = filepath.Join(c.defaults.DataDir, "crux", md.Name)
	}
	var err error
	if opts.Fsync, err = ParseFsyncPolicy(p["fsync"]); err != nil {
		return fmt.Errorf("state.crux: metadata fsync: %w", err)
	}
	if v := p["fsyncIntervalMs"]; v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return fmt.Errorf("state.crux: metadata fsyncIntervalMs %q is not a positive number", v)
		}
		opts.FsyncInterval = time.Duration(ms) * time.Millisecond
	}
	if v := p["maxValueBytes"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("state.crux: metadata maxValueBytes %q is not a positive number", v)
		}
		opts.MaxValueBytes = n
	}
	if v := p["snapshotLogBytes"]; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("state.crux: metadata snapshotLogBytes %q is not a number", v)
		}
		opts.SnapshotLogBytes = n
	}
	if c.defaults.ClientOnly && c.defaults.Backend != nil {
		b, err := c.defaults.Backend(md.Name, nil)
		if err != nil {
			return fmt.Errorf("state.crux: %w", err)
		}
		if b == nil {
			return errors.New("state.crux: the runtime stores no data here and gave no cluster to store through")
		}
		c.b = b
		return nil
	}
	c.engine, err = Open(opts)
	if err != nil {
		return fmt.Errorf("state.crux: %w", err)
	}
	c.b = Local(c.engine)
	if c.defaults.Backend != nil {
		b, err := c.defaults.Backend(md.Name, c.engine)
		if err != nil {
			_ = c.engine.Close()
			c.engine = nil
			return fmt.Errorf("state.crux: %w", err)
		}
		if b != nil {
			c.b = b
		}
	}
	return nil
}

// Engine exposes the engine, for the runtime and benchmarks.
func (c *Component) Engine() *Engine { return c.engine }

// Features implements state.Store.
func (c *Component) Features() []state.Feature {
	return []state.Feature{state.FeatureETag, state.FeatureTransactional, state.FeatureTTL, state.FeatureDeleteWithPrefix}
}

// GetComponentMetadata implements state.Store.
func (c *Component) GetComponentMetadata() metadata.MetadataMap { return metadata.MetadataMap{} }

// mapErr turns engine errors into what contrib callers expect: ETag
// errors as *state.ETagError.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrETagMismatch):
		return state.NewETagError(state.ETagMismatch, err)
	case errors.Is(err, ErrETagInvalid):
		return state.NewETagError(state.ETagInvalid, err)
	}
	return err
}

// Get implements state.Store.
func (c *Component) Get(ctx context.Context, req *state.GetRequest) (*state.GetResponse, error) {
	get := c.b.Get
	if sg, strong := c.b.(StrongGetter); strong && req.Options.Consistency == state.Strong {
		get = sg.GetStrong
	}
	it, ok, err := get(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	if !ok {
		return &state.GetResponse{}, nil
	}
	etag := ETag(it.Version)
	return &state.GetResponse{Data: it.Value, ETag: &etag, Metadata: ttlMetadata(it)}, nil
}

// ttlMetadata is the metadata a read reports: ttlExpireTime when the key
// has a TTL.
func ttlMetadata(it Item) map[string]string {
	if it.Expires.IsZero() {
		return nil
	}
	return map[string]string{"ttlExpireTime": it.Expires.UTC().Format(time.RFC3339)}
}

func toWrite(key string, value any, etag *string, meta map[string]string, o state.SetStateOption, del bool) (Write, error) {
	w := Write{Key: key, ETag: etag, Delete: del, FirstWrite: o.Concurrency == state.FirstWrite, Strong: o.Consistency == state.Strong}
	if !del {
		b, err := stateutils.Marshal(value, jsonMarshal)
		if err != nil {
			return w, err
		}
		w.Value = b
		ttl, err := stateutils.ParseTTL64(meta)
		if err != nil {
			return w, fmt.Errorf("%w: %v", ErrBadTTL, err)
		}
		if ttl != nil {
			if *ttl == 0 {
				return w, fmt.Errorf("%w: 0", ErrBadTTL)
			}
			w.TTLSeconds = *ttl
		}
	}
	return w, nil
}

// Set implements state.Store.
func (c *Component) Set(ctx context.Context, req *state.SetRequest) error {
	w, err := toWrite(req.Key, req.Value, req.ETag, req.Metadata, req.Options, false)
	if err != nil {
		return err
	}
	_, err = c.b.Set(ctx, w)
	return mapErr(err)
}

// Delete implements state.Store.
func (c *Component) Delete(ctx context.Context, req *state.DeleteRequest) error {
	w, _ := toWrite(req.Key, nil, req.ETag, req.Metadata, state.SetStateOption(req.Options), true)
	return mapErr(c.b.Delete(ctx, w))
}

// BulkGet implements state.BulkStore.
func (c *Component) BulkGet(ctx context.Context, req []state.GetRequest, opts state.BulkGetOpts) ([]state.BulkGetResponse, error) {
	keys := make([]string, len(req))
	for i := range req {
		keys[i] = req[i].Key
	}
	res := c.b.BulkGet(ctx, keys)
	out := make([]state.BulkGetResponse, len(req))
	for i, r := range res {
		out[i].Key = keys[i]
		switch {
		case r.Err != nil:
			out[i].Error = r.Err.Error()
		case r.Found:
			etag := ETag(r.Item.Version)
			out[i].Data, out[i].ETag, out[i].Metadata = r.Item.Value, &etag, ttlMetadata(r.Item)
		}
	}
	return out, nil
}

// BulkSet implements state.BulkStore. Each item is its own write, as
// contrib's bulk semantics say; failures are reported per key.
func (c *Component) BulkSet(ctx context.Context, req []state.SetRequest, opts state.BulkStoreOpts) error {
	return state.DoBulkSetDelete(ctx, req, c.Set, opts)
}

// BulkDelete implements state.BulkStore.
func (c *Component) BulkDelete(ctx context.Context, req []state.DeleteRequest, opts state.BulkStoreOpts) error {
	return state.DoBulkSetDelete(ctx, req, c.Delete, opts)
}

// Multi implements state.TransactionalStore: all operations or none, in
// order, durable as one log record.
func (c *Component) Multi(ctx context.Context, req *state.TransactionalStateRequest) error {
	writes := make([]Write, 0, len(req.Operations))
	for i, o := range req.Operations {
		var (
			w   Write
			err error
		)
		switch r := o.(type) {
		case state.SetRequest:
			w, err = toWrite(r.Key, r.Value, r.ETag, r.Metadata, r.Options, false)
		case state.DeleteRequest:
			w, err = toWrite(r.Key, nil, r.ETag, r.Metadata, state.SetStateOption(r.Options), true)
		default:
			err = fmt.Errorf("operation type %T is not supported", o)
		}
		if err != nil {
			return fmt.Errorf("operation %d: %w", i, err)
		}
		writes = append(writes, w)
	}
	_, err := c.b.Apply(ctx, writes)
	return mapErr(err)
}

// DeleteWithPrefix implements state.DeleteWithPrefix.
func (c *Component) DeleteWithPrefix(ctx context.Context, req state.DeleteWithPrefixRequest) (state.DeleteWithPrefixResponse, error) {
	if err := req.Validate(); err != nil {
		return state.DeleteWithPrefixResponse{}, err
	}
	n, err := c.b.DeleteChildren(ctx, req.Prefix)
	return state.DeleteWithPrefixResponse{Count: n}, err
}

// Close implements io.Closer.
func (c *Component) Close() error {
	if cl, ok := c.b.(io.Closer); ok {
		if err := cl.Close(); err != nil {
			c.log.Warnf("state.crux: closing the cluster backend: %v", err)
		}
	}
	if c.engine == nil {
		return nil
	}
	return c.engine.Close()
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// Scan returns the live keys starting with prefix, sorted, at most limit
// (0: no limit). It is mecha's extension for listing a user's sessions
// (GET /v1.0-alpha1/state/{store}/scan); a {hash tag} in the prefix reads
// one slot.
func (c *Component) Scan(ctx context.Context, prefix string, limit int) ([]state.BulkGetResponse, error) {
	items, err := c.b.Scan(ctx, prefix, "", limit)
	if err != nil {
		return nil, err
	}
	out := make([]state.BulkGetResponse, len(items))
	for i, it := range items {
		etag := ETag(it.Version)
		out[i] = state.BulkGetResponse{Key: it.Key, Data: it.Value, ETag: &etag, Metadata: ttlMetadata(it)}
	}
	return out, nil
}
