package rdsstandin_test

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/go-sql-driver/mysql"

	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

func mysqlDB(t *testing.T, w *world.World, user, password string, tlsOn, cleartext bool) *sql.DB {
	t.Helper()
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, password, "tcp", w.MySQLAddress, w.DBName
	if tlsOn {
		c.TLS = w.CA.ClientTLSConfig(w.MySQLTLSServerName)
	}
	c.AllowCleartextPasswords = cleartext
	c.MultiStatements = true
	c.Timeout = 10 * time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db
}

func mysqlErr(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// TestMySQL runs every MySQL-side check (and the command-line clients) against one world.
func TestMySQL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := world.Start(ctx, world.Options{Dir: t.TempDir(), Logf: t.Logf, MySQL: true})
	if err != nil {
		t.Fatal(err)
	}
	w.CloseOnCleanup(t)
	w.SetEnv(t.Setenv)
	t.Run("raw", func(t *testing.T) { testMySQLRaw(t, w) })
	t.Run("clients", func(t *testing.T) { testMySQLClients(ctx, t, w) })
}

func testMySQLClients(ctx context.Context, t *testing.T, w *world.World) {
	creds := sdkCredentials(ctx, t)
	token, err := auth.BuildAuthToken(ctx, w.MySQLTokenHost, w.Region, w.DBUser, creds)
	if err != nil {
		t.Fatal(err)
	}
	c, err := creds.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("login with an SDK token", func(t *testing.T) {
		db := mysqlDB(t, w, w.DBUser, token, true, true)
		var user, name string
		if err := db.QueryRowContext(ctx, "SELECT current_user(), database()").Scan(&user, &name); err != nil {
			t.Fatalf("login/query: %v", err)
		}
		if user != w.DBUser+"@%" || name != w.DBName {
			t.Fatalf("session %s/%s", user, name)
		}
		if _, err := db.ExecContext(ctx, "CREATE TABLE kv (k INT PRIMARY KEY, v LONGTEXT); INSERT INTO kv VALUES (1, 'one')"); err != nil {
			t.Fatalf("multi-statement: %v", err)
		}
		var v string
		if err := db.QueryRowContext(ctx, "SELECT v FROM kv WHERE k = ?", 1).Scan(&v); err != nil || v != "one" {
			t.Fatalf("prepared: %q %v", v, err)
		}
		// A row over 16 MiB crosses the packet-splitting boundary in the relay.
		var n int
		if err := db.QueryRowContext(ctx, "SELECT length(v) FROM (SELECT repeat('x', 17*1024*1024) AS v) t").Scan(&n); err != nil || n != 17<<20 {
			t.Fatalf("large value: %d %v", n, err)
		}
		big := strings.Repeat("y", 17<<20)
		if _, err := db.ExecContext(ctx, "INSERT INTO kv VALUES (2, ?)", big); err != nil {
			t.Fatalf("large insert: %v", err)
		}
		if err := db.QueryRowContext(ctx, "SELECT v FROM kv WHERE k = 2").Scan(&v); err != nil || v != big {
			t.Fatalf("large round trip: len %d %v", len(v), err)
		}
		if w.MySQLStandin.Stats().LoginsOK != 1 { // first login on this world
			t.Fatalf("stats %+v", w.MySQLStandin.Stats())
		}
	})

	now := time.Now()
	refused := []struct {
		name, user, token, reason string
	}{
		{"forged", w.DBUser, iamtoken.Forge(w.MySQLTokenHost, w.Region, w.DBUser, c.AccessKeyID, "guessed", c.SessionToken, now, 15*time.Minute), "token_bad_signature"},
		{"expired", w.DBUser, iamtoken.Forge(w.MySQLTokenHost, w.Region, w.DBUser, c.AccessKeyID, c.SecretAccessKey, c.SessionToken, now.Add(-16*time.Minute), 15*time.Minute), "token_expired"},
		{"wrong user", "root", token, "token_wrong_user"},
		{"postgres token host", w.DBUser, mustToken(ctx, t, w.TokenHost, w.Region, w.DBUser, creds), "token_wrong_host"},
		{"garbage", w.DBUser, "not-a-token", "token_malformed"},
		{"tampered user", "root", strings.Replace(token, "DBUser="+w.DBUser, "DBUser=root", 1), "token_bad_signature"},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			before := w.MySQLStandin.Stats().LoginsFailed[tc.reason]
			err := mysqlDB(t, w, tc.user, tc.token, true, true).PingContext(ctx)
			if mysqlErr(err) != 1045 {
				t.Fatalf("got %v, want error 1045", err)
			}
			if got := w.MySQLStandin.Stats().LoginsFailed[tc.reason]; got != before+1 {
				t.Fatalf("LoginsFailed[%s] = %d, want %d (%v)", tc.reason, got, before+1, w.MySQLStandin.Stats().LoginsFailed)
			}
		})
	}
	t.Run("refuses plaintext", func(t *testing.T) {
		before := w.MySQLStandin.Stats().LoginsFailed[rdsstandin.ReasonNoTLS]
		if err := mysqlDB(t, w, w.DBUser, token, false, true).PingContext(ctx); mysqlErr(err) != 3159 {
			t.Fatalf("got %v, want error 3159", err)
		}
		if got := w.MySQLStandin.Stats().LoginsFailed[rdsstandin.ReasonNoTLS]; got != before+1 {
			t.Fatalf("no_tls refusals %d, want %d", got, before+1)
		}
	})
	t.Run("KILL QUERY from another session", func(t *testing.T) {
		// Connection ids in the greeting are the backend's, so KILL through the relay
		// reaches the right session.
		db := mysqlDB(t, w, w.DBUser, token, true, true)
		victim, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer victim.Close()
		var id int64
		if err := victim.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			var v int
			err := victim.QueryRowContext(ctx, "SELECT SLEEP(60)").Scan(&v)
			if err == nil && v != 1 {
				err = fmt.Errorf("SLEEP returned %d, want 1 (interrupted)", v)
			}
			done <- err
		}()
		killer := mysqlDB(t, w, w.DBUser, token, true, true)
		deadline := time.Now().Add(20 * time.Second)
		for {
			var n int
			if err := killer.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND INFO LIKE 'SELECT SLEEP%'", id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the SLEEP never showed in the process list")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := killer.ExecContext(ctx, fmt.Sprintf("KILL QUERY %d", id)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil && mysqlErr(err) != 1317 {
				t.Fatalf("killed query: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the killed query did not return")
		}
		var n int
		if err := victim.QueryRowContext(ctx, "SELECT 7").Scan(&n); err != nil || n != 7 {
			t.Fatalf("victim after KILL QUERY: %d, %v", n, err)
		}
	})
	t.Run("switch plugin option", func(t *testing.T) {
		srvTLS, err := w.CA.ServerTLSConfig(w.MySQLTLSServerName)
		if err != nil {
			t.Fatal(err)
		}
		s, err := rdsstandin.StartMySQL(rdsstandin.Options{
			Backend: w.MariaDB.Addr(), TLS: srvTLS, MySQLSwitchPlugin: "auth_gssapi_client",
			Verify: rdsstandin.IAMVerifier(iamtoken.Options{ExpectHost: w.MySQLTokenHost, Region: w.Region, Lookup: w.STS.Lookup}),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		c := mysql.NewConfig()
		c.User, c.Passwd, c.Net, c.Addr = w.DBUser, token, "tcp", s.Addr()
		c.TLS, c.AllowCleartextPasswords, c.Timeout = w.CA.ClientTLSConfig(w.MySQLTLSServerName), true, 10*time.Second
		conn, err := mysql.NewConnector(c)
		if err != nil {
			t.Fatal(err)
		}
		db := sql.OpenDB(conn)
		defer db.Close()
		if err := db.PingContext(ctx); err == nil || !strings.Contains(err.Error(), "plugin") {
			t.Fatalf("got %v, want the driver's unknown-plugin error", err)
		}
		if s.Stats().LoginsOK != 0 {
			t.Fatalf("stats %+v", s.Stats())
		}
	})
	t.Run("switches to mysql_clear_password", func(t *testing.T) {
		// A driver that refuses cleartext proves the stand-in asked for it.
		err := mysqlDB(t, w, w.DBUser, token, true, false).PingContext(ctx)
		if err == nil || !strings.Contains(err.Error(), "clear") {
			t.Fatalf("got %v, want the driver's cleartext refusal", err)
		}
	})
	// Real command-line clients (libpq, libmariadb) must accept the stand-ins too, so that
	// the harness is not shaped around one driver.
	t.Run("psql", func(t *testing.T) {
		pgToken := mustToken(ctx, t, w.TokenHost, w.Region, w.DBUser, creds)
		host, port, _ := net.SplitHostPort(w.Address)
		cmd := exec.CommandContext(ctx, "psql", "-Atc", "SELECT current_user || '/' || current_database()",
			fmt.Sprintf("host=%s hostaddr=%s port=%s user=%s dbname=%s sslmode=verify-full sslrootcert=%s",
				w.TLSServerName, host, port, w.DBUser, w.DBName, w.CAFile))
		cmd.Env = append(os.Environ(), "PGPASSWORD="+pgToken, "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "app/app" {
			t.Fatalf("psql (Debian postgresql-client): %v\n%s", err, out)
		}
	})
	t.Run("mariadb CLI", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(w.MySQLAddress)
		cmd := exec.CommandContext(ctx, "mariadb", "-h", host, "-P", port, "-u", w.DBUser, "--ssl", "--ssl-ca="+w.CAFile,
			"--connect-timeout=10", "-BN", "-e", "SELECT current_user()", w.DBName)
		cmd.Env = append(os.Environ(), "MYSQL_PWD="+token)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "app@%" {
			t.Fatalf("mariadb (Debian mariadb-client): %v\n%s", err, out)
		}
	})
	t.Run("drop sessions", func(t *testing.T) {
		conn, err := mysqlDB(t, w, w.DBUser, token, true, true).Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
		if n := w.MySQLStandin.DropSessions(); n < 1 {
			t.Fatalf("dropped %d", n)
		}
		if err := conn.PingContext(ctx); err == nil {
			t.Fatal("ping on a dropped session succeeded")
		}
	})
}

