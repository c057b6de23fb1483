package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// socketDir is a fresh directory for sockets, short enough for sun_path.
func socketDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "rv-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// checkSocket fails unless path is a socket with the permission bits mode and group gid.
func checkSocket(t *testing.T, path string, mode os.FileMode, gid int) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("socket file: %v", err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != mode {
		t.Fatalf("%s: mode %v, want a socket with %v", path, st.Mode(), mode)
	}
	if g := int(st.Sys().(*syscall.Stat_t).Gid); gid >= 0 && g != gid {
		t.Fatalf("%s: group %d, want %d", path, g, gid)
	}
}

func checkGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s is still there after shutdown (%v)", path, err)
	}
}

func TestUnixSocketPostgres(t *testing.T) {
	w := startWorld(t)
	dir := socketDir(t)
	gid := os.Getgid()
	cfg := iamConfig(w, "    max_connections: 2") + fmt.Sprintf("unix_sockets: {dir: %q, mode: \"0660\", group: \"%d\"}\n", dir, gid)
	s := startSidecar(t, cfg, w.SidecarEnv)
	_, port, _ := net.SplitHostPort(s.pgAddr)
	file := filepath.Join(dir, ".s.PGSQL."+port)
	checkSocket(t, file, 0o660, gid)

	// pgx with host=/dir, as with a local server.
	c, err := pgx.Connect(ctxTimeout(t, 15*time.Second), fmt.Sprintf("host=%s port=%s user=app dbname=app", dir, port))
	if err != nil {
		t.Fatalf("pgx through the unix socket: %v", err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(ctxTimeout(t, 10*time.Second), "SELECT 6*7").Scan(&n); err != nil || n != 42 {
		t.Fatalf("SELECT 6*7 = %d, %v", n, err)
	}

	// psql with host=/dir.
	cmd := exec.Command("psql", fmt.Sprintf("host=%s port=%s user=app dbname=app", dir, port),
		"-X", "-v", "ON_ERROR_STOP=1", "-At",
		"-c", "CREATE TEMP TABLE p (n int)",
		"-c", "INSERT INTO p SELECT generate_series(1, 1000)",
		"-c", "SELECT sum(n) FROM p")
	cmd.Env = append(cleanEnv(), "PGCONNECT_TIMEOUT=10", "PGPASSWORD=")
	out, err := cmd.CombinedOutput()
	if err != nil || !contains(strings.Fields(string(out)), "500500") {
		t.Fatalf("psql through the unix socket: %v\n%s", err, out)
	}

	// The connection limit counts socket and TCP connections alike: with the pgx session
	// open, one TCP connection fills it and the next socket connection is refused. psql has
	// gone; its session ends on the sidecar's side a moment later.
	waitFor(t, 10*time.Second, "psql's session to end", func() error {
		if v := s.metric("rdsvalet_proxy_connections_active", `listener="pg"`); v != 1 {
			return fmt.Errorf("%v connections active, want pgx's alone", v)
		}
		return nil
	})
	tcp := connect(t, s, "app")
	_, err = pgx.Connect(ctxTimeout(t, 10*time.Second), fmt.Sprintf("host=%s port=%s user=app dbname=app", dir, port))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		t.Fatalf("third connection over the socket: want 53300 too_many_connections, got %v", err)
	}
	mustExec(t, tcp, "SELECT 1")
	if v := s.metric("rdsvalet_proxy_connections_total", `listener="pg"`, `result="ok"`); v != 3 {
		t.Errorf("connections ok = %v, want 3 (pgx and psql over the socket, pgx over TCP)", v)
	}
	if v := s.metric("rdsvalet_proxy_connections_total", `listener="pg"`, `result="refused_limit"`); v != 1 {
		t.Errorf("refused_limit = %v, want 1", v)
	}
	// A socket client has no address of its own: logs name the socket it came through.
	if want := fmt.Sprintf(`"client":%q`, file); !strings.Contains(s.logs.String(), want) {
		t.Errorf("no log line names the socket client as %s", want)
	}
	_ = c.Close(context.Background())
	_ = tcp.Close(context.Background())

	s.signal(syscall.SIGTERM)
	if code := s.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	checkGone(t, file)
}

// TestUnixSocketStaleAndLive: a socket nobody answers on (left by a killed run) is replaced;
// one a live sidecar answers on is not taken over, and the live one keeps serving.
func TestUnixSocketStaleAndLive(t *testing.T) {
	w := startMyWorld(t, "")
	dir := socketDir(t)
	file := filepath.Join(dir, "my.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: file, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	_ = stale.Close()
	if st, err := os.Lstat(file); err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("the stale socket was not left behind: %v", err)
	}

	cfg := w.config(fmt.Sprintf("    unix_socket: %q", file))
	s := startSidecar(t, cfg, w.env)
	checkSocket(t, file, 0o660, -1)

	second := strings.NewReplacer("{{MYSQL}}", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"{{ADMIN}}", fmt.Sprintf("127.0.0.1:%d", freePort(t))).Replace(cfg)
	code, out := runToExitEnv(t, second, w.env)
	if code == 0 || !strings.Contains(out, "another process is listening on it") {
		t.Fatalf("a second sidecar on the same socket: exit %d, want a refusal:\n%s", code, out)
	}
	checkSocket(t, file, 0o660, -1)
	db := openMy(t, s, func(c *mysql.Config) { c.Net, c.Addr = "unix", file })
	var n int
	if err := db.QueryRowContext(ctxTimeout(t, time.Minute), "SELECT 6*7").Scan(&n); err != nil || n != 42 {
		t.Fatalf("the first sidecar after the refused second: SELECT 6*7 = %d, %v", n, err)
	}
}

func TestUnixSocketMySQL(t *testing.T) {
	cli := mysqlCLI(t)
	w := startMyWorld(t, "")
	dir := socketDir(t)
	cfg := w.config("") + fmt.Sprintf("unix_sockets: {dir: %q, mode: \"0600\"}\n", dir)
	s := startSidecar(t, cfg, w.env)
	_, port, _ := net.SplitHostPort(s.myAddr)
	file := filepath.Join(dir, "mysql-"+port+".sock")
	checkSocket(t, file, 0o600, -1)

	// The mysql client with --socket.
	cmd := exec.CommandContext(ctxTimeout(t, time.Minute), cli, "--no-defaults", "--socket", file, "-u", "app", "app",
		"--batch", "--skip-column-names", "-e", "SELECT CURRENT_USER(); SELECT 6*7")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s --socket: %v\n%s", cli, err, out)
	}
	if got := strings.Fields(string(out)); len(got) != 2 || got[0] != "app@%" || got[1] != "42" {
		t.Fatalf("output %q, want app@%% and 42", out)
	}

	// go-sql-driver/mysql with unix(...).
	dsnCfg, err := mysql.ParseDSN(fmt.Sprintf("app@unix(%s)/app?timeout=10s", file))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := mysql.NewConnector(dsnCfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	myExec(t, db, "CREATE TEMPORARY TABLE u (n INT)")
	var n int
	if err := db.QueryRowContext(ctxTimeout(t, time.Minute), "SELECT 6*7").Scan(&n); err != nil || n != 42 {
		t.Fatalf("SELECT 6*7 over unix(...) = %d, %v", n, err)
	}
	if v := s.metric("rdsvalet_proxy_connections_total", `listener="mysql"`, `result="ok"`); v < 2 {
		t.Errorf("connections ok = %v, want the CLI's and the driver's", v)
	}
	_ = db.Close()

	s.signal(syscall.SIGTERM)
	if code := s.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	checkGone(t, file)
}

// TestUnixSocketBadPathRefused: a socket path the sidecar cannot or must not use is refused at
// config load, with the key named.
func TestUnixSocketBadPathRefused(t *testing.T) {
	dir := socketDir(t)
	notSocket := filepath.Join(dir, "data.txt")
	if err := os.WriteFile(notSocket, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := "/" + strings.Repeat("d", 120) + "/my.sock"
	for _, c := range []struct{ name, listener, top, want string }{
		{"not a socket", fmt.Sprintf("unix_socket: %q", notSocket), "", "listeners[0].unix_socket: " + fmt.Sprintf("%q exists and is not a socket", notSocket)},
		{"too long", fmt.Sprintf("unix_socket: %q", long), "", "listeners[0].unix_socket: socket file"},
		{"relative", `unix_socket: "run/my.sock"`, "", "listeners[0].unix_socket: \"run/my.sock\" is not an absolute path"},
		{"bad mode", "", fmt.Sprintf("unix_sockets: {dir: %q, mode: \"rw\"}", dir), "unix_sockets.mode"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := fmt.Sprintf(`
admin: {listen: "127.0.0.1:%d"}
listeners:
  - name: my
    engine: mysql
    listen: "127.0.0.1:%d"
    auth: {mode: password, password_file: /nonexistent}
    %s
    paths: [{address: "db.example.com:3306"}]
%s
`, freePort(t), freePort(t), c.listener, c.top)
			code, out := runToExit(t, cfg)
			if code == 0 || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d, want a refusal naming %q:\n%s", code, c.want, out)
			}
		})
	}
	if b, err := os.ReadFile(notSocket); err != nil || string(b) != "keep me" {
		t.Fatalf("the file that is not a socket was touched: %q, %v", b, err)
	}
}

// runToExitEnv is runToExit with env added to the sidecar's environment.
func runToExitEnv(t *testing.T, cfg string, env []string) (int, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sidecarBin, "--config", file)
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the sidecar kept running with a socket it must refuse:\n%s", out)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}
