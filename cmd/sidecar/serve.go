package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/admin"
	"github.com/rdsvalet/rds-valet/internal/auth"
	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/proxy/sockloop"
	"github.com/rdsvalet/rds-valet/internal/wire"
	"github.com/rdsvalet/rds-valet/internal/wire/mysql"
	"github.com/rdsvalet/rds-valet/internal/wire/pg"
)

type listener struct {
	srv    *proxy.Server
	paths  *health.Set
	prober health.Prober
	probe  health.ProbeConfig
}

// serve wires the configured listeners, runs them, and drains on SIGTERM, SIGINT or
// /quitquitquit. It returns the process exit code.
func serve(cfg *config.Config, log *zap.Logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	quit := make(chan struct{})
	var quitOnce sync.Once

	startPprof(log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	secrets, err := newSecrets(ctx, cfg, log, reg)
	if err != nil {
		log.Error("cannot set up upstream authentication", zap.Error(err))
		return exitFailure
	}
	pm, hm, pgm, mym := proxy.NewMetrics(reg), health.NewMetrics(reg), pg.NewMetrics(reg), mysql.NewMetrics(reg)
	// One set of relay loops for every listener; deferred, it closes after the drain (or the
	// servers' Close on a failed start), when no session is left on it.
	loops, err := sockloop.New(0)
	if err != nil {
		log.Error("cannot start the relay loops", zap.Error(err))
		return exitFailure
	}
	defer loops.Close()
	var ls []listener
	for _, lc := range cfg.Listeners {
		l, err := newListener(lc, cfg.DNS.Server, cfg.Shutdown.KillGrace, loops, secrets, log, pm, hm, pgm, mym)
		if err != nil {
			log.Error("cannot start listener", zap.String("listener", lc.Name), zap.Error(err))
			for _, o := range ls {
				o.srv.Close()
			}
			return exitFailure
		}
		ls = append(ls, l)
	}

	var started, draining atomic.Bool
	adm, err := admin.New(cfg.Admin.Listen, admin.Deps{
		Gatherer: reg,
		Started:  started.Load,
		Ready:    func() error { return readiness(cfg.Admin.Readiness, &draining, ls) },
		Paths:    func() any { return pathsReport(cfg, ls) },
		Quit:     func() { quitOnce.Do(func() { close(quit) }) },
		Log:      log,
	})
	if err != nil {
		log.Error("cannot start the admin server", zap.String("listen", cfg.Admin.Listen), zap.Error(err))
		for _, l := range ls {
			l.srv.Close()
		}
		return exitFailure
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := adm.Serve(); err != nil {
			log.Error("admin server failed", zap.Error(err))
		}
	}()
	probeCtx, stopProbes := context.WithCancel(context.Background())
	defer stopProbes()
	for _, l := range ls {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_ = l.srv.Serve()
		}()
		go func() {
			defer wg.Done()
			l.paths.Run(probeCtx, l.prober, l.probe)
		}()
		log.Info("listening", zap.String("listener", l.srv.Name()), zap.String("addr", l.srv.Addr().String()))
	}
	started.Store(true)
	log.Info("sidecar started", zap.String("admin", adm.Addr().String()), zap.Int("listeners", len(ls)))

	select {
	case <-ctx.Done():
		log.Info("shutdown signal received")
	case <-quit:
	}
	stop() // a second signal now kills the process the default way

	code := drain(cfg.Shutdown, &draining, ls, log)
	stopProbes()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = adm.Shutdown(sctx)
	cancel()
	wg.Wait()
	return code
}

