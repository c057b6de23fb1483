package e2e

// Silent clients: apps that connect and say nothing must cost the database nothing. The
// sidecar reads a PostgreSQL app's startup packet, and greets a MySQL app itself, before it
// opens anything upstream; so a thousand silent clients of each engine held at once make no
// upstream connection, and a real login still goes through at once beside them.

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
)

// Settings of TestSilentClients.
const (
	silentPerEngine = 1000
	// silentLoginBound is how long a real login and SELECT 1 beside the silent clients may
	// take: a functional bound (not stuck behind them), with room for a loaded 2-core machine
	// running everything with the race detector.
	silentLoginBound = 5 * time.Second
	// silentHandshake is the sidecar's handshake_timeout: far beyond the test, so that the
	// sidecar never drops a silent client on its own during it.
	silentHandshake = 10 * time.Minute
	// silentProbeEvery paces the sidecar's TCP and TLS probes (login probes are off): each
	// path's first probe comes at a random point of the first interval, so with a day a probe
	// almost never falls in the test; one that does is read from the probe metrics and counted.
	silentProbeEvery = 24 * time.Hour
)

// TestSilentClients holds 1,000 PostgreSQL and 1,000 MySQL clients that connect to the
// sidecar and never send a byte (the MySQL ones read the greeting, if any, and never answer),
// all at once. While they are held, a real login through each listener (pgx and
// go-sql-driver/mysql) runs SELECT 1 within silentLoginBound. Counted at the upstream side,
// over the whole window (silent clients held, then the two real logins): each RDS stand-in
// accepted exactly one connection (the real login) plus the sidecar's probes, PostgreSQL's
// pg_stat_database.sessions for the app database grew by exactly one, and MariaDB's
// Connections by exactly one plus the probes (the MySQL stand-in dials MariaDB for every
// connection it accepts). The counters are read on admin connections opened before the
// window, so the reads add nothing. Then the silent clients close, and the sidecar is back
// to its baseline and serves logins.
func TestSilentClients(t *testing.T) {
	if testing.Short() {
		t.Skip("holds 2,000 connections; skipped with -short")
	}
	// The test process holds the clients' ends (2,000), and the stand-ins, in process too, two
	// sockets for each connection the sidecar opens upstream; the sidecar holds the apps' 2,000
	// plus whatever it opens upstream.
	const needFDs = 4*silentPerEngine + 2*silentPerEngine + 1000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max < needFDs {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d the test needs", lim.Max, needFDs)
	}
	if lim.Cur < needFDs {
		// The sidecar inherits this soft limit (it also raises its own to the hard one).
		raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			t.Fatal(err)
		}
	}

	maxConns := fmt.Sprintf("    max_connections: %d", 2*silentPerEngine)
	e := startFaultEnv(t, faultOptions{
		loadDefaults:     true,
		connectTimeout:   30 * time.Second,
		handshakeTimeout: silentHandshake,
		health:           fmt.Sprintf("{interval: %s, tls_interval: %s, fall: 10}", silentProbeEvery, silentProbeEvery),
		pgExtra:          maxConns,
		myExtra:          maxConns,
	})
	if soft, _ := fdLimit(t, e.s.cmd.Process.Pid); soft < 2*silentPerEngine+1000 {
		t.Fatalf("the sidecar's open-files soft limit is %d, too low for %d clients", soft, 2*silentPerEngine)
	}
	e.warmBaseline(t)
	start := time.Now()

	ctx := ctxTimeout(t, 2*time.Minute)
	cnt := openUpstreamCounters(t, e)
	before := cnt.read(t)

	pgSilent := holdSilent(t, "postgres", e.s.pgAddr, silentPerEngine)
	mySilent := holdSilent(t, "mysql", e.s.myAddr, silentPerEngine)
	t.Cleanup(pgSilent.close) // on a failed test; close is idempotent
	t.Cleanup(mySilent.close)
	t.Logf("%d + %d silent clients connected in %v", silentPerEngine, silentPerEngine, time.Since(start).Round(time.Millisecond))

	// Every silent client is accepted and held by the sidecar before anything is measured.
	var pgActive, myActive float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		pgActive = e.s.metric("rdsvalet_proxy_connections_active", `listener="pg"`)
		myActive = e.s.metric("rdsvalet_proxy_connections_active", `listener="mysql"`)
		// Done when every client is held, or (on a failure) held or already closed by the
		// sidecar.
		settled := pgActive+float64(pgSilent.gone.Load()) == silentPerEngine && myActive+float64(mySilent.gone.Load()) == silentPerEngine
		if (pgActive == silentPerEngine && myActive == silentPerEngine) || settled || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("held by the sidecar after %v: postgres %v, mysql %v", time.Since(start).Round(time.Millisecond), pgActive, myActive)
	for _, h := range []struct {
		s      *silentClients
		active float64
	}{{pgSilent, pgActive}, {mySilent, myActive}} {
		if h.active != silentPerEngine {
			t.Errorf("%s: the sidecar holds %v connections, want the %d silent clients (%d of them were closed by the sidecar)",
				h.s.engine, h.active, silentPerEngine, h.s.gone.Load())
		}
	}
	held := cnt.read(t)
	t.Logf("upstream while the silent clients are held (before the real logins): %s", held.sub(before))

	// A real login through each listener, beside the silent clients, at once.
	pgTook, err := within(t, silentLoginBound, "postgres: pgx login and SELECT 1 beside the silent clients", func() error {
		return pgSelect1(ctx, e.s)
	})
	if err != nil {
		t.Errorf("postgres: pgx login and SELECT 1 beside the silent clients: %v", err)
	}
	myTook, err := within(t, silentLoginBound, "mysql: go-sql-driver login and SELECT 1 beside the silent clients", func() error {
		return mySelect1(ctx, e.s)
	})
	if err != nil {
		t.Errorf("mysql: go-sql-driver login and SELECT 1 beside the silent clients: %v", err)
	}
	t.Logf("real logins beside the silent clients: postgres %v, mysql %v", pgTook.Round(time.Millisecond), myTook.Round(time.Millisecond))

	// PostgreSQL publishes a session's count when the backend flushes its statistics (at its
	// first idle moment, at the latest when it exits): wait for the real login's.
	var after upstreamCount
	waitDeadline := time.Now().Add(10 * time.Second)
	for {
		after = cnt.read(t)
		if after.pgSessions >= before.pgSessions+1 || time.Now().After(waitDeadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := after.sub(before)
	t.Logf("upstream over the window (silent clients held, then one real login per engine): %s", d)
	if pgSilent.gone.Load() != 0 || mySilent.gone.Load() != 0 {
		t.Errorf("silent clients closed by the sidecar while held: postgres %d, mysql %d (want 0: handshake_timeout is %v)",
			pgSilent.gone.Load(), mySilent.gone.Load(), silentHandshake)
	}
	// Exact: the one real login, and the probes the sidecar reports having run. One upstream
	// connection per silent client, or a handful in all, fails this.
	if want := 1 + d.pgProbes; d.pgAccepted != want || d.pgSessions != 1 {
		t.Errorf("postgres: %d silent clients held opened upstream connections: the RDS stand-in accepted %d connections "+
			"(want %d: the real login + %d probes) and PostgreSQL saw %d new sessions (want 1: the real login)",
			silentPerEngine, d.pgAccepted, want, d.pgProbes, d.pgSessions)
	}
	if want := 1 + d.myProbes; d.myAccepted != want || d.myConnections != int64(want) {
		t.Errorf("mysql: %d silent clients held opened upstream connections: the RDS stand-in accepted %d connections "+
			"and MariaDB saw %d connection attempts (want %d each: the real login + %d probes)",
			silentPerEngine, d.myAccepted, d.myConnections, want, d.myProbes)
	}

	// The silent clients go; the sidecar lets them go and is healthy.
	pgSilent.close()
	mySilent.close()
	assertNoLeak(t, e.s, e.base)
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body, err := e.s.get(path); err != nil || code != 200 {
			t.Errorf("%s after the silent clients: %d %q %v", path, code, body, err)
		}
	}
	if err := pgSelect1(ctx, e.s); err != nil {
		t.Errorf("postgres: login after the silent clients: %v", err)
	}
	if err := mySelect1(ctx, e.s); err != nil {
		t.Errorf("mysql: login after the silent clients: %v", err)
	}
	t.Logf("the whole test took %v", time.Since(start).Round(time.Millisecond))
}

