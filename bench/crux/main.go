// Command crux measures the Crux engine at the IM service's scale: memory
// per key for N sessions of 200 B and recovery time, from the log alone and
// from a snapshot. Run: go run ./bench/crux [-n 1000000].
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"mecha/statestore"
)

// heap returns the live heap (HeapAlloc: bytes of reachable objects
// after a full GC) and the heap in use (HeapInuse: spans holding them,
// which also counts free room in partly used spans).
func heap() (alloc, inuse uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.HeapInuse
}

func main() {
	n := flag.Int("n", 1_000_000, "sessions")
	dir := flag.String("dir", "", "data folder (default: a temporary one, removed after)")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "crux-bench")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := statestore.Options{Dir: *dir, Logger: quiet, SnapshotLogBytes: -1}
	value := make([]byte, 200)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	beforeAlloc, beforeInuse := heap()
	e, err := statestore.Open(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var keyBytes int
	start := time.Now()
	for i := 0; i < *n; i++ {
		k := fmt.Sprintf("im||{user-%d}||session", i)
		keyBytes += len(k)
		v := make([]byte, len(value))
		copy(v, value)
		if _, err := e.Set(statestore.Write{Key: k, Value: v}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	load := time.Since(start)
	// Let the group commit drain the log buffer before measuring.
	if err := e.Sync(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	afterAlloc, afterInuse := heap()
	payload := uint64(keyBytes + *n*len(value))
	perKey := float64(afterAlloc-beforeAlloc-payload) / float64(*n)
	perKeyInuse := float64(afterInuse-beforeInuse-payload) / float64(*n)
	fmt.Printf("machine: %d cores, %s, %s\n", runtime.NumCPU(), runtime.GOOS, runtime.Version())
	fmt.Printf("sessions: %d, key %d B avg, value %d B\n", *n, keyBytes / *n, len(value))
	fmt.Printf("load: %s (%.0f sets/s, one goroutine, fsync=interval)\n", load.Round(time.Millisecond), float64(*n)/load.Seconds())
	fmt.Printf("live heap: %.1f MiB for %.1f MiB of keys and values: %.1f B per key beyond key and value (heap in use, with span slack: %.1f B)\n",
		float64(afterAlloc-beforeAlloc)/(1<<20), float64(payload)/(1<<20), perKey, perKeyInuse)
	e = reopen(e, opts, "recovery from the log alone")
	check(e.Snapshot())
	e = reopen(e, opts, "recovery from a snapshot")
	check(e.Close())
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// reopen closes e, opens the store again and prints how long recovery took.
func reopen(e *statestore.Engine, opts statestore.Options, what string) *statestore.Engine {
	check(e.Close())
	debug.FreeOSMemory()
	start := time.Now()
	e, err := statestore.Open(opts)
	check(err)
	fmt.Printf("%s: %s (%d keys)\n", what, time.Since(start).Round(time.Millisecond), e.Len())
	return e
}
