package kafka

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLogger forwards franz-go's log messages to slog.
type kgoLogger struct {
	log   *slog.Logger
	level kgo.LogLevel
}

func newKgoLogger(log *slog.Logger) *kgoLogger {
	if log == nil {
		log = slog.Default()
	}
	l := &kgoLogger{log: log.With("component", "franz-go"), level: kgo.LogLevelWarn}
	ctx := context.Background()
	switch {
	case log.Enabled(ctx, slog.LevelDebug):
		l.level = kgo.LogLevelDebug
	case log.Enabled(ctx, slog.LevelInfo):
		l.level = kgo.LogLevelInfo
	case !log.Enabled(ctx, slog.LevelWarn):
		l.level = kgo.LogLevelError
	}
	// franz-go logs every group join and assignment at info: useful when
	// debugging, noisy otherwise. Forward info only when debug is on.
	if l.level == kgo.LogLevelInfo {
		l.level = kgo.LogLevelWarn
	}
	return l
}

func (l *kgoLogger) Level() kgo.LogLevel { return l.level }

func (l *kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var sl slog.Level
	switch level {
	case kgo.LogLevelError:
		sl = slog.LevelError
	case kgo.LogLevelWarn:
		sl = slog.LevelWarn
	case kgo.LogLevelInfo:
		sl = slog.LevelInfo
	default:
		sl = slog.LevelDebug
	}
	l.log.Log(context.Background(), sl, msg, keyvals...)
}
