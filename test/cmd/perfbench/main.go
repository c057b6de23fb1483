// Command perfbench measures the sidecar side by side with connecting directly (plain and
// TLS) and with PgBouncer, on one machine in one run: it starts PostgreSQL and MariaDB with
// TLS, PgBouncer (session mode, TLS upstream verify-full) and the sidecar in password mode
// against the real servers, runs pgbench, sysbench and a connect-per-query loop, interleaving
// the paths so that noise from a shared machine hits all of them alike, and writes the table
// (docs/benchmarks.md) and a plot of TPS by client count (PNG). `make bench-perf` runs it.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql/driver"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

const (
	pgUser     = "bench"
	pgPassword = "bench-password-not-secret"
	pgDB       = "bench"
	myUser     = "bench"
	myPassword = "bench-password-not-secret"
	myDB       = "bench"
	floorUser  = "bench_floor"
	idleConns  = 2000
)

type opts struct {
	sidecar  string
	out      string
	png      string
	dur      time.Duration
	reps     int
	idle     int
	skipMy   bool
	skipIdle bool
	filter   *regexp.Regexp
	sideEnv  string
	profile  string
}

func main() {
	// The relays perfbench starts are this binary run again (relays.go).
	if len(os.Args) > 1 && (os.Args[1] == "hop" || os.Args[1] == "floor") {
		var err error
		if os.Args[1] == "hop" {
			err = runHop(os.Args[2:])
		} else if len(os.Args) < 4 {
			err = errors.New("usage: perfbench floor CA-FILE SERVER-NAME listen,upstream...")
		} else {
			err = runFloor(os.Args[2], os.Args[3], os.Args[4:])
		}
		fmt.Fprintln(os.Stderr, "perfbench", os.Args[1]+":", err)
		os.Exit(1)
	}
	var o opts
	flag.StringVar(&o.sidecar, "sidecar", "bin/sidecar", "the sidecar binary")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "report to write")
	flag.StringVar(&o.png, "png", "docs/benchmarks-tps.png", "plot to write")
	flag.DurationVar(&o.dur, "duration", 5*time.Second, "length of each measured run")
	flag.IntVar(&o.reps, "reps", 3, "measured runs per case and path (the median is reported)")
	flag.IntVar(&o.idle, "idle", idleConns, "idle sessions held through the sidecar for the memory test")
	flag.BoolVar(&o.skipMy, "skip-mysql", false, "skip the MySQL cases")
	flag.BoolVar(&o.skipIdle, "skip-idle", false, "skip the idle-memory test")
	filter := flag.String("filter", "", "run only the cases whose key (suite/case/clients, e.g. pgbench/-S/8) matches this regexp")
	flag.StringVar(&o.sideEnv, "sidecar-env", "", "extra environment for the sidecar, space-separated NAME=value (e.g. GOMAXPROCS=2)")
	flag.StringVar(&o.profile, "profile", "", "write pprof CPU profiles of the sidecar's first measured run of each case, and a heap profile in the idle test, into this directory")
	flag.Parse()
	if *filter != "" {
		o.filter = regexp.MustCompile(*filter)
	}
	start := time.Now()
	b := &bench{o: o}
	// Ctrl-C or a kill ends the run, not the cleanup: every server it started is stopped.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		b.logf("%v: stopping", s)
		b.cleanup()
		os.Exit(1)
	}()
	err := b.run()
	b.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "perfbench:", err)
		os.Exit(1)
	}
	fmt.Printf("perfbench: done in %s, wrote %s and %s\n", time.Since(start).Round(time.Second), o.out, o.png)
}

// sample is one measured run of one case on one path.
type sample struct {
	tps, p50, p99, p999 float64 // latencies in ms
	cpuPerTx            float64 // proxy CPU µs per transaction; NaN-free: -1 when no proxy
	hwmKB               int64   // proxy peak RSS during the run
}

// want reports whether the case with this key runs (see --filter).
func (b *bench) want(suite, name string, clients int) bool {
	return b.o.filter == nil || b.o.filter.MatchString(fmt.Sprintf("%s/%s/%d", suite, name, clients))
}

// profiled starts a CPU profile of the sidecar for d when --profile is set and this case has
// none yet; the returned func waits for it to be written.
func (b *bench) profiled(key string, d time.Duration) func() {
	return b.profiledAt(b.pprof, key, d)
}

// profiledAt is profiled for the sidecar whose pprof listener is addr.
func (b *bench) profiledAt(addr, key string, d time.Duration) func() {
	if b.o.profile == "" || addr == "" || b.profiledKeys[key] || d < 2*time.Second {
		return func() {}
	}
	b.profiledKeys[key] = true
	file := filepath.Join(b.o.profile, "cpu-"+profileName(key)+".pprof")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds())-1), file); err != nil {
			b.logf("profile %s: %v", key, err)
		}
	}()
	return func() { <-done }
}

// profileName is a case key as a file name.
func profileName(key string) string {
	return strings.NewReplacer("/", "_", " ", "", "+", "").Replace(key)
}

