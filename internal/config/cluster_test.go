package config

import (
	"strings"
	"testing"
	"time"
)

// A listener with a role or a cluster block gets the cluster defaults; one without stays a
// plain listener (its paths are routes to one endpoint, no role is checked).
func TestClusterDefaults(t *testing.T) {
	c, err := load(t, writeConfig(t, `
aws: {region: eu-west-1}
listeners:
  - name: plain
    paths: [{address: db.example.com:5432}]
  - name: ro
    listen: 127.0.0.1:5433
    role: reader
    auth: {user: app}
    paths: [{name: r1, address: r1.example.com:5432}, {name: w, address: w.example.com:5432}]
  - name: rw
    listen: 127.0.0.1:5434
    cluster: {max_replica_lag: 2s}
    health: {login_user: probe}
    paths: [{name: w, address: w.example.com:5432}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Listeners[0]; p.IsCluster() || p.Role != "" {
		t.Errorf("plain listener became a cluster: %+v", p)
	}
	ro := c.Listeners[1].Cluster
	if c.Listeners[1].Role != RoleReader || ro.Discovery != DiscoveryStatic || ro.RefreshInterval != DefaultRefreshInterval ||
		ro.FailoverRefreshInterval != DefaultFailoverRefresh || ro.FailoverWindow != DefaultFailoverWindow ||
		ro.MaxReplicaLag != DefaultMaxReplicaLag || ro.ReaderFallback != FallbackWriter || ro.Balance != BalanceRoundRobin ||
		ro.LagAction != LagActionEndAtIdle {
		t.Errorf("reader defaults: %+v", ro)
	}
	if rw := c.Listeners[2]; rw.Role != RoleWriter || rw.Cluster.MaxReplicaLag != 2*time.Second {
		t.Errorf("a cluster block defaults the role to writer and keeps what is set: %+v", rw)
	}
}

func TestClusterValidation(t *testing.T) {
	_, err := load(t, writeConfig(t, `
aws: {region: eu-west-1}
listeners:
  - role: primary
    paths: [{address: db.example.com:5432}]
  - engine: mysql
    role: reader
    auth: {user: app}
    cluster:
      discovery: aurora-postgresql
      refresh_interval: 1ms
      failover_refresh_interval: 5s
      max_replica_lag: -1s
      reader_fallback: any
      balance: random
      lag_action: cut
    paths: [{address: db.example.com:3306}]
  - listen: 127.0.0.1:5439
    auth: {user: app}
    cluster: {discovery: multi-az-postgresql, instance_template: "db.example.com:5432"}
    paths: [{address: db.example.com:5432}]
  - listen: 127.0.0.1:5438
    auth: {user: app}
    cluster: {instance_template: "?.x:5432"}
    paths: [{address: db.example.com:5432}]
`))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`listeners[0].role: "primary" is not one of writer, reader`,
		"listeners[0].health.login_user: is required for a cluster listener",
		`listeners[1].cluster.discovery: "aurora-postgresql" reads a postgres view; the listener's engine is mysql`,
		"listeners[1].cluster.refresh_interval: must be at least",
		"listeners[1].cluster.failover_refresh_interval: must be between",
		"listeners[1].cluster.max_replica_lag: must not be negative",
		`listeners[1].cluster.reader_fallback: "any"`,
		`listeners[1].cluster.balance: "random"`,
		`listeners[1].cluster.lag_action: "cut"`,
		`listeners[2].cluster.instance_template: "db.example.com:5432" must contain exactly one "?"`,
		"listeners[3].cluster.instance_template: is only used with a discovery that names instances",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
