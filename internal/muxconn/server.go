package muxconn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"mecha/internal/authtoken"
	"mecha/internal/netlimit"
)

// Error codes of KindError frames.
const (
	// CodeApp is the handler's own error: its message goes to the caller.
	CodeApp byte = 1
	// CodeUnknownMethod: no handler serves the method.
	CodeUnknownMethod byte = 2
	// CodeBusy: the connection has MaxInFlight requests under way.
	CodeBusy byte = 3
	// CodeStopping: the server is shutting down.
	CodeStopping byte = 4
)

// Error is a failed request as the caller sees it: the code and message
// the server sent. Handlers return one to choose the code; any other
// error is CodeApp with its message.
type Error struct {
	Code byte
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("muxconn: remote error %d: %s", e.Code, e.Msg) }

// ErrUnknownMethod is what a Handler returns for a method it does not
// serve.
var ErrUnknownMethod = &Error{Code: CodeUnknownMethod, Msg: "unknown method"}

// Handler serves one request. body is the caller's, valid until Handler
// returns; the returned bytes are sent as they are.
type Handler func(ctx context.Context, method uint16, body []byte) ([]byte, error)

// Server serves muxconn connections the internal port hands it.
type Server struct {
	// Token, when set, must be the body of the hello frame.
	Token string
	// Handler serves the requests.
	Handler Handler
	// Timeouts: Header bounds the wait for the hello, Idle the wait
	// between frames.
	Timeouts netlimit.Timeouts
	// MaxInFlight bounds the requests one connection has under way (1024
	// when zero); a request past it is answered CodeBusy at once.
	MaxInFlight int
	Logger      *slog.Logger

	// mu guards conns and stopping.
	mu       sync.Mutex
	conns    map[net.Conn]chan struct{} // closed when ServeConn returns
	stopping bool
	// cancel ends the handlers' context: Shutdown cuts long polls short.
	hctx   context.Context
	cancel context.CancelFunc
	// inflight counts requests under way, for Shutdown.
	inflight sync.WaitGroup
	// ending is stopping, for the read loops to see at each frame.
	ending atomic.Bool
}

// ServeConn serves one connection whose Preface was already read (by the
// internal port's splitter) until it closes, errs or the server stops.
func (s *Server) ServeConn(ctx context.Context, c net.Conn, r io.Reader) {
	to := s.Timeouts.OrDefault()
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		c.Close()
		return
	}
	if s.conns == nil {
		s.conns = map[net.Conn]chan struct{}{}
		s.hctx, s.cancel = context.WithCancel(context.Background())
	}
	// The handlers' context ends with ctx, or when Shutdown cuts long
	// polls short.
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	defer context.AfterFunc(s.hctx, hcancel)()
	done := make(chan struct{})
	s.conns[c] = done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
		close(done)
	}()
	if r == nil {
		r = c
	}
	br := bufio.NewReaderSize(r, 32<<10)
	_ = c.SetReadDeadline(time.Now().Add(to.Header))
	hello, buf, err := readFrame(br, nil)
	if err != nil || hello.kind != KindHello || !authtoken.Allows(hello.body, s.Token) {
		log.Warn("muxconn: connection refused: no hello with the peer token", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	w := newWriter(c, to.Body)
	defer w.close()
	w.send(appendFrame(nil, KindHello, 0, 0, nil)) // the hello is answered: requests may flow
	maxIn := s.MaxInFlight
	if maxIn <= 0 {
		maxIn = 1024
	}
	sem := make(chan struct{}, maxIn)
	var mine sync.WaitGroup
	defer mine.Wait()
	for {
		_ = c.SetReadDeadline(time.Now().Add(to.Idle))
		var f frame
		if !s.ending.Load() { // else Shutdown's deadline may have come before this one
			f, buf, err = readFrame(br, buf)
		}
		if err != nil || s.ending.Load() {
			if s.ending.Load() {
				// Shutdown ended the reading: once every request run is
				// answered, say so, so that the client knows the rest
				// never ran (a frame just read is not run).
				mine.Wait()
				w.send(appendFrame(nil, KindGoAway, 0, 0, nil))
				return
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					log.Warn("muxconn: connection dropped", "remote", c.RemoteAddr().String(), "err", err)
				}
			}
			return
		}
		if f.kind != KindRequest {
			log.Warn("muxconn: connection dropped: a frame that is not a request", "kind", f.kind, "remote", c.RemoteAddr().String())
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			w.send(errorFrame(f.id, CodeBusy, "too many requests in flight on this connection"))
			continue
		}
		s.mu.Lock()
		stopping := s.stopping
		if !stopping {
			s.inflight.Add(1)
		}
		s.mu.Unlock()
		if stopping {
			<-sem
			w.send(errorFrame(f.id, CodeStopping, "the runtime is stopping"))
			continue
		}
		body := append([]byte(nil), f.body...) // buf is reused by the next read
		id, method := f.id, f.method
		mine.Add(1)
		go func() {
			defer func() { <-sem; s.inflight.Done(); mine.Done() }()
			out, err := s.Handler(hctx, method, body)
			if err != nil {
				var e *Error
				if !errors.As(err, &e) {
					e = &Error{Code: CodeApp, Msg: err.Error()}
				}
				w.send(errorFrame(id, e.Code, e.Msg))
				return
			}
			w.send(appendFrame(nil, KindResponse, id, 0, out))
		}()
	}
}

