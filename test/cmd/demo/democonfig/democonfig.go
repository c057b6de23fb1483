// Package democonfig builds the sidecar config the demo runs with. It is a package of its own,
// not part of the demo's main, so that the config tests can load and validate exactly what the
// demo writes.
package democonfig

import (
	"time"

	"github.com/rdsvalet/rds-valet/internal/config"
)

// Input is what the demo knows once its local world is up.
type Input struct {
	AdminListen, Region, CAFile string
	PostgresListen, MySQLListen string
	PostgresPaths, MySQLPaths   []config.Path
	// NoPool leaves session reuse off (to compare, e.g. drivers' test suites with and without).
	NoPool bool
}

// Build returns one Postgres and one MySQL listener, each verifying TLS against the demo CA and
// probing fast enough that toxiproxy faults show in /paths within seconds, and reusing
// sessions (docs/reuse.md) with a warm spare, so that per-request clients connect fast.
func Build(in Input) *config.Config {
	tls := config.TLS{Mode: config.TLSVerifyFull, CAFile: in.CAFile}
	health := config.Health{Interval: time.Second, TLSInterval: 2 * time.Second}
	pool := func() *config.Pool {
		if in.NoPool {
			return nil
		}
		return &config.Pool{MaxIdle: 10, MinIdle: 1}
	}
	return &config.Config{
		Log:      config.Log{Level: "info"},
		Admin:    config.Admin{Listen: in.AdminListen},
		AWS:      config.AWS{Region: in.Region},
		Shutdown: config.Shutdown{MaxDelay: 5 * time.Second},
		Listeners: []config.Listener{
			{Name: "postgres", Engine: config.EnginePostgres, Listen: in.PostgresListen, TLS: tls, Health: health, Paths: in.PostgresPaths, Pool: pool()},
			{Name: "mysql", Engine: config.EngineMySQL, Listen: in.MySQLListen, TLS: tls, Health: health, Paths: in.MySQLPaths, Pool: pool()},
		},
	}
}
