package sidecar

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/reuse"
	"github.com/rdsvalet/rds-valet/internal/topology"
)

// sessionSource is what a listener's server gets its upstream sessions from: the path
// source behind the pod's login budget, and with a pool block the listener's pool in front
// (its sessions on a path that goes down are closed at its next tick; the server's evictions
// reach it as a proxy.PathEvicter).
//
// On a cluster listener topo is its monitor: pooled sessions are kept for the instance the
// topology would pick now (never a demoted one), leave the pool when the server evicts an
// instance, and one pooled past check_after gets the login's role check at checkout, judged
// by the monitor as a login's is.
func (s *Sidecar) sessionSource(lc config.Listener, eng engine, paths proxy.Source, set *health.Set, topo *topology.Monitor, log *zap.Logger, m *reuse.Metrics) (proxy.Source, *reuse.Pool) {
	logins := s.budget.Source(paths, lc.ConnectTimeout)
	re, ok := eng.(reuse.Engine)
	if lc.Pool == nil || !ok {
		return logins, nil
	}
	pc := lc.Pool
	pool := reuse.New(reuse.Config{
		Listener: lc.Name, MaxIdle: pc.MaxIdle, MinIdle: pc.MinIdle,
		IdleTimeout: pc.IdleTimeout, MaxLifetime: pc.MaxLifetime, CheckAfter: pc.CheckAfter,
		ResetTimeout: lc.ConnectTimeout, MaxIdentities: pc.MaxIdentities,
		Best: func() string {
			if topo != nil {
				if c := topo.Candidates(); len(c) > 0 {
					return c[0].Name
				}
				return ""
			}
			if c := set.Candidates(); len(c) > 0 {
				return c[0].Name
			}
			return ""
		},
		PathDown: set.IsDown, Credentials: credentialsDigest(lc),
		Role: pooledRole(eng, topo),
		Log:  log, Metrics: m,
	}, re, logins)
	return pool, pool
}

// pooledRoleChecker is an engine that reads a pooled session's instance role (wire/pg,
// wire/mysql).
type pooledRoleChecker interface {
	PooledRole(ctx context.Context, conn net.Conn, state any) (topology.Report, error)
}

// pooledRole is a cluster listener pool's role check at checkout: the engine's check on the
// pooled session, judged by the monitor (a mismatch is counted and makes it look now); nil
// for a plain listener.
func pooledRole(eng engine, topo *topology.Monitor) func(context.Context, string, net.Conn, any) (bool, error) {
	rc, ok := eng.(pooledRoleChecker)
	if topo == nil || !ok {
		return nil
	}
	return func(ctx context.Context, path string, conn net.Conn, state any) (bool, error) {
		rep, err := rc.PooledRole(ctx, conn, state)
		if err != nil {
			return false, err
		}
		if err := topo.Accept(path, rep); err != nil {
			var me *topology.MismatchError
			if errors.As(err, &me) {
				return false, nil
			}
			return false, err
		}
		return true, nil
	}
}

// credentialsDigest names a password-mode listener's password now (a digest: the pool
// compares, never keeps, the secret), so that sessions logged in before a rotation are not
// reused; IAM logins have no such state (each token is good for one login's verification).
func credentialsDigest(lc config.Listener) func() string {
	if lc.Auth.Mode != config.AuthPassword {
		return nil
	}
	return passwordDigest(lc.Auth.PasswordFile, time.Now)
}

// credentialsRecheck is how long a password file's digest is trusted before the file is
// looked at again: the pool asks at every checkout and checkin, and a stat per app
// connection is a system call on the hot path for a rotation that takes effect within this.
const credentialsRecheck = time.Second

// passwordDigest is credentialsDigest's work, on the clock now: the file is stat'ed at most
// once per credentialsRecheck, and read again only when its stat changed.
func passwordDigest(file string, now func() time.Time) func() string {
	var mu sync.Mutex
	var seen os.FileInfo
	var checked time.Time
	digest := ""
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		t := now()
		if d := t.Sub(checked); !checked.IsZero() && d >= 0 && d < credentialsRecheck {
			return digest
		}
		checked = t
		fi, err := os.Stat(file)
		if err != nil {
			seen, digest = nil, "unreadable"
			return digest
		}
		if seen != nil && fi.ModTime().Equal(seen.ModTime()) && fi.Size() == seen.Size() && os.SameFile(fi, seen) {
			return digest
		}
		b, err := os.ReadFile(file)
		if err != nil {
			seen, digest = nil, "unreadable"
			return digest
		}
		sum := sha256.Sum256(b)
		seen, digest = fi, hex.EncodeToString(sum[:8])
		return digest
	}
}

// poolTick is how often a pool closes what timed out and tops up its spares: a tenth of the
// idle timeout, within 100 ms..1 s.
func poolTick(idle time.Duration) time.Duration {
	return min(max(idle/10, 100*time.Millisecond), time.Second)
}

func closePool(p *reuse.Pool) {
	if p != nil {
		p.Close()
	}
}

func (s *Sidecar) closePools() {
	for _, l := range s.listeners {
		closePool(l.pool)
	}
}
