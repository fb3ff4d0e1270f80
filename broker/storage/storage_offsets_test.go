package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openOffsetsT(t *testing.T, dir string) *OffsetStore {
	t.Helper()
	s, err := OpenOffsetStore(dir)
	if err != nil {
		t.Fatalf("OpenOffsetStore: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func snapshot(s *OffsetStore) map[OffsetKey]Committed {
	m := map[OffsetKey]Committed{}
	s.Each(func(k OffsetKey, c Committed) { m[k] = c })
	return m
}

func sameOffsets(t *testing.T, got, want map[OffsetKey]Committed) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d offsets, want %d:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	for k, c := range want {
		if got[k] != c {
			t.Fatalf("%+v = %+v, want %+v", k, got[k], c)
		}
	}
}

func TestOffsetStoreCommitGetEachReopen(t *testing.T) {
	dir := t.TempDir()
	s := openOffsetsT(t, dir)
	want := map[OffsetKey]Committed{
		{"g1", "a", 0}:  {Offset: 10, LeaderEpoch: 3, Metadata: "m"},
		{"g1", "a", 1}:  {Offset: 0, LeaderEpoch: -1},
		{"g1", "b", 0}:  {Offset: 1 << 40, Metadata: strings.Repeat("x", 1000)},
		{"g2", "a", 0}:  {Offset: 7, LeaderEpoch: 1},
		{"", "", -1}:    {Offset: 1},
		{"g3", "ü", 99}: {Offset: 2, Metadata: "\x00\xff"},
	}
	if err := s.Commit(want, false); err != nil {
		t.Fatal(err)
	}
	// Later commits win.
	update := map[OffsetKey]Committed{{"g1", "a", 0}: {Offset: 11, LeaderEpoch: 4}}
	if err := s.Commit(update, true); err != nil {
		t.Fatal(err)
	}
	want[OffsetKey{"g1", "a", 0}] = Committed{Offset: 11, LeaderEpoch: 4}
	for k, c := range want {
		if got, ok := s.Get(k); !ok || got != c {
			t.Fatalf("Get(%+v) = %+v, %v; want %+v", k, got, ok, c)
		}
	}
	if _, ok := s.Get(OffsetKey{"g1", "a", 2}); ok {
		t.Fatal("Get of an uncommitted key found something")
	}
	sameOffsets(t, snapshot(s), want)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(update, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close: %v", err)
	}
	sameOffsets(t, snapshot(openOffsetsT(t, dir)), want)
}

func TestOffsetStoreDelete(t *testing.T) {
	dir := t.TempDir()
	s := openOffsetsT(t, dir)
	all := map[OffsetKey]Committed{}
	for _, g := range []string{"g1", "g2", "g3"} {
		for _, topic := range []string{"a", "b"} {
			for p := int32(0); p < 3; p++ {
				all[OffsetKey{g, topic, p}] = Committed{Offset: int64(p) + 1}
			}
		}
	}
	if err := s.Commit(all, false); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteGroup("g2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTopic("b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteGroup("nope"); err != nil {
		t.Fatal(err)
	}
	// A commit of offset -1 deletes one key.
	if err := s.Commit(map[OffsetKey]Committed{{"g3", "a", 2}: {Offset: -1}}, false); err != nil {
		t.Fatal(err)
	}
	want := map[OffsetKey]Committed{}
	for k, c := range all {
		if k.Group != "g2" && k.Topic != "b" && k != (OffsetKey{"g3", "a", 2}) {
			want[k] = c
		}
	}
	sameOffsets(t, snapshot(s), want)
	_ = s.Close()
	sameOffsets(t, snapshot(openOffsetsT(t, dir)), want)
}

func TestOffsetStoreTornTail(t *testing.T) {
	good := appendOffset(nil, OffsetKey{"g", "t", 0}, Committed{Offset: 5})
	good = appendOffset(good, OffsetKey{"g", "t", 1}, Committed{Offset: 6, Metadata: "meta"})
	next := appendOffset(nil, OffsetKey{"g", "t", 0}, Committed{Offset: 8})
	cases := []struct {
		name string
		tail []byte
	}{
		{"nothing", nil},
		{"half a length", next[:2]},
		{"length and crc", next[:8]},
		{"record less a byte", next[:len(next)-1]},
		{"bad crc", func() []byte { b := append([]byte(nil), next...); b[5] ^= 1; return b }()},
		{"flipped payload", func() []byte { b := append([]byte(nil), next...); b[len(b)-3] ^= 1; return b }()},
		{"zeros", make([]byte, 100)},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3}},
		{"bad crc then a good record", append(func() []byte { b := append([]byte(nil), next...); b[5] ^= 1; return b }(), next...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "offsets.log")
			mustWrite(t, path, append(append([]byte(nil), good...), tc.tail...))
			s := openOffsetsT(t, dir)
			want := map[OffsetKey]Committed{{"g", "t", 0}: {Offset: 5}, {"g", "t", 1}: {Offset: 6, Metadata: "meta"}}
			sameOffsets(t, snapshot(s), want)
			if got := fileSize(t, path); got != int64(len(good)) {
				t.Fatalf("offsets.log %d bytes after open, want the %d intact ones", got, len(good))
			}
			// New commits land after the intact prefix and survive a reopen.
			if err := s.Commit(map[OffsetKey]Committed{{"g", "t", 0}: {Offset: 9}}, true); err != nil {
				t.Fatal(err)
			}
			_ = s.Close()
			want[OffsetKey{"g", "t", 0}] = Committed{Offset: 9}
			sameOffsets(t, snapshot(openOffsetsT(t, dir)), want)
		})
	}
}

