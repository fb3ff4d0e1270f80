package components

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/dapr/kit/logger"
)

// slogLogger adapts log/slog to the dapr/kit logger that contrib components
// take, so that component logs share mecha's format and level.
type slogLogger struct {
	l *slog.Logger
}

// NewContribLogger wraps l for a component.
func NewContribLogger(l *slog.Logger) logger.Logger { return &slogLogger{l: l} }

func (s *slogLogger) EnableJSONOutput(bool)            {}
func (s *slogLogger) SetAppID(string)                  {}
func (s *slogLogger) SetOutputLevel(logger.LogLevel)   {}
func (s *slogLogger) SetOutput(io.Writer)              {}
func (s *slogLogger) WithLogType(string) logger.Logger { return s }
func (s *slogLogger) IsOutputLevelEnabled(level logger.LogLevel) bool {
	return s.l.Enabled(context.Background(), toSlogLevel(level))
}

func (s *slogLogger) WithFields(fields map[string]any) logger.Logger {
	args := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		args = append(args, k, v)
	}
	return &slogLogger{l: s.l.With(args...)}
}

func toSlogLevel(l logger.LogLevel) slog.Level {
	switch l {
	case logger.DebugLevel:
		return slog.LevelDebug
	case logger.WarnLevel:
		return slog.LevelWarn
	case logger.ErrorLevel, logger.FatalLevel:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (s *slogLogger) Info(args ...any)                  { s.l.Info(fmt.Sprint(args...)) }
func (s *slogLogger) Infof(format string, args ...any)  { s.l.Info(fmt.Sprintf(format, args...)) }
func (s *slogLogger) Debug(args ...any)                 { s.l.Debug(fmt.Sprint(args...)) }
func (s *slogLogger) Debugf(format string, args ...any) { s.l.Debug(fmt.Sprintf(format, args...)) }
func (s *slogLogger) Warn(args ...any)                  { s.l.Warn(fmt.Sprint(args...)) }
func (s *slogLogger) Warnf(format string, args ...any)  { s.l.Warn(fmt.Sprintf(format, args...)) }
func (s *slogLogger) Error(args ...any)                 { s.l.Error(fmt.Sprint(args...)) }
func (s *slogLogger) Errorf(format string, args ...any) { s.l.Error(fmt.Sprintf(format, args...)) }
func (s *slogLogger) Fatal(args ...any)                 { s.l.Error(fmt.Sprint(args...)) }
func (s *slogLogger) Fatalf(format string, args ...any) { s.l.Error(fmt.Sprintf(format, args...)) }
