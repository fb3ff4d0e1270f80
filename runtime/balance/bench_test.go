package balance

import (
	"testing"
	"time"
)

func benchPickDone(b *testing.B, bal Balancer) {
	bal.Update(instances(10))
	b.ReportAllocs()
	for b.Loop() {
		_, done, err := bal.Pick("user-42")
		if err != nil {
			b.Fatal(err)
		}
		done(nil, time.Millisecond)
	}
}

func benchPickDoneParallel(b *testing.B, bal Balancer) {
	bal.Update(instances(10))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, done, err := bal.Pick("user-42")
			if err != nil {
				b.Error(err)
				return
			}
			done(nil, time.Millisecond)
		}
	})
}

// Pick + Done over 10 instances, per policy, with production defaults
// (system clock, math/rand/v2 global generator).
func BenchmarkRoundRobin(b *testing.B) { benchPickDone(b, NewRoundRobin()) }

func BenchmarkRoundRobinWeighted(b *testing.B) {
	bal := NewRoundRobin()
	insts := instances(10)
	for i := range insts {
		insts[i].Weight = i + 1
	}
	bal.Update(insts)
	b.ReportAllocs()
	for b.Loop() {
		_, done, _ := bal.Pick("")
		done(nil, 0)
	}
}

func BenchmarkLeastOutstanding(b *testing.B) { benchPickDone(b, NewLeastOutstanding(nil)) }

func BenchmarkRendezvous(b *testing.B) { benchPickDone(b, NewRendezvous()) }

func BenchmarkWeighted(b *testing.B) {
	w, err := NewWeighted(WeightedConfig{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	benchPickDone(b, w)
}

func BenchmarkLeastOutstandingParallel(b *testing.B) {
	benchPickDoneParallel(b, NewLeastOutstanding(nil))
}

func BenchmarkWeightedParallel(b *testing.B) {
	w, err := NewWeighted(WeightedConfig{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	benchPickDoneParallel(b, w)
}
