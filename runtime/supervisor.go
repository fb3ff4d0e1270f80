package runtime

import (
	"context"
	"log/slog"
	"time"
)

// unit is one step of the runtime's startup, and what undoes it.
type unit struct {
	name  string
	start func(ctx context.Context) error
	// stop undoes start within the grace period; nil when there is
	// nothing to undo.
	stop func(grace context.Context)
}

// supervisor starts units in order and stops the started ones in
// reverse: when a unit fails to start, everything started before it is
// stopped again, so that a failed startup leaves nothing running (no
// listener, no goroutine, no child).
//
// It is owned by Run's goroutine.
type supervisor struct {
	log     *slog.Logger
	started []unit
}

// start runs the units' starts in order; on the first failure it stops
// what started and returns the error, naming the unit.
func (s *supervisor) start(ctx context.Context, grace time.Duration, units ...unit) error {
	for _, u := range units {
		if err := u.start(ctx); err != nil {
			gctx, cancel := context.WithTimeout(context.Background(), grace)
			s.stop(gctx)
			cancel()
			return err
		}
		s.started = append(s.started, u)
	}
	return nil
}

// stop stops the started units, last first, sharing the grace period.
func (s *supervisor) stop(grace context.Context) {
	for i := len(s.started) - 1; i >= 0; i-- {
		u := s.started[i]
		if u.stop == nil {
			continue
		}
		t := time.Now()
		u.stop(grace)
		if d := time.Since(t); d > time.Second {
			s.log.Info("stopped", "unit", u.name, "took", d.Round(time.Millisecond))
		}
	}
	s.started = nil
}
