package config

import (
	"fmt"
	"time"
)

// Pool turns on session reuse for a listener (docs/reuse.md): a logged-in upstream session
// that an app leaves idle is reset and kept for the next app with the same identity. A
// listener without a pool block logs in for every app connection.
type Pool struct {
	// MaxIdle bounds the sessions kept per identity (path, user, database, startup
	// parameters SET cannot change).
	MaxIdle int `mapstructure:"max_idle" yaml:"max_idle,omitempty"`
	// MinIdle keeps this many logged-in spares per identity an app has used, so that the first
	// connection after a quiet period or a failover is served at once; 0 keeps none.
	MinIdle int `mapstructure:"min_idle" yaml:"min_idle,omitempty"`
	// IdleTimeout closes a session kept this long without an app.
	IdleTimeout time.Duration `mapstructure:"idle_timeout" yaml:"idle_timeout,omitempty"`
	// MaxLifetime closes a session logged in this long ago, when it is next idle.
	MaxLifetime time.Duration `mapstructure:"max_lifetime" yaml:"max_lifetime,omitempty"`
	// CheckAfter: a session kept longer than this gets a round trip (Sync / COM_PING) before
	// it serves an app; a younger one is checked without one (nothing arrived on it).
	CheckAfter time.Duration `mapstructure:"check_after" yaml:"check_after,omitempty"`
	// MaxIdentities bounds the identities remembered for warm spares.
	MaxIdentities int `mapstructure:"max_identities" yaml:"max_identities,omitempty"`
}

// Pool defaults.
const (
	DefaultPoolMaxIdle       = 20
	DefaultPoolIdleTimeout   = 10 * time.Minute
	DefaultPoolMaxLifetime   = time.Hour
	DefaultPoolCheckAfter    = 30 * time.Second
	DefaultPoolMaxIdentities = 16
)

// LoginBudget is the pod's upstream login budget: every listener's logins (not its probes)
// draw from one token bucket, so that the sidecar stays well under what RDS verifies per
// second; a login over budget waits, up to its connect timeout.
type LoginBudget struct {
	// PerSecond is the steady rate; 0 turns the budget off.
	PerSecond float64 `mapstructure:"per_second" yaml:"per_second,omitempty"`
	// Burst is how many logins may go at once after a quiet spell.
	Burst int `mapstructure:"burst" yaml:"burst,omitempty"`
}

// Login budget defaults: a quarter of the 200 new IAM connections per second per instance
// that AWS recommends staying under.
const (
	DefaultLoginBudgetPerSecond = 50
	DefaultLoginBudgetBurst     = 50
)

func (c *Config) applyPoolDefaults() {
	for i := range c.Listeners {
		p := c.Listeners[i].Pool
		if p == nil {
			continue
		}
		if p.MaxIdle == 0 {
			p.MaxIdle = DefaultPoolMaxIdle
		}
		if p.IdleTimeout == 0 {
			p.IdleTimeout = DefaultPoolIdleTimeout
		}
		if p.MaxLifetime == 0 {
			p.MaxLifetime = DefaultPoolMaxLifetime
		}
		if p.CheckAfter == 0 {
			p.CheckAfter = DefaultPoolCheckAfter
		}
		if p.MaxIdentities == 0 {
			p.MaxIdentities = DefaultPoolMaxIdentities
		}
	}
}

func (c *Config) validatePools(bad func(key, format string, args ...any)) {
	if c.LoginBudget.PerSecond < 0 {
		bad("login_budget.per_second", "must not be negative (0 turns the budget off)")
	}
	if c.LoginBudget.PerSecond > 0 && c.LoginBudget.Burst < 1 {
		bad("login_budget.burst", "must be at least 1")
	}
	for i, l := range c.Listeners {
		p := l.Pool
		if p == nil {
			continue
		}
		key := fmt.Sprintf("listeners[%d].pool", i)
		if p.MaxIdle < 1 {
			bad(key+".max_idle", "must be at least 1")
		}
		if p.MinIdle < 0 || p.MinIdle > p.MaxIdle {
			bad(key+".min_idle", "must be within 0..max_idle (%d)", p.MaxIdle)
		}
		if l.MaxConnections > 0 && p.MaxIdle > l.MaxConnections {
			bad(key+".max_idle", "%d is more than the listener's max_connections (%d)", p.MaxIdle, l.MaxConnections)
		}
		if p.IdleTimeout < 0 {
			bad(key+".idle_timeout", "must not be negative")
		}
		if p.MaxLifetime < 0 {
			bad(key+".max_lifetime", "must not be negative")
		}
		if p.CheckAfter < 0 {
			bad(key+".check_after", "must not be negative")
		}
		if p.MaxIdentities < 1 {
			bad(key+".max_identities", "must be at least 1")
		}
	}
}
