// Package muxconn is the runtime-to-runtime transport of requests that
// are many and small (a Crux read or write routed to its slot leader, a
// replica's fetch, a raft message): compact binary frames on a few
// pooled connections, many requests in flight on each (multiplexed, each
// matched to its answer by an id), writes batched into one system call
// when several are waiting.
//
// It runs on the internal port beside HTTP/1.1 and HTTP/2: a connection
// opens with Preface, which tells it apart; the internal port's TLS, when
// configured, is under it. The first frame is a hello carrying the peer
// token; nothing else is served before it checks.
//
// A frame is
//
//	size    uint32  bytes after this field (kind, id and body)
//	kind    uint8   what the frame is (KindHello, KindRequest, …)
//	id      uint32  the request it belongs to (0 for hello)
//	method  uint16  requests only: which handler
//	body    []byte  the rest, the method's own encoding
//
// all big-endian. A frame over MaxFrame is refused and the connection
// closed.
package muxconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Preface opens every muxconn connection, so that the internal port can
// tell it from HTTP/1.1 and HTTP/2 by its first bytes.
const Preface = "MECHA-MUX/1\r\n\r\n"

// Frame kinds.
const (
	// KindHello is the client's first frame: the peer token as body.
	KindHello byte = 1
	// KindRequest asks the server's handler for method (the body).
	KindRequest byte = 2
	// KindResponse answers request id with a body.
	KindResponse byte = 3
	// KindError answers request id with an error: a code byte then a
	// message.
	KindError byte = 4
	// KindGoAway is a stopping server's last frame before it closes the
	// connection: every request it read has been answered, and it reads
	// no more. A request still unanswered was never read (HTTP/2's
	// GOAWAY): the client fails it with CodeStopping, which a caller may
	// send again elsewhere.
	KindGoAway byte = 5
)

// MaxFrame bounds a frame's size: the largest body a method may carry
// plus its header.
const MaxFrame = 64 << 20

// headerLen is kind, id and method.
const headerLen = 1 + 4 + 2

// ErrFrame is wrapped by every malformed frame.
var ErrFrame = errors.New("muxconn: malformed frame")

// frame is one decoded frame. body aliases the reader's buffer until the
// next read.
type frame struct {
	kind   byte
	id     uint32
	method uint16
	body   []byte
}

// appendFrame encodes a frame at the end of dst.
func appendFrame(dst []byte, kind byte, id uint32, method uint16, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(headerLen+len(body)))
	dst = append(dst, kind)
	dst = binary.BigEndian.AppendUint32(dst, id)
	dst = binary.BigEndian.AppendUint16(dst, method)
	return append(dst, body...)
}

// readFrame reads one frame from r into buf (grown as needed) and
// returns it with the buffer to reuse.
func readFrame(r io.Reader, buf []byte) (frame, []byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return frame{}, buf, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < headerLen || n > MaxFrame {
		return frame{}, buf, fmt.Errorf("%w: size %d (want %d to %d)", ErrFrame, n, headerLen, MaxFrame)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, buf, err
	}
	f, err := decodeFrame(buf)
	return f, buf, err
}

// decodeFrame reads a frame's fields (after its size).
func decodeFrame(b []byte) (frame, error) {
	if len(b) < headerLen {
		return frame{}, fmt.Errorf("%w: %d bytes, want at least %d", ErrFrame, len(b), headerLen)
	}
	f := frame{kind: b[0], id: binary.BigEndian.Uint32(b[1:5]), method: binary.BigEndian.Uint16(b[5:7]), body: b[headerLen:]}
	switch f.kind {
	case KindHello, KindRequest, KindResponse, KindError, KindGoAway:
	default:
		return frame{}, fmt.Errorf("%w: kind %d", ErrFrame, f.kind)
	}
	if f.kind == KindError && len(f.body) == 0 {
		return frame{}, fmt.Errorf("%w: an error frame without its code", ErrFrame)
	}
	return f, nil
}
