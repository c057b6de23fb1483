package e2e

// Security properties of the built binary (docs/security.md names each test here): loopback-only
// listeners, TLS verification warnings, no plaintext fallback toward the database on either
// engine, no secret in any output, /quitquitquit for loopback callers only, and a process that
// needs neither a writable filesystem nor a home directory.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
)

// runToExit runs the sidecar with cfg and returns its exit code and output once it exits by
// itself (a configuration it refuses), failing the test if it is still running after a while.
func runToExit(t *testing.T, cfg string) (int, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sidecarBin, "--config", file)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the sidecar kept running with a configuration it must refuse:\n%s", out)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// staticConfig is a sidecar whose listeners log in with a static password from a file, to
// upstreams that need no AWS: listen is the Postgres listener's address line.
func staticConfig(t *testing.T, listen, extra string) string {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("static-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`
admin: {listen: "{{ADMIN}}"}
listeners:
  - name: pg
    engine: postgres
    listen: %q
%s
    auth: {mode: password, password_file: %q}
    paths: [{name: nowhere, address: "127.0.0.1:1", tls_server_name: db.example.com}]
`, listen, extra, pw)
}

// TestListenersRefuseNonLoopback: the binary refuses to start with a listener beyond loopback
// unless the listener sets allow_non_loopback, and then binds it.
func TestListenersRefuseNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:%d", "[::]:%d", "10.1.2.3:%d", "example.com:%d"} {
		addr := fmt.Sprintf(addr, freePort(t))
		cfg := strings.ReplaceAll(staticConfig(t, addr, ""), "{{ADMIN}}", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		code, out := runToExit(t, cfg)
		if code == 0 || !strings.Contains(out, "is not a loopback address; set allow_non_loopback") {
			t.Errorf("listen %s: exit %d, want a refusal naming allow_non_loopback:\n%s", addr, code, out)
		}
	}

	for _, tc := range []struct{ listen, extra string }{
		{"0.0.0.0:%d", "    allow_non_loopback: true"},
		{"localhost:%d", ""}, // a name is fine when it binds loopback
	} {
		port := freePort(t)
		s := startSidecar(t, staticConfig(t, fmt.Sprintf(tc.listen, port), tc.extra), nil)
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err != nil {
			t.Fatalf("listener %s not bound: %v\n%s", tc.listen, err, s.logs.String())
		}
		_ = c.Close()
	}
}

// TestUpstreamTLSModeWarnings: verify-full is the default and says nothing; verify-ca and
// insecure each log a warning at start and carry one in /paths.
func TestUpstreamTLSModeWarnings(t *testing.T) {
	for _, tc := range []struct {
		mode, want string
	}{
		{"", ""},
		{"verify-full", ""},
		{"verify-ca", "certificate names are NOT checked"},
		{"insecure", "certificates are NOT verified"},
	} {
		t.Run("mode="+tc.mode, func(t *testing.T) {
			extra := ""
			if tc.mode != "" {
				extra = fmt.Sprintf("    tls: {mode: %s}", tc.mode)
			}
			s := startSidecar(t, staticConfig(t, "{{PG}}", extra), nil)
			_, body, err := s.get("/paths")
			if err != nil {
				t.Fatal(err)
			}
			var rep []struct {
				TLSMode string `json:"tls_mode"`
				Warning string `json:"warning"`
			}
			if err := json.Unmarshal([]byte(body), &rep); err != nil || len(rep) != 1 {
				t.Fatalf("/paths: %v\n%s", err, body)
			}
			wantMode := tc.mode
			if wantMode == "" {
				wantMode = "verify-full"
			}
			if rep[0].TLSMode != wantMode {
				t.Errorf("/paths tls_mode %q, want %q", rep[0].TLSMode, wantMode)
			}
			var warned bool
			for _, line := range strings.Split(s.logs.String(), "\n") {
				if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, "tls.mode") {
					warned = true
					if tc.want == "" || !strings.Contains(line, tc.want) || !strings.Contains(line, `"listener":"pg"`) {
						t.Errorf("start log warning %s", line)
					}
				}
			}
			if tc.want == "" {
				if warned || rep[0].Warning != "" {
					t.Errorf("verify-full warned: /paths %q", rep[0].Warning)
				}
				return
			}
			if !warned {
				t.Errorf("no warning logged at start for %s:\n%s", tc.mode, s.logs.String())
			}
			if !strings.Contains(rep[0].Warning, tc.want) {
				t.Errorf("/paths warning %q, want %q", rep[0].Warning, tc.want)
			}
		})
	}
}

// hostileUpstream is a database that will not do TLS properly: it plays script on every
// connection, then records everything the sidecar sends until the sidecar closes.
type hostileUpstream struct {
	ln  net.Listener
	wg  sync.WaitGroup
	mu  sync.Mutex
	got [][]byte
}

type recordingConn struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recordingConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

func startHostile(t *testing.T, script func(c net.Conn) error) *hostileUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileUpstream{ln: ln}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				rc := &recordingConn{Conn: c}
				if script(rc) == nil {
					_, _ = io.Copy(io.Discard, rc)
				}
				h.mu.Lock()
				h.got = append(h.got, rc.buf.Bytes())
				h.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(h.close)
	return h
}

// close stops accepting and waits for every connection to end; received is then final.
func (h *hostileUpstream) close() {
	_ = h.ln.Close()
	h.wg.Wait()
}

func (h *hostileUpstream) received() [][]byte {
	h.close()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got
}

// myGreeting is a MySQL 8 initial handshake with capability flags caps.
func myGreeting(caps uint32) []byte {
	scramble := []byte("abcdefghijklmnopqrst")
	b := append([]byte{10}, "8.0.36\x00"...)
	b = binary.LittleEndian.AppendUint32(b, 7)
	b = append(append(b, scramble[:8]...), 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(caps))
	b = append(b, 45)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, uint16(caps>>16))
	b = append(b, 21)
	b = append(b, make([]byte, 10)...)
	b = append(append(b, scramble[8:]...), 0)
	b = append(b, "mysql_native_password\x00"...)
	return append([]byte{byte(len(b)), byte(len(b) >> 8), byte(len(b) >> 16), 0}, b...)
}

const (
	myCapsNoSSL = 0x1 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x80000 // long password, with db, 4.1, transactions, secure conn, plugin auth
	myCapSSL    = 0x800
)

// TestNoPlaintextFallback puts upstreams that refuse or fake TLS behind both engines: the
// sidecar never sends a login (let alone the password) without a verified TLS session, and the
// app is told the login failed over TLS.
func TestNoPlaintextFallback(t *testing.T) {
	const password = "static-pw-never-in-plaintext"
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sslRequest := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	cases := []struct {
		name   string
		engine string
		script func(c net.Conn) error
		// allowed says whether one connection's bytes are acceptable (probes connect too).
		allowed func(got []byte) bool
	}{
		{
			name: "postgres answers N to SSLRequest", engine: "postgres",
			script: func(c net.Conn) error {
				var req [8]byte
				if _, err := io.ReadFull(c, req[:]); err != nil {
					return err
				}
				_, err := c.Write([]byte{'N'})
				return err
			},
			allowed: func(got []byte) bool { return len(got) == 0 || bytes.Equal(got, sslRequest) },
		},
		{
			name: "mysql greeting without CLIENT_SSL", engine: "mysql",
			script: func(c net.Conn) error {
				_, err := c.Write(myGreeting(myCapsNoSSL))
				return err
			},
			allowed: func(got []byte) bool { return len(got) == 0 },
		},
		{
			name: "mysql answers the SSLRequest in plaintext", engine: "mysql",
			script: func(c net.Conn) error {
				if _, err := c.Write(myGreeting(myCapsNoSSL | myCapSSL)); err != nil {
					return err
				}
				var req [36]byte // the SSLRequest: header and 32 bytes
				if _, err := io.ReadFull(c, req[:]); err != nil {
					return err
				}
				// An AuthSwitchRequest to mysql_clear_password, in plaintext, as if TLS were done.
				sw := append([]byte{0xfe}, "mysql_clear_password\x00"...)
				_, err := c.Write(append([]byte{byte(len(sw)), 0, 0, 2}, sw...))
				return err
			},
			allowed: func(got []byte) bool {
				// The SSLRequest, then a TLS ClientHello (a handshake record) at most.
				return len(got) == 0 || (len(got) >= 36 && (len(got) == 36 || got[36] == 0x16))
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := startHostile(t, tc.script)
			listen := "{{PG}}"
			if tc.engine == "mysql" {
				listen = "{{MYSQL}}"
			}
			cfg := fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
listeners:
  - name: up
    engine: %s
    listen: %q
    connect_timeout: 5s
    auth: {mode: password, password_file: %q}
    paths: [{name: hostile, address: %q, tls_server_name: db.example.com}]
`, tc.engine, listen, pwFile, h.ln.Addr().String())
			s := startSidecar(t, cfg, nil)
			var appErr error
			if tc.engine == "postgres" {
				host, port, _ := net.SplitHostPort(s.pgAddr)
				_, appErr = pgx.Connect(ctxTimeout(t, 20*time.Second), fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable connect_timeout=15", host, port))
				var pgErr *pgconn.PgError
				if !errors.As(appErr, &pgErr) || pgErr.Code != "08001" || !strings.Contains(pgErr.Message, "TLS") {
					t.Errorf("app error %v, want 08001 naming TLS", appErr)
				}
			} else {
				c := mysql.NewConfig()
				c.User, c.Net, c.Addr, c.DBName, c.Timeout = "app", "tcp", s.myAddr, "app", 15*time.Second
				conn, err := mysql.NewConnector(c)
				if err != nil {
					t.Fatal(err)
				}
				db := sql.OpenDB(conn)
				appErr = db.PingContext(ctxTimeout(t, 20*time.Second))
				_ = db.Close()
				var myErr *mysql.MySQLError
				if !errors.As(appErr, &myErr) || !strings.Contains(myErr.Message, "TLS") {
					t.Errorf("app error %v, want a MySQL error naming TLS", appErr)
				}
			}
			s.signal(syscall.SIGTERM)
			s.wait(20 * time.Second)
			got := h.received()
			if len(got) == 0 {
				t.Fatal("the hostile upstream saw no connection: the test proves nothing")
			}
			for i, b := range got {
				if bytes.Contains(b, []byte(password)) {
					t.Errorf("connection %d: the password went to an upstream without TLS", i)
				}
				if !tc.allowed(b) {
					t.Errorf("connection %d: the sidecar sent %q to an upstream without TLS", i, b)
				}
			}
			if strings.Contains(s.logs.String(), password) || strings.Contains(appErr.Error(), password) {
				t.Error("the password reached the logs or the app's error")
			}
		})
	}
}