func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// result is the median over the measured runs.
type result struct {
	dist              string // network-distance profile (distance.go); "" is zero distance
	suite, name, path string
	clients           int
	s                 sample
	runs              int
}

type bench struct {
	o            opts
	dir          string
	pg           *pgserver.Server
	my           *mariadb.Server
	ca           *pki.CA
	caFile       string
	bouncer      *exec.Cmd
	bncPort      int
	side         *exec.Cmd
	sideLog      *os.File
	sidePG       string
	sideMy       string
	sideSock     string // the pg listener's unix socket directory
	hop          *exec.Cmd
	floor        *exec.Cmd
	floorPG      map[string]string // distance -> the floor relay's listen address
	hopPG        map[string]string // distance -> the hop in front of PostgreSQL
	hopMy        map[string]string // distance -> the hop in front of MariaDB
	sidePGAt     map[string]string // distance -> the sidecar's pg listener behind that hop
	sideMyAt     map[string]string
	hopRTT       map[string][2]float64 // distance -> measured echo RTT p50, p99 (ms); "" is bare loopback
	commit       string                // what was measured: the checkout at the start
	emptyRuns    []string              // pgbench runs that completed no transaction
	readingCPU   map[string]sample     // distance -> the profiled reading run (readingRuns)
	admin        string
	results      []result
	notes        []string
	cmds         []string
	idleKB       float64
	idleErr      error
	pprof        string
	profiledKeys map[string]bool
	started      time.Time
	total        time.Duration
	mu           sync.Mutex
	cleanOnce    sync.Once
	reuse        *reuseSidecar // the second sidecar, with session reuse (reuse.go)
}

func (b *bench) logf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+f+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

func (b *bench) cmd(line string) {
	if !slices.Contains(b.cmds, line) {
		b.cmds = append(b.cmds, line)
	}
}

