package health

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"time"

	"go.uber.org/zap"
)

// KindPing is a ping on a kept probe session.
const KindPing = "ping"

// SessionProber is what an engine offers beyond Prober when it can keep a logged-in probe
// session open per path: a ping on it sees a path that accepts TCP and then swallows every
// byte within one ping timeout, without a TLS handshake per probe.
type SessionProber interface {
	// OpenProbeSession logs in as the probe user over the path.
	OpenProbeSession(ctx context.Context, p Path) (ProbeSession, error)
}

// ProbeSession is one kept, logged-in probe session.
type ProbeSession interface {
	// Ping asks the server for an answer (or, after a timeout, keeps waiting for the answer to
	// the ping already sent) until the answer arrives or ctx ends. A timeout error means
	// silence and leaves the session usable; any other error means the session is gone.
	Ping(ctx context.Context) error
	Close() error
}

// refusedOpenRetry is how long the probe loop waits before opening a probe session again after
// the database refused one (it is at its connection limit) or no IAM token could be had: the
// refusal says the path works, and retrying every ping would hammer the database.
// In between, the TCP/TLS schedule probes the path.
const refusedOpenRetry = 30 * time.Second

// keeper is one path's kept probe session and the probe loop's view of it.
type keeper struct {
	s    *Set
	path Path
	sp   SessionProber
	cfg  ProbeConfig
	sess ProbeSession
	// openAfter: after the server refused a session, none is opened before then.
	openAfter time.Time
}

// pingLoop probes one path through a kept session: every ping interval the session is pinged;
// when there is none, one is opened (a login probe). A ping that answers vouches for the path
// as far as a login does; silence past the ping timeout counts against it, and so does each
// further timeout of the same silence, so that fall is reached after fall timeouts. A session
// that ends (the server's idle timeout, a terminated backend, an error answer) is no evidence
// against the path: it is reopened at once and the reopen's result counts. The TCP connect
// probe is dropped while a session is kept (an answered ping proves more); the TLS and login
// probes keep their own pace, for what a kept session cannot see (a new handshake, a new login).
func (s *Set) pingLoop(ctx context.Context, p Path, pr Prober, sp SessionProber, cfg ProbeConfig) {
	k := &keeper{s: s, path: p, sp: sp, cfg: cfg}
	defer k.close()
	timer := time.NewTimer(time.Duration(rand.Int64N(int64(cfg.PingInterval))))
	defer timer.Stop()
	var lastTLS, lastLogin, lastShallow time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		opened := false
		if k.sess == nil && !now.Before(k.openAfter) {
			k.open(ctx)
			opened = true
		}
		switch {
		case k.sess != nil:
			if !opened {
				k.ping(ctx)
			}
			// Each on its own pace, independent of the ping's: ticks are ping intervals here.
			if cfg.LoginInterval > 0 && now.Sub(lastLogin) >= cfg.LoginInterval {
				lastLogin = now
				_ = s.probeOnce(ctx, p, KindLogin, pr, cfg)
			}
			if cfg.TLSInterval > 0 && now.Sub(lastTLS) >= cfg.TLSInterval {
				lastTLS = now
				_ = s.probeOnce(ctx, p, KindTLS, pr, cfg)
			}
		case !opened && now.Sub(lastShallow) >= cfg.Interval:
			// No session while the server refuses one: probeLoop's schedule, at its pace.
			lastShallow = now
			_ = s.probeOnce(ctx, p, s.nextKind(p.Name, true, cfg, now, &lastTLS, &lastLogin), pr, cfg)
		}
		next := cfg.PingInterval
		if k.sess == nil && time.Now().Before(k.openAfter) {
			next = min(next, cfg.Interval)
		}
		timer.Reset(jitter(next))
	}
}

// open logs a probe session in and records the outcome as a login probe, by its class. When the
// database answered with a refusal (a success for the path) or no secret could be had, the
// open is retried only after refusedOpenRetry.
func (k *keeper) open(ctx context.Context) {
	s, name := k.s, k.path.Name
	pctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	start := time.Now()
	sess, err := k.sp.OpenProbeSession(pctx, k.path)
	if ctx.Err() != nil {
		if sess != nil {
			_ = sess.Close()
		}
		return
	}
	s.observeProbe(name, KindLogin, start)
	switch s.recordProbe(name, KindLogin, start, err, k.cfg.Log) {
	case "":
		k.sess = sess
		s.metrics.probeSessions.WithLabelValues(s.listener, name).Set(1)
	case ClassAnswered, ClassSecret:
		// The database answered (it is full), or there is no secret to log in with: retrying
		// every ping would only hammer the database.
		k.openAfter = time.Now().Add(refusedOpenRetry)
	}
}

// ping pings the kept session, waiting through up to fall timeouts of silence.
func (k *keeper) ping(ctx context.Context) {
	s, name := k.s, k.path.Name
	for silent := 0; ; {
		pctx, cancel := context.WithTimeout(ctx, k.cfg.PingTimeout)
		start := time.Now()
		err := k.sess.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return // shutting down: not the path's fault
		}
		s.observeProbe(name, KindPing, start)
		switch {
		case err == nil:
			// record() clears the escalation for TLS-deep successes; a ping answered on a
			// logged-in session is at least that deep. Recorded as TLS, not login, so that the
			// last-login metric keeps meaning a fresh login worked.
			s.record(name, KindTLS, nil, true)
			return
		case isSilence(err) && s.receivedSince(name, start):
			// Sessions on the path got data while the ping waited: the database is slow to
			// answer the probe, the path is not dead. Keep waiting on the same ping.
			k.cfg.Log.Debug("probe ping unanswered while sessions on the path receive data: not counted",
				zap.String("listener", s.listener), zap.String("path", name))
		case isSilence(err):
			silent++
			s.metrics.probeFailures.WithLabelValues(s.listener, name, KindPing, "timeout").Inc()
			k.cfg.Log.Debug("probe ping unanswered", zap.String("listener", s.listener), zap.String("path", name),
				zap.Duration("silent_for", time.Duration(silent)*k.cfg.PingTimeout))
			s.record(name, KindPing, err, false)
			if silent >= s.th.Fall {
				// Enough to mark the path down; reopening tells when it is back (an answer held
				// in a blackhole may never come).
				k.close()
				return
			}
		default:
			k.cfg.Log.Debug("probe session ended; reopening", zap.String("listener", s.listener), zap.String("path", name),
				zap.Error(err))
			k.close()
			k.open(ctx)
			return
		}
	}
}

func (k *keeper) close() {
	if k.sess == nil {
		return
	}
	_ = k.sess.Close()
	k.sess = nil
	k.s.metrics.probeSessions.WithLabelValues(k.s.listener, k.path.Name).Set(0)
}

// observeProbe records a probe's latency and time, as probeOnce does.
func (s *Set) observeProbe(name, kind string, start time.Time) {
	s.metrics.probeSeconds.WithLabelValues(s.listener, name, kind).Observe(time.Since(start).Seconds())
	s.mu.Lock()
	if ps := s.find(name); ps != nil {
		ps.lastProbe = start
	}
	s.mu.Unlock()
}

// isSilence reports whether err is a timeout: no answer, as opposed to a session that ended.
func isSilence(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
