// Package admin serves the sidecar's HTTP endpoints for the kubelet and Prometheus:
// /metrics, /healthz (liveness), /readyz (readiness), /startupz, /paths, and POST
// /quitquitquit (loopback callers only) to start a graceful shutdown.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Deps is what the endpoints report on and act through.
type Deps struct {
	Gatherer prometheus.Gatherer
	// Started reports whether every listener is bound.
	Started func() bool
	// Ready returns nil when new connections should be sent here.
	Ready func() error
	// Paths returns the upstream paths' state for /paths, JSON-encodable.
	Paths func() any
	// Quit starts a graceful shutdown, as SIGTERM does.
	Quit func()
	Log  *zap.Logger
}

// Server is the admin HTTP server.
type Server struct {
	srv *http.Server
	ln  net.Listener
	log *zap.Logger
}

// New binds addr and returns the server; Serve runs it.
func New(addr string, d Deps) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{ErrorLog: zap.NewStdLog(d.Log)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /startupz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.Started() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := d.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /paths", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(d.Paths())
	})
	mux.HandleFunc("POST /quitquitquit", func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			d.Log.Warn("refused /quitquitquit from a non-loopback caller", zap.String("remote", r.RemoteAddr))
			http.Error(w, "only callers on loopback may stop the sidecar", http.StatusForbidden)
			return
		}
		d.Log.Info("shutdown requested through /quitquitquit")
		d.Quit()
		_, _ = w.Write([]byte("shutting down\n"))
	})
	return &Server{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second},
		ln:  ln, log: d.Log,
	}, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the server, letting requests in flight finish within ctx.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
