// Package sidecar is the daemon as a library: from a validated config it builds every
// listener (its health set and probes, its engine, its upstream source and secret), binds
// them and the admin server, runs them, and drains them on shutdown. cmd/sidecar keeps only
// flags, config loading, the logger and signals.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/admin"
	"github.com/rdsvalet/rds-valet/internal/auth"
	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/proxy/sockloop"
	"github.com/rdsvalet/rds-valet/internal/reuse"
	"github.com/rdsvalet/rds-valet/internal/topology"
	"github.com/rdsvalet/rds-valet/internal/upstream"
	"github.com/rdsvalet/rds-valet/internal/wire"
	"github.com/rdsvalet/rds-valet/internal/wire/mysql"
	"github.com/rdsvalet/rds-valet/internal/wire/pg"
)

// Exit codes of Run besides shutdown.exit_code_on_cut.
const (
	ExitOK      = 0
	ExitFailure = 1
)

// adminShutdownTimeout bounds the admin server's own shutdown once the sessions are gone.
const adminShutdownTimeout = 2 * time.Second

// Deps are what a sidecar is built with besides its config.
type Deps struct {
	Log *zap.Logger
	// Registry receives every metric and serves /metrics.
	Registry *prometheus.Registry
	// Credentials loads the AWS credentials IAM listeners sign tokens with; nil uses the SDK's
	// default chain (IRSA, EKS Pod Identity, ...), as auth.LoadCredentials does.
	Credentials func(ctx context.Context, region string, refreshWindow time.Duration) (aws.CredentialsProvider, error)
}

// Sidecar is every listener of one config and the admin server, bound and ready to run.
type Sidecar struct {
	cfg       *config.Config
	log       *zap.Logger
	listeners []*listener
	admin     *admin.Server
	// loops relay every listener's sessions; closed once no session is left on them.
	loops *sockloop.Loops
	// budget is the pod's upstream login budget, shared by every listener; nil when off.
	budget *reuse.Budget

	started, draining atomic.Bool
	quit              chan struct{}
	quitOnce          sync.Once
}

// listener is one configured listener: its server and the health of its paths.
type listener struct {
	cfg    config.Listener
	srv    *proxy.Server
	paths  *health.Set
	prober health.Prober
	probe  health.ProbeConfig
	pool   *reuse.Pool // nil without session reuse
	// topo watches the cluster's roles and lag; nil for a plain listener.
	topo *topology.Monitor
}

