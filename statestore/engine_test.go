package statestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t testing.TB, dir string, mod ...func(*Options)) *Engine {
	t.Helper()
	o := Options{Dir: dir, Logger: quiet(), SnapshotLogBytes: -1}
	for _, m := range mod {
		m(&o)
	}
	e, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func mustGet(t *testing.T, e *Engine, key string) (string, bool) {
	t.Helper()
	it, ok, err := e.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(it.Value), ok
}

func ptr(s string) *string { return &s }

func TestSetGetDeleteETag(t *testing.T) {
	e := open(t, t.TempDir())
	defer e.Close()
	v1, err := e.Set(Write{Key: "a", Value: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := mustGet(t, e, "a"); !ok || got != "1" {
		t.Fatalf("get a = %q %v", got, ok)
	}
	if _, err := e.Set(Write{Key: "a", Value: []byte("2"), ETag: ptr("999")}); !errors.Is(err, ErrETagMismatch) {
		t.Fatalf("stale etag: %v", err)
	}
	if _, err := e.Set(Write{Key: "a", Value: []byte("2"), ETag: ptr("abc")}); !errors.Is(err, ErrETagInvalid) {
		t.Fatalf("malformed etag: %v", err)
	}
	v2, err := e.Set(Write{Key: "a", Value: []byte("2"), ETag: ptr(ETag(v1))})
	if err != nil || v2 <= v1 {
		t.Fatalf("etag update: v2=%d v1=%d err=%v", v2, v1, err)
	}
	if _, err := e.Set(Write{Key: "a", Value: []byte("3"), FirstWrite: true}); !errors.Is(err, ErrETagMismatch) {
		t.Fatalf("first-write on existing key: %v", err)
	}
	if _, err := e.Set(Write{Key: "new", Value: []byte("x"), FirstWrite: true}); err != nil {
		t.Fatalf("first-write on new key: %v", err)
	}
	if err := e.Delete(Write{Key: "a", ETag: ptr(ETag(v1))}); !errors.Is(err, ErrETagMismatch) {
		t.Fatalf("delete with stale etag: %v", err)
	}
	if err := e.Delete(Write{Key: "a", ETag: ptr(ETag(v2))}); err != nil {
		t.Fatal(err)
	}
	if _, ok := mustGet(t, e, "a"); ok {
		t.Fatal("deleted key still there")
	}
	if err := e.Delete(Write{Key: "missing"}); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	// A recreated key gets a larger version than it ever had.
	v3, _ := e.Set(Write{Key: "a", Value: []byte("4")})
	if v3 <= v2 {
		t.Fatalf("version went back: %d <= %d", v3, v2)
	}
}

func TestBadInput(t *testing.T) {
	e := open(t, t.TempDir(), func(o *Options) { o.MaxValueBytes = 10 })
	defer e.Close()
	cases := []struct {
		w    Write
		want error
	}{
		{Write{Key: ""}, ErrKeyEmpty},
		{Write{Key: strings.Repeat("k", MaxKeyBytes+1)}, ErrKeyTooLong},
		{Write{Key: "k", Value: make([]byte, 11)}, ErrValueTooBig},
		{Write{Key: "k", TTLSeconds: -2}, ErrBadTTL},
		{Write{Key: "k", ETag: ptr("-1")}, ErrETagInvalid},
	}
	for _, c := range cases {
		if _, err := e.Set(c.w); !errors.Is(err, c.want) {
			t.Errorf("Set(%.20q) = %v, want %v", c.w.Key, err, c.want)
		}
	}
	if e.Len() != 0 {
		t.Fatal("a refused write left a key")
	}
}

func TestTTL(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	e := open(t, t.TempDir(), func(o *Options) { o.Now = clock })
	defer e.Close()
	e.Set(Write{Key: "s", Value: []byte("v"), TTLSeconds: 10})
	it, ok, _ := e.Get("s")
	if !ok || !it.Expires.Equal(now.Add(10*time.Second)) {
		t.Fatalf("ttl item %+v %v", it, ok)
	}
	now = now.Add(11 * time.Second)
	if _, ok := mustGet(t, e, "s"); ok {
		t.Fatal("expired key readable")
	}
	// -1 removes the TTL.
	e.Set(Write{Key: "p", Value: []byte("v"), TTLSeconds: 5})
	e.Set(Write{Key: "p", Value: []byte("v"), TTLSeconds: -1})
	now = now.Add(time.Hour)
	if _, ok := mustGet(t, e, "p"); !ok {
		t.Fatal("ttl -1 did not remove the ttl")
	}
}

func TestTransactionAllOrNothing(t *testing.T) {
	e := open(t, t.TempDir())
	defer e.Close()
	v, _ := e.Set(Write{Key: "x", Value: []byte("0")})
	_, err := e.Apply([]Write{
		{Key: "y", Value: []byte("1")},
		{Key: "x", Value: []byte("1"), ETag: ptr(ETag(v + 100))},
	})
	if !errors.Is(err, ErrETagMismatch) {
		t.Fatalf("txn with a bad etag: %v", err)
	}
	if _, ok := mustGet(t, e, "y"); ok {
		t.Fatal("part of a failed transaction was applied")
	}
	if _, err := e.Apply([]Write{
		{Key: "y", Value: []byte("1")},
		{Key: "x", Delete: true, ETag: ptr(ETag(v))},
		{Key: "y", Value: []byte("2")},
	}); err != nil {
		t.Fatal(err)
	}
	if got, _ := mustGet(t, e, "y"); got != "2" {
		t.Fatalf("ops not applied in order: y=%q", got)
	}
	if _, ok := mustGet(t, e, "x"); ok {
		t.Fatal("x not deleted")
	}
}

func TestPrefixAndHashTags(t *testing.T) {
	e := open(t, t.TempDir())
	defer e.Close()
	for i := 0; i < 5; i++ {
		e.Set(Write{Key: fmt.Sprintf("im||{user-7}||conn-%d", i), Value: []byte("gw")})
	}
	e.Set(Write{Key: "im||{user-8}||conn-0", Value: []byte("gw")})
	if SlotOf("im||{user-7}||conn-0") != SlotOf("other{user-7}") {
		t.Fatal("hash tag does not pick the slot")
	}
	items := e.Scan("im||{user-7}||", 0)
	if len(items) != 5 || items[0].Key != "im||{user-7}||conn-0" {
		t.Fatalf("scan = %+v", items)
	}
	if n := len(e.Scan("im||", 0)); n != 6 {
		t.Fatalf("scan all = %d", n)
	}
	n, err := e.DeletePrefix("im||{user-7}||")
	if err != nil || n != 5 {
		t.Fatalf("delete prefix = %d, %v", n, err)
	}
	if e.Len() != 1 {
		t.Fatalf("len = %d", e.Len())
	}
}

func TestReopenKeepsData(t *testing.T) {
	for _, policy := range []FsyncPolicy{FsyncInterval, FsyncAlways, FsyncNever} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			e := open(t, dir, func(o *Options) { o.Fsync = policy })
			for i := 0; i < 100; i++ {
				e.Set(Write{Key: fmt.Sprint("k", i), Value: []byte(fmt.Sprint(i))})
			}
			e.Apply([]Write{{Key: "k1", Delete: true}, {Key: "t", Value: []byte("txn")}})
			e.DeletePrefix("k9")
			before := e.SlotSeq(int(slotOf("k5")))
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			e = open(t, dir, func(o *Options) { o.Fsync = policy })
			defer e.Close()
			if got, _ := mustGet(t, e, "k5"); got != "5" {
				t.Fatalf("k5 = %q", got)
			}
			if _, ok := mustGet(t, e, "k1"); ok {
				t.Fatal("k1 came back")
			}
			if _, ok := mustGet(t, e, "k95"); ok {
				t.Fatal("prefix delete lost")
			}
			if got, _ := mustGet(t, e, "t"); got != "txn" {
				t.Fatal("txn lost")
			}
			if e.SlotSeq(int(slotOf("k5"))) != before {
				t.Fatal("slot seq not recovered")
			}
		})
	}
}

