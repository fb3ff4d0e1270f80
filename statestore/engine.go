// Package statestore is Crux, mecha's session store: an embedded, durable,
// memory-first key-value engine, pre-sharded into slots, with a
// write-ahead log and snapshots, and its Dapr component state.crux.
//
// The key space is split into NumSlots slots by a stable hash of the key
// (or of its {hash tag}, as in Redis Cluster, so that related keys share a
// slot). The slot is the unit of locking today and of replication,
// migration and balancing later: every mutation carries (slot, sequence
// number), a replica can tail a slot's records from the log, and a new
// owner can copy a slot's snapshot plus the tail.
package statestore

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"mecha/internal/dirlock"
	"mecha/internal/fsutil"
)

// NumSlots is the fixed number of slots the key space is pre-sharded into
// (2^10: hashSlot takes the top 10 bits of a 64-bit product).
const NumSlots = 1024

// MaxKeyBytes is the longest key the store accepts.
const MaxKeyBytes = 64 << 10

// inputError is an error caused by the request, not the store: APIs map
// it to a 400 / InvalidArgument through its InvalidInput method.
type inputError string

// Error implements error.
func (e inputError) Error() string { return string(e) }

// InvalidInput marks the error as the caller's.
func (e inputError) InvalidInput() bool { return true }

// Errors. Callers map them to API error codes; the input errors answer
// InvalidInput() == true.
var (
	ErrClosed             = errors.New("store is closed")
	ErrFailed             = errors.New("store failed after an I/O error; reopen it")
	ErrNoSpace            = errors.New("no space for the write")
	ErrKeyEmpty     error = inputError("key is empty")
	ErrKeyTooLong   error = inputError(fmt.Sprintf("key is longer than %d bytes", MaxKeyBytes))
	ErrValueTooBig  error = inputError("value is larger than the configured maximum (--max-value-bytes)")
	ErrETagMismatch       = errors.New("etag mismatch")
	ErrETagInvalid  error = inputError("etag is not a version number")
	ErrBadTTL       error = inputError("ttlInSeconds must be -1 (no TTL) or a positive number of seconds")
	ErrLocked             = dirlock.ErrLocked
)

// Options configure an Engine.
type Options struct {
	// Dir holds the log segments and snapshots.
	Dir string
	// Fsync is the durability policy; FsyncInterval by default.
	Fsync FsyncPolicy
	// FsyncInterval is the group commit period; 10ms by default.
	FsyncInterval time.Duration
	// SegmentBytes rotates the log past this size; 64 MiB by default.
	SegmentBytes int64
	// SnapshotLogBytes takes a snapshot once this much log accumulated
	// since the last one; 256 MiB by default, negative turns periodic
	// snapshots off.
	SnapshotLogBytes int64
	// MaxValueBytes caps values; 0 means 16 MiB.
	MaxValueBytes int
	// ExpiryInterval is how often active expiry runs; 100ms by default.
	ExpiryInterval time.Duration
	Logger         *slog.Logger
	// Now is the clock, for tests.
	Now func() time.Time
	// preallocBytes is how far ahead the log allocates its segment;
	// preallocChunk, unless a test that reopens many times shrinks it.
	preallocBytes int64
}