func (b *bench) run() error {
	b.started = time.Now()
	b.commit = commit()
	ctx := context.Background()
	if err := ensurePackages(b.logf); err != nil {
		return err
	}
	raiseNoFile(b.logf)
	var err error
	if b.dir, err = os.MkdirTemp("", "perfbench-"); err != nil {
		return err
	}
	if err := os.Chmod(b.dir, 0o755); err != nil {
		return err
	}
	ca, err := pki.NewCA("perfbench CA")
	if err != nil {
		return err
	}
	b.ca = ca
	if b.caFile, err = ca.WriteCAFile(b.dir); err != nil {
		return err
	}
	_ = os.Chmod(b.caFile, 0o644)
	b.logf("starting PostgreSQL (TLS, max_connections %d)", b.o.idle+200)
	b.pg, err = pgserver.Start(ctx, pgserver.Options{CA: ca, Settings: map[string]string{
		"max_connections": strconv.Itoa(b.o.idle + 200),
		// The proxies are measured, not the disk: commits need not wait for fsync.
		"synchronous_commit": "off",
		"shared_buffers":     "256MB",
	}})
	if err != nil {
		return err
	}
	if err := b.pg.CreatePasswordRole(ctx, pgUser, pgPassword, pgserver.SCRAM); err != nil {
		return err
	}
	if err := b.pg.CreateDatabase(ctx, pgDB, pgUser); err != nil {
		return err
	}
	// The floor relays the app's own login inside its TLS session, so libpq, which sees no TLS,
	// would refuse the SCRAM-SHA-256-PLUS (channel binding) a TLS server offers: the floor's
	// app logs in as an md5 role instead (login is outside the measured relay cost anyway).
	if err := b.pg.CreatePasswordRole(ctx, floorUser, pgPassword, pgserver.MD5); err != nil {
		return err
	}
	b.logf("pgbench -i -s 10")
	init := exec.Command("pgbench", "-i", "-q", "-s", "10", b.pgConn("direct-plain"))
	init.Env = append(os.Environ(), "PGPASSWORD="+pgPassword)
	if out, err := init.CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %v\n%s", err, out)
	}
	b.cmd("pgbench -i -q -s 10 'host=127.0.0.1 port=PG dbname=bench user=bench sslmode=disable'")
	if err := grantFloor(ctx, b.pg); err != nil {
		return err
	}
	if !b.o.skipMy {
		b.logf("starting MariaDB (TLS)")
		if b.my, err = mariadb.Start(ctx, mariadb.Options{CA: ca, Args: []string{"--max-connections=500"}}); err != nil {
			return err
		}
		if err := b.my.CreateUser(ctx, myUser, myPassword); err != nil {
			return err
		}
		if err := b.my.CreateDatabase(ctx, myDB, myUser); err != nil {
			return err
		}
		if err := b.sysbenchFiles(ca); err != nil {
			return err
		}
	}
	if err := b.startHop(); err != nil {
		return err
	}
	if err := b.startBouncer(); err != nil {
		return err
	}
	if err := b.startSidecar(); err != nil {
		return err
	}
	if err := b.startFloor(); err != nil {
		return err
	}
	if !b.o.skipMy {
		if out, err := b.sysbench("oltp_point_select", "direct-tls", 1, 0, "prepare"); err != nil {
			return fmt.Errorf("sysbench prepare: %v\n%s", err, out)
		}
	}

	pgPaths := []string{"direct-plain", "direct-tls", "pgbouncer", "sidecar", "floor"}
	b.logf("warm-up")
	for _, p := range append(pgPaths, "sidecar-unix") {
		if _, err := b.pgbench(p, []string{"-S"}, 8, 2*time.Second); err != nil {
			return err
		}
	}
	pgCases := []struct {
		name    string
		args    []string
		clients int
	}{
		{"-S", []string{"-S"}, 1},
		{"-S", []string{"-S"}, 8},
		{"-S", []string{"-S"}, 32},
		{"-S -M prepared", []string{"-S", "-M", "prepared"}, 8},
		{"TPC-B (default)", nil, 8},
		{"-S -C", []string{"-S", "-C"}, 16},
	}
	for _, c := range pgCases {
		paths := pgPaths
		if c.name == "-S" && c.clients == 8 {
			// The app side over the sidecar's unix socket, beside the same sidecar over TCP.
			paths = append(slices.Clone(pgPaths), "sidecar-unix")
		}
		if c.name == "-S -C" {
			paths = pgPaths[:4] // a new TLS session per connection: the floor would measure only the handshake
		}
		if err := b.runPG("", c.name, c.args, c.clients, paths); err != nil {
			return err
		}
	}
	if !b.o.skipMy {
		myPaths := []string{"direct-tls", "sidecar"}
		for _, p := range myPaths {
			if _, err := b.sysbenchRun("oltp_point_select", p, 8, 2*time.Second); err != nil {
				return err
			}
		}
		for _, test := range []string{"oltp_point_select", "oltp_read_only"} {
			for _, n := range []int{1, 8, 32} {
				if err := b.runSysbench("", test, n, myPaths); err != nil {
					return err
				}
			}
		}
	}
	if err := b.distanceCases(); err != nil {
		return err
	}
	if err := b.readingRuns(); err != nil {
		return err
	}
	// Connect per query: a new connection (and, through the sidecar, a new upstream TLS session
	// and login) for every SELECT 1.
	engines := []string{"postgres"}
	if !b.o.skipMy {
		engines = append(engines, "mysql")
	}
	for _, eng := range engines {
		if !b.want("connect-loop", eng, 4) {
			continue
		}
		paths := []string{"direct-tls", "sidecar"}
		if eng == "postgres" {
			paths = []string{"direct-tls", "pgbouncer", "sidecar"}
		}
		samples, err := b.interleave("connect-loop/"+eng, paths, func(p string) (sample, error) {
			return b.connectLoop(eng, p, 4, b.o.dur)
		})
		if err != nil {
			return err
		}
		for _, p := range paths {
			b.add("connect-loop", eng+" connect+SELECT 1", p, 4, samples[p])
		}
	}
	if err := b.runReuse(); err != nil {
		return err
	}
	if !b.o.skipIdle && b.want("idle", "sessions", b.o.idle) {
		b.idleKB, b.idleErr = b.idleMemory(b.o.idle)
		if b.idleErr != nil {
			b.logf("idle test: %v", b.idleErr)
		}
	}
	b.total = time.Since(b.started)
	if err := b.writeReport(); err != nil {
		return err
	}
	return writePlot(b.o.png, b.results)
}

func (b *bench) add(suite, name, path string, clients int, ss []sample) {
	b.addAt("", suite, name, path, clients, ss)
}

func (b *bench) addAt(dist, suite, name, path string, clients int, ss []sample) {
	med := func(f func(sample) float64) float64 {
		v := make([]float64, 0, len(ss))
		for _, s := range ss {
			v = append(v, f(s))
		}
		sort.Float64s(v)
		if len(v) == 0 {
			return 0
		}
		return v[len(v)/2]
	}
	var hwm int64
	for _, s := range ss {
		hwm = max(hwm, s.hwmKB)
	}
	r := result{dist: dist, suite: suite, name: name, path: path, clients: clients, runs: len(ss), s: sample{
		tps: med(func(s sample) float64 { return s.tps }), p50: med(func(s sample) float64 { return s.p50 }),
		p99: med(func(s sample) float64 { return s.p99 }), p999: med(func(s sample) float64 { return s.p999 }),
		cpuPerTx: med(func(s sample) float64 { return s.cpuPerTx }), hwmKB: hwm,
	}}
	b.results = append(b.results, r)
	b.logf("%-6s %-12s %-18s c=%-3d %-12s tps %9.1f p50 %.3f p99 %.3f p99.9 %.3f cpu/tx %.1fµs hwm %d KiB",
		dist, suite, name, clients, path, r.s.tps, r.s.p50, r.s.p99, r.s.p999, r.s.cpuPerTx, hwm)
}

// --- processes -------------------------------------------------------------------------------