func TestSnapshotAndReplay(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	for i := 0; i < 1000; i++ {
		e.Set(Write{Key: fmt.Sprint("k", i), Value: []byte(fmt.Sprint(i))})
	}
	if err := e.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		e.Set(Write{Key: fmt.Sprint("k", i), Value: []byte("after")})
	}
	e.Delete(Write{Key: "k500"})
	e.Close()
	segs, _ := listSegments(dir)
	snaps, _ := listSnapshots(dir)
	if len(snaps) != 1 || len(segs) != 1 || segs[0] != snaps[0] {
		t.Fatalf("after snapshot: segments %v snapshots %v", segs, snaps)
	}
	e = open(t, dir)
	defer e.Close()
	if got, _ := mustGet(t, e, "k3"); got != "after" {
		t.Fatalf("k3 = %q", got)
	}
	if got, _ := mustGet(t, e, "k999"); got != "999" {
		t.Fatalf("k999 = %q", got)
	}
	if _, ok := mustGet(t, e, "k500"); ok {
		t.Fatal("k500 came back")
	}
	if e.Len() != 999 {
		t.Fatalf("len = %d", e.Len())
	}
}

func lastSegment(t *testing.T, dir string) string {
	segs, _ := listSegments(dir)
	return filepath.Join(dir, segName(segs[len(segs)-1]))
}

