package main

import (
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"go.uber.org/zap"
)

// pprofEnv names a loopback address on which the sidecar serves net/http/pprof, for profiling
// (make bench-perf PERF_PROFILE=dir uses it). Off unless set; never on the admin listener,
// which Kubernetes exposes to the kubelet and Prometheus.
const pprofEnv = "RDSVALET_PPROF_LISTEN"

func startPprof(log *zap.Logger) {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("pprof listening", zap.String("addr", addr))
	// Owned by the process: a debugging aid that lives until exit.
	go func() {
		if err := srv.ListenAndServe(); err != nil {
			log.Warn("pprof server stopped", zap.Error(err))
		}
	}()
}