func ensurePackages(logf func(string, ...any)) error {
	var missing []string
	for bin, pkg := range map[string]string{"pgbouncer": "pgbouncer", "sysbench": "sysbench", "pgbench": "postgresql-contrib"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err := os.Stat("/usr/sbin/" + bin); err != nil {
				missing = append(missing, pkg)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	logf("installing %v", missing)
	cmd := exec.Command("apt-get", append([]string{"install", "-y"}, missing...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %v: %v\n%s", missing, err, out)
	}
	return nil
}

// raiseNoFile lifts the open-file limit to the hard limit: the idle test holds thousands of
// sockets here and twice as many in the sidecar, which inherits the limit.
func raiseNoFile(logf func(string, ...any)) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		logf("setrlimit: %v", err)
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (b *bench) startBouncer() error {
	dir := filepath.Join(b.dir, "pgbouncer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	b.bncPort = freePort()
	users := fmt.Sprintf("%q %q\n", pgUser, pgPassword)
	// server_idle_timeout = 1: PgBouncer closes its server connections a second after a run
	// ends, so that every path's run starts on fresh PostgreSQL backends. Kept for the next
	// run (the default is 10 minutes), PgBouncer's backends would arrive warm (shared buffers
	// already mapped, caches filled) while the direct and sidecar runs pay for new backends,
	// a difference in the server's work, not the proxy's: at 5 s runs it was worth about 40 µs
	// of PostgreSQL CPU per -S transaction. Within a run the pool works as usual (-S -C and the
	// connect loop reuse server connections).
	var atDistance strings.Builder
	for _, d := range distances {
		_, port, _ := net.SplitHostPort(b.hopPG[d.name])
		fmt.Fprintf(&atDistance, "%s = host=127.0.0.1 port=%s dbname=%s user=%s password=%s\n", bouncerDB(d.name), port, pgDB, pgUser, pgPassword)
	}
	ini := fmt.Sprintf(`[databases]
%s = host=127.0.0.1 port=%d dbname=%s user=%s password=%s
%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = session
max_client_conn = 500
default_pool_size = 64
server_idle_timeout = 1
server_tls_sslmode = verify-full
server_tls_ca_file = %s
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
`, pgDB, b.pg.Port, pgDB, pgUser, pgPassword, atDistance.String(), b.bncPort, filepath.Join(dir, "users.txt"), b.caFile)
	if err := os.WriteFile(filepath.Join(dir, "users.txt"), []byte(users), 0o644); err != nil {
		return err
	}
	iniFile := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(iniFile, []byte(ini), 0o644); err != nil {
		return err
	}
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer"
	}
	b.bouncer = exec.Command(bin, iniFile)
	logFile, err := os.Create(filepath.Join(dir, "pgbouncer.log"))
	if err != nil {
		return err
	}
	b.bouncer.Stdout, b.bouncer.Stderr = logFile, logFile
	// PgBouncer refuses to run as root.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("pgbouncer must not run as root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		b.bouncer.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	if b.bouncer.SysProcAttr == nil {
		b.bouncer.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Ends with the benchmark even if it dies without its cleanup.
	b.bouncer.SysProcAttr.Pdeathsig = syscall.SIGTERM
	if err := b.bouncer.Start(); err != nil {
		return err
	}
	b.cmd("pgbouncer pgbouncer.ini   # as user postgres; the ini is in the table notes below")
	b.notes = append(b.notes, "PgBouncer "+pkgVersion("pgbouncer")+" ini:\n\n```ini\n"+strings.ReplaceAll(ini, pgPassword, "***")+"```")
	return waitTCP(fmt.Sprintf("127.0.0.1:%d", b.bncPort), 10*time.Second)
}

func (b *bench) startSidecar() error {
	pwFile := filepath.Join(b.dir, "pg-password")
	if err := os.WriteFile(pwFile, []byte(pgPassword+"\n"), 0o600); err != nil {
		return err
	}
	b.sidePG = fmt.Sprintf("127.0.0.1:%d", freePort())
	b.sideMy = fmt.Sprintf("127.0.0.1:%d", freePort())
	b.admin = fmt.Sprintf("127.0.0.1:%d", freePort())
	b.sideSock = filepath.Join(b.dir, "sock")
	cfg := config.Config{Admin: config.Admin{Listen: b.admin}, Listeners: []config.Listener{{
		Name: "pg", Listen: b.sidePG, UnixSocket: b.sideSock, MaxConnections: b.o.idle + 100,
		Auth:  config.Auth{Mode: config.AuthPassword, PasswordFile: pwFile},
		TLS:   config.TLS{CAFile: b.caFile},
		Paths: []config.Path{{Name: "direct", Address: b.pg.Addr(), TLSServerName: "localhost"}},
	}}}
	// One listener per network distance, whose only path crosses that distance's hop.
	b.sidePGAt, b.sideMyAt = map[string]string{}, map[string]string{}
	for _, d := range distances {
		b.sidePGAt[d.name] = fmt.Sprintf("127.0.0.1:%d", freePort())
		cfg.Listeners = append(cfg.Listeners, config.Listener{
			Name: "pg-" + d.id, Listen: b.sidePGAt[d.name], MaxConnections: 200,
			Auth:  config.Auth{Mode: config.AuthPassword, PasswordFile: pwFile},
			TLS:   config.TLS{CAFile: b.caFile},
			Paths: []config.Path{{Name: "hop", Address: b.hopPG[d.name], TLSServerName: "localhost"}},
		})
	}
	if b.my != nil {
		myPw := filepath.Join(b.dir, "my-password")
		if err := os.WriteFile(myPw, []byte(myPassword+"\n"), 0o600); err != nil {
			return err
		}
		cfg.Listeners = append(cfg.Listeners, config.Listener{
			Name: "mysql", Engine: config.EngineMySQL, Listen: b.sideMy,
			Auth:  config.Auth{Mode: config.AuthPassword, PasswordFile: myPw},
			TLS:   config.TLS{Mode: config.TLSVerifyFull, CAFile: b.caFile},
			Paths: []config.Path{{Name: "direct", Address: b.my.Addr(), TLSServerName: "localhost", TokenHost: b.my.Addr()}},
		})
		for _, d := range distances {
			b.sideMyAt[d.name] = fmt.Sprintf("127.0.0.1:%d", freePort())
			cfg.Listeners = append(cfg.Listeners, config.Listener{
				Name: "mysql-" + d.id, Engine: config.EngineMySQL, Listen: b.sideMyAt[d.name],
				Auth:  config.Auth{Mode: config.AuthPassword, PasswordFile: myPw},
				TLS:   config.TLS{Mode: config.TLSVerifyFull, CAFile: b.caFile},
				Paths: []config.Path{{Name: "hop", Address: b.hopMy[d.name], TLSServerName: "localhost", TokenHost: b.my.Addr()}},
			})
		}
	}
	body, err := config.Marshal(&cfg)
	if err != nil {
		return err
	}
	file := filepath.Join(b.dir, "sidecar.yaml")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		return err
	}
	if b.sideLog, err = os.Create(filepath.Join(b.dir, "sidecar.log")); err != nil {
		return err
	}
	b.side = exec.Command(b.o.sidecar, "--config", file)
	b.side.Env = append(os.Environ(), strings.Fields(b.o.sideEnv)...)
	if b.o.profile != "" {
		if err := os.MkdirAll(b.o.profile, 0o755); err != nil {
			return err
		}
		b.pprof = fmt.Sprintf("127.0.0.1:%d", freePort())
		b.profiledKeys = map[string]bool{}
		b.side.Env = append(b.side.Env, "RDSVALET_PPROF_LISTEN="+b.pprof)
	}
	b.side.Stdout, b.side.Stderr = b.sideLog, b.sideLog
	b.side.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := b.side.Start(); err != nil {
		return err
	}
	b.cmd(strings.TrimSpace(b.o.sideEnv+" "+b.o.sidecar) + " --config sidecar.yaml   # config in the notes below")
	b.notes = append(b.notes, "Sidecar config:\n\n```yaml\n"+string(body)+"```")
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + b.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(b.sideLog.Name())
			return fmt.Errorf("sidecar not ready: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond) // polling a separate process's readiness endpoint
	}
}

func waitTCP(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond) // polling a separate process's listener
	}
}

