package statestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"mecha/internal/fsutil"
)

// propKeys is the key universe of the model test: few keys, so that writes
// collide, nested with "||" so that DeletePrefix and DeleteChildren differ,
// and with {hash tags} so that some prefixes touch one slot and some all.
var propKeys = []string{
	"a", "a||", "a||x", "a||y", "a||b||y", "a||b||z", "ab||x", "b",
	"{t}", "{t}||z", "{t}||a||b", "x{t}||q", "{u}||z",
}

// propPrefixes are the prefixes scanned and deleted; "" is refused by the
// deletes and lists everything in a scan, "zz" matches nothing.
var propPrefixes = []string{
	"", "a", "a||", "a||b", "a||b||", "ab", "b", "{t}", "{t}||", "{t}||a||",
	"x{t}", "x{t}||", "{u}||", "zz",
}

// propClock is Options.Now for the tests: it only moves when the test
// advances it. The engine's expiry goroutine reads it too, hence atomic.
type propClock struct{ ns atomic.Int64 }

func (c *propClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *propClock) nanos() int64            { return c.ns.Load() }
func (c *propClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// modelEntry is what the model knows of a key. Expired entries stay in
// the model (they are invisible, as in the engine) so that their stale
// versions can be offered as ETags.
type modelEntry struct {
	value   []byte
	version uint64
	expires int64 // unix ns, 0 for no TTL
}

func (m modelEntry) live(now int64) bool { return m.expires == 0 || m.expires > now }

// propModel is the reference the engine is checked against.
type propModel struct {
	entries map[string]modelEntry
	// history holds every version a key was given, oldest first: the
	// source of stale ETags.
	history map[string][]uint64
	// slotMax is the highest version the engine handed out per slot:
	// slot sequence numbers never go back, across crashes included.
	slotMax map[uint16]uint64
}

func newPropModel() *propModel {
	return &propModel{entries: map[string]modelEntry{}, history: map[string][]uint64{}, slotMax: map[uint16]uint64{}}
}

func (m *propModel) get(key string, now int64) (modelEntry, bool) {
	en, ok := m.entries[key]
	if !ok || !en.live(now) {
		return modelEntry{}, false
	}
	return en, true
}

// accepts reports whether a transaction passes its ETag and first-write
// checks, seeing its own earlier writes. A key written earlier in the
// transaction has a version no ETag drawn by the test can name (it is
// larger than every version handed out so far), so it is staged as 0.
func (m *propModel) accepts(ws []Write, now int64) bool {
	view := map[string]*modelEntry{}
	for _, w := range ws {
		var cur modelEntry
		var exists bool
		if v, ok := view[w.Key]; ok {
			if v != nil {
				cur, exists = *v, true
			}
		} else {
			cur, exists = m.get(w.Key, now)
		}
		if w.ETag != nil && *w.ETag != "" {
			want, err := ParseETag(*w.ETag)
			if err != nil || !exists || cur.version != want {
				return false
			}
		} else if w.FirstWrite && exists && !w.Delete {
			return false
		}
		if w.Delete {
			view[w.Key] = nil
		} else {
			view[w.Key] = &modelEntry{}
		}
	}
	return true
}

// commit applies an accepted transaction with the versions the engine
// returned, checking that they only go up within each slot.
func (m *propModel) commit(t *rapid.T, ws []Write, versions []uint64, now int64) {
	t.Helper()
	if len(versions) != len(ws) {
		t.Fatalf("Apply returned %d versions for %d writes", len(versions), len(ws))
	}
	for i, w := range ws {
		s := slotOf(w.Key)
		if w.Delete {
			// Deleting nothing need not take a new version; a delete
			// never takes an old one.
			if versions[i] != 0 && versions[i] < m.slotMax[s] {
				t.Fatalf("delete %d (key %q) got version %d, but slot %d already handed out %d", i, w.Key, versions[i], s, m.slotMax[s])
			}
			m.slotMax[s] = max(m.slotMax[s], versions[i])
			delete(m.entries, w.Key)
			continue
		}
		if versions[i] <= m.slotMax[s] {
			t.Fatalf("write %d (key %q) got version %d, but slot %d already handed out %d", i, w.Key, versions[i], s, m.slotMax[s])
		}
		m.slotMax[s] = versions[i]
		en := modelEntry{value: bytes.Clone(w.Value), version: versions[i]}
		if w.TTLSeconds > 0 {
			en.expires = now + w.TTLSeconds*int64(time.Second)
		}
		m.entries[w.Key] = en
		m.history[w.Key] = append(m.history[w.Key], versions[i])
	}
}

// deletePrefix removes the matching keys and returns how many were live.
func (m *propModel) deletePrefix(prefix string, children bool, now int64) int64 {
	var n int64
	for k, en := range m.entries {
		if matchPrefix(k, prefix, children) {
			if en.live(now) {
				n++
			}
			delete(m.entries, k)
		}
	}
	return n
}

func (m *propModel) scan(prefix string, limit int, now int64) []string {
	var out []string
	for k, en := range m.entries {
		if strings.HasPrefix(k, prefix) && en.live(now) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func (m *propModel) liveCount(now int64) int {
	n := 0
	for _, en := range m.entries {
		if en.live(now) {
			n++
		}
	}
	return n
}

// propMachine drives one engine and its model through a rapid run.
type propMachine struct {
	base  string // holds every data directory of the run
	dir   string
	gen   int
	e     *Engine
	clock *propClock
	m     *propModel
}

func (p *propMachine) options(dir string) Options {
	return Options{
		Dir:              dir,
		Fsync:            FsyncAlways, // every acknowledged write survives a crash
		SnapshotLogBytes: -1,          // snapshots only when the test says
		ExpiryInterval:   50 * time.Millisecond,
		Logger:           quiet(),
		Now:              p.clock.Now,
		// The runs reopen the store hundreds of times: a smaller
		// preallocation keeps them from reading 16 MiB of zeros each
		// time, and is no different to recovery.
		preallocBytes: 64 << 10,
	}
}

func (p *propMachine) open(t *rapid.T, dir string) *Engine {
	t.Helper()
	e, err := Open(p.options(dir))
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return e
}

// drawETag picks no ETag, an empty one (the same as none), the key's
// current version (or the last it had, when it expired or was deleted),
// one of its older versions, or one that was never handed out.
func (p *propMachine) drawETag(t *rapid.T, key string) *string {
	switch rapid.IntRange(0, 9).Draw(t, "etagKind") {
	case 0, 1, 2, 3:
		return nil
	case 4:
		return ptr("")
	case 5, 6, 7:
		if en, ok := p.m.entries[key]; ok {
			return ptr(ETag(en.version))
		}
		if h := p.m.history[key]; len(h) > 0 {
			return ptr(ETag(h[len(h)-1]))
		}
	case 8:
		if h := p.m.history[key]; len(h) > 0 {
			return ptr(ETag(h[rapid.IntRange(0, len(h)-1).Draw(t, "staleIndex")]))
		}
	}
	// Far above any version the run can reach.
	return ptr(ETag(1<<40 + rapid.Uint64Range(0, 1000).Draw(t, "bogusETag")))
}

func (p *propMachine) drawWrite(t *rapid.T, allowDelete bool) Write {
	w := Write{Key: rapid.SampledFrom(propKeys).Draw(t, "key")}
	if allowDelete && rapid.IntRange(0, 3).Draw(t, "kind") == 0 {
		w.Delete = true
	} else {
		w.Value = rapid.SliceOfN(rapid.Byte(), 0, 12).Draw(t, "value")
		w.FirstWrite = rapid.IntRange(0, 4).Draw(t, "firstWrite") == 0
		w.TTLSeconds = rapid.SampledFrom([]int64{0, 0, 0, -1, 1, 2, 3, 4, 5}).Draw(t, "ttl")
	}
	w.ETag = p.drawETag(t, w.Key)
	return w
}

// apply runs writes through Set, Delete or Apply and checks the outcome
// against the model.
func (p *propMachine) apply(t *rapid.T, ws []Write, call func([]Write) ([]uint64, error)) {
	t.Helper()
	now := p.clock.nanos()
	ok := p.m.accepts(ws, now)
	versions, err := call(ws)
	if !ok {
		if !errors.Is(err, ErrETagMismatch) {
			t.Fatalf("writes %s: got err %v, want one wrapping ErrETagMismatch", fmtWrites(ws), err)
		}
		return // the invariant check proves nothing changed
	}
	if err != nil {
		t.Fatalf("writes %s: %v", fmtWrites(ws), err)
	}
	p.m.commit(t, ws, versions, now)
}

func fmtWrites(ws []Write) string {
	var b strings.Builder
	for i, w := range ws {
		if i > 0 {
			b.WriteString(", ")
		}
		etag := "-"
		if w.ETag != nil {
			etag = fmt.Sprintf("%q", *w.ETag)
		}
		fmt.Fprintf(&b, "{%q del=%v etag=%s first=%v ttl=%d}", w.Key, w.Delete, etag, w.FirstWrite, w.TTLSeconds)
	}
	return b.String()
}

// check compares every key of the universe, Len and the slot sequence
// numbers with the model.
func (p *propMachine) check(t *rapid.T) {
	t.Helper()
	now := p.clock.nanos()
	for _, k := range propKeys {
		it, ok, err := p.e.Get(k)
		if err != nil {
			t.Fatalf("Get(%q): %v", k, err)
		}
		want, wantOK := p.m.get(k, now)
		if ok != wantOK {
			t.Fatalf("Get(%q) exists=%v, model says %v (model entry %+v, now %d)", k, ok, wantOK, p.m.entries[k], now)
		}
		if !ok {
			continue
		}
		if !bytes.Equal(it.Value, want.value) || it.Version != want.version {
			t.Fatalf("Get(%q) = %q v%d, model %q v%d", k, it.Value, it.Version, want.value, want.version)
		}
		var wantExp time.Time
		if want.expires != 0 {
			wantExp = time.Unix(0, want.expires)
		}
		if !it.Expires.Equal(wantExp) {
			t.Fatalf("Get(%q) expires %v, model %v", k, it.Expires, wantExp)
		}
	}
	if n, want := p.e.Len(), p.m.liveCount(now); n != want {
		t.Fatalf("Len() = %d, model %d", n, want)
	}
	for s, v := range p.m.slotMax {
		if got := p.e.SlotSeq(int(s)); got < v {
			t.Fatalf("SlotSeq(%d) = %d, below version %d it handed out", s, got, v)
		}
	}
}

// crashCopy copies the files of src into dst as they are on disk now:
// what a machine crash would leave, since under FsyncAlways every
// acknowledged write has been written and synced. The segment named
// trim is cut to keep bytes: it is preallocated ahead with zeros, and
// copying and recovering those each time would make the test slow; a
// shorter run of zeros is what a smaller preallocation would leave.
func crashCopy(src, dst, trim string, keep int64) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, de := range ents {
		if !de.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(src, de.Name()))
		if err != nil {
			return err
		}
		var r io.Reader = f
		if de.Name() == trim {
			r = io.LimitReader(f, keep)
		}
		b, err := io.ReadAll(r)
		f.Close()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, de.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// TestPropertyModel runs random operation sequences against the engine and
// a model map, with a fake clock for TTLs, snapshots, clean reopens and
// simulated crashes.
func TestPropertyModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		base, err := os.MkdirTemp("", "crux-prop-")
		if err != nil {
			t.Fatal(err)
		}
		p := &propMachine{base: base, clock: &propClock{}, m: newPropModel()}
		p.clock.ns.Store(time.Unix(1_700_000_000, 0).UnixNano())
		p.dir = filepath.Join(base, "d0")
		p.e = p.open(t, p.dir)
		t.Cleanup(func() {
			p.e.Close()
			os.RemoveAll(base)
		})
		t.Repeat(map[string]func(*rapid.T){
			"": p.check,
			"Set": func(t *rapid.T) {
				w := p.drawWrite(t, false)
				p.apply(t, []Write{w}, func(ws []Write) ([]uint64, error) {
					v, err := p.e.Set(ws[0])
					if err != nil {
						return nil, err
					}
					return []uint64{v}, nil
				})
			},
			"SetWithCurrentETag": func(t *rapid.T) {
				// A version returned by Set is accepted as the ETag of the
				// next Set of that key.
				k := rapid.SampledFrom(propKeys).Draw(t, "key")
				v1, err := p.e.Set(Write{Key: k, Value: []byte("first")})
				if err != nil {
					t.Fatal(err)
				}
				p.m.commit(t, []Write{{Key: k, Value: []byte("first")}}, []uint64{v1}, p.clock.nanos())
				w := Write{Key: k, Value: []byte("second"), ETag: ptr(ETag(v1)), TTLSeconds: rapid.SampledFrom([]int64{0, -1, 1}).Draw(t, "ttl")}
				v2, err := p.e.Set(w)
				if err != nil {
					t.Fatalf("Set(%q) with the etag %d Set just returned: %v", k, v1, err)
				}
				p.m.commit(t, []Write{w}, []uint64{v2}, p.clock.nanos())
			},
			"Delete": func(t *rapid.T) {
				k := rapid.SampledFrom(propKeys).Draw(t, "key")
				w := Write{Key: k, Delete: true, ETag: p.drawETag(t, k)}
				p.apply(t, []Write{w}, func(ws []Write) ([]uint64, error) {
					// Delete returns no version (0: not checked).
					if err := p.e.Delete(ws[0]); err != nil {
						return nil, err
					}
					return []uint64{0}, nil
				})
			},
			"Apply": func(t *rapid.T) {
				n := rapid.IntRange(1, 4).Draw(t, "n")
				ws := make([]Write, n)
				for i := range ws {
					ws[i] = p.drawWrite(t, true)
				}
				p.apply(t, ws, p.e.Apply)
			},
			"DeletePrefix": func(t *rapid.T) {
				prefix := rapid.SampledFrom(propPrefixes).Draw(t, "prefix")
				children := rapid.Bool().Draw(t, "children")
				del := p.e.DeletePrefix
				if children {
					del = p.e.DeleteChildren
				}
				n, err := del(prefix)
				if prefix == "" {
					if err == nil {
						t.Fatal("deleting the empty prefix succeeded")
					}
					return
				}
				if err != nil {
					t.Fatalf("delete prefix %q children=%v: %v", prefix, children, err)
				}
				if want := p.m.deletePrefix(prefix, children, p.clock.nanos()); n != want {
					t.Fatalf("delete prefix %q children=%v removed %d, model %d", prefix, children, n, want)
				}
			},
			"Scan": func(t *rapid.T) {
				prefix := rapid.SampledFrom(propPrefixes).Draw(t, "prefix")
				limit := rapid.SampledFrom([]int{0, 0, 1, 2, 3}).Draw(t, "limit")
				now := p.clock.nanos()
				got := p.e.Scan(prefix, limit)
				want := p.m.scan(prefix, limit, now)
				if len(got) != len(want) {
					t.Fatalf("Scan(%q, %d) = %d items, model %v", prefix, limit, len(got), want)
				}
				for i, it := range got {
					en, _ := p.m.get(it.Key, now)
					if it.Key != want[i] || !bytes.Equal(it.Value, en.value) || it.Version != en.version {
						t.Fatalf("Scan(%q, %d)[%d] = %q %q v%d, model %q %q v%d", prefix, limit, i, it.Key, it.Value, it.Version, want[i], en.value, en.version)
					}
				}
			},
			"Advance": func(t *rapid.T) {
				// Whole seconds land exactly on expiry times: an entry
				// is gone at its expiry instant.
				d := rapid.SampledFrom([]time.Duration{time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 6 * time.Second}).Draw(t, "advance")
				p.clock.advance(d)
			},
			"Snapshot": func(t *rapid.T) {
				if err := p.e.Snapshot(); err != nil {
					t.Fatal(err)
				}
			},
			"CrashAndReopen": func(t *rapid.T) {
				p.gen++
				dir := filepath.Join(p.base, fmt.Sprintf("d%d", p.gen))
				// Under FsyncAlways nothing is buffered: the current
				// segment's valid data ends at its size.
				p.e.wal.mu.Lock()
				seg, end := segName(p.e.wal.segStart), p.e.wal.fileOff+int64(len(p.e.wal.buf))
				p.e.wal.mu.Unlock()
				zeros := rapid.SampledFrom([]int64{0, 1, 4, 8, 9, 64, 4096}).Draw(t, "preallocatedZeros")
				if err := crashCopy(p.dir, dir, seg, end+zeros); err != nil {
					t.Fatal(err)
				}
				old := p.e
				p.e = p.open(t, dir)
				_ = old.Close()
				os.RemoveAll(p.dir)
				p.dir = dir
			},
			"CloseAndReopen": func(t *rapid.T) {
				if err := p.e.Close(); err != nil {
					t.Fatalf("close: %v", err)
				}
				p.e = p.open(t, p.dir)
			},
		})
	})
}

