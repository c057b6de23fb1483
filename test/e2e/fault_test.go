package e2e

// The fault suite: the sidecar in front of the RDS stand-ins through one toxiproxy path per
// engine, and faults injected on that path (resets, cuts, blackholes, slicing, latency), in
// the database itself (a killed backend, which makes PostgreSQL restart) and in the AWS side
// (fake STS down or slow, the web-identity token file missing or rotated). Every test asserts
// what the app sees (a clear error within a bound derived from the config, or a transparent
// recovery) and that the sidecar holds nothing afterwards: connections-active gauges at 0 and
// goroutines and open fds back to the baseline read from its /metrics.
// See docs/reliability.md.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/test/harness/faultnet"
	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// Settings of the fault suite's sidecar; the bounds the tests assert are derived from them.
const (
	faultProbeEvery     = time.Second // health.interval and health.tls_interval
	faultProbeTimeout   = time.Second
	faultFall           = 2
	faultKillGrace      = time.Second
	faultConnectTimeout = 3 * time.Second
	// faultSlack absorbs a loaded 2-core machine running everything with the race detector.
	faultSlack = 5 * time.Second
	// Leak tolerances over the baseline: probes and the admin connection come and go.
	leakGoroutines = 12
	leakFDs        = 6
)

// faultSessionTimeout is the listeners' session_timeout in the fault suite.
const faultSessionTimeout = 3 * time.Second

// blackholeBound is how long a busy session on a blackholed only path may take to fail: the
// TLS probes must fail `fall` times (each waiting for its timeout) to mark the path down, and
// the session's request must have waited session_timeout with no byte back (checked every
// tenth of it); there is no other path to move it to, so no kill_grace.
const blackholeBound = faultProbeEvery*(faultFall+1) + faultProbeTimeout + faultSessionTimeout + faultSessionTimeout/10 + faultSlack

// faultEnv is one fault test's setup: the suite's shared world (PostgreSQL, MariaDB, fake STS),
// fresh stand-ins in front of its databases, a toxiproxy path to each, and a sidecar.
type faultEnv struct {
	w       *world.World
	pg, my  *rdsstandin.Server
	net     *faultnet.Net
	s       *sidecar
	base    leakBaseline
	standin *syncBuffer // the stand-ins' log
}

type faultOptions struct {
	// refreshWindow is aws.credentials_refresh_window; 0 means 2s.
	refreshWindow time.Duration
	// pgExtra and myExtra are YAML added to the Postgres and MySQL listeners.
	pgExtra, myExtra string
	// shutdown is the shutdown block; empty means the suite's.
	shutdown string
	// tightProbes probes the paths every second with fall 2, for the tests that measure how
	// fast a dead path is detected; the others probe gently (every 2 s, fall 3), so that a
	// loaded machine does not mark their path down behind their back.
	tightProbes bool
	// loadDefaults points the sidecar straight at the stand-ins (no toxiproxy) with the
	// default timeouts and probe settings: for load, where the suite's tight bounds would
	// turn a busy machine into faults.
	loadDefaults bool
	// connectTimeout and health, when set, replace the listeners' connect_timeout and health
	// block.
	connectTimeout time.Duration
	health         string
	// handshakeTimeout, when set, replaces the listeners' handshake_timeout.
	handshakeTimeout time.Duration
}