func TestOffsetStoreRewriteKeepsLiveOffsets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "offsets.log")
	s := openOffsetsT(t, dir)
	want := map[OffsetKey]Committed{}
	// Enough commits of a few keys to pass the 1 MiB rewrite threshold
	// several times over.
	meta := strings.Repeat("m", 200)
	for i := 0; i < 20000; i++ {
		k := OffsetKey{fmt.Sprintf("g%d", i%4), "topic", int32(i % 5)}
		c := Committed{Offset: int64(i), LeaderEpoch: int32(i % 3), Metadata: meta}
		if err := s.Commit(map[OffsetKey]Committed{k: c}, false); err != nil {
			t.Fatal(err)
		}
		want[k] = c
	}
	if err := s.DeleteGroup("g1"); err != nil {
		t.Fatal(err)
	}
	for k := range want {
		if k.Group == "g1" {
			delete(want, k)
		}
	}
	if size := fileSize(t, path); size > 1<<20 {
		t.Fatalf("offsets.log is %d bytes after 20000 commits of 20 keys: never rewritten", size)
	}
	sameOffsets(t, snapshot(s), want)
	// Commits after a rewrite append to the new file.
	k := OffsetKey{"g0", "topic", 0}
	if err := s.Commit(map[OffsetKey]Committed{k: {Offset: -5 + 100000}}, false); err != nil {
		t.Fatal(err)
	}
	want[k] = Committed{Offset: 99995}
	_ = s.Close()
	sameOffsets(t, snapshot(openOffsetsT(t, dir)), want)
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
}

func TestOffsetStoreRefusesLongStrings(t *testing.T) {
	s := openOffsetsT(t, t.TempDir())
	long := strings.Repeat("x", 1<<16)
	for _, e := range []map[OffsetKey]Committed{
		{{long, "t", 0}: {Offset: 1}},
		{{"g", long, 0}: {Offset: 1}},
		{{"g", "t", 0}: {Offset: 1, Metadata: long}},
	} {
		if err := s.Commit(e, false); err == nil {
			t.Fatal("a 64 KiB string was accepted")
		}
	}
	if len(snapshot(s)) != 0 {
		t.Fatal("refused commit stored")
	}
	ok := strings.Repeat("y", 1<<16-1)
	if err := s.Commit(map[OffsetKey]Committed{{ok, ok, 0}: {Offset: 1, Metadata: ok}}, false); err != nil {
		t.Fatalf("the longest strings refused: %v", err)
	}
}
