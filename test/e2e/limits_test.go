package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// TestOversizedLoginsAreRefusedLocally: logins that the sidecar would accept but that the
// database would not take as forwarded (a PostgreSQL user name whose defaulted database doubles
// a 10 kB startup, an overlong database name, a startup that only the defaulted database pushes
// past 10,000 bytes, MySQL attributes past 64 KiB, overlong MySQL names) are refused by the
// sidecar before it dials, each with an error naming the limit. Nothing reaches upstream, so no
// path failure is counted, both paths stay up, and sessions held open meanwhile still answer.
// (Before, three 9,995-byte user names marked every PostgreSQL path down and closed every idle
// session.)
func TestOversizedLoginsAreRefusedLocally(t *testing.T) {
	e := startFaultEnv(t, faultOptions{})
	s := e.s

	// Five idle sessions per engine, held across the refusals.
	var pgHeld []func() error
	for range 5 {
		c := connect(t, s, "app")
		pgHeld = append(pgHeld, func() error {
			var n int
			return c.QueryRow(ctxTimeout(t, 10*time.Second), "SELECT 1").Scan(&n)
		})
	}
	var myHeld []func() error
	for range 5 {
		c := myConn(t, e)
		myHeld = append(myHeld, func() error {
			var n int
			return c.QueryRowContext(ctxTimeout(t, 10*time.Second), "SELECT 1").Scan(&n)
		})
	}
	for _, h := range append(pgHeld, myHeld...) {
		if err := h(); err != nil {
			t.Fatalf("held session before the refusals: %v", err)
		}
	}
	passive := s.metricSum("rdsvalet_health_passive_failures_total")
	logins := s.metricSum("rdsvalet_proxy_upstream_login_duration_seconds_count")
	clientErrors := func() float64 {
		return s.metric("rdsvalet_proxy_connections_total", `listener="pg"`, `result="client_error"`) +
			s.metric("rdsvalet_proxy_connections_total", `listener="mysql"`, `result="client_error"`)
	}
	clientErrorsBefore := clientErrors()

	// PostgreSQL: raw startups, so that exactly these parameters are sent.
	appName := func() string {
		// application_name sized so that the app's startup is exactly the sidecar's read limit,
		// 10,000 bytes; the database PostgreSQL defaults to the user makes it 10,013 forwarded.
		return strings.Repeat("a", 10000-len(startupPacket("user", "app", "application_name", "")))
	}()
	pgCases := []struct {
		name, reason, code, want string
		params                   []string
	}{
		{"user name of 9,950 bytes, database defaulted to it", "user_name_too_long", "42622",
			"user name of 9950 bytes is longer than PostgreSQL's limit of 63 bytes",
			[]string{"user", strings.Repeat("u", 9950)}},
		{"database name of 100 bytes", "database_name_too_long", "42622",
			"database name of 100 bytes is longer than PostgreSQL's limit of 63 bytes",
			[]string{"user", "app", "database", strings.Repeat("d", 100)}},
		{"10,000-byte startup, 10,013 forwarded", "startup_packet_too_long", "08P01",
			"it would be 10013 bytes, over PostgreSQL's limit of 10000 bytes (MAX_STARTUP_PACKET_LENGTH)",
			[]string{"user", "app", "application_name", appName}},
	}
	for _, tc := range pgCases {
		var bad []string
		for range 10 {
			c := rawConn(t, s)
			if _, err := c.Write(startupPacket(tc.params...)); err != nil {
				t.Fatal(err)
			}
			code, msg, err := readErrorResponse(c)
			_ = c.Close()
			if err != nil || code != tc.code || !strings.Contains(msg, tc.want) {
				bad = append(bad, fmt.Sprintf("%s %q (%v)", code, msg, err))
			}
		}
		if len(bad) > 0 {
			t.Errorf("%s: %d of 10 logins did not get %s naming %q; the first got %s", tc.name, len(bad), tc.code, tc.want, bad[0])
		}
		if v := s.metric("rdsvalet_pg_startup_limit_refusals_total", `listener="pg"`, `reason="`+tc.reason+`"`); v != 10 {
			t.Errorf("%s: rdsvalet_pg_startup_limit_refusals_total{reason=%q} = %v, want 10", tc.name, tc.reason, v)
		}
	}

	// MySQL: go-sql-driver, as an app would configure it.
	myCases := []struct {
		name, reason string
		code         uint16
		want         string
		tune         func(*mysql.Config)
	}{
		{"120 KiB of connection attributes", "connect_attrs_too_long", 1043, "over the servers' limit of 65535 bytes",
			func(c *mysql.Config) { c.ConnectionAttributes = "k:" + strings.Repeat("x", 120<<10) }},
		{"70,000 bytes of connection attributes", "connect_attrs_too_long", 1043, "over the servers' limit of 65535 bytes",
			func(c *mysql.Config) { c.ConnectionAttributes = "k:" + strings.Repeat("x", 70000) }},
		{"user name of 200 characters", "user_name_too_long", 1470, "user name of 200 characters is too long (should be no longer than 128",
			func(c *mysql.Config) { c.User = strings.Repeat("u", 200) }},
		{"database name of 100 characters", "database_name_too_long", 1102, "100 characters, longer than the servers' limit of 64",
			func(c *mysql.Config) { c.DBName = strings.Repeat("d", 100) }},
	}
	for _, tc := range myCases {
		var bad []error
		for range 10 {
			err := myLogin(t, s, tc.tune)
			var me *mysql.MySQLError
			if !errors.As(err, &me) || me.Number != tc.code || !strings.Contains(me.Message, tc.want) {
				bad = append(bad, err)
			}
		}
		if len(bad) > 0 {
			t.Errorf("%s: %d of 10 logins did not get %d naming %q; the first got %v", tc.name, len(bad), tc.code, tc.want, bad[0])
		}
	}
	for reason, want := range map[string]float64{"connect_attrs_too_long": 20, "user_name_too_long": 10, "database_name_too_long": 10} {
		if v := s.metric("rdsvalet_mysql_app_handshake_errors_total", `listener="mysql"`, `reason="`+reason+`"`); v != want {
			t.Errorf("rdsvalet_mysql_app_handshake_errors_total{reason=%q} = %v, want %v", reason, v, want)
		}
	}

	// Refused before dialing: no upstream login was tried, no path failure counted, both paths
	// up; each refusal is a client error with a log line naming the limit.
	if v := s.metricSum("rdsvalet_proxy_upstream_login_duration_seconds_count"); v != logins {
		t.Errorf("upstream logins went from %v to %v: the refused logins were dialed", logins, v)
	}
	if v := s.metricSum("rdsvalet_health_passive_failures_total"); v != passive {
		t.Errorf("rdsvalet_health_passive_failures_total went from %v to %v", passive, v)
	}
	for _, l := range []string{"pg", "mysql"} {
		if st := pathState(t, s, l, "db"); st != "up" {
			t.Errorf("path %s/db is %s after the refusals", l, st)
		}
	}
	if v := clientErrors() - clientErrorsBefore; v != 70 {
		t.Errorf("client errors counted: %v, want 70", v)
	}
	for _, want := range []string{"client_error", "user name of 9950 bytes is longer than PostgreSQL's limit of 63 bytes", "over the servers' limit of 65535 bytes"} {
		if !strings.Contains(s.logs.String(), want) {
			t.Errorf("the sidecar's log does not say %q", want)
		}
	}

	for i, h := range pgHeld {
		if err := h(); err != nil {
			t.Errorf("held PostgreSQL session %d after the refusals: %v", i+1, err)
		}
	}
	for i, h := range myHeld {
		if err := h(); err != nil {
			t.Errorf("held MySQL session %d after the refusals: %v", i+1, err)
		}
	}
}

// myLogin opens one connection through the sidecar's MySQL listener with go-sql-driver, as
// openMy configures it and tune changes it, pings and closes it.
func myLogin(t *testing.T, s *sidecar, tune func(*mysql.Config)) error {
	t.Helper()
	c := mysql.NewConfig()
	c.User, c.Net, c.Addr, c.DBName = "app", "tcp", s.myAddr, "app"
	c.Timeout, c.ReadTimeout, c.WriteTimeout = 10*time.Second, 30*time.Second, 30*time.Second
	tune(c)
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return fmt.Errorf("connector: %w", err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}
