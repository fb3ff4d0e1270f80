package broker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// maxControlRequestBytes bounds every request but Produce.
const maxControlRequestBytes = 8 << 20

// minRequestBytes is the shortest request: api key, version, correlation
// id and client id length.
const minRequestBytes = 10

// maxInFlight bounds the requests one connection may have in progress;
// the reader stops reading while the writer catches up.
const maxInFlight = 128

// conn serves one client connection. The reader goroutine (serve) parses
// frames and starts a goroutine per request; the writer goroutine writes
// responses in request order.
type conn struct {
	b  *Broker
	nc net.Conn

	pending chan *pendingResp // requests in order, owned by the writer

	// inflight counts requests read and not yet answered (or dropped):
	// the reader adds, the writer takes off. lastActive is when a
	// request was last read or a response written, in Unix nanoseconds.
	// Both tell the reader whether the connection is idle.
	inflight   atomic.Int32
	lastActive atomic.Int64

	closeOnce sync.Once
	done      chan struct{} // closed when the connection closes

	sasl saslConn // the reader's: its authentication
}

// pendingResp is a response slot, filled by the request's goroutine.
type pendingResp struct {
	corr     int32
	flexHdr  bool // response header v1 (tagged fields)
	ready    chan struct{}
	resp     kmsg.Response // nil for acks=0 produce: no response at all
	closeNow bool          // the handler asked to drop the connection
}

