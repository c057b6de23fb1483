package pgserver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

func start(t *testing.T, ca *pki.CA) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf})
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

func TestServer(t *testing.T) {
	ca, err := pki.NewCA("pgserver test")
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, ca)
	ctx := context.Background()
	caFile, err := ca.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	if err := s.CreateRole(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDatabase(ctx, "app", "app"); err != nil {
		t.Fatal(err)
	}
	t.Run("trusted role over TLS", func(t *testing.T) {
		c, err := pgx.Connect(ctx, s.TLSDSN("app", "app", caFile))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var user, db string
		var ssl bool
		if err := c.QueryRow(ctx, "SELECT current_user, current_database(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&user, &db, &ssl); err != nil {
			t.Fatal(err)
		}
		if user != "app" || db != "app" || !ssl {
			t.Fatalf("user=%s db=%s ssl=%v", user, db, ssl)
		}
	})
	t.Run("unix socket", func(t *testing.T) {
		c, err := pgx.Connect(ctx, s.SocketDSN(Superuser, "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
	})
	t.Run("max_connections", func(t *testing.T) {
		c, err := s.Connect(ctx, Superuser, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, "SELECT current_setting('max_connections')::int").Scan(&n); err != nil || n < 200 {
			t.Fatalf("max_connections=%d err=%v", n, err)
		}
	})
	for _, m := range []AuthMethod{SCRAM, MD5} {
		t.Run("password "+string(m), func(t *testing.T) {
			role := "pw_" + string(m[:3])
			if err := s.CreatePasswordRole(ctx, role, "s3cret'pw", m); err != nil {
				t.Fatal(err)
			}
			if _, err := pgx.Connect(ctx, s.DSN(role, "postgres")); !isAuthFailure(err) {
				t.Fatalf("no password: got %v, want 28P01", err)
			}
			cfg, err := pgx.ParseConfig(s.DSN(role, "postgres"))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Password = "wrong"
			if _, err := pgx.ConnectConfig(ctx, cfg); !isAuthFailure(err) {
				t.Fatalf("wrong password: got %v, want 28P01", err)
			}
			cfg.Password = "s3cret'pw"
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatalf("right password: %v", err)
			}
			defer c.Close(ctx)
			tlsCfg, err := pgx.ParseConfig(s.TLSDSN(role, "postgres", caFile))
			if err != nil {
				t.Fatal(err)
			}
			tlsCfg.Password = "s3cret'pw"
			tc, err := pgx.ConnectConfig(ctx, tlsCfg)
			if err != nil {
				t.Fatalf("right password over TLS: %v", err)
			}
			tc.Close(ctx)
			var stored string
			if err := c.QueryRow(ctx, "SELECT left(rolpassword, 5) FROM pg_authid WHERE rolname = $1", role).Scan(&stored); err == nil {
				t.Fatalf("a non-superuser read pg_authid")
			}
		})
	}
	t.Run("stored hashes match the method", func(t *testing.T) {
		c, err := s.Connect(ctx, Superuser, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		for role, prefix := range map[string]string{"pw_scr": "SCRAM", "pw_md5": "md5"} {
			var p string
			if err := c.QueryRow(ctx, "SELECT left(rolpassword, length($2)) FROM pg_authid WHERE rolname = $1", role, prefix).Scan(&p); err != nil || p != prefix {
				t.Fatalf("%s: stored %q err %v, want prefix %s", role, p, err, prefix)
			}
		}
	})
}

func TestKill(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	c, err := s.Connect(ctx, Superuser, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	s.Kill()
	select {
	case <-s.Exited():
	default:
		t.Fatal("Kill returned before the server exited")
	}
	if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("query on a killed server succeeded")
	}
	if _, err := s.Connect(ctx, Superuser, "postgres"); err == nil {
		t.Fatal("connect to a killed server succeeded")
	}
}

func isAuthFailure(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "28P01"
}
