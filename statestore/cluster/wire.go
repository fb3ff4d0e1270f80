package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"mecha/statestore"
)

// Methods are the muxconn method numbers of Crux's routed operations;
// the runtime's muxconn server hands 0x0200–0x02FF to Server.Handle.
const (
	MethodGet            uint16 = 0x0200
	MethodSet            uint16 = 0x0201
	MethodDelete         uint16 = 0x0202
	MethodApply          uint16 = 0x0203
	MethodBulkGet        uint16 = 0x0204
	MethodBulkSet        uint16 = 0x0205
	MethodScan           uint16 = 0x0206
	MethodDeleteChildren uint16 = 0x0207
	// MethodGetStrong is a Get with consistency strong: the leader
	// answers once its in-sync replicas confirmed it still leads and
	// hold what it read. Its messages are MethodGet's.
	MethodGetStrong uint16 = 0x0208

	// MethodFirst and MethodLast bound the range the package owns.
	MethodFirst uint16 = 0x0200
	MethodLast  uint16 = 0x02FF
)

// WireVersion starts every request; a new layout takes a new version.
const WireVersion = 1

// ErrMalformed is wrapped by every decoding failure.
var ErrMalformed = errors.New("crux cluster: malformed message")

// maxLimit bounds a scan's limit on the wire.
const maxLimit = math.MaxInt32

// SlotEpoch is a slot with the leader epoch the caller's map has for it.
type SlotEpoch struct {
	Slot  int
	Epoch uint64
}

// Request is a routed operation. Which fields a method uses:
//
//	Get             Slots[1], Key
//	Set, Delete     Slots[1], Writes[1]
//	Apply, BulkSet  Slots[1], Writes[1..]
//	BulkGet         Slots[1], Keys[1..]
//	Scan            Slots[1..], Prefix, After, Limit
//	DeleteChildren  Slots[1..], Prefix
type Request struct {
	Store  string
	Slots  []SlotEpoch
	Key    string
	Keys   []string
	Writes []statestore.Write
	Prefix string
	After  string
	Limit  int
}

// Result is one key's answer in a BulkGet or BulkSet response.
type Result struct {
	Err     *Error
	Found   bool
	Item    statestore.Item // BulkGet
	Version uint64          // BulkSet
}

// Response is a method's answer: Err, or the fields of the method.
//
//	Get             Found, Item (without Key)
//	Set             Versions[1]
//	Delete          nothing
//	Apply           Versions (one per write)
//	BulkGet/BulkSet Results (one per key or write)
//	Scan            Items
//	DeleteChildren  Count
type Response struct {
	Err      *Error
	Found    bool
	Item     statestore.Item
	Versions []uint64
	Results  []Result
	Items    []statestore.Item
	Count    int64
}

// write flags.
const (
	flagDelete     = 1
	flagFirstWrite = 2
	flagETag       = 4
	flagStrong     = 8
	flagsKnown     = flagDelete | flagFirstWrite | flagETag | flagStrong
)

func knownMethod(m uint16) bool { return m >= MethodGet && m <= MethodGetStrong }

// shape is the method whose messages m uses.
func shape(m uint16) uint16 {
	if m == MethodGetStrong {
		return MethodGet
	}
	return m
}

func singleSlot(m uint16) bool {
	return m != MethodScan && m != MethodDeleteChildren && m != MethodApply
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendExpires(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(dst, 0)
	}
	return binary.AppendVarint(dst, t.UnixNano())
}

func appendWrite(dst []byte, w *statestore.Write) []byte {
	var f byte
	if w.Delete {
		f |= flagDelete
	}
	if w.FirstWrite {
		f |= flagFirstWrite
	}
	if w.ETag != nil {
		f |= flagETag
	}
	if w.Strong {
		f |= flagStrong
	}
	dst = append(dst, f)
	dst = appendString(dst, w.Key)
	if w.ETag != nil {
		dst = appendString(dst, *w.ETag)
	}
	if !w.Delete {
		dst = appendBytes(dst, w.Value)
		dst = binary.AppendVarint(dst, w.TTLSeconds)
	}
	return dst
}

