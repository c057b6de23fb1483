package sidecar

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"go.uber.org/zap"
)

// PprofEnv names a loopback address on which the sidecar serves net/http/pprof, for profiling
// (make bench-perf PERF_PROFILE=dir uses it). Off unless set; never on the admin listener,
// which Kubernetes exposes to the kubelet and Prometheus.
const PprofEnv = "RDSVALET_PPROF_LISTEN"

// StartPprof serves net/http/pprof on addr, which must be a loopback address: profiles and
// traces show query text and memory. It lives until the process exits (a debugging aid).
func StartPprof(addr string, log *zap.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: %w", err)
	}
	if err := checkBound(ln.Addr(), false); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("pprof listening", zap.Stringer("addr", ln.Addr()))
	go func() {
		if err := srv.Serve(ln); err != nil {
			log.Warn("pprof server stopped", zap.Error(err))
		}
	}()
	return ln.Addr(), nil
}