// A record torn by a crash is cut off: the records before it are kept,
// its bytes are zeroed (the file keeps its preallocated size), and new
// records written where it was survive the next reopen.
func TestTornTailIsZeroed(t *testing.T) {
	cases := []struct {
		name string
		// damage makes the segment a crash would leave from the data
		// of the records, end being where the last one starts.
		damage func(data []byte, last int64) []byte
	}{
		{"file cut inside the last record", func(data []byte, last int64) []byte { return data[:len(data)-3] }},
		{"last record half written in preallocated space", func(data []byte, last int64) []byte {
			torn := bytes.Clone(data)
			clear(torn[last+(int64(len(data))-last)/2:])
			return append(torn, make([]byte, 4096)...)
		}},
		{"a long garbage record after the last", func(data []byte, last int64) []byte {
			garbage := binary.BigEndian.AppendUint32(nil, 300)
			garbage = append(garbage, bytes.Repeat([]byte{0xAB}, 300)...)
			return append(append(bytes.Clone(data), garbage...), make([]byte, 4096)...)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			e := open(t, dir)
			e.Set(Write{Key: "a", Value: []byte("1")})
			last := e.wal.size()
			e.Set(Write{Key: "b", Value: []byte("2")})
			end := e.wal.size()
			e.Close()
			path := lastSegment(t, dir)
			data, _ := os.ReadFile(path)
			damaged := tc.damage(data[:end], last)
			if tc.name == "a long garbage record after the last" {
				last = end // b is whole
			}
			os.WriteFile(path, damaged, 0o644)
			e = open(t, dir)
			if got, _ := mustGet(t, e, "a"); got != "1" {
				t.Fatal("a lost")
			}
			if _, ok := mustGet(t, e, "b"); ok != (last == end) {
				t.Fatalf("b present %v, want %v", ok, last == end)
			}
			// Torn bytes left behind the valid data would make the next
			// torn write look like a damaged record followed by data:
			// corruption, and a store that does not open.
			after, _ := os.ReadFile(path)
			if len(after) < len(damaged) {
				t.Fatalf("recovery shrank the segment from %d to %d bytes", len(damaged), len(after))
			}
			if valid := e.wal.size(); lastNonZeroByte(after[valid:]) >= 0 {
				t.Fatalf("non-zero bytes left after the valid data at %d", valid)
			}
			// Appends resume where the valid data ends, over the zeroed
			// bytes: a short record, so that torn bytes left behind it
			// would show at the next reopen.
			e.Set(Write{Key: "c", Value: []byte("3")})
			e.Close()
			e = open(t, dir)
			defer e.Close()
			if got, _ := mustGet(t, e, "c"); got != "3" {
				t.Fatal("write after the torn tail lost")
			}
		})
	}
}

func TestCorruptionInTheMiddleStopsRecovery(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	for i := 0; i < 10; i++ {
		e.Set(Write{Key: fmt.Sprint("k", i), Value: []byte("value")})
	}
	e.Close()
	path := lastSegment(t, dir)
	data, _ := os.ReadFile(path)
	data[recordHeader+3] ^= 0xff // inside the first record's payload
	os.WriteFile(path, data, 0o644)
	_, err := Open(Options{Dir: dir, Logger: quiet()})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset 0") {
		t.Fatalf("recovery error = %v", err)
	}
}

func TestDirectoryLock(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	defer e.Close()
	if _, err := Open(Options{Dir: dir, Logger: quiet()}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
}

func TestActiveExpiry(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	clock := func() time.Time { <-mu; defer func() { mu <- struct{}{} }(); return now }
	e := open(t, t.TempDir(), func(o *Options) { o.Now = clock; o.ExpiryInterval = time.Millisecond })
	defer e.Close()
	for i := 0; i < 100; i++ {
		e.Set(Write{Key: fmt.Sprint("k", i), Value: []byte("v"), TTLSeconds: 1})
	}
	<-mu
	now = now.Add(2 * time.Second)
	mu <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for e.countLocked() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d expired keys still held in memory", e.countLocked())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *Engine) countLocked() int {
	n := 0
	for i := range e.slots {
		e.slots[i].mu.RLock()
		n += e.slots[i].m.len()
		e.slots[i].mu.RUnlock()
	}
	return n
}

// A damaged length field in the middle of the last segment is corruption,
// not a torn tail: intact records follow it.
func TestBadLengthInTheMiddleIsCorruption(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	for i := 0; i < 3; i++ {
		e.Set(Write{Key: fmt.Sprint("k", i), Value: []byte("value")})
	}
	e.Close()
	path := lastSegment(t, dir)
	data, _ := os.ReadFile(path)
	first := int(uint32(data[0])<<24 | uint32(data[1])<<16 | uint32(data[2])<<8 | uint32(data[3]))
	second := recordHeader + first
	data[second], data[second+1], data[second+2], data[second+3] = 0, 0xff, 0xff, 0xff
	os.WriteFile(path, data, 0o644)
	_, err := Open(Options{Dir: dir, Logger: quiet()})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", second)) {
		t.Fatalf("recovery error = %v", err)
	}
}