// AppendRequest encodes r for method at the end of dst:
//
//	version  byte (WireVersion)
//	store    string
//	slots    uvarint count, then (slot uvarint, epoch uvarint) each
//	body     the method's fields, in the order of Request's table
//
// Strings and byte strings are a uvarint length and the bytes; a count
// is a uvarint; a write is flags byte (1 delete, 2 first-write, 4 has
// etag, 8 strong), key, [etag], and unless a delete, value and ttl (zigzag varint).
func AppendRequest(dst []byte, method uint16, r *Request) []byte {
	method = shape(method)
	dst = append(dst, WireVersion)
	dst = appendString(dst, r.Store)
	dst = binary.AppendUvarint(dst, uint64(len(r.Slots)))
	for _, s := range r.Slots {
		dst = binary.AppendUvarint(dst, uint64(s.Slot))
		dst = binary.AppendUvarint(dst, s.Epoch)
	}
	switch method {
	case MethodGet:
		dst = appendString(dst, r.Key)
	case MethodSet, MethodDelete:
		dst = appendWrite(dst, &r.Writes[0])
	case MethodApply, MethodBulkSet:
		dst = binary.AppendUvarint(dst, uint64(len(r.Writes)))
		for i := range r.Writes {
			dst = appendWrite(dst, &r.Writes[i])
		}
	case MethodBulkGet:
		dst = binary.AppendUvarint(dst, uint64(len(r.Keys)))
		for _, k := range r.Keys {
			dst = appendString(dst, k)
		}
	case MethodScan:
		dst = appendString(dst, r.Prefix)
		dst = appendString(dst, r.After)
		dst = binary.AppendUvarint(dst, uint64(r.Limit))
	case MethodDeleteChildren:
		dst = appendString(dst, r.Prefix)
	}
	return dst
}

// reader decodes a message; the first failure sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	r.b = nil
}

