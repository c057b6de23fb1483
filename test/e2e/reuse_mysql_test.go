package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// The MySQL side of TestReusePostgresNoStateLeaks, with go-sql-driver/mysql: each case leaves
// state behind on one app connection, and the next app connection, on the very same server
// connection (CONNECTION_ID() proves it), must not see it.

// myConnOnce is one app connection: a database/sql pool that keeps no idle connection, so that
// closing the *sql.Conn closes the app's connection to the sidecar (COM_QUIT).
func myConnOnce(t *testing.T, s *sidecar) *sql.Conn {
	t.Helper()
	db := openMy(t, s, nil)
	db.SetMaxIdleConns(0)
	c, err := db.Conn(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("connect through the sidecar: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func myString(t *testing.T, c *sql.Conn, q string) string {
	t.Helper()
	var v sql.NullString
	if err := c.QueryRowContext(ctxTimeout(t, 30*time.Second), q).Scan(&v); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if !v.Valid {
		return "<NULL>"
	}
	return v.String
}

func myLeaveAndReuse(t *testing.T, s *sidecar, leave func(c *sql.Conn)) *sql.Conn {
	t.Helper()
	pgPooled(t, s, "mysql", 1)
	a := myConnOnce(t, s)
	id := myString(t, a, "SELECT CONNECTION_ID()")
	hits := s.metric("rdsvalet_reuse_checkouts_total", `listener="mysql"`, `result="hit"`)
	leave(a)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	pgPooled(t, s, "mysql", 1)
	b := myConnOnce(t, s)
	if got := myString(t, b, "SELECT CONNECTION_ID()"); got != id {
		t.Fatalf("the next app runs on server connection %s, not on %s that the last app left: no reuse to test", got, id)
	}
	if h := s.metric("rdsvalet_reuse_checkouts_total", `listener="mysql"`, `result="hit"`); h != hits+1 {
		t.Errorf("reuse hits %v, want %v", h, hits+1)
	}
	return b
}

func myErrCode(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

func TestReuseMySQLNoStateLeaks(t *testing.T) {
	w := startMyWorld(t, "")
	ctx := ctxTimeout(t, 3*time.Minute)
	if err := w.MariaDB.Exec(ctx, `CREATE ROLE IF NOT EXISTS reuse_other;
GRANT reuse_other TO app;
CREATE DATABASE IF NOT EXISTS reuse_elsewhere;
GRANT ALL ON reuse_elsewhere.* TO app;
CREATE TABLE IF NOT EXISTS app.reuse_tx (x int);
DELETE FROM app.reuse_tx;
GRANT ALL ON app.reuse_tx TO app`); err != nil {
		t.Fatal(err)
	}
	root, err := w.MariaDB.Open("root", "")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	s := startSidecar(t, w.config("    pool: {max_idle: 1}"), w.env)
	first := myConnOnce(t, s)
	myExec(t, first, "DO 1")
	_ = first.Close()

	t.Run("temp table", func(t *testing.T) {
		b := myLeaveAndReuse(t, s, func(c *sql.Conn) { myExec(t, c, "CREATE TEMPORARY TABLE leak (x int)") })
		_, err := b.ExecContext(ctx, "SELECT * FROM leak")
		if code := myErrCode(err); code != 1146 {
			t.Errorf("SELECT from the last app's temporary table: %v, want ERROR 1146 (no such table)", err)
		}
	})
	t.Run("SET variables", func(t *testing.T) {
		b := myLeaveAndReuse(t, s, func(c *sql.Conn) {
			myExec(t, c, "SET SESSION wait_timeout = 77")
			myExec(t, c, "SET SESSION sql_mode = 'ANSI_QUOTES'")
		})
		if v := myString(t, b, "SELECT @@SESSION.wait_timeout"); v == "77" {
			t.Errorf("wait_timeout is the last app's %s", v)
		}
		if v := myString(t, b, "SELECT @@SESSION.sql_mode"); v == "ANSI_QUOTES" {
			t.Errorf("sql_mode is the last app's %s", v)
		}
	})
	t.Run("character set and database", func(t *testing.T) {
		b := myLeaveAndReuse(t, s, func(c *sql.Conn) {
			myExec(t, c, "SET NAMES latin1")
			myExec(t, c, "USE reuse_elsewhere")
		})
		if v := myString(t, b, "SELECT CONCAT(@@character_set_client, ' ', @@collation_connection)"); v != "utf8mb4 utf8mb4_general_ci" {
			t.Errorf("character set and collation %q, want the app's own utf8mb4 utf8mb4_general_ci", v)
		}
		if v := myString(t, b, "SELECT DATABASE()"); v != "app" {
			t.Errorf("DATABASE() = %s, want the app's app", v)
		}
	})
	t.Run("prepared statements", func(t *testing.T) {
		var name string
		var before int
		if err := root.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'").Scan(&name, &before); err != nil {
			t.Fatal(err)
		}
		b := myLeaveAndReuse(t, s, func(c *sql.Conn) {
			myExec(t, c, "PREPARE leak FROM 'SELECT 1'")
			// A statement the driver prepares (COM_STMT_PREPARE), never closed.
			if _, err := c.PrepareContext(ctx, "SELECT ? + 1"); err != nil {
				t.Fatal(err)
			}
		})
		_, err := b.ExecContext(ctx, "EXECUTE leak")
		if code := myErrCode(err); code != 1243 {
			t.Errorf("EXECUTE the last app's statement: %v, want ERROR 1243 (unknown prepared statement)", err)
		}
		var after int
		if err := root.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'").Scan(&name, &after); err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Errorf("Prepared_stmt_count %d after the reuse, %d before the last app: its statements remain", after, before)
		}
	})
	t.Run("GET_LOCK", func(t *testing.T) {
		b := myLeaveAndReuse(t, s, func(c *sql.Conn) { myExec(t, c, "DO GET_LOCK('reuse_leak', 0)") })
		if v := myString(t, b, "SELECT IS_USED_LOCK('reuse_leak')"); v != "<NULL>" {
			t.Errorf("the last app's GET_LOCK is still held by connection %s", v)
		}
	})
	t.Run("user variables", func(t *testing.T) {
		b := myLeaveAndReuse(t, s, func(c *sql.Conn) { myExec(t, c, "SET @leak = 42") })
		if v := myString(t, b, "SELECT @leak"); v != "<NULL>" {
			t.Errorf("@leak is the last app's %s", v)
		}
	})
	t.Run("SET ROLE", func(t *testing.T) {
		b := myLeaveAndReuse(t, s, func(c *sql.Conn) { myExec(t, c, "SET ROLE reuse_other") })
		if v := myString(t, b, "SELECT CURRENT_ROLE()"); v != "<NULL>" {
			t.Errorf("CURRENT_ROLE() is the last app's %s", v)
		}
	})
	t.Run("open transaction", func(t *testing.T) {
		pgPooled(t, s, "mysql", 1)
		a := myConnOnce(t, s)
		id := myString(t, a, "SELECT CONNECTION_ID()")
		gone := func() float64 {
			return s.metric("rdsvalet_reuse_discards_total", `listener="mysql"`, `reason="app_left_busy"`) +
				s.metric("rdsvalet_reuse_discards_total", `listener="mysql"`, `reason="session_ended"`)
		}
		before := gone()
		myExec(t, a, "BEGIN")
		myExec(t, a, "INSERT INTO reuse_tx VALUES (1)")
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 15*time.Second, "the session left in a transaction is discarded", func() error {
			if v := gone(); v != before+1 {
				return fmt.Errorf("discards %v, want %v", v, before+1)
			}
			return nil
		})
		if v := s.metric("rdsvalet_reuse_idle_sessions", `listener="mysql"`); v != 0 {
			t.Errorf("%v sessions pooled after the app left inside a transaction, want none", v)
		}
		b := myConnOnce(t, s)
		if got := myString(t, b, "SELECT CONNECTION_ID()"); got == id {
			t.Fatalf("the next app runs on server connection %s, which the last app left inside a transaction", got)
		}
		if v := myString(t, b, "SELECT COUNT(*) FROM reuse_tx"); v != "0" {
			t.Errorf("the abandoned transaction's row is visible (%s rows)", v)
		}
	})
	_ = context.Background
}
