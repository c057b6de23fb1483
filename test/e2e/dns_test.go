package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/faultnet"
	"github.com/rdsvalet/rds-valet/test/harness/testdns"
)

// TestDNSChangeIsFollowed points the sidecar's only path at a name whose address changes, and
// checks that the next connection follows it with no restart, and that every address of a name
// is tried in turn.
func TestDNSChangeIsFollowed(t *testing.T) {
	w := startWorld(t)
	d, err := testdns.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	n, err := faultnet.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	// Two ways to the stand-in on the same port at two loopback addresses.
	addrA, err := n.AddPath("a", "127.0.0.2:0", w.StandinAddr)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addrA)
	if _, err := n.AddPath("b", "127.0.0.3:"+port, w.StandinAddr); err != nil {
		t.Fatal(err)
	}
	const name = "db.vpce.test.internal"
	d.Set(name, "127.0.0.2")
	cfg := fmt.Sprintf(`
admin: {listen: "{{ADMIN}}"}
aws: {region: %s}
dns: {server: %q}
listeners:
  - name: pg
    listen: "{{PG}}"
    tls: {ca_file: %q}
    health: {interval: 0s}
    paths:
      - {name: vpce, address: "%s:%s", tls_server_name: %q, token_host: %q}
`, w.Region, d.Addr, w.CAFile, name, port, w.ServerName, w.TokenHost)
	s := startSidecar(t, cfg, w.SidecarEnv)

	steps := []struct {
		name   string
		ips    []string
		cut    string
		expect bool
	}{
		{"first address", []string{"127.0.0.2"}, "b", true},
		{"record changed", []string{"127.0.0.3"}, "a", true},
		{"record changed, its address down", []string{"127.0.0.2"}, "a", false},
		{"two addresses, first down", []string{"127.0.0.2", "127.0.0.3"}, "a", true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			for _, p := range []string{"a", "b"} {
				if err := n.Restore(p); err != nil {
					t.Fatal(err)
				}
			}
			if err := n.Cut(st.cut); err != nil {
				t.Fatal(err)
			}
			d.Set(name, st.ips...)
			queries := d.Queries()
			code, _, err := tryConnect(s)
			if d.Queries() == queries {
				t.Error("the dial did not resolve the name again")
			}
			if st.expect && err != nil {
				t.Fatalf("connect: %v", err)
			}
			if !st.expect && (err == nil || code != "08001") {
				t.Fatalf("want 08001 through a cut address, got %s %v", code, err)
			}
		})
	}
}

// tryConnect logs in through the sidecar and runs a query; it returns the SQLSTATE of a
// failure.
func tryConnect(s *sidecar) (string, string, error) {
	host, port, _ := net.SplitHostPort(s.pgAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable", host, port))
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return pgErr.Code, pgErr.Message, err
		}
		return "", "", err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "SELECT 1")
	return "", "", err
}