func (r *reader) uvarint(what string, limit uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("%s: bad uvarint", what)
		return 0
	}
	if n != uvarintLen(v) {
		r.fail("%s: uvarint not minimal", what)
		return 0
	}
	if v > limit {
		r.fail("%s: %d over %d", what, v, limit)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func (r *reader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("%s: bad varint", what)
		return 0
	}
	ux := uint64(v) << 1
	if v < 0 {
		ux = ^ux
	}
	if n != uvarintLen(ux) {
		r.fail("%s: varint not minimal", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("%s: missing", what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// bytes reads a length-prefixed byte string, copied.
func (r *reader) bytes(what string) []byte {
	n := r.uvarint(what+" length", uint64(len(r.b)))
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("%s: %d bytes, %d left", what, n, len(r.b))
		return nil
	}
	out := append([]byte(nil), r.b[:n]...)
	r.b = r.b[n:]
	return out
}

func (r *reader) string(what string) string {
	n := r.uvarint(what+" length", uint64(len(r.b)))
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail("%s: %d bytes, %d left", what, n, len(r.b))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// count reads a count of elements of at least min bytes each, bounded by
// the bytes left so a hostile message cannot make it allocate more than
// it is long.
func (r *reader) count(what string, min int) int {
	return int(r.uvarint(what, uint64(len(r.b)/min)))
}

func (r *reader) expires(what string) time.Time {
	ns := r.varint(what)
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func (r *reader) write() statestore.Write {
	var w statestore.Write
	f := r.byte("write flags")
	if f&^flagsKnown != 0 {
		r.fail("write flags %#x", f)
		return w
	}
	w.Delete, w.FirstWrite, w.Strong = f&flagDelete != 0, f&flagFirstWrite != 0, f&flagStrong != 0
	w.Key = r.string("key")
	if f&flagETag != 0 {
		e := r.string("etag")
		w.ETag = &e
	}
	if !w.Delete {
		w.Value = r.bytes("value")
		w.TTLSeconds = r.varint("ttl")
	}
	return w
}

func (r *reader) end() error {
	if r.err == nil && len(r.b) > 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}

// DecodeRequest reads a request AppendRequest wrote for method. It checks
// the shape (slot range, counts, a single slot where the method takes
// one, no trailing bytes); the engine checks the values.
func DecodeRequest(method uint16, b []byte) (*Request, error) {
	if !knownMethod(method) {
		return nil, fmt.Errorf("%w: unknown method %#04x", ErrMalformed, method)
	}
	method = shape(method)
	r := &reader{b: b}
	if v := r.byte("version"); r.err == nil && v != WireVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, v, WireVersion)
	}
	req := &Request{Store: r.string("store")}
	n := r.count("slot count", 2)
	if r.err == nil && (n == 0 || singleSlot(method) && n != 1 || n > statestore.NumSlots) {
		r.fail("%d slots for method %#04x", n, method)
	}
	req.Slots = make([]SlotEpoch, n)
	var seen [statestore.NumSlots / 64]uint64
	for i := range req.Slots {
		req.Slots[i] = SlotEpoch{Slot: int(r.uvarint("slot", statestore.NumSlots-1)), Epoch: r.uvarint("epoch", math.MaxUint64)}
		if s := req.Slots[i].Slot; r.err == nil {
			if seen[s/64]&(1<<(s%64)) != 0 {
				r.fail("slot %d twice", s)
			}
			seen[s/64] |= 1 << (s % 64)
		}
	}
	switch method {
	case MethodGet:
		req.Key = r.string("key")
	case MethodSet, MethodDelete:
		req.Writes = []statestore.Write{r.write()}
		if r.err == nil && req.Writes[0].Delete != (method == MethodDelete) {
			r.fail("write's delete flag does not match the method")
		}
	case MethodApply, MethodBulkSet:
		n := r.count("write count", 2)
		if r.err == nil && n == 0 {
			r.fail("no writes")
		}
		req.Writes = make([]statestore.Write, n)
		for i := range req.Writes {
			req.Writes[i] = r.write()
		}
	case MethodBulkGet:
		n := r.count("key count", 1)
		if r.err == nil && n == 0 {
			r.fail("no keys")
		}
		req.Keys = make([]string, n)
		for i := range req.Keys {
			req.Keys[i] = r.string("key")
		}
	case MethodScan:
		req.Prefix = r.string("prefix")
		req.After = r.string("after")
		req.Limit = int(r.uvarint("limit", maxLimit))
	case MethodDeleteChildren:
		req.Prefix = r.string("prefix")
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return req, nil
}

func appendItem(dst []byte, it *statestore.Item, key bool) []byte {
	if key {
		dst = appendString(dst, it.Key)
	}
	dst = binary.AppendUvarint(dst, it.Version)
	dst = appendExpires(dst, it.Expires)
	return appendBytes(dst, it.Value)
}

func (r *reader) item(key bool) statestore.Item {
	var it statestore.Item
	if key {
		it.Key = r.string("key")
	}
	it.Version = r.uvarint("version", math.MaxUint64)
	it.Expires = r.expires("expires")
	it.Value = r.bytes("value")
	return it
}

// AppendResponse encodes an answer to method at the end of dst: a status
// byte (0 ok, else an error Code), then for ok the method's fields in the
// order of Response's table (an item is version, expiry as Unix
// nanoseconds (zigzag varint, 0 for none), value; a scan's items start
// with their key; a BulkGet or BulkSet result is its own status, then the
// found byte and item, or the version), and for an error its fields (see
// Error).
func AppendResponse(dst []byte, method uint16, resp *Response) []byte {
	method = shape(method)
	if resp.Err != nil {
		return appendError(dst, resp.Err)
	}
	dst = append(dst, 0)
	switch method {
	case MethodGet:
		dst = appendFound(dst, resp.Found, &resp.Item)
	case MethodSet, MethodApply:
		dst = binary.AppendUvarint(dst, uint64(len(resp.Versions)))
		for _, v := range resp.Versions {
			dst = binary.AppendUvarint(dst, v)
		}
	case MethodBulkGet, MethodBulkSet:
		dst = binary.AppendUvarint(dst, uint64(len(resp.Results)))
		for i := range resp.Results {
			res := &resp.Results[i]
			if res.Err != nil {
				dst = appendError(dst, res.Err)
				continue
			}
			dst = append(dst, 0)
			if method == MethodBulkGet {
				dst = appendFound(dst, res.Found, &res.Item)
			} else {
				dst = binary.AppendUvarint(dst, res.Version)
			}
		}
	case MethodScan:
		dst = binary.AppendUvarint(dst, uint64(len(resp.Items)))
		for i := range resp.Items {
			dst = appendItem(dst, &resp.Items[i], true)
		}
	case MethodDeleteChildren:
		dst = binary.AppendUvarint(dst, uint64(resp.Count))
	}
	return dst
}

func appendFound(dst []byte, found bool, it *statestore.Item) []byte {
	if !found {
		return append(dst, 0)
	}
	return appendItem(append(dst, 1), it, false)
}

func (r *reader) found() (bool, statestore.Item) {
	switch r.byte("found") {
	case 0:
		return false, statestore.Item{}
	case 1:
		return true, r.item(false)
	}
	r.fail("found byte is not 0 or 1")
	return false, statestore.Item{}
}

func appendError(dst []byte, e *Error) []byte {
	dst = append(dst, e.Code)
	if e.Code == CodeMoved {
		dst = binary.AppendUvarint(dst, uint64(e.Slot))
		dst = binary.AppendUvarint(dst, e.Epoch)
		return appendString(dst, e.Leader)
	}
	return appendString(dst, e.Msg)
}

// readError reads an error's fields after its code.
func (r *reader) error(code byte) *Error {
	if code > codeMax {
		r.fail("status %d", code)
		return nil
	}
	e := &Error{Code: code}
	if code == CodeMoved {
		e.Slot = int(r.uvarint("slot", statestore.NumSlots-1))
		e.Epoch = r.uvarint("epoch", math.MaxUint64)
		e.Leader = r.string("leader")
	} else {
		e.Msg = r.string("message")
	}
	return e
}

// DecodeResponse reads an answer AppendResponse wrote for method.
func DecodeResponse(method uint16, b []byte) (*Response, error) {
	if !knownMethod(method) {
		return nil, fmt.Errorf("%w: unknown method %#04x", ErrMalformed, method)
	}
	method = shape(method)
	r := &reader{b: b}
	resp := &Response{}
	if st := r.byte("status"); st != 0 {
		resp.Err = r.error(st)
		return resp, r.end()
	}
	switch method {
	case MethodGet:
		resp.Found, resp.Item = r.found()
	case MethodSet, MethodApply:
		n := r.count("version count", 1)
		resp.Versions = make([]uint64, n)
		for i := range resp.Versions {
			resp.Versions[i] = r.uvarint("version", math.MaxUint64)
		}
	case MethodBulkGet, MethodBulkSet:
		n := r.count("result count", 2)
		resp.Results = make([]Result, n)
		for i := range resp.Results {
			res := &resp.Results[i]
			if st := r.byte("status"); st != 0 {
				res.Err = r.error(st)
				continue
			}
			if method == MethodBulkGet {
				res.Found, res.Item = r.found()
			} else {
				res.Version = r.uvarint("version", math.MaxUint64)
			}
		}
	case MethodScan:
		n := r.count("item count", 4)
		resp.Items = make([]statestore.Item, n)
		for i := range resp.Items {
			resp.Items[i] = r.item(true)
		}
	case MethodDeleteChildren:
		resp.Count = int64(r.uvarint("count", math.MaxInt64))
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return resp, nil
}
