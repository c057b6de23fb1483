// Command sidecar is the RDS Valet daemon: it serves apps in plain text on localhost and
// relays their sessions to RDS over verified TLS, logged in with IAM tokens.
// See docs/configuration.md.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/internal/logging"
)

// Exit codes besides shutdown.exit_code_on_cut.
const (
	exitOK      = 0
	exitFailure = 1
	exitConfig  = 2
)

func main() { os.Exit(run(os.Args[1:])) }

// newFlags is the sidecar's flag set; docs/configuration.md's flag table is checked against it.
func newFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("sidecar", pflag.ContinueOnError)
	config.AddFlags(fs)
	return fs
}

func run(args []string) int {
	fs := newFlags()
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return exitOK
		}
		fmt.Fprintln(os.Stderr, "sidecar:", err) // pflag leaves printing to us with ContinueOnError
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

// newLogger samples repeated messages (100 a second each, then 1 in 100), as zap's production
// config did before: a storm of failing sessions must not turn into a storm of log lines.
func newLogger(c config.Log) (*zap.Logger, error) {
	log, err := logging.New(os.Stderr, c.Level, c.Format)
	if err != nil {
		return nil, err
	}
	return log.WithOptions(zap.WrapCore(func(core zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(core, time.Second, 100, 100)
	})), nil
}