// TestQuitQuitQuitIsLoopbackOnly binds the admin server on every interface: a POST from the
// host's own non-loopback address is refused and changes nothing, one from loopback drains.
func TestQuitQuitQuitIsLoopbackOnly(t *testing.T) {
	var outside []string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			outside = append(outside, ipn.IP.String())
		}
	}
	port := freePort(t)
	cfg := strings.Replace(staticConfig(t, "{{PG}}", ""), `admin: {listen: "{{ADMIN}}"}`, fmt.Sprintf(`admin: {listen: "0.0.0.0:%d"}`, port), 1)
	s := startSidecarAdmin(t, cfg, fmt.Sprintf("127.0.0.1:%d", port))

	post := func(host string) (int, error) {
		c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(host)}}).DialContext}}
		// No body and no Content-Type, as curl -X POST sends: text/plain would be refused as
		// something a web page could send (TestQuitQuitQuitRefusesWebPages).
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://%s/quitquitquit", net.JoinHostPort(host, fmt.Sprint(port))), nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}
	tried := 0
	for _, host := range outside {
		code, err := post(host)
		if err != nil {
			t.Logf("cannot call from %s: %v", host, err)
			continue
		}
		tried++
		if code != http.StatusForbidden {
			t.Fatalf("/quitquitquit from %s: %d, want 403", host, code)
		}
	}
	if tried == 0 {
		t.Skipf("no non-loopback IPv4 address on this host to call from (%v)", outside)
	}
	if code, _, err := s.get("/readyz"); err != nil || code != 200 {
		t.Fatalf("after a refused /quitquitquit, readyz %d %v: the sidecar is draining", code, err)
	}
	if !strings.Contains(s.logs.String(), "refused /quitquitquit from a non-loopback caller") {
		t.Error("the refusal is not logged")
	}
	if code, err := post("127.0.0.1"); err != nil || code != 200 {
		t.Fatalf("/quitquitquit from loopback: %d %v", code, err)
	}
	if exit := s.wait(30 * time.Second); exit != 0 {
		t.Fatalf("exit %d after /quitquitquit", exit)
	}
}

