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
// end, at most max bytes (and always the newest batch). The partition's
// mu guards it.
type tailCache struct {
	max     int
	entries []tailEntry
	bytes   int
}

// tailEntry is one cached batch: records [base, end).
type tailEntry struct {
	base, end int64
	data      []byte
}

// add copies the batches just written (buf, at base on) in, and drops the
// oldest past max.
func (c *tailCache) add(buf []byte, infos []BatchInfo, base int64) {
	if c.max <= 0 || len(infos) == 0 {
		return
	}
	if n := len(c.entries); n > 0 && c.entries[n-1].end != base {
		c.reset() // not contiguous (cannot happen: the log only grows at its end)
	}
	cp := append([]byte(nil), buf...)
	off := base
	for _, in := range infos {
		end := in.Pos + in.Size
		next := off + int64(in.LastOffsetDelta) + 1
		c.entries = append(c.entries, tailEntry{base: off, end: next, data: cp[in.Pos:end:end]})
		c.bytes += end - in.Pos
		off = next
	}
	drop := 0
	for drop < len(c.entries)-1 && c.bytes > c.max {
		c.bytes -= len(c.entries[drop].data)
		c.entries[drop] = tailEntry{}
		drop++
	}
	c.entries = c.entries[drop:]
}

// reset empties the cache (the log was cut or restarted).
func (c *tailCache) reset() {
	clear(c.entries)
	c.entries, c.bytes = c.entries[:0], 0
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