// drain runs the shutdown of DESIGN.md: readiness 503 at once, listeners open for min_delay,
// then closed; sessions end as they go idle until max_delay, then the rest are cut.
func drain(sc config.Shutdown, draining *atomic.Bool, ls []listener, log *zap.Logger) int {
	draining.Store(true)
	if sc.MinDelay > 0 {
		log.Info("draining: readiness is 503, listeners stay open", zap.Duration("min_delay", sc.MinDelay))
		time.Sleep(sc.MinDelay)
	}
	for _, l := range ls {
		l.srv.StopAccepting()
	}
	log.Info("draining: listeners closed, waiting for sessions", zap.Duration("max_delay", sc.MaxDelay))
	ctx, cancel := context.WithTimeout(context.Background(), sc.MaxDelay)
	defer cancel()
	var cut atomic.Int64
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cut.Add(int64(l.srv.Drain(ctx)))
		}()
	}
	wg.Wait()
	if n := cut.Load(); n > 0 {
		log.Warn("shutdown cut busy sessions", zap.Int64("sessions", n))
		return sc.ExitCodeOnCut
	}
	log.Info("shutdown complete: every session ended cleanly")
	return exitOK
}

func readiness(policy string, draining *atomic.Bool, ls []listener) error {
	if draining.Load() {
		return errors.New("draining")
	}
	if policy == config.ReadyWhenHealthy {
		for _, l := range ls {
			if !l.paths.AnyUp() {
				return fmt.Errorf("listener %s has no healthy path", l.srv.Name())
			}
		}
	}
	return nil
}

type listenerReport struct {
	Listener string              `json:"listener"`
	Engine   string              `json:"engine"`
	TLSMode  string              `json:"tls_mode"`
	Warning  string              `json:"warning,omitempty"`
	Paths    []health.PathStatus `json:"paths"`
}

func pathsReport(cfg *config.Config, ls []listener) any {
	out := make([]listenerReport, len(ls))
	for i, l := range ls {
		lc := cfg.Listeners[i]
		out[i] = listenerReport{Listener: lc.Name, Engine: lc.Engine, TLSMode: lc.TLS.Mode, Paths: l.paths.Snapshot(),
			Warning: tlsWarning(lc.TLS.Mode)}
	}
	return out
}

const (
	insecureWarning = "upstream TLS certificates are NOT verified (tls.mode insecure): anyone on the network path can impersonate the database"
	verifyCAWarning = "upstream TLS certificate names are NOT checked (tls.mode verify-ca): any server with a certificate from the CA bundle can impersonate the database"
)

// tlsWarning is what the start log and /paths say about a verification mode weaker than
// verify-full; empty for verify-full.
func tlsWarning(mode string) string {
	switch mode {
	case config.TLSInsecure:
		return insecureWarning
	case config.TLSVerifyCA:
		return verifyCAWarning
	}
	return ""
}

// newDialer resolves on every dial (net.Dialer keeps no cache) and tries each address of a
// name in turn, giving each a share of the time left.
func newDialer(dnsServer string) *net.Dialer {
	d := &net.Dialer{KeepAlive: 30 * time.Second}
	if dnsServer != "" {
		d.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var rd net.Dialer
			return rd.DialContext(ctx, network, dnsServer)
		}}
	}
	return d
}

