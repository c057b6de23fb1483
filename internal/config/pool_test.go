package config

import (
	"strings"
	"testing"
)

func TestPoolDefaultsAndValidation(t *testing.T) {
	c := Defaults()
	c.Listeners = []Listener{{Name: "pg", Paths: []Path{{Address: "db.example.com:5432"}}, Pool: &Pool{}}}
	c.AWS.Region = "us-east-1"
	c.applyListenerDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("a pool block with defaults: %v", err)
	}
	p := c.Listeners[0].Pool
	if p.MaxIdle != DefaultPoolMaxIdle || p.IdleTimeout != DefaultPoolIdleTimeout || p.MaxLifetime != DefaultPoolMaxLifetime ||
		p.CheckAfter != DefaultPoolCheckAfter || p.MaxIdentities != DefaultPoolMaxIdentities {
		t.Errorf("defaults not applied: %+v", p)
	}
	p.MinIdle = p.MaxIdle + 1
	p.IdleTimeout = -1
	c.Listeners[0].MaxConnections = 5
	c.LoginBudget = LoginBudget{PerSecond: -1}
	err := c.Validate()
	for _, key := range []string{"listeners[0].pool.min_idle", "listeners[0].pool.idle_timeout", "listeners[0].pool.max_idle", "login_budget.per_second"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate did not report %s: %v", key, err)
		}
	}
}
