package main

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// logOptions are the logging flags of every command.
type logOptions struct {
	level  string
	format string
}

func (o *logOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.level, "log-level", "info", "log level: debug, info or error")
	fs.StringVar(&o.format, "log-format", "json", "log format: json (for machines) or text (for people)")
}

// setup installs a structured logger for the process, controller-runtime
// and client-go alike, and returns it.
func (o *logOptions) setup() (logr.Logger, error) {
	var level zapcore.Level
	switch o.level {
	case "debug":
		level = zapcore.DebugLevel
	case "info":
		level = zapcore.InfoLevel
	case "error":
		level = zapcore.ErrorLevel
	default:
		return logr.Logger{}, usageError{fmt.Errorf("--log-level %q is not supported: use debug, info or error", o.level)}
	}
	if o.format != "json" && o.format != "text" {
		return logr.Logger{}, usageError{fmt.Errorf("--log-format %q is not supported: use json or text", o.format)}
	}
	zapOpts := []zap.Opts{zap.Level(level)}
	if o.format == "text" {
		zapOpts = append(zapOpts, zap.UseDevMode(true))
	} else {
		zapOpts = append(zapOpts, zap.JSONEncoder(func(c *zapcore.EncoderConfig) {
			c.TimeKey, c.EncodeTime = "ts", zapcore.RFC3339NanoTimeEncoder
		}))
	}
	log := zap.New(zapOpts...)
	ctrl.SetLogger(log)
	klog.SetLogger(log)
	return log, nil
}