func TestSnapshotOfAnEmptyStore(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	if err := e.Snapshot(); err != nil {
		t.Fatalf("snapshot of an empty store: %v", err)
	}
	if err := e.Snapshot(); err != nil {
		t.Fatalf("second snapshot with no write between: %v", err)
	}
	e.Set(Write{Key: "k", Value: []byte("v")})
	e.Close()
	e = open(t, dir)
	defer e.Close()
	if err := e.Snapshot(); err != nil {
		t.Fatalf("snapshot after reopen: %v", err)
	}
	if got, _ := mustGet(t, e, "k"); got != "v" {
		t.Fatal("k lost")
	}
}

func TestSlotOfHashTags(t *testing.T) {
	cases := []struct{ a, b string }{
		{"{user-1}||a", "x{user-1}y"}, // the tag decides
		{"a{}b{c}", "a{}b{c}"},        // an empty first tag: the whole key
		{"{a}{b}", "z{a}"},            // only the first tag counts
	}
	for _, c := range cases {
		if slotOf(c.a) != slotOf(c.b) {
			t.Errorf("slotOf(%q) != slotOf(%q)", c.a, c.b)
		}
	}
	if hashSlot("a{}b{c}") != slotOf("a{}b{c}") {
		t.Error("an empty first tag must hash the whole key")
	}
	if hashSlot("plain") != slotOf("plain") {
		t.Error("keys without tags hash whole")
	}
}

// Writers, group commits, empty commits (Sync with nothing buffered) and
// rotations all at once: every acknowledged write is in the reopened
// store, for each policy. A buffer handed back for reuse while
// appends still went to it once tore records here.
func TestConcurrentWritesSurviveCommitsAndRotations(t *testing.T) {
	for _, policy := range []FsyncPolicy{FsyncAlways, FsyncInterval, FsyncNever} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			mod := func(o *Options) { o.Fsync = policy; o.FsyncInterval = time.Millisecond }
			e := open(t, dir, mod)
			const writers, perWriter = 16, 1000
			last := make([][]string, writers) // last[w][k]: the newest value of w's key k
			var wg sync.WaitGroup
			done := make(chan struct{})
			for w := range writers {
				last[w] = make([]string, 16)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perWriter {
						k, v := fmt.Sprintf("w%d-k%d", w, i%16), fmt.Sprintf("w%d-%04d-%s", w, i, strings.Repeat("x", i%50))
						if _, err := e.Set(Write{Key: k, Value: []byte(v)}); err != nil {
							t.Error(err)
							return
						}
						last[w][i%16] = v
					}
				}()
			}
			var bg sync.WaitGroup
			bg.Add(1)
			go func() {
				defer bg.Done()
				for i := 0; ; i++ {
					select {
					case <-done:
						return
					default:
					}
					// No snapshots: recovery replays the whole log, so a
					// torn record anywhere in it shows.
					var err error
					if i%50 != 0 {
						err = e.Sync(context.Background())
					} else {
						_, err = e.wal.rotate()
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
			wg.Wait()
			close(done)
			bg.Wait()
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			e = open(t, dir, mod)
			defer e.Close()
			for w := range writers {
				for k, want := range last[w] {
					if got, ok := mustGet(t, e, fmt.Sprintf("w%d-k%d", w, k)); !ok || got != want {
						t.Fatalf("w%d-k%d = %.20q (present %v), acknowledged %.20q", w, k, got, ok, want)
					}
				}
			}
		})
	}
}