func (b *bench) cleanup() {
	b.cleanOnce.Do(b.doCleanup)
}

func (b *bench) doCleanup() {
	b.stopReuseSidecar()
	for _, c := range []*exec.Cmd{b.side, b.bouncer, b.floor, b.hop} {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = c.Process.Kill()
			}
		}
	}
	if b.my != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = b.my.Stop(ctx)
		cancel()
	}
	if b.pg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = b.pg.Stop(ctx)
		cancel()
	}
	if b.dir != "" && os.Getenv("PERFBENCH_KEEP") == "" {
		_ = os.RemoveAll(b.dir)
	}
}

func pkgVersion(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil {
		return "?"
	}
	return string(out)
}

// --- proxy process accounting ------------------------------------------------------------

// proxyPID is the process whose CPU and memory a path's row reports: the sidecar or PgBouncer.
func (b *bench) proxyPID(path string) int {
	switch path {
	case "sidecar", "sidecar-unix":
		return b.side.Process.Pid
	case "floor":
		return b.floor.Process.Pid
	case "pgbouncer":
		return b.bouncer.Process.Pid
	case reusePath:
		if b.reuse != nil {
			return b.reuse.cmd.Process.Pid
		}
	}
	return 0
}

var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || v <= 0 {
		return 100
	}
	return v
}()

// cpuMicros is utime+stime of pid in microseconds.
func cpuMicros(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clkTck * 1e6
}

