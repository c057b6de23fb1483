// Command sidecar is the RDS Valet daemon: it serves apps in plain text on localhost and
// relays their sessions to RDS over verified TLS, logged in with IAM tokens.
// See docs/configuration.md.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rdsvalet/rds-valet/internal/config"
)

// Exit codes besides shutdown.exit_code_on_cut.
const (
	exitOK      = 0
	exitFailure = 1
	exitConfig  = 2
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := pflag.NewFlagSet("sidecar", pflag.ContinueOnError)
	config.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return exitOK
		}
		return exitConfig
	}
	cfg, err := config.Load(fs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sidecar:", err)
		return exitConfig
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sidecar:", err)
		return exitConfig
	}
	defer func() { _ = log.Sync() }()
	return serve(cfg, log)
}

func newLogger(c config.Log) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Encoding = c.Format
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	if c.Format == "console" {
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
	}
	return zc.Build()
}