// Close while writers are busy: every writer returns, with success or
// ErrClosed, and what was acknowledged is in the reopened store. A record
// appended after Close's last commit must fail its writers, not leave
// them waiting for a commit that never comes.
func TestCloseWhileWriting(t *testing.T) {
	for _, policy := range []FsyncPolicy{FsyncAlways, FsyncInterval, FsyncNever} {
		t.Run(policy.String(), func(t *testing.T) {
			for round := range 20 {
				dir := t.TempDir()
				e := open(t, dir, func(o *Options) { o.Fsync = policy })
				const writers = 8
				acked := make([][]string, writers)
				var started, wg sync.WaitGroup
				started.Add(writers)
				for w := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; ; i++ {
							if i == 10 {
								started.Done()
							}
							k := fmt.Sprintf("w%d-%d", w, i)
							if _, err := e.Set(Write{Key: k, Value: []byte(k)}); err != nil {
								if !errors.Is(err, ErrClosed) {
									t.Errorf("Set during Close: %v, want ErrClosed", err)
								}
								if i < 10 {
									started.Done()
								}
								return
							}
							acked[w] = append(acked[w], k)
						}
					}()
				}
				started.Wait()
				if err := e.Close(); err != nil {
					t.Fatal(err)
				}
				returned := make(chan struct{})
				go func() { wg.Wait(); close(returned) }()
				select {
				case <-returned:
				case <-time.After(30 * time.Second):
					t.Fatalf("round %d: writers still waiting 30 s after Close", round)
				}
				e = open(t, dir, func(o *Options) { o.Fsync = policy })
				for w := range writers {
					for _, k := range acked[w] {
						if _, ok := mustGet(t, e, k); !ok {
							t.Fatalf("round %d: acknowledged %s lost", round, k)
						}
					}
				}
				e.Close()
			}
		})
	}
}

// ScanIn and DeleteChildrenIn see only the slots they are given, and
// ScanIn only the keys after its cursor; PrefixSlot is the one slot of
// a tagged prefix.
func TestSlotRestrictedScanAndDelete(t *testing.T) {
	e := open(t, t.TempDir())
	keys := []string{"p||a", "p||b", "p||c", "p||d", "p||{t}x", "p||{t}y"}
	for _, k := range keys {
		if _, err := e.Set(Write{Key: k, Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	all := make([]int, NumSlots)
	for i := range all {
		all[i] = i
	}
	names := func(its []Item) string {
		var s []string
		for _, it := range its {
			s = append(s, it.Key)
		}
		return strings.Join(s, ",")
	}
	if got := names(e.ScanIn(all, "p||", "p||b", 3)); got != "p||c,p||d,p||{t}x" {
		t.Errorf("scan after p||b: %s", got)
	}
	if got := names(e.ScanIn([]int{SlotOf("p||a"), -1, NumSlots}, "p||", "", 0)); got != "p||a" {
		t.Errorf("scan of p||a's slot: %s", got)
	}
	s, ok := PrefixSlot("p||{t}")
	if !ok || s != SlotOf("p||{t}x") {
		t.Errorf("PrefixSlot(p||{t}) = %d %v", s, ok)
	}
	if _, ok := PrefixSlot("p||{t"); ok {
		t.Error("an open tag has a slot")
	}
	if n, err := e.DeleteChildrenIn("p||", []int{s}); err != nil || n != 2 {
		t.Errorf("delete children in the tag's slot: %d %v", n, err)
	}
	if e.Len() != 4 {
		t.Errorf("%d keys left, want 4", e.Len())
	}
	if _, err := e.DeleteChildrenIn("p||", []int{NumSlots}); err == nil {
		t.Error("a slot out of range is accepted")
	}
}

// TestExpiredDeleteMakesNoVersion: deleting an expired key, singly or by
// prefix, makes no new version whether or not the sweeper removed it yet,
// so that the slot's versions depend only on the operations (the
// cluster's property test caught engines whose sweeper ran at different
// times disagreeing on versions).
func TestExpiredDeleteMakesNoVersion(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	e := open(t, t.TempDir(), func(o *Options) {
		o.Now = func() time.Time { return time.Unix(0, now.Load()) }
		o.ExpiryInterval = time.Hour // the sweeper never runs here
	})
	defer e.Close()
	for _, k := range []string{"{s}a", "{s}p||1"} {
		if _, err := e.Set(Write{Key: k, Value: []byte("v"), TTLSeconds: 1}); err != nil {
			t.Fatal(err)
		}
	}
	slot := SlotOf("{s}a")
	before := e.SlotSeq(slot)
	now.Add(int64(2 * time.Second))
	if err := e.Delete(Write{Key: "{s}a"}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.DeletePrefix("{s}p||"); err != nil || n != 0 {
		t.Fatalf("delete prefix of expired keys: %d, %v", n, err)
	}
	if got := e.SlotSeq(slot); got != before {
		t.Fatalf("deleting expired keys moved the slot's version from %d to %d", before, got)
	}
}