func (o *Options) defaults() {
	if o.FsyncInterval <= 0 {
		o.FsyncInterval = 10 * time.Millisecond
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 64 << 20
	}
	if o.SnapshotLogBytes == 0 {
		o.SnapshotLogBytes = 256 << 20
	}
	if o.MaxValueBytes <= 0 {
		o.MaxValueBytes = 16 << 20
	}
	if o.ExpiryInterval <= 0 {
		o.ExpiryInterval = 100 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.preallocBytes <= 0 {
		o.preallocBytes = preallocChunk
	}
}

type slot struct {
	// mu guards m and seq. A map value is never modified: a write
	// replaces the record, so readers may keep the value they read.
	mu  sync.RWMutex
	m   keyMap
	seq uint64
	// scratch encodes the slot's single-write records (under mu), so the
	// hot path allocates nothing for them.
	scratch []byte
}

// put stores a new record for key.
func (s *slot) put(key string, value []byte, version uint64, expires int64) {
	s.m.put(key, value, version, expires)
}

// Engine is an open store. It is safe for concurrent use.
type Engine struct {
	opts  Options
	log   *slog.Logger
	slots [NumSlots]slot
	wal   *wal
	lock  *dirlock.Lock
	// seed keys the slots' key hashes; it is per process, never stored.
	seed maphash.Seed
	// repl replicates the slots' records (replica.go); nil when single.
	repl atomic.Pointer[replicatorBox]

	// snapMu serializes snapshots; lastSnapLSN is guarded by it.
	snapMu      sync.Mutex
	lastSnapLSN uint64

	done      chan struct{}
	wg        sync.WaitGroup // the background goroutines: interval fsync, expiry, snapshotter
	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the store in opts.Dir and recovers it:
// the newest snapshot is loaded and the log after it replayed. A torn last
// record is truncated; any other damaged record stops recovery with an
// error naming the file and offset.
func Open(opts Options) (*Engine, error) {
	opts.defaults()
	if opts.Dir == "" {
		return nil, errors.New("statestore: Options.Dir is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	lock, err := dirlock.Acquire(opts.Dir)
	if err != nil {
		return nil, err
	}
	e := &Engine{opts: opts, log: opts.Logger, lock: lock, done: make(chan struct{}), seed: maphash.MakeSeed()}
	for i := range e.slots {
		e.slots[i].m = newKeyMap(e.seed, 0)
	}
	start := time.Now()
	segStart, fileOff, keys, err := e.recover()
	if err != nil {
		lock.Release()
		return nil, err
	}
	e.wal, err = openWAL(opts.Dir, opts.Fsync, opts.preallocBytes, segStart, fileOff)
	if err != nil {
		lock.Release()
		return nil, err
	}
	e.log.Info("crux store opened", "dir", opts.Dir, "keys", keys, "fsync", opts.Fsync.String(), "recovery", time.Since(start).Round(time.Millisecond))
	e.wg.Add(3)
	go func() {
		defer e.wg.Done()
		e.wal.run(opts.FsyncInterval, e.done, func(err error) {
			e.log.Error("crux log write failed; the store refuses writes until reopened", "err", err)
		})
	}()
	go func() { defer e.wg.Done(); e.expiryLoop() }()
	go func() { defer e.wg.Done(); e.snapshotLoop() }()
	return e, nil
}

// slotOf maps a key to its slot: CRC-32C (hardware accelerated, and
// stable across processes, which the log needs) of the key, or of its
// hash tag: as in Redis Cluster, the part between the first '{' and the
// next '}' when not empty.
func slotOf(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return hashSlot(key[i+1 : i+1+j])
		}
	}
	return hashSlot(key)
}

func hashSlot(s string) uint16 {
	c := crc32.Update(0, fsutil.Castagnoli, unsafe.Slice(unsafe.StringData(s), len(s)))
	// Fibonacci hashing: the top bits of the product spread keys that
	// differ in a few bytes across all slots.
	return uint16((uint64(c) * 0x9E3779B97F4A7C15) >> (64 - 10))
}

// SlotOf exposes the slot of a key, for routing and tests.
func SlotOf(key string) int { return int(slotOf(key)) }

func (e *Engine) now() int64 { return e.opts.Now().UnixNano() }

func checkKey(key string) error {
	if key == "" {
		return ErrKeyEmpty
	}
	if len(key) > MaxKeyBytes {
		return ErrKeyTooLong
	}
	return nil
}

// Item is a stored value as read.
type Item struct {
	Key     string
	Value   []byte // shared: do not modify
	Version uint64
	// Expires is the expiry time; zero when the key has no TTL.
	Expires time.Time
}

// ETag renders a version as an ETag.
func ETag(v uint64) string { return strconv.FormatUint(v, 10) }

// ParseETag reads an ETag made by ETag.
func ParseETag(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%w: %q", ErrETagInvalid, s)
	}
	return v, nil
}

func item(key string, en *recHeader) Item {
	it := Item{Key: key, Value: en.value(), Version: en.version}
	if en.expires != 0 {
		it.Expires = time.Unix(0, en.expires)
	}
	return it
}

// Get reads a key. ok is false when it does not exist or has expired.
func (e *Engine) Get(key string) (Item, bool, error) {
	if err := checkKey(key); err != nil {
		return Item{}, false, err
	}
	s := &e.slots[slotOf(key)]
	s.mu.RLock()
	en, ok := s.m.get(key)
	s.mu.RUnlock()
	if !ok || !en.live(e.now()) {
		return Item{}, false, nil
	}
	return item(key, en), true, nil
}

// Write is one mutation of a Set, Delete or transaction.
type Write struct {
	Key    string
	Delete bool
	Value  []byte
	// ETag, when set, must equal the key's current version.
	ETag *string
	// FirstWrite without an ETag fails when the key exists.
	FirstWrite bool
	// TTL in seconds: 0 keeps no TTL, -1 removes it, >0 expires the key.
	TTLSeconds int64
	// Strong waits, in a replicated store, until every in-sync replica
	// has the write (Dapr's consistency "strong"); a single store
	// ignores it.
	Strong bool
}

// Set writes one key and returns its new version.
func (e *Engine) Set(w Write) (uint64, error) {
	w.Delete = false
	return e.writeOne(&w)
}

// Delete removes one key. Deleting a missing key without an ETag is not
// an error.
func (e *Engine) Delete(w Write) error {
	w.Delete = true
	_, err := e.writeOne(&w)
	return err
}

// writeOne is Apply for a single write, without the bookkeeping a
// transaction needs: the hot path of the store.
func (e *Engine) writeOne(w *Write) (uint64, error) {
	if err := e.checkWrite(w); err != nil {
		return 0, err
	}
	si := slotOf(w.Key)
	s := &e.slots[si]
	s.mu.Lock()
	seq, wait, err := e.writeLocked(s, si, w)
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if wait != nil {
		if err := wait(); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

// writeLocked is writeOne under the slot's lock. wait, when not nil, is
// the replication's acknowledgement to wait for once the lock is
// released.
func (e *Engine) writeLocked(s *slot, si uint16, w *Write) (uint64, func() error, error) {
	// Read the clock only when a TTL is involved.
	var now int64
	hk := s.m.hash(w.Key)
	cur, exists := s.m.getHashed(hk, w.Key)
	if exists && cur.expires != 0 {
		now = e.now()
		if !cur.live(now) {
			exists = false
		}
	}
	var curVersion uint64
	if exists {
		curVersion = cur.version
	}
	if err := checkConcurrency(w, curVersion, exists); err != nil {
		return 0, nil, err
	}
	var ops [1]op
	o := &ops[0]
	*o = op{slot: si, seq: s.seq + 1, key: w.Key}
	if w.Delete {
		if !exists {
			// Nothing to delete: no record, no new version. An expired
			// record counts as none whether or not the sweeper removed it
			// yet, so that the slot's versions do not depend on when it
			// ran (replicas and the cluster's routers see the same).
			return s.seq, nil, nil
		}
		o.kind = opDelete
	} else {
		o.kind, o.value = opSet, w.Value
		if w.TTLSeconds > 0 {
			if now == 0 {
				now = e.now()
			}
			o.expires = now + w.TTLSeconds*int64(time.Second)
		}
	}
	rep := e.replicator()
	if rep != nil {
		if err := rep.Admit(SlotTx{e: e, i: si}, w.Strong); err != nil {
			return 0, nil, err
		}
	}
	s.scratch = appendRecord(s.scratch[:0], ops[:])
	t, err := e.wal.append(s.scratch)
	if err != nil {
		return 0, nil, err
	}
	// Holding the slot lock while the record reaches the OS keeps
	// readers from seeing a value a crash could still take back.
	if err := e.wal.wait(t, e.opts.Fsync == FsyncAlways); err != nil {
		return 0, nil, err
	}
	s.seq = o.seq
	if o.kind == opSet {
		r, _ := newRec(o.key, o.value, o.seq, o.expires)
		s.m.insert(hk, o.key, r)
	} else {
		s.m.del(o.key)
	}
	var wait func() error
	if rep != nil {
		wait = rep.Logged(int(si), o.seq, 1, s.scratch, w.Strong)
	}
	if cap(s.scratch) > 64<<10 {
		s.scratch = nil // do not keep a large value's buffer per slot
	}
	return o.seq, wait, nil
}

// checkWrite validates a write before any lock is taken.
func (e *Engine) checkWrite(w *Write) error {
	if err := checkKey(w.Key); err != nil {
		return err
	}
	if !w.Delete && len(w.Value) > e.opts.MaxValueBytes {
		return fmt.Errorf("%w: %d > %d bytes", ErrValueTooBig, len(w.Value), e.opts.MaxValueBytes)
	}
	if w.TTLSeconds < -1 {
		return fmt.Errorf("%w: %d", ErrBadTTL, w.TTLSeconds)
	}
	if w.ETag != nil && *w.ETag != "" {
		if _, err := ParseETag(*w.ETag); err != nil {
			return err
		}
	}
	return nil
}

// Apply runs writes as one atomic transaction, in order: either all are
// applied and logged as one record, or none (an ETag mismatch anywhere
// fails the whole transaction). It returns the new version of each write.
func (e *Engine) Apply(writes []Write) ([]uint64, error) {
	if len(writes) == 0 {
		return nil, nil
	}
	for i := range writes {
		if err := e.checkWrite(&writes[i]); err != nil {
			if len(writes) > 1 {
				return nil, fmt.Errorf("operation %d (key %q): %w", i, writes[i].Key, err)
			}
			return nil, err
		}
	}
	// Lock the slots involved in ascending order: no deadlock between
	// transactions.
	slots := make([]uint16, len(writes))
	for i := range writes {
		slots[i] = slotOf(writes[i].Key)
	}
	locked := append([]uint16(nil), slots...)
	sort.Slice(locked, func(i, j int) bool { return locked[i] < locked[j] })
	locked = dedupe(locked)
	for _, s := range locked {
		e.slots[s].mu.Lock()
	}
	defer func() {
		for _, s := range locked {
			e.slots[s].mu.Unlock()
		}
	}()

	now := e.now()
	// Check every condition against the state as the transaction sees it
	// (earlier writes of the same transaction included).
	// view holds the version each key has after the earlier writes of
	// the transaction; 0 means deleted.
	view := map[string]uint64{}
	lookup := func(key string, s uint16) (uint64, bool) {
		if v, ok := view[key]; ok {
			return v, v != 0
		}
		en, ok := e.slots[s].m.get(key)
		if !ok || !en.live(now) {
			return 0, false
		}
		return en.version, true
	}
	ops := make([]op, len(writes))
	next := map[uint16]uint64{}
	versions := make([]uint64, len(writes))
	for i := range writes {
		w, s := &writes[i], slots[i]
		cur, exists := lookup(w.Key, s)
		if err := checkConcurrency(w, cur, exists); err != nil {
			if len(writes) > 1 {
				return nil, fmt.Errorf("operation %d (key %q): %w", i, w.Key, err)
			}
			return nil, err
		}
		seq, ok := next[s]
		if !ok {
			seq = e.slots[s].seq
		}
		seq++
		next[s] = seq
		o := op{slot: s, seq: seq, key: w.Key}
		if w.Delete {
			o.kind = opDelete
			view[w.Key] = 0
		} else {
			o.kind, o.value = opSet, w.Value
			if w.TTLSeconds > 0 {
				o.expires = now + w.TTLSeconds*int64(time.Second)
			}
			view[w.Key] = seq
		}
		ops[i] = o
		versions[i] = seq
	}
	rep := e.replicator()
	strong := false
	for i := range writes {
		strong = strong || writes[i].Strong
	}
	if rep != nil {
		for _, s := range locked {
			if err := rep.Admit(SlotTx{e: e, i: s}, strong); err != nil {
				return nil, err
			}
		}
	}
	if err := e.logOps(ops); err != nil {
		return nil, err
	}
	for i := range ops {
		e.applyOp(&ops[i])
	}
	if rep == nil {
		return versions, nil
	}
	var waits []func() error
	for _, s := range locked {
		if wait := e.replicate(rep, s, ops, strong); wait != nil {
			waits = append(waits, wait)
		}
	}
	if len(waits) == 0 {
		return versions, nil
	}
	// The acknowledgements are awaited once the slots are unlocked.
	for _, s := range locked {
		e.slots[s].mu.Unlock()
	}
	locked = nil
	for _, wait := range waits {
		if err := wait(); err != nil {
			return nil, err
		}
	}
	return versions, nil
}

func dedupe(s []uint16) []uint16 {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func checkConcurrency(w *Write, curVersion uint64, exists bool) error {
	if w.ETag != nil && *w.ETag != "" {
		v, err := ParseETag(*w.ETag)
		if err != nil {
			return err
		}
		if !exists || curVersion != v {
			return fmt.Errorf("%w: key %q", ErrETagMismatch, w.Key)
		}
		return nil
	}
	if w.FirstWrite && exists && !w.Delete {
		return fmt.Errorf("%w: key %q exists and first-write needs its etag", ErrETagMismatch, w.Key)
	}
	return nil
}

// logOps appends ops as one record and waits until a group commit wrote
// it to the OS (and fsynced it, under FsyncAlways). Slot locks are held:
// the log order of a slot is its apply order.
func (e *Engine) logOps(ops []op) error {
	buf := getBuf()
	rec := appendRecord(buf.b[:0], ops)
	t, err := e.wal.append(rec)
	buf.b = rec
	putBuf(buf)
	if err != nil {
		return err
	}
	return e.wal.wait(t, e.opts.Fsync == FsyncAlways)
}

// applyOp applies a logged op to memory. The slot lock is held (or the
// engine is recovering, single-threaded).
func (e *Engine) applyOp(o *op) {
	s := &e.slots[o.slot]
	switch o.kind {
	case opInstall:
		s.m = newKeyMap(e.seed, 0)
		s.seq = o.seq
		return
	case opInstallItem:
		s.put(o.key, o.value, o.seq, o.expires)
		return
	}
	if o.seq > s.seq {
		s.seq = o.seq
	}
	switch o.kind {
	case opSet:
		s.put(o.key, o.value, o.seq, o.expires)
	case opDelete:
		s.m.del(o.key)
	case opDeletePrefix, opDeleteChildren:
		var doomed []string
		s.m.each(func(k string, _ *recHeader) bool {
			if matchPrefix(k, o.key, o.kind == opDeleteChildren) {
				doomed = append(doomed, k)
			}
			return true
		})
		for _, k := range doomed {
			s.m.del(k)
		}
	}
}

// matchPrefix reports whether key is under prefix; with children only,
// keys nested deeper (another "||" after the prefix) do not match.
func matchPrefix(key, prefix string, children bool) bool {
	if !strings.HasPrefix(key, prefix) {
		return false
	}
	return !children || !strings.Contains(key[len(prefix):], "||")
}

// DeletePrefix removes every key starting with prefix and returns how many
// live keys it removed. Each slot's removal is atomic and logged; the
// whole is not atomic across slots.
func (e *Engine) DeletePrefix(prefix string) (int64, error) {
	return e.deletePrefix(prefix, false)
}

// DeleteChildren removes the keys right under prefix (no further "||"
// after it), Dapr's DeleteWithPrefix semantics, and returns how many live
// keys it removed.
func (e *Engine) DeleteChildren(prefix string) (int64, error) {
	return e.deletePrefix(prefix, true)
}

func (e *Engine) deletePrefix(prefix string, children bool) (int64, error) {
	return e.deletePrefixIn(prefix, children, e.slotsFor(prefix))
}

// DeleteChildrenIn is DeleteChildren restricted to slots (each in
// [0, NumSlots)): a cluster member removes the keys of the slots it
// leads.
func (e *Engine) DeleteChildrenIn(prefix string, slots []int) (int64, error) {
	in := make([]uint16, 0, len(slots))
	for _, s := range slots {
		if s < 0 || s >= NumSlots {
			return 0, fmt.Errorf("slot %d out of range", s)
		}
		in = append(in, uint16(s))
	}
	return e.deletePrefixIn(prefix, true, in)
}

func (e *Engine) deletePrefixIn(prefix string, children bool, slots []uint16) (int64, error) {
	kind := byte(opDeletePrefix)
	if children {
		kind = opDeleteChildren
	}
	if prefix == "" {
		return 0, errors.New("prefix is empty")
	}
	var n int64
	now := e.now()
	for _, si := range slots {
		s := &e.slots[si]
		s.mu.Lock()
		// Only live keys count: expired ones are as good as gone, and the
		// slot's versions must not depend on whether the sweeper removed
		// them yet.
		var count int64
		s.m.each(func(k string, en *recHeader) bool {
			if matchPrefix(k, prefix, children) && en.live(now) {
				count++
			}
			return true
		})
		var wait func() error
		if count > 0 {
			o := op{kind: kind, slot: si, seq: s.seq + 1, key: prefix}
			rep := e.replicator()
			if rep != nil {
				if err := rep.Admit(SlotTx{e: e, i: si}, false); err != nil {
					s.mu.Unlock()
					return n, err
				}
			}
			if err := e.logOps([]op{o}); err != nil {
				s.mu.Unlock()
				return n, err
			}
			e.applyOp(&o)
			if rep != nil {
				wait = e.replicate(rep, si, []op{o}, false)
			}
		}
		s.mu.Unlock()
		if wait != nil {
			if err := wait(); err != nil {
				return n, err
			}
		}
		n += count
	}
	return n, nil
}

// PrefixSlot reports the one slot that can hold keys starting with
// prefix, when the prefix contains a complete hash tag ({tag}, not
// empty); ok is false when keys with the prefix may be in any slot.
func PrefixSlot(prefix string) (slot int, ok bool) {
	if i := strings.IndexByte(prefix, '{'); i >= 0 {
		if j := strings.IndexByte(prefix[i+1:], '}'); j > 0 {
			return int(slotOf(prefix)), true
		}
	}
	return 0, false
}

// slotsFor lists the slots that can hold keys with prefix: one when the
// prefix contains a complete hash tag, all otherwise.
func (e *Engine) slotsFor(prefix string) []uint16 {
	if s, ok := PrefixSlot(prefix); ok {
		return []uint16{uint16(s)}
	}
	out := make([]uint16, NumSlots)
	for i := range out {
		out[i] = uint16(i)
	}
	return out
}

// Scan returns the live keys starting with prefix, sorted by key, at most
// limit of them (0 means no limit). With a {hash tag} in the prefix only
// one slot is read: that is how the IM service lists a user's sessions.
func (e *Engine) Scan(prefix string, limit int) []Item {
	return e.scan(e.slotsFor(prefix), prefix, "", limit)
}

// ScanIn is Scan restricted to slots (each in [0, NumSlots); others are
// skipped) and to keys after the key after (exclusive; "" for none): a
// cluster member's part of a scan, and its paging.
func (e *Engine) ScanIn(slots []int, prefix, after string, limit int) []Item {
	in := make([]uint16, 0, len(slots))
	for _, s := range slots {
		if s >= 0 && s < NumSlots {
			in = append(in, uint16(s))
		}
	}
	return e.scan(in, prefix, after, limit)
}

func (e *Engine) scan(slots []uint16, prefix, after string, limit int) []Item {
	now := e.now()
	var out []Item
	for _, si := range slots {
		s := &e.slots[si]
		s.mu.RLock()
		s.m.each(func(k string, en *recHeader) bool {
			if strings.HasPrefix(k, prefix) && k > after && en.live(now) {
				out = append(out, item(k, en))
			}
			return true
		})
		s.mu.RUnlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// Len counts the live keys.
func (e *Engine) Len() int {
	now := e.now()
	n := 0
	for i := range e.slots {
		s := &e.slots[i]
		s.mu.RLock()
		s.m.each(func(_ string, en *recHeader) bool {
			if en.live(now) {
				n++
			}
			return true
		})
		s.mu.RUnlock()
	}
	return n
}

// SlotSeq is a slot's sequence number: the seq of its last mutation.
func (e *Engine) SlotSeq(slot int) uint64 {
	s := &e.slots[slot]
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq
}

// expiryLoop removes expired keys in the background, a bounded sample of
// a few slots per tick, so that it never holds a slot for long and never
// stalls the store. Expired keys are invisible to reads before that.
func (e *Engine) expiryLoop() {
	t := time.NewTicker(e.opts.ExpiryInterval)
	defer t.Stop()
	next := 0
	for {
		select {
		case <-e.done:
			return
		case <-t.C:
		}
		now := e.now()
		for i := 0; i < 64; i++ {
			s := &e.slots[next]
			next = (next + 1) % NumSlots
			s.mu.Lock()
			budget := 256
			var expired []string
			s.m.each(func(k string, en *recHeader) bool {
				if budget == 0 {
					return false
				}
				budget--
				if !en.live(now) {
					expired = append(expired, k)
				}
				return true
			})
			for _, k := range expired {
				s.m.del(k)
			}
			s.mu.Unlock()
		}
	}
}

// Close flushes the log, stops the background work and releases the
// directory. It is idempotent.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		close(e.done)
		e.wg.Wait()
		e.closeErr = e.wal.close()
		e.lock.Release()
	})
	return e.closeErr
}

// Sync fsyncs everything written so far, whatever the policy. Under
// FsyncNever that is the current segment only: segments sealed before
// were left to the OS's writeback.
func (e *Engine) Sync(ctx context.Context) error {
	if err := e.wal.commit(true); err != nil && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("%w: %w", ErrFailed, err)
	} else if err != nil {
		return err
	}
	return nil
}

type bufHolder struct{ b []byte }

var bufPool = sync.Pool{New: func() any { return &bufHolder{b: make([]byte, 0, 512)} }}

func getBuf() *bufHolder { return bufPool.Get().(*bufHolder) }

func putBuf(b *bufHolder) {
	if cap(b.b) <= 64<<10 {
		bufPool.Put(b)
	}
}