// status reads a kB field (VmRSS, VmHWM) of /proc/pid/status.
func status(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// meter brackets one run: CPU delta and the peak RSS within the run (VmHWM reset through
// clear_refs, which needs root; without it the peak is the process lifetime's).
type meter struct {
	pid int
	cpu float64
}

func startMeter(pid int) meter {
	if pid == 0 {
		return meter{}
	}
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	return meter{pid: pid, cpu: cpuMicros(pid)}
}

func (m meter) stop(s *sample, tx float64) {
	if m.pid == 0 {
		s.cpuPerTx = -1
		return
	}
	if tx > 0 {
		s.cpuPerTx = (cpuMicros(m.pid) - m.cpu) / tx
	}
	s.hwmKB = status(m.pid, "VmHWM")
}

// --- pgbench -----------------------------------------------------------------------------

func (b *bench) pgConn(path string) string { return b.pgConnAt("", path) }

// pgConnAt is path's conninfo at a network distance: the direct path dials the hop in front of
// PostgreSQL, the proxies have a listener (database, for PgBouncer) whose upstream is the hop.
func (b *bench) pgConnAt(dist, path string) string {
	db, pgAddr := pgDB, b.pg.Addr()
	if dist != "" {
		db, pgAddr = bouncerDB(dist), b.hopPG[dist]
	}
	hostPort := func(addr string) string {
		host, port, _ := net.SplitHostPort(addr)
		return "host=" + host + " port=" + port
	}
	base := fmt.Sprintf("user=%s ", pgUser)
	switch path {
	case "direct-plain":
		return base + fmt.Sprintf("dbname=%s %s sslmode=disable", pgDB, hostPort(pgAddr))
	case "direct-tls":
		return base + fmt.Sprintf("dbname=%s %s sslmode=verify-full sslrootcert=%s", pgDB, hostPort(pgAddr), b.caFile)
	case "pgbouncer":
		return base + fmt.Sprintf("dbname=%s host=127.0.0.1 port=%d sslmode=disable", db, b.bncPort)
	case "sidecar":
		addr := b.sidePG
		if dist != "" {
			addr = b.sidePGAt[dist]
		}
		return base + fmt.Sprintf("dbname=%s %s sslmode=disable", pgDB, hostPort(addr))
	case "sidecar-unix":
		_, port, _ := net.SplitHostPort(b.sidePG)
		return base + fmt.Sprintf("dbname=%s host=%s port=%s", pgDB, b.sideSock, port)
	case "floor":
		return fmt.Sprintf("user=%s dbname=%s %s sslmode=disable", floorUser, pgDB, hostPort(b.floorPG[dist]))
	}
	if addr, ok := b.reuseAddr("postgres", path); ok {
		host, port, _ := net.SplitHostPort(addr)
		return base + fmt.Sprintf("dbname=%s host=%s port=%s sslmode=disable", pgDB, host, port)
	}
	panic(path)
}

func (b *bench) pgbench(path string, args []string, clients int, dur time.Duration) (sample, error) {
	return b.pgbenchAt("", path, args, clients, dur)
}

func (b *bench) pgbenchAt(dist, path string, args []string, clients int, dur time.Duration) (sample, error) {
	logDir, err := os.MkdirTemp(b.dir, "pglog-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(logDir)
	jobs := min(clients, runtime.NumCPU())
	a := append([]string{"-n"}, args...)
	a = append(a, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs), "-T", strconv.Itoa(int(dur.Seconds())),
		"--log", "--log-prefix="+filepath.Join(logDir, "tx"))
	b.cmd("PGPASSWORD=... pgbench " + strings.Join(a[:len(a)-2], " ") + " --log '<" + path + " conninfo>'")
	a = append(a, b.pgConnAt(dist, path))
	// A hung run (a lost message would hang pgbench for ever) fails the benchmark instead.
	ctx, cancel := context.WithTimeout(context.Background(), dur+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pgbench", a...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pgPassword)
	m := startMeter(b.proxyPID(path))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return sample{}, fmt.Errorf("%v\n%s", err, out)
	}
	var s sample
	var tx float64
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "tps = "); ok && s.tps == 0 {
			s.tps, _ = strconv.ParseFloat(strings.Fields(v)[0], 64)
		}
		if v, ok := strings.CutPrefix(line, "number of transactions actually processed: "); ok {
			tx, _ = strconv.ParseFloat(strings.Fields(strings.Split(v, "/")[0])[0], 64)
		}
	}
	m.stop(&s, tx)
	if tx == 0 {
		// A run whose clients spent it connecting (a loaded machine): it stays a sample (the
		// median of the repetitions absorbs one), and the report says how many there were.
		b.emptyRuns = append(b.emptyRuns, fmt.Sprintf("%s pgbench %s c%d", path+"@"+dist, strings.Join(args, " "), clients))
		b.logf("pgbench %s on %s (distance %q): no transactions:\n%s", strings.Join(args, " "), path, dist, out)
	}
	// Per-transaction log lines: client_id transaction_no time(µs) script_no epoch µs.
	var lat []float64
	files, _ := filepath.Glob(filepath.Join(logDir, "tx*"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) >= 3 {
				if v, err := strconv.ParseFloat(fs[2], 64); err == nil {
					lat = append(lat, v/1000)
				}
			}
		}
		fh.Close()
	}
	s.p50, s.p99, s.p999 = percentiles(lat)
	return s, nil
}

