package config

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// FuzzLoad runs the whole loader (viper, YAML, decoding, defaults, Validate) on fuzzed files:
// no input may panic it, and whatever it accepts keeps listeners on loopback unless the
// listener opts out.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(`
log: {level: debug, format: json}
admin: {listen: "127.0.0.1:9090", readiness: healthy-path}
aws: {region: eu-west-1, credentials_refresh_window: 5m}
shutdown: {min_delay: 1s, max_delay: 30s, kill_grace: 5s, exit_code_on_cut: 3}
listeners:
  - name: orders
    engine: postgres
    listen: 127.0.0.1:15432
    max_connections: 100
    handshake_timeout: 5s
    connect_timeout: 3s
    auth: {mode: iam, user: app}
    tls: {mode: verify-full, ca_file: /etc/ca.pem}
    health: {interval: 2s, timeout: 1s, rise: 2, fall: 2}
    paths:
      - {name: privatelink, address: vpce.example.com:5432, tls_server_name: proxy.example.com, token_host: proxy.example.com:5432}
      - {address: db.example.com:5432}
  - engine: mysql
    listen: "0.0.0.0:3306"
    allow_non_loopback: true
    auth: {mode: password, password_file: /secrets/pw}
    paths: [{address: db.example.com:3306}]
`))
	f.Add([]byte("listeners: [{listen: '10.0.0.1:5432', paths: [{address: 'a:1'}]}]\naws: {region: x}"))
	f.Add([]byte("listeners: !!binary AAAA"))
	f.Add([]byte("a: &a [*a, *a]"))
	f.Add([]byte("\xff\xfe"))
	for _, k := range []string{"CONFIG", "LISTENERS", "AWS_REGION", "LOG_LEVEL", "ADMIN_LISTEN"} {
		if _, ok := os.LookupEnv(EnvPrefix + "_" + k); ok {
			f.Skip("RDSVALET_* variables are set; the fuzzer needs a clean environment")
		}
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body []byte) {
		p := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
		fs := pflag.NewFlagSet("fuzz", pflag.ContinueOnError)
		AddFlags(fs)
		if err := fs.Parse([]string{"--config", p}); err != nil {
			t.Fatal(err)
		}
		c, err := Load(fs)
		if err != nil {
			return
		}
		for _, l := range c.Listeners {
			if l.AllowNonLoopback {
				continue
			}
			host, _, err := net.SplitHostPort(l.Listen)
			if err != nil {
				t.Fatalf("accepted listen address %q: %v", l.Listen, err)
			}
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				t.Fatalf("accepted non-loopback listener %q without allow_non_loopback", l.Listen)
			}
		}
	})
}
