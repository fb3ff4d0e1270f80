package statestore

import "context"

// Backend is what the state.crux component calls for each operation:
// the local engine (the default), or a cluster router that sends each
// key's operation to its slot's leader (package statestore/cluster). The
// semantics of every operation (ETags, first-write, TTL, transactions)
// are the Engine's wherever it runs; a Backend only moves requests, and
// answers the Engine's errors (errors.Is holds for ErrETagMismatch,
// ErrETagInvalid, ErrBadTTL, …).
type Backend interface {
	// Get reads a key; ok is false when it does not exist or expired.
	Get(ctx context.Context, key string) (it Item, ok bool, err error)
	// BulkGet reads keys, each on its own: a failure is per key.
	BulkGet(ctx context.Context, keys []string) []GetResult
	// Set writes one key and returns its new version.
	Set(ctx context.Context, w Write) (uint64, error)
	// Delete removes one key.
	Delete(ctx context.Context, w Write) error
	// Apply runs writes as one atomic transaction.
	Apply(ctx context.Context, writes []Write) ([]uint64, error)
	// Scan lists the live keys starting with prefix and after the key
	// after ("" for none), sorted, at most limit (0: no limit).
	Scan(ctx context.Context, prefix, after string, limit int) ([]Item, error)
	// DeleteChildren is Engine.DeleteChildren.
	DeleteChildren(ctx context.Context, prefix string) (int64, error)
}

// StrongGetter is a Backend whose reads with Dapr's consistency "strong"
// take another path: the cluster router confirms them with the slot's
// in-sync replicas. A Backend without it reads the same either way.
type StrongGetter interface {
	GetStrong(ctx context.Context, key string) (it Item, ok bool, err error)
}

// GetResult is one key's answer to a BulkGet.
type GetResult struct {
	Item  Item
	Found bool
	Err   error
}

// Local returns the Backend that serves from e in-process.
func Local(e *Engine) Backend { return local{e} }

type local struct{ e *Engine }

func (l local) Get(_ context.Context, key string) (Item, bool, error) { return l.e.Get(key) }

func (l local) BulkGet(_ context.Context, keys []string) []GetResult {
	out := make([]GetResult, len(keys))
	for i, k := range keys {
		out[i].Item, out[i].Found, out[i].Err = l.e.Get(k)
	}
	return out
}

func (l local) Set(_ context.Context, w Write) (uint64, error) { return l.e.Set(w) }

func (l local) Delete(_ context.Context, w Write) error { return l.e.Delete(w) }

func (l local) Apply(_ context.Context, ws []Write) ([]uint64, error) { return l.e.Apply(ws) }

func (l local) Scan(_ context.Context, prefix, after string, limit int) ([]Item, error) {
	if after == "" {
		return l.e.Scan(prefix, limit), nil
	}
	return l.e.scan(l.e.slotsFor(prefix), prefix, after, limit), nil
}

func (l local) DeleteChildren(_ context.Context, prefix string) (int64, error) {
	return l.e.DeleteChildren(prefix)
}
