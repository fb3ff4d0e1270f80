package controlplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"mecha/internal/fsutil"
)

// Files of a node's Dir.
const (
	walFile      = "raft.wal"
	snapFile     = "raft.snap"
	peersFile    = "peers.json"
	clusterFile  = "cluster-id"
	recordHeader = 9 // size uint32, crc uint32, type uint8
	// maxRecord bounds a record's payload (a snapshot of a large map
	// included): muxconn carries no more either.
	maxRecord = 64 << 20
)

// Record types of the log and snapshot files.
const (
	recEntry     byte = 1 // a raftpb.Entry
	recHardState byte = 2 // a raftpb.HardState
	recSnapshot  byte = 3 // a raftpb.Snapshot (the snapshot file's only record)
)

// errTorn is decodeRecord's answer for a record that runs past the
// bytes given: at the end of a file, a write cut short by a crash.
var errTorn = errors.New("controlplane: torn record")

// errChecksum is decodeRecord's answer for a whole record whose CRC
// does not match.
var errChecksum = errors.New("controlplane: record checksum mismatch")

// ErrCorrupt is wrapped by the error of a log or snapshot file that
// cannot be read back: a bad record before the end of the file, an
// unknown record type, a gap in the entries. The message names the
// file and the offset.
var ErrCorrupt = errors.New("controlplane: corrupt raft storage")

// appendRecord appends one record to b: the payload's size, the CRC-32C
// of type and payload, the type, the payload.
func appendRecord(b []byte, typ byte, payload []byte) []byte {
	var h [recordHeader]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(len(payload)))
	crc := crc32.Update(crc32.Update(0, fsutil.Castagnoli, []byte{typ}), fsutil.Castagnoli, payload)
	binary.BigEndian.PutUint32(h[4:8], crc)
	h[8] = typ
	b = append(b, h[:]...)
	return append(b, payload...)
}

// decodeRecord reads the record at the start of b and returns its type,
// its payload (a sub-slice of b) and its whole length. A record longer
// than b (or a header cut short) is errTorn; a CRC mismatch errChecksum.
func decodeRecord(b []byte) (typ byte, payload []byte, n int, err error) {
	if len(b) < recordHeader {
		return 0, nil, 0, errTorn
	}
	size := binary.BigEndian.Uint32(b[0:4])
	if size > maxRecord || uint64(len(b)-recordHeader) < uint64(size) {
		return 0, nil, 0, errTorn
	}
	n = recordHeader + int(size)
	typ = b[8]
	payload = b[recordHeader:n]
	crc := crc32.Update(crc32.Update(0, fsutil.Castagnoli, []byte{typ}), fsutil.Castagnoli, payload)
	if crc != binary.BigEndian.Uint32(b[4:8]) {
		return 0, nil, 0, errChecksum
	}
	return typ, payload, n, nil
}

// allZero reports whether b holds only zero bytes (a file grown by the
// file system whose data never reached the disk).
func allZero(b []byte) bool {
	return len(bytes.Trim(b, "\x00")) == 0
}

// diskStorage is raft's storage: a raft.MemoryStorage that raft reads,
// made durable by an append-only log file (entries and hard states) and
// a snapshot file. Only the node's raft loop calls it.
type diskStorage struct {
	dir string
	ms  *raft.MemoryStorage
	wal *os.File
	off int64 // the log file's size
	buf []byte
}

