package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/internal/sidecar"
)

// serve runs the sidecar until SIGTERM, SIGINT or /quitquitquit, and returns the exit code.
func serve(cfg *config.Config, log *zap.Logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if addr := os.Getenv(sidecar.PprofEnv); addr != "" {
		if _, err := sidecar.StartPprof(addr, log); err != nil {
			log.Error("cannot serve pprof", zap.Error(err))
			return exitFailure
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sc, err := sidecar.New(ctx, cfg, sidecar.Deps{Log: log, Registry: reg})
	if err != nil {
		log.Error("cannot start the sidecar", zap.Error(err))
		return exitFailure
	}
	// After the first signal the drain runs; a second one kills the process the default way.
	context.AfterFunc(ctx, stop)
	return sc.Run(ctx)
}