// startSidecarAdmin is startSidecar for a config that sets its own admin address.
func startSidecarAdmin(t *testing.T, cfg, admin string) *sidecar {
	t.Helper()
	return startSidecarCmd(t, cfg, nil, func(s *sidecar, _ *exec.Cmd) { s.admin = admin })
}

// openToOthers lets another user (the sidecar run as 65532) reach files in dir, a t.TempDir:
// the dir and the test's own parent dir become 0755.
func openToOthers(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRunsReadOnlyWithoutHome runs the sidecar as the image does: a non-root user (65532, as
// distroless nonroot, when the test runs as root; the test's own user otherwise), its working
// directory and TMPDIR read-only, HOME unset. It must start, log in with IAM (the SDK must
// not need ~/.aws) and serve a session, and leave the directory untouched.
func TestRunsReadOnlyWithoutHome(t *testing.T) {
	w := startWorld(t)
	root := t.TempDir()
	openToOthers(t, root)
	files := filepath.Join(root, "files")
	ro := filepath.Join(root, "ro")
	for _, d := range []string{files, ro} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile := func(src, name string) string {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(files, name)
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	bin := copyFile(sidecarBin, "sidecar")
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	ca := copyFile(w.CAFile, "ca.pem")
	token := copyFile(w.TokenFile, "token")
	if err := os.Chmod(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(ro, 0o755) })

	var env []string
	for _, kv := range w.SidecarEnv {
		if strings.HasPrefix(kv, "AWS_WEB_IDENTITY_TOKEN_FILE=") {
			kv = "AWS_WEB_IDENTITY_TOKEN_FILE=" + token
		}
		env = append(env, kv)
	}
	env = append(env, "TMPDIR="+ro)
	cfg := strings.Replace(iamConfig(w, ""), fmt.Sprintf("ca_file: %q", w.CAFile), fmt.Sprintf("ca_file: %q", ca), 1)
	s := startSidecarCmd(t, cfg, env, func(_ *sidecar, cmd *exec.Cmd) {
		cmd.Path = bin
		cmd.Dir = ro
		var kept []string
		for _, kv := range cmd.Env {
			if !strings.HasPrefix(kv, "HOME=") {
				kept = append(kept, kv)
			}
		}
		cmd.Env = kept
		if os.Geteuid() == 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
		}
	})
	if os.Geteuid() == 0 {
		if err := s.cmd.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatal(err)
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
		if err != nil || !strings.Contains(string(st), "\nUid:\t65532\t65532\t65532\t65532\n") {
			t.Fatalf("the sidecar does not run as 65532: %v\n%s", err, st)
		}
	}
	c := connect(t, s, "app")
	mustExec(t, c, "SELECT 1")
	_ = c.Close(context.Background())
	s.signal(syscall.SIGTERM)
	if code := s.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if ents, err := os.ReadDir(ro); err != nil || len(ents) != 0 {
		t.Fatalf("the sidecar wrote into its working directory: %v %v", ents, err)
	}
}

// TestNoSecretsAnywhere runs a full set of Postgres and MySQL sessions through one sidecar,
// successes and failures (wrong local passwords, a token for the wrong host, a wrong static
// password, malformed input, login probes), and then scans the logs at debug level, /metrics,
// /paths and every error the apps received for every secret: the STS credentials, the
// web-identity token, IAM token signatures, local and static passwords.
func TestNoSecretsAnywhere(t *testing.T) {
	w := sharedMyWorld(t)
	ctx := ctxTimeout(t, 3*time.Minute)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const (
		localPG    = "local-pg-secret-7f3a"
		localMy    = "local-my-secret-9c1e"
		staticPW   = "static-scram-secret-2b8d"
		wrongPW    = "wrong-static-secret-5e4f"
		pwRoleUser = "secret_scan_user"
	)
	if err := w.PG.CreatePasswordRole(ctx, pwRoleUser, staticPW, pgserver.SCRAM); err != nil {
		t.Fatal(err)
	}
	pgBadTok, pgStatic, pgWrong := freePort(t), freePort(t), freePort(t)
	myBadTok := freePort(t)
	cfg := fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
aws: {region: %[1]s, credentials_refresh_window: 2s}
shutdown: {max_delay: 10s}
listeners:
  - name: pg
    engine: postgres
    listen: "{{PG}}"
    local_password_file: %[2]q
    tls: {ca_file: %[3]q}
    paths: [{name: standin, address: %[4]q, tls_server_name: %[5]q, token_host: %[6]q}]
  - name: pg-badtoken
    engine: postgres
    listen: "127.0.0.1:%[7]d"
    tls: {ca_file: %[3]q}
    health: {interval: 1s, timeout: 1s, login_interval: 1s, login_user: app}
    paths: [{name: standin, address: %[4]q, tls_server_name: %[5]q, token_host: "elsewhere.example.com:5432"}]
  - name: pg-static
    engine: postgres
    listen: "127.0.0.1:%[8]d"
    auth: {mode: password, password_file: %[9]q}
    tls: {ca_file: %[3]q}
    paths: [{name: direct, address: %[10]q, tls_server_name: localhost}]
  - name: pg-wrong
    engine: postgres
    listen: "127.0.0.1:%[11]d"
    auth: {mode: password, password_file: %[12]q}
    tls: {ca_file: %[3]q}
    paths: [{name: direct, address: %[10]q, tls_server_name: localhost}]
  - name: mysql
    engine: mysql
    listen: "{{MYSQL}}"
    local_password_file: %[13]q
    tls: {ca_file: %[3]q}
    paths: [{name: standin, address: %[14]q, tls_server_name: %[15]q, token_host: %[16]q}]
  - name: mysql-badtoken
    engine: mysql
    listen: "127.0.0.1:%[17]d"
    tls: {ca_file: %[3]q}
    health: {interval: 1s, timeout: 1s, login_interval: 1s, login_user: app}
    paths: [{name: standin, address: %[14]q, tls_server_name: %[15]q, token_host: "elsewhere.example.com:3306"}]
`, w.Region, write("local-pg", localPG), w.CAFile, w.Address, w.TLSServerName, w.TokenHost,
		pgBadTok, pgStatic, write("static", staticPW), w.PG.Addr(), pgWrong, write("wrong", wrongPW),
		write("local-my", localMy), w.MySQLAddress, w.MySQLTLSServerName, w.MySQLTokenHost, myBadTok)
	s := startSidecar(t, cfg, w.Env)

	var appErrors []string
	pgConnect := func(port, user, password string, wantErr bool) {
		t.Helper()
		c, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%s user=%s dbname=app sslmode=disable password='%s' connect_timeout=15", port, user, password))
		if err != nil {
			if !wantErr {
				t.Fatalf("port %s: %v", port, err)
			}
			appErrors = append(appErrors, err.Error())
			return
		}
		defer c.Close(ctx)
		if wantErr {
			t.Fatalf("port %s: login succeeded, want a failure", port)
		}
		mustExec(t, c, "SELECT 1")
	}
	_, pgMain, _ := net.SplitHostPort(s.pgAddr)
	pgConnect(pgMain, "app", localPG, false)
	pgConnect(pgMain, "app", "not-the-local-password", true)
	pgConnect(fmt.Sprint(pgBadTok), "app", "", true)
	pgConnect(fmt.Sprint(pgStatic), pwRoleUser, "", false)
	pgConnect(fmt.Sprint(pgWrong), pwRoleUser, "", true)
	raw, err := net.DialTimeout("tcp", s.pgAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	_, _ = io.Copy(io.Discard, raw)
	_ = raw.Close()

	myPing := func(addr, password string, wantErr bool) {
		t.Helper()
		c := mysql.NewConfig()
		c.User, c.Passwd, c.Net, c.Addr, c.DBName, c.Timeout = "app", password, "tcp", addr, "app", 15*time.Second
		conn, err := mysql.NewConnector(c)
		if err != nil {
			t.Fatal(err)
		}
		db := sql.OpenDB(conn)
		defer db.Close()
		err = db.PingContext(ctx)
		if err == nil {
			_, err = db.ExecContext(ctx, "SELECT 1")
		}
		if (err != nil) != wantErr {
			t.Fatalf("mysql %s: err = %v, want error %v", addr, err, wantErr)
		}
		if err != nil {
			appErrors = append(appErrors, err.Error())
		}
	}
	myPing(s.myAddr, localMy, false)
	myPing(s.myAddr, "not-the-local-password", true)
	myPing(fmt.Sprintf("127.0.0.1:%d", myBadTok), "", true)

	waitFor(t, 20*time.Second, "failed login probes on the bad-token paths", func() error {
		if v := s.metric("rdsvalet_health_probe_failures_total", `listener="mysql-badtoken"`, `kind="login"`); v < 1 {
			return fmt.Errorf("mysql-badtoken login probe failures %v", v)
		}
		if v := s.metric("rdsvalet_health_probe_failures_total", `listener="pg-badtoken"`, `kind="login"`); v < 1 {
			return fmt.Errorf("pg-badtoken login probe failures %v", v)
		}
		return nil
	})
	_, metrics, _ := s.get("/metrics")
	_, paths, _ := s.get("/paths")
	s.signal(syscall.SIGTERM)
	s.wait(30 * time.Second)

	secrets := map[string]string{
		"an IAM token signature": "X-Amz-Signature", "an IAM token session token": "X-Amz-Security-Token",
		"an IAM token credential": "X-Amz-Credential", "the web identity token": w.WebIdentityToken,
		"the Postgres local password": localPG, "the MySQL local password": localMy,
		"the static password": staticPW, "the wrong static password": wrongPW,
	}
	issued := w.STS.Issued()
	if len(issued) == 0 {
		t.Fatal("STS issued no credentials: the scan proves nothing")
	}
	for i, c := range issued {
		secrets[fmt.Sprintf("STS secret key %d", i)] = c.SecretAccessKey
		secrets[fmt.Sprintf("STS session token %d", i)] = c.SessionToken
	}
	outputs := map[string]string{"logs": s.logs.String(), "/metrics": metrics, "/paths": paths,
		"app errors": strings.Join(appErrors, "\n")}
	for where, text := range outputs {
		for what, sec := range secrets {
			if sec == "" {
				t.Fatalf("%s is empty", what)
			}
			if strings.Contains(text, sec) {
				t.Errorf("%s contain %s", where, what)
			}
		}
	}
	// The scan only means something if the sessions and failures above really happened.
	for _, want := range []string{`"msg":"minted IAM token"`, `"listener":"pg-badtoken"`, `"listener":"mysql-badtoken"`, `"listener":"pg-wrong"`} {
		if !strings.Contains(s.logs.String(), want) {
			t.Errorf("the logs lack %s: the scan proves less than it claims", want)
		}
	}
	if len(appErrors) != 5 {
		t.Errorf("%d app errors, want 5: %q", len(appErrors), appErrors)
	}
}
