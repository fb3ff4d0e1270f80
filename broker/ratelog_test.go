package broker

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// recordingHandler keeps every record it is given.
type recordingHandler struct {
	mu      *sync.Mutex
	records *[]slog.Record
}

func newRecordingHandler() recordingHandler {
	return recordingHandler{mu: &sync.Mutex{}, records: &[]slog.Record{}}
}

func (h recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	*h.records = append(*h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordingHandler) WithGroup(string) slog.Handler      { return h }

// count returns how many records have msg.
func (h recordingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range *h.records {
		if r.Message == msg {
			n++
		}
	}
	return n
}

func (h recordingHandler) last() slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return (*h.records)[len(*h.records)-1]
}

func TestRateLimitedHandler(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type rec struct {
		at             time.Duration // after t0
		level          slog.Level
		msg            string
		pass           bool
		wantSuppressed int64
	}
	var burst []rec
	for i := 0; i < logBurst; i++ {
		burst = append(burst, rec{0, slog.LevelError, "e", true, 0})
	}
	for _, tc := range []struct {
		name    string
		records []rec
	}{
		{"a burst passes, then one per interval with the count dropped", append(append([]rec(nil), burst...),
			rec{0, slog.LevelError, "e", false, 0},
			rec{logInterval / 2, slog.LevelError, "e", false, 0},
			rec{logInterval, slog.LevelError, "e", true, 2},
			rec{logInterval, slog.LevelError, "e", false, 0},
			rec{2 * logInterval, slog.LevelError, "e", true, 1},
		)},
		{"messages have their own budgets", append(append([]rec(nil), burst...),
			rec{0, slog.LevelError, "e", false, 0},
			rec{0, slog.LevelError, "other", true, 0},
		)},
		{"warnings are limited too", append(append([]rec(nil), burst[:logBurst-1]...),
			rec{0, slog.LevelWarn, "e", true, 0},
			rec{0, slog.LevelWarn, "e", false, 0},
		)},
		{"info and debug are not limited", append(append([]rec(nil), burst...),
			rec{0, slog.LevelInfo, "e", true, 0},
			rec{0, slog.LevelDebug, "e", true, 0},
			rec{0, slog.LevelError, "e", false, 0},
		)},
		{"a quiet message refills to the burst, no more", append(append(append([]rec(nil), burst...),
			rec{time.Hour, slog.LevelError, "e", true, 0}),
			burst[1:]...,
		)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rh := newRecordingHandler()
			h := newRateLimitedHandler(rh)
			derived := h.WithAttrs([]slog.Attr{slog.String("remote", "x")}) // shares the budget
			for i, r := range tc.records {
				before := len(*rh.records)
				target := slog.Handler(h)
				if i%2 == 1 {
					target = derived
				}
				if err := target.Handle(context.Background(), slog.NewRecord(t0.Add(r.at), r.level, r.msg, 0)); err != nil {
					t.Fatal(err)
				}
				passed := len(*rh.records) > before
				if passed != r.pass {
					t.Fatalf("record %d (%s %q at +%s): passed %v, want %v", i, r.level, r.msg, r.at, passed, r.pass)
				}
				if !passed {
					continue
				}
				var got int64
				rh.last().Attrs(func(a slog.Attr) bool {
					if a.Key == "suppressed" {
						got = a.Value.Int64()
					}
					return true
				})
				if got != r.wantSuppressed {
					t.Fatalf("record %d: suppressed=%d, want %d", i, got, r.wantSuppressed)
				}
			}
		})
	}
}

// A client sending bad frames in a loop gets a few log lines, not one per
// frame.
func TestBadFramesInALoopAreLoggedAtARate(t *testing.T) {
	rh := newRecordingHandler()
	start := time.Now()
	b := startBroker(t, func(c *Config) { c.Logger = slog.New(rh) })
	const frames = 200
	for i := 0; i < frames; i++ {
		c := dialRaw(t, b.Addr())
		c.write([]byte{0, 0, 0, 10, 0x7f, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff}) // an unknown api key
		c.expectClosed("an unknown api key")
		c.nc.Close()
	}
	// Every frame was read and refused before its connection closed, so
	// every log call has been made.
	got := rh.count("broker: closing connection")
	if max := logBurst + int(time.Since(start)/logInterval) + 1; got == 0 || got > max {
		t.Fatalf("%d log lines for %d bad frames, want 1 to %d", got, frames, max)
	}
	metadataWorks(t, b.Addr())
}
