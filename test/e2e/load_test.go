package e2e

// The load suite: a connection storm against max_connections, a soak at steady load with leak
// checks, and SIGTERM under load. See docs/reliability.md.

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
)

var soakFlag = flag.Duration("soak", 0, "length of TestLoadSoak (default $RDSVALET_SOAK, else 60s)")

// soakDuration is the soak's length: -soak, else $RDSVALET_SOAK, else 60 s.
func soakDuration(t *testing.T) time.Duration {
	if *soakFlag > 0 {
		return *soakFlag
	}
	if v := os.Getenv("RDSVALET_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("RDSVALET_SOAK=%q: %v", v, err)
		}
		return d
	}
	return 60 * time.Second
}

// pgRaw is a minimal PostgreSQL client on a raw connection: light enough to run thousands
// at once from the test process.
type pgRaw struct {
	c net.Conn
	r *bufio.Reader
}

// pgRawConnect logs in as app; it returns the session, or the SQLSTATE of the ErrorResponse
// the sidecar answered with, or an error if the connection ended without one.
func pgRawConnect(addr string, deadline time.Time) (*pgRaw, string, error) {
	t0 := time.Now()
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return nil, "", err
	}
	t1 := time.Now()
	_ = c.SetDeadline(deadline)
	p := &pgRaw{c: c, r: bufio.NewReader(c)}
	if _, err := c.Write(startupPacket("user", "app", "database", "app")); err != nil {
		c.Close()
		return nil, "", err
	}
	t2 := time.Now()
	code, err := p.untilReady()
	if err != nil {
		err = &rawError{after: time.Since(t0), err: fmt.Errorf("connect %v, startup sent after %v, then %v: %w", t1.Sub(t0), t2.Sub(t0), time.Since(t2), err)}
	}
	if err != nil || code != "" {
		c.Close()
		return nil, code, err
	}
	return p, "", nil
}

// rawError is a connection that ended without a protocol answer, after that long from the
// dial.
type rawError struct {
	after time.Duration
	err   error
}

func (e *rawError) Error() string { return e.err.Error() }
func (e *rawError) Unwrap() error { return e.err }

// refuseWindow is how long the sidecar waits for a refused client's startup packet
// (proxy.refuseTimeout). When the machine is so loaded that the sidecar does not get to read
// a startup packet within it, the client is dropped without an answer.
const refuseWindow = 5 * time.Second

// untilReady reads messages up to ReadyForQuery; it returns the SQLSTATE of an ErrorResponse
// that ends the connection before that.
func (p *pgRaw) untilReady() (string, error) {
	code := ""
	for {
		typ, body, err := p.read()
		if err != nil {
			if code != "" {
				return code, nil // a FATAL error, then the close
			}
			return "", err
		}
		switch typ {
		case 'E':
			code = errorCode(body)
		case 'Z':
			if code != "" {
				return code, nil
			}
			return "", nil
		}
	}
}

func (p *pgRaw) read() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n > 1<<20 {
		return 0, nil, fmt.Errorf("bad message length %d", n)
	}
	body := make([]byte, n-4)
	_, err := io.ReadFull(p.r, body)
	return hdr[0], body, err
}

func errorCode(body []byte) string {
	for _, f := range strings.Split(string(body), "\x00") {
		if len(f) > 1 && f[0] == 'C' {
			return f[1:]
		}
	}
	return "?"
}

// query runs a simple query and returns the first column of the first row.
func (p *pgRaw) query(sql string) (string, error) {
	msg := append([]byte{'Q', 0, 0, 0, 0}, sql...)
	msg = append(msg, 0)
	binary.BigEndian.PutUint32(msg[1:], uint32(len(msg)-1))
	if _, err := p.c.Write(msg); err != nil {
		return "", err
	}
	val := ""
	for {
		typ, body, err := p.read()
		if err != nil {
			return "", err
		}
		switch typ {
		case 'D':
			if len(body) >= 6 {
				n := int(int32(binary.BigEndian.Uint32(body[2:6])))
				if n >= 0 && 6+n <= len(body) {
					val = string(body[6 : 6+n])
				}
			}
		case 'E':
			return "", fmt.Errorf("query error %s", errorCode(body))
		case 'Z':
			return val, nil
		}
	}
}