func newListener(lc config.Listener, dnsServer string, killGrace time.Duration, loops *sockloop.Loops, secrets *secrets, log *zap.Logger, pm *proxy.Metrics, hm *health.Metrics, pgm *pg.Metrics, mym *mysql.Metrics) (listener, error) {
	tlsCfgs, err := wire.NewTLSConfigs(lc.TLS.Mode, lc.TLS.CAFile)
	if err != nil {
		return listener{}, err
	}
	if w := tlsWarning(lc.TLS.Mode); w != "" {
		log.Warn(w, zap.String("listener", lc.Name))
	}
	paths := make([]health.Path, len(lc.Paths))
	for i, p := range lc.Paths {
		paths[i] = health.Path{Name: p.Name, Address: p.Address, TLSServerName: p.TLSServerName, TokenHost: p.TokenHost}
	}
	set := health.NewSet(lc.Name, paths, health.Thresholds{Rise: lc.Health.Rise, Fall: lc.Health.Fall}, hm)
	dialer := newDialer(dnsServer)
	var proto proxy.Protocol
	var prober health.Prober
	switch lc.Engine {
	case config.EnginePostgres:
		p := pg.New(pg.Config{
			Listener: lc.Name, TLS: tlsCfgs, Dialer: dialer, Wrap: sockloop.Wrap,
			Secret: secrets.forListener(lc), ForceUser: lc.Auth.User, LocalPasswordFile: lc.LocalPasswordFile,
			ProbeUser: lc.Health.LoginUser, ProbeDatabase: lc.Health.LoginDatabase,
			Log: log.With(zap.String("listener", lc.Name)), Metrics: pgm,
		})
		proto, prober = p, p
	case config.EngineMySQL:
		p := mysql.New(mysql.Config{
			Listener: lc.Name, TLS: tlsCfgs, Dialer: dialer, Wrap: sockloop.Wrap,
			Secret: mysql.SecretFunc(secrets.forListener(lc)), ForceUser: lc.Auth.User, LocalPasswordFile: lc.LocalPasswordFile,
			HandshakeTimeout: lc.HandshakeTimeout,
			ProbeUser:        lc.Health.LoginUser, ProbeDatabase: lc.Health.LoginDatabase,
			Log: log.With(zap.String("listener", lc.Name)), Metrics: mym,
		})
		proto, prober = p, p
	default:
		return listener{}, fmt.Errorf("engine %q is not supported by this build", lc.Engine)
	}
	srv := proxy.NewServer(proxy.Config{
		Name: lc.Name, Engine: lc.Engine, Listen: lc.Listen, MaxConnections: lc.MaxConnections,
		HandshakeTimeout: lc.HandshakeTimeout, ConnectTimeout: lc.ConnectTimeout, KillGrace: killGrace,
		Loops: loops,
	}, proto, set, log, pm)
	if err := srv.Listen(); err != nil {
		return listener{}, err
	}
	// config checked the address as written; a name (localhost) is checked again as bound,
	// so that a hosts file mapping it elsewhere cannot open the plain-text side to the network.
	if ta, ok := srv.Addr().(*net.TCPAddr); ok && !lc.AllowNonLoopback && !ta.IP.IsLoopback() {
		srv.Close()
		return listener{}, fmt.Errorf("bound %s, which is not a loopback address; set allow_non_loopback to listen beyond the pod", ta)
	}
	return listener{srv: srv, paths: set, prober: prober, probe: health.ProbeConfig{
		Interval: lc.Health.Interval, TLSInterval: lc.Health.TLSInterval, LoginInterval: lc.Health.LoginInterval,
		Timeout: lc.Health.Timeout, Dialer: dialer, Log: log,
	}}, nil
}

// secrets hands each listener its way to answer the upstream's password request.
type secrets struct {
	region string
	tokens *auth.TokenCache // nil when no listener uses IAM
}

func newSecrets(ctx context.Context, cfg *config.Config, log *zap.Logger, reg prometheus.Registerer) (*secrets, error) {
	s := &secrets{region: cfg.AWS.Region}
	for _, l := range cfg.Listeners {
		if l.Auth.Mode != config.AuthIAM {
			continue
		}
		creds, err := auth.LoadCredentials(ctx, cfg.AWS.Region, cfg.AWS.CredentialsRefreshWindow)
		if err != nil {
			return nil, err
		}
		s.tokens = auth.NewTokenCache(auth.TokenCacheConfig{}, creds, log, reg)
		log.Info("IAM authentication enabled", zap.String("region", cfg.AWS.Region), zap.Bool("web_identity", os.Getenv("AWS_WEB_IDENTITY_TOKEN_FILE") != ""))
		break
	}
	return s, nil
}

func (s *secrets) forListener(lc config.Listener) pg.SecretFunc {
	if lc.Auth.Mode == config.AuthPassword {
		pf := auth.PasswordFile{Path: lc.Auth.PasswordFile}
		return func(ctx context.Context, _ health.Path, _ string) (string, error) { return pf.Password(ctx) }
	}
	return func(ctx context.Context, p health.Path, user string) (string, error) {
		return s.tokens.Token(ctx, auth.Key{Endpoint: p.TokenHost, Region: s.region, User: user})
	}
}
