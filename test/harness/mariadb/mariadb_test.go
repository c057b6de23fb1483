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

func TestServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ca, err := pki.NewCA("mariadb test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(ctx, Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if err := s.CreateUser(ctx, "app", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDatabase(ctx, "app", "app"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, "pw", "s3cret"); err != nil {
		t.Fatal(err)
	}

	open := func(c *mysql.Config) *sql.DB {
		conn, err := mysql.NewConnector(c)
		if err != nil {
			t.Fatal(err)
		}
		db := sql.OpenDB(conn)
		t.Cleanup(func() { db.Close() })
		return db
	}

	t.Run("app over verified TLS", func(t *testing.T) {
		c := s.TCPConfig("app", "", "app")
		c.TLS = ca.ClientTLSConfig("localhost")
		db := open(c)
		var user, cipher, name string
		if err := db.QueryRowContext(ctx, "SELECT current_user(), database()").Scan(&user, &name); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(new(string), &cipher); err != nil {
			t.Fatal(err)
		}
		if user != "app@%" || name != "app" || cipher == "" {
			t.Fatalf("user=%s db=%s cipher=%q", user, name, cipher)
		}
		if _, err := db.ExecContext(ctx, "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)"); err == nil {
			t.Fatal("multi-statement ran without MultiStatements")
		}
	})
	t.Run("password user", func(t *testing.T) {
		var me *mysql.MySQLError
		if err := open(s.TCPConfig("pw", "wrong", "")).PingContext(ctx); !errors.As(err, &me) || me.Number != 1045 {
			t.Fatalf("wrong password: %v, want 1045", err)
		}
		if err := open(s.TCPConfig("pw", "s3cret", "")).PingContext(ctx); err != nil {
			t.Fatalf("right password: %v", err)
		}
	})
	t.Run("max_allowed_packet", func(t *testing.T) {
		var n int64
		if err := open(s.Config(Superuser, "")).QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&n); err != nil || n < 32<<20 {
			t.Fatalf("max_allowed_packet=%d err=%v", n, err)
		}
	})
}

func TestKill(t *testing.T) {
	ctx := context.Background()
	s, err := Start(ctx, Options{Logf: t.Logf}) // own temp dir
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	s.Kill()
	if err := s.ping(ctx); err == nil {
		t.Fatal("killed server answers")
	}
}
