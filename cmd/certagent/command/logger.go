package command

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

// newLogger builds the command's logger, logging at level (which a
// reload may change: Options.Level). Under systemd (JOURNAL_STREAM is set)
// journald stamps every line, so the logger leaves the time out.
func newLogger(format string, level zap.AtomicLevel, w io.Writer) (*zap.Logger, error) {
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
	return zap.New(zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), level)).Named("certagent"), nil
}
