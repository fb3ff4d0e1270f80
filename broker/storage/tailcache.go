package storage

import (
	"os"
	"sort"

	"golang.org/x/sys/unix"
)

// tailCache is a partition's broker-owned copy of the newest batches
// (Kuaishou's tail cache): consumers at the tail and followers read them
// from memory, and a lagging consumer's reads of older data, which go to
// the files, cannot push them out of it, as they push the tail out of the
// page cache in Kafka. It holds whole batches, contiguous up to the log
// end, in a ring of max bytes allocated once (a batch larger than the
// ring is kept alone, in a buffer of its own). The partition's mu guards
// it.
type tailCache struct {
	max     int
	ring    []byte      // max bytes, allocated on the first add
	head    int         // where the next batch goes in ring
	entries []tailEntry // oldest first
	bytes   int
}

// tailEntry is one cached batch: records [base, end), at pos in the ring
// (-1: a buffer of its own).
type tailEntry struct {
	base, end int64
	pos       int
	data      []byte
}

// add copies the batches just written (buf, at base on) in, evicting the
// oldest to make room.
func (c *tailCache) add(buf []byte, infos []BatchInfo, base int64) {
	if c.max <= 0 || len(infos) == 0 {
		return
	}
	if n := len(c.entries); n > 0 && c.entries[n-1].end != base {
		c.reset() // not contiguous (cannot happen: the log only grows at its end)
	}
	off := base
	for _, in := range infos {
		data := buf[in.Pos : in.Pos+in.Size]
		next := off + int64(in.LastOffsetDelta) + 1
		if len(data) > c.max {
			c.reset()
			c.entries = append(c.entries, tailEntry{base: off, end: next, pos: -1, data: append([]byte(nil), data...)})
			c.bytes = len(data)
		} else {
			pos := c.room(len(data))
			copy(c.ring[pos:], data)
			c.entries = append(c.entries, tailEntry{base: off, end: next, pos: pos, data: c.ring[pos : pos+len(data) : pos+len(data)]})
			c.bytes += len(data)
			c.head = pos + len(data)
		}
		off = next
	}
}

// room evicts the oldest entries until n contiguous bytes of the ring
// (n <= max) are free, and returns where they start.
func (c *tailCache) room(n int) int {
	if c.ring == nil {
		c.ring = make([]byte, c.max)
	}
	for {
		if len(c.entries) == 0 {
			if len(c.ring)-c.head < n {
				c.head = 0
			}
			return c.head
		}
		o := c.entries[0]
		switch {
		case o.pos < 0:
			// A batch kept alone takes no room; the ring's entries
			// are newer, so it goes first.
		case o.pos >= c.head:
			// The oldest lies ahead of head: free up to it.
			if o.pos-c.head >= n {
				return c.head
			}
		case len(c.ring)-c.head >= n:
			// The oldest lies behind head: free to the ring's end.
			return c.head
		default:
			c.head = 0 // wrap; the oldest now lies ahead
			continue
		}
		c.bytes -= len(o.data)
		c.entries[0] = tailEntry{}
		c.entries = c.entries[1:]
	}
}

// reset empties the cache (the log was cut or restarted); the ring is
// kept.
func (c *tailCache) reset() {
	clear(c.entries)
	c.entries, c.bytes, c.head = c.entries[:0], 0, 0
}

// start is the first offset the cache holds; ok is false when it is empty.
func (c *tailCache) start() (int64, bool) {
	if len(c.entries) == 0 {
		return 0, false
	}
	return c.entries[0].base, true
}

// read copies the cached batches from the one holding offset, below
// stop, within maxBytes (the first always), into a buffer from alloc; ok
// is false when the cache does not hold offset.
func (c *tailCache) read(offset, stop int64, maxBytes int, alloc func(int) []byte) (data []byte, ok bool) {
	if first, has := c.start(); !has || offset < first {
		return nil, false
	}
	i := sort.Search(len(c.entries), func(i int) bool { return c.entries[i].end > offset })
	if i == len(c.entries) {
		return nil, false
	}
	n, j := 0, i
	for ; j < len(c.entries); j++ {
		e := c.entries[j]
		if j > i && (e.base >= stop || n+len(e.data) > maxBytes) {
			break
		}
		n += len(e.data)
	}
	buf := alloc(n)[:0]
	for _, e := range c.entries[i:j] {
		buf = append(buf, e.data...)
	}
	return buf, true
}

// dropFromPageCache tells the kernel that the file range just read will
// not be read again soon (a lagging consumer's read of old data), so it
// does not stay in the page cache at the expense of what is (best effort).
func dropFromPageCache(f *os.File, pos, n int64) {
	if n > 0 {
		_ = unix.Fadvise(int(f.Fd()), pos, n, unix.FADV_DONTNEED)
	}
}
