package mariadb

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

func TestReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	ca, err := pki.NewCA("mariadb replica test")
	if err != nil {
		t.Fatal(err)
	}
	startOn := func(p *Server) *Server {
		t.Helper()
		var s *Server
		var err error
		o := Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf}
		if p == nil {
			s, err = Start(ctx, o)
		} else {
			s, err = p.StartReplica(ctx, o)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Stop(context.Background()); err != nil {
				t.Error(err)
			}
		})
		return s
	}
	p := startOn(nil)
	if err := p.CreateUser(ctx, "app", ""); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateDatabase(ctx, "app", "app"); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20)); INSERT INTO app.t (v) VALUES ('before')"); err != nil {
		t.Fatal(err)
	}
	r := startOn(p)
	appDB := func(s *Server) *appConn {
		c := s.TCPConfig("app", "", "app")
		c.TLS = ca.ClientTLSConfig("localhost")
		conn, err := mysql.NewConnector(c)
		if err != nil {
			t.Fatal(err)
		}
		db := sql.OpenDB(conn)
		t.Cleanup(func() { db.Close() })
		return &appConn{db}
	}
	rows := func(s *Server) int {
		t.Helper()
		var n int
		if err := s.queryRow(ctx, "SELECT count(*) FROM app.t", &n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("replicates and refuses the app's writes", func(t *testing.T) {
		if n := rows(r); n != 1 {
			t.Fatalf("replica has %d rows (users and schema replicated?), want 1", n)
		}
		if err := appDB(p).exec(ctx, "INSERT INTO t (v) VALUES ('after')"); err != nil {
			t.Fatal(err)
		}
		if err := r.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		if n := rows(r); n != 2 {
			t.Fatalf("replica has %d rows, want 2", n)
		}
		var me *mysql.MySQLError
		if err := appDB(r).exec(ctx, "INSERT INTO t (v) VALUES ('x')"); !errors.As(err, &me) || me.Number != 1290 {
			t.Fatalf("app write on the read-only replica: %v, want 1290", err)
		}
		if ro, _, err := r.ReadOnly(ctx); err != nil || !ro {
			t.Fatalf("replica read_only=%v (%v)", ro, err)
		}
		st, err := r.SlaveStatus(ctx)
		if err != nil || st["Master_SSL_Allowed"] != "Yes" || st["Using_Gtid"] != "Slave_Pos" {
			t.Fatalf("slave status: ssl %q gtid %q (%v)", st["Master_SSL_Allowed"], st["Using_Gtid"], err)
		}
		if sec, known, err := r.SecondsBehindMaster(ctx); err != nil || !known || sec != 0 {
			t.Fatalf("Seconds_Behind_Master %d known=%v err=%v, want 0", sec, known, err)
		}
	})

	t.Run("stopped SQL thread lags and catches up", func(t *testing.T) {
		if err := r.StopSQLThread(ctx); err != nil {
			t.Fatal(err)
		}
		if _, known, err := r.SecondsBehindMaster(ctx); err != nil || known {
			t.Fatalf("Seconds_Behind_Master known=%v (%v) with the SQL thread stopped, want NULL", known, err)
		}
		for i := 0; i < 5; i++ {
			if err := appDB(p).exec(ctx, "INSERT INTO t (v) VALUES ('lag')"); err != nil {
				t.Fatal(err)
			}
		}
		pp, _ := p.GTIDBinlogPos(ctx)
		rp, _ := r.GTIDSlavePos(ctx)
		if GTIDSeq(pp) <= GTIDSeq(rp) {
			t.Fatalf("primary at %s, replica at %s: no lag", pp, rp)
		}
		if n := rows(r); n != 2 {
			t.Fatalf("replica applied writes with its SQL thread stopped: %d rows", n)
		}
		if err := r.StartSQLThread(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		if n, want := rows(r), rows(p); n != want {
			t.Fatalf("replica %d rows, primary %d", n, want)
		}
	})

	t.Run("promoted replica accepts writes", func(t *testing.T) {
		if err := p.SetReadOnly(ctx, true); err != nil {
			t.Fatal(err)
		}
		var me *mysql.MySQLError
		if err := appDB(p).exec(ctx, "INSERT INTO t (v) VALUES ('demoted')"); !errors.As(err, &me) || me.Number != 1290 {
			t.Fatalf("app write on the demoted primary: %v, want 1290", err)
		}
		if err := r.Promote(ctx); err != nil {
			t.Fatal(err)
		}
		if st, err := r.SlaveStatus(ctx); err != nil || st != nil {
			t.Fatalf("promoted server still a replica: %v %v", st, err)
		}
		if err := appDB(r).exec(ctx, "INSERT INTO t (v) VALUES ('promoted')"); err != nil {
			t.Fatal(err)
		}
		// The old primary follows the new one from its own GTID position.
		if err := p.Follow(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		if n, want := rows(p), rows(r); n != want {
			t.Fatalf("old primary %d rows, new %d", n, want)
		}
	})
}

// appConn is the app's own login over verified TLS (no SUPER: read_only applies to it).
type appConn struct{ db *sql.DB }

func (a *appConn) exec(ctx context.Context, q string) error {
	_, err := a.db.ExecContext(ctx, q)
	return err
}