// New builds and binds everything cfg describes. On error nothing is left bound.
func New(ctx context.Context, cfg *config.Config, d Deps) (*Sidecar, error) {
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.Credentials == nil {
		d.Credentials = auth.LoadCredentials
	}
	s := &Sidecar{cfg: cfg, log: d.Log, quit: make(chan struct{})}
	tokens, err := newTokenCache(ctx, cfg, d)
	if err != nil {
		return nil, fmt.Errorf("set up upstream authentication: %w", err)
	}
	if s.loops, err = sockloop.New(0); err != nil {
		return nil, fmt.Errorf("start the relay loops: %w", err)
	}
	m := metrics{
		proxy: proxy.NewMetrics(d.Registry), health: health.NewMetrics(d.Registry),
		pg: pg.NewMetrics(d.Registry), mysql: mysql.NewMetrics(d.Registry), reuse: reuse.NewMetrics(d.Registry),
		topology: topology.NewMetrics(d.Registry),
	}
	if b := cfg.LoginBudget; b.PerSecond > 0 {
		s.budget = reuse.NewBudget(reuse.BudgetConfig{Rate: b.PerSecond, Burst: b.Burst}, d.Registry)
	}
	for _, lc := range cfg.Listeners {
		l, err := s.newListener(lc, tokens, m)
		if err != nil {
			s.closeListeners()
			s.loops.Close()
			return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		s.listeners = append(s.listeners, l)
	}
	s.admin, err = admin.New(cfg.Admin.Listen, admin.Deps{
		Gatherer: d.Registry,
		Started:  s.started.Load,
		Ready:    s.Ready,
		Paths:    func() any { return s.PathsReport() },
		Topology: func() any { return s.TopologyReport() },
		Quit:     s.Quit,
		Log:      s.log,

		Registerer: d.Registry,
	})
	if err != nil {
		s.closeListeners()
		s.loops.Close()
		return nil, fmt.Errorf("admin server on %s: %w", cfg.Admin.Listen, err)
	}
	return s, nil
}

type metrics struct {
	proxy    *proxy.Metrics
	health   *health.Metrics
	pg       *pg.Metrics
	mysql    *mysql.Metrics
	topology *topology.Metrics
	reuse    *reuse.Metrics
}

// newTokenCache loads AWS credentials once for every IAM listener; nil when none uses IAM.
func newTokenCache(ctx context.Context, cfg *config.Config, d Deps) (*auth.TokenCache, error) {
	for _, l := range cfg.Listeners {
		if l.Auth.Mode != config.AuthIAM {
			continue
		}
		creds, err := d.Credentials(ctx, cfg.AWS.Region, cfg.AWS.CredentialsRefreshWindow)
		if err != nil {
			return nil, err
		}
		d.Log.Info("IAM authentication enabled", zap.String("region", cfg.AWS.Region))
		return auth.NewTokenCache(auth.TokenCacheConfig{MaxEntries: cfg.AWS.TokenCacheMaxEntries}, creds, d.Log, d.Registry), nil
	}
	return nil, nil
}

// secretFor is the upstream source's answer to a password request on one listener: an IAM
// token for the path's token host, or the password file's content.
func secretFor(lc config.Listener, tokens *auth.TokenCache, region string) upstream.Secret {
	if lc.Auth.Mode == config.AuthPassword {
		return upstream.PasswordSecret(auth.PasswordFile{Path: lc.Auth.PasswordFile})
	}
	return upstream.IAMSecret(tokens, region)
}

// engine is what a listener needs of its protocol: the app side, the login, the probes.
type engine interface {
	proxy.Protocol
	upstream.Login
	health.Prober
	upstream.RoleChecker
	topology.Checker
}

func (s *Sidecar) newListener(lc config.Listener, tokens *auth.TokenCache, m metrics) (*listener, error) {
	tlsCfgs, err := wire.NewTLSConfigs(lc.TLS.Mode, lc.TLS.CAFile)
	if err != nil {
		return nil, err
	}
	if w := tlsWarning(lc.TLS.Mode); w != "" {
		s.log.Warn(w, zap.String("listener", lc.Name))
	}
	paths := make([]health.Path, len(lc.Paths))
	for i, p := range lc.Paths {
		paths[i] = health.Path{Name: p.Name, Address: p.Address, TLSServerName: p.TLSServerName, TokenHost: p.TokenHost}
		if lc.Auth.Mode == config.AuthIAM {
			// The Region its token is signed for, shown in /paths and /topology.
			paths[i].Region = s.cfg.PathRegion(p)
		}
	}
	set := health.NewSet(lc.Name, paths, health.Thresholds{Rise: lc.Health.Rise, Fall: lc.Health.Fall}, m.health)
	dialer := newDialer(s.cfg.DNS.Server, lc.UpstreamTCP.UserTimeout, lc.UpstreamTCP.Keepalive)
	secret := secretFor(lc, tokens, s.cfg.AWS.Region)
	log := s.log.With(zap.String("listener", lc.Name))
	// A session cut on a cluster's writer may have committed, or not: say so.
	outcomeUnknown := lc.IsCluster() && lc.Role == config.RoleWriter
	var eng engine
	switch lc.Engine {
	case config.EnginePostgres:
		eng = pg.New(pg.Config{
			Listener: lc.Name, TLS: tlsCfgs, Dialer: dialer, Paths: set, Wrap: sockloop.Wrap,
			ProbeSecret: pg.SecretFunc(secret), ForceUser: lc.Auth.User, LocalPasswordFile: lc.LocalPasswordFile,
			ProbeUser: lc.Health.LoginUser, ProbeDatabase: lc.Health.LoginDatabase,
			OutcomeUnknown: outcomeUnknown,
			Log:            log, Metrics: m.pg,
		})
	case config.EngineMySQL:
		eng = mysql.New(mysql.Config{
			Listener: lc.Name, TLS: tlsCfgs, Dialer: dialer, Wrap: sockloop.Wrap,
			ProbeSecret: mysql.SecretFunc(secret), ForceUser: lc.Auth.User, LocalPasswordFile: lc.LocalPasswordFile,
			ProbeUser: lc.Health.LoginUser, ProbeDatabase: lc.Health.LoginDatabase,
			OutcomeUnknown: outcomeUnknown, TopologySchema: lc.Cluster.TopologySchema,
			Log: log, Metrics: m.mysql,
		})
	default:
		return nil, fmt.Errorf("engine %q is not supported by this build", lc.Engine)
	}
	var srv *proxy.Server // the monitor's hooks reach it once it exists
	ucfg := upstream.Config{
		Listener: lc.Name, Paths: set, Engine: eng, Secret: secret,
		ConnectTimeout: lc.ConnectTimeout, Observer: m.proxy,
	}
	onNetworkFailure := set.ReportFailure
	var topo *topology.Monitor
	if lc.IsCluster() {
		region := "" // the paths' Regions, for the nearest readers first
		if lc.Auth.Mode == config.AuthIAM {
			region = s.cfg.AWS.Region
		}
		topo = newMonitor(lc, region, paths, eng, set, func() *proxy.Server { return srv }, log, m.topology)
		ucfg.Cluster = topo
		// A path going down or a session dying on the network may be the writer going: look now.
		set.Watch(func(_ string, st health.State) {
			if st == health.Down {
				topo.Kick()
			}
		})
		onNetworkFailure = func(path string, err error) {
			set.ReportFailure(path, err)
			topo.Kick()
		}
	}
	source := upstream.New(ucfg)
	sessions, pool := s.sessionSource(lc, eng, source, set, topo, log, m.reuse)
	// Every eviction below (a path moved, a failover, a lagging reader, a fallback over) is one
	// srv.Evict, which reaches the pool's idle sessions too (proxy.PathEvicter).
	srv = proxy.NewServer(proxy.Config{
		Name: lc.Name, Engine: lc.Engine, Listen: lc.Listen, MaxConnections: lc.MaxConnections,
		HandshakeTimeout: lc.HandshakeTimeout, ConnectTimeout: lc.ConnectTimeout, KillGrace: s.cfg.Shutdown.KillGrace,
		OnNetworkFailure: onNetworkFailure, Loops: s.loops,
		SessionTimeout: lc.SessionTimeout, PathDown: set.IsDown, Unix: unixSocket(lc, s.cfg.UnixSockets),
	}, eng, sessions, s.log, m.proxy)
	// Sessions leave a down path only when another path is up; with none up they stay, each
	// ended by its own evidence of death (the kernel's dead-peer bound, session_timeout).
	set.WatchMoves(srv.EvictPath)
	set.SetReceived(srv.LastReceived)
	if err := srv.Listen(); err != nil {
		closePool(pool)
		return nil, err
	}
	if err := checkBound(srv.Addr(), lc.AllowNonLoopback); err != nil {
		srv.Close()
		closePool(pool)
		return nil, err
	}
	probe := health.ProbeConfig{
		Interval: lc.Health.Interval, TLSInterval: lc.Health.TLSInterval, LoginInterval: lc.Health.LoginInterval,
		Timeout: lc.Health.Timeout, Dialer: dialer, Log: s.log,
	}
	probe.PingInterval, probe.PingTimeout = pingSchedule(lc, log)
	return &listener{cfg: lc, srv: srv, paths: set, prober: eng, probe: probe, topo: topo, pool: pool}, nil
}

// newMonitor is a cluster listener's topology monitor: its instances are the paths, its
// evictions go to the listener's server (srv, once built), and through it to its pool.
func newMonitor(lc config.Listener, region string, paths []health.Path, chk topology.Checker, set *health.Set, srv func() *proxy.Server, log *zap.Logger, m *topology.Metrics) *topology.Monitor {
	c := lc.Cluster
	return topology.New(topology.Config{
		Listener: lc.Name, Role: topology.Role(lc.Role), Instances: paths, Checker: chk,
		Discovery: c.Discovery, Template: topology.Template(c.InstanceTemplate),
		Refresh: c.RefreshInterval, FailoverRefresh: c.FailoverRefreshInterval, FailoverWindow: c.FailoverWindow,
		CheckTimeout: min(max(lc.Health.Timeout, time.Second), 2*time.Second),
		MaxLag:       c.MaxReplicaLag, FallbackToWriter: c.ReaderFallback == config.FallbackWriter,
		Balance: c.Balance, LocalRegion: region, EndLaggingAtIdle: c.LagAction == config.LagActionEndAtIdle,
		Sessions: func() map[string]int { return srv().SessionsByPath() },
		Evict: func(path string, how topology.Eviction) {
			switch how {
			case topology.EvictLagging:
				srv().Evict(path, proxy.CloseLagging, false)
				return
			case topology.EvictFallbackOver:
				srv().Evict(path, proxy.CloseFallback, false)
				return
			}
			srv().Evict(path, proxy.CloseFailover, true)
		},
		Added: set.Add,
		Log:   log, Metrics: m,
	})
}

// unixSocket is the listener's unix socket as the server binds it; no Path without one.
func unixSocket(lc config.Listener, u config.UnixSockets) proxy.UnixSocket {
	uid, gid := u.SocketOwner()
	return proxy.UnixSocket{Path: lc.UnixSocketFile(), Mode: u.SocketMode(), UID: uid, GID: gid}
}

// pingSchedule is the kept probe sessions' ping interval and timeout, 0 when the listener
// keeps none; it says so once at startup, for a blackhole is then caught more slowly.
func pingSchedule(lc config.Listener, log *zap.Logger) (interval, timeout time.Duration) {
	if !lc.Health.PingOn(lc.Auth) {
		log.Info("no kept probe sessions (health.ping off, or no probe user: health.login_user or auth.user): "+
			"paths are probed by TCP and TLS only, so a path that accepts connections and then swallows every byte is caught by a TLS probe or a real login's timeout",
			zap.Duration("tls_interval", lc.Health.TLSInterval))
		return 0, 0
	}
	return lc.Health.PingInterval, lc.Health.PingTimeout
}

// checkBound refuses a plain-text listener bound beyond loopback unless allowed. config
// checks the address as written; a name (localhost) is checked again as bound, so that a
// hosts file mapping it elsewhere cannot open the plain-text side to the network.
func checkBound(a net.Addr, allowNonLoopback bool) error {
	ta, ok := a.(*net.TCPAddr)
	if !ok || allowNonLoopback || ta.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("bound %s, which is not a loopback address; set allow_non_loopback to listen beyond the pod", ta)
}

// Addr is the bound address of the named listener, nil if there is none.
func (s *Sidecar) Addr(listener string) net.Addr {
	for _, l := range s.listeners {
		if l.cfg.Name == listener {
			return l.srv.Addr()
		}
	}
	return nil
}

// AdminAddr is the admin server's bound address.
func (s *Sidecar) AdminAddr() net.Addr { return s.admin.Addr() }

// Quit starts the graceful shutdown, as SIGTERM does (/quitquitquit calls it).
func (s *Sidecar) Quit() { s.quitOnce.Do(func() { close(s.quit) }) }

// Run serves every listener and the admin server, probes every path, and when ctx ends or
// Quit is called drains (see drain); it returns the process exit code.
func (s *Sidecar) Run(ctx context.Context) int {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.admin.Serve(); err != nil {
			s.log.Error("admin server failed", zap.Error(err))
		}
	}()
	probeCtx, stopProbes := context.WithCancel(context.Background())
	defer stopProbes()
	for _, l := range s.listeners {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_ = l.srv.Serve()
		}()
		go func() {
			defer wg.Done()
			l.paths.Run(probeCtx, l.prober, l.probe)
		}()
		if l.pool != nil {
			l.pool.Start(poolTick(l.cfg.Pool.IdleTimeout))
		}
		if l.topo != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.topo.Run(probeCtx)
			}()
		}
		s.log.Info("listening", zap.String("listener", l.cfg.Name), zap.String("addr", l.srv.Addr().String()))
		if ua := l.srv.UnixAddr(); ua != nil {
			s.log.Info("listening", zap.String("listener", l.cfg.Name), zap.String("unix_socket", ua.String()))
		}
	}
	s.started.Store(true)
	s.log.Info("sidecar started", zap.String("admin", s.admin.Addr().String()), zap.Int("listeners", len(s.listeners)))

	select {
	case <-ctx.Done():
		s.log.Info("shutdown signal received")
	case <-s.quit: // the admin server logged the request
	}
	code := s.drain()
	s.closePools()  // no app is left to hand a pooled session to
	s.loops.Close() // every server has drained: no session is left on them
	stopProbes()
	sctx, cancel := context.WithTimeout(context.Background(), adminShutdownTimeout)
	_ = s.admin.Shutdown(sctx)
	cancel()
	wg.Wait()
	return code
}