// storageExists reports whether dir holds raft state (a log or a
// snapshot that is not empty): a node with state restarts from it.
func storageExists(dir string) (bool, error) {
	for _, name := range []string{walFile, snapFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err == nil {
			if fi.Size() > 0 {
				return true, nil
			}
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
	}
	return false, nil
}

// openStorage opens (or creates) the storage in dir and loads it: the
// snapshot, then the log's records after it. A torn record at the end
// of the log is cut off; any other bad record is an error wrapping
// ErrCorrupt that names the file and offset.
func openStorage(dir string) (*diskStorage, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &diskStorage{dir: dir, ms: raft.NewMemoryStorage()}
	if err := s.loadSnapshot(); err != nil {
		return nil, err
	}
	if err := s.loadLog(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *diskStorage) loadSnapshot() error {
	path := filepath.Join(s.dir, snapFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// The snapshot file is replaced whole (fsutil.WriteFile), so it is
	// never torn: any fault is corruption.
	typ, payload, n, err := decodeRecord(b)
	if err != nil || typ != recSnapshot || n != len(b) {
		return fmt.Errorf("%w: %s at offset 0: bad snapshot record (%v)", ErrCorrupt, path, err)
	}
	var snap raftpb.Snapshot
	if err := snap.Unmarshal(payload); err != nil {
		return fmt.Errorf("%w: %s at offset 0: %v", ErrCorrupt, path, err)
	}
	return s.ms.ApplySnapshot(snap)
}

func (s *diskStorage) loadLog() error {
	path := filepath.Join(s.dir, walFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return err
	}
	off, err := s.replay(path, b)
	if err != nil {
		f.Close()
		return err
	}
	if off < int64(len(b)) {
		// A torn tail: cut it off so that appends follow the last
		// whole record.
		if err := f.Truncate(off); err != nil {
			f.Close()
			return err
		}
		if err := fsutil.Sync(f); err != nil {
			f.Close()
			return err
		}
	}
	s.wal, s.off = f, off
	return fsutil.SyncDir(s.dir)
}

// replay loads the records of the log file's content b into the memory
// storage and returns the offset after the last whole record.
func (s *diskStorage) replay(path string, b []byte) (int64, error) {
	snap, err := s.ms.Snapshot()
	if err != nil {
		return 0, err
	}
	var hs raftpb.HardState
	off := 0
	for off < len(b) {
		typ, payload, n, err := decodeRecord(b[off:])
		if err != nil {
			if errors.Is(err, errTorn) || allZero(b[off:]) ||
				(errors.Is(err, errChecksum) && off+recordLen(b[off:]) == len(b)) {
				break
			}
			return 0, fmt.Errorf("%w: %s at offset %d: %v", ErrCorrupt, path, off, err)
		}
		switch typ {
		case recEntry:
			var e raftpb.Entry
			if err := e.Unmarshal(payload); err != nil {
				return 0, fmt.Errorf("%w: %s at offset %d: entry: %v", ErrCorrupt, path, off, err)
			}
			if e.Index <= snap.Metadata.Index {
				break
			}
			last, _ := s.ms.LastIndex()
			if e.Index > last+1 {
				return 0, fmt.Errorf("%w: %s at offset %d: entry %d after %d", ErrCorrupt, path, off, e.Index, last)
			}
			if err := s.ms.Append([]raftpb.Entry{e}); err != nil {
				return 0, fmt.Errorf("%w: %s at offset %d: %v", ErrCorrupt, path, off, err)
			}
		case recHardState:
			if err := hs.Unmarshal(payload); err != nil {
				return 0, fmt.Errorf("%w: %s at offset %d: hard state: %v", ErrCorrupt, path, off, err)
			}
		default:
			return 0, fmt.Errorf("%w: %s at offset %d: unknown record type %d", ErrCorrupt, path, off, typ)
		}
		off += n
	}
	if !raft.IsEmptyHardState(hs) {
		if hs.Commit < snap.Metadata.Index {
			hs.Commit = snap.Metadata.Index
		}
		if err := s.ms.SetHardState(hs); err != nil {
			return 0, err
		}
	} else if !raft.IsEmptySnap(snap) {
		_ = s.ms.SetHardState(raftpb.HardState{Term: snap.Metadata.Term, Commit: snap.Metadata.Index})
	}
	return int64(off), nil
}

// recordLen is the length a record's header claims (the header alone
// when it is cut short).
func recordLen(b []byte) int {
	if len(b) < recordHeader {
		return len(b)
	}
	return recordHeader + int(binary.BigEndian.Uint32(b[0:4]))
}

// save makes a Ready's hard state and entries durable (one fsync), then
// gives them to the memory storage.
func (s *diskStorage) save(hs raftpb.HardState, ents []raftpb.Entry) error {
	if raft.IsEmptyHardState(hs) && len(ents) == 0 {
		return nil
	}
	s.buf = s.buf[:0]
	for i := range ents {
		p, err := ents[i].Marshal()
		if err != nil {
			return err
		}
		s.buf = appendRecord(s.buf, recEntry, p)
	}
	if !raft.IsEmptyHardState(hs) {
		p, err := hs.Marshal()
		if err != nil {
			return err
		}
		s.buf = appendRecord(s.buf, recHardState, p)
	}
	if _, err := fsutil.WriteAt(s.wal, s.buf, s.off); err != nil {
		return err
	}
	s.off += int64(len(s.buf))
	if err := fsutil.DataSync(s.wal); err != nil {
		return err
	}
	if len(ents) > 0 {
		if err := s.ms.Append(ents); err != nil {
			return err
		}
	}
	if !raft.IsEmptyHardState(hs) {
		return s.ms.SetHardState(hs)
	}
	return nil
}

// saveSnapshot makes a snapshot received from the leader durable and
// loads it, then rewrites the log without the entries it replaces.
func (s *diskStorage) saveSnapshot(snap raftpb.Snapshot) error {
	if err := s.writeSnapshot(snap); err != nil {
		return err
	}
	if err := s.ms.ApplySnapshot(snap); err != nil && !errors.Is(err, raft.ErrSnapOutOfDate) {
		return err
	}
	return s.rewrite()
}

// compact snapshots the applied state at index applied (data is the
// encoded map), keeps keep entries before it for slow followers, and
// rewrites the log.
func (s *diskStorage) compact(applied uint64, cs raftpb.ConfState, data []byte, keep uint64) error {
	snap, err := s.ms.CreateSnapshot(applied, &cs, data)
	if err != nil {
		return err
	}
	if err := s.writeSnapshot(snap); err != nil {
		return err
	}
	if applied > keep {
		if err := s.ms.Compact(applied - keep); err != nil && !errors.Is(err, raft.ErrCompacted) {
			return err
		}
	}
	return s.rewrite()
}

func (s *diskStorage) writeSnapshot(snap raftpb.Snapshot) error {
	p, err := snap.Marshal()
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(s.dir, snapFile), appendRecord(nil, recSnapshot, p))
}

// rewrite replaces the log file with the memory storage's hard state and
// entries, and reopens it for appends.
func (s *diskStorage) rewrite() error {
	hs, _, err := s.ms.InitialState()
	if err != nil {
		return err
	}
	first, _ := s.ms.FirstIndex()
	last, _ := s.ms.LastIndex()
	var b []byte
	if last >= first {
		ents, err := s.ms.Entries(first, last+1, ^uint64(0))
		if err != nil {
			return err
		}
		for i := range ents {
			p, err := ents[i].Marshal()
			if err != nil {
				return err
			}
			b = appendRecord(b, recEntry, p)
		}
	}
	if !raft.IsEmptyHardState(hs) {
		p, err := hs.Marshal()
		if err != nil {
			return err
		}
		b = appendRecord(b, recHardState, p)
	}
	path := filepath.Join(s.dir, walFile)
	if s.wal != nil {
		s.wal.Close()
		s.wal = nil
	}
	if err := fsutil.WriteFile(path, b); err != nil && !errors.Is(err, fsutil.ErrDirNotSynced) {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	s.wal, s.off = f, int64(len(b))
	return nil
}

func (s *diskStorage) close() error {
	if s.wal == nil {
		return nil
	}
	err := s.wal.Close()
	s.wal = nil
	return err
}
