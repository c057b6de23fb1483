package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/auth"
)

// Probe kinds.
const (
	KindTCP   = "tcp"
	KindTLS   = "tls"
	KindLogin = "login"
)

// Prober runs the engine-specific probes: TLS needs the protocol's own negotiation first
// (Postgres SSLRequest, MySQL greeting), and a login speaks the protocol.
type Prober interface {
	ProbeTLS(ctx context.Context, p Path) error
	ProbeLogin(ctx context.Context, p Path) error
}

// ProbeConfig paces the active probes of a Set.
type ProbeConfig struct {
	Interval      time.Duration // TCP connect; 0 disables active probing
	TLSInterval   time.Duration // TLS handshake; 0 disables
	LoginInterval time.Duration // full login; 0 disables
	Timeout       time.Duration
	// PingInterval paces the pings of a kept probe session per path (see pingLoop), used when
	// the Prober is also a SessionProber; 0 keeps no session (the TCP/TLS schedule alone).
	PingInterval time.Duration
	PingTimeout  time.Duration // per ping; 0 or beyond PingInterval means PingInterval
	Dialer       interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
	Log *zap.Logger
}

// Run probes every path until ctx ends. Each path has its own loop, started at a random
// offset and jittered by ±10 % each round, so that a fleet of pods does not probe in lockstep.
func (s *Set) Run(ctx context.Context, pr Prober, cfg ProbeConfig) {
	if cfg.Interval <= 0 {
		return
	}
	if cfg.Timeout <= 0 || cfg.Timeout > cfg.Interval {
		cfg.Timeout = cfg.Interval
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	sp, _ := pr.(SessionProber)
	if cfg.PingInterval <= 0 {
		sp = nil
	}
	if cfg.PingTimeout <= 0 || cfg.PingTimeout > cfg.PingInterval {
		cfg.PingTimeout = cfg.PingInterval
	}
	var wg sync.WaitGroup
	s.mu.Lock()
	deep := KindTLS
	if cfg.LoginInterval > 0 {
		deep = KindLogin
	}
	s.log = cfg.Log
	if pr != nil {
		s.verify = func(p Path) error { return s.probeOnce(ctx, p, deep, pr, cfg) }
		defer func() {
			s.mu.Lock()
			s.verify = nil
			s.mu.Unlock()
		}()
	}
	paths := make([]Path, len(s.paths))
	for i, p := range s.paths {
		paths[i] = p.Path
	}
	s.mu.Unlock()
	for _, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sp != nil {
				s.pingLoop(ctx, p, pr, sp, cfg)
				return
			}
			s.probeLoop(ctx, p, pr, cfg)
		}()
	}
	wg.Wait()
}

func (s *Set) probeLoop(ctx context.Context, p Path, pr Prober, cfg ProbeConfig) {
	wait := time.Duration(rand.Int64N(int64(cfg.Interval)))
	var lastTLS, lastLogin time.Time
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		kind := s.nextKind(p.Name, pr != nil, cfg, time.Now(), &lastTLS, &lastLogin)
		s.probeOnce(ctx, p, kind, pr, cfg)
		timer.Reset(jitter(cfg.Interval))
	}
}

// nextKind is how deep the next probe of a path goes on the TCP/TLS/login schedule: a login
// every LoginInterval (it vouches for TLS too), TLS every TLSInterval or while a failure is being
// chased, else a TCP connect. deep says the engine can probe TLS and logins at all.
func (s *Set) nextKind(path string, deep bool, cfg ProbeConfig, now time.Time, lastTLS, lastLogin *time.Time) string {
	switch {
	case deep && cfg.LoginInterval > 0 && now.Sub(*lastLogin) >= cfg.LoginInterval:
		*lastLogin, *lastTLS = now, now
		return KindLogin
	case deep && (s.isEscalated(path) || (cfg.TLSInterval > 0 && now.Sub(*lastTLS) >= cfg.TLSInterval)):
		*lastTLS = now
		return KindTLS
	}
	return KindTCP
}

// ProbeNow runs one probe of kind on the path at once (for tests and /paths refreshes).
func (s *Set) ProbeNow(ctx context.Context, name, kind string, pr Prober, cfg ProbeConfig) error {
	p, ok := s.Lookup(name)
	if !ok {
		return errors.New("no such path")
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return s.probeOnce(ctx, p, kind, pr, cfg)
}

func (s *Set) probeOnce(ctx context.Context, p Path, kind string, pr Prober, cfg ProbeConfig) error {
	pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	var err error
	switch kind {
	case KindLogin:
		err = pr.ProbeLogin(pctx, p)
	case KindTLS:
		err = pr.ProbeTLS(pctx, p)
	default:
		var c net.Conn
		c, err = cfg.Dialer.DialContext(pctx, "tcp", p.Address)
		if err == nil {
			_ = c.Close()
		}
	}
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: not the path's fault
	}
	s.observeProbe(p.Name, kind, start)
	s.recordProbe(p.Name, kind, start, err, cfg.Log)
	return err
}

// recordProbe applies a probe's outcome by its class (docs/reliability.md) and returns the
// class, "" for a success: a database's answer vouches for the path, a missing secret says
// nothing, and a timeout while the path's sessions receive data is a slow probe, not a dead path.
func (s *Set) recordProbe(name, kind string, start time.Time, err error, log *zap.Logger) string {
	if err == nil {
		s.record(name, kind, nil, true)
		return ""
	}
	reason, class := Reason(err), probeClass(err)
	s.metrics.probeFailures.WithLabelValues(s.listener, name, kind, reason).Inc()
	switch class {
	case ClassAnswered:
		// The database answered (it is full, it is shutting down): the path reached it.
		log.Debug("probe answered by the database: the path works", zap.String("listener", s.listener),
			zap.String("path", name), zap.String("kind", kind), zap.Error(err))
		s.record(name, kind, nil, true)
	case ClassSecret:
		// No token or password to log in with: nothing learnt about the path either way.
		log.Debug("probe could not get its secret", zap.String("listener", s.listener),
			zap.String("path", name), zap.String("kind", kind), zap.Error(err))
	default:
		if reason == "timeout" && s.receivedSince(name, start) {
			// Sessions on the path got data from upstream while the probe waited: the path is
			// slow, not dead, and marking it down would only end sessions that work.
			log.Debug("probe timed out while sessions on the path were receiving data: not counted",
				zap.String("listener", s.listener), zap.String("path", name), zap.String("kind", kind))
			break
		}
		log.Debug("probe failed", zap.String("listener", s.listener), zap.String("path", name),
			zap.String("kind", kind), zap.String("reason", reason), zap.Error(err))
		s.record(name, kind, err, false)
	}
	return class
}

// receivedSince reports whether a live session on the path received upstream data after t.
func (s *Set) receivedSince(path string, t time.Time) bool {
	s.mu.Lock()
	fn := s.received
	s.mu.Unlock()
	return fn != nil && fn(path).After(t)
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// Classified is an error that names its own failure reason (one of Reason's): an engine's
// errors know whether the database refused a login or TLS could not be agreed, which no
// generic error type says.
type Classified interface {
	error
	HealthReason() string
}

// Reason classifies a failure for metrics, by type: timeout, refused, reset, dns, tls, auth
// or other.
func Reason(err error) string {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	var alert tls.AlertError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var own Classified
	var ne net.Error
	switch {
	case errors.As(err, &dnsErr):
		return "dns"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &certErr), errors.As(err, &recErr), errors.As(err, &alert),
		errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalid):
		return "tls"
	case errors.As(err, &own):
		return own.HealthReason()
	case auth.IsTokenError(err):
		return "auth"
	}
	return "other"
}
