package statestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"mecha/internal/fsutil"
)

// Replication hooks. The engine knows nothing of leaders and followers:
// statestore/cluster replicates each slot's records (internal/replica's
// model) through these hooks. A slot's replication state lives under the
// slot's lock, so that it is ordered with the slot's writes: the engine
// calls the Replicator with the lock held, and the replication takes it
// with WithSlot for everything else (applying a leader's records,
// answering a fetch, installing a copy).
//
// A slot's log offsets are its sequence numbers: the record of seq s is
// at offset s-1, and the log of a slot ends at its seq.

// Replicator replicates an engine's slots. Its methods are called with
// the slot's write lock held and must not block on another slot's.
type Replicator interface {
	// Admit says whether a write to the slot may be logged on this
	// member (it leads the slot); the error refuses the write, before
	// anything is logged. A strong write is also refused when too few
	// replicas are in sync to acknowledge it.
	Admit(t SlotTx, strong bool) error
	// Logged hands over the slot's part of a record just logged and
	// applied: n ops with seqs [first, first+n), encoded as one record in
	// rec (valid only during the call). When strong, the write waits for
	// the in-sync replicas: the engine calls wait after releasing the
	// lock, and fails the write with its error. wait may be nil.
	Logged(slot int, first uint64, n int, rec []byte, strong bool) (wait func() error)
}

// replicatorBox holds the engine's replicator: an interface in a pointer,
// for atomic.Pointer.
type replicatorBox struct{ r Replicator }

// SetReplicator makes r the replication of every later write; nil stops
// it.
func (e *Engine) SetReplicator(r Replicator) {
	if r == nil {
		e.repl.Store(nil)
		return
	}
	e.repl.Store(&replicatorBox{r})
}

func (e *Engine) replicator() Replicator {
	if b := e.repl.Load(); b != nil {
		return b.r
	}
	return nil
}

// replicate hands rep the ops of slot si among ops (one record's), and
// returns what to wait for.
func (e *Engine) replicate(rep Replicator, si uint16, ops []op, strong bool) func() error {
	var mine []op
	for i := range ops {
		if ops[i].slot == si {
			mine = append(mine, ops[i])
		}
	}
	if len(mine) == 0 {
		return nil
	}
	buf := getBuf()
	rec := appendRecord(buf.b[:0], mine)
	wait := rep.Logged(int(si), mine[0].seq, len(mine), rec, strong)
	buf.b = rec
	putBuf(buf)
	return wait
}

// SlotTx is one slot, locked for its replication (WithSlot).
type SlotTx struct {
	e *Engine
	i uint16
}

// WithSlot runs fn with slot's write lock held.
func (e *Engine) WithSlot(slot int, fn func(t SlotTx)) {
	s := &e.slots[slot]
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(SlotTx{e: e, i: uint16(slot)})
}

// Slot is the slot's number.
func (t SlotTx) Slot() int { return int(t.i) }

// Seq is the slot's seq: its log end offset.
func (t SlotTx) Seq() uint64 { return t.e.slots[t.i].seq }

// ErrNotContiguous refuses a leader's record that does not start right
// after the slot's last seq, or holds another slot's ops.
var ErrNotContiguous = errors.New("crux replication: record does not continue the slot")

// ApplyRecord logs and applies a record the slot's leader logged (the
// rec of its Replicator.Logged): its ops must all be this slot's, with
// seqs following the slot's. It returns how many ops it held. The record
// is buffered in the log, not yet written: the caller makes a fetch's
// records durable at once with Engine.FlushLog, before it reports them
// to the leader.
func (t SlotTx) ApplyRecord(rec []byte) (int, error) {
	if len(rec) < recordHeader {
		return 0, fmt.Errorf("%w: %d bytes", errBadRecord, len(rec))
	}
	payload := rec[recordHeader:]
	if int(binary.BigEndian.Uint32(rec)) != len(payload) || crc32.Checksum(payload, fsutil.Castagnoli) != binary.BigEndian.Uint32(rec[4:]) {
		return 0, fmt.Errorf("%w: length or checksum", errBadRecord)
	}
	ops, err := decodePayload(payload)
	if err != nil {
		return 0, err
	}
	s := &t.e.slots[t.i]
	for k := range ops {
		o := &ops[k]
		if o.slot != t.i || o.seq != s.seq+uint64(k)+1 || o.kind > opDeleteChildren {
			return 0, fmt.Errorf("%w: op %d (slot %d, seq %d, kind %d) after seq %d of slot %d", ErrNotContiguous, k, o.slot, o.seq, o.kind, s.seq, t.i)
		}
	}
	if err := t.e.wal.appendUnled(rec); err != nil {
		return 0, err
	}
	for k := range ops {
		t.e.applyOp(&ops[k])
	}
	return len(ops), nil
}

// Get reads key, which must be in this slot, as Engine.Get does.
func (t SlotTx) Get(key string) (Item, bool) {
	en, ok := t.e.slots[t.i].m.get(key)
	if !ok || !en.live(t.e.now()) {
		return Item{}, false
	}
	return item(key, en), true
}

// FlushLog writes what the log buffered (fsyncing it under FsyncAlways):
// a follower's applied records, before it reports them to its leader.
func (e *Engine) FlushLog() error {
	if err := e.wal.commit(e.opts.Fsync == FsyncAlways); err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrFailed, err)
	}
	return nil
}

// Items copies the slot's live keys: a copy for a replica to install.
func (t SlotTx) Items() []Item {
	now := t.e.now()
	var out []Item
	t.e.slots[t.i].m.each(func(k string, en *recHeader) bool {
		if en.live(now) {
			out = append(out, item(k, en))
		}
		return true
	})
	return out
}

// Install replaces the slot with a copy of the leader's at seq, logged
// as one record: a replica that cannot continue from its own records
// starts over from it.
func (t SlotTx) Install(seq uint64, items []Item) error {
	ops := make([]op, 0, len(items)+1)
	ops = append(ops, op{kind: opInstall, slot: t.i, seq: seq})
	for _, it := range items {
		if err := checkKey(it.Key); err != nil {
			return fmt.Errorf("crux replication: install: %w", err)
		}
		if it.Version == 0 || it.Version > seq || SlotOf(it.Key) != int(t.i) {
			return fmt.Errorf("crux replication: install: key %q (version %d) does not belong in slot %d at seq %d", it.Key, it.Version, t.i, seq)
		}
		o := op{kind: opInstallItem, slot: t.i, seq: it.Version, key: it.Key, value: it.Value}
		if !it.Expires.IsZero() {
			o.expires = it.Expires.UnixNano()
		}
		ops = append(ops, o)
	}
	if err := t.e.logOps(ops); err != nil {
		return err
	}
	for k := range ops {
		t.e.applyOp(&ops[k])
	}
	return nil
}
