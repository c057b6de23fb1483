package e2e

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
)

// Sessions held idle while the database is at its connection limit, and logins beyond it.
const (
	fullHeld  = 100
	fullExtra = 50
)

// A database at its connection limit answers each new login with its own error (PostgreSQL's
// 53300, MySQL's 1040). That answer proves the path works: it reaches the app as the
// database's own, is never counted against the path (probed tightly here: fall 2 at 1 s), and
// the sessions held on the path are untouched. Counted as path failures, the answers marked the
// path down and closed the held sessions (issue 14).
func TestDatabaseFullIsTheDatabasesAnswer(t *testing.T) {
	e := startFaultEnv(t, faultOptions{tightProbes: true})
	e.warmBaseline(t)

	t.Run("postgres", func(t *testing.T) {
		held := make([]*pgx.Conn, fullHeld)
		for i := range held {
			held[i] = connect(t, e.s, "app")
		}
		// The role may have no more sessions than it holds now: PostgreSQL refuses the next
		// login with 53300 "too many connections for role".
		ctx := ctxTimeout(t, time.Minute)
		sup, err := e.w.PG.Connect(ctx, e.w.PG.Superuser(), "postgres")
		if err != nil {
			t.Fatal(err)
		}
		defer sup.Close(context.Background())
		var n int
		if err := sup.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		mustExec(t, sup, "ALTER ROLE app CONNECTION LIMIT "+strconv.Itoa(n))
		t.Cleanup(func() { _ = e.w.PG.Exec(context.Background(), "ALTER ROLE app CONNECTION LIMIT -1") })
		passive := e.s.metric("rdsvalet_health_passive_failures_total", `listener="pg"`)

		errs := parallelLogins(fullExtra, func() error {
			c, err := pgx.Connect(ctxTimeout(t, 30*time.Second), e.dsn())
			if err == nil {
				_ = c.Close(context.Background())
			}
			return err
		})
		for i, err := range errs {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "53300" || !strings.Contains(pgErr.Message, "too many connections") {
				t.Fatalf("login %d beyond the limit: %v; want the database's own 53300", i, err)
			}
		}
		assertHeldAnswer(t, "postgres", len(held), func(i int) error {
			_, err := held[i].Exec(ctxTimeout(t, 10*time.Second), "SELECT 1")
			return err
		})
		assertPathKept(t, e, "pg", passive, fullExtra)
	})

	t.Run("mysql", func(t *testing.T) {
		db := openMy(t, e.s, nil)
		held := make([]*sql.Conn, fullHeld)
		for i := range held {
			c, err := db.Conn(ctxTimeout(t, 30*time.Second))
			if err != nil {
				t.Fatalf("hold session %d: %v", i, err)
			}
			t.Cleanup(func() { _ = c.Close() })
			held[i] = c
		}
		// max_connections at what is connected now (this superuser session included): the
		// server answers the next login with ERR 1040 in place of its greeting.
		ctx := ctxTimeout(t, time.Minute)
		sdb, err := e.w.MariaDB.Open(mariadb.Superuser, "")
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		sup, err := sdb.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer sup.Close()
		var name string
		var connected, old int
		if err := sup.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Threads_connected'").Scan(&name, &connected); err != nil {
			t.Fatal(err)
		}
		if err := sup.QueryRowContext(ctx, "SELECT @@GLOBAL.max_connections").Scan(&old); err != nil {
			t.Fatal(err)
		}
		// MariaDB refuses a connection once those already connected exceed max_connections.
		if _, err := sup.ExecContext(ctx, "SET GLOBAL max_connections = "+strconv.Itoa(connected-1)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = e.w.MariaDB.Exec(context.Background(), "SET GLOBAL max_connections = "+strconv.Itoa(old))
		})
		passive := e.s.metric("rdsvalet_health_passive_failures_total", `listener="mysql"`)

		errs := parallelLogins(fullExtra, func() error {
			c, err := openMy(t, e.s, nil).Conn(ctxTimeout(t, 30*time.Second))
			if err == nil {
				_ = c.Close()
			}
			return err
		})
		for i, err := range errs {
			var myErr *mysql.MySQLError
			if !errors.As(err, &myErr) || myErr.Number != 1040 {
				t.Fatalf("login %d beyond the limit: %v; want the database's own ERR 1040", i, err)
			}
		}
		assertHeldAnswer(t, "mysql", len(held), func(i int) error {
			var one int
			return held[i].QueryRowContext(ctxTimeout(t, 10*time.Second), "SELECT 1").Scan(&one)
		})
		assertPathKept(t, e, "mysql", passive, fullExtra)
	})
}

// parallelLogins runs n logins, ten at a time, and returns each one's error.
func parallelLogins(n int, login func() error) []error {
	errs := make([]error, n)
	sem := make(chan struct{}, 10)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = login()
		}()
	}
	wg.Wait()
	return errs
}

// assertHeldAnswer checks that each of the n held sessions still answers a query.
func assertHeldAnswer(t *testing.T, engine string, n int, query func(i int) error) {
	t.Helper()
	for i := range n {
		if err := query(i); err != nil {
			t.Fatalf("%s: held session %d of %d no longer answers: %v", engine, i, n, err)
		}
	}
}

// assertPathKept checks the listener's only path is still up, that no failure was counted
// against it since passiveBefore, and that the refusals were recorded as the database's
// answers.
func assertPathKept(t *testing.T, e *faultEnv, listener string, passiveBefore float64, answers int) {
	t.Helper()
	if st := pathState(t, e.s, listener, "db"); st != "up" {
		t.Errorf("%s: path db is %s after the database's answers; want up", listener, st)
	}
	if got := e.s.metric("rdsvalet_health_passive_failures_total", `listener="`+listener+`"`); got != passiveBefore {
		t.Errorf("%s: passive path failures went from %v to %v; a database's answer is not a path failure", listener, passiveBefore, got)
	}
	if got := e.s.metric("rdsvalet_proxy_upstream_login_duration_seconds_count", `listener="`+listener+`"`, `result="answered"`); got < float64(answers) {
		t.Errorf("%s: %v logins recorded as answered by the database, want at least %d", listener, got, answers)
	}
}

// A latency spike above the probe timeout on every path marks them all down, but there is no
// better path to move sessions to: the held sessions stay, and answer once the spike is over.
// Evicted, they were closed although they were slow, not dead (issue 14).
func TestLatencySpikeOnEveryPathKeepsSessions(t *testing.T) {
	m := startMultiPath(t)
	const n = 20
	held := make([]*pgx.Conn, n)
	for i := range held {
		held[i] = m.connect(t)
		mustExec(t, held[i], "SELECT 1")
	}
	// 1.25 s each way: 2.5 s more per round trip, far above the probe timeout.
	for _, p := range pathNames {
		if err := m.net.Toxic(p, "latency", toxiclient.Attributes{"latency": 1250}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, p := range pathNames {
			_ = m.net.Restore(p)
		}
	})
	for _, p := range pathNames {
		m.waitState(t, 30*time.Second, p, "down")
	}
	for _, p := range pathNames {
		if err := m.net.Restore(p); err != nil {
			t.Fatal(err)
		}
	}
	m.waitState(t, 30*time.Second, pathNames[0], "up")
	for i, c := range held {
		if _, err := c.Exec(ctxTimeout(t, 10*time.Second), "SELECT 1"); err != nil {
			t.Fatalf("held session %d of %d after the spike: %v", i, n, err)
		}
	}
	if v := m.s.metricSum("rdsvalet_proxy_sessions_closed_total"); v != 0 {
		t.Errorf("%v sessions were closed by the spike; want none", v)
	}
}
