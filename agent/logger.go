package agent

import (
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// checkLogFormat accepts the values of --log-format.
func checkLogFormat(format string) error {
	switch format {
	case "console", "json", "":
		return nil
	}
	return fmt.Errorf("unknown log format %q (console or json)", format)
}

// newLogger builds the agent's logger. Under systemd (JOURNAL_STREAM is set)
// journald stamps every line, so the logger leaves the time out. Its level
// can change while it runs (setLogLevel, on reload).
func newLogger(format string, level zapcore.Level, w io.Writer) (*zap.Logger, error) {
	if err := checkLogFormat(format); err != nil {
		return nil, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	if os.Getenv("JOURNAL_STREAM") != "" {
		enc.TimeKey = zapcore.OmitKey
	}
	var encoder zapcore.Encoder
	if format == "json" {
		encoder = zapcore.NewJSONEncoder(enc)
	} else {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	}
	lvl := zap.NewAtomicLevelAt(level)
	core := zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(levelCore{Core: core, level: lvl}).Named("certagent"), nil
}

// levelCore is newLogger's core: it carries the level it filters by, so
// that whoever holds the logger (or one derived from it with Named or With)
// can change the level of all of them at once.
type levelCore struct {
	zapcore.Core
	level zap.AtomicLevel
}

// With keeps the level reachable from derived loggers.
func (c levelCore) With(fields []zapcore.Field) zapcore.Core {
	return levelCore{Core: c.Core.With(fields), level: c.level}
}

// setLogLevel changes the level of log and every logger sharing its core.
// It reports false for a logger newLogger did not build (tests, simulation).
func setLogLevel(log *zap.Logger, level zapcore.Level) bool {
	c, ok := log.Core().(levelCore)
	if ok {
		c.level.SetLevel(level)
	}
	return ok
}