func newConn(b *Broker, nc net.Conn) *conn {
	c := &conn{b: b, nc: nc, pending: make(chan *pendingResp, maxInFlight), done: make(chan struct{})}
	c.touch()
	return c
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

// requestHeader is a parsed request header (v1 or v2).
type requestHeader struct {
	key      int16
	version  int16
	corr     int32
	clientID string
}

// errFrame marks a request that cannot be parsed: Kafka closes the
// connection on those, and so does the broker, after a log line.
var errFrame = errors.New("malformed request")

// parseRequest parses a request frame body: the header (key, version,
// correlation id, client id and, for flexible versions, tagged fields)
// then the body through kmsg. Unknown keys and unsupported versions are
// reported with the header so the caller can answer or close.
func parseRequest(frame []byte) (requestHeader, kmsg.Request, error) {
	var h requestHeader
	if len(frame) < 8 {
		return h, nil, fmt.Errorf("%w: %d-byte frame is shorter than a request header", errFrame, len(frame))
	}
	h.key = int16(binary.BigEndian.Uint16(frame))
	h.version = int16(binary.BigEndian.Uint16(frame[2:]))
	h.corr = int32(binary.BigEndian.Uint32(frame[4:]))
	rest := frame[8:]
	if len(rest) < 2 {
		return h, nil, fmt.Errorf("%w: no client id", errFrame)
	}
	idLen := int(int16(binary.BigEndian.Uint16(rest)))
	rest = rest[2:]
	if idLen > len(rest) {
		return h, nil, fmt.Errorf("%w: client id length %d past the frame", errFrame, idLen)
	}
	// -1 is a null client id; any other negative length is not a length.
	if idLen < -1 {
		return h, nil, fmt.Errorf("%w: client id length %d", errFrame, idLen)
	}
	if idLen > 0 {
		h.clientID = string(rest[:idLen])
		rest = rest[idLen:]
	}
	req := kmsg.RequestForKey(h.key)
	if req == nil {
		return h, nil, fmt.Errorf("%w: unknown api key %d", errUnsupported, h.key)
	}
	api, ok := supportedAPIs[h.key]
	if !ok || h.version < api.min || h.version > api.max {
		return h, req, fmt.Errorf("%w: %s v%d (supported %s)", errUnsupported, kmsg.NameForKey(h.key), h.version, api.rangeString())
	}
	req.SetVersion(h.version)
	flexible := req.IsFlexible()
	if flexible {
		// Not kmsg.SkipTags: it runs the loop as many times as the count
		// says even after the bytes have run out.
		p := prescanner{b: rest, version: h.version, flexible: true}
		if err := p.tags(nil); err != nil {
			return h, nil, fmt.Errorf("%w: tagged fields in the header: %w", errFrame, err)
		}
		rest = p.b
	}
	// Every count in the body is checked against the bytes before kmsg
	// reads it (see prescan.go).
	if _, err := prescanBody(h.key, h.version, flexible, rest); err != nil {
		return h, nil, fmt.Errorf("%w: %s v%d body: %w", errFrame, kmsg.NameForKey(h.key), h.version, err)
	}
	if err := req.ReadFrom(rest); err != nil {
		return h, nil, fmt.Errorf("%w: %s v%d body: %w", errFrame, kmsg.NameForKey(h.key), h.version, err)
	}
	return h, req, nil
}

// errUnsupported is an unknown API key or an unsupported version.
var errUnsupported = errors.New("unsupported request")

// serve reads requests until the connection closes.
func (c *conn) serve() {
	defer c.close()
	var wg sync.WaitGroup
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	defer func() {
		close(c.pending)
		<-writerDone
		wg.Wait()
	}()
	r := bufio.NewReaderSize(c.nc, 64<<10)
	var sizeBuf [4]byte
	var prev chan struct{} // closed when the previous ordered request is done
	log := c.b.log.With("remote", c.nc.RemoteAddr().String())
	host, _, _ := net.SplitHostPort(c.nc.RemoteAddr().String())
	from := caller{done: c.done, host: "/" + host, ip: host, principal: anonymous}
	for {
		if !c.awaitRequest(r, log) {
			return
		}
		// From its first byte, a request must arrive whole in time.
		c.nc.SetReadDeadline(time.Now().Add(c.b.cfg.RequestReadTimeout))
		if _, err := io.ReadFull(r, sizeBuf[:]); err != nil {
			c.readFailed(log, 4, err)
			return
		}
		size := int32(binary.BigEndian.Uint32(sizeBuf[:]))
		// Below a header's 10 bytes, the frame cannot be a request, and
		// the peek at its api key below would wait on the next frame's
		// bytes: a 0-byte frame with nothing after it would hold the
		// connection open.
		if size < minRequestBytes || size > c.b.cfg.MaxRequestBytes {
			log.Warn("broker: closing connection: request size out of bounds", "size", size, "max_request_bytes", c.b.cfg.MaxRequestBytes)
			return
		}
		peek, err := r.Peek(2)
		if err != nil {
			c.readFailed(log, size, err)
			return
		}
		key := int16(binary.BigEndian.Uint16(peek))
		// Only Produce carries bulk data. Other requests are small, and
		// a big one could only be a run of array counts that make kmsg
		// allocate many structs per byte, so they get a tighter bound.
		if size > maxControlRequestBytes && key != 0 {
			log.Warn("broker: closing connection: non-produce request too large", "size", size, "api_key", key, "max", maxControlRequestBytes)
			return
		}
		// A produce frame is recycled once handled: its records are
		// written to the log, and nothing else keeps them. Other requests
		// may leave parts of their frame in long-lived state (group
		// metadata), so they get their own.
		var frame []byte
		pooled := key == 0
		if pooled {
			frame = getBuf(int(size))
		} else {
			frame = make([]byte, size)
		}
		if _, err := io.ReadFull(r, frame); err != nil {
			c.readFailed(log, size, err)
			return
		}
		c.touch()
		h, req, err := parseRequest(frame)
		if err != nil {
			if h.key == 18 && errors.Is(err, errUnsupported) && req != nil {
				// KIP-511: answer an unsupported ApiVersions with error
				// 35 and the v0 body listing what is supported.
				p := &pendingResp{corr: h.corr, ready: make(chan struct{})}
				p.resp = apiVersionsUnsupported()
				close(p.ready)
				if !c.enqueue(p) {
					return
				}
				continue
			}
			log.Warn("broker: closing connection", "client_id", h.clientID, "api_key", h.key, "api_version", h.version, "err", err)
			return
		}
		if h.key == 17 || h.key == 36 {
			// Answered here, in order, before the next request is read:
			// it decides what that one may be.
			if prev != nil {
				<-prev
			}
			p := &pendingResp{corr: h.corr, flexHdr: req.IsFlexible(), ready: make(chan struct{})}
			if hs, ok := req.(*kmsg.SASLHandshakeRequest); ok {
				p.resp = c.b.sasl.handshake(&c.sasl, hs)
			} else {
				p.resp = c.b.sasl.authenticate(&c.sasl, req.(*kmsg.SASLAuthenticateRequest))
			}
			close(p.ready)
			if !c.enqueue(p) {
				return
			}
			if c.sasl.failed {
				log.Warn("broker: SASL authentication failed; closing the connection after the answer", "client_id", h.clientID, "mechanism", c.sasl.mech)
				return
			}
			if c.sasl.authenticated() && h.key == 36 {
				log.Debug("broker: SASL authenticated", "user", c.sasl.user, "mechanism", c.sasl.mech)
				// Read by requests started after this one only.
				from.principal = principalOf(c.sasl.user)
			}
			continue
		}
		if c.b.sasl != nil && !c.sasl.authenticated() && h.key != 18 {
			log.Warn("broker: closing connection: request before SASL authentication", "client_id", h.clientID, "api_key", h.key)
			return
		}
		p := &pendingResp{corr: h.corr, flexHdr: req.IsFlexible() && h.key != 18, ready: make(chan struct{})}
		if !c.enqueue(p) {
			return
		}
		// Requests on one connection take effect in order, as in Kafka:
		// an idempotent producer's pipelined batches must append in
		// sequence, and a commit must precede the fetch sent after it.
		// Fetches are reads and long polls, so they run at once.
		var after, mine chan struct{}
		if h.key != 1 {
			after, mine = prev, make(chan struct{})
			prev = mine
		}
		who := from // a copy: authentication changes from
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(p.ready)
			if mine != nil {
				defer close(mine)
			}
			defer func() {
				if rec := recover(); rec != nil {
					log.Error("broker: request handler panicked; closing connection", "api_key", h.key, "api_version", h.version, "panic", rec)
					p.resp, p.closeNow = nil, true
				}
			}()
			if after != nil {
				<-after
			}
			p.resp = c.b.handle(who, h, req)
			if pooled {
				putBuf(frame)
			}
		}()
	}
}

