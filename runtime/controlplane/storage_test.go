package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"mecha/internal/clustermap"
	"mecha/internal/fsutil"
)

func entries(lo, hi, term uint64) []raftpb.Entry {
	var es []raftpb.Entry
	for i := lo; i <= hi; i++ {
		es = append(es, raftpb.Entry{Index: i, Term: term, Type: raftpb.EntryNormal, Data: []byte(fmt.Sprintf("entry-%d", i))})
	}
	return es
}

// checkLog checks that s holds exactly the entries [lo, hi] and hard
// state hs.
func checkLog(t *testing.T, s *diskStorage, lo, hi uint64, hs raftpb.HardState) {
	t.Helper()
	first, _ := s.ms.FirstIndex()
	last, _ := s.ms.LastIndex()
	if first != lo || last != hi {
		t.Fatalf("log holds [%d, %d], want [%d, %d]", first, last, lo, hi)
	}
	got, err := s.ms.Entries(lo, hi+1, ^uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range got {
		if want := fmt.Sprintf("entry-%d", e.Index); string(e.Data) != want {
			t.Fatalf("entry %d holds %q, want %q", e.Index, e.Data, want)
		}
	}
	gotHS, _, _ := s.ms.InitialState()
	if gotHS != hs {
		t.Fatalf("hard state %+v, want %+v", gotHS, hs)
	}
}

func openT(t *testing.T, dir string) *diskStorage {
	t.Helper()
	s, err := openStorage(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s
}

func TestStorageReopen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	hs := raftpb.HardState{Term: 2, Vote: 7, Commit: 4}
	if err := s.save(raftpb.HardState{Term: 1, Vote: 7, Commit: 1}, entries(1, 3, 1)); err != nil {
		t.Fatal(err)
	}
	// Entries 3..5 of term 2 replace the old entry 3.
	es := entries(3, 5, 2)
	if err := s.save(hs, es); err != nil {
		t.Fatal(err)
	}
	s.close()
	s = openT(t, dir)
	checkLog(t, s, 1, 5, hs)
	if term, _ := s.ms.Term(3); term != 2 {
		t.Fatalf("entry 3 has term %d after the conflict, want 2", term)
	}
}

func TestStorageTornTailTruncated(t *testing.T) {
	for _, tc := range []struct {
		name string
		tail func(whole []byte) []byte
	}{
		{"half a header", func(r []byte) []byte { return r[:4] }},
		{"half a payload", func(r []byte) []byte { return r[:len(r)-3] }},
		{"whole record, bad checksum", func(r []byte) []byte {
			r = bytes.Clone(r)
			r[len(r)-1] ^= 0xff
			return r
		}},
		{"zeros", func(r []byte) []byte { return make([]byte, 40) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir)
			hs := raftpb.HardState{Term: 1, Commit: 5}
			if err := s.save(hs, entries(1, 5, 1)); err != nil {
				t.Fatal(err)
			}
			size := s.off
			s.close()
			p, _ := entries(6, 6, 1)[0].Marshal()
			tail := tc.tail(appendRecord(nil, recEntry, p))
			f, err := os.OpenFile(filepath.Join(dir, walFile), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(tail)
			f.Close()

			s = openT(t, dir)
			checkLog(t, s, 1, 5, hs)
			fi, _ := os.Stat(filepath.Join(dir, walFile))
			if fi.Size() != size {
				t.Fatalf("log file is %d bytes after recovery, want the %d before the torn record", fi.Size(), size)
			}
			// Appends go on after the last whole record.
			if err := s.save(raftpb.HardState{Term: 1, Commit: 6}, entries(6, 6, 1)); err != nil {
				t.Fatal(err)
			}
			s.close()
			s = openT(t, dir)
			checkLog(t, s, 1, 6, raftpb.HardState{Term: 1, Commit: 6})
		})
	}
}

func TestStorageCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	for i := uint64(1); i <= 5; i++ {
		if err := s.save(raftpb.HardState{Term: 1, Commit: i}, entries(i, i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	s.close()
	path := filepath.Join(dir, walFile)
	b, _ := os.ReadFile(path)
	// The third record (entry 2) starts after entry 1 and its hard state.
	_, _, n1, _ := decodeRecord(b)
	_, _, n2, _ := decodeRecord(b[n1:])
	off := n1 + n2
	b[off+recordHeader+2] ^= 0x55
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := openStorage(dir)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", off)) {
		t.Fatalf("openStorage of a log corrupt in the middle = %v, want ErrCorrupt naming %s and offset %d", err, path, off)
	}
}

func TestStorageSnapshotCompactionRestart(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	hs := raftpb.HardState{Term: 3, Vote: 1, Commit: 20}
	if err := s.save(hs, entries(1, 20, 3)); err != nil {
		t.Fatal(err)
	}
	m, err := clustermap.Apply(clustermap.New(), clustermap.Bootstrap{ClusterID: "snap-test"})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := clustermap.EncodeMap(m)
	cs := raftpb.ConfState{Voters: []uint64{1, 2, 3}}
	if err := s.compact(15, cs, data, 5); err != nil {
		t.Fatal(err)
	}
	// In memory: entries from 11 (5 kept before the snapshot).
	checkLog(t, s, 11, 20, hs)
	walBefore, _ := os.Stat(filepath.Join(dir, walFile))
	if err := s.save(raftpb.HardState{Term: 3, Vote: 1, Commit: 21}, entries(21, 21, 3)); err != nil {
		t.Fatal(err)
	}
	s.close()

	s = openT(t, dir)
	// After a restart the log starts after the snapshot.
	checkLog(t, s, 16, 21, raftpb.HardState{Term: 3, Vote: 1, Commit: 21})
	snap, _ := s.ms.Snapshot()
	if snap.Metadata.Index != 15 || snap.Metadata.Term != 3 || len(snap.Metadata.ConfState.Voters) != 3 {
		t.Fatalf("snapshot metadata %+v", snap.Metadata)
	}
	got, err := clustermap.DecodeMap(snap.Data)
	if err != nil || got.ClusterID != "snap-test" {
		t.Fatalf("snapshot map: %v, %v", got, err)
	}
	if walBefore.Size() == 0 {
		t.Fatal("the rewritten log is empty")
	}
}

func TestStorageSnapshotFromLeader(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if err := s.save(raftpb.HardState{Term: 1, Commit: 3}, entries(1, 5, 1)); err != nil {
		t.Fatal(err)
	}
	m, _ := clustermap.Apply(clustermap.New(), clustermap.Bootstrap{ClusterID: "c"})
	data, _ := clustermap.EncodeMap(m)
	snap := raftpb.Snapshot{Data: data, Metadata: raftpb.SnapshotMetadata{Index: 30, Term: 4, ConfState: raftpb.ConfState{Voters: []uint64{1}}}}
	if err := s.saveSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if err := s.save(raftpb.HardState{Term: 4, Commit: 31}, entries(31, 32, 4)); err != nil {
		t.Fatal(err)
	}
	s.close()
	s = openT(t, dir)
	checkLog(t, s, 31, 32, raftpb.HardState{Term: 4, Commit: 31})
}

func TestStorageFsyncFailureIsAnError(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	boom := errors.New("injected fsync failure")
	t.Cleanup(fsutil.SetFaults(fsutil.Faults{Sync: func(name string) error {
		if strings.HasPrefix(name, dir) {
			return boom
		}
		return nil
	}}))
	if err := s.save(raftpb.HardState{Term: 1, Commit: 1}, entries(1, 1, 1)); !errors.Is(err, boom) {
		t.Fatalf("save with a failing fsync = %v, want the fsync's error", err)
	}
	// Nothing reached raft's view.
	if last, _ := s.ms.LastIndex(); last != 0 {
		t.Fatalf("memory storage holds entries up to %d after a failed save", last)
	}
}

func TestNodeStopsOnFsyncFailure(t *testing.T) {
	net := &memNet{}
	dirs := tempDirs(t)
	nodes := startMem(t, net, dirs, 50*time.Millisecond, nil)
	waitBootstrapped(t, nodes)
	victim := followerOf(nodes)
	boom := errors.New("injected fsync failure")
	t.Cleanup(fsutil.SetFaults(fsutil.Faults{Sync: func(name string) error {
		if strings.HasPrefix(name, victim.cfg.Dir) {
			return boom
		}
		return nil
	}}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The others go on; the victim's next save fails and stops it.
	if err := leaderOf(nodes).Propose(ctx, joinCmd("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-victim.Done():
	case <-ctx.Done():
		t.Fatal("the node did not stop after a failed fsync")
	}
	if err := victim.Err(); !errors.Is(err, boom) {
		t.Fatalf("Err() = %v, want the fsync failure", err)
	}
	if victim.IsLeader() {
		t.Fatal("a failed node claims the leadership")
	}
}

func TestSnapshotFileCorrupt(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if err := s.save(raftpb.HardState{Term: 1, Commit: 2}, entries(1, 2, 1)); err != nil {
		t.Fatal(err)
	}
	m, _ := clustermap.Apply(clustermap.New(), clustermap.Bootstrap{ClusterID: "c"})
	data, _ := clustermap.EncodeMap(m)
	if err := s.compact(2, raftpb.ConfState{Voters: []uint64{1}}, data, 0); err != nil {
		t.Fatal(err)
	}
	s.close()
	path := filepath.Join(dir, snapFile)
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 1
	os.WriteFile(path, b, 0o644)
	if _, err := openStorage(dir); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("openStorage with a corrupt snapshot = %v, want ErrCorrupt naming %s", err, path)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	p, _ := entries(1, 1, 1)[0].Marshal()
	rec := appendRecord(nil, recEntry, p)
	f.Add(rec)
	f.Add(rec[:5])
	f.Add(rec[:len(rec)-1])
	f.Add(append(bytes.Clone(rec), rec...))
	f.Add(make([]byte, 20))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1})
	hs, _ := (&raftpb.HardState{Term: 1, Commit: 1}).Marshal()
	f.Add(appendRecord(nil, recHardState, hs))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, payload, n, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, errTorn) && !errors.Is(err, errChecksum) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n > len(b) || n < recordHeader {
			t.Fatalf("record length %d of %d bytes", n, len(b))
		}
		if again := appendRecord(nil, typ, payload); !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoding differs: %x vs %x", again, b[:n])
		}
		// Replaying any bytes as a log never panics.
		s := &diskStorage{dir: "fuzz"}
		s.ms = raft.NewMemoryStorage()
		_, _ = s.replay("fuzz", b)
	})
}
