package inject

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/inject/tlsreload"
)

// ServerConfig is the webhook server: HTTPS for the API server, plain HTTP for Prometheus.
type ServerConfig struct {
	Listen           string // HTTPS: /mutate, /healthz, /readyz
	MetricsListen    string // HTTP: /metrics; empty disables
	CertFile         string
	KeyFile          string
	CertPollInterval time.Duration
	ShutdownTimeout  time.Duration
	Handler          HandlerConfig
	Logger           *zap.Logger
	Registry         *prometheus.Registry
}

// Serve runs the webhook until ctx ends, then drains in-flight reviews. It logs "listening" with
// the bound addresses (useful with port 0) once both listeners accept connections.
func Serve(ctx context.Context, c ServerConfig) error {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.CertPollInterval <= 0 {
		c.CertPollInterval = 10 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	metrics, err := NewMetrics(c.Registry)
	if err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	c.Handler.Metrics = metrics
	c.Handler.Logger = c.Logger
	h, err := NewHandler(c.Handler)
	if err != nil {
		return err
	}
	certs, err := tlsreload.New(c.CertFile, c.KeyFile, c.Logger)
	if err != nil {
		return fmt.Errorf("loading the serving certificate: %w", err)
	}

	// net/http reports TLS handshake failures and the like here: warnings, not errors.
	errorLog, err := zap.NewStdLogAt(c.Logger, zap.WarnLevel)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/mutate", h)
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", ok)
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		ErrorLog:          errorLog,
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.Listen, err)
	}
	servers := []*http.Server{srv}
	listeners := []net.Listener{tls.NewListener(ln, srv.TLSConfig)}
	fields := []zap.Field{zap.String("addr", ln.Addr().String())}
	if c.MetricsListen != "" {
		mln, err := net.Listen("tcp", c.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listening on %s: %w", c.MetricsListen, err)
		}
		mmux := http.NewServeMux()
		mmux.Handle("/metrics", promhttp.HandlerFor(c.Registry, promhttp.HandlerOpts{}))
		servers = append(servers, &http.Server{Handler: mmux, ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, mln)
		fields = append(fields, zap.String("metrics_addr", mln.Addr().String()))
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(servers))
	wg.Go(func() { certs.Run(ctx, c.CertPollInterval) })
	for i, s := range servers {
		wg.Go(func() {
			if err := s.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				cancel()
			}
		})
	}
	c.Logger.Info("listening", fields...)

	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), c.ShutdownTimeout)
	defer scancel()
	var errs []error
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("shutting down: %w", err))
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		errs = append(errs, fmt.Errorf("serving: %w", err))
	}
	return errors.Join(errs...)
}
