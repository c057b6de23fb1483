package world_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// A cluster world: each instance answers IAM logins for its own endpoint only, the roles
// are the servers' real ones, the topology views name them, and promote / kill work.
func TestWorldCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	w, err := world.Start(ctx, world.Options{Dir: t.TempDir(), Logf: t.Logf, MySQL: true, Replicas: 2, MySQLReplicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	w.CloseOnCleanup(t)
	w.SetEnv(t.Setenv)
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Instances) != 3 || len(w.MySQLInstances) != 3 || w.Instances[0].PG != w.PG || w.MySQLInstances[0].MariaDB != w.MariaDB {
		t.Fatalf("instances: %d pg, %d mysql", len(w.Instances), len(w.MySQLInstances))
	}
	if w.InstanceTemplate != "?.c1uster7test.us-east-1.rds.amazonaws.com:5432" || w.Instance("orders-2").TokenHost != "orders-2.c1uster7test.us-east-1.rds.amazonaws.com:5432" {
		t.Fatalf("template %s, token host %s", w.InstanceTemplate, w.Instance("orders-2").TokenHost)
	}
	token := func(host string) string {
		tok, err := auth.BuildAuthToken(ctx, host, w.Region, w.DBUser, cfg.Credentials)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	pgConn := func(i *world.Instance, tokenHost string) (*pgx.Conn, error) {
		c, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s@%s/%s?sslmode=require", w.DBUser, i.Address, w.DBName))
		if err != nil {
			t.Fatal(err)
		}
		c.Password = token(tokenHost)
		c.TLSConfig = w.CA.ClientTLSConfig(i.TLSServerName)
		c.Fallbacks = nil
		return pgx.ConnectConfig(ctx, c)
	}
	myDB := func(i *world.Instance) *sql.DB {
		c := mysql.NewConfig()
		c.User, c.Passwd, c.Net, c.Addr, c.DBName = w.DBUser, token(i.TokenHost), "tcp", i.Address, w.DBName
		c.AllowCleartextPasswords = true
		c.TLS = w.CA.ClientTLSConfig(i.TLSServerName)
		conn, err := mysql.NewConnector(c)
		if err != nil {
			t.Fatal(err)
		}
		db := sql.OpenDB(conn)
		t.Cleanup(func() { db.Close() })
		return db
	}
	inRecovery := func(i *world.Instance) bool {
		t.Helper()
		c, err := pgConn(i, i.TokenHost)
		if err != nil {
			t.Fatalf("%s: %v", i.ID, err)
		}
		defer c.Close(ctx)
		var r bool
		if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&r); err != nil {
			t.Fatal(err)
		}
		return r
	}

	t.Run("IAM login per instance, real roles", func(t *testing.T) {
		for n, i := range w.Instances {
			if got := inRecovery(i); got != (n > 0) {
				t.Errorf("%s: pg_is_in_recovery %v", i.ID, got)
			}
		}
		// A token signed for another instance's endpoint is refused, as RDS refuses it.
		if c, err := pgConn(w.Instances[1], w.Instances[2].TokenHost); err == nil {
			c.Close(ctx)
			t.Fatal("orders-2 accepted a token for orders-3")
		}
		for n, i := range w.MySQLInstances {
			var ro bool
			if err := myDB(i).QueryRowContext(ctx, "SELECT @@read_only").Scan(&ro); err != nil {
				t.Fatalf("%s: %v", i.ID, err)
			}
			if ro != (n > 0) {
				t.Errorf("%s: read_only %v", i.ID, ro)
			}
		}
	})

	t.Run("topology through a reader", func(t *testing.T) {
		c, err := pgConn(w.Instances[2], w.Instances[2].TokenHost)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		rows, err := c.Query(ctx, "SELECT server_id, session_id FROM aurora_replica_status() ORDER BY server_id")
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ ID, Session string }])
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0].ID != "orders-1" || got[0].Session != "MASTER_SESSION_ID" || got[1].Session == "MASTER_SESSION_ID" {
			t.Fatalf("aurora_replica_status: %+v", got)
		}
		var writer string
		err = myDB(w.MySQLInstances[1]).QueryRowContext(ctx, "SELECT SERVER_ID FROM "+w.MySQLTopology.Schema()+
			".replica_host_status WHERE SESSION_ID = 'MASTER_SESSION_ID'").Scan(&writer)
		if err != nil || writer != "orders-mysql-1" {
			t.Fatalf("mysql writer %q (%v)", writer, err)
		}
	})

	t.Run("kill the writer, promote a reader", func(t *testing.T) {
		w.Instances[0].Kill()
		if err := w.Instances[1].Promote(ctx); err != nil {
			t.Fatal(err)
		}
		if inRecovery(w.Instances[1]) {
			t.Fatal("promoted orders-2 still in recovery")
		}
		if c, err := pgConn(w.Instances[0], w.Instances[0].TokenHost); err == nil {
			c.Close(ctx)
			t.Fatal("login through the killed instance's stand-in succeeded")
		}
		w.MySQLInstances[0].Kill()
		if err := w.MySQLInstances[1].Promote(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := myDB(w.MySQLInstances[1]).ExecContext(ctx, "CREATE TABLE promoted (id int)"); err != nil {
			t.Fatalf("write on the promoted mysql instance: %v", err)
		}
		if ok, err := w.MySQLInstances[1].IsWriter(ctx); err != nil || !ok {
			t.Fatalf("IsWriter %v %v", ok, err)
		}
		// The surviving replicas follow the new writers and see its writes.
		for _, pair := range [][2]*world.Instance{{w.Instances[2], w.Instances[1]}, {w.MySQLInstances[2], w.MySQLInstances[1]}} {
			if err := pair[0].Follow(ctx, pair[1]); err != nil {
				t.Fatal(err)
			}
			if err := pair[0].WaitCaughtUp(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if inRecovery(w.Instances[2]) != true {
			t.Fatal("orders-3 left recovery")
		}
		var n int
		if err := myDB(w.MySQLInstances[2]).QueryRowContext(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'promoted'").Scan(&n); err != nil || n != 1 {
			t.Fatalf("orders-mysql-3 does not see the new writer's table: %d %v", n, err)
		}
	})
}
