package fsutil

import (
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The table must stay CRC-32C: every checksum already on disk uses it.
func TestCastagnoliIsCRC32C(t *testing.T) {
	// The check value of CRC-32C (RFC 3720, appendix B.4).
	if got := crc32.Checksum([]byte("123456789"), Castagnoli); got != 0xE3069283 {
		t.Fatalf("CRC of 123456789 = %#x, want 0xe3069283", got)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func noTemp(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
}

func TestWriteFileReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	for _, content := range []string{"first, and longer", "second", ""} {
		if err := WriteFile(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, path); got != content {
			t.Fatalf("file holds %q, want %q", got, content)
		}
		noTemp(t, dir)
	}
}

// A failure at any step before the rename leaves the old file as it was
// and no temporary file; a failed directory fsync comes after the rename,
// so the new file is in place but the caller hears of it.
func TestReplaceFailures(t *testing.T) {
	eio := errors.New("injected EIO")
	cases := []struct {
		name      string
		faults    func(dir string) Faults
		fill      func(w io.Writer) error
		wantOld   bool
		wantError error
	}{
		{"fill fails", func(string) Faults { return Faults{} }, func(w io.Writer) error {
			if _, err := w.Write([]byte("half")); err != nil {
				return err
			}
			return eio
		}, true, eio},
		{"write fails part way", func(string) Faults {
			return Faults{Write: func(_ string, b []byte, _ int64) (int, error) { return len(b) / 2, syscall.ENOSPC }}
		}, nil, true, syscall.ENOSPC},
		{"short write", func(string) Faults {
			return Faults{Write: func(_ string, b []byte, _ int64) (int, error) { return len(b) - 1, nil }}
		}, nil, true, io.ErrShortWrite},
		{"file fsync fails", func(dir string) Faults {
			return Faults{Sync: func(name string) error {
				if name != dir {
					return syscall.EIO
				}
				return nil
			}}
		}, nil, true, syscall.EIO},
		{"rename fails", func(string) Faults {
			return Faults{Rename: func(string, string) error { return syscall.EXDEV }}
		}, nil, true, syscall.EXDEV},
		{"directory fsync fails", func(dir string) Faults {
			return Faults{Sync: func(name string) error {
				if name == dir {
					return syscall.EIO
				}
				return nil
			}}
		}, nil, false, syscall.EIO},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state")
			if err := WriteFile(path, []byte("old")); err != nil {
				t.Fatal(err)
			}
			good := func(w io.Writer) error { _, err := w.Write([]byte("new content")); return err }
			fill := tc.fill
			if fill == nil {
				fill = good
			}
			restore := SetFaults(tc.faults(dir))
			err := Replace(path, fill)
			restore()
			if !errors.Is(err, tc.wantError) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Replace: %v, want an error naming %s wrapping %v", err, path, tc.wantError)
			}
			want := "new content"
			if tc.wantOld {
				want = "old"
			}
			if errors.Is(err, ErrDirNotSynced) == tc.wantOld {
				t.Fatalf("Replace: %v; ErrDirNotSynced must be wrapped exactly when the new file is in place", err)
			}
			if got := readFile(t, path); got != want {
				t.Fatalf("after the failure the file holds %q, want %q", got, want)
			}
			noTemp(t, dir)
			// With the fault gone it works.
			if err := Replace(path, good); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, path); got != "new content" {
				t.Fatalf("file holds %q", got)
			}
		})
	}
}

func TestWriteAtFaults(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	name := f.Name()
	t.Cleanup(SetFaults(Faults{Write: func(n string, b []byte, off int64) (int, error) {
		if n != name {
			t.Errorf("hook called with %q, want %q", n, name)
		}
		if off >= 100 {
			return 3, syscall.ENOSPC
		}
		return len(b), nil
	}}))
	if n, err := WriteAt(f, []byte("hello"), 0); n != 5 || err != nil {
		t.Fatalf("WriteAt let through = %d, %v", n, err)
	}
	if n, err := WriteAt(f, []byte("world"), 100); n != 3 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("failing WriteAt = %d, %v; want 3, ENOSPC", n, err)
	}
	b, _ := os.ReadFile(name)
	if len(b) != 103 || string(b[:5]) != "hello" || string(b[100:]) != "wor" {
		t.Fatalf("file holds %q", b)
	}
}

func TestSyncFaults(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, sync := range []struct {
		name string
		call func() error
	}{
		{"Sync", func() error { return Sync(f) }},
		{"DataSync", func() error { return DataSync(f) }},
		{"SyncDir", func() error { return SyncDir(dir) }},
	} {
		t.Run(sync.name, func(t *testing.T) {
			if err := sync.call(); err != nil {
				t.Fatal(err)
			}
			restore := SetFaults(Faults{Sync: func(string) error { return syscall.EIO }})
			err := sync.call()
			restore()
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("with a failing sync: %v", err)
			}
			if err := sync.call(); err != nil {
				t.Fatalf("after restore: %v", err)
			}
		})
	}
}

func TestAllocate(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "seg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = Allocate(f, 0, 1<<20)
	if errors.Is(err, ErrNotSupported) {
		t.Skip("the file system cannot preallocate")
	}
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Stat(); st.Size() != 1<<20 {
		t.Fatalf("size after Allocate %d, want %d", st.Size(), 1<<20)
	}
	restore := SetFaults(Faults{Allocate: func(_ string, off, n int64) error {
		if n > 4096 {
			return syscall.ENOSPC
		}
		return nil
	}})
	defer restore()
	if err := Allocate(f, 1<<20, 1<<20); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Allocate on a full disk: %v", err)
	}
	if err := Allocate(f, 1<<20, 4096); err != nil {
		t.Fatalf("a small Allocate the hook lets through: %v", err)
	}
	if st, _ := f.Stat(); st.Size() != 1<<20+4096 {
		t.Fatalf("size %d, want %d", st.Size(), 1<<20+4096)
	}
	SetFaults(Faults{Allocate: func(string, int64, int64) error { return syscall.EOPNOTSUPP }})
	if err := Allocate(f, 0, 1); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Allocate where unsupported: %v", err)
	}
}

// SetFaults nests: restoring puts back the hooks that were there.
func TestSetFaultsRestores(t *testing.T) {
	dir := t.TempDir()
	outer := SetFaults(Faults{Rename: func(string, string) error { return syscall.EPERM }})
	defer outer()
	inner := SetFaults(Faults{})
	if err := WriteFile(filepath.Join(dir, "a"), nil); err != nil {
		t.Fatalf("inner hooks: %v", err)
	}
	inner()
	if err := WriteFile(filepath.Join(dir, "b"), nil); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("outer hooks after restore: %v", err)
	}
	outer()
	if err := WriteFile(filepath.Join(dir, "c"), nil); err != nil {
		t.Fatalf("no hooks: %v", err)
	}
}