func startFaultEnv(t *testing.T, o faultOptions) *faultEnv {
	t.Helper()
	w := sharedMyWorld(t)
	e := &faultEnv{w: w, standin: &syncBuffer{}}
	logf := func(f string, a ...any) {
		fmt.Fprintf(e.standin, time.Now().Format("15:04:05.000 ")+f+"\n", a...)
	}
	pgTLS, err := w.CA.ServerTLSConfig(w.TLSServerName)
	if err != nil {
		t.Fatal(err)
	}
	if e.pg, err = rdsstandin.Start(rdsstandin.Options{
		Backend: w.PG.Addr(), TLS: pgTLS, Logf: logf,
		Verify:    rdsstandin.IAMVerifier(iamtoken.Options{ExpectHost: w.TokenHost, Region: w.Region, Lookup: w.STS.Lookup}),
		Authorize: w.AuthorizeDBConnect, DBUserResource: w.DBUserResource,
	}); err != nil {
		t.Fatal(err)
	}
	myTLS, err := w.CA.ServerTLSConfig(w.MySQLTLSServerName)
	if err != nil {
		t.Fatal(err)
	}
	if e.my, err = rdsstandin.StartMySQL(rdsstandin.Options{
		Backend: w.MariaDB.Addr(), TLS: myTLS, Logf: logf,
		Verify:    rdsstandin.IAMVerifier(iamtoken.Options{ExpectHost: w.MySQLTokenHost, Region: w.Region, Lookup: w.STS.Lookup}),
		Authorize: w.AuthorizeDBConnect, DBUserResource: w.MySQLDBUserResource,
	}); err != nil {
		_ = e.pg.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.pg.Close()
		_ = e.my.Close()
		if t.Failed() {
			t.Logf("stand-in log:\n%s", e.standin.String())
		}
	})
	if e.net, err = faultnet.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.net.Close)
	pgPath, err := e.net.AddPath("pg", "", e.pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	myPath, err := e.net.AddPath("my", "", e.my.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if o.refreshWindow == 0 {
		o.refreshWindow = 2 * time.Second
	}
	o.pgExtra, o.myExtra = withSuitePool(o.pgExtra), withSuitePool(o.myExtra)
	if o.shutdown == "" {
		o.shutdown = fmt.Sprintf("{max_delay: 10s, kill_grace: %s}", faultKillGrace)
	}
	health := "{interval: 2s, timeout: 2s, tls_interval: 10s, rise: 1, fall: 3}"
	if o.tightProbes {
		health = fmt.Sprintf("{interval: %s, timeout: %s, tls_interval: %s, rise: 1, fall: %d}",
			faultProbeEvery, faultProbeTimeout, faultProbeEvery, faultFall)
	}
	handshake, connectTimeout := 2*time.Second, faultConnectTimeout
	if o.loadDefaults {
		health, pgPath, myPath = "{}", e.pg.Addr(), e.my.Addr()
		handshake, connectTimeout = config.DefaultHandshakeTimeout, config.DefaultConnectTimeout
	}
	if o.connectTimeout > 0 {
		connectTimeout = o.connectTimeout
	}
	if o.health != "" {
		health = o.health
	}
	if o.handshakeTimeout > 0 {
		handshake = o.handshakeTimeout
	}
	cfg := fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
aws: {region: %s, credentials_refresh_window: %s}
shutdown: %s
listeners:
  - name: pg
    engine: postgres
    listen: "{{PG}}"
    handshake_timeout: %s
    connect_timeout: %s
    session_timeout: %s
%s
    tls: {ca_file: %q}
    health: %s
    paths:
      - {name: db, address: %q, tls_server_name: %q, token_host: %q}
  - name: mysql
    engine: mysql
    listen: "{{MYSQL}}"
    handshake_timeout: %s
    connect_timeout: %s
    session_timeout: %s
%s
    tls: {ca_file: %q}
    health: %s
    paths:
      - {name: db, address: %q, tls_server_name: %q, token_host: %q}
`, w.Region, o.refreshWindow, o.shutdown,
		handshake, connectTimeout, faultSessionTimeout, o.pgExtra, w.CAFile, health, pgPath, w.TLSServerName, w.TokenHost,
		handshake, connectTimeout, faultSessionTimeout, o.myExtra, w.CAFile, health, myPath, w.MySQLTLSServerName, w.MySQLTokenHost)
	e.s = startSidecar(t, cfg, w.Env)
	return e
}

// warmBaseline logs in once on each listener (so that the credential chain, the token cache
// and the pools the sidecar keeps for its lifetime exist), waits for the sessions to end and
// records the baseline the leak checks compare with.
func (e *faultEnv) warmBaseline(t *testing.T) {
	t.Helper()
	c := connect(t, e.s, "app")
	mustExec(t, c, "SELECT 1")
	_ = c.Close(context.Background())
	db := openMy(t, e.s, nil)
	myExec(t, db, "DO 1")
	_ = db.Close()
	e.base = takeBaseline(t, e.s)
}

// leakBaseline is what the sidecar holds with no session open.
type leakBaseline struct {
	goroutines, fds float64
}

func takeBaseline(t *testing.T, s *sidecar) leakBaseline {
	t.Helper()
	waitNoSessions(t, s, 20*time.Second)
	return leakBaseline{goroutines: s.metric("go_goroutines"), fds: s.metric("process_open_fds")}
}

// metricSum adds up every sample of name.
func (s *sidecar) metricSum(name string) float64 {
	s.t.Helper()
	_, body, err := s.get("/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

func waitNoSessions(t *testing.T, s *sidecar, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "no connection open in the sidecar", func() error {
		if v := s.metricSum("rdsvalet_proxy_connections_active"); v != 0 {
			return fmt.Errorf("rdsvalet_proxy_connections_active = %v", v)
		}
		return nil
	})
}

// assertNoLeak waits until the sidecar is back to base: no connection open, goroutines and
// fds within the tolerances.
func assertNoLeak(t *testing.T, s *sidecar, base leakBaseline) {
	t.Helper()
	waitNoSessions(t, s, 30*time.Second)
	var g, f float64
	waitFor(t, 30*time.Second, "goroutines and fds back to the baseline", func() error {
		g, f = s.metric("go_goroutines"), s.metric("process_open_fds")
		if g > base.goroutines+leakGoroutines || f > base.fds+leakFDs {
			return fmt.Errorf("goroutines %v (baseline %v), open fds %v (baseline %v)", g, base.goroutines, f, base.fds)
		}
		return nil
	})
	t.Logf("no leak: goroutines %v (baseline %v), fds %v (baseline %v)", g, base.goroutines, f, base.fds)
}

func (e *faultEnv) dsn() string {
	host, port, _ := net.SplitHostPort(e.s.pgAddr)
	return fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable", host, port)
}

// loginDSN is dsn with a startup parameter of its own (a work_mem no other connection asks
// for): part of the pool's identity, so that with reuse on (RDSVALET_E2E_POOL) the connection
// is a real upstream login, not a pooled session, for the tests whose faults are in the login.
func (e *faultEnv) loginDSN() string {
	return fmt.Sprintf("%s work_mem=%dkB", e.dsn(), 4096+loginSeq.Add(1))
}

var loginSeq atomic.Int64

// within runs f and fails the test if it takes longer than bound; f must itself be bounded
// (its context), so that a hang shows up as this failure rather than as a stuck test.
func within(t *testing.T, bound time.Duration, what string, f func() error) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	err := f()
	d := time.Since(start)
	if d > bound {
		t.Errorf("%s took %v, want within %v (err %v)", what, d, bound, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%s hung until the test's own deadline: %v", what, err)
	}
	return d, err
}

// connLost reports whether err is what an app sees when its connection went away: the
// connection is closed (pgx marks it so), not a timeout.
func connLost(c *pgx.Conn, err error) error {
	if err == nil {
		return errors.New("no error")
	}
	if !c.IsClosed() {
		return fmt.Errorf("the connection is still open after %v", err)
	}
	return nil
}

// TestFaultUpstreamResetMidQuery breaks the upstream connection of a query in flight: once
// with TCP resets while a large result streams (toxiproxy reset_peer), once by dropping every
// connection of the path while pg_sleep runs (toxiproxy disabled). The app gets an error at
// once (its connection closed, not a hang), the query does not linger on the database, new
// connections work again once the path is back, and the sidecar holds nothing afterwards.
func TestFaultUpstreamResetMidQuery(t *testing.T) {
	e := startFaultEnv(t, faultOptions{})
	e.warmBaseline(t)

	t.Run("reset while streaming", func(t *testing.T) {
		c := connect(t, e.s, "app")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		const q = "SELECT g, repeat('x', 1000) FROM generate_series(1, 50000000) g"
		rows, err := c.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		n := 0
		for n < 1000 && rows.Next() {
			n++
		}
		if n < 1000 {
			t.Fatalf("only %d rows before the fault: %v", n, rows.Err())
		}
		if err := e.net.Toxic("pg", "reset_peer", toxiclient.Attributes{"timeout": 0}); err != nil {
			t.Fatal(err)
		}
		d, err := within(t, faultSlack, "the streaming query's failure", func() error {
			for rows.Next() {
			}
			return rows.Err()
		})
		if err := connLost(c, err); err != nil {
			t.Fatal(err)
		}
		t.Logf("app saw %v after %v", err, d)
		if err := e.net.Restore("pg"); err != nil {
			t.Fatal(err)
		}
		waitNotRunning(t, e.w, q)
	})

	t.Run("cut while pg_sleep runs", func(t *testing.T) {
		c := connect(t, e.s, "app")
		const q = "SELECT pg_sleep(60)"
		res := make(chan error, 1)
		go func() {
			_, err := c.Exec(ctxTimeout(t, 2*time.Minute), q)
			res <- err
		}()
		waitActive(t, &testWorld{World: e.w}, q)
		if err := e.net.Cut("pg"); err != nil {
			t.Fatal(err)
		}
		d, err := within(t, faultSlack, "the sleeping query's failure", func() error { return <-res })
		if err := connLost(c, err); err != nil {
			t.Fatal(err)
		}
		t.Logf("app saw %v after %v", err, d)
		// While the path is down, a new connection is told so in its protocol.
		_, err = within(t, faultConnectTimeout+faultSlack, "connect over the cut path", func() error {
			_, err := pgx.Connect(ctxTimeout(t, time.Minute), e.dsn())
			return err
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "08001" {
			t.Fatalf("connect over the cut path: want 08001, got %v", err)
		}
		// PostgreSQL itself notices a vanished client only when it next writes (pg_sleep
		// runs to its end), so what is checked is that the upstream session was closed.
		waitStandinIdle(t, e.pg)
		if err := e.net.Restore("pg"); err != nil {
			t.Fatal(err)
		}
	})

	// Recovery: new connections log in and work.
	waitFor(t, 20*time.Second, "a new connection after the faults", func() error { return tryQuery(e.dsn(), "SELECT 1") })
	if v := e.s.metric("rdsvalet_proxy_sessions_closed_total", `listener="pg"`, `reason="upstream"`); v < 2 {
		t.Errorf("sessions closed by the upstream = %v, want >= 2", v)
	}
	assertNoLeak(t, e.s, e.base)
}

// waitNotRunning waits until the database no longer runs query: the upstream session of a
// broken connection does not linger.
func waitNotRunning(t *testing.T, w *world.World, query string) {
	t.Helper()
	tw := &testWorld{World: w}
	waitFor(t, 70*time.Second, "the database to stop running "+query, func() error {
		n, err := tw.ActiveQueries(query)
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("%d backends still run it", n)
		}
		return nil
	})
}

// waitStandinIdle waits until the stand-in (RDS) relays no session.
func waitStandinIdle(t *testing.T, st *rdsstandin.Server) {
	t.Helper()
	waitFor(t, 30*time.Second, "no session left at the stand-in", func() error {
		if n := st.Stats().ActiveSessions; n > suitePoolKept() {
			return fmt.Errorf("%d sessions", n)
		}
		return nil
	})
}

// tryQuery opens a connection, runs sql and closes it.
func tryQuery(dsn, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql)
	return err
}

// TestFaultUpstreamResetMidCopy resets the upstream connection while COPY FROM STDIN streams
// rows: the app's CopyFrom fails at once, the aborted COPY leaves no row behind, and a COPY on a
// new connection works.
func TestFaultUpstreamResetMidCopy(t *testing.T) {
	e := startFaultEnv(t, faultOptions{})
	e.warmBaseline(t)
	setup := connect(t, e.s, "app")
	mustExec(t, setup, "DROP TABLE IF EXISTS fault_copy; CREATE TABLE fault_copy (id int, name text)")
	_ = setup.Close(context.Background())

	c := connect(t, e.s, "app")
	pr, pw := io.Pipe()
	var written atomic.Int64
	go func() {
		// An endless COPY stream; it ends when the reader side is closed below.
		var line []byte
		for i := 0; ; i++ {
			line = fmt.Appendf(line[:0], "%d\tname-%d-%s\n", i, i, strings.Repeat("y", 100))
			if _, err := pw.Write(line); err != nil {
				return
			}
			written.Add(int64(len(line)))
		}
	}()
	defer pr.Close()
	res := make(chan error, 1)
	go func() {
		_, err := c.PgConn().CopyFrom(ctxTimeout(t, 2*time.Minute), pr, "COPY fault_copy FROM STDIN")
		res <- err
	}()
	waitFor(t, 30*time.Second, "COPY data flowing", func() error {
		if n := written.Load(); n < 4<<20 {
			return fmt.Errorf("%d bytes streamed", n)
		}
		return nil
	})
	if err := e.net.Toxic("pg", "reset_peer", toxiclient.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	d, err := within(t, faultSlack, "the COPY's failure", func() error { return <-res })
	if err == nil {
		t.Fatal("COPY succeeded across a reset")
	}
	_ = pr.Close()
	t.Logf("app saw %v after %v (%d bytes streamed)", err, d, written.Load())
	if err := e.net.Restore("pg"); err != nil {
		t.Fatal(err)
	}
	waitNotRunning(t, e.w, "COPY fault_copy FROM STDIN")
	count := func() int {
		ctx := ctxTimeout(t, 30*time.Second)
		dc, err := e.w.PG.Connect(ctx, e.w.PG.Superuser(), "app")
		if err != nil {
			t.Fatal(err)
		}
		defer dc.Close(ctx)
		var n int
		if err := dc.QueryRow(ctx, "SELECT count(*) FROM fault_copy").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("the aborted COPY left %d rows", n)
	}
	var again *pgx.Conn
	waitFor(t, 20*time.Second, "a new connection", func() error {
		var err error
		again, err = pgx.Connect(ctxTimeout(t, 15*time.Second), e.dsn())
		return err
	})
	var in bytes.Buffer
	for i := range 1000 {
		fmt.Fprintf(&in, "%d\tname-%d\n", i, i)
	}
	tag, err := again.PgConn().CopyFrom(ctxTimeout(t, time.Minute), &in, "COPY fault_copy FROM STDIN")
	if err != nil || tag.RowsAffected() != 1000 {
		t.Fatalf("COPY after the fault: %v, %v", tag, err)
	}
	_ = again.Close(context.Background())
	if n := count(); n != 1000 {
		t.Fatalf("%d rows after a clean COPY of 1000", n)
	}
	assertNoLeak(t, e.s, e.base)
}

// TestFaultResetMidHandshake breaks the upstream connection at every stage of the login: a
// reset at the first byte (before TLS), and the connection closed after N bytes in either
// direction for N across the TLS handshake and the login. Each app connection either logs in
// (N beyond the login) or gets 08001 from the sidecar within the connect timeout; both stages
// (TLS, and after TLS before the login completed) must have been hit; nothing leaks.
func TestFaultResetMidHandshake(t *testing.T) {
	e := startFaultEnv(t, faultOptions{})
	e.warmBaseline(t)
	type fault struct {
		name  string
		typ   string
		dir   string
		attrs toxiclient.Attributes
	}
	faults := []fault{{"reset at first byte", "reset_peer", "", toxiclient.Attributes{"timeout": 0}}}
	for _, n := range []int{1, 8, 100, 400, 800, 1200, 1600, 1800, 2000, 2200, 2400, 2600, 2800, 3200, 4000} {
		faults = append(faults, fault{fmt.Sprintf("downstream cut after %d bytes", n), "limit_data", "downstream", toxiclient.Attributes{"bytes": n}})
	}
	for _, n := range []int{1, 8, 100, 300, 500, 700, 900, 1100, 1400, 1600, 1800, 2000, 2200} {
		faults = append(faults, fault{fmt.Sprintf("upstream cut after %d bytes", n), "limit_data", "upstream", toxiclient.Attributes{"bytes": n}})
	}
	stages := map[string]int{}
	for _, f := range faults {
		p, err := e.net.Client.Proxy("pg")
		if err != nil {
			t.Fatal(err)
		}
		if f.dir == "" {
			err = e.net.Toxic("pg", f.typ, f.attrs)
		} else {
			_, err = p.AddToxic("hs", f.typ, f.dir, 1, f.attrs)
		}
		if err != nil {
			t.Fatal(err)
		}
		var c *pgx.Conn
		d, err := within(t, faultConnectTimeout+faultSlack, f.name, func() error {
			var err error
			c, err = pgx.Connect(ctxTimeout(t, time.Minute), e.loginDSN())
			return err
		})
		if err := e.net.Restore("pg"); err != nil {
			t.Fatal(err)
		}
		if err == nil {
			stages["logged in"]++
			t.Logf("%s: logged in", f.name)
			_ = c.Close(context.Background())
			continue
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "08001" {
			t.Errorf("%s: want 08001 from the sidecar, got %v", f.name, err)
			continue
		}
		stage := "before TLS"
		switch {
		case strings.Contains(pgErr.Message, "login") || strings.Contains(pgErr.Message, "startup") ||
			strings.Contains(pgErr.Message, "authentication"):
			stage = "login"
		case strings.Contains(pgErr.Message, "TLS") || strings.Contains(pgErr.Message, "tls"):
			stage = "TLS"
		}
		stages[stage]++
		t.Logf("%s: %s after %v: %s", f.name, stage, d, pgErr.Message)
	}
	t.Logf("stages hit: %v", stages)
	for _, want := range []string{"TLS", "login"} {
		if stages[want] == 0 {
			t.Errorf("no fault hit the %s stage: %v", want, stages)
		}
	}
	waitFor(t, 20*time.Second, "a new connection after the faults", func() error { return tryQuery(e.dsn(), "SELECT 1") })
	assertNoLeak(t, e.s, e.base)
}

// TestFaultBlackhole makes the path swallow every byte without an error (toxiproxy timeout 0):
// a busy session fails within the bound derived from the probe settings and kill_grace, an
// idle one is closed, a new connection gets 08001 within the connect timeout; once the path is
// back, new connections work.
func TestFaultBlackhole(t *testing.T) {
	e := startFaultEnv(t, faultOptions{tightProbes: true})
	e.warmBaseline(t)
	busy := connect(t, e.s, "app")
	idle := connect(t, e.s, "app")
	const q = "SELECT pg_sleep(30)"
	res := make(chan error, 1)
	go func() {
		_, err := busy.Exec(ctxTimeout(t, 2*time.Minute), q)
		res <- err
	}()
	waitActive(t, &testWorld{World: e.w}, q)
	if err := e.net.Toxic("pg", "timeout", toxiclient.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.net.Restore("pg") })
	d, err := within(t, blackholeBound, "the busy session's failure", func() error { return <-res })
	if err := connLost(busy, err); err != nil {
		t.Fatal(err)
	}
	t.Logf("busy session failed after %v (bound %v): %v", d, blackholeBound, err)
	// Ended by its own evidence, with its farewell: the only path is down, so nothing moved it.
	var silent *pgconn.PgError
	if !errors.As(err, &silent) || silent.Code != "08006" || !strings.Contains(silent.Message, "session_timeout") {
		t.Fatalf("busy session: %v; want the sidecar's FATAL 08006 naming session_timeout", err)
	}
	// The idle session was left alone (there is no better path); its next query waits for an
	// answer that cannot come and ends the same way, after session_timeout.
	_, err = within(t, faultSessionTimeout+faultSlack, "the idle session's next query", func() error {
		_, err := idle.Exec(ctxTimeout(t, time.Minute), "SELECT 1")
		return err
	})
	if err := connLost(idle, err); err != nil {
		t.Fatal(err)
	}
	if !errors.As(err, &silent) || silent.Code != "08006" || !strings.Contains(silent.Message, "session_timeout") {
		t.Fatalf("idle session's next query: %v; want the sidecar's FATAL 08006 naming session_timeout", err)
	}
	d, err = within(t, faultConnectTimeout+faultSlack, "connect over the blackhole", func() error {
		_, err := pgx.Connect(ctxTimeout(t, time.Minute), e.dsn())
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08001" {
		t.Fatalf("connect over the blackhole: want 08001, got %v", err)
	}
	t.Logf("new connection refused after %v: %s", d, pgErr.Message)
	if v := e.s.metric("rdsvalet_proxy_sessions_closed_total", `listener="pg"`, `reason="upstream_silent"`); v < 2 {
		t.Errorf("sessions closed as upstream_silent = %v, want 2", v)
	}
	if v := e.s.metric("rdsvalet_proxy_sessions_closed_total", `listener="pg"`, `reason="path_down"`); v != 0 {
		t.Errorf("sessions closed as path_down = %v: with no other path up, none may be evicted", v)
	}
	if err := e.net.Restore("pg"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a new connection after the blackhole", func() error { return tryQuery(e.dsn(), "SELECT 1") })
	// The upstream sessions held in the blackhole end once it lets go.
	waitStandinIdle(t, e.pg)
	assertNoLeak(t, e.s, e.base)
}

// TestFaultSlowFragmentedStream runs sessions over a path that cuts every chunk into small
// slices and delays it: the login, small and large results, a 1 MiB random bytea both ways
// and COPY all come through intact.
func TestFaultSlowFragmentedStream(t *testing.T) {
	e := startFaultEnv(t, faultOptions{})
	e.warmBaseline(t)
	p, err := e.net.Client.Proxy("pg")
	if err != nil {
		t.Fatal(err)
	}
	add := func(name, typ, dir string, a toxiclient.Attributes) {
		t.Helper()
		if _, err := p.AddToxic(name, typ, dir, 1, a); err != nil {
			t.Fatal(err)
		}
	}
	// Phase 1: slices of 1 to 5 bytes and latency; the login and small queries.
	for _, dir := range []string{"upstream", "downstream"} {
		add("slice_"+dir, "slicer", dir, toxiclient.Attributes{"average_size": 3, "size_variation": 2, "delay": 0})
		add("latency_"+dir, "latency", dir, toxiclient.Attributes{"latency": 10, "jitter": 5})
	}
	ctx := ctxTimeout(t, 3*time.Minute)
	c := connect(t, e.s, "app")
	var sum, count int64
	if err := c.QueryRow(ctx, "SELECT sum(g), count(*) FROM generate_series(1, 2000) g").Scan(&sum, &count); err != nil {
		t.Fatal(err)
	}
	if sum != 2001000 || count != 2000 {
		t.Fatalf("sum %d count %d", sum, count)
	}
	for i := range 20 {
		var n int
		if err := c.QueryRow(ctx, "SELECT $1::int * 2", i).Scan(&n); err != nil || n != 2*i {
			t.Fatalf("%d*2 = %d, %v", i, n, err)
		}
	}
	// Phase 2: larger slices (the stream is still cut at random points), for big values.
	for _, dir := range []string{"upstream", "downstream"} {
		if err := p.RemoveToxic("slice_" + dir); err != nil {
			t.Fatal(err)
		}
		add("slice_"+dir, "slicer", dir, toxiclient.Attributes{"average_size": 700, "size_variation": 650, "delay": 0})
	}
	blob := make([]byte, 1<<20)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	var back []byte
	var md5 string
	if err := c.QueryRow(ctx, "SELECT $1::bytea, md5($1::bytea)", blob).Scan(&back, &md5); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, blob) {
		t.Fatalf("the 1 MiB bytea came back altered (%d bytes)", len(back))
	}
	rows, err := c.Query(ctx, "SELECT g, repeat(md5(g::text), 200) FROM generate_series(1, 3000) g")
	if err != nil {
		t.Fatal(err)
	}
	var got int
	for rows.Next() {
		var g int
		var s string
		if err := rows.Scan(&g, &s); err != nil {
			t.Fatal(err)
		}
		got++
		if g != got || len(s) != 6400 {
			t.Fatalf("row %d: g=%d len=%d", got, g, len(s))
		}
	}
	if err := rows.Err(); err != nil || got != 3000 {
		t.Fatalf("%d rows, %v", got, err)
	}
	mustExec(t, c, "CREATE TEMP TABLE frag (id int, v text)")
	var in bytes.Buffer
	for i := range 5000 {
		fmt.Fprintf(&in, "%d\t%s\n", i, strings.Repeat("z", i%300))
	}
	if tag, err := c.PgConn().CopyFrom(ctx, bytes.NewReader(in.Bytes()), "COPY frag FROM STDIN"); err != nil || tag.RowsAffected() != 5000 {
		t.Fatalf("COPY FROM: %v %v", tag, err)
	}
	var out bytes.Buffer
	if _, err := c.PgConn().CopyTo(ctx, &out, "COPY (SELECT * FROM frag ORDER BY id) TO STDOUT"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), in.Bytes()) {
		t.Fatalf("COPY round trip altered the data (%d bytes in, %d out)", in.Len(), out.Len())
	}
	_ = c.Close(context.Background())
	if err := e.net.Restore("pg"); err != nil {
		t.Fatal(err)
	}
	assertNoLeak(t, e.s, e.base)
}

// TestFaultDatabaseRestartUnderLoad kills a PostgreSQL backend with SIGKILL while eight
// clients run queries through the sidecar: the postmaster then ends every backend and
// restarts (crash recovery), as after a crash. Clients see errors (never a hang), and every
// one of them is served again once the database is back; nothing leaks.
func TestFaultDatabaseRestartUnderLoad(t *testing.T) {
	e := startFaultEnv(t, faultOptions{})
	e.warmBaseline(t)
	const workers = 8
	var killed atomic.Bool
	var afterKill [workers]atomic.Int64
	var total [workers]atomic.Int64
	var errMu sync.Mutex
	var errs []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *pgx.Conn
			defer func() {
				if c != nil {
					_ = c.Close(context.Background())
				}
			}()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					if c == nil {
						var err error
						if c, err = pgx.Connect(ctx, e.dsn()); err != nil {
							c = nil
							return err
						}
					}
					var n int
					return c.QueryRow(ctx, "SELECT count(*) FROM generate_series(1, 2000)").Scan(&n)
				}()
				if err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
					if c != nil {
						_ = c.Close(context.Background())
						c = nil
					}
					if !killed.Load() {
						// Before the kill nothing may fail.
						return
					}
					// An app's pool waits a little before it reconnects.
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					continue
				}
				total[i].Add(1)
				if killed.Load() {
					afterKill[i].Add(1)
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	waitFor(t, 60*time.Second, "steady load", func() error {
		for i := range workers {
			if total[i].Load() < 5 {
				return fmt.Errorf("worker %d: %d queries", i, total[i].Load())
			}
		}
		return nil
	})
	errMu.Lock()
	if len(errs) > 0 {
		t.Fatalf("errors before the fault: %v", errs)
	}
	errMu.Unlock()

	// SIGKILL one backend of the app's sessions: PostgreSQL restarts all of them.
	ctx := ctxTimeout(t, 30*time.Second)
	dc, err := e.w.PG.Connect(ctx, e.w.PG.Superuser(), "postgres")
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	err = dc.QueryRow(ctx, "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend' LIMIT 1").Scan(&pid)
	_ = dc.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	killed.Store(true)
	killedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed backend %d", pid)
	// The postmaster ends every backend: clients see it.
	waitFor(t, 30*time.Second, "clients to see the restart", func() error {
		errMu.Lock()
		defer errMu.Unlock()
		if len(errs) == 0 {
			return errors.New("no client saw an error yet")
		}
		return nil
	})
	// Then every client is served again: three queries each from here on.
	for i := range workers {
		afterKill[i].Store(0)
	}
	waitFor(t, 90*time.Second, "every client served again after the restart", func() error {
		for i := range workers {
			if afterKill[i].Load() < 3 {
				return fmt.Errorf("worker %d: %d queries since the restart", i, afterKill[i].Load())
			}
		}
		return nil
	})
	recovered := time.Since(killedAt)
	close(stop)
	wg.Wait()
	errMu.Lock()
	defer errMu.Unlock()
	kinds := map[string]int{}
	for _, err := range errs {
		var pgErr *pgconn.PgError
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			t.Errorf("a client hung: %v", err)
		case errors.As(err, &pgErr):
			kinds[pgErr.Code]++
		default:
			kinds["connection closed"]++
		}
	}
	t.Logf("all %d clients served again %v after the kill; errors seen: %v", workers, recovered, kinds)
	assertNoLeak(t, e.s, e.base)
}
