package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"

	"mecha/internal/fsutil"
)

// OffsetKey names one committed offset.
type OffsetKey struct {
	Group     string
	Topic     string
	Partition int32
}

// Committed is a committed offset with its leader epoch and metadata.
type Committed struct {
	Offset      int64
	LeaderEpoch int32
	Metadata    string
}

// OffsetStore keeps consumer group offsets in an append-only file of
// CRC-framed records, replayed on open and rewritten when it has grown to
// several times its live size. A record with offset -1 deletes the key.
//
// The format, per record: uint32 length of the rest, uint32 CRC-32C of
// the payload, then the payload: uint16 group length, group, uint16 topic
// length, topic, int32 partition, int64 offset, int32 leader epoch, uint16
// metadata length, metadata.
type OffsetStore struct {
	path string

	mu      sync.Mutex // guards below
	f       *os.File
	live    map[OffsetKey]Committed
	written int64 // bytes in the file
	dirty   bool  // written since the last successful fsync
	// failed is set once an fsync of the file fails, or a compaction's
	// rename may not be durable: what the file holds on disk is then
	// unknown (the kernel may have dropped the dirty pages and marked
	// them clean), so the store takes no more commits. Reopening it
	// replays what the disk really has.
	failed error
}

// ErrOffsetsFailed is wrapped by the errors of an OffsetStore that stopped
// taking commits after a failed fsync; restarting the broker reopens it.
var ErrOffsetsFailed = errors.New("committed offsets file failed; restart the broker to reopen it")

// errBadOffsetRecord marks a record that does not decode.
var errBadOffsetRecord = errors.New("bad offset record")

// OpenOffsetStore opens (or creates) dir/offsets.log. A torn or corrupt
// tail is cut off: what follows it was never fsynced.
func OpenOffsetStore(dir string) (*OffsetStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "offsets.log")
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	s := &OffsetStore{path: path, live: map[OffsetKey]Committed{}}
	good := ReplayOffsets(data, func(k OffsetKey, c Committed) {
		if c.Offset < 0 {
			delete(s.live, k)
			return
		}
		s.live[k] = c
	})
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if good < len(data) {
		if err := f.Truncate(int64(good)); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate torn tail of %s: %w", path, err)
		}
	}
	s.f, s.written = f, int64(good)
	return s, nil
}

// ReplayOffsets decodes records from data, calling fn for each, and
// returns the length of the intact prefix.
func ReplayOffsets(data []byte, fn func(OffsetKey, Committed)) int {
	pos := 0
	for pos+8 <= len(data) {
		n := int(binary.BigEndian.Uint32(data[pos:]))
		if n < 4 || n > len(data)-pos-4 {
			break
		}
		payload := data[pos+8 : pos+4+n]
		if crc32.Checksum(payload, fsutil.Castagnoli) != binary.BigEndian.Uint32(data[pos+4:]) {
			break
		}
		k, c, err := decodeOffset(payload)
		if err != nil {
			break
		}
		fn(k, c)
		pos += 4 + n
	}
	return pos
}

func decodeOffset(p []byte) (OffsetKey, Committed, error) {
	r := bytes.NewReader(p)
	str := func() (string, error) {
		var n uint16
		if err := binary.Read(r, binary.BigEndian, &n); err != nil {
			return "", err
		}
		if int(n) > r.Len() {
			return "", errBadOffsetRecord
		}
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return string(b), err
	}
	var k OffsetKey
	var c Committed
	var err error
	if k.Group, err = str(); err != nil {
		return k, c, errBadOffsetRecord
	}
	if k.Topic, err = str(); err != nil {
		return k, c, errBadOffsetRecord
	}
	if binary.Read(r, binary.BigEndian, &k.Partition) != nil ||
		binary.Read(r, binary.BigEndian, &c.Offset) != nil ||
		binary.Read(r, binary.BigEndian, &c.LeaderEpoch) != nil {
		return k, c, errBadOffsetRecord
	}
	if c.Metadata, err = str(); err != nil || r.Len() != 0 {
		return k, c, errBadOffsetRecord
	}
	return k, c, nil
}

func appendOffset(dst []byte, k OffsetKey, c Committed) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	put := func(s string) {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
		dst = append(dst, s...)
	}
	put(k.Group)
	put(k.Topic)
	dst = binary.BigEndian.AppendUint32(dst, uint32(k.Partition))
	dst = binary.BigEndian.AppendUint64(dst, uint64(c.Offset))
	dst = binary.BigEndian.AppendUint32(dst, uint32(c.LeaderEpoch))
	put(c.Metadata)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(dst[start+8:], fsutil.Castagnoli))
	return dst
}

// maxOffsetString bounds group, topic and metadata strings so they fit
// the record's 16-bit lengths.
const maxOffsetString = 1<<16 - 1

