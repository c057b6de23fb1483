package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, file string, args ...string) (*Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	AddFlags(fs)
	if file != "" {
		args = append(args, "--config", file)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(fs)
}

const minimal = `
aws: {region: eu-west-1}
listeners:
  - paths:
      - address: db.example.com:5432
`

func TestLoadDefaults(t *testing.T) {
	c, err := load(t, writeConfig(t, minimal))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Listeners[0]
	if l.Engine != EnginePostgres || l.Listen != "127.0.0.1:5432" || l.Name != "postgres" {
		t.Errorf("listener defaults: %+v", l)
	}
	if l.MaxConnections != DefaultMaxConnections || l.HandshakeTimeout != DefaultHandshakeTimeout || l.Auth.Mode != AuthIAM || l.TLS.Mode != TLSVerifyFull {
		t.Errorf("listener defaults: %+v", l)
	}
	p := l.Paths[0]
	if p.Name != "path1" || p.TLSServerName != "db.example.com" || p.TokenHost != "db.example.com:5432" {
		t.Errorf("path defaults: %+v", p)
	}
	if h := l.Health; h.PingInterval != DefaultPingInterval || h.PingTimeout != DefaultPingTimeout || h.Ping != nil {
		t.Errorf("ping defaults: %+v", h)
	}
	if c.Admin.Listen != ":9090" || c.Shutdown.MaxDelay != 30*time.Second || c.Log.Level != "info" {
		t.Errorf("global defaults: %+v", c)
	}
}

func TestLoadPrecedenceFileEnvFlag(t *testing.T) {
	file := writeConfig(t, minimal+"log: {level: warn}\nadmin: {listen: '127.0.0.1:1'}\n")
	t.Setenv("RDSVALET_LOG_LEVEL", "error")
	t.Setenv("RDSVALET_ADMIN_LISTEN", "127.0.0.1:2")
	t.Setenv("RDSVALET_SHUTDOWN_MAX_DELAY", "7s")
	c, err := load(t, file, "--admin-listen", "127.0.0.1:3")
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "error" {
		t.Errorf("env should beat the file: log.level = %q", c.Log.Level)
	}
	if c.Admin.Listen != "127.0.0.1:3" {
		t.Errorf("flag should beat env: admin.listen = %q", c.Admin.Listen)
	}
	if c.Shutdown.MaxDelay != 7*time.Second {
		t.Errorf("env duration: %v", c.Shutdown.MaxDelay)
	}
}

func TestListenersFromEnv(t *testing.T) {
	t.Setenv("RDSVALET_AWS_REGION", "us-east-2")
	t.Setenv("RDSVALET_LISTENERS", `[{name: a, paths: [{address: "x.example:5432"}]}]`)
	c, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Listeners) != 1 || c.Listeners[0].Name != "a" || c.AWS.Region != "us-east-2" {
		t.Fatalf("got %+v", c)
	}
}

func TestValidateReportsEveryProblemWithItsKey(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	file := writeConfig(t, `
log: {level: loud}
listeners:
  - name: a
    engine: oracle
    listen: 0.0.0.0:5432
    auth: {mode: password}
    tls: {mode: sometimes}
    health: {ping_interval: 1s, ping_timeout: 2s}
    paths:
      - {name: p, address: "nope"}
      - {name: p, address: "db:5432", token_host: "db"}
  - name: a
    paths: []
`)
	_, err := load(t, file)
	if err == nil {
		t.Fatal("invalid configuration accepted")
	}
	for _, want := range []string{
		"log.level", "listeners[0].engine", "listeners[0].listen", "allow_non_loopback",
		"listeners[0].auth.password_file", "listeners[0].tls.mode", "listeners[0].paths[0].address",
		"listeners[0].paths[1].name", "listeners[0].paths[1].token_host", "listeners[1].name",
		"listeners[1].paths", "aws.region", "listeners[0].health.ping_timeout",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	_, err := load(t, writeConfig(t, minimal+"admin: {lisen: ':1'}\n"))
	if err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("want an error naming the unknown key, got %v", err)
	}
}

func TestNonLoopbackNeedsOptIn(t *testing.T) {
	body := `
aws: {region: eu-west-1}
listeners:
  - listen: 0.0.0.0:5432
    allow_non_loopback: true
    paths: [{address: "db:5432"}]
`
	if _, err := load(t, writeConfig(t, body)); err != nil {
		t.Fatalf("allow_non_loopback ignored: %v", err)
	}
}

func TestPingOnNeedsAProbeUser(t *testing.T) {
	off := false
	for _, c := range []struct {
		h    Health
		a    Auth
		want bool
	}{
		{Health{}, Auth{}, false},
		{Health{LoginUser: "probe"}, Auth{}, true},
		{Health{}, Auth{User: "app"}, true},
		{Health{LoginUser: "probe", Ping: &off}, Auth{}, false},
	} {
		if got := c.h.PingOn(c.a); got != c.want {
			t.Errorf("PingOn(%+v, %+v) = %v, want %v", c.h, c.a, got, c.want)
		}
	}
}

// A path's region signs its IAM token (a cross-region replica's); it defaults to aws.region and
// is checked like it.
func TestPathRegion(t *testing.T) {
	c, err := load(t, writeConfig(t, `
aws: {region: us-east-1}
listeners:
  - paths:
      - {name: home, address: "db.example.com:5432"}
      - {name: west, address: "db-west.example.com:5432", region: us-west-2}
`))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Listeners[0].Paths; c.PathRegion(p[0]) != "us-east-1" || c.PathRegion(p[1]) != "us-west-2" || p[0].Region != "" {
		t.Errorf("regions: %q %q (%+v)", c.PathRegion(p[0]), c.PathRegion(p[1]), p)
	}
	_, err = load(t, writeConfig(t, `
aws: {region: us-east-l}
listeners:
  - paths:
      - {name: west, address: "db-west.example.com:5432", region: "us west 2"}
`))
	for _, want := range []string{`aws.region: "us-east-l" is not an AWS Region`, `listeners[0].paths[0].region: "us west 2" is not an AWS Region`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q, got %v", want, err)
		}
	}
}
