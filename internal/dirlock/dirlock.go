// Package dirlock guards a data directory against a second process: it
// holds an exclusive flock on dir/LOCK for as long as the owner runs. The
// kernel drops the lock when the process dies, kill -9 included.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrLocked is returned when another process holds the directory.
var ErrLocked = errors.New("data directory is in use by another process")

// Lock is a held directory lock.
type Lock struct{ f *os.File }

// Acquire creates dir if needed and locks it without waiting.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
	}
	return &Lock{f: f}, nil
}

// Release unlocks the directory.
func (l *Lock) Release() {
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
}