// drain runs the shutdown of docs/architecture.md: readiness 503 at once, listeners open for
// min_delay, then closed; sessions end as they go idle until max_delay, then the rest are cut.
func (s *Sidecar) drain() int {
	sc := s.cfg.Shutdown
	s.draining.Store(true)
	if sc.MinDelay > 0 {
		s.log.Info("draining: readiness is 503, listeners stay open", zap.Duration("min_delay", sc.MinDelay))
		time.Sleep(sc.MinDelay) // the point: endpoints controllers need this long to stop sending
	}
	for _, l := range s.listeners {
		l.srv.StopAccepting()
	}
	s.log.Info("draining: listeners closed, waiting for sessions", zap.Duration("max_delay", sc.MaxDelay))
	ctx, cancel := context.WithTimeout(context.Background(), sc.MaxDelay)
	defer cancel()
	var cut atomic.Int64
	var wg sync.WaitGroup
	for _, l := range s.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cut.Add(int64(l.srv.Drain(ctx)))
		}()
	}
	wg.Wait()
	if n := cut.Load(); n > 0 {
		s.log.Warn("shutdown cut busy sessions", zap.Int64("sessions", n))
		return sc.ExitCodeOnCut
	}
	s.log.Info("shutdown complete: every session ended cleanly")
	return ExitOK
}