func (c *conn) enqueue(p *pendingResp) bool {
	// Counted before it is queued, so that the writer never takes it
	// off the count first.
	c.inflight.Add(1)
	select {
	case c.pending <- p:
		return true
	case <-c.done:
		c.inflight.Add(-1)
		return false
	}
}

// touch records activity: a request read or a response written.
func (c *conn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// awaitRequest waits for the first byte of the next request and reports
// whether one came. A connection is idle, and closed, once it has had no
// request in progress and no bytes read or written for IdleTimeout, as
// with Kafka's connections.max.idle.ms; a request in progress (a
// long-polling fetch, a join waiting for its group) keeps it open.
func (c *conn) awaitRequest(r *bufio.Reader, log *slog.Logger) bool {
	idle := c.b.cfg.IdleTimeout
	for {
		if r.Buffered() > 0 {
			return true
		}
		now := time.Now()
		deadline := time.Unix(0, c.lastActive.Load()).Add(idle)
		if c.inflight.Load() > 0 {
			deadline = now.Add(idle)
		}
		if !deadline.After(now) {
			c.b.stats.idleClosed.Add(1)
			log.Debug("broker: closing idle connection", "idle_timeout", idle)
			return false
		}
		c.nc.SetReadDeadline(deadline)
		_, err := r.Peek(1)
		if err == nil {
			return true
		}
		if !isTimeout(err) {
			return false
		}
	}
}

// readFailed logs why a request of size bytes could not be read whole.
func (c *conn) readFailed(log *slog.Logger, size int32, err error) {
	if isTimeout(err) {
		c.b.stats.readTimeouts.Add(1)
		log.Warn("broker: closing connection: request not received in time", "size", size, "request_read_timeout", c.b.cfg.RequestReadTimeout)
		return
	}
	log.Warn("broker: closing connection: truncated request", "size", size, "err", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// writeLoop writes responses in request order, flushing when no further
// response is ready.
func (c *conn) writeLoop() {
	w := bufio.NewWriterSize(c.nc, 64<<10)
	var buf []byte
	broken := false
	for p := range c.pending {
		broken = c.writeOne(w, p, &buf, broken)
		c.inflight.Add(-1)
	}
	if !broken {
		c.writeDeadline()
		_ = w.Flush()
	}
}

// writeDeadline gives the next write IdleTimeout: a client that takes no
// response bytes for that long is as idle as one that sends nothing, and
// would otherwise hold the writer (and, once maxInFlight requests wait,
// the reader) forever.
func (c *conn) writeDeadline() {
	c.nc.SetWriteDeadline(time.Now().Add(c.b.cfg.IdleTimeout))
}

// writeOne waits for p and writes its response unless the connection is
// broken; it reports whether the connection is broken after.
func (c *conn) writeOne(w *bufio.Writer, p *pendingResp, buf *[]byte, broken bool) bool {
	select {
	case <-p.ready:
	default:
		// Not ready (a long-polling fetch, a join): send what is
		// buffered before waiting.
		if !broken && w.Buffered() > 0 {
			c.writeDeadline()
			if w.Flush() != nil {
				broken = true
				c.close()
			}
		}
		<-p.ready
	}
	if broken {
		return true
	}
	if p.closeNow {
		c.close()
		return true
	}
	if p.resp == nil {
		return false
	}
	pooledOut := false
	if r, ok := p.resp.(*fetchResponse); ok && r.bytes > 1<<20 {
		// A big fetch answer is mostly its record batches: build it in
		// a pooled buffer of about that size.
		*buf, pooledOut = getBuf(r.bytes + 64<<10)[:0], true
	}
	b := append((*buf)[:0], 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(p.corr))
	if p.flexHdr {
		b = append(b, 0) // no tagged fields
	}
	b = p.resp.AppendTo(b)
	if r, ok := p.resp.(interface{ release() }); ok {
		r.release()
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	c.writeDeadline()
	if _, err := w.Write(b); err != nil {
		c.close()
		return true
	}
	switch {
	case pooledOut:
		putBuf(b)
		*buf = nil
	case cap(b) > 1<<20:
		*buf = nil
	default:
		*buf = b
	}
	if len(c.pending) == 0 {
		if err := w.Flush(); err != nil {
			c.close()
			return true
		}
	}
	c.touch()
	return false
}
