// Package mariadb starts a private MariaDB server for tests from Debian's mariadb-server
// binaries: mariadb-install-db into a temporary directory, mariadbd on a random loopback port
// with TLS from a test CA, a database "app" and a user "app" with a password. Close stops it
// and removes everything.
package mariadb

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Config says what to create.
type Config struct {
	// User and Password are the account tests log in as (default app / app-password); the
	// database of the same name is created and granted to it.
	User, Password, Database string
	// MaxAllowedPacket is the server's max_allowed_packet (default 64 MiB).
	MaxAllowedPacket int
	// ServerNames are extra names on the server certificate besides 127.0.0.1 and localhost.
	ServerNames []string
	// StartTimeout bounds install and startup (default 90 s).
	StartTimeout time.Duration
}

// Server is a running MariaDB.
type Server struct {
	Addr     string // 127.0.0.1:port
	Socket   string
	Dir      string
	CA       *CA
	User     string
	Password string
	Database string
	Version  string
	ErrorLog string

	cmd  *exec.Cmd
	done chan struct{}
}

// Binaries Debian installs; Available reports whether they are here.
var binaries = []string{"mariadbd", "mariadb-install-db"}

// Available reports whether the MariaDB server binaries are installed, and which is missing.
func Available() error {
	for _, b := range binaries {
		if _, err := lookPath(b); err != nil {
			return fmt.Errorf("%s not found (apt-get install mariadb-server): %w", b, err)
		}
	}
	return nil
}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// Start installs and starts a server. The caller must Close it.
func Start(ctx context.Context, cfg Config) (s *Server, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if cfg.User == "" {
		cfg.User = "app"
	}
	if cfg.Password == "" {
		cfg.Password = "app-password"
	}
	if cfg.Database == "" {
		cfg.Database = "app"
	}
	if cfg.MaxAllowedPacket == 0 {
		cfg.MaxAllowedPacket = 64 << 20
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	// Not t.TempDir: its parents are 0700 root, which the mysql user cannot traverse.
	dir, err := os.MkdirTemp("", "rdsvalet-mariadb-")
	if err != nil {
		return nil, err
	}
	s = &Server{Dir: dir, Socket: filepath.Join(dir, "mysqld.sock"), User: cfg.User, Password: cfg.Password,
		Database: cfg.Database, ErrorLog: filepath.Join(dir, "error.log"), done: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close()
			if b, rerr := os.ReadFile(s.ErrorLog); rerr == nil {
				err = fmt.Errorf("%w\nMariaDB error log:\n%s", err, tail(string(b), 4000))
			}
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return s, err
	}
	tlsDir := filepath.Join(dir, "tls")
	if err := os.Mkdir(tlsDir, 0o755); err != nil {
		return s, err
	}
	if s.CA, err = NewCA(tlsDir, "mariadb-test"); err != nil {
		return s, err
	}
	_, certFile, keyFile, err := s.CA.Issue("server", append([]string{"127.0.0.1", "localhost"}, cfg.ServerNames...)...)
	if err != nil {
		return s, err
	}
	dataDir := filepath.Join(dir, "data")
	osUser := ""
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// mariadbd refuses to run as root unless told; run it as Debian's mysql user instead.
		osUser = "mysql"
		u, err := user.Lookup(osUser)
		if err != nil {
			return s, fmt.Errorf("running as root needs the mysql OS user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := chownR(dir, uid, gid); err != nil {
			return s, err
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}

	install, _ := lookPath("mariadb-install-db")
	args := []string{"--no-defaults", "--datadir=" + dataDir, "--auth-root-authentication-method=normal",
		"--skip-test-db", "--skip-name-resolve"}
	if osUser != "" {
		args = append(args, "--user="+osUser)
	}
	if out, err := exec.CommandContext(ctx, install, args...).CombinedOutput(); err != nil {
		return s, fmt.Errorf("mariadb-install-db: %w\n%s", err, tail(string(out), 4000))
	}

	port, err := freePort()
	if err != nil {
		return s, err
	}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	mariadbd, _ := lookPath("mariadbd")
	args = []string{"--no-defaults", "--datadir=" + dataDir, "--socket=" + s.Socket,
		"--port=" + strconv.Itoa(port), "--bind-address=127.0.0.1", "--skip-name-resolve",
		"--pid-file=" + filepath.Join(dir, "mysqld.pid"), "--log-error=" + s.ErrorLog,
		"--ssl-ca=" + s.CA.CertFile, "--ssl-cert=" + certFile, "--ssl-key=" + keyFile,
		"--max-allowed-packet=" + strconv.Itoa(cfg.MaxAllowedPacket), "--local-infile=1",
		"--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=2",
		"--max-connections=500", "--skip-log-bin", "--performance-schema=OFF"}
	s.cmd = exec.Command(mariadbd, args...)
	// The server runs as the mysql user from the start (not mariadbd --user, whose setuid
	// would clear the parent-death signal), so that it stops with the test process even
	// when a test binary panics or times out before Close.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return s, fmt.Errorf("start mariadbd: %w", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()

	root, err := s.waitReady(ctx)
	if err != nil {
		return s, err
	}
	defer root.Close()
	if err := root.QueryRowContext(ctx, "SELECT VERSION()").Scan(&s.Version); err != nil {
		return s, err
	}
	for _, q := range []string{
		fmt.Sprintf("CREATE DATABASE `%s`", cfg.Database),
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", cfg.User, cfg.Password),
		fmt.Sprintf("GRANT ALL ON `%s`.* TO '%s'@'%%'", cfg.Database, cfg.User),
	} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			return s, fmt.Errorf("%s: %w", q, err)
		}
	}
	return s, nil
}

// waitReady polls a real root connection over the socket until it works or ctx ends.
func (s *Server) waitReady(ctx context.Context) (*sql.DB, error) {
	c := mysql.NewConfig()
	c.User, c.Net, c.Addr = "root", "unix", s.Socket
	c.MultiStatements = true
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = db.PingContext(pctx)
		cancel()
		if err == nil {
			return db, nil
		}
		select {
		case <-s.done:
			db.Close()
			return nil, fmt.Errorf("mariadbd exited during startup: %v", s.cmd.ProcessState)
		case <-ctx.Done():
			db.Close()
			return nil, fmt.Errorf("mariadbd not ready: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RootDSN is a go-sql-driver DSN for root over the Unix socket.
func (s *Server) RootDSN() string { return "root@unix(" + s.Socket + ")/" }

// Close stops the server (SIGTERM, then SIGKILL after 20 s) and removes its directory.
func (s *Server) Close() {
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(20 * time.Second):
				_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.done
			}
		}
	}
	if s.Dir != "" {
		_ = os.RemoveAll(s.Dir)
	}
}

func chownR(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