// Close stops everything at once, without draining: for a sidecar that never ran.
func (s *Sidecar) Close() {
	s.closeListeners()
	s.loops.Close()
	if s.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), adminShutdownTimeout)
		_ = s.admin.Shutdown(ctx)
		cancel()
	}
}

func (s *Sidecar) closeListeners() {
	for _, l := range s.listeners {
		l.srv.Close()
	}
	s.closePools()
}

// ErrDraining is the readiness verdict of a sidecar that is shutting down.
var ErrDraining = errors.New("draining")

// Ready is the readiness verdict: not while draining, and under the healthy-path policy not
// while any listener has no healthy path, nor while a cluster writer listener has had no
// writer for longer than a failover may take (noWriterLimit): a connection waiting now would
// fail. Within it (a failover under way: connections wait) it stays ready.
func (s *Sidecar) Ready() error {
	if s.draining.Load() {
		return ErrDraining
	}
	if s.cfg.Admin.Readiness == config.ReadyWhenHealthy {
		for _, l := range s.listeners {
			if !l.paths.AnyUp() {
				return fmt.Errorf("listener %s has no healthy path", l.cfg.Name)
			}
			if l.topo == nil || l.cfg.Role != config.RoleWriter {
				continue
			}
			if d, limit := l.topo.NoWriterFor(), noWriterLimit(l.cfg); d > limit {
				return fmt.Errorf("listener %s has had no writer for %s (longer than its failover_window and connect_timeout, %s)",
					l.cfg.Name, d.Round(time.Second), limit)
			}
		}
	}
	return nil
}