// silentClients are connections to a listener that send nothing; each has a reader that
// discards what arrives (a MySQL greeting) and counts the connections the other side ended.
type silentClients struct {
	engine  string
	conns   []net.Conn
	gone    atomic.Int64 // ended by the sidecar before close
	closing atomic.Bool
	readers sync.WaitGroup
	once    sync.Once
}

func holdSilent(t *testing.T, engine, addr string, n int) *silentClients {
	t.Helper()
	s := &silentClients{engine: engine}
	for i := range n {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			s.close()
			t.Fatalf("%s: silent client %d: %v", engine, i, err)
		}
		s.conns = append(s.conns, c)
		s.readers.Add(1)
		go func() {
			defer s.readers.Done()
			buf := make([]byte, 512)
			for {
				if _, err := c.Read(buf); err != nil {
					if !s.closing.Load() {
						s.gone.Add(1)
					}
					return
				}
			}
		}()
	}
	return s
}

func (s *silentClients) close() {
	s.once.Do(func() {
		s.closing.Store(true)
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.readers.Wait()
	})
}

// upstreamCounters read what the upstream side saw: the RDS stand-ins' accepts, PostgreSQL's
// sessions of the app database and MariaDB's connection attempts (both on admin connections
// opened here, before any reading, so that reading adds nothing), and the sidecar's probes.
type upstreamCounters struct {
	e  *faultEnv
	pg *pgx.Conn
	my *sql.Conn
}

