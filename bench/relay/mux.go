package main

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync"
)

// A frame is [4 bytes stream id][4 bytes length][payload]; a zero-length
// payload closes the stream.

// link writes frames from many goroutines in batches: whoever adds a
// frame wakes the writer, which writes everything queued in one syscall.
type link struct {
	conn net.Conn
	mu   sync.Mutex
	buf  []byte
	wake chan struct{}
}

func newLink(c net.Conn) *link {
	l := &link{conn: c, wake: make(chan struct{}, 1)}
	go l.writer()
	return l
}

func (l *link) send(id uint32, p []byte) {
	l.mu.Lock()
	l.buf = binary.BigEndian.AppendUint32(l.buf, id)
	l.buf = binary.BigEndian.AppendUint32(l.buf, uint32(len(p)))
	l.buf = append(l.buf, p...)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *link) writer() {
	var out []byte
	for range l.wake {
		l.mu.Lock()
		out, l.buf = l.buf, out[:0]
		l.mu.Unlock()
		if len(out) > 0 {
			if _, err := l.conn.Write(out); err != nil {
				return
			}
		}
	}
}

// pump sends what r yields as frames of stream id, then a close frame.
func (l *link) pump(id uint32, r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			l.send(id, buf[:n])
		}
		if err != nil {
			l.send(id, nil)
			return
		}
	}
}

// demux reads frames off the link and hands each to deliver.
func demux(c net.Conn, deliver func(id uint32, p []byte)) {
	br := bufio.NewReaderSize(c, 256<<10)
	var hdr [8]byte
	buf := make([]byte, 64<<10)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		id, n := binary.BigEndian.Uint32(hdr[:4]), binary.BigEndian.Uint32(hdr[4:])
		if int(n) > len(buf) {
			return
		}
		if _, err := io.ReadFull(br, buf[:n]); err != nil {
			return
		}
		deliver(id, buf[:n])
	}
}

func muxIn(listen, up string) {
	lc, err := net.Dial("tcp", up)
	if err != nil {
		panic(err)
	}
	l := newLink(lc)
	var mu sync.Mutex
	conns := map[uint32]net.Conn{}
	go demux(lc, func(id uint32, p []byte) {
		mu.Lock()
		c := conns[id]
		mu.Unlock()
		if c == nil {
			return
		}
		if len(p) == 0 {
			c.Close()
			return
		}
		_, _ = c.Write(p)
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		panic(err)
	}
	for id := uint32(1); ; id++ {
		c, err := ln.Accept()
		if err != nil {
			panic(err)
		}
		mu.Lock()
		conns[id] = c
		mu.Unlock()
		go l.pump(id, c)
	}
}

func muxOut(listen, up string) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		panic(err)
	}
	for {
		lc, err := ln.Accept()
		if err != nil {
			panic(err)
		}
		go func() {
			l := newLink(lc)
			conns := map[uint32]net.Conn{} // only the demux goroutine uses it
			demux(lc, func(id uint32, p []byte) {
				c := conns[id]
				if c == nil {
					if len(p) == 0 {
						return
					}
					var err error
					if c, err = net.Dial("tcp", up); err != nil {
						l.send(id, nil)
						return
					}
					conns[id] = c
					go l.pump(id, c)
				}
				if len(p) == 0 {
					c.Close()
					delete(conns, id)
					return
				}
				_, _ = c.Write(p)
			})
		}()
	}
}
