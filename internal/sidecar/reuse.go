package sidecar

import (
	"crypto/sha256"
	"encoding/hex"
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
// (its sessions on a path that goes down are closed at once).
//
// On a cluster listener topo is its monitor: pooled sessions are kept for the instance the
// topology would pick now (never a demoted one), and leave the pool when it evicts an instance.
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
		Log: log, Metrics: m,
	}, re, logins)
	set.Watch(func(path string, st health.State) {
		if st == health.Down {
			pool.EvictPath(path)
		}
	})
	return pool, pool
}

// credentialsDigest names a password-mode listener's password now (a digest: the pool
// compares, never keeps, the secret), so that sessions logged in before a rotation are not
// reused; IAM logins have no such state (each token is good for one login's verification).
func credentialsDigest(lc config.Listener) func() string {
	if lc.Auth.Mode != config.AuthPassword {
		return nil
	}
	file := lc.Auth.PasswordFile
	var mu sync.Mutex
	var seen os.FileInfo
	digest := ""
	return func() string {
		// Asked at every checkout: the file is read again only when its stat changes.
		fi, err := os.Stat(file)
		if err != nil {
			return "unreadable"
		}
		mu.Lock()
		defer mu.Unlock()
		if seen != nil && fi.ModTime().Equal(seen.ModTime()) && fi.Size() == seen.Size() && os.SameFile(fi, seen) {
			return digest
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "unreadable"
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
