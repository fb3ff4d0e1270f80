package broker

import (
	"math/bits"
	"sync"
)

// Fetch read buffers are recycled: a consumer reading at full speed would
// otherwise allocate (and zero) its whole throughput, and the collector
// would run for it. Buffers come in power-of-two classes from 64 KiB to
// 64 MiB; larger reads are allocated plainly.
const (
	minBufClass = 16 // 64 KiB
	maxBufClass = 26 // 64 MiB
)

var bufPools [maxBufClass + 1]sync.Pool

func bufClass(n int) int {
	c := bits.Len(uint(n - 1))
	if c < minBufClass {
		c = minBufClass
	}
	return c
}

// getBuf returns a buffer of at least n bytes; its contents are not zeroed.
func getBuf(n int) []byte {
	c := bufClass(n)
	if c > maxBufClass {
		return make([]byte, n)
	}
	if b, ok := bufPools[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<c)
}

// putBuf recycles a buffer from getBuf.
func putBuf(b []byte) {
	c := bufClass(cap(b))
	if c > maxBufClass || cap(b) != 1<<c {
		return
	}
	b = b[:cap(b)]
	bufPools[c].Put(&b)
}
