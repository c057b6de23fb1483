// Package pgserver runs a real, throwaway PostgreSQL server from the Debian binaries for tests
// and the demo: initdb into a directory, postgres on a random loopback port with its unix socket
// in that directory, TLS with a certificate from the test CA, settings tuned for speed over
// durability. Running the real server (not a mock) is what lets tests catch protocol mistakes.
//
// PostgreSQL refuses to run as root; when the test runs as root the server runs as the
// "postgres" OS user, which owns the data directory.
package pgserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsvalet/rds-valet/test/harness/internal/daemon"
	"github.com/rdsvalet/rds-valet/test/harness/internal/osuser"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// Superuser is the bootstrap superuser initdb creates.
const Superuser = "postgres"

// Groups whose members must log in with a password over TCP; pg_hba.conf names them before
// the trust lines, so adding a role to a group needs no reload.
const (
	scramGroup = "harness_scram_users"
	md5Group   = "harness_md5_users"
)

const (
	readyTimeout = 60 * time.Second
	// maxSocketPath is the limit of sun_path on Linux (108 with the NUL).
	maxSocketPath = 107
)

// Options configure Start.
type Options struct {
	// Dir is a directory the server may use (data, socket, TLS files). Empty means a fresh
	// temporary directory that Stop removes. A given Dir is left in place.
	Dir string
	// CA, when set, turns TLS on with a certificate for localhost and 127.0.0.1.
	CA *pki.CA
	// TLSNames are more DNS names for that certificate (e.g. an RDS endpoint the server plays).
	TLSNames []string
	// Logf receives the server's log lines and the harness's own notes.
	Logf func(format string, args ...any)
	// BinDir holds initdb and postgres; empty means $PG_BINDIR or the highest
	// /usr/lib/postgresql/*/bin.
	BinDir string
	// Settings are extra postgresql.conf parameters (-c name=value).
	Settings map[string]string
}

// Server is a running PostgreSQL.
type Server struct {
	Host      string // always 127.0.0.1
	Port      int
	SocketDir string
	DataDir   string
	TLS       bool

	logf   func(string, ...any)
	proc   *daemon.Process
	ownDir string // removed by Stop when we created it
	bin    string
	cred   *syscall.Credential

	// Set on a standby (StartStandby): the server it streams from and its slot there.
	primary *Server
	slot    string

	stopOnce sync.Once
	stopErr  error
}

