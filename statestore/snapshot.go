package statestore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"mecha/internal/fsutil"
)

// Snapshot layout:
//
//	header = "CRUXSNAP" | format u32 (1) | start LSN u64
//	block  = length u32 | crc32c(payload) u32 | payload, one per slot in order
//	payload = slot u16 | seq uvarint | count uvarint
//	          | (key length uvarint | key | value length uvarint | value
//	             | version uvarint | expires varint) * count
//
// The start LSN is the log position the snapshot was taken at: recovery
// replays the segments from there, skipping ops whose seq the snapshot of
// their slot already holds. A snapshot is written to a temporary file,
// fsynced and renamed, so a visible snapshot is whole.
const (
	snapMagic  = "CRUXSNAP"
	snapFormat = 1
	snapPrefix = "snap-"
	snapSuffix = ".snap"
)

func snapName(start uint64) string { return fmt.Sprintf("%s%020d%s", snapPrefix, start, snapSuffix) }

func listSnapshots(dir string) ([]uint64, error) { return listNumbered(dir, snapPrefix, snapSuffix) }

type snapEntry struct {
	key string
	en  *recHeader
}

// Snapshot writes a snapshot of every slot and deletes the log segments
// and snapshots it makes obsolete. Writes continue while it runs: each
// slot is copied under its read lock for a moment.
func (e *Engine) Snapshot() error {
	e.snapMu.Lock()
	defer e.snapMu.Unlock()
	start, err := e.wal.rotate()
	if err != nil {
		return fmt.Errorf("snapshot: rotating the log: %w", err)
	}
	final := filepath.Join(e.opts.Dir, snapName(start))
	// A failed directory fsync leaves the snapshot in place under a name
	// that may not survive a power loss: the older files must stay too.
	if err := fsutil.Replace(final, func(w io.Writer) error { return e.writeSnapshot(w, start) }); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	e.lastSnapLSN = start
	// Older segments and snapshots are now covered by this snapshot.
	if segs, err := listSegments(e.opts.Dir); err == nil {
		for _, s := range segs {
			if s < start {
				os.Remove(filepath.Join(e.opts.Dir, segName(s)))
			}
		}
	}
	if snaps, err := listSnapshots(e.opts.Dir); err == nil {
		for _, s := range snaps {
			if s < start {
				os.Remove(filepath.Join(e.opts.Dir, snapName(s)))
			}
		}
	}
	return nil
}

