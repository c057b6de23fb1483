package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/internal/sidecar"
)

// run's outcomes before the sidecar serves: help, flag and config errors, and a sidecar that
// cannot start (its listener's port is taken) all return at once with their exit codes.
func TestRunExitCodes(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw := write("pw", "secret\n")
	busy := write("busy.yaml", `
admin: {listen: "127.0.0.1:0"}
listeners:
  - name: pg
    listen: "`+taken.Addr().String()+`"
    auth: {mode: password, password_file: "`+pw+`"}
    paths: [{name: db, address: "127.0.0.1:1"}]
`)
	bad := write("bad.yaml", "listeners:\n  - engine: oracle\n")
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"help", []string{"--help"}, exitOK},
		{"unknown flag", []string{"--no-such-flag"}, exitConfig},
		{"missing config file", []string{"--config", filepath.Join(dir, "nope.yaml")}, exitConfig},
		{"invalid config", []string{"--config", bad}, exitConfig},
		{"bad log level", []string{"--config", busy, "--log-level", "loud"}, exitConfig},
		{"listener cannot bind", []string{"--config", busy}, exitFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(tc.args); got != tc.want {
				t.Fatalf("run(%v) = %d, want %d", tc.args, got, tc.want)
			}
		})
	}
}

// A pprof address that is not loopback stops the start: profiles show query text.
func TestServeRefusesPprofBeyondLoopback(t *testing.T) {
	t.Setenv(sidecar.PprofEnv, "0.0.0.0:0")
	cfg := config.Defaults()
	cfg.Admin.Listen = "127.0.0.1:0"
	if got := serve(&cfg, zap.NewNop()); got != exitFailure {
		t.Fatalf("serve with pprof on 0.0.0.0 = %d, want %d", got, exitFailure)
	}
}
