// Package upstream holds the first proxy.Source: logged-in upstream sessions over a listener's
// network paths, tried best first by their health, each login answering the database's
// password request with the listener's secret (an IAM token or a password file).
package upstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rdsvalet/rds-valet/internal/auth"
	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/topology"
)

// minAttemptTimeout keeps a per-path attempt long enough for a TLS handshake and a login over
// a slow link even when many paths share the connect timeout.
const minAttemptTimeout = 2 * time.Second

// Login is an engine's client side: dial path, negotiate TLS and log in as st says, answering
// a password request with secret. wire/pg and wire/mysql implement it. The database's answers
// are proxy.AnsweredError (with Retry set when another path could change them); a path that
// cannot serve what the app was promised is proxy.IncompatibleError; any other error is the
// path's (health.ClassOf).
type Login interface {
	Login(ctx context.Context, p health.Path, st *proxy.Startup, secret func(context.Context) (string, error)) (*proxy.Session, error)
}

// Secret answers the upstream's password request for user on path p.
type Secret func(ctx context.Context, p health.Path, user string) (string, error)

// IAMSecret signs an RDS IAM auth token for user at the path's token host (the RDS endpoint's
// real name, even when the dialed address is a VPC endpoint) in the path's Region (a
// cross-region replica's own; region when the path has none), cached and shared across
// connections by tokens (keyed by host, Region and user).
func IAMSecret(tokens *auth.TokenCache, region string) Secret {
	return func(ctx context.Context, p health.Path, user string) (string, error) {
		r := region
		if p.Region != "" {
			r = p.Region
		}
		return tokens.Token(ctx, auth.Key{Endpoint: p.TokenHost, Region: r, User: user})
	}
}

// PasswordSecret reads a static password from a file on every login, so that a rotated
// Secret volume takes effect without a restart.
func PasswordSecret(f auth.PasswordFile) Secret {
	return func(ctx context.Context, _ health.Path, _ string) (string, error) { return f.Password(ctx) }
}

// LoginObserver records each login attempt (proxy.Metrics does): result is "ok" or the
// failure's class (health.ClassPath, ClassAnswered, ClassSecret).
type LoginObserver interface {
	ObserveLogin(listener, path, result string, seconds float64)
}

// Config is one listener's path source.
type Config struct {
	Listener string
	Paths    *health.Set
	Engine   Login
	Secret   Secret
	// ConnectTimeout bounds one Open over every path: dial, TLS and login.
	ConnectTimeout time.Duration
	Observer       LoginObserver // nil records nothing
	// Cluster, when set, makes the paths the instances of a cluster: it orders the candidates
	// and judges each login's role check, which Engine then runs (it must be a RoleChecker).
	Cluster Cluster
}

// Cluster is a listener's view of its cluster (topology.Monitor).
type Cluster interface {
	// Candidates is the instances to try, best first; empty while none can serve.
	Candidates() []health.Path
	// Changed is closed when Candidates may have changed.
	Changed() <-chan struct{}
	// Accept judges a login's role check: nil, or the refusal (a topology.MismatchError).
	Accept(instance string, r topology.Report) error
	// Retry is how long to wait for a change before looking again.
	Retry() time.Duration
	// Kick says a login on an instance failed: the cluster should look again now.
	Kick()
}

// RoleChecker is an engine that reads an instance's role on a logged-in session, before the
// app is greeted (wire/pg: in_hot_standby or pg_is_in_recovery(); wire/mysql: read_only and
// innodb_read_only). It leaves the session as the login did.
type RoleChecker interface {
	CheckRole(ctx context.Context, s *proxy.Session) (topology.Report, error)
}

// Paths is a proxy.Source over health-ordered network paths.
type Paths struct{ cfg Config }

var _ proxy.Source = (*Paths)(nil)

// New returns the path source for cfg.
func New(cfg Config) *Paths { return &Paths{cfg: cfg} }

// Open implements proxy.Source: it logs in on each candidate path, best first, until one
// succeeds, and reports each attempt's outcome to the health set. On a cluster it waits, up to
// the connect timeout, for an instance with the listener's role.
func (s *Paths) Open(ctx context.Context, st *proxy.Startup) (*proxy.Session, error) {
	if s.cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.ConnectTimeout)
		defer cancel()
	}
	if s.cfg.Cluster == nil {
		sess, answer, nerr, err := s.try(ctx, st, s.cfg.Paths.Candidates())
		return done(sess, answer, nerr, err)
	}
	all := &proxy.NoPathError{}
	var answer *proxy.PathError
	for {
		changed := s.cfg.Cluster.Changed()
		cands := s.cfg.Cluster.Candidates()
		sess, ans, nerr, err := s.try(ctx, st, cands)
		if sess != nil || err != nil {
			return sess, err
		}
		if ans != nil {
			var ae *proxy.AnsweredError
			if errors.As(ans.Err, &ae) && ae.Retry == "" {
				return nil, ans
			}
			answer = ans
		}
		all.Attempts = appendAttempts(all.Attempts, nerr.Attempts)
		t := time.NewTimer(s.cfg.Cluster.Retry())
		select {
		case <-ctx.Done():
			t.Stop()
			if answer != nil {
				return nil, answer
			}
			all.Attempts = append(all.Attempts, &proxy.PathError{Path: "cluster",
				Err: fmt.Errorf("no instance with the listener's role served within connect_timeout: %w", ctx.Err())})
			return nil, all
		case <-changed:
			t.Stop()
		case <-t.C:
		}
	}
}

