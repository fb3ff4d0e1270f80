package clustermap

import (
	"hash/crc32"
	"strings"
)

// castagnoli is CRC-32C, hardware accelerated on amd64 and arm64 (the
// same table the stores checksum with).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Slot returns the Crux slot of key: CRC-32C of the key, or of its hash
// tag (as in Redis Cluster: the part between the first '{' and the next
// '}' when that part is not empty), so that keys sharing a tag share a
// slot and a leader.
//
// It must agree with statestore's slot function bit for bit, since the
// slot decides which member holds a key's data; the CRC is spread over
// the 1024 slots by Fibonacci hashing, as statestore does, rather than
// reduced mod 1024, because the top bits of the product spread keys that
// differ in a few bytes. slot_test.go pins values taken from statestore.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	c := crc32.Checksum([]byte(key), castagnoli)
	return int((uint64(c) * 0x9E3779B97F4A7C15) >> (64 - 10))
}