func percentiles(v []float64) (p50, p99, p999 float64) {
	if len(v) == 0 {
		return
	}
	sort.Float64s(v)
	at := func(q float64) float64 { return v[min(len(v)-1, int(q*float64(len(v))))] }
	return at(0.50), at(0.99), at(0.999)
}

// --- sysbench ----------------------------------------------------------------------------

// sysbenchFiles puts the TLS files where sysbench 1.0 looks for them: cacert.pem,
// client-cert.pem and client-key.pem in its working directory (it has no options for them, and
// fails without a client certificate). The harness's MariaDB trusts the benchmark's CA as its
// ssl-ca, so a client certificate from that CA is accepted.
func (b *bench) sysbenchFiles(ca *pki.CA) error {
	dir := filepath.Join(b.dir, "sysbench")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cacert.pem"), ca.CertPEM(), 0o644); err != nil {
		return err
	}
	leaf, err := ca.Issue([]string{"sysbench"}, nil)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "client-cert.pem"), leaf.CertPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "client-key.pem"), leaf.KeyPEM, 0o600)
}

func (b *bench) sysbench(test, path string, threads int, dur time.Duration, verb string) (string, error) {
	return b.sysbenchAt("", test, path, threads, dur, verb)
}

func (b *bench) sysbenchAt(dist, test, path string, threads int, dur time.Duration, verb string) (string, error) {
	addr := b.my.Addr()
	ssl := "on"
	switch {
	case path == "sidecar" && dist == "":
		addr, ssl = b.sideMy, "off"
	case path == "sidecar":
		addr, ssl = b.sideMyAt[dist], "off"
	case dist != "":
		addr = b.hopMy[dist]
	}
	host, port, _ := net.SplitHostPort(addr)
	a := []string{test, "--db-driver=mysql", "--mysql-host=" + host, "--mysql-port=" + port,
		"--mysql-user=" + myUser, "--mysql-db=" + myDB, "--mysql-ssl=" + ssl,
		"--tables=1", "--table-size=10000", "--threads=" + strconv.Itoa(threads)}
	if verb == "run" {
		a = append(a, "--time="+strconv.Itoa(int(dur.Seconds())), "--histogram=on", "--percentile=99", "--report-interval=0")
	}
	a = append(a, verb)
	b.cmd("sysbench " + strings.Join(a, " ") + "   # + --mysql-password; " + path)
	ctx, cancel := context.WithTimeout(context.Background(), dur+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sysbench", append([]string{"--mysql-password=" + myPassword}, a...)...)
	cmd.Dir = filepath.Join(b.dir, "sysbench")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (b *bench) sysbenchRun(test, path string, threads int, dur time.Duration) (sample, error) {
	return b.sysbenchRunAt("", test, path, threads, dur)
}

func (b *bench) sysbenchRunAt(dist, test, path string, threads int, dur time.Duration) (sample, error) {
	m := startMeter(b.proxyPID(path))
	out, err := b.sysbenchAt(dist, test, path, threads, dur, "run")
	if err != nil {
		return sample{}, fmt.Errorf("%v\n%s", err, out)
	}
	var s sample
	var tx float64
	var hist [][2]float64 // latency ms, count
	inHist := false
	for _, line := range strings.Split(out, "\n") {
		t := strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(t, "transactions:"); ok {
			f := strings.Fields(v)
			tx, _ = strconv.ParseFloat(f[0], 64)
			s.tps, _ = strconv.ParseFloat(strings.TrimPrefix(f[1], "("), 64)
		}
		if strings.Contains(t, "distribution") {
			inHist = true
			continue
		}
		if inHist {
			f := strings.Fields(t)
			if len(f) < 2 || !strings.HasPrefix(f[1], "|") {
				if len(hist) > 0 {
					inHist = false
				}
				continue
			}
			v, err1 := strconv.ParseFloat(f[0], 64)
			c, err2 := strconv.ParseFloat(f[len(f)-1], 64)
			if err1 == nil && err2 == nil {
				hist = append(hist, [2]float64{v, c})
			}
		}
	}
	m.stop(&s, tx)
	var total float64
	for _, h := range hist {
		total += h[1]
	}
	q := func(p float64) float64 {
		var acc float64
		for _, h := range hist {
			acc += h[1]
			if acc >= p*total {
				return h[0]
			}
		}
		return 0
	}
	s.p50, s.p99, s.p999 = q(0.5), q(0.99), q(0.999)
	if s.tps == 0 {
		return s, fmt.Errorf("no transactions in sysbench output:\n%s", out)
	}
	return s, nil
}

// --- connect per query -----------------------------------------------------------------------

func (b *bench) connectLoop(engine, path string, workers int, dur time.Duration) (sample, error) {
	var once func(ctx context.Context) error
	switch engine {
	case "postgres":
		cfg, err := pgx.ParseConfig(b.pgConn(path))
		if err != nil {
			return sample{}, err
		}
		cfg.Password = pgPassword
		once = func(ctx context.Context) error {
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				return err
			}
			defer c.Close(ctx)
			_, err = c.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol)
			return err
		}
	case "mysql":
		cfg := mysql.NewConfig()
		cfg.User, cfg.Passwd, cfg.DBName, cfg.Net = myUser, myPassword, myDB, "tcp"
		cfg.Addr = b.sideMy
		if addr, ok := b.reuseAddr("mysql", path); ok {
			cfg.Addr = addr
		}
		if path == "direct-tls" {
			cfg.Addr = b.my.Addr()
			cfg.TLS = &tls.Config{RootCAs: b.ca.CertPool(), ServerName: "localhost"}
		}
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return sample{}, err
		}
		once = func(ctx context.Context) error {
			c, err := conn.Connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			rows, err := c.(driver.QueryerContext).QueryContext(ctx, "SELECT 1", nil)
			if err != nil {
				return err
			}
			return rows.Close()
		}
	}
	b.cmd(fmt.Sprintf("perfbench connect loop: %d workers, each: connect (%s) + SELECT 1 + close, for %s", workers, engine, dur))
	deadline := time.Now().Add(dur)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	m := startMeter(b.proxyPID(path))
	var (
		mu   sync.Mutex
		lat  []float64
		n    atomic.Int64
		wg   sync.WaitGroup
		fail atomic.Value
	)
	begin := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			for ctx.Err() == nil {
				t := time.Now()
				if err := once(ctx); err != nil {
					// A dial cut short by the run's own deadline is the end of the run, not a
					// failure (the dialer may see the deadline before ctx.Err is set).
					if ctx.Err() == nil && time.Until(deadline) > 50*time.Millisecond {
						fail.Store(err)
					}
					break
				}
				mine = append(mine, float64(time.Since(t).Microseconds())/1000)
				n.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if err, _ := fail.Load().(error); err != nil {
		return sample{}, err
	}
	s := sample{tps: float64(n.Load()) / elapsed.Seconds()}
	m.stop(&s, float64(n.Load()))
	s.p50, s.p99, s.p999 = percentiles(lat)
	return s, nil
}

