package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// The MySQL world: one local world with MariaDB (world.Options{MySQL: true}) for the whole
// suite, its fake STS and CA; per test a fresh RDS stand-in in front of that MariaDB, so that
// each test sees its own counters and log. The sidecar gets IRSA credentials from the fake STS
// through the world's environment, and the stand-in verifies the tokens it signs with them.
var (
	myOnce  sync.Once
	myShare *world.World
	myLogs  = &syncBuffer{}
	myErr   error
)

// sharedMyWorld starts the suite's MySQL world on first use; TestMain closes it.
func sharedMyWorld(t *testing.T) *world.World {
	t.Helper()
	myOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		myShare, myErr = world.Start(ctx, world.Options{MySQL: true, Logf: func(f string, a ...any) {
			fmt.Fprintf(myLogs, time.Now().Format("15:04:05.000 ")+f+"\n", a...)
		}})
		if myErr == nil {
			suiteCleanups = append(suiteCleanups, func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := myShare.Close(ctx); err != nil {
					fmt.Fprintln(os.Stderr, "close the MySQL world:", err)
				}
			})
		}
	})
	if myErr != nil {
		t.Fatalf("start the MySQL world: %v\n%s", myErr, myLogs.String())
	}
	return myShare
}

type myWorld struct {
	*world.World
	standin *rdsstandin.Server
	env     []string
	logs    *syncBuffer
}