// Start creates a cluster and starts the server, returning once it accepts connections.
func Start(ctx context.Context, o Options) (*Server, error) {
	s, bin, cred, base, err := prepare(o)
	if err != nil {
		return nil, err
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", s.DataDir, "-U", Superuser,
		"--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = base
	initdb.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"}
	setCred(initdb, cred)
	if out, err := initdb.CombinedOutput(); err != nil {
		s.cleanupFiles()
		return nil, fmt.Errorf("pgserver: initdb: %w\n%s", err, out)
	}
	if err := writeHBA(s.DataDir); err != nil {
		s.cleanupFiles()
		return nil, err
	}
	if err := s.launch(ctx, o, bin, base, cred, nil); err != nil {
		return nil, err
	}
	if err := s.Exec(ctx, fmt.Sprintf("CREATE ROLE %s NOLOGIN; CREATE ROLE %s NOLOGIN", scramGroup, md5Group)); err != nil {
		_ = s.Stop(context.Background())
		return nil, err
	}
	return s, nil
}

// prepare makes the server's directories (owned by the server's OS user when root).
func prepare(o Options) (s *Server, bin string, cred *syscall.Credential, base string, err error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if bin, err = findBinDir(o.BinDir); err != nil {
		return nil, "", nil, "", err
	}
	if cred, err = osuser.For("postgres"); err != nil {
		return nil, "", nil, "", fmt.Errorf("pgserver: %w", err)
	}
	base, ownDir, err := daemon.WorkDir(o.Dir, "pg", cred)
	if err != nil {
		return nil, "", nil, "", fmt.Errorf("pgserver: %w", err)
	}
	s = &Server{Host: "127.0.0.1", DataDir: filepath.Join(base, "data"), SocketDir: filepath.Join(base, "sock"),
		TLS: o.CA != nil, logf: logf, ownDir: ownDir, bin: bin, cred: cred}
	if len(s.SocketDir)+len("/.s.PGSQL.65535") > maxSocketPath {
		// A deep test temp dir would overflow sun_path; the socket goes somewhere short instead.
		if s.SocketDir, err = os.MkdirTemp("", "pgsock-"); err != nil {
			s.cleanupFiles()
			return nil, "", nil, "", fmt.Errorf("pgserver: socket dir: %w", err)
		}
	} else if err := os.Mkdir(s.SocketDir, 0o755); err != nil {
		s.cleanupFiles()
		return nil, "", nil, "", fmt.Errorf("pgserver: %w", err)
	}
	for _, d := range []string{base, s.SocketDir} {
		if err := chown(d, cred); err != nil {
			s.cleanupFiles()
			return nil, "", nil, "", err
		}
	}
	return s, bin, cred, base, nil
}

// launch starts postgres on a data directory made by initdb or pg_basebackup, with the
// harness's settings, TLS, Options.Settings and then extra, on a fresh port. On error the
// files are cleaned up.
func (s *Server) launch(ctx context.Context, o Options, bin, base string, cred *syscall.Credential, extra map[string]string) error {
	settings := map[string]string{
		"listen_addresses":        s.Host,
		"unix_socket_directories": s.SocketDir,
		"fsync":                   "off",
		"synchronous_commit":      "off",
		"full_page_writes":        "off",
		"max_connections":         "200",
		"shared_buffers":          "32MB",
		"logging_collector":       "off",
		"log_min_messages":        "warning",
		"log_line_prefix":         "%m [%p] ",
		// Every server can be a primary: streaming standbys (StartStandby) need WAL senders
		// and slots, and a promoted standby must serve the next one.
		"wal_level":             "replica",
		"max_wal_senders":       "10",
		"max_replication_slots": "10",
		"wal_keep_size":         "64MB",
		// Both ends of a replication connection notice a dead peer within seconds.
		"wal_sender_timeout":           "5s",
		"wal_receiver_timeout":         "5s",
		"wal_receiver_status_interval": "1s",
		"hot_standby_feedback":         "on",
		// A standby whose primary died retries every 5s by default, and a promote request
		// waits for that sleep: failover tests want the promotion at once.
		"wal_retrieve_retry_interval": "100ms",
	}
	if o.CA != nil {
		if err := s.writeTLS(o.CA, o.TLSNames, cred, settings); err != nil {
			s.cleanupFiles()
			return err
		}
	}
	for k, v := range o.Settings {
		settings[k] = v
	}
	for k, v := range extra {
		settings[k] = v
	}

	// The port is chosen by binding :0 and releasing it; another process can grab it in
	// between, so a bind failure is retried with a new port.
	for attempt := 1; ; attempt++ {
		port, err := daemon.FreePort()
		if err != nil {
			s.cleanupFiles()
			return fmt.Errorf("pgserver: %w", err)
		}
		settings["port"] = strconv.Itoa(port)
		s.Port = port
		err = s.startPostgres(ctx, bin, base, cred, settings)
		if err == nil {
			s.logf("pgserver: ready on %s (tls=%v, data %s)", s.Addr(), s.TLS, s.DataDir)
			return nil
		}
		if attempt == 3 || s.proc == nil || !strings.Contains(s.proc.LogTail(), "could not bind") {
			s.cleanupFiles()
			return err
		}
		s.logf("pgserver: port %d taken, retrying", port)
	}
}

func (s *Server) startPostgres(ctx context.Context, bin, base string, cred *syscall.Credential, settings map[string]string) error {
	args := []string{"-D", s.DataDir}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}
	// SIGQUIT on parent death: an immediate shutdown, the quickest that still stops the backends.
	proc, err := daemon.Start(daemon.Spec{Name: "postgres", Path: filepath.Join(bin, "postgres"), Args: args,
		Dir: base, Env: []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"}, Cred: cred, Logf: s.logf,
		DeathSignal: syscall.SIGQUIT})
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	s.proc = proc
	err = proc.WaitReady(ctx, readyTimeout, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, s.DSN(Superuser, "postgres"))
		if err == nil {
			conn.Close(ctx)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	return nil
}

func (s *Server) writeTLS(ca *pki.CA, names []string, cred *syscall.Credential, settings map[string]string) error {
	leaf, err := ca.Issue(append([]string{"localhost"}, names...), []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	crt, key := filepath.Join(s.DataDir, "server.crt"), filepath.Join(s.DataDir, "server.key")
	if err := os.WriteFile(crt, leaf.CertPEM, 0o644); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	// postgres insists the key is private to its owner.
	if err := os.WriteFile(key, leaf.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	for _, p := range []string{crt, key} {
		if err := chown(p, cred); err != nil {
			return err
		}
	}
	settings["ssl"] = "on"
	settings["ssl_cert_file"] = crt
	settings["ssl_key_file"] = key
	return nil
}

func writeHBA(dataDir string) error {
	hba := strings.Join([]string{
		"# written by test/harness/pgserver: password roles first, then trust on loopback",
		"local all all trust",
		"local replication all trust",
		"host replication all 127.0.0.1/32 trust",
		"host all +" + scramGroup + " 127.0.0.1/32 scram-sha-256",
		"host all +" + md5Group + " 127.0.0.1/32 md5",
		"host all all 127.0.0.1/32 trust",
		"host all all ::1/128 trust",
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(dataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("pgserver: pg_hba.conf: %w", err)
	}
	return nil
}

// Addr is the host:port of the TCP listener.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Superuser is the name of the bootstrap superuser (trusted on loopback).
func (s *Server) Superuser() string { return Superuser }

// DSN is a URL for user/db over TCP without TLS (the harness's own admin connections).
func (s *Server) DSN(user, db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(user), Host: s.Addr(), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// TLSDSN is a URL for user/db over TCP requiring TLS verified against caFile.
func (s *Server) TLSDSN(user, db, caFile string) string {
	q := url.Values{"sslmode": {"verify-full"}, "sslrootcert": {caFile}}
	u := url.URL{Scheme: "postgres", User: url.User(user), Host: "localhost:" + strconv.Itoa(s.Port), Path: "/" + db, RawQuery: q.Encode()}
	return u.String()
}

// SocketDSN is a keyword/value DSN over the unix socket.
func (s *Server) SocketDSN(user, db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s", s.SocketDir, s.Port, user, db)
}

// Connect opens a pgx connection as user to db over TCP without TLS.
func (s *Server) Connect(ctx context.Context, user, db string) (*pgx.Conn, error) {
	c, err := pgx.Connect(ctx, s.DSN(user, db))
	if err != nil {
		return nil, fmt.Errorf("pgserver: connect %s@%s: %w", user, db, err)
	}
	return c, nil
}

// Exec runs sql (one or more statements, no parameters) as the superuser in database postgres.
func (s *Server) Exec(ctx context.Context, sql string) error {
	c, err := s.Connect(ctx, Superuser, "postgres")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("pgserver: exec %q: %w", sql, err)
	}
	return nil
}

// CreateRole creates a login role that is trusted on loopback (no password).
func (s *Server) CreateRole(ctx context.Context, name string) error {
	return s.Exec(ctx, "CREATE ROLE "+pgx.Identifier{name}.Sanitize()+" LOGIN")
}

// AuthMethod is how a password role must authenticate over TCP.
type AuthMethod string

// Password methods for CreatePasswordRole.
const (
	SCRAM AuthMethod = "scram-sha-256"
	MD5   AuthMethod = "md5"
)

// CreatePasswordRole creates a login role that must present password over TCP with method
// (the unix socket still trusts it, for admin convenience).
func (s *Server) CreatePasswordRole(ctx context.Context, name, password string, method AuthMethod) error {
	group := scramGroup
	switch method {
	case SCRAM:
	case MD5:
		group = md5Group
	default:
		return fmt.Errorf("pgserver: unknown auth method %q", method)
	}
	// The stored hash must match the method: md5 auth cannot check a SCRAM verifier (and an
	// md5 line with a SCRAM verifier silently does SCRAM), so the encryption is set per role.
	// Created or, if a test run before (go test -count=N shares the server), reset.
	role := pgx.Identifier{name}.Sanitize()
	sql := fmt.Sprintf("SET password_encryption = '%s'; "+
		"DO $$BEGIN CREATE ROLE %s; EXCEPTION WHEN duplicate_object THEN NULL; END$$; "+
		"ALTER ROLE %s LOGIN PASSWORD %s; GRANT %s TO %s",
		method, role, role, quoteLiteral(password), group, role)
	return s.Exec(ctx, sql)
}

// CreateDatabase creates db owned by owner.
func (s *Server) CreateDatabase(ctx context.Context, db, owner string) error {
	return s.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", pgx.Identifier{db}.Sanitize(), pgx.Identifier{owner}.Sanitize()))
}

// LogTail returns the last lines the server logged, for failure messages.
func (s *Server) LogTail() string { return s.proc.LogTail() }

// Exited is closed when the postmaster has exited (after Stop, Kill or a crash).
func (s *Server) Exited() <-chan struct{} { return s.proc.Exited() }

// Stop shuts the server down fast (SIGINT: abort transactions, disconnect clients) and waits
// for it; if ctx ends first the process group is killed. It removes only what Start created
// on its own (the temporary dir when Options.Dir was empty, a relocated socket dir).
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		if err := s.proc.Stop(ctx, syscall.SIGINT); err != nil {
			s.stopErr = fmt.Errorf("pgserver: %w", err)
		}
		s.cleanupFiles()
		if s.primary != nil {
			// A slot nobody reads from would hold WAL on the primary forever; the primary
			// may be gone already (failover tests), which is fine.
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.primary.Exec(dctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"+s.slot+"' AND NOT active")
			cancel()
		}
	})
	return s.stopErr
}

// Kill ends the server and its backends with SIGKILL at once, as a crash would. Stop is still
// needed afterwards to clean up.
func (s *Server) Kill() { s.proc.Kill() }

func (s *Server) cleanupFiles() {
	if strings.HasPrefix(filepath.Base(s.SocketDir), "pgsock-") {
		os.RemoveAll(s.SocketDir)
	}
	if s.ownDir != "" {
		os.RemoveAll(s.ownDir)
	}
}

// findBinDir returns dir if set, else $PG_BINDIR, else the highest-versioned Debian bin dir.
func findBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("PG_BINDIR")
	}
	if dir == "" {
		matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		best := -1.0
		for _, m := range matches {
			v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(m)), 64)
			if err == nil && v > best {
				best, dir = v, m
			}
		}
	}
	if dir == "" {
		return "", errors.New("pgserver: no PostgreSQL found (install the Debian postgresql package or set PG_BINDIR)")
	}
	for _, b := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("pgserver: %s not usable in %s: %w", b, dir, err)
		}
	}
	return dir, nil
}

func setCred(c *exec.Cmd, cred *syscall.Credential) {
	if cred != nil {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
}

func chown(p string, cred *syscall.Credential) error {
	if err := osuser.Chown(p, cred); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