// tornRecord is one acknowledged log record of TestPropertyTornTail and
// where it lies in the segment.
type tornRecord struct {
	writes     []Write
	start, end int64
}

// TestPropertyTornTail damages the end of the log as a crash can (a cut
// inside the last record, preallocated zeros, a half-written record after
// the valid data, or garbage) and checks that recovery keeps every record
// before the damage, drops the damaged one, and takes new writes that
// survive another reopen.
func TestPropertyTornTail(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		dir, err := os.MkdirTemp("", "crux-torn-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		opts := Options{Dir: dir, Fsync: FsyncAlways, SnapshotLogBytes: -1, Logger: quiet(), preallocBytes: 64 << 10}
		e, err := Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		n := rapid.IntRange(1, 12).Draw(t, "records")
		recs := make([]tornRecord, n)
		for i := range recs {
			ws := []Write{{Key: fmt.Sprintf("k%02d", i), Value: rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "value")}}
			if rapid.Bool().Draw(t, "txn") {
				ws = append(ws, Write{Key: fmt.Sprintf("k%02d||2", i), Value: rapid.SliceOfN(rapid.Byte(), 0, 8).Draw(t, "value2")})
			}
			start := e.wal.size()
			if _, err := e.Apply(ws); err != nil {
				t.Fatal(err)
			}
			recs[i] = tornRecord{writes: ws, start: start, end: e.wal.size()}
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		segs, err := listSegments(dir)
		if err != nil || len(segs) != 1 {
			t.Fatalf("segments %v, %v", segs, err)
		}
		path := filepath.Join(dir, segName(segs[0]))
		// Close keeps the preallocated tail: nothing but zeros follows
		// the records. The damage below is done to the records alone.
		seg, err := readSegment(path)
		if err != nil {
			t.Fatal(err)
		}
		last := recs[n-1]
		if int64(seg.size) < last.end || int64(seg.nonZero) > last.end {
			t.Fatalf("segment holds %d bytes, the last non-zero at %d, records end at %d", seg.size, seg.nonZero, last.end)
		}
		seg.upTo(int(last.end))
		data := seg.b[:last.end]
		zeros := func(label string) []byte { return make([]byte, rapid.IntRange(0, 64).Draw(t, label)) }

		lastSurvives, mayBeCorrupt := true, false
		damaged := data
		switch mode := rapid.SampledFrom([]string{"cut", "cutZeroFill", "tornRecord", "garbage", "zeros"}).Draw(t, "mode"); mode {
		case "cut":
			// The write of the last record stopped part way.
			cut := rapid.Int64Range(last.start, last.end-1).Draw(t, "cut")
			damaged = data[:cut]
			lastSurvives = false
		case "cutZeroFill":
			// The same inside a preallocated segment: zeros follow.
			cut := rapid.Int64Range(last.start, last.end-1).Draw(t, "cut")
			damaged = append(bytes.Clone(data[:cut]), make([]byte, last.end-cut)...)
			damaged = append(damaged, zeros("zeros")...)
			// A record whose cut-off bytes were zeros anyway is whole.
			lastSurvives = bytes.Equal(damaged[last.start:last.end], data[last.start:last.end])
		case "tornRecord":
			// A record after the valid data, partly written: its length
			// covers every non-zero byte after it, its checksum is wrong.
			payload := rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "payload")
			tail := zeros("zeros")
			length := uint32(len(payload)) + uint32(rapid.IntRange(0, len(tail)+16).Draw(t, "extraLength"))
			if length == 0 || rapid.IntRange(0, 9).Draw(t, "hugeLength") == 0 {
				length = uint32(rapid.Uint32Range(1, 1<<32-1).Draw(t, "length"))
				if length < uint32(len(payload)) {
					length = 1<<32 - 1
				}
			}
			covered := append(bytes.Clone(payload), tail...)
			if int(length) < len(covered) {
				covered = covered[:length]
			}
			hdr := binary.BigEndian.AppendUint32(nil, length)
			hdr = binary.BigEndian.AppendUint32(hdr, crc32.Checksum(covered, fsutil.Castagnoli)^1)
			damaged = append(append(append(bytes.Clone(data), hdr...), payload...), tail...)
		case "garbage":
			// Anything at all: recovery may call it corruption, but
			// must not panic, lose a record or invent one.
			g := rapid.SliceOfN(rapid.Byte(), 1, 32).Draw(t, "garbage")
			damaged = append(append(bytes.Clone(data), g...), zeros("zeros")...)
			mayBeCorrupt = true
		case "zeros":
			// Preallocated space only.
			damaged = append(bytes.Clone(data), zeros("zeros")...)
		}
		if err := os.WriteFile(path, damaged, 0o644); err != nil {
			t.Fatal(err)
		}

		e, err = Open(opts)
		if err != nil {
			if mayBeCorrupt && errors.Is(err, ErrCorrupt) {
				return
			}
			t.Fatalf("reopen after damage: %v", err)
		}
		want := map[string][]byte{}
		for i, r := range recs {
			if i < n-1 || lastSurvives {
				for _, w := range r.writes {
					want[w.Key] = w.Value
				}
			}
		}
		check := func(e *Engine, what string) {
			t.Helper()
			for i, r := range recs {
				for _, w := range r.writes {
					it, ok, err := e.Get(w.Key)
					if err != nil {
						t.Fatal(err)
					}
					v, wantOK := want[w.Key]
					if ok != wantOK {
						t.Fatalf("%s: record %d of %d (key %q): present=%v, want %v", what, i, n, w.Key, ok, wantOK)
					}
					if ok && !bytes.Equal(it.Value, v) {
						t.Fatalf("%s: key %q = %q, want %q", what, w.Key, it.Value, v)
					}
				}
			}
			if got := e.Len(); got != len(want) {
				t.Fatalf("%s: Len() = %d, want %d", what, got, len(want))
			}
		}
		check(e, "after damage")
		// New writes go after the surviving records and survive a reopen.
		after := []Write{{Key: "after", Value: []byte("x")}, {Key: recs[n-1].writes[0].Key, Value: []byte("rewritten")}}
		if _, err := e.Apply(after); err != nil {
			t.Fatal(err)
		}
		for _, w := range after {
			want[w.Key] = w.Value
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		e, err = Open(opts)
		if err != nil {
			t.Fatalf("reopen after new writes: %v", err)
		}
		defer e.Close()
		check(e, "after new writes")
		if it, ok, _ := e.Get("after"); !ok || string(it.Value) != "x" {
			t.Fatal("a write after recovery was lost")
		}
	})
}