func (p *pgRaw) close() {
	_, _ = p.c.Write([]byte{'X', 0, 0, 0, 4})
	_ = p.c.Close()
}

// fdLimit returns the soft and hard RLIMIT_NOFILE of process pid.
func fdLimit(t *testing.T, pid int) (soft, hard uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "Max open files") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
		if len(f) < 2 {
			break
		}
		soft, _ = strconv.ParseUint(f[0], 10, 64)
		hard, _ = strconv.ParseUint(f[1], 10, 64)
		return soft, hard
	}
	t.Fatalf("no open-files limit in /proc/%d/limits", pid)
	return 0, 0
}

// TestLoadConnectionStorm sends 2,000 concurrent PostgreSQL connects (and 500 MySQL ones) at
// listeners whose max_connections is 100 (50): every attempt ends within the bound (nothing
// deadlocks), each one either logs in or is refused with the protocol's error (53300 /
// ERR 1040), never more sessions than the limit, and once the storm is over the listener
// accepts up to its limit again and the sidecar is back to its baseline.
//
// The sidecar is started with a soft RLIMIT_NOFILE of 1024, below what the storm needs: it
// must raise its own limit (the Go runtime does so at start since Go 1.19, to the hard limit
// minus one), or accepts fail.
// The limits are below the harness PostgreSQL's max_connections (200) and MariaDB's (151), so
// that every refusal is the sidecar's own.
func TestLoadConnectionStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("the storm runs 2,500 connections; skipped with -short")
	}
	const (
		pgClients, pgLimit = 2000, 100
		myClients, myLimit = 500, 50
	)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max < 3*pgClients {
		t.Skipf("RLIMIT_NOFILE hard limit %d is too low for the storm", lim.Max)
	}
	sharedMyWorld(t) // the databases start with the test's own limits
	// The sidecar inherits 1024 as its soft limit; the test process gets its full limit back
	// at once, as it needs a connection per client.
	low := syscall.Rlimit{Cur: 1024, Max: lim.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var e *faultEnv
	func() {
		defer func() {
			full := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &full); err != nil {
				t.Fatal(err)
			}
		}()
		// Generous upstream bounds: 100 logins at once make PostgreSQL fork 100 backends on a
		// shared 2-core machine, and login timeouts would mark the only path down (closing
		// the idle sessions the test holds); the limits are what is under test here.
		e = startFaultEnv(t, faultOptions{loadDefaults: true, connectTimeout: 30 * time.Second, health: "{fall: 10}",
			pgExtra: fmt.Sprintf("    max_connections: %d", pgLimit), myExtra: fmt.Sprintf("    max_connections: %d", myLimit)})
	}()
	soft, hard := fdLimit(t, e.s.cmd.Process.Pid)
	t.Logf("sidecar RLIMIT_NOFILE: soft %d, hard %d (started with soft 1024)", soft, hard)
	// Go sets the soft limit to the hard limit minus one (syscall/rlimit.go).
	if soft+1 < hard {
		t.Errorf("the sidecar did not raise its open-files soft limit (%d) to the hard limit (%d)", soft, hard)
	}
	e.warmBaseline(t)

	t.Run("postgres", func(t *testing.T) {
		ok, refused, late, took := pgStorm(t, e, pgClients, pgLimit)
		t.Logf("%d connects in %v: %d logged in, %d refused with 53300", pgClients, took.Round(time.Millisecond), ok, refused)
		// Late clients were refused too, only too late to read it.
		if v := e.s.metric("rdsvalet_proxy_connections_total", `listener="pg"`, `result="refused_limit"`); v < float64(refused) || v > float64(refused+late) {
			t.Errorf("refused_limit = %v, want %d (+ up to %d late)", v, refused, late)
		}
		assertNoLeak(t, e.s, e.base)
		// Afterwards the listener takes up to its limit again, all at once.
		ok, refused, _, _ = pgStorm(t, e, pgLimit, pgLimit)
		if ok != pgLimit || refused != 0 {
			t.Errorf("after the storm: %d of %d logged in, %d refused", ok, pgLimit, refused)
		}
		assertNoLeak(t, e.s, e.base)
	})
	t.Run("mysql", func(t *testing.T) {
		ok, refused, took := myStorm(t, e, myClients, myLimit)
		t.Logf("%d connects in %v: %d logged in, %d refused with ERR 1040", myClients, took.Round(time.Millisecond), ok, refused)
		assertNoLeak(t, e.s, e.base)
		ok, refused, _ = myStorm(t, e, myLimit, myLimit)
		if ok != myLimit || refused != 0 {
			t.Errorf("after the storm: %d of %d logged in, %d refused", ok, myLimit, refused)
		}
		assertNoLeak(t, e.s, e.base)
	})
}

