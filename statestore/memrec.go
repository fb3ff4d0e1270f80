package statestore

import (
	"hash/maphash"
	"unsafe"
)

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

// key returns the key bytes stored in the record, as a string sharing them.
func (h *recHeader) key() string {
	if h.klen == 0 {
		return ""
	}
	return unsafe.String((*byte)(unsafe.Add(unsafe.Pointer(h), recHeaderSize)), int(h.klen))
}

// keyMap is a slot's index: a map from a 64-bit hash of the key to the
// record, whose own bytes hold the key. A map slot is 16 bytes instead of
// the 24 a string-keyed map needs, which matters at millions of keys. Two
// keys with the same hash (about one pair in 10^19 hashes) are handled by
// keeping the later ones in a small string-keyed map.
type keyMap struct {
	seed maphash.Seed
	m    map[uint64]*recHeader
	// coll holds the records whose key hash equals that of another key in
	// m; nil almost always.
	coll map[string]*recHeader
}

func newKeyMap(seed maphash.Seed, size int) keyMap {
	return keyMap{seed: seed, m: make(map[uint64]*recHeader, size)}
}

func (k *keyMap) hash(key string) uint64 { return maphash.String(k.seed, key) }

func (k *keyMap) get(key string) (*recHeader, bool) { return k.getHashed(k.hash(key), key) }

// getHashed is get with the key's hash already computed.
func (k *keyMap) getHashed(h uint64, key string) (*recHeader, bool) {
	r, ok := k.m[h]
	if ok && r.key() == key {
		return r, true
	}
	if k.coll != nil {
		r, ok = k.coll[key]
		return r, ok
	}
	return nil, false
}

// put stores a new record for key, replacing any old one.
func (k *keyMap) put(key string, value []byte, version uint64, expires int64) {
	r, _ := newRec(key, value, version, expires)
	k.insert(maphash.String(k.seed, key), key, r)
}

// insert stores r for key under hash h.
func (k *keyMap) insert(h uint64, key string, r *recHeader) {
	if old, ok := k.m[h]; !ok || old.key() == key {
		k.m[h] = r
		return
	}
	if k.coll == nil {
		k.coll = map[string]*recHeader{}
	}
	k.coll[key] = r
}

// del removes key. When it frees a hash another key shared, that key
// moves from coll into m.
func (k *keyMap) del(key string) {
	h := maphash.String(k.seed, key)
	if r, ok := k.m[h]; ok && r.key() == key {
		delete(k.m, h)
		for ck, cr := range k.coll {
			if maphash.String(k.seed, ck) == h {
				delete(k.coll, ck)
				k.m[h] = cr
				break
			}
		}
		return
	}
	if k.coll != nil {
		delete(k.coll, key)
		if len(k.coll) == 0 {
			k.coll = nil
		}
	}
}

func (k *keyMap) len() int { return len(k.m) + len(k.coll) }

// each calls fn for every record until fn returns false. fn must not
// modify the map: collect keys and delete them afterwards.
func (k *keyMap) each(fn func(key string, r *recHeader) bool) {
	for _, r := range k.m {
		if !fn(r.key(), r) {
			return
		}
	}
	for key, r := range k.coll {
		if !fn(key, r) {
			return
		}
	}
}
