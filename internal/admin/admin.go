// Package admin serves the sidecar's HTTP endpoints for the kubelet and Prometheus:
// /metrics, /healthz (liveness), /readyz (readiness), /startupz, /paths, /topology, and POST
// /quitquitquit (loopback callers only, and nothing a web page could send) to start a graceful
// shutdown.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
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
	// Topology returns the cluster listeners' instances for /topology, JSON-encodable; nil
	// serves an empty list.
	Topology func() any
	// Quit starts a graceful shutdown, as SIGTERM does.
	Quit func()
	Log  *zap.Logger
	// Registerer, when set, receives the admin server's own metrics.
	Registerer prometheus.Registerer
}

// Reasons a /quitquitquit is refused, the label of rdsvalet_admin_quit_refused_total.
const (
	refusedNonLoopback = "non_loopback" // the caller is not on loopback
	refusedHost        = "host"         // Host names something other than loopback (DNS rebinding)
	refusedOrigin      = "origin"       // a web page of another origin sent it
	refusedFetchSite   = "fetch_site"   // Sec-Fetch-Site says another site sent it
	refusedContentType = "content_type" // a form or text/plain body: what a page can POST without asking
)

// Server is the admin HTTP server.
type Server struct {
	srv     *http.Server
	ln      net.Listener
	log     *zap.Logger
	refused *prometheus.CounterVec
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
	mux.HandleFunc("GET /paths", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, d.Paths()) })
	mux.HandleFunc("GET /topology", func(w http.ResponseWriter, _ *http.Request) {
		var v any = []any{}
		if d.Topology != nil {
			v = d.Topology()
		}
		writeJSON(w, v)
	})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rdsvalet_admin_quit_refused_total",
		Help: "POST /quitquitquit requests refused, by reason (non_loopback, host, origin, fetch_site, content_type).",
	}, []string{"reason"})
	for _, r := range []string{refusedNonLoopback, refusedHost, refusedOrigin, refusedFetchSite, refusedContentType} {
		refused.WithLabelValues(r)
	}
	if d.Registerer != nil {
		if err := d.Registerer.Register(refused); err != nil {
			_ = ln.Close()
			return nil, err
		}
	}
	mux.HandleFunc("POST /quitquitquit", func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			refused.WithLabelValues(refusedNonLoopback).Inc()
			d.Log.Warn("refused /quitquitquit from a non-loopback caller", zap.String("remote", r.RemoteAddr))
			http.Error(w, "only callers on loopback may stop the sidecar", http.StatusForbidden)
			return
		}
		if reason, value := fromWebPage(r); reason != "" {
			refused.WithLabelValues(reason).Inc()
			d.Log.Warn("refused /quitquitquit that a web page could have sent", zap.String("reason", reason),
				zap.String("value", clip(value)), zap.String("remote", r.RemoteAddr))
			http.Error(w, "refused: "+reason+" "+clip(value)+
				"; send a POST with no Origin and no form or text/plain body to a loopback host, "+
				"as curl -X POST http://127.0.0.1:PORT/quitquitquit does", http.StatusForbidden)
			return
		}
		d.Log.Info("shutdown requested through /quitquitquit")
		d.Quit()
		_, _ = w.Write([]byte("shutting down\n"))
	})
	return &Server{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second},
		ln:  ln, log: d.Log, refused: refused,
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

// fromWebPage reports why r looks like a request a browser sent for a web page, which must not
// stop the sidecar even from loopback: a page on the laptop that runs the demo, or a
// request-forgery bug in the app, can POST to 127.0.0.1 without any CORS check as long as the
// request is "simple" (form or text/plain body), and DNS rebinding lets a page of another name
// reach loopback. Tools (curl, kubectl exec, a Job) send none of these headers.
func fromWebPage(r *http.Request) (reason, value string) {
	if !loopbackHost(r.Host) {
		return refusedHost, r.Host
	}
	for _, o := range r.Header.Values("Origin") {
		// Only the admin server's own origin, which serves no page that could send it.
		if !strings.EqualFold(o, "http://"+r.Host) {
			return refusedOrigin, o
		}
	}
	for _, f := range r.Header.Values("Sec-Fetch-Site") {
		if f = strings.ToLower(strings.TrimSpace(f)); f != "same-origin" && f != "none" {
			return refusedFetchSite, f
		}
	}
	for _, ct := range r.Header.Values("Content-Type") {
		// The essence, as the Fetch standard's CORS-safelist check reads it: parameters, case
		// and spaces aside. A malformed parameter does not make it unsafe to a browser either.
		essence, _, _ := strings.Cut(ct, ";")
		switch strings.ToLower(strings.TrimSpace(essence)) {
		case "application/x-www-form-urlencoded", "multipart/form-data", "text/plain":
			return refusedContentType, ct
		}
	}
	return "", ""
}

// loopbackHost reports whether a Host header names loopback: localhost or a loopback address,
// with or without a port. An absent Host (HTTP/1.0) names nothing a page could have chosen.
func loopbackHost(hostport string) bool {
	if hostport == "" {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// clip keeps a caller-chosen header value short in logs and answers.
func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