// Commit stores offsets for one group. The write reaches the page cache
// before Commit returns (it survives the process being killed); sync makes
// it durable against power loss too. A commit that fails is not applied.
func (s *OffsetStore) Commit(entries map[OffsetKey]Committed, sync bool) error {
	var buf []byte
	for k, c := range entries {
		if len(k.Group) > maxOffsetString || len(k.Topic) > maxOffsetString || len(c.Metadata) > maxOffsetString {
			return fmt.Errorf("offset commit for group %q topic %q: a name or metadata is longer than %d bytes", k.Group, k.Topic, maxOffsetString)
		}
		buf = appendOffset(buf, k, c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	if s.failed != nil {
		return s.failed
	}
	if _, err := fsutil.WriteAt(s.f, buf, s.written); err != nil {
		// The next commit overwrites a partial record anyway (writes
		// are positional); the truncate keeps the file clean meanwhile.
		_ = s.f.Truncate(s.written)
		return fmt.Errorf("write %s: %w", s.path, err)
	}
	s.written += int64(len(buf))
	s.dirty = true
	if sync {
		if err := s.syncLocked(); err != nil {
			return err
		}
	}
	for k, c := range entries {
		if c.Offset < 0 {
			delete(s.live, k)
		} else {
			s.live[k] = c
		}
	}
	if s.written > 1<<20 && s.written > int64(8*len(s.live)*64) {
		return s.rewriteLocked()
	}
	return nil
}

// syncLocked fsyncs the file; a failure fails the store for good.
func (s *OffsetStore) syncLocked() error {
	if err := fsutil.Sync(s.f); err != nil {
		s.failed = fmt.Errorf("%w: %w", ErrOffsetsFailed, err)
		return s.failed
	}
	s.dirty = false
	return nil
}

// Get returns a committed offset.
func (s *OffsetStore) Get(k OffsetKey) (Committed, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.live[k]
	return c, ok
}

// Each calls fn for every committed offset (order unspecified).
func (s *OffsetStore) Each(fn func(OffsetKey, Committed)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, c := range s.live {
		fn(k, c)
	}
}

// DeleteGroup forgets a group's offsets.
func (s *OffsetStore) DeleteGroup(group string) error {
	del := map[OffsetKey]Committed{}
	s.Each(func(k OffsetKey, _ Committed) {
		if k.Group == group {
			del[k] = Committed{Offset: -1}
		}
	})
	if len(del) == 0 {
		return nil
	}
	return s.Commit(del, false)
}

// DeleteTopic forgets every group's offsets for a topic.
func (s *OffsetStore) DeleteTopic(topic string) error {
	del := map[OffsetKey]Committed{}
	s.Each(func(k OffsetKey, _ Committed) {
		if k.Topic == topic {
			del[k] = Committed{Offset: -1}
		}
	})
	if len(del) == 0 {
		return nil
	}
	return s.Commit(del, false)
}

// Flush fsyncs pending commits: the periodic flush. The commits count as
// clean only once the fsync succeeded; after a failed one the store
// refuses commits (and Flush keeps returning the error).
func (s *OffsetStore) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	if s.failed != nil {
		return s.failed
	}
	if !s.dirty {
		return nil
	}
	return s.syncLocked()
}

// rewriteLocked compacts the file to the live offsets: it is replaced
// whole (fsutil.WriteFile) and reopened, so commits never go to an
// unlinked file.
func (s *OffsetStore) rewriteLocked() error {
	var buf []byte
	for k, c := range s.live {
		buf = appendOffset(buf, k, c)
	}
	err := fsutil.WriteFile(s.path, buf)
	if err != nil && !errors.Is(err, fsutil.ErrDirNotSynced) {
		// The old file is untouched and still open: the commits stand,
		// and the next commit tries the compaction again.
		return fmt.Errorf("compacting %s: %w", s.path, err)
	}
	f, oerr := os.OpenFile(s.path, os.O_RDWR, 0o644)
	if oerr != nil {
		// The open handle is the old, unlinked file: a commit written
		// there would be lost.
		s.failed = fmt.Errorf("%w: reopening %s after compacting it: %w", ErrOffsetsFailed, s.path, oerr)
		return s.failed
	}
	_ = s.f.Close()
	s.f, s.written = f, int64(len(buf))
	if err != nil {
		// The new file is in place but its name may not survive a power
		// loss, which would bring back the old file without the commits
		// written since its last fsync.
		s.failed = fmt.Errorf("%w: %w", ErrOffsetsFailed, err)
		return s.failed
	}
	s.dirty = false
	return nil
}

// Close fsyncs and closes the file. A store that failed returns its
// failure without fsyncing again: that fsync could succeed without the
// lost pages being on disk.
func (s *OffsetStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.failed
	if err == nil {
		err = s.syncLocked()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f = nil
	return err
}