// testMySQLRaw checks the greeting and malformed logins byte by byte.
func testMySQLRaw(t *testing.T, w *world.World) {
	readPacket := func(t *testing.T, c net.Conn) (byte, []byte) {
		t.Helper()
		h := make([]byte, 4)
		if _, err := io.ReadFull(c, h); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, int(h[0])|int(h[1])<<8|int(h[2])<<16)
		if _, err := io.ReadFull(c, p); err != nil {
			t.Fatal(err)
		}
		return h[3], p
	}
	dial := func(t *testing.T) (net.Conn, []byte) {
		c, err := net.Dial("tcp", w.MySQLAddress)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, g := readPacket(t, c)
		return c, g
	}
	t.Run("greeting", func(t *testing.T) {
		_, g := dial(t)
		if g[0] != 10 || !strings.Contains(string(g), "mysql_native_password") {
			t.Fatalf("greeting %q", g)
		}
		v := strings.IndexByte(string(g[1:]), 0) + 2
		caps := uint32(binary.LittleEndian.Uint16(g[v+13:])) | uint32(binary.LittleEndian.Uint16(g[v+18:]))<<16
		if caps&(1<<11) == 0 || caps&(1<<5) != 0 || caps&(1<<9) == 0 {
			t.Fatalf("caps %#x: want SSL and PROTOCOL_41, no COMPRESS", caps)
		}
	})
	t.Run("truncated SSL request", func(t *testing.T) {
		c, _ := dial(t)
		p := binary.LittleEndian.AppendUint32(nil, 1<<11|1<<9)
		if _, err := c.Write(append([]byte{byte(len(p)), 0, 0, 1}, p...)); err != nil {
			t.Fatal(err)
		}
		seq, e := readPacket(t, c)
		if seq != 2 || e[0] != 0xff || binary.LittleEndian.Uint16(e[1:]) != 1043 {
			t.Fatalf("got seq %d %q, want ERR 1043 with seq 2", seq, e)
		}
	})
	t.Run("oversized packet", func(t *testing.T) {
		c, _ := dial(t)
		// Read before the write: the stand-in may count the refusal before this goroutine runs on.
		before := w.MySQLStandin.Stats().LoginsFailed[rdsstandin.ReasonProtocol]
		if _, err := c.Write([]byte{0xff, 0xff, 0x0f, 1}); err != nil {
			t.Fatal(err)
		}
		// The stand-in refuses at once rather than wait for a megabyte of login packet.
		seq, e := readPacket(t, c)
		if seq != 2 || e[0] != 0xff || binary.LittleEndian.Uint16(e[1:]) != 1043 {
			t.Fatalf("got seq %d %q, want ERR 1043 with seq 2", seq, e)
		}
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatal(err)
		}
		if got := w.MySQLStandin.Stats().LoginsFailed[rdsstandin.ReasonProtocol]; got != before+1 {
			t.Fatalf("protocol failures %d, want %d", got, before+1)
		}
	})
}
