// Package tracecontext makes and checks W3C trace context headers
// (traceparent), which mecha propagates from API calls to the app and into
// CloudEvents.
package tracecontext

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
)

// New returns a fresh sampled traceparent: 00-<trace id>-<span id>-01.
// Trace ids need to be unique, not secret, so they come from the fast
// per-thread ChaCha8 source rather than crypto/rand.
func New() string {
	var b [24]byte
	for {
		binary.LittleEndian.PutUint64(b[0:], rand.Uint64())
		binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
		binary.LittleEndian.PutUint64(b[16:], rand.Uint64())
		if b != [24]byte{} {
			break
		}
	}
	out := make([]byte, 0, 55)
	out = append(out, "00-"...)
	out = hex.AppendEncode(out, b[:16])
	out = append(out, '-')
	out = hex.AppendEncode(out, b[16:])
	out = append(out, "-01"...)
	return string(out)
}

// Valid reports whether tp is a well-formed version-00 traceparent with
// non-zero ids.
func Valid(tp string) bool {
	if len(tp) != 55 || tp[0] != '0' || tp[1] != '0' || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return false
	}
	zeroTrace, zeroSpan := true, true
	for i := 3; i < 55; i++ {
		if i == 35 || i == 52 {
			continue
		}
		c := tp[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
		if c != '0' {
			if i < 35 {
				zeroTrace = false
			} else if i < 52 {
				zeroSpan = false
			}
		}
	}
	return !zeroTrace && !zeroSpan
}

// Ensure returns tp when valid, or a fresh traceparent.
func Ensure(tp string) string {
	if Valid(tp) {
		return tp
	}
	return New()
}

// Child returns the traceparent of a new span in tp's trace, tp's span
// as its parent and its flags kept: how each hop through the runtime
// shows in a trace. When tp is not valid it starts a new trace.
func Child(tp string) string {
	if !Valid(tp) {
		return New()
	}
	var span [8]byte
	for span == [8]byte{} {
		binary.LittleEndian.PutUint64(span[:], rand.Uint64())
	}
	out := make([]byte, 0, 55)
	out = append(out, tp[:36]...)
	out = hex.AppendEncode(out, span[:])
	out = append(out, tp[52:]...)
	return string(out)
}