// maxAttemptsKept bounds the attempts a waiting Open keeps for the app's error.
const maxAttemptsKept = 8

// appendAttempts keeps the last maxAttemptsKept attempts, one per path at most.
func appendAttempts(list, more []*proxy.PathError) []*proxy.PathError {
	for _, a := range more {
		list = slices.DeleteFunc(list, func(b *proxy.PathError) bool { return b.Path == a.Path })
		list = append(list, a)
	}
	if n := len(list); n > maxAttemptsKept {
		list = list[n-maxAttemptsKept:]
	}
	return list
}

func done(sess *proxy.Session, answer *proxy.PathError, nerr *proxy.NoPathError, err error) (*proxy.Session, error) {
	switch {
	case sess != nil || err != nil:
		return sess, err
	case answer != nil:
		// A database's answer tells the app more than the other paths' failures do.
		return nil, answer
	}
	return nil, nerr
}

// try logs in on cands in turn. It returns a session, or an error to stop at (the app's own),
// or what was learnt: the last database answer (final when its Retry is empty: then try
// stopped there) and every failed attempt.
func (s *Paths) try(ctx context.Context, st *proxy.Startup, cands []health.Path) (*proxy.Session, *proxy.PathError, *proxy.NoPathError, error) {
	set := s.cfg.Paths
	nerr := &proxy.NoPathError{}
	var answer *proxy.PathError // the last answer that sent try on (AnsweredError.Retry)
	for i, p := range cands {
		if ctx.Err() != nil {
			nerr.Attempts = append(nerr.Attempts, &proxy.PathError{Path: p.Name, Err: ctx.Err()})
			continue
		}
		actx, cancel := attemptContext(ctx, len(cands)-i)
		start := time.Now()
		sess, err := s.cfg.Engine.Login(actx, p, st, func(ctx context.Context) (string, error) { return s.cfg.Secret(ctx, p, st.User) })
		if err == nil && s.cfg.Cluster != nil {
			err = s.checkRole(actx, p, sess)
		}
		cancel()
		result := "ok"
		var ce *proxy.ClientError
		var me *topology.MismatchError
		switch {
		case err == nil:
		case errors.As(err, &ce):
			// The app went away or misbehaved mid-login: nothing learnt about the path.
			return nil, nil, nil, err
		case errors.As(err, &me):
			result = "role_mismatch"
		default:
			result = health.ClassOf(err)
		}
		if s.cfg.Observer != nil {
			s.cfg.Observer.ObserveLogin(s.cfg.Listener, p.Name, result, time.Since(start).Seconds())
		}
		switch result {
		case "ok":
			set.ReportSuccess(p.Name)
			return sess, nil, nil, nil
		case "role_mismatch":
			// The instance answered with its role: it works, it is not this listener's.
			set.ReportSuccess(p.Name)
		case health.ClassAnswered:
			// The database answered: the path works. Its answer is the app's, unless another
			// path could really change it (the server behind this one is going away).
			set.ReportSuccess(p.Name)
			// An IncompatibleError or a HungUpError is no answer for the app: it is told as a
			// path that could not serve, if none can.
			var ae *proxy.AnsweredError
			if errors.As(err, &ae) {
				answer = &proxy.PathError{Path: p.Name, Err: err}
				if ae.Retry == "" {
					return nil, answer, nerr, nil
				}
			}
		case health.ClassPath:
			set.ReportFailure(p.Name, err)
		}
		if s.cfg.Cluster != nil && result != "role_mismatch" {
			s.cfg.Cluster.Kick() // the instance may be going: the cluster looks now
		}
		// ClassSecret: a login that could not get its IAM token or password says nothing about
		// the path; counted against it, a credential outage would mark healthy paths down.
		nerr.Attempts = append(nerr.Attempts, &proxy.PathError{Path: p.Name, Err: err})
	}
	return nil, answer, nerr, nil
}

// checkRole runs the engine's role check on a new session and has the cluster judge it; the
// session is closed unless it may serve.
func (s *Paths) checkRole(ctx context.Context, p health.Path, sess *proxy.Session) error {
	rc, ok := s.cfg.Engine.(RoleChecker)
	if !ok {
		_ = sess.Conn.Close()
		return errors.New("the engine cannot check an instance's role")
	}
	rep, err := rc.CheckRole(ctx, sess)
	if err == nil {
		err = s.cfg.Cluster.Accept(p.Name, rep)
	}
	if err != nil {
		_ = sess.Conn.Close()
	}
	return err
}

// attemptContext gives one attempt an equal share of what is left of the connect timeout, so a
// blackholed first path cannot eat the whole budget.
func attemptContext(ctx context.Context, remaining int) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok || remaining <= 1 {
		return context.WithCancel(ctx)
	}
	share := max(time.Until(dl)/time.Duration(remaining), minAttemptTimeout)
	return context.WithTimeout(ctx, share)
}