// startMyWorld reuses the suite's world and starts a stand-in in front of its MariaDB;
// switchPlugin, when not empty, is the auth plugin the stand-in switches clients to.
func startMyWorld(t *testing.T, switchPlugin string) *myWorld {
	t.Helper()
	w := &myWorld{World: sharedMyWorld(t), logs: &syncBuffer{}}
	srvTLS, err := w.CA.ServerTLSConfig(w.MySQLTLSServerName)
	if err != nil {
		t.Fatal(err)
	}
	w.standin, err = rdsstandin.StartMySQL(rdsstandin.Options{
		Backend: w.MariaDB.Addr(),
		TLS:     srvTLS,
		Verify: rdsstandin.IAMVerifier(iamtoken.Options{
			ExpectHost: w.MySQLTokenHost,
			Region:     w.Region,
			Lookup:     w.STS.Lookup,
		}),
		Authorize:         w.AuthorizeDBConnect, // the role's rds-db:connect, as every world stand-in
		DBUserResource:    w.MySQLDBUserResource,
		MySQLSwitchPlugin: switchPlugin,
		Logf:              func(f string, a ...any) { fmt.Fprintf(w.logs, f+"\n", a...) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.standin.Close(); err != nil {
			t.Errorf("close the stand-in: %v", err)
		}
		if t.Failed() {
			t.Logf("stand-in log:\n%s", w.logs.String())
		}
	})
	w.env = w.Env
	return w
}

// config is a sidecar with one MySQL listener in front of the stand-in, logging in with IAM
// tokens; extra is YAML inserted into the listener.
func (w *myWorld) config(extra string) string {
	return fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
aws: {region: %s, credentials_refresh_window: 2s}
shutdown: {max_delay: 10s}
listeners:
  - name: mysql
    engine: mysql
    listen: "{{MYSQL}}"
    handshake_timeout: 2s
    connect_timeout: 5s
%s
    tls: {mode: verify-full, ca_file: %q}
    paths:
      - name: standin
        address: %q
        tls_server_name: %q
        token_host: %q
`, w.Region, extra, w.CAFile, w.standin.Addr(), w.MySQLTLSServerName, w.MySQLTokenHost)
}

// mariaVersion is VERSION() asked of MariaDB directly.
func (w *myWorld) mariaVersion(t *testing.T) string {
	t.Helper()
	db, err := w.MariaDB.Open(mariadb.Superuser, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.QueryRowContext(ctxTimeout(t, time.Minute), "SELECT VERSION()").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// openMy opens a go-sql-driver pool to the sidecar's MySQL listener with no password.
func openMy(t *testing.T, s *sidecar, tune func(*mysql.Config)) *sql.DB {
	t.Helper()
	c := mysql.NewConfig()
	c.User, c.Net, c.Addr, c.DBName = "app", "tcp", s.myAddr, "app"
	c.Timeout, c.ReadTimeout, c.WriteTimeout = 10*time.Second, 2*time.Minute, 2*time.Minute
	if tune != nil {
		tune(c)
	}
	conn, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func myExec(t *testing.T, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(ctxTimeout(t, time.Minute), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestMySQLDriverThroughSidecar(t *testing.T) {
	w := startMyWorld(t, "")
	s := startSidecar(t, w.config(""), w.env)
	ctx := ctxTimeout(t, 5*time.Minute)
	db := openMy(t, s, func(c *mysql.Config) { c.MultiStatements = true })

	t.Run("query", func(t *testing.T) {
		var user, version string
		if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER(), VERSION()").Scan(&user, &version); err != nil {
			t.Fatal(err)
		}
		if want := w.mariaVersion(t); user != "app@%" || version != want {
			t.Fatalf("user %q version %q, want app@%% and %q", user, version, want)
		}
		if w.standin.Stats().LoginsOK < 1 {
			t.Fatal("the stand-in saw no IAM login")
		}
	})
	t.Run("server-side prepared statements", func(t *testing.T) {
		stmt, err := db.PrepareContext(ctx, "SELECT ? + ?, CONCAT(?, 'x')")
		if err != nil {
			t.Fatal(err)
		}
		defer stmt.Close()
		for i := range 50 {
			var n int
			var s string
			if err := stmt.QueryRowContext(ctx, i, 1, "a").Scan(&n, &s); err != nil || n != i+1 || s != "ax" {
				t.Fatalf("%d+1 = %d, %q, %v", i, n, s, err)
			}
		}
	})
	t.Run("multi-statements", func(t *testing.T) {
		rows, err := db.QueryContext(ctx, "SELECT 1; SELECT 2, 3; DO 0; SELECT 'four'")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var sets int
		for {
			for rows.Next() {
			}
			sets++
			if !rows.NextResultSet() {
				break
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if sets < 3 {
			t.Fatalf("%d result sets, want at least 3", sets)
		}
		// The session is still in step afterwards.
		var n int
		if err := db.QueryRowContext(ctx, "SELECT 42").Scan(&n); err != nil || n != 42 {
			t.Fatalf("after multi-statements: %d, %v", n, err)
		}
	})
	t.Run("transactions", func(t *testing.T) {
		myExec(t, db, "CREATE TABLE IF NOT EXISTS tx (n INT) ENGINE=InnoDB")
		myExec(t, db, "DELETE FROM tx")
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		myExec(t, tx, "INSERT INTO tx VALUES (1)")
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		tx, err = db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		myExec(t, tx, "INSERT INTO tx VALUES (2)")
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		var n, sum int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM tx").Scan(&n, &sum); err != nil || n != 1 || sum != 2 {
			t.Fatalf("rows %d sum %d, %v; want 1 row of 2", n, sum, err)
		}
	})
	t.Run("row larger than 16 MiB", func(t *testing.T) {
		big := bytes.Repeat([]byte("0123456789abcdef"), (17<<20)/16+3)
		want := sha256.Sum256(big)
		myExec(t, db, "CREATE TABLE IF NOT EXISTS big (id INT PRIMARY KEY, b LONGBLOB)")
		myExec(t, db, "REPLACE INTO big VALUES (1, ?)", big)
		var got []byte
		// Text protocol (no arguments) and binary protocol (a prepared statement).
		if err := db.QueryRowContext(ctx, "SELECT b FROM big WHERE id = 1").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != want {
			t.Fatalf("text protocol: got %d bytes, want %d equal ones", len(got), len(big))
		}
		if err := db.QueryRowContext(ctx, "SELECT b FROM big WHERE id = ?", 1).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != want {
			t.Fatalf("binary protocol: got %d bytes, want %d equal ones", len(got), len(big))
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT LENGTH(b) FROM big WHERE id = 1").Scan(&n); err != nil || n != len(big) {
			t.Fatalf("stored %d bytes, %v; want %d", n, err, len(big))
		}
	})
	t.Run("LOAD DATA LOCAL INFILE", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "rows.tsv")
		var in bytes.Buffer
		for i := range 20000 {
			fmt.Fprintf(&in, "%d\tname-%d\n", i, i)
		}
		if err := os.WriteFile(file, in.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		mysql.RegisterLocalFile(file)
		defer mysql.DeregisterLocalFile(file)
		myExec(t, db, "CREATE TABLE IF NOT EXISTS loaded (id INT, name VARCHAR(64))")
		myExec(t, db, "DELETE FROM loaded")
		res, err := db.ExecContext(ctx, fmt.Sprintf("LOAD DATA LOCAL INFILE '%s' INTO TABLE loaded", file))
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n != 20000 {
			t.Fatalf("loaded %d rows, want 20000", n)
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(DISTINCT name) FROM loaded").Scan(&n); err != nil || n != 20000 {
			t.Fatalf("distinct names %d, %v", n, err)
		}
	})
	t.Run("KILL QUERY from another connection", func(t *testing.T) {
		victim, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer victim.Close()
		var id int64
		if err := victim.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			t.Fatal(err)
		}
		type result struct {
			v   int
			err error
			d   time.Duration
		}
		done := make(chan result, 1)
		go func() {
			start := time.Now()
			var v int
			err := victim.QueryRowContext(ctx, "SELECT SLEEP(60)").Scan(&v)
			done <- result{v, err, time.Since(start)}
		}()
		killer := openMy(t, s, nil)
		waitFor(t, 20*time.Second, "the SLEEP to run", func() error {
			var n int
			if err := killer.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND INFO LIKE 'SELECT SLEEP%'", id).Scan(&n); err != nil {
				return err
			}
			if n != 1 {
				return errors.New("not running yet")
			}
			return nil
		})
		myExec(t, killer, fmt.Sprintf("KILL QUERY %d", id))
		select {
		case r := <-done:
			var me *mysql.MySQLError
			interrupted := r.err == nil && r.v == 1 || errors.As(r.err, &me) && me.Number == 1317
			if !interrupted || r.d > 30*time.Second {
				t.Fatalf("SLEEP returned %d, %v after %v; want it interrupted", r.v, r.err, r.d)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the killed query did not return")
		}
		// The victim's session survives a KILL QUERY.
		var n int
		if err := victim.QueryRowContext(ctx, "SELECT 7").Scan(&n); err != nil || n != 7 {
			t.Fatalf("victim after KILL QUERY: %d, %v", n, err)
		}
	})
	// Every session left open is idle now, whatever it ran (prepared statements, multi-results,
	// 16 MiB rows, LOCAL INFILE, a killed query): the drain must close them all at once
	// rather than cut them at max_delay.
	db.SetMaxIdleConns(8)
	conns := make([]*sql.Conn, 0, 3)
	for range 3 {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	myExec(t, conns[0], "SELECT 1; SELECT 2")
	stmt, err := conns[1].PrepareContext(ctx, "SELECT ?")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stmt.ExecContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	myExec(t, conns[2], "BEGIN")
	myExec(t, conns[2], "COMMIT")
	start := time.Now()
	s.signal(syscall.SIGTERM)
	if code := s.wait(15 * time.Second); code != 0 || time.Since(start) > 5*time.Second {
		t.Fatalf("exit code %d after %v; want 0 at once (idle sessions closed, none cut)", code, time.Since(start))
	}
	// Each was told why, as the answer to its next command (a pooled connection's liveness
	// check would instead just drop it): ERR 1053 rather than "invalid connection".
	for i, c := range conns {
		_, err := c.ExecContext(ctx, "SELECT 1")
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1053 || !strings.Contains(me.Message, "sidecar is shutting down") {
			t.Errorf("session %d after the drain: %v; want ERR 1053 from the sidecar", i, err)
		}
	}
}

func mysqlCLI(t *testing.T) string {
	for _, name := range []string{"mysql", "mariadb"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the mysql client is not installed (apt-get install mariadb-client)")
	return ""
}

func TestMySQLCLIThroughSidecar(t *testing.T) {
	cli := mysqlCLI(t)
	w := startMyWorld(t, "")
	s := startSidecar(t, w.config(""), w.env)
	host, port, _ := net.SplitHostPort(s.myAddr)
	cmd := exec.CommandContext(ctxTimeout(t, time.Minute), cli, "--no-defaults", "--skip-ssl", "-h", host, "-P", port, "-u", "app", "app",
		"--batch", "--skip-column-names", "-e", "SELECT CURRENT_USER(); SELECT 6*7; SHOW TABLES LIKE 'nothing'")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cli, err, out)
	}
	if got := strings.Fields(string(out)); len(got) != 2 || got[0] != "app@%" || got[1] != "42" {
		t.Fatalf("output %q, want app@%% and 42", out)
	}
}

func TestSysbenchThroughSidecar(t *testing.T) {
	if testing.Short() {
		t.Skip("sysbench runs for 10 s")
	}
	bin, err := exec.LookPath("sysbench")
	if err != nil {
		t.Fatal("sysbench is not installed (apt-get install sysbench)")
	}
	w := startMyWorld(t, "")
	s := startSidecar(t, w.config(""), w.env)
	host, port, _ := net.SplitHostPort(s.myAddr)
	common := []string{"oltp_read_write", "--db-driver=mysql", "--mysql-host=" + host, "--mysql-port=" + port,
		"--mysql-user=app", "--mysql-password=", "--mysql-db=app", "--tables=8", "--table-size=10000"}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctxTimeout(t, 3*time.Minute), bin, append(common, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("sysbench %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("cleanup")
	run("prepare")
	defer run("cleanup")
	out := run("--threads=8", "--time=10", "--report-interval=0", "run")
	// Any error sysbench does not ignore ends the run (err above). It ignores, and retries,
	// InnoDB's deadlocks and lock wait timeouts (--mysql-ignore-errors' default 1213,1020,
	// 1205): 8 threads updating 8 small tables meet one now and then with or without a proxy
	// (one in ~2,000 transactions seen), so a few are allowed; a relay that broke sessions
	// would show as reconnects or a failed run.
	count := func(re string) int {
		m := regexp.MustCompile(re).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no %q in sysbench's output:\n%s", re, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	txs, ignored, reconnects := count(`transactions:\s+(\d+)`), count(`ignored errors:\s+(\d+)`), count(`reconnects:\s+(\d+)`)
	if txs == 0 || reconnects != 0 || ignored > txs/100 {
		t.Fatalf("want transactions, no reconnects and ignored errors (deadlocks) under 1%%:\n%s", out)
	}
	t.Logf("sysbench: %d transactions in 10 s, %d ignored errors, %d reconnects\n%s", txs, ignored, reconnects, out)
}

// rawMy connects to the MySQL listener and reads the greeting.
func rawMy(t *testing.T, s *sidecar) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.myAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, p := readMyPacket(t, c); len(p) == 0 || p[0] != 10 {
		t.Fatalf("greeting %q, want protocol 10", p)
	}
	return c
}

func readMyPacket(t *testing.T, c net.Conn) (byte, []byte) {
	t.Helper()
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("read packet: %v", err)
	}
	p := make([]byte, int(hdr[0])|int(hdr[1])<<8|int(hdr[2])<<16)
	if _, err := io.ReadFull(c, p); err != nil {
		t.Fatalf("read packet: %v", err)
	}
	return hdr[3], p
}

// readMyErr reads an ERR packet and then expects the sidecar to close the connection.
func readMyErr(t *testing.T, c net.Conn) (code uint16, state, msg string) {
	t.Helper()
	_, p := readMyPacket(t, c)
	if len(p) < 9 || p[0] != 0xff || p[3] != '#' {
		t.Fatalf("want an ERR packet, got %q", p)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("the connection stayed open after the ERR: %d, %v", n, err)
	}
	return binary.LittleEndian.Uint16(p[1:3]), string(p[4:9]), string(p[9:])
}

func TestMySQLBadInputFromApp(t *testing.T) {
	w := startMyWorld(t, "")
	s := startSidecar(t, w.config(""), w.env)
	ctx := ctxTimeout(t, 2*time.Minute)
	// A session that must not be harmed by the others' bad input.
	good := openMy(t, s, nil)
	good.SetMaxOpenConns(1)
	goodConn, err := good.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer goodConn.Close()
	myExec(t, goodConn, "SET @mark = 'still here'")

	hdr := func(n int, seq byte) []byte { return []byte{byte(n), byte(n >> 8), byte(n >> 16), seq} }
	cases := []struct {
		name, reason, wantMsg string
		send                  []byte
	}{
		{name: "garbage", reason: "bad_packet", wantMsg: "Bad handshake", send: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{name: "truncated handshake response", reason: "bad_packet", wantMsg: "Bad handshake",
			send: append(hdr(12, 1), 0x0d, 0xa2, 0x0a, 0x00, 0, 0, 0, 1, 0x21, 0, 0, 0)},
		{name: "TLS requested", reason: "tls_requested", wantMsg: "TLS is not offered",
			send: append(hdr(32, 1), append([]byte{0x00, 0xaa, 0x0a, 0x00, 0, 0, 0, 1, 0x21}, make([]byte, 23)...)...)},
		{name: "never answers", reason: "timeout", wantMsg: "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.metric("rdsvalet_mysql_app_handshake_errors_total", `reason="`+tc.reason+`"`)
			c := rawMy(t, s)
			start := time.Now()
			if tc.send != nil {
				if _, err := c.Write(tc.send); err != nil {
					t.Fatal(err)
				}
			}
			code, state, msg := readMyErr(t, c)
			if code != 1043 || state != "08S01" || !strings.Contains(msg, tc.wantMsg) {
				t.Fatalf("ERR %d (%s) %q, want 1043 (08S01) containing %q", code, state, msg, tc.wantMsg)
			}
			if tc.send == nil && time.Since(start) > 5*time.Second {
				t.Fatalf("closed after %v, want about the 2 s handshake_timeout", time.Since(start))
			}
			waitFor(t, 5*time.Second, "the metric", func() error {
				if got := s.metric("rdsvalet_mysql_app_handshake_errors_total", `reason="`+tc.reason+`"`); got != before+1 {
					return fmt.Errorf("metric %v, want %v", got, before+1)
				}
				return nil
			})
		})
	}
	waitFor(t, 5*time.Second, "log lines", func() error {
		if n := strings.Count(s.logs.String(), "connection failed before the session started"); n < len(cases) {
			return fmt.Errorf("%d log lines, want %d", n, len(cases))
		}
		return nil
	})
	var mark string
	if err := goodConn.QueryRowContext(ctx, "SELECT @mark").Scan(&mark); err != nil || mark != "still here" {
		t.Fatalf("the good session: %q, %v", mark, err)
	}
}

func TestMySQLUnsupportedUpstreamPlugin(t *testing.T) {
	w := startMyWorld(t, "client_ed25519")
	s := startSidecar(t, w.config(""), w.env)
	err := openMy(t, s, nil).PingContext(ctxTimeout(t, time.Minute))
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1251 || !strings.Contains(me.Message, "client_ed25519") {
		t.Fatalf("error %v, want 1251 naming client_ed25519", err)
	}
	// The sidecar counts the connection after it has written the app its error.
	waitFor(t, 10*time.Second, "the upstream_refused connection counted", func() error {
		if got := s.metric("rdsvalet_proxy_connections_total", `listener="mysql"`, `result="upstream_refused"`); got < 1 {
			return fmt.Errorf("upstream_refused connections %v, want >= 1", got)
		}
		return nil
	})
	if !strings.Contains(s.logs.String(), "client_ed25519") {
		t.Fatal("no log line names the plugin")
	}
}

func TestMySQLUpstreamRefusalsReachTheApp(t *testing.T) {
	w := startMyWorld(t, "")
	try := func(t *testing.T, cfg string, wantCode uint16, wantMsg string) {
		t.Helper()
		s := startSidecar(t, cfg, w.env)
		err := openMy(t, s, nil).PingContext(ctxTimeout(t, time.Minute))
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != wantCode || !strings.Contains(me.Message, wantMsg) {
			t.Fatalf("want ERR %d containing %q, got %v", wantCode, wantMsg, err)
		}
	}
	t.Run("token signed for the wrong host", func(t *testing.T) {
		before := w.standin.Stats().LoginsFailed["token_wrong_host"]
		cfg := strings.Replace(w.config(""), fmt.Sprintf("token_host: %q", w.MySQLTokenHost), `token_host: "elsewhere.rds.test:3306"`, 1)
		try(t, cfg, 1045, "Access denied for user 'app'")
		if got := w.standin.Stats().LoginsFailed["token_wrong_host"]; got != before+1 {
			t.Fatal("the stand-in did not refuse the token")
		}
	})
	t.Run("wrong TLS server name", func(t *testing.T) {
		cfg := strings.Replace(w.config(""), fmt.Sprintf("tls_server_name: %q", w.MySQLTLSServerName), `tls_server_name: "impostor.example.com"`, 1)
		try(t, cfg, 2003, "certificate")
	})
	t.Run("unreachable", func(t *testing.T) {
		dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		cfg := strings.Replace(w.config(""), fmt.Sprintf("address: %q", w.standin.Addr()), fmt.Sprintf("address: %q", dead), 1)
		try(t, cfg, 2003, "connection refused")
	})
	t.Run("upstream without TLS", func(t *testing.T) {
		// MariaDB directly offers TLS; a plain listener that only greets without CLIENT_SSL
		// is what a misrouted path looks like.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		defer wg.Wait()
		defer ln.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				// protocol 10, version, id, scramble, caps without CLIENT_SSL
				g := append([]byte{10}, "5.7.0\x00\x01\x00\x00\x00abcdefgh\x00"...)
				g = append(g, 0x00, 0x82, 0x21, 0x02, 0x00, 0x08, 0x00, 0)
				g = append(g, make([]byte, 10)...)
				g = append(g, "ijklmnopqrst\x00mysql_native_password\x00"...)
				_, _ = c.Write(append([]byte{byte(len(g)), 0, 0, 0}, g...))
				_, _ = io.Copy(io.Discard, c)
				_ = c.Close()
			}
		}()
		cfg := strings.Replace(w.config(""), fmt.Sprintf("address: %q", w.standin.Addr()), fmt.Sprintf("address: %q", ln.Addr().String()), 1)
		try(t, cfg, 2003, "does not offer TLS")
	})
	t.Run("no AWS credentials", func(t *testing.T) {
		// The world's environment without its web identity: no source in the chain is left.
		var env []string
		for _, kv := range w.env {
			if strings.HasPrefix(kv, "AWS_ROLE_ARN=") || strings.HasPrefix(kv, "AWS_WEB_IDENTITY_TOKEN_FILE=") {
				kv = kv[:strings.IndexByte(kv, '=')+1]
			}
			env = append(env, kv)
		}
		s := startSidecar(t, w.config(""), env)
		err := openMy(t, s, nil).PingContext(ctxTimeout(t, time.Minute))
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1045 || !strings.Contains(me.Message, "cannot get an IAM auth token") {
			t.Fatalf("want 1045 naming the IAM token, got %v", err)
		}
	})
	t.Run("a failing first path after the app was greeted", func(t *testing.T) {
		// Path one greets (so the app is greeted from it) but its certificate does not match;
		// path two is good: the app must not notice.
		cfg := w.config("") + fmt.Sprintf(`      - name: good
        address: %q
        tls_server_name: %q
        token_host: %q
`, w.standin.Addr(), w.MySQLTLSServerName, w.MySQLTokenHost)
		cfg = strings.Replace(cfg, fmt.Sprintf("tls_server_name: %q", w.MySQLTLSServerName), `tls_server_name: "impostor.example.com"`, 1)
		s := startSidecar(t, cfg, w.env)
		db := openMy(t, s, nil)
		var user string
		if err := db.QueryRowContext(ctxTimeout(t, time.Minute), "SELECT CURRENT_USER()").Scan(&user); err != nil || user != "app@%" {
			t.Fatalf("through the second path: %q, %v", user, err)
		}
		if got := s.metric("rdsvalet_health_passive_failures_total", `path="standin"`); got < 1 {
			t.Fatalf("failures on the first path %v, want >= 1", got)
		}
	})
	t.Run("too many connections", func(t *testing.T) {
		s := startSidecar(t, w.config("    max_connections: 1"), w.env)
		db := openMy(t, s, nil)
		held, err := db.Conn(ctxTimeout(t, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		err = openMy(t, s, nil).PingContext(ctxTimeout(t, time.Minute))
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1040 || string(me.SQLState[:]) != "08004" {
			t.Fatalf("want 1040 (08004), got %v", err)
		}
	})
}

func TestMySQLPasswordModeAndLocalPassword(t *testing.T) {
	w := sharedMyWorld(t)
	// A user of its own with a password (the world's user has none, for the stand-in), under
	// a name no earlier run in this MariaDB has taken.
	user := fmt.Sprintf("pw%d", time.Now().UnixNano()%1e9)
	password := "db-secret-" + user
	if err := w.MariaDB.CreateUser(ctxTimeout(t, time.Minute), user, password); err != nil {
		t.Fatal(err)
	}
	if err := w.MariaDB.CreateDatabase(ctxTimeout(t, time.Minute), user, user); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pwFile, localFile := filepath.Join(dir, "db-password"), filepath.Join(dir, "local-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(localFile, []byte("local-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Straight to MariaDB over verified TLS with mysql_native_password: the client side
	// against a real server.
	cfg := fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
shutdown: {max_delay: 10s}
listeners:
  - name: mysql
    engine: mysql
    listen: "{{MYSQL}}"
    handshake_timeout: 2s
    local_password_file: %q
    auth: {mode: password, password_file: %q}
    tls: {mode: verify-full, ca_file: %q}
    paths:
      - {name: direct, address: %q, tls_server_name: "127.0.0.1", token_host: %q}
`, localFile, pwFile, w.CAFile, w.MariaDB.Addr(), w.MariaDB.Addr())
	s := startSidecar(t, cfg, nil)
	ctx := ctxTimeout(t, time.Minute)

	asUser := func(pw string) func(*mysql.Config) {
		return func(c *mysql.Config) { c.User, c.DBName, c.Passwd = user, user, pw }
	}
	ok := openMy(t, s, asUser("local-secret"))
	var name, cipher string
	if err := ok.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil {
		t.Fatal(err)
	}
	if cipher == "" {
		t.Fatal("the upstream session is not encrypted")
	}
	var current string
	if err := ok.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&current); err != nil || current != user+"@%" {
		t.Fatalf("current user %q, %v; want %s@%%", current, err, user)
	}
	err := openMy(t, s, asUser("wrong")).PingContext(ctx)
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1045 || !strings.Contains(me.Message, "local password") {
		t.Fatalf("wrong local password: %v, want 1045", err)
	}
	waitFor(t, 5*time.Second, "a log line about the wrong local password", func() error {
		if !strings.Contains(s.logs.String(), "wrong local password") {
			return errors.New("not logged")
		}
		return nil
	})
}

func TestMySQLSIGTERMWaitsForTransactions(t *testing.T) {
	w := startMyWorld(t, "")
	s := startSidecar(t, w.config(""), w.env)
	ctx := ctxTimeout(t, 2*time.Minute)
	db := openMy(t, s, nil)
	idle, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	myExec(t, idle, "DO 1")
	busy, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	myExec(t, busy, "CREATE TABLE IF NOT EXISTS drain (n INT) ENGINE=InnoDB")
	myExec(t, busy, "BEGIN")
	myExec(t, busy, "INSERT INTO drain VALUES (1)")

	s.signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, "the idle session to be closed", func() error {
		if s.metric("rdsvalet_proxy_sessions_closed_total", `reason="drain"`) < 1 {
			return errors.New("no session closed by the drain yet")
		}
		return nil
	})
	// The transaction goes on until it commits.
	myExec(t, busy, "INSERT INTO drain VALUES (2)")
	myExec(t, busy, "COMMIT")
	if code := s.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0 (every session ended cleanly)\n%s", code, s.logs.String())
	}
}
