package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/go-sql-driver/mysql"

	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// myRunning counts MariaDB threads running query, seen on a direct superuser connection.
func myRunning(w *world.World, query string) (int, error) {
	db, err := w.MariaDB.Open(mariadb.Superuser, "")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int
	err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = ?", query).Scan(&n)
	return n, err
}

func waitMyRunning(t *testing.T, w *world.World, query string) {
	t.Helper()
	waitFor(t, 15*time.Second, "MariaDB running "+query, func() error {
		n, err := myRunning(w, query)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("not running yet")
		}
		return nil
	})
}

// myConn is one dedicated connection through the sidecar's MySQL listener.
func myConn(t *testing.T, e *faultEnv) *sql.Conn {
	t.Helper()
	db := openMy(t, e.s, nil)
	c, err := db.Conn(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("connect through the sidecar: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// myLost checks err is a broken connection as the driver reports it, not a timeout.
func myLost(err error) error {
	var myErr *mysql.MySQLError
	switch {
	case err == nil:
		return errors.New("no error")
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("timed out instead of failing: %w", err)
	case errors.As(err, &myErr):
		return fmt.Errorf("a server error, not a lost connection: %w", err)
	}
	return nil
}

// TestFaultMySQLResetMidQuery is TestFaultUpstreamResetMidQuery for MySQL: TCP resets while
// a large result streams, and every connection of the path dropped while SLEEP runs.
func TestFaultMySQLResetMidQuery(t *testing.T) {
	e := startFaultEnv(t, faultOptions{})
	e.warmBaseline(t)

	t.Run("reset while streaming", func(t *testing.T) {
		c := myConn(t, e)
		ctx := ctxTimeout(t, 2*time.Minute)
		rows, err := c.QueryContext(ctx, "SELECT seq, REPEAT('x', 1000) FROM seq_1_to_50000000")
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
		if err := e.net.Toxic("my", "reset_peer", toxiclient.Attributes{"timeout": 0}); err != nil {
			t.Fatal(err)
		}
		d, err := within(t, faultSlack, "the streaming query's failure", func() error {
			for rows.Next() {
			}
			return rows.Err()
		})
		if err := myLost(err); err != nil {
			t.Fatal(err)
		}
		t.Logf("app saw %v after %v", err, d)
		if err := e.net.Restore("my"); err != nil {
			t.Fatal(err)
		}
		waitStandinIdle(t, e.my)
	})

	t.Run("cut while SLEEP runs", func(t *testing.T) {
		c := myConn(t, e)
		const q = "SELECT SLEEP(60)"
		res := make(chan error, 1)
		go func() {
			var v int
			res <- c.QueryRowContext(ctxTimeout(t, 2*time.Minute), q).Scan(&v)
		}()
		waitMyRunning(t, e.w, q)
		if err := e.net.Cut("my"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.net.Restore("my") })
		d, err := within(t, faultSlack, "the sleeping query's failure", func() error { return <-res })
		// Nothing had answered the SLEEP: the sidecar's farewell is its answer, ERR 2013 naming
		// the lost path, rather than a dropped socket.
		var lost *mysql.MySQLError
		if !errors.As(err, &lost) || lost.Number != 2013 || !strings.Contains(lost.Message, `path "db" was lost`) {
			t.Fatalf("sleeping query: %v; want the sidecar's ERR 2013 saying the path was lost", err)
		}
		t.Logf("app saw %v after %v", err, d)
		waitStandinIdle(t, e.my)
		if err := e.net.Restore("my"); err != nil {
			t.Fatal(err)
		}
	})

	waitFor(t, 20*time.Second, "a new connection after the faults", func() error {
		db := openMy(t, e.s, nil)
		defer db.Close()
		_, err := db.ExecContext(ctxTimeout(t, 15*time.Second), "DO 1")
		return err
	})
	if v := e.s.metric("rdsvalet_proxy_sessions_closed_total", `listener="mysql"`, `reason="upstream"`); v < 2 {
		t.Errorf("sessions closed by the upstream = %v, want >= 2", v)
	}
	assertNoLeak(t, e.s, e.base)
}

// TestFaultMySQLBlackhole is TestFaultBlackhole for MySQL: the busy session fails within the
// bound, the idle one is left alone and its next command ends with ERR 2013 after
// session_timeout, a new connection gets ERR 2003 within the connect timeout.
func TestFaultMySQLBlackhole(t *testing.T) {
	e := startFaultEnv(t, faultOptions{tightProbes: true})
	e.warmBaseline(t)
	busy := myConn(t, e)
	idle := myConn(t, e)
	myExec(t, idle, "DO 1")
	const q = "SELECT SLEEP(30)"
	res := make(chan error, 1)
	go func() {
		var v int
		res <- busy.QueryRowContext(ctxTimeout(t, 2*time.Minute), q).Scan(&v)
	}()
	waitMyRunning(t, e.w, q)
	if err := e.net.Toxic("my", "timeout", toxiclient.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.net.Restore("my") })
	d, err := within(t, blackholeBound, "the busy session's failure", func() error { return <-res })
	t.Logf("busy session failed after %v (bound %v): %v", d, blackholeBound, err)
	// Its farewell is the answer to the command nothing answered: ERR 2013 from the sidecar.
	var silent *mysql.MySQLError
	if !errors.As(err, &silent) || silent.Number != 2013 || !strings.Contains(silent.Message, "session_timeout") {
		t.Fatalf("busy session: %v; want the sidecar's ERR 2013 naming session_timeout", err)
	}
	// The idle session was left alone (there is no better path); its next command waits for an
	// answer that cannot come and ends the same way, after session_timeout.
	_, err = within(t, faultSessionTimeout+faultSlack, "the idle session's next query", func() error {
		_, err := idle.ExecContext(ctxTimeout(t, time.Minute), "DO 1")
		return err
	})
	if !errors.As(err, &silent) || silent.Number != 2013 || !strings.Contains(silent.Message, "session_timeout") {
		t.Fatalf("idle session's next query: %v; want the sidecar's ERR 2013 naming session_timeout", err)
	}
	d, err = within(t, faultConnectTimeout+faultSlack, "connect over the blackhole", func() error {
		db := openMy(t, e.s, nil)
		defer db.Close()
		return db.PingContext(ctxTimeout(t, time.Minute))
	})
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 2003 {
		t.Fatalf("connect over the blackhole: want ERR 2003, got %v", err)
	}
	t.Logf("new connection refused after %v: %v", d, myErr)
	if v := e.s.metric("rdsvalet_proxy_sessions_closed_total", `listener="mysql"`, `reason="upstream_silent"`); v < 2 {
		t.Errorf("sessions closed as upstream_silent = %v, want 2", v)
	}
	if v := e.s.metric("rdsvalet_proxy_sessions_closed_total", `listener="mysql"`, `reason="path_down"`); v != 0 {
		t.Errorf("sessions closed as path_down = %v: with no other path up, none may be evicted", v)
	}
	if err := e.net.Restore("my"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a new connection after the blackhole", func() error {
		db := openMy(t, e.s, nil)
		defer db.Close()
		_, err := db.ExecContext(ctxTimeout(t, 15*time.Second), "DO 1")
		return err
	})
	waitStandinIdle(t, e.my)
	assertNoLeak(t, e.s, e.base)
}
