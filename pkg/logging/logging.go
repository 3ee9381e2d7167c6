// Package logging builds the daemon's zap logger: console or JSON, with a
// level that can change while running.
package logging

import (
	"fmt"
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Options choose the logger's shape.
type Options struct {
	Level  string // debug, info, warn, error
	Format string // console or json
	// Journald drops the timestamp from console lines: the journal adds its own.
	Journald bool
}

// New returns a logger writing to w and the handle that changes its level.
func New(w io.Writer, opts Options) (*zap.Logger, zap.AtomicLevel, error) {
	level, err := zap.ParseAtomicLevel(opts.Level)
	if err != nil {
		return nil, level, fmt.Errorf("log level: %w", err)
	}

	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder

	var encoder zapcore.Encoder

	switch opts.Format {
	case "json":
		encoder = zapcore.NewJSONEncoder(enc)
	case "console", "":
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		if opts.Journald {
			enc.TimeKey = ""
		}

		encoder = zapcore.NewConsoleEncoder(enc)
	default:
		return nil, level, fmt.Errorf("log format %q: want console or json", opts.Format)
	}

	core := zapcore.NewCore(encoder, zapcore.AddSync(w), level)

	return zap.New(core), level, nil
}

// Quieter returns l passing only warnings and errors, for libraries whose
// informational lines are noise to an operator (client-go's reflector).
func Quieter(l *zap.Logger) *zap.Logger {
	return l.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return warnOnly{c}
	}))
}

type warnOnly struct{ zapcore.Core }

func (w warnOnly) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel && w.Core.Enabled(l) }

func (w warnOnly) With(f []zapcore.Field) zapcore.Core { return warnOnly{w.Core.With(f)} }

func (w warnOnly) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if w.Enabled(e.Level) {
		return w.Core.Check(e, ce)
	}

	return ce
}