// pgStorm opens n PostgreSQL connections at once; the ones that log in run a query and stay
// open until every attempt has ended, so that at most limit can succeed.
func pgStorm(t *testing.T, e *faultEnv, n, limit int) (ok, refused, late int, took time.Duration) {
	t.Helper()
	var (
		mu       sync.Mutex
		sessions []*pgRaw
		others   []string
	)
	gate := make(chan struct{})
	var attempts sync.WaitGroup
	for range n {
		attempts.Add(1)
		go func() {
			defer attempts.Done()
			<-gate
			p, code, err := pgRawConnect(e.s.pgAddr, time.Now().Add(90*time.Second))
			mu.Lock()
			defer mu.Unlock()
			var re *rawError
			switch {
			case p != nil:
				sessions = append(sessions, p)
			case code == "53300":
				refused++
			case errors.As(err, &re) && re.after > refuseWindow-time.Second:
				// Dropped at the end of the refusal window: on an overloaded machine the
				// sidecar (or this process) did not get to the startup packet within it. A
				// connection dropped sooner than that is a failure.
				late++
			default:
				others = append(others, fmt.Sprintf("%s %v", code, err))
			}
		}()
	}
	start := time.Now()
	close(gate)
	done := make(chan struct{})
	go func() { attempts.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the storm's connects did not all end within 2 minutes")
	}
	took = time.Since(start)
	ok = len(sessions)
	defer func() {
		for _, p := range sessions {
			p.close()
		}
	}()
	if len(others) > 0 {
		t.Errorf("%d attempts ended with neither a session nor 53300, e.g. %q", len(others), others[:min(5, len(others))])
	}
	if ok+refused+late != n {
		t.Errorf("%d sessions + %d refused + %d late != %d attempts", ok, refused, late, n)
	}
	if ok == 0 || ok > limit {
		t.Errorf("%d sessions logged in, want 1..%d", ok, limit)
	}
	if late > 0 {
		t.Logf("%d clients were dropped without an answer after the sidecar's %v refusal window (an overloaded machine)", late, refuseWindow)
	}
	// Every session works, all at once.
	var wg sync.WaitGroup
	var bad atomic.Int64
	for _, p := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, err := p.query("SELECT 41 + 1"); err != nil || v != "42" {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if b := bad.Load(); b > 0 {
		t.Errorf("%d of %d sessions failed a query", b, ok)
	}
	return ok, refused, late, took
}

// myStorm is pgStorm for MySQL, with the go-sql-driver client.
func myStorm(t *testing.T, e *faultEnv, n, limit int) (ok, refused int, took time.Duration) {
	t.Helper()
	var (
		mu     sync.Mutex
		conns  []*sql.Conn
		dbs    []*sql.DB
		others []string
	)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
		for _, db := range dbs {
			_ = db.Close()
		}
	}()
	gate := make(chan struct{})
	var attempts sync.WaitGroup
	for range n {
		cfg := mysql.NewConfig()
		cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "app", "tcp", e.s.myAddr, "app"
		cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 90*time.Second, 90*time.Second, 90*time.Second
		connector, err := mysql.NewConnector(cfg)
		if err != nil {
			t.Fatal(err)
		}
		db := sql.OpenDB(connector)
		dbs = append(dbs, db)
		attempts.Add(1)
		go func() {
			defer attempts.Done()
			<-gate
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			c, err := db.Conn(ctx)
			if err == nil {
				err = c.PingContext(ctx)
			}
			mu.Lock()
			defer mu.Unlock()
			var myErr *mysql.MySQLError
			switch {
			case err == nil:
				conns = append(conns, c)
			case errors.As(err, &myErr) && myErr.Number == 1040:
				refused++
			default:
				others = append(others, err.Error())
			}
		}()
	}
	start := time.Now()
	close(gate)
	done := make(chan struct{})
	go func() { attempts.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the storm's connects did not all end within 2 minutes")
	}
	took = time.Since(start)
	ok = len(conns)
	if len(others) > 0 {
		t.Errorf("%d attempts ended with neither a session nor ERR 1040, e.g. %q", len(others), others[:min(5, len(others))])
	}
	if ok+refused != n {
		t.Errorf("%d sessions + %d refused != %d attempts", ok, refused, n)
	}
	if ok == 0 || ok > limit {
		t.Errorf("%d sessions logged in, want 1..%d", ok, limit)
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var v int
			if err := c.QueryRowContext(ctxTimeout(t, time.Minute), "SELECT 41 + 1").Scan(&v); err != nil || v != 42 {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if b := bad.Load(); b > 0 {
		t.Errorf("%d of %d sessions failed a query", b, ok)
	}
	return ok, refused, took
}

// sample is one reading of the sidecar's resources during the soak.
type sample struct {
	at                   time.Duration
	goroutines, fds, rss float64
}

// TestLoadSoak runs steady load for soakDuration (60 s by default; `make soak` runs 10
// minutes): paced PostgreSQL and MySQL sessions (queries, prepared statements, transactions)
// and connection churn (connect, query, close). No operation may fail; goroutines, open fds
// and RSS must stay flat (the end of the run compared with its start, past a warm-up); once
// the load stops, the sidecar is back to its baseline.
func TestLoadSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs for a minute or more; skipped with -short")
	}
	dur := soakDuration(t)
	// Straight at the stand-ins with generous timeouts: the churn's logins must not fail
	// because a shared machine is slow for a moment; leaks and errors are under test.
	e := startFaultEnv(t, faultOptions{loadDefaults: true, connectTimeout: 30 * time.Second})
	e.warmBaseline(t)
	setup := connect(t, e.s, "app")
	mustExec(t, setup, "DROP TABLE IF EXISTS soak; CREATE TABLE soak (w int, n int, v text)")
	_ = setup.Close(context.Background())
	mydb := openMy(t, e.s, nil)
	myExec(t, mydb, "DROP TABLE IF EXISTS soak")
	myExec(t, mydb, "CREATE TABLE soak (w INT, n INT, v TEXT) ENGINE=InnoDB")
	_ = mydb.Close()

	// Each worker does one operation per tick: 8 workers at 40/s is ~320 operations a second,
	// a steady load that leaves the shared 2-core machine room to breathe.
	const tick = 25 * time.Millisecond
	ctx, stop := context.WithTimeout(context.Background(), dur)
	defer stop()
	var ops, churned atomic.Int64
	var errMu sync.Mutex
	var errs []error
	fail := func(w string, err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Errorf("%s: %w", w, err))
		}
	}
	paced := func(name string, op func(i int) error) func() {
		return func() {
			tk := time.NewTicker(tick)
			defer tk.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
				}
				if err := op(i); err != nil {
					if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
						return
					}
					fail(name, err)
					return
				}
				ops.Add(1)
			}
		}
	}
	opCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 30*time.Second)
	}
	var workers []func()
	var closers []func()
	for w := range 3 {
		c := connect(t, e.s, "app")
		closers = append(closers, func() { _ = c.Close(context.Background()) })
		if _, err := c.Prepare(context.Background(), "ins", "INSERT INTO soak VALUES ($1, $2, $3)"); err != nil {
			t.Fatal(err)
		}
		workers = append(workers, paced(fmt.Sprintf("pg session %d", w), func(i int) error {
			ctx, cancel := opCtx()
			defer cancel()
			switch i % 3 {
			case 0:
				var n int
				if err := c.QueryRow(ctx, "SELECT count(*) FROM generate_series(1, 500)").Scan(&n); err != nil || n != 500 {
					return fmt.Errorf("select: %d, %v", n, err)
				}
			case 1:
				tx, err := c.Begin(ctx)
				if err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "ins", w, i, strings.Repeat("s", 200)); err != nil {
					return err
				}
				if i%2 == 0 {
					return tx.Commit(ctx)
				}
				return tx.Rollback(ctx)
			default:
				_, err := c.Exec(ctx, "DELETE FROM soak WHERE w = $1 AND n < $2", w, i-100)
				return err
			}
			return nil
		}))
	}
	for w := range 2 {
		workers = append(workers, paced(fmt.Sprintf("pg churn %d", w), func(int) error {
			churned.Add(1)
			return tryQuery(e.dsn(), "SELECT 1")
		}))
	}
	for w := range 2 {
		db := openMy(t, e.s, nil)
		db.SetMaxOpenConns(1)
		closers = append(closers, func() { _ = db.Close() })
		workers = append(workers, paced(fmt.Sprintf("mysql session %d", w), func(i int) error {
			ctx, cancel := opCtx()
			defer cancel()
			if i%2 == 0 {
				var n int
				if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM seq_1_to_500").Scan(&n); err != nil || n != 500 {
					return fmt.Errorf("select: %d, %v", n, err)
				}
				return nil
			}
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO soak VALUES (?, ?, ?)", w, i, strings.Repeat("m", 200)); err != nil {
				_ = tx.Rollback()
				return err
			}
			return tx.Commit()
		}))
	}
	workers = append(workers, paced("mysql churn", func(int) error {
		churned.Add(1)
		cfg := mysql.NewConfig()
		cfg.User, cfg.Net, cfg.Addr, cfg.DBName, cfg.Timeout = "app", "tcp", e.s.myAddr, "app", 10*time.Second
		connector, err := mysql.NewConnector(cfg)
		if err != nil {
			return err
		}
		db := sql.OpenDB(connector)
		defer db.Close()
		ctx, cancel := opCtx()
		defer cancel()
		_, err = db.ExecContext(ctx, "DO 1")
		return err
	}))

	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w() }()
	}
	start := time.Now()
	var samples []sample
	every := max(dur/30, time.Second)
	tk := time.NewTicker(every)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tk.C:
			_, body, err := e.s.get("/metrics")
			if err != nil {
				t.Fatal(err)
			}
			samples = append(samples, sample{at: time.Since(start), goroutines: metricValue(body, "go_goroutines"),
				fds: metricValue(body, "process_open_fds"), rss: metricValue(body, "process_resident_memory_bytes")})
		}
	}
	tk.Stop()
	wg.Wait()
	elapsed := time.Since(start)
	for _, c := range closers {
		c()
	}
	errMu.Lock()
	for _, err := range errs {
		t.Errorf("under steady load: %v", err)
	}
	errMu.Unlock()
	t.Logf("soak %v: %d operations (%.0f/s), %d connections churned", dur, ops.Load(), float64(ops.Load())/elapsed.Seconds(), churned.Load())

	// Flat: the last fifth of the run against the second fifth (the first is warm-up).
	n := len(samples)
	if n < 10 {
		t.Fatalf("only %d samples", n)
	}
	early, late := samples[n/5:2*n/5], samples[4*n/5:]
	peak := func(s []sample, f func(sample) float64) float64 {
		m := 0.0
		for _, x := range s {
			m = max(m, f(x))
		}
		return m
	}
	median := func(s []sample, f func(sample) float64) float64 {
		v := make([]float64, len(s))
		for i, x := range s {
			v[i] = f(x)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	g := func(s sample) float64 { return s.goroutines }
	f := func(s sample) float64 { return s.fds }
	r := func(s sample) float64 { return s.rss }
	t.Logf("goroutines: early peak %v, late peak %v; fds: early peak %v, late peak %v; RSS MiB: early median %.1f, late median %.1f",
		peak(early, g), peak(late, g), peak(early, f), peak(late, f), median(early, r)/(1<<20), median(late, r)/(1<<20))
	if peak(late, g) > peak(early, g)+leakGoroutines {
		t.Errorf("goroutines grew under steady load: %v -> %v", peak(early, g), peak(late, g))
	}
	if peak(late, f) > peak(early, f)+leakFDs {
		t.Errorf("open fds grew under steady load: %v -> %v", peak(early, f), peak(late, f))
	}
	// RSS: the race detector's shadow memory and the GC's pacing move it around; a leak of a
	// few KiB per connection or operation over this run would exceed the slack.
	if er, lr := median(early, r), median(late, r); lr > er*1.25+32<<20 {
		t.Errorf("RSS grew under steady load: %.1f MiB -> %.1f MiB", er/(1<<20), lr/(1<<20))
	}
	assertNoLeak(t, e.s, e.base)
}

// TestLoadSIGTERMUnderLoad sends SIGTERM while twelve PostgreSQL and four MySQL sessions run
// transactions back to back: every transaction in flight finishes (a session only ever fails
// at the start of a new transaction, and every COMMIT that succeeded is in the database), both
// listeners refuse new connections from the signal on (min_delay 0), and the sidecar exits 0
// within the drain window.
func TestLoadSIGTERMUnderLoad(t *testing.T) {
	e := startFaultEnv(t, faultOptions{shutdown: "{min_delay: 0s, max_delay: 20s, kill_grace: 1s}"})
	setup := connect(t, e.s, "app")
	mustExec(t, setup, "DROP TABLE IF EXISTS drain_load; CREATE TABLE drain_load (w int, seq int, part int)")
	_ = setup.Close(context.Background())
	mydb := openMy(t, e.s, nil)
	myExec(t, mydb, "DROP TABLE IF EXISTS drain_load")
	myExec(t, mydb, "CREATE TABLE drain_load (w INT, seq INT, part INT) ENGINE=InnoDB")
	_ = mydb.Close()

	type worker struct {
		name      string
		committed []int // seqs whose COMMIT succeeded
		failStep  int   // statement of the transaction that failed first (0 = its start)
		failErr   error
	}
	// step runs statement k of transaction seq; steps is how many a transaction has.
	const steps = 5
	var (
		wg      sync.WaitGroup
		workers []*worker
	)
	run := func(wk *worker, step func(ctx context.Context, seq, k int) error) {
		defer wg.Done()
		for seq := 1; ; seq++ {
			for k := range steps {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := step(ctx, seq, k)
				cancel()
				if err != nil {
					wk.failStep, wk.failErr = k, err
					return
				}
			}
			wk.committed = append(wk.committed, seq)
		}
	}
	for w := range 12 {
		wk := &worker{name: fmt.Sprintf("pg %d", w)}
		workers = append(workers, wk)
		c := connect(t, e.s, "app")
		wg.Add(1)
		go run(wk, func(ctx context.Context, seq, k int) error {
			var err error
			switch k {
			case 0:
				_, err = c.Exec(ctx, "BEGIN")
			case 1:
				_, err = c.Exec(ctx, "INSERT INTO drain_load VALUES ($1, $2, 1)", w, seq)
			case 2:
				_, err = c.Exec(ctx, "SELECT pg_sleep(0.1)")
			case 3:
				_, err = c.Exec(ctx, "INSERT INTO drain_load VALUES ($1, $2, 2)", w, seq)
			case 4:
				_, err = c.Exec(ctx, "COMMIT")
			}
			return err
		})
	}
	for w := range 4 {
		wk := &worker{name: fmt.Sprintf("mysql %d", w)}
		workers = append(workers, wk)
		c := myConn(t, e)
		wg.Add(1)
		go run(wk, func(ctx context.Context, seq, k int) error {
			var err error
			switch k {
			case 0:
				_, err = c.ExecContext(ctx, "BEGIN")
			case 1:
				_, err = c.ExecContext(ctx, "INSERT INTO drain_load VALUES (?, ?, 1)", w, seq)
			case 2:
				_, err = c.ExecContext(ctx, "DO SLEEP(0.1)")
			case 3:
				_, err = c.ExecContext(ctx, "INSERT INTO drain_load VALUES (?, ?, 2)", w, seq)
			case 4:
				_, err = c.ExecContext(ctx, "COMMIT")
			}
			return err
		})
	}
	// Signal once transactions are in flight on most sessions.
	waitFor(t, 30*time.Second, "transactions in flight", func() error {
		ctx := ctxTimeout(t, 10*time.Second)
		dc, err := e.w.PG.Connect(ctx, e.w.PG.Superuser(), "postgres")
		if err != nil {
			return err
		}
		defer dc.Close(ctx)
		var n int
		if err := dc.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend' AND xact_start IS NOT NULL").Scan(&n); err != nil {
			return err
		}
		if n < 6 {
			return fmt.Errorf("%d transactions in flight", n)
		}
		return nil
	})
	sent := time.Now()
	e.s.signal(syscall.SIGTERM)
	// New connections are refused: the listener closes at once (min_delay 0), and stays closed
	// while the drain waits for the transactions.
	refusedAfter := time.Duration(0)
	waitFor(t, 5*time.Second, "the listener to refuse connections", func() error {
		c, err := net.DialTimeout("tcp", e.s.pgAddr, time.Second)
		if err == nil {
			c.Close()
			return errors.New("still accepting")
		}
		refusedAfter = time.Since(sent)
		return nil
	})
	// The listeners close one after the other: wait for the MySQL one too, then both stay shut.
	waitFor(t, 5*time.Second, "the MySQL listener to refuse connections", func() error {
		c, err := net.DialTimeout("tcp", e.s.myAddr, time.Second)
		if err == nil {
			c.Close()
			return errors.New("still accepting")
		}
		return nil
	})
	for _, addr := range []string{e.s.pgAddr, e.s.myAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s accepted a connection after its listener closed", addr)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s: want connection refused after SIGTERM, got %v", addr, err)
		}
	}
	code := e.s.wait(20*time.Second + faultSlack)
	exited := time.Since(sent)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("workers still running 30 s after the sidecar exited")
	}
	if code != 0 {
		t.Errorf("exit code %d after a drain under load, want 0\n%s", code, e.s.logs.String())
	}
	t.Logf("listener refused connections %v after SIGTERM; the sidecar exited 0 after %v", refusedAfter.Round(time.Millisecond), exited.Round(time.Millisecond))
	// No transaction was cut: every session failed only when it began a new one.
	commits := 0
	for _, wk := range workers {
		commits += len(wk.committed)
		if wk.failErr == nil {
			t.Errorf("%s: no error at all after the sidecar exited", wk.name)
			continue
		}
		if wk.failStep != 0 {
			t.Errorf("%s: transaction %d cut at statement %d: %v", wk.name, len(wk.committed)+1, wk.failStep, wk.failErr)
		}
		if len(wk.committed) == 0 {
			t.Errorf("%s: committed nothing", wk.name)
		}
	}
	// Every COMMIT the apps saw succeed is in the databases, both halves.
	ctx := ctxTimeout(t, 30*time.Second)
	dc, err := e.w.PG.Connect(ctx, e.w.PG.Superuser(), "app")
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close(ctx)
	mdb, err := e.w.MariaDB.Open(mariadb.Superuser, "app")
	if err != nil {
		t.Fatal(err)
	}
	defer mdb.Close()
	for i, wk := range workers {
		var rows int
		var err error
		if i < 12 {
			err = dc.QueryRow(ctx, "SELECT count(*) FROM drain_load WHERE w = $1", i).Scan(&rows)
		} else {
			err = mdb.QueryRowContext(ctx, "SELECT COUNT(*) FROM drain_load WHERE w = ?", i-12).Scan(&rows)
		}
		if err != nil {
			t.Fatal(err)
		}
		if rows != 2*len(wk.committed) {
			t.Errorf("%s: %d rows in the database for %d committed transactions", wk.name, rows, len(wk.committed))
		}
	}
	t.Logf("%d transactions committed across %d sessions, none cut", commits, len(workers))
}
