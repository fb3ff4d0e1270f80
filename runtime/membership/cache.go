package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"mecha/internal/apicatalog"
	"mecha/internal/fsutil"
)

// The disk cache lets a runtime resolve while gossip is in trouble: the
// catalog is written to DataDir/catalog.json when it changes (debounced)
// and read back at start, its entries marked stale until gossip confirms
// them.

// CacheFile is the cache's file name under Config.DataDir.
const CacheFile = "catalog.json"

const snapshotFormat = 1

// Snapshot is the catalog as the disk cache keeps it.
type Snapshot struct {
	Format  int         `json:"format"`
	Node    string      `json:"node"`
	DC      string      `json:"dc"`
	Saved   time.Time   `json:"saved"`
	Entries []NodeEntry `json:"entries,omitempty"`
	Views   []DCView    `json:"views,omitempty"`
	// APIs are the app-facing API endpoints of this DC's live runtimes,
	// this one's included, for apps' SDKs (internal/apicatalog). A
	// runtime reading the cache ignores them.
	APIs []apicatalog.Endpoint `json:"apis,omitempty"`
}

// decodeSnapshot parses and checks a cache file.
func decodeSnapshot(b []byte) (Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return Snapshot{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if s.Format != snapshotFormat {
		return Snapshot{}, fmt.Errorf("%w: cache format %d", ErrMalformed, s.Format)
	}
	// The cache must hold only what the wire could carry: round-trip it
	// through the wire checks.
	st := state{entries: s.Entries, views: s.Views}
	if len(s.DC) > maxName || len(s.Node) > maxName || s.DC == "" {
		return Snapshot{}, fmt.Errorf("%w: cache without a valid dc", ErrMalformed)
	}
	if _, err := decodeState(encodeState(&st)); err != nil {
		return Snapshot{}, err
	}
	return s, nil
}

// loadCache reads the cache in dir; a missing file is an empty cache.
func loadCache(dir string) (Snapshot, error) {
	b, err := os.ReadFile(filepath.Join(dir, CacheFile))
	if errors.Is(err, os.ErrNotExist) {
		return Snapshot{}, nil
	}
	if err != nil {
		return Snapshot{}, err
	}
	return decodeSnapshot(b)
}

// saveCache replaces the cache in dir.
func saveCache(dir string, s Snapshot) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(dir, CacheFile), b)
}
