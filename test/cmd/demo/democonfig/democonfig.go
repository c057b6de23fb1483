// Package democonfig builds the sidecar config the demo runs with. It is a package of its own,
// not part of the demo's main, so that the config tests can load and validate exactly what the
// demo writes.
package democonfig

import (
	"time"

	"github.com/rdsvalet/rds-valet/internal/config"
)

// Input is what the demo knows once its local world is up. The paths are the instances of
// each engine's cluster, the primary first, each through its own toxiproxy proxy.
type Input struct {
	AdminListen, Region, CAFile string
	PostgresListen, MySQLListen string
	// PostgresReaderListen and MySQLReaderListen serve the reader listeners.
	PostgresReaderListen, MySQLReaderListen string
	PostgresPaths, MySQLPaths               []config.Path
	// NoPool leaves session reuse off (to compare, e.g. drivers' test suites with and without).
	NoPool bool
}

// ProbeUser is the user the cluster listeners' topology monitor and kept probe sessions log in
// as (a cluster listener needs one).
const ProbeUser = "app"

// Build returns per engine a writer listener and a reader listener over the same instances,
// each verifying TLS against the demo CA and probing fast enough that toxiproxy faults show in
// /paths within seconds, and reusing sessions (docs/reuse.md) with a warm spare, so that
// per-request clients connect fast. A role makes each a cluster listener with the defaults
// (static discovery: each instance's own answer; docs/cluster.md).
func Build(in Input) *config.Config {
	tls := config.TLS{Mode: config.TLSVerifyFull, CAFile: in.CAFile}
	health := config.Health{Interval: time.Second, TLSInterval: 2 * time.Second, LoginUser: ProbeUser}
	pool := func() *config.Pool {
		if in.NoPool {
			return nil
		}
		return &config.Pool{MaxIdle: 10, MinIdle: 1}
	}
	listener := func(name, engine, listen, role string, paths []config.Path) config.Listener {
		return config.Listener{Name: name, Engine: engine, Listen: listen, Role: role, TLS: tls, Health: health, Paths: paths, Pool: pool()}
	}
	return &config.Config{
		Log:      config.Log{Level: "info"},
		Admin:    config.Admin{Listen: in.AdminListen},
		AWS:      config.AWS{Region: in.Region},
		Shutdown: config.Shutdown{MaxDelay: 5 * time.Second},
		Listeners: []config.Listener{
			listener("postgres", config.EnginePostgres, in.PostgresListen, config.RoleWriter, in.PostgresPaths),
			listener("postgres-ro", config.EnginePostgres, in.PostgresReaderListen, config.RoleReader, primaryLast(in.PostgresPaths)),
			listener("mysql", config.EngineMySQL, in.MySQLListen, config.RoleWriter, in.MySQLPaths),
			listener("mysql-ro", config.EngineMySQL, in.MySQLReaderListen, config.RoleReader, primaryLast(in.MySQLPaths)),
		},
	}
}

// primaryLast puts the replicas first and the primary (paths[0]) last: the reader listener's
// fallback. The writer listener keeps the primary first; both go by role, and the order only
// decides among candidates with the role.
func primaryLast(paths []config.Path) []config.Path {
	if len(paths) == 0 {
		return nil
	}
	return append(append([]config.Path(nil), paths[1:]...), paths[0])
}
