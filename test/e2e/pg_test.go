package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// iamConfig is a sidecar in front of the stand-in, logging in with IAM tokens.
func iamConfig(w *testWorld, extra string) string {
	return fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
aws: {region: %s, credentials_refresh_window: 2s}
shutdown: {max_delay: 10s}
listeners:
  - name: pg
    engine: postgres
    listen: "{{PG}}"
    handshake_timeout: 2s
    connect_timeout: 5s
%s
    tls: {mode: verify-full, ca_file: %q}
    paths:
      - name: standin
        address: %q
        tls_server_name: %q
        token_host: %q
`, w.Region, extra, w.CAFile, w.StandinAddr, w.ServerName, w.TokenHost)
}

func connect(t *testing.T, s *sidecar, user string) *pgx.Conn {
	t.Helper()
	host, port, _ := net.SplitHostPort(s.pgAddr)
	c, err := pgx.Connect(ctxTimeout(t, 15*time.Second), fmt.Sprintf("host=%s port=%s user=%s dbname=app sslmode=disable", host, port, user))
	if err != nil {
		t.Fatalf("connect through the sidecar: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func TestPgxThroughSidecar(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)
	ctx := ctxTimeout(t, 2*time.Minute)
	c := connect(t, s, "app")

	t.Run("query", func(t *testing.T) {
		var user, ssl string
		if err := c.QueryRow(ctx, "SELECT current_user, (SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid())").Scan(&user, &ssl); err != nil {
			t.Fatal(err)
		}
		if user != "app" {
			t.Errorf("current_user = %q", user)
		}
	})
	t.Run("prepared statements", func(t *testing.T) {
		if _, err := c.Prepare(ctx, "add", "SELECT $1::int + $2::int"); err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			var n int
			if err := c.QueryRow(ctx, "add", i, 1).Scan(&n); err != nil || n != i+1 {
				t.Fatalf("add(%d,1) = %d, %v", i, n, err)
			}
		}
	})
	t.Run("transactions", func(t *testing.T) {
		mustExec(t, c, "CREATE TEMP TABLE tx (n int)")
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO tx VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM tx").Scan(&n); err != nil || n != 0 {
			t.Fatalf("rolled back rows = %d, %v", n, err)
		}
	})
	t.Run("copy in and out", func(t *testing.T) {
		mustExec(t, c, "CREATE TEMP TABLE cp (id int, name text)")
		var in bytes.Buffer
		for i := range 20000 {
			fmt.Fprintf(&in, "%d\tname-%d\n", i, i)
		}
		tag, err := c.PgConn().CopyFrom(ctx, bytes.NewReader(in.Bytes()), "COPY cp FROM STDIN")
		if err != nil || tag.RowsAffected() != 20000 {
			t.Fatalf("COPY FROM: %v, %v", tag, err)
		}
		var out bytes.Buffer
		if _, err := c.PgConn().CopyTo(ctx, &out, "COPY (SELECT * FROM cp ORDER BY id) TO STDOUT"); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), in.Bytes()) {
			t.Fatalf("COPY TO returned %d bytes, want the %d copied in", out.Len(), in.Len())
		}
	})
	t.Run("listen notify", func(t *testing.T) {
		other := connect(t, s, "app")
		mustExec(t, c, "LISTEN events")
		mustExec(t, other, "NOTIFY events, 'hello'")
		nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := c.WaitForNotification(nctx)
		if err != nil || n.Channel != "events" || n.Payload != "hello" {
			t.Fatalf("notification %+v, %v", n, err)
		}
	})
	t.Run("100 MB result", func(t *testing.T) {
		rows, err := c.Query(ctx, "SELECT repeat('x', 1000) FROM generate_series(1, 100000)")
		if err != nil {
			t.Fatal(err)
		}
		var total, count int
		for rows.Next() {
			total += len(rows.RawValues()[0])
			count++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if count != 100000 || total != 100_000_000 {
			t.Fatalf("got %d rows, %d bytes", count, total)
		}
	})
	t.Run("protocol 3.2 client with an option keeps 3.2", func(t *testing.T) {
		// What libpq 18 sends with max_protocol_version=latest, plus a protocol option: 3.2 is
		// spoken (pg_pid_test.go checks its long cancel key), the option is refused.
		c := rawConn(t, s)
		startup := startupPacket("user", "app", "database", "app", "_pq_.test_option", "on")
		binary.BigEndian.PutUint32(startup[4:], 3<<16|2)
		if _, err := c.Write(startup); err != nil {
			t.Fatal(err)
		}
		p := &pgRaw{c: c, r: bufio.NewReader(c)}
		typ, body, err := p.read()
		if err != nil || typ != 'v' {
			t.Fatalf("first message %q %q (%v), want NegotiateProtocolVersion", typ, body, err)
		}
		if want := "\x00\x03\x00\x02\x00\x00\x00\x01_pq_.test_option\x00"; string(body) != want {
			t.Fatalf("NegotiateProtocolVersion %q, want %q (version 3.2, the option refused)", body, want)
		}
		if typ, body, err := p.read(); err != nil || typ != 'R' || binary.BigEndian.Uint32(body) != 0 {
			t.Fatalf("got %q %q (%v), want AuthenticationOk", typ, body, err)
		}
		if code, err := p.untilReady(); err != nil || code != "" {
			t.Fatalf("login: SQLSTATE %q, %v", code, err)
		}
		if got, err := p.query("SELECT 40 + 2 AS n"); err != nil || got != "42" {
			t.Fatalf("query: %q, %v; want 42", got, err)
		}
	})
	if v := s.metric("rdsvalet_proxy_connections_total", `listener="pg"`, `result="ok"`); v < 2 {
		t.Errorf("connections_total ok = %v, want >= 2", v)
	}
	if v := s.metric("rdsvalet_proxy_handshake_duration_seconds_count", `listener="pg"`, `result="ok"`); v < 2 {
		t.Errorf("handshake histogram count = %v", v)
	}
	if w.StandinLoginsOK() < 2 {
		t.Errorf("the stand-in saw %d IAM logins, want >= 2", w.StandinLoginsOK())
	}
}

// waitActive waits until the database runs query, as seen on a direct connection.
func waitActive(t *testing.T, w *testWorld, query string) {
	t.Helper()
	waitFor(t, 10*time.Second, "query running: "+query, func() error {
		n, err := w.ActiveQueries(query)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("not running yet")
		}
		return nil
	})
}

func mustExec(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(ctxTimeout(t, 30*time.Second), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestCancelLongQuery(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)
	c := connect(t, s, "app")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "SELECT pg_sleep(60)")
		errc <- err
	}()
	// Cancel once the query runs on the server, as an app would.
	waitActive(t, w, "SELECT pg_sleep(60)")
	cancelAt := time.Now()
	cancel()
	var err error
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		t.Fatal("query not cancelled within 30 s")
	}
	var pgErr *pgconn.PgError
	// pgx cancels by a CancelRequest on a new connection and reports the server's 57014.
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("want query_canceled (57014) or context.Canceled, got %v", err)
		}
	}
	if d := time.Since(cancelAt); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	if d := time.Since(started); d > 50*time.Second {
		t.Errorf("query ran for %v: the cancel did not reach the server", d)
	}
	waitFor(t, 10*time.Second, "cancel forwarded", func() error {
		if v := s.metric("rdsvalet_pg_cancel_requests_total", `result="forwarded"`); v < 1 {
			return fmt.Errorf("forwarded = %v", v)
		}
		return nil
	})
	if w.StandinCancels() < 1 {
		t.Errorf("the stand-in forwarded %d cancels to the database", w.StandinCancels())
	}
}

func TestPsqlThroughSidecar(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)
	host, port, _ := net.SplitHostPort(s.pgAddr)
	cmd := exec.Command("psql", fmt.Sprintf("host=%s port=%s user=app dbname=app", host, port),
		"-X", "-v", "ON_ERROR_STOP=1", "-At",
		"-c", "CREATE TEMP TABLE p (n int)",
		"-c", "INSERT INTO p SELECT generate_series(1, 1000)",
		"-c", "SELECT sum(n) FROM p",
		"-c", `\copy p TO STDOUT`)
	cmd.Env = append(cleanEnv(), "PGCONNECT_TIMEOUT=10", "PGPASSWORD=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 3 || !contains(lines, "500500") || lines[len(lines)-1] != "1000" {
		t.Fatalf("unexpected psql output:\n%s", out)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestPgbenchThroughSidecar(t *testing.T) {
	if testing.Short() {
		t.Skip("pgbench runs for 10 s; skipped with -short")
	}
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)
	host, port, _ := net.SplitHostPort(s.pgAddr)
	run := func(args ...string) string {
		cmd := exec.Command("pgbench", append([]string{"-h", host, "-p", port, "-U", "app"}, args...)...)
		cmd.Env = append(cleanEnv(), "PGDATABASE=app")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("-i", "-s", "1", "-q")
	out := run("-S", "-T", "10", "-c", "8", "-j", "2", "-n")
	m := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(out)
	if m == nil || m[1] == "0" {
		t.Fatalf("no transactions processed:\n%s", out)
	}
	if f := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(out); f != nil && f[1] != "0" {
		t.Fatalf("pgbench reported failures:\n%s", out)
	}
	t.Logf("pgbench -S -c 8 through the sidecar: %s transactions", m[1])
}

// rawStartup opens a raw TCP connection to the sidecar.
func rawConn(t *testing.T, s *sidecar) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.pgAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	return c
}

// readErrorResponse reads what the sidecar answers and returns the SQLSTATE and message of
// an ErrorResponse, or an error if the connection closed without one.
func readErrorResponse(c net.Conn) (code, msg string, err error) {
	b, err := io.ReadAll(c)
	if len(b) == 0 {
		return "", "", fmt.Errorf("closed without an ErrorResponse: %v", err)
	}
	if b[0] != 'E' || len(b) < 5 {
		return "", "", fmt.Errorf("not an ErrorResponse: %q", b)
	}
	n := int(binary.BigEndian.Uint32(b[1:5]))
	if n+1 > len(b) {
		return "", "", fmt.Errorf("truncated ErrorResponse")
	}
	for _, f := range bytes.Split(b[5:n+1], []byte{0}) {
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case 'C':
			code = string(f[1:])
		case 'M':
			msg = string(f[1:])
		}
	}
	return code, msg, nil
}

// startupPacket encodes a protocol 3.0 StartupMessage with key, value pairs.
func startupPacket(params ...string) []byte {
	body := binary.BigEndian.AppendUint32(nil, 196608)
	for _, p := range params {
		body = append(append(body, p...), 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

func TestBadInputFromApp(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)

	// A session in flight that must not be harmed by anything below.
	victim := connect(t, s, "app")
	mustExec(t, victim, "CREATE TEMP TABLE survivor (n int)")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var victimErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := victim.Exec(context.Background(), "INSERT INTO survivor VALUES ($1)", i); err != nil {
				victimErr = err
				return
			}
		}
	}()

	startup := startupPacket
	cases := []struct {
		name     string
		send     []byte
		wantCode string
		wantMsg  string
		close    bool // the sidecar closes without an ErrorResponse
	}{
		{name: "garbage", send: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), wantCode: "08P01", wantMsg: "invalid startup packet"},
		{name: "protocol 2.0", send: []byte{0, 0, 0, 8, 0, 2, 0, 0}, wantCode: "0A000", wantMsg: "unsupported frontend protocol 2.0"},
		{name: "oversized startup", send: binary.BigEndian.AppendUint32(nil, 1<<30), wantCode: "08P01", wantMsg: "length"},
		{name: "truncated startup", send: startup("user", "app")[:10], wantCode: "08P01", wantMsg: "timeout"},
		{name: "no user", send: startup("database", "app"), wantCode: "28000", wantMsg: "no PostgreSQL user name"},
		{name: "replication", send: startup("user", "app", "replication", "database"), wantCode: "0A000", wantMsg: "replication"},
		{name: "never sends startup", send: nil, wantCode: "08P01", wantMsg: "timeout waiting for the startup packet"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rawConn(t, s)
			start := time.Now()
			if tc.send != nil {
				if _, err := c.Write(tc.send); err != nil {
					t.Fatal(err)
				}
			}
			code, msg, err := readErrorResponse(c)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode || !strings.Contains(msg, tc.wantMsg) {
				t.Fatalf("got %s %q, want %s containing %q", code, msg, tc.wantCode, tc.wantMsg)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("answered after %v", d)
			}
		})
	}
	close(stop)
	wg.Wait()
	if victimErr != nil {
		t.Fatalf("the session in flight was harmed: %v", victimErr)
	}
	var n int
	if err := victim.QueryRow(context.Background(), "SELECT count(*) FROM survivor").Scan(&n); err != nil || n == 0 {
		t.Fatalf("victim session: %d rows, %v", n, err)
	}
	if v := s.metric("rdsvalet_proxy_connections_total", `result="client_error"`); v < float64(len(cases)) {
		t.Errorf("client_error connections = %v, want >= %d", v, len(cases))
	}
	logs := s.logs.String()
	if strings.Count(logs, "connection failed before the session started") < len(cases) {
		t.Errorf("want a log line per bad connection:\n%s", logs)
	}
}

func TestMaxConnections(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, "    max_connections: 2"), w.SidecarEnv)
	a := connect(t, s, "app")
	b := connect(t, s, "app")
	host, port, _ := net.SplitHostPort(s.pgAddr)
	_, err := pgx.Connect(ctxTimeout(t, 10*time.Second), fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable", host, port))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		t.Fatalf("third connection: want 53300 too_many_connections, got %v", err)
	}
	for _, c := range []*pgx.Conn{a, b} {
		mustExec(t, c, "SELECT 1")
	}
	if v := s.metric("rdsvalet_proxy_connections_total", `result="refused_limit"`); v != 1 {
		t.Errorf("refused_limit = %v, want 1", v)
	}
}

func TestUpstreamRefusalsReachTheApp(t *testing.T) {
	w := startWorld(t)
	host, port := "", ""
	try := func(t *testing.T, cfg string, env []string, wantCode, wantMsg string) {
		t.Helper()
		s := startSidecar(t, cfg, env)
		host, port, _ = net.SplitHostPort(s.pgAddr)
		_, err := pgx.Connect(ctxTimeout(t, 20*time.Second), fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable", host, port))
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != wantCode || !strings.Contains(pgErr.Message+pgErr.Detail, wantMsg) {
			t.Fatalf("want %s containing %q, got %v", wantCode, wantMsg, err)
		}
	}
	t.Run("token signed for the wrong host", func(t *testing.T) {
		cfg := strings.Replace(iamConfig(w, ""), fmt.Sprintf("token_host: %q", w.TokenHost), `token_host: "elsewhere.example.com:5432"`, 1)
		try(t, cfg, w.SidecarEnv, "28P01", "PAM authentication failed")
	})
	t.Run("wrong TLS server name", func(t *testing.T) {
		cfg := strings.Replace(iamConfig(w, ""), fmt.Sprintf("tls_server_name: %q", w.ServerName), `tls_server_name: "impostor.example.com"`, 1)
		try(t, cfg, w.SidecarEnv, "08001", "certificate")
	})
	t.Run("unknown CA", func(t *testing.T) {
		other := t.TempDir() + "/other-ca.pem"
		if err := os.WriteFile(other, otherCAPEM(t), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := strings.Replace(iamConfig(w, ""), fmt.Sprintf("ca_file: %q", w.CAFile), fmt.Sprintf("ca_file: %q", other), 1)
		try(t, cfg, w.SidecarEnv, "08001", "certificate")
	})
	t.Run("unreachable", func(t *testing.T) {
		dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		cfg := strings.Replace(iamConfig(w, ""), fmt.Sprintf("address: %q", w.StandinAddr), fmt.Sprintf("address: %q", dead), 1)
		try(t, cfg, w.SidecarEnv, "08001", "connection refused")
	})
	t.Run("no credentials", func(t *testing.T) {
		var env []string
		for _, kv := range w.SidecarEnv {
			if !strings.HasPrefix(kv, "AWS_WEB_IDENTITY_TOKEN_FILE=") {
				env = append(env, kv)
			}
		}
		try(t, iamConfig(w, ""), append(env, "AWS_WEB_IDENTITY_TOKEN_FILE="+t.TempDir()+"/missing"), "28000", "IAM auth token")
	})
}

func TestSIGTERMDrainsRunningQuery(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)
	c := connect(t, s, "app")
	res := make(chan error, 1)
	go func() {
		var one int
		res <- c.QueryRow(context.Background(), "SELECT 1 FROM pg_sleep(3)").Scan(&one)
	}()
	waitActive(t, w, "SELECT 1 FROM pg_sleep(3)")
	s.signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, "listener closed", func() error {
		c, err := net.DialTimeout("tcp", s.pgAddr, time.Second)
		if err == nil {
			c.Close()
			return errors.New("still accepting")
		}
		return nil
	})
	if err := <-res; err != nil {
		t.Fatalf("the running query did not finish: %v", err)
	}
	// The session was closed once idle, with the reason in the app's protocol, as a server
	// that shuts down says it: the next query gets it instead of "unexpected EOF".
	_, err := c.Exec(ctxTimeout(t, 10*time.Second), "SELECT 1")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P01" || !strings.Contains(pgErr.Message, "sidecar is shutting down") {
		t.Errorf("query after the drain closed the session: %v; want FATAL 57P01 from the sidecar", err)
	}
	if code := s.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after a clean drain\n%s", code, s.logs.String())
	}
}
