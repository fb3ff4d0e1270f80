package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"mecha/statestore"
)

// propKeys spread over slots and members; the {t} ones share a slot, for
// transactions.
var propKeys = []string{"a", "b", "c", "d", "e||x", "e||y", "{t}1", "{t}2", "{t}||3", "x{t}"}

var propTagged = []string{"{t}1", "{t}2", "{t}||3"}

var propPrefixes = []string{"", "e", "e||", "{t}", "{t}||", "x", "zz"}

// sameErr reports whether two errors are the same for the app: both nil,
// or the same engine sentinel.
func sameErr(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	for _, s := range []error{statestore.ErrETagMismatch, statestore.ErrETagInvalid, statestore.ErrBadTTL, statestore.ErrKeyEmpty} {
		if errors.Is(a, s) != errors.Is(b, s) {
			return false
		}
	}
	return true
}

func sameItem(a, b statestore.Item) bool {
	return a.Key == b.Key && bytes.Equal(a.Value, b.Value) && a.Version == b.Version && a.Expires.Equal(b.Expires)
}

// TestRouterBehavesLikeOneEngine runs random operations through random
// routers of a three-member cluster and on one engine: every answer is
// the same (values, versions, so ETags, expiries, errors). Both see the
// same operations in the same order across all runs (shrinking
// included), so their slot sequence numbers stay equal.
func TestRouterBehavesLikeOneEngine(t *testing.T) {
	tc := newCluster(t)
	ref, err := statestore.Open(statestore.Options{Dir: t.TempDir(), Logger: quiet(), Now: tc.clock.now, SnapshotLogBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	ctx := context.Background()
	routers := tc.routers()
	rapid.Check(t, func(rt *rapid.T) {
		etag := func(key string) *string {
			switch rapid.IntRange(0, 4).Draw(rt, "etag") {
			case 1:
				if it, ok, _ := ref.Get(key); ok {
					return ptr(statestore.ETag(it.Version))
				}
				return ptr("1")
			case 2:
				return ptr(statestore.ETag(uint64(rapid.IntRange(1, 50).Draw(rt, "stale"))))
			case 3:
				return ptr("bad")
			}
			return nil
		}
		write := func(key string, del bool) statestore.Write {
			w := statestore.Write{Key: key, Delete: del, ETag: etag(key)}
			if !del {
				w.Value = []byte(rapid.StringN(0, 8, -1).Draw(rt, "value"))
				w.FirstWrite = rapid.Bool().Draw(rt, "first")
				w.TTLSeconds = rapid.SampledFrom([]int64{0, 0, -1, 5, -3}).Draw(rt, "ttl")
			}
			return w
		}
		for range rapid.IntRange(1, 30).Draw(rt, "ops") {
			r := rapid.SampledFrom(routers).Draw(rt, "router")
			key := rapid.SampledFrom(propKeys).Draw(rt, "key")
			switch op := rapid.IntRange(0, 6).Draw(rt, "op"); op {
			case 0, 1:
				w := write(key, false)
				v1, e1 := ref.Set(w)
				v2, e2 := r.Set(ctx, w)
				if !sameErr(e1, e2) || e1 == nil && v1 != v2 {
					rt.Fatalf("set %+v: engine %d %v, router %d %v", w, v1, e1, v2, e2)
				}
			case 2:
				w := write(key, true)
				e1, e2 := ref.Delete(w), r.Delete(ctx, w)
				if !sameErr(e1, e2) {
					rt.Fatalf("delete %+v: engine %v, router %v", w, e1, e2)
				}
			case 3:
				i1, ok1, e1 := ref.Get(key)
				i2, ok2, e2 := r.Get(ctx, key)
				if !sameErr(e1, e2) || ok1 != ok2 || ok1 && !sameItem(i1, i2) {
					rt.Fatalf("get %q: engine %+v %v %v, router %+v %v %v", key, i1, ok1, e1, i2, ok2, e2)
				}
			case 4:
				n := rapid.IntRange(1, 3).Draw(rt, "txn size")
				ws := make([]statestore.Write, n)
				for i := range ws {
					ws[i] = write(rapid.SampledFrom(propTagged).Draw(rt, "tkey"), rapid.IntRange(0, 3).Draw(rt, "tdel") == 0)
				}
				v1, e1 := ref.Apply(ws)
				v2, e2 := r.Apply(ctx, ws)
				if !sameErr(e1, e2) || fmt.Sprint(v1) != fmt.Sprint(v2) {
					rt.Fatalf("transaction %+v: engine %v %v, router %v %v", ws, v1, e1, v2, e2)
				}
			case 5:
				prefix := rapid.SampledFrom(propPrefixes).Draw(rt, "prefix")
				limit := rapid.IntRange(0, 4).Draw(rt, "limit")
				i1 := ref.Scan(prefix, limit)
				i2, err := r.Scan(ctx, prefix, "", limit)
				if err != nil || len(i1) != len(i2) {
					rt.Fatalf("scan %q %d: engine %d items, router %d %v", prefix, limit, len(i1), len(i2), err)
				}
				for i := range i1 {
					if !sameItem(i1[i], i2[i]) {
						rt.Fatalf("scan %q item %d: engine %+v, router %+v", prefix, i, i1[i], i2[i])
					}
				}
			case 6:
				tc.clock.advance(time.Duration(rapid.IntRange(1, 4).Draw(rt, "seconds")) * time.Second)
			}
		}
	})
}