type upstreamCount struct {
	pgAccepted, myAccepted int   // connections the stand-ins accepted
	pgSessions             int64 // pg_stat_database.sessions of the app database
	myConnections          int64 // MariaDB's Connections status
	pgProbes, myProbes     int   // probes the sidecar has run, of the pg and mysql listeners
}

func (a upstreamCount) sub(b upstreamCount) upstreamCount {
	return upstreamCount{
		pgAccepted: a.pgAccepted - b.pgAccepted, myAccepted: a.myAccepted - b.myAccepted,
		pgSessions: a.pgSessions - b.pgSessions, myConnections: a.myConnections - b.myConnections,
		pgProbes: a.pgProbes - b.pgProbes, myProbes: a.myProbes - b.myProbes,
	}
}

func (a upstreamCount) String() string {
	return fmt.Sprintf("postgres: stand-in accepted %d, PostgreSQL sessions %d, probes %d; mysql: stand-in accepted %d, MariaDB connections %d, probes %d",
		a.pgAccepted, a.pgSessions, a.pgProbes, a.myAccepted, a.myConnections, a.myProbes)
}

func openUpstreamCounters(t *testing.T, e *faultEnv) *upstreamCounters {
	t.Helper()
	ctx := ctxTimeout(t, 30*time.Second)
	pc, err := e.w.PG.Connect(ctx, e.w.PG.Superuser(), "postgres")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close(context.Background()) })
	db, err := e.w.MariaDB.Open(mariadb.Superuser, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	mc, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Close() })
	return &upstreamCounters{e: e, pg: pc, my: mc}
}

func (u *upstreamCounters) read(t *testing.T) upstreamCount {
	t.Helper()
	ctx := ctxTimeout(t, 30*time.Second)
	var c upstreamCount
	// Probes first and last, around the counters they could move.
	p0, m0 := u.probes(t)
	if err := u.pg.QueryRow(ctx, "SELECT sessions FROM pg_stat_database WHERE datname = $1", u.e.w.DBName).Scan(&c.pgSessions); err != nil {
		t.Fatalf("read pg_stat_database.sessions: %v", err)
	}
	// Connections counts the connections MariaDB took on; those it turned away for
	// max_connections are counted apart.
	rows, err := u.my.QueryContext(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Connections', 'Connection_errors_max_connections')")
	if err != nil {
		t.Fatalf("read MariaDB's Connections: %v", err)
	}
	seen := 0
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			t.Fatalf("read MariaDB's Connections: %v", err)
		}
		c.myConnections += v
		seen++
	}
	if err := rows.Err(); err != nil || seen != 2 {
		t.Fatalf("read MariaDB's Connections: %d of 2 counters, %v", seen, err)
	}
	_ = rows.Close()
	c.pgAccepted, c.myAccepted = u.e.pg.Stats().Accepted, u.e.my.Stats().Accepted
	c.pgProbes, c.myProbes = u.probes(t)
	if p0 != c.pgProbes || m0 != c.myProbes {
		t.Logf("a probe ran while the counters were read (pg %d→%d, mysql %d→%d)", p0, c.pgProbes, m0, c.myProbes)
	}
	return c
}

// probes returns how many probes (of every kind) the sidecar has run on the pg and mysql
// listeners, from the count of rdsvalet_health_probe_duration_seconds.
func (u *upstreamCounters) probes(t *testing.T) (pg, my int) {
	t.Helper()
	_, body, err := u.e.s.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "rdsvalet_health_probe_duration_seconds_count{") {
			continue
		}
		var v int
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
			continue
		}
		switch {
		case strings.Contains(line, `listener="pg"`):
			pg += v
		case strings.Contains(line, `listener="mysql"`):
			my += v
		}
	}
	return pg, my
}

// pgSelect1 logs in through the sidecar's PostgreSQL listener with pgx and runs SELECT 1.
func pgSelect1(ctx context.Context, s *sidecar) error {
	ctx, cancel := context.WithTimeout(ctx, 2*silentLoginBound)
	defer cancel()
	host, port, _ := net.SplitHostPort(s.pgAddr)
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable", host, port))
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return err
	}
	if one != 1 {
		return fmt.Errorf("SELECT 1 returned %d", one)
	}
	return nil
}

// mySelect1 logs in through the sidecar's MySQL listener with go-sql-driver/mysql (one
// connection) and runs SELECT 1.
func mySelect1(ctx context.Context, s *sidecar) error {
	ctx, cancel := context.WithTimeout(ctx, 2*silentLoginBound)
	defer cancel()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "app", "tcp", s.myAddr, "app"
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 2*silentLoginBound, 2*silentLoginBound, 2*silentLoginBound
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	db.SetMaxOpenConns(1)
	var one int
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return err
	}
	if one != 1 {
		return fmt.Errorf("SELECT 1 returned %d", one)
	}
	return nil
}