// noWriterLimit is how long a cluster writer listener may be without a writer and stay ready:
// the longer of its failover_window and its connect_timeout (a connection waits that long).
func noWriterLimit(lc config.Listener) time.Duration {
	return max(lc.Cluster.FailoverWindow, lc.ConnectTimeout)
}

// ListenerReport is one listener's entry in /paths.
type ListenerReport struct {
	Listener string              `json:"listener"`
	Engine   string              `json:"engine"`
	TLSMode  string              `json:"tls_mode"`
	Warning  string              `json:"warning,omitempty"`
	Paths    []health.PathStatus `json:"paths"`
}

// PathsReport is what /paths shows: every listener's paths and their health.
func (s *Sidecar) PathsReport() []ListenerReport {
	out := make([]ListenerReport, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = ListenerReport{Listener: l.cfg.Name, Engine: l.cfg.Engine, TLSMode: l.cfg.TLS.Mode,
			Warning: tlsWarning(l.cfg.TLS.Mode), Paths: l.paths.Snapshot()}
	}
	return out
}

// TopologyReport is what /topology shows: every cluster listener's instances, their roles,
// lag and sessions.
func (s *Sidecar) TopologyReport() []topology.Status {
	out := []topology.Status{}
	for _, l := range s.listeners {
		if l.topo != nil {
			out = append(out, l.topo.Snapshot())
		}
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