// writeSnapshot writes the snapshot taken at log position start to w.
func (e *Engine) writeSnapshot(w io.Writer, start uint64) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	hdr := append([]byte(snapMagic), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(hdr[8:], snapFormat)
	binary.BigEndian.PutUint64(hdr[12:], start)
	if _, err := bw.Write(hdr); err != nil {
		return err
	}
	now := e.now()
	var entries []snapEntry
	var block []byte
	for i := range e.slots {
		s := &e.slots[i]
		entries = entries[:0]
		s.mu.RLock()
		seq := s.seq
		s.m.each(func(k string, en *recHeader) bool {
			if en.live(now) {
				entries = append(entries, snapEntry{k, en})
			}
			return true
		})
		s.mu.RUnlock()
		block = block[:0]
		block = append(block, make([]byte, 8)...)
		block = binary.BigEndian.AppendUint16(block, uint16(i))
		block = binary.AppendUvarint(block, seq)
		block = binary.AppendUvarint(block, uint64(len(entries)))
		for _, se := range entries {
			block = binary.AppendUvarint(block, uint64(len(se.key)))
			block = append(block, se.key...)
			v := se.en.value()
			block = binary.AppendUvarint(block, uint64(len(v)))
			block = append(block, v...)
			block = binary.AppendUvarint(block, se.en.version)
			block = binary.AppendVarint(block, se.en.expires)
		}
		binary.BigEndian.PutUint32(block, uint32(len(block)-8))
		binary.BigEndian.PutUint32(block[4:], crc32.Checksum(block[8:], fsutil.Castagnoli))
		if _, err := bw.Write(block); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// loadSnapshot fills the slots from the snapshot file.
func (e *Engine) loadSnapshot(path string, now int64) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	br := bufio.NewReaderSize(f, 1<<20)
	hdr := make([]byte, 20)
	if _, err := io.ReadFull(br, hdr); err != nil || string(hdr[:8]) != snapMagic || binary.BigEndian.Uint32(hdr[8:]) != snapFormat {
		return 0, fmt.Errorf("%w: %s: bad snapshot header", ErrCorrupt, path)
	}
	start := binary.BigEndian.Uint64(hdr[12:])
	off := int64(20)
	var payload []byte
	for i := 0; i < NumSlots; i++ {
		var bh [8]byte
		if _, err := io.ReadFull(br, bh[:]); err != nil {
			return 0, fmt.Errorf("%w: %s at offset %d: snapshot ends before slot %d", ErrCorrupt, path, off, i)
		}
		n := binary.BigEndian.Uint32(bh[:])
		if n > maxRecord || off+8+int64(n) > size {
			return 0, fmt.Errorf("%w: %s at offset %d: block length %d runs past the end of the file", ErrCorrupt, path, off, n)
		}
		if cap(payload) < int(n) {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(br, payload); err != nil {
			return 0, fmt.Errorf("%w: %s at offset %d: truncated block", ErrCorrupt, path, off)
		}
		if crc32.Checksum(payload, fsutil.Castagnoli) != binary.BigEndian.Uint32(bh[4:]) {
			return 0, fmt.Errorf("%w: %s at offset %d: checksum mismatch", ErrCorrupt, path, off)
		}
		if err := e.loadBlock(payload, i, now); err != nil {
			return 0, fmt.Errorf("%w: %s at offset %d: %v", ErrCorrupt, path, off, err)
		}
		off += 8 + int64(n)
	}
	return start, nil
}

func (e *Engine) loadBlock(p []byte, want int, now int64) error {
	if len(p) < 2 || int(binary.BigEndian.Uint16(p)) != want {
		return errors.New("slot out of order")
	}
	p = p[2:]
	seq, k := binary.Uvarint(p)
	if k <= 0 {
		return errors.New("bad seq")
	}
	p = p[k:]
	count, k := binary.Uvarint(p)
	if k <= 0 || count > uint64(len(p)) {
		return errors.New("bad count")
	}
	p = p[k:]
	s := &e.slots[want]
	s.seq = seq
	if count > 0 {
		s.m = newKeyMap(e.seed, int(count))
	}
	for i := uint64(0); i < count; i++ {
		kl, k := binary.Uvarint(p)
		if k <= 0 || kl == 0 || kl > uint64(len(p)-k) {
			return errors.New("bad key length")
		}
		p = p[k:]
		keyBytes := p[:kl]
		p = p[kl:]
		vl, k := binary.Uvarint(p)
		if k <= 0 || vl > uint64(len(p)-k) {
			return errors.New("bad value length")
		}
		p = p[k:]
		val := p[:vl]
		p = p[vl:]
		ver, k := binary.Uvarint(p)
		if k <= 0 {
			return errors.New("bad version")
		}
		p = p[k:]
		exp, k := binary.Varint(p)
		if k <= 0 {
			return errors.New("bad expiry")
		}
		p = p[k:]
		if exp == 0 || exp > now {
			s.m.put(string(keyBytes), val, ver, exp)
		}
	}
	if len(p) != 0 {
		return errors.New("trailing bytes")
	}
	return nil
}

// recover loads the newest snapshot and replays the log after it. It
// returns where appending resumes and how many keys were loaded.
func (e *Engine) recover() (segStart uint64, fileOff int64, keys int, err error) {
	dir := e.opts.Dir
	now := e.now()
	snaps, err := listSnapshots(dir)
	if err != nil {
		return 0, 0, 0, err
	}
	var from uint64
	if len(snaps) > 0 {
		newest := snaps[len(snaps)-1]
		if from, err = e.loadSnapshot(filepath.Join(dir, snapName(newest)), now); err != nil {
			return 0, 0, 0, err
		}
		e.lastSnapLSN = from
	}
	segs, err := listSegments(dir)
	if err != nil {
		return 0, 0, 0, err
	}
	var replay []uint64
	for _, s := range segs {
		if s >= from {
			replay = append(replay, s)
		}
	}
	if len(replay) == 0 {
		return from, 0, e.countKeys(), nil
	}
	for i, s := range replay {
		path := filepath.Join(dir, segName(s))
		last := i == len(replay)-1
		end, torn, err := scanSegment(path, last, func(ops []op) error {
			installing := false
			for j := range ops {
				o := &ops[j]
				switch {
				case o.kind == opInstall:
					installing = true
				case o.kind == opInstallItem && installing:
				case o.seq <= e.slots[o.slot].seq:
					continue // already in the snapshot
				}
				e.applyOp(o)
				if (o.kind == opSet || o.kind == opInstallItem) && o.expires != 0 && o.expires <= now {
					e.slots[o.slot].m.del(o.key)
				}
			}
			return nil
		})
		if err != nil {
			return 0, 0, 0, err
		}
		if i+1 < len(replay) && s+uint64(end) != replay[i+1] {
			return 0, 0, 0, fmt.Errorf("%w: %s ends at log position %d but the next segment starts at %d", ErrCorrupt, path, s+uint64(end), replay[i+1])
		}
		if last {
			if torn {
				e.log.Warn("crux log: zeroing a torn last record", "file", path, "offset", end)
				if err := zeroTail(path, end); err != nil {
					return 0, 0, 0, err
				}
			}
			// The preallocated zeros after end stay: appends resume at
			// end, into space the disk already gave.
			segStart, fileOff = s, end
		}
	}
	return segStart, fileOff, e.countKeys(), nil
}

// zeroTail overwrites the damaged bytes after end in the segment at path
// with zeros, up to the last non-zero byte, and fsyncs them: the segment
// then ends cleanly at end, and keeps its size (the preallocation). A
// later crash must not find the old torn bytes behind new, shorter
// records.
func zeroTail(path string, end int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	dirty, err := dataEnd(f, st.Size())
	if err != nil || dirty <= end {
		return err
	}
	if _, err := fsutil.WriteAt(f, make([]byte, dirty-end), end); err != nil {
		return fmt.Errorf("zeroing the torn tail of %s: %w", path, err)
	}
	if err := fsutil.DataSync(f); err != nil {
		return fmt.Errorf("zeroing the torn tail of %s: %w", path, err)
	}
	return nil
}

func (e *Engine) countKeys() int {
	n := 0
	for i := range e.slots {
		n += e.slots[i].m.len()
	}
	return n
}

// snapshotLoop rotates full segments and snapshots once enough log has
// accumulated.
func (e *Engine) snapshotLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-e.done:
			return
		case <-t.C:
		}
		e.wal.mu.Lock()
		appended := e.wal.appended
		e.wal.mu.Unlock()
		e.snapMu.Lock()
		since := appended - e.lastSnapLSN
		e.snapMu.Unlock()
		if e.opts.SnapshotLogBytes > 0 && int64(since) >= e.opts.SnapshotLogBytes {
			if err := e.Snapshot(); err != nil {
				e.log.Error("crux snapshot failed", "err", err)
			}
			continue
		}
		if e.wal.size() >= e.opts.SegmentBytes {
			if _, err := e.wal.rotate(); err != nil {
				e.log.Error("crux log rotation failed", "err", err)
			}
		}
	}
}