func errorFrame(id uint32, code byte, msg string) []byte {
	return appendFrame(nil, KindError, id, 0, append([]byte{code}, msg...))
}

// LongPollGrace is how long Shutdown lets requests under way run before
// it ends their context, which cuts long polls short.
const LongPollGrace = time.Second

// Shutdown stops reading requests, waits for those under way (or ctx),
// and ends each connection with KindGoAway once the requests it ran are
// answered: the client fails the rest, which never ran, with
// CodeStopping. What is left when ctx ends is closed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	s.ending.Store(true)
	conns := make(map[net.Conn]chan struct{}, len(s.conns))
	for c, d := range s.conns {
		conns[c] = d
		_ = c.SetReadDeadline(time.Now()) // its read loop ends, then says goaway
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	var err error
	cut := time.NewTimer(LongPollGrace)
	defer cut.Stop()
	select {
	case <-done:
	case <-cut.C:
		// Long polls (a replica's fetch, a map watch) still held: their
		// context ends, and they answer what they have.
		s.mu.Lock()
		if s.cancel != nil {
			s.cancel()
		}
		s.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	case <-ctx.Done():
		err = ctx.Err()
	}
	for c, d := range conns {
		select {
		case <-d:
		case <-ctx.Done():
			c.Close()
			err = ctx.Err()
		}
	}
	return err
}

// writer batches the frames of one connection: whoever finds the
// connection free writes every frame waiting, in one buffer, so frames
// that queue up while a write is under way go out together. Before its
// first write the writer yields the processor once (runtime.Gosched):
// under load the goroutines about to send on the same connection run
// first and queue their frames, so one write carries several (a Crux
// cluster client's GETs: +4–9% requests/s, docs/benchmarks.md); idle, it
// costs a few hundred nanoseconds.
type writer struct {
	c       net.Conn
	timeout time.Duration

	mu      sync.Mutex // guards pending, writing and failed
	pending [][]byte
	writing bool
	failed  bool
}

func newWriter(c net.Conn, timeout time.Duration) *writer {
	return &writer{c: c, timeout: timeout}
}

// send queues a frame and, unless another sender is writing (it will
// take this one too), writes what is queued.
func (w *writer) send(f []byte) bool {
	w.mu.Lock()
	if w.failed {
		w.mu.Unlock()
		return false
	}
	w.pending = append(w.pending, f)
	if w.writing {
		w.mu.Unlock()
		return true
	}
	w.writing = true
	w.mu.Unlock()
	runtime.Gosched()
	w.mu.Lock()
	for len(w.pending) > 0 {
		batch := w.pending
		w.pending = nil
		w.mu.Unlock()
		bufs := net.Buffers(batch)
		_ = w.c.SetWriteDeadline(time.Now().Add(w.timeout))
		_, err := bufs.WriteTo(w.c)
		w.mu.Lock()
		if err != nil {
			w.failed = true
			w.pending = nil
			w.writing = false
			w.mu.Unlock()
			w.c.Close()
			return false
		}
	}
	w.writing = false
	w.mu.Unlock()
	return true
}

func (w *writer) close() {
	w.mu.Lock()
	w.failed = true
	w.mu.Unlock()
}