// memstats reads the sidecar's Go runtime gauges from its /metrics.
func (b *bench) memstats() map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + b.admin + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (strings.HasPrefix(f[0], "go_memstats_") || f[0] == "go_goroutines") {
			out[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return out
}

// --- idle memory -----------------------------------------------------------------------------

// idleMemory opens n sessions through the sidecar, each logged in and having run one query,
// and reports the sidecar's RSS growth per session while they sit idle.
func (b *bench) idleMemory(n int) (float64, error) {
	b.logf("idle test: %d sessions through the sidecar", n)
	pid := b.side.Process.Pid
	before := status(pid, "VmRSS")
	msBefore := b.memstats()
	cfg, err := pgx.ParseConfig(b.pgConn("sidecar"))
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conns := make([]*pgx.Conn, n)
	var wg sync.WaitGroup
	var fail atomic.Value
	var next atomic.Int64
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || fail.Load() != nil {
					return
				}
				c, err := pgx.ConnectConfig(ctx, cfg)
				if err == nil {
					_, err = c.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol)
				}
				if err != nil {
					fail.Store(fmt.Errorf("session %d: %w", i, err))
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close(context.Background())
			}
		}
	}()
	if err, _ := fail.Load().(error); err != nil {
		return 0, err
	}
	after := status(pid, "VmRSS")
	msAfter := b.memstats()
	var parts []string
	for _, k := range []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_sys_bytes"} {
		parts = append(parts, fmt.Sprintf("%s %+.1f", strings.TrimPrefix(k, "go_memstats_"), (msAfter[k]-msBefore[k])/1024/float64(n)))
	}
	memNote := "Go runtime growth per session, KiB (from /metrics): " + strings.Join(parts, ", ") + fmt.Sprintf("; goroutines %.0f -> %.0f.", msBefore["go_goroutines"], msAfter["go_goroutines"])
	b.logf("idle: %s", memNote)
	if b.o.profile != "" && b.pprof != "" {
		for _, p := range []string{"heap", "goroutine"} {
			if err := fetch(fmt.Sprintf("http://%s/debug/pprof/%s", b.pprof, p), filepath.Join(b.o.profile, p+"-idle.pprof")); err != nil {
				b.logf("profile %s: %v", p, err)
			}
		}
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
			_ = os.WriteFile(filepath.Join(b.o.profile, "smaps-idle.txt"), data, 0o644)
		}
	}
	b.notes = append(b.notes, fmt.Sprintf("Idle test: sidecar VmRSS %d KiB before, %d KiB with %d idle sessions (each logged in, one query run). %s", before, after, n, memNote))
	return float64(after-before) / float64(n), nil
}
