package topology

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// eventually polls cond every 50ms for up to 10s.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached; last: %s", what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type pgRow struct {
	ID, Session string
	Lag         *float64
	Updated     *time.Time
}

func auroraPG(t *testing.T, ctx context.Context, s *pgserver.Server) map[string]pgRow {
	t.Helper()
	c, err := s.Connect(ctx, "app", "app") // an ordinary role, as the sidecar's
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SELECT server_id, session_id, replica_lag_in_msec, last_update_timestamp FROM aurora_replica_status()")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]pgRow{}
	for rows.Next() {
		var r pgRow
		if err := rows.Scan(&r.ID, &r.Session, &r.Lag, &r.Updated); err != nil {
			t.Fatal(err)
		}
		out[r.ID] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func scalar[T any](t *testing.T, ctx context.Context, s *pgserver.Server, q string) T {
	t.Helper()
	c, err := s.Connect(ctx, "app", "app")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v T
	if err := c.QueryRow(ctx, q).Scan(&v); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return v
}

func TestPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	ca, err := pki.NewCA("topology test")
	if err != nil {
		t.Fatal(err)
	}
	p, err := pgserver.Start(ctx, pgserver.Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	if err := p.CreateRole(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateDatabase(ctx, "app", "app"); err != nil {
		t.Fatal(err)
	}
	sb, err := p.StartStandby(ctx, pgserver.Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })
	members := []PGMember{
		{Instance{ID: "orders-1", Endpoint: "orders-1.abc.us-east-1.rds.amazonaws.com", Port: 5432}, p},
		{Instance{ID: "orders-2", Endpoint: "orders-2.abc.us-east-1.rds.amazonaws.com", Port: 5432}, sb},
	}
	if err := InstallPostgres(ctx, p, []string{"app"}, members); err != nil {
		t.Fatal(err)
	}
	if err := sb.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	rid1, rid2 := DefaultResourceID("orders-1"), DefaultResourceID("orders-2")

	t.Run("roles from both instances", func(t *testing.T) {
		for _, s := range []*pgserver.Server{p, sb} {
			st := auroraPG(t, ctx, s)
			if len(st) != 2 || st["orders-1"].Session != "MASTER_SESSION_ID" || st["orders-2"].Session == "MASTER_SESSION_ID" {
				t.Fatalf("from %s: %+v", s.Addr(), st)
			}
			if l := st["orders-2"].Lag; l == nil || *l != 0 {
				t.Fatalf("caught-up reader lag %v", l)
			}
		}
		if id := scalar[string](t, ctx, sb, "SELECT aurora_db_instance_identifier()"); id != "orders-2" {
			t.Fatalf("standby says it is %q", id)
		}
		if st := auroraPG(t, ctx, sb); st["orders-2"].Updated != nil || st["orders-1"].Updated == nil {
			t.Fatalf("last_update_timestamp: own row must be NULL, other set: %+v", st)
		}
		if n := scalar[int](t, ctx, p, "SELECT count(*)::int FROM rds_tools.show_topology('test')"); n != 2 {
			t.Fatalf("show_topology has %d rows", n)
		}
		if w := scalar[string](t, ctx, sb, "SELECT multi_az_db_cluster_source_dbi_resource_id FROM rds_tools.multi_az_db_cluster_source_dbi_resource_id()"); w != rid1 {
			t.Fatalf("standby's source %q, want %q", w, rid1)
		}
		if n := scalar[int](t, ctx, p, "SELECT count(*)::int FROM rds_tools.multi_az_db_cluster_source_dbi_resource_id()"); n != 0 {
			t.Fatalf("writer reports %d source rows, want none", n)
		}
		if id := scalar[string](t, ctx, sb, "SELECT dbi_resource_id FROM rds_tools.dbi_resource_id()"); id != rid2 {
			t.Fatalf("standby dbi_resource_id %q", id)
		}
	})

	t.Run("paused replay shows as lag", func(t *testing.T) {
		if err := sb.PauseReplay(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.Exec(ctx, "CREATE TABLE lagged (id int)"); err != nil {
			t.Fatal(err)
		}
		var first float64
		eventually(t, "reader lag over 300ms", func() (bool, string) {
			st := auroraPG(t, ctx, p)
			l := st["orders-2"].Lag
			if l != nil && first == 0 {
				first = *l
			}
			return l != nil && *l > 300 && *l > first, pgRowsString(st)
		})
		if err := sb.ResumeReplay(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, "reader caught up", func() (bool, string) {
			st := auroraPG(t, ctx, p)
			l := st["orders-2"].Lag
			return l != nil && *l == 0, pgRowsString(st)
		})
	})

	t.Run("after failover", func(t *testing.T) {
		p.Kill()
		if err := sb.Promote(ctx); err != nil {
			t.Fatal(err)
		}
		st := auroraPG(t, ctx, sb)
		if len(st) != 1 || st["orders-2"].Session != "MASTER_SESSION_ID" {
			t.Fatalf("after failover: %+v", st)
		}
		if n := scalar[int](t, ctx, sb, "SELECT count(*)::int FROM rds_tools.multi_az_db_cluster_source_dbi_resource_id()"); n != 0 {
			t.Fatalf("promoted writer reports %d source rows", n)
		}
	})
}

func pgRowsString(st map[string]pgRow) string {
	s := ""
	for id, r := range st {
		lag := "NULL"
		if r.Lag != nil {
			lag = time.Duration(*r.Lag * float64(time.Millisecond)).String()
		}
		s += id + ":" + r.Session + ":" + lag + " "
	}
	return s
}

type myRow struct {
	ID, Session string
	Lag         sql.NullFloat64
}

func auroraMy(t *testing.T, ctx context.Context, s *mariadb.Server, schema string) map[string]myRow {
	t.Helper()
	c := s.TCPConfig("app", "", "")
	db, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT SERVER_ID, SESSION_ID, REPLICA_LAG_IN_MILLISECONDS FROM "+schema+
		".replica_host_status WHERE time_to_sec(timediff(now(), LAST_UPDATE_TIMESTAMP)) <= 300")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]myRow{}
	for rows.Next() {
		var r myRow
		if err := rows.Scan(&r.ID, &r.Session, &r.Lag); err != nil {
			t.Fatal(err)
		}
		out[r.ID] = r
	}
	return out
}

func TestMySQL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	ca, err := pki.NewCA("topology test")
	if err != nil {
		t.Fatal(err)
	}
	p, err := mariadb.Start(ctx, mariadb.Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	if err := p.CreateUser(ctx, "app", ""); err != nil {
		t.Fatal(err)
	}
	r, err := p.StartReplica(ctx, mariadb.Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	const schema = "aurora_is"
	top, err := StartMySQL(ctx, MySQLOptions{Schema: schema, Logf: t.Logf, Members: []MySQLMember{
		{Instance{ID: "orders-my-1", Endpoint: "orders-my-1.abc.us-east-1.rds.amazonaws.com", Port: 3306}, p},
		{Instance{ID: "orders-my-2", Endpoint: "orders-my-2.abc.us-east-1.rds.amazonaws.com", Port: 3306}, r},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Close()

	t.Run("roles from both instances", func(t *testing.T) {
		for _, s := range []*mariadb.Server{p, r} {
			st := auroraMy(t, ctx, s, schema)
			if len(st) != 2 || st["orders-my-1"].Session != "MASTER_SESSION_ID" || st["orders-my-2"].Session == "MASTER_SESSION_ID" ||
				!st["orders-my-2"].Lag.Valid || st["orders-my-2"].Lag.Float64 != 0 {
				t.Fatalf("from %s: %+v", s.Addr(), st)
			}
		}
		db, err := sql.Open("mysql", r.TCPConfig("app", "", "").FormatDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var id string
		if err := db.QueryRowContext(ctx, "SELECT "+schema+".aurora_server_id()").Scan(&id); err != nil || id != "orders-my-2" {
			t.Fatalf("replica says it is %q (%v)", id, err)
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM mysql.rds_topology WHERE id = @@server_id").Scan(&n); err != nil || n != 1 {
			t.Fatalf("rds_topology row for @@server_id: %d (%v)", n, err)
		}
	})

	t.Run("stopped SQL thread shows as lag", func(t *testing.T) {
		if err := r.StopSQLThread(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.Exec(ctx, "CREATE DATABASE lagged"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "reader lag over 300ms", func() (bool, string) {
			st := auroraMy(t, ctx, p, schema)
			l := st["orders-my-2"].Lag
			return l.Valid && l.Float64 > 300, myRowsString(st)
		})
		if err := r.StartSQLThread(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, "reader caught up", func() (bool, string) {
			st := auroraMy(t, ctx, p, schema)
			l := st["orders-my-2"].Lag
			return l.Valid && l.Float64 == 0, myRowsString(st)
		})
	})

	t.Run("after failover", func(t *testing.T) {
		p.Kill()
		if err := r.Promote(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, "promoted replica is the writer", func() (bool, string) {
			st := auroraMy(t, ctx, r, schema)
			return len(st) == 1 && st["orders-my-2"].Session == "MASTER_SESSION_ID", myRowsString(st)
		})
	})
}

func myRowsString(st map[string]myRow) string {
	s := ""
	for id, r := range st {
		s += id + ":" + r.Session + ":" + time.Duration(r.Lag.Float64*float64(time.Millisecond)).String() + " "
	}
	return s
}
