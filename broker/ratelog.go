package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// The broker's warnings and errors come in loops: a client can open
// connections in a loop to send bad frames or refused produces, and a
// full descriptor table or a failing disk repeats the same error on every
// accept or flush. None of that may fill the disk with log lines or spend
// the broker's CPU on them. So records at Warn and above pass at most
// logBurst per message, then one per logInterval; the next one to pass
// carries how many were dropped ("suppressed"). Info and Debug, which no
// client drives in a loop, pass untouched.
const (
	logBurst    = 10
	logInterval = time.Second
	// maxLogKeys bounds the buckets; the broker's messages are constant
	// strings, so this is only a guard against a caller formatting them.
	maxLogKeys = 1024
)

// logLimiter is a token bucket per message, shared by a handler and every
// handler derived from it with WithAttrs or WithGroup.
type logLimiter struct {
	mu      sync.Mutex // guards buckets
	buckets map[string]*logBucket
}

type logBucket struct {
	tokens  float64
	last    time.Time
	dropped int
}

// allow takes a token for msg at now, and reports how many records of msg
// were dropped since the last one that passed.
func (l *logLimiter) allow(msg string, now time.Time) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bk := l.buckets[msg]
	if bk == nil {
		if len(l.buckets) >= maxLogKeys {
			clear(l.buckets)
		}
		bk = &logBucket{tokens: logBurst, last: now}
		l.buckets[msg] = bk
	}
	if elapsed := now.Sub(bk.last); elapsed > 0 {
		bk.tokens = min(logBurst, bk.tokens+float64(elapsed)/float64(logInterval))
		bk.last = now
	}
	if bk.tokens < 1 {
		bk.dropped++
		return false, 0
	}
	bk.tokens--
	dropped, bk.dropped = bk.dropped, 0
	return true, dropped
}

// rateLimitedHandler is a slog.Handler that rate-limits records at Warn
// and above per message before passing them to inner.
type rateLimitedHandler struct {
	inner slog.Handler
	lim   *logLimiter
}

func newRateLimitedHandler(inner slog.Handler) *rateLimitedHandler {
	return &rateLimitedHandler{inner: inner, lim: &logLimiter{buckets: map[string]*logBucket{}}}
}

func (h *rateLimitedHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *rateLimitedHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.inner.Handle(ctx, r)
	}
	now := r.Time
	if now.IsZero() {
		now = time.Now()
	}
	ok, dropped := h.lim.allow(r.Message, now)
	if !ok {
		return nil
	}
	if dropped > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", dropped))
	}
	return h.inner.Handle(ctx, r)
}

func (h *rateLimitedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &rateLimitedHandler{inner: h.inner.WithAttrs(as), lim: h.lim}
}

func (h *rateLimitedHandler) WithGroup(name string) slog.Handler {
	return &rateLimitedHandler{inner: h.inner.WithGroup(name), lim: h.lim}
}
