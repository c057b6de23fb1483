// Package mariadb runs a real, throwaway MariaDB server from Debian's mariadb-server binaries
// for tests and the demo: mariadb-install-db into a directory, mariadbd on a random loopback
// port with its unix socket in that directory, TLS with a certificate from the test CA, and
// settings tuned for speed over durability. As root, the server runs as the "mysql" OS user.
package mariadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/rdsvalet/rds-valet/test/harness/internal/daemon"
	"github.com/rdsvalet/rds-valet/test/harness/internal/osuser"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// Superuser is the administrative account mariadb-install-db creates (reached over the unix
// socket without a password).
const Superuser = "root"

const (
	readyTimeout  = 60 * time.Second
	maxSocketPath = 107
)

// Options configure Start.
type Options struct {
	// Dir is a directory the server may use; empty means a temporary one that Stop removes.
	Dir string
	// CA, when set, turns TLS on with a certificate for localhost and 127.0.0.1.
	CA *pki.CA
	// Logf receives the server's log lines and the harness's own notes.
	Logf func(format string, args ...any)
	// Args are extra mariadbd options (e.g. "--max-connections=50").
	Args []string
}

// Server is a running MariaDB.
type Server struct {
	Host    string // always 127.0.0.1
	Port    int
	Socket  string
	DataDir string
	TLS     bool

	logf    func(string, ...any)
	proc    *daemon.Process
	ownDir  string
	sockDir string // removed by Stop when relocated to a short path
	base    string

	// Set on a replica (StartReplica): the server it replicates from.
	primary *Server

	stopOnce sync.Once
	stopErr  error
}

// Start installs a fresh data directory and starts the server, returning once it answers.
func Start(ctx context.Context, o Options) (*Server, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	mariadbd, err := findBinary("mariadbd", "mysqld")
	if err != nil {
		return nil, err
	}
	installDB, err := findBinary("mariadb-install-db", "mysql_install_db")
	if err != nil {
		return nil, err
	}
	cred, err := osuser.For("mysql")
	if err != nil {
		return nil, fmt.Errorf("mariadb: %w", err)
	}
	base, ownDir, err := daemon.WorkDir(o.Dir, "mdb", cred)
	if err != nil {
		return nil, fmt.Errorf("mariadb: %w", err)
	}
	s := &Server{Host: "127.0.0.1", DataDir: filepath.Join(base, "data"), TLS: o.CA != nil, logf: logf,
		ownDir: ownDir, base: base}
	s.Socket = filepath.Join(base, "mysqld.sock")
	if len(s.Socket) > maxSocketPath {
		// A deep test temp dir would overflow sun_path; the socket goes somewhere short.
		if s.sockDir, err = os.MkdirTemp("", "mdbsock-"); err != nil {
			return nil, fmt.Errorf("mariadb: socket dir: %w", err)
		}
		s.Socket = filepath.Join(s.sockDir, "mysqld.sock")
	}
	fail := func(err error) (*Server, error) {
		s.cleanupFiles()
		return nil, err
	}
	// A private tmpdir: with the shared /tmp, concurrent bootstraps were seen failing when
	// their temporary tables vanished ("Unknown table 'mysql.tmp_user_sys'").
	tmpDir := filepath.Join(base, "tmp")
	for _, d := range []string{s.DataDir, tmpDir} {
		if err := os.Mkdir(d, 0o750); err != nil {
			return fail(fmt.Errorf("mariadb: %w", err))
		}
	}
	for _, d := range []string{base, s.DataDir, tmpDir, s.sockDir} {
		if d == "" {
			continue
		}
		if err := osuser.Chown(d, cred); err != nil {
			return fail(fmt.Errorf("mariadb: %w", err))
		}
	}

	install := exec.CommandContext(ctx, installDB, "--no-defaults", "--datadir="+s.DataDir, "--tmpdir="+tmpDir,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
	install.Dir = base
	install.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	if cred != nil {
		install.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if out, err := install.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("mariadb: mariadb-install-db: %w\n%s", err, out))
	}
	args := []string{
		"--no-defaults",
		"--datadir=" + s.DataDir,
		"--tmpdir=" + tmpDir,
		"--socket=" + s.Socket,
		"--bind-address=" + s.Host,
		"--skip-name-resolve",
		"--pid-file=" + filepath.Join(base, "mariadbd.pid"),
		// Every server can be a primary (StartReplica): a binary log with GTIDs, row events,
		// and replicated events logged too so that a promoted replica can serve the others.
		"--log-bin=binlog",
		"--binlog-format=ROW",
		"--log-slave-updates=ON",
		"--relay-log=relay-bin",
		"--sync-binlog=0",
		// A replica notices a dead primary within seconds and retries every second.
		"--slave-net-timeout=5",
		"--innodb-buffer-pool-size=32M",
		"--innodb-log-file-size=16M",
		"--innodb-flush-log-at-trx-commit=0",
		"--innodb-doublewrite=0",
		"--performance-schema=OFF",
		"--max-connections=200",
		// Rows larger than 16 MiB (packet splitting) must fit.
		"--max-allowed-packet=64M",
		"--local-infile=1",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_general_ci",
	}
	if o.CA != nil {
		tlsArgs, err := s.writeTLS(base, o.CA, cred)
		if err != nil {
			return fail(err)
		}
		args = append(args, tlsArgs...)
	}
	args = append(args, o.Args...)

	// A free port is found by binding :0 and releasing it; on a lost race, retry.
	for attempt := 1; ; attempt++ {
		port, err := daemon.FreePort()
		if err != nil {
			return fail(fmt.Errorf("mariadb: %w", err))
		}
		s.Port = port
		// server_id must differ within a replication topology; the port does on one machine.
		err = s.startDaemon(ctx, mariadbd, base, cred, append(args, "--port="+strconv.Itoa(port), "--server-id="+strconv.Itoa(port)))
		if err == nil {
			logf("mariadb: ready on %s (tls=%v, socket %s)", s.Addr(), s.TLS, s.Socket)
			return s, nil
		}
		if attempt == 3 || s.proc == nil || !strings.Contains(s.proc.LogTail(), "Address already in use") {
			s.cleanupFiles()
			return nil, err
		}
		logf("mariadb: port %d taken, retrying", port)
	}
}

