package cluster

import (
	"context"
	"testing"

	"mecha/statestore"
)

// BenchmarkGet reads a key through the router of its leader (in-process)
// and through the client-only router (one muxconn round trip on
// loopback).
func BenchmarkGet(b *testing.B) {
	tc := newCluster(b)
	ctx := context.Background()
	key := tc.keyLedBy("a", "app||bench")
	if _, err := tc.client.Set(ctx, statestore.Write{Key: key, Value: make([]byte, 256)}); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		r    *Router
	}{{"local", tc.member("a").router}, {"remote", tc.client}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, ok, err := c.r.Get(ctx, key); !ok || err != nil {
						b.Fatal(ok, err)
					}
				}
			})
		})
	}
}
