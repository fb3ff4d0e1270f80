package statestore

import "unsafe"

// recHeader starts the single allocation that holds one stored key: the
// header, then the key bytes, then the value bytes. The slot's map key is
// a string pointing into the same allocation, so a key costs one
// allocation and one map slot of 24 bytes (string header and pointer):
// this is what keeps the store under 100 bytes per key beyond the key and
// the value.
type recHeader struct {
	version uint64 // the slot sequence number of the write: the ETag
	expires int64  // unix ns; 0 means no TTL
	klen    uint32
	vlen    uint32
}

const recHeaderSize = int(unsafe.Sizeof(recHeader{}))

// newRec copies key and value into a new record and returns it with the
// key string that lives inside it (use that string as the map key).
func newRec(key string, value []byte, version uint64, expires int64) (*recHeader, string) {
	// A byte slice holds no pointers, so the GC does not scan records;
	// allocations of 8 bytes or more are 8-byte aligned, as the header
	// needs.
	buf := make([]byte, recHeaderSize+len(key)+len(value))
	h := (*recHeader)(unsafe.Pointer(&buf[0]))
	h.version, h.expires, h.klen, h.vlen = version, expires, uint32(len(key)), uint32(len(value))
	copy(buf[recHeaderSize:], key)
	copy(buf[recHeaderSize+len(key):], value)
	if len(key) == 0 {
		// The API refuses empty keys and recovery treats them as
		// corruption; never index past the buffer all the same.
		return h, ""
	}
	return h, unsafe.String(&buf[recHeaderSize], len(key))
}

func (h *recHeader) bytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(h)), recHeaderSize+int(h.klen)+int(h.vlen))
}

// value returns the value bytes; they are shared and must not be
// modified (a write makes a new record).
func (h *recHeader) value() []byte {
	b := h.bytes()[recHeaderSize+int(h.klen):]
	return b[:len(b):len(b)]
}

func (h *recHeader) live(now int64) bool { return h.expires == 0 || h.expires > now }