func (s *Server) startDaemon(ctx context.Context, daemonPath, base string, cred *syscall.Credential, args []string) error {
	proc, err := daemon.Start(daemon.Spec{Name: "mariadbd", Path: daemonPath, Args: args, Dir: base,
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}, Cred: cred, Logf: s.logf,
		DeathSignal: syscall.SIGTERM})
	if err != nil {
		return fmt.Errorf("mariadb: %w", err)
	}
	s.proc = proc
	if err := proc.WaitReady(ctx, readyTimeout, s.ping); err != nil {
		return fmt.Errorf("mariadb: %w", err)
	}
	return nil
}

func (s *Server) ping(ctx context.Context) error {
	db, err := s.Open(Superuser, "")
	if err != nil {
		return err
	}
	defer db.Close()
	return db.PingContext(ctx)
}

func (s *Server) writeTLS(base string, ca *pki.CA, cred *syscall.Credential) ([]string, error) {
	leaf, err := ca.Issue([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"ca.pem": ca.CertPEM(), "server.pem": leaf.CertPEM, "server-key.pem": leaf.KeyPEM}
	for name, b := range files {
		p := filepath.Join(base, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return nil, fmt.Errorf("mariadb: %w", err)
		}
		if err := osuser.Chown(p, cred); err != nil {
			return nil, fmt.Errorf("mariadb: %w", err)
		}
	}
	return []string{
		"--ssl-ca=" + filepath.Join(base, "ca.pem"),
		"--ssl-cert=" + filepath.Join(base, "server.pem"),
		"--ssl-key=" + filepath.Join(base, "server-key.pem"),
	}, nil
}

// Addr is the host:port of the TCP listener.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Config returns a go-sql-driver config for user over the unix socket (no password).
func (s *Server) Config(user, db string) *mysql.Config {
	c := mysql.NewConfig()
	c.User, c.Net, c.Addr, c.DBName = user, "unix", s.Socket, db
	c.MultiStatements = true
	return c
}

// TCPConfig returns a go-sql-driver config for user over loopback TCP without TLS.
func (s *Server) TCPConfig(user, password, db string) *mysql.Config {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, password, "tcp", s.Addr(), db
	return c
}

// Open returns a *sql.DB for user over the unix socket.
func (s *Server) Open(user, db string) (*sql.DB, error) {
	conn, err := mysql.NewConnector(s.Config(user, db))
	if err != nil {
		return nil, fmt.Errorf("mariadb: %w", err)
	}
	return sql.OpenDB(conn), nil
}

// Exec runs statements (multi-statements allowed) as the superuser.
func (s *Server) Exec(ctx context.Context, stmts string) error {
	db, err := s.Open(Superuser, "")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, stmts); err != nil {
		return fmt.Errorf("mariadb: exec %q: %w", stmts, err)
	}
	return nil
}

// CreateUser creates user, reachable over TCP from anywhere, with password (empty: none).
// The RDS stand-in logs in to MariaDB as the app's user with no password.
func (s *Server) CreateUser(ctx context.Context, user, password string) error {
	return s.Exec(ctx, fmt.Sprintf("CREATE USER %s@'%%' IDENTIFIED BY %s", quote(user), quote(password)))
}

// CreateDatabase creates db and grants user every privilege on it.
func (s *Server) CreateDatabase(ctx context.Context, db, user string) error {
	return s.Exec(ctx, fmt.Sprintf("CREATE DATABASE `%s`; GRANT ALL ON `%s`.* TO %s@'%%'",
		strings.ReplaceAll(db, "`", "``"), strings.ReplaceAll(db, "`", "``"), quote(user)))
}

// LogTail returns the last lines the server logged.
func (s *Server) LogTail() string { return s.proc.LogTail() }

// Exited is closed when the server process has exited.
func (s *Server) Exited() <-chan struct{} { return s.proc.Exited() }

// Stop shuts the server down (SIGTERM) and waits; if ctx ends first it is killed. It removes
// only what Start created on its own.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		if err := s.proc.Stop(ctx, syscall.SIGTERM); err != nil {
			s.stopErr = fmt.Errorf("mariadb: %w", err)
		}
		s.cleanupFiles()
	})
	return s.stopErr
}

// Kill ends the server with SIGKILL at once, as a crash would.
func (s *Server) Kill() { s.proc.Kill() }

func (s *Server) cleanupFiles() {
	if s.sockDir != "" {
		os.RemoveAll(s.sockDir)
	}
	if s.ownDir != "" {
		os.RemoveAll(s.ownDir)
	}
}

func findBinary(names ...string) (string, error) {
	for _, n := range names {
		for _, d := range []string{"/usr/sbin", "/usr/bin"} {
			p := filepath.Join(d, n)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", errors.New("mariadb: " + names[0] + " not found (install the Debian mariadb-server package)")
}

func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
