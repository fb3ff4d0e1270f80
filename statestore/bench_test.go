package statestore

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

func sessionValue() []byte {
	v := make([]byte, 200)
	for i := range v {
		v[i] = 'a' + byte(i%26)
	}
	return v
}

// BenchmarkEngineGet reads random keys of 100,000 sessions from all
// cores (go test -bench EngineGet -cpu 2).
func BenchmarkEngineGet(b *testing.B) {
	e := open(b, b.TempDir())
	defer e.Close()
	const n = 100_000
	keys := make([]string, n)
	val := sessionValue()
	for i := range keys {
		keys[i] = fmt.Sprintf("im||user-%d||session", i)
		if _, err := e.Set(Write{Key: keys[i], Value: val}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			if _, ok, _ := e.Get(keys[r.IntN(n)]); !ok {
				b.Error("missing key")
				return
			}
		}
	})
}

// BenchmarkEngineSet writes 200 B sessions to 100,000 keys from all cores
// under each fsync policy: first with one writer per core (GOMAXPROCS
// goroutines, the figure docs/benchmarks.md has tracked), then with 16
// writers, where group commits hold several writers' records.
func BenchmarkEngineSet(b *testing.B) {
	for _, policy := range []FsyncPolicy{FsyncInterval, FsyncAlways} {
		b.Run("fsync="+policy.String(), func(b *testing.B) { benchmarkSet(b, policy, 1) })
	}
	for _, policy := range []FsyncPolicy{FsyncInterval, FsyncAlways, FsyncNever} {
		b.Run("fsync="+policy.String()+"/writers=16", func(b *testing.B) {
			benchmarkSet(b, policy, (16+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0))
		})
	}
}

// benchmarkSet runs parallelism writers per core.
func benchmarkSet(b *testing.B, policy FsyncPolicy, parallelism int) {
	e := open(b, b.TempDir(), func(o *Options) { o.Fsync = policy })
	defer e.Close()
	const n = 100_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("im||user-%d||session", i)
	}
	val := sessionValue()
	b.ReportAllocs()
	b.SetBytes(int64(len(val)))
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			if _, err := e.Set(Write{Key: keys[r.IntN(n)], Value: val}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
