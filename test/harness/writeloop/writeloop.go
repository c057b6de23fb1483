// Package writeloop runs write loops against a cluster of the harness (test/harness/world)
// through any address (the sidecar's writer listener, or a DNS name a client follows), for both
// engines, and records which server acknowledged each transaction and how each one that did
// not commit ended. The demo's failover endpoint and `make bench-failover` both measure with it
// the time from a promotion to the first write acknowledged by the new writer.
package writeloop

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// Table is where the loops write, one row per transaction, in the world's database.
const Table = "failover_writes"

// Prepare creates Table on the cluster's primary (replicated to the others) and, for MySQL,
// grants the app user SLAVE MONITOR on every instance, which a sidecar's topology monitor
// needs to read SHOW SLAVE STATUS as the probe user (docs/cluster.md).
func Prepare(ctx context.Context, w *world.World, engine string) error {
	if engine == world.Postgres {
		c, err := w.PG.Connect(ctx, w.PG.Superuser(), world.DefaultDB)
		if err != nil {
			return err
		}
		defer c.Close(context.Background())
		_, err = c.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+Table+" (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now()); GRANT ALL ON "+Table+" TO "+world.DefaultDB)
		return err
	}
	for _, i := range w.MySQLInstances {
		if err := i.MariaDB.Exec(ctx, "SET SESSION sql_log_bin=0; GRANT SLAVE MONITOR ON *.* TO '"+world.DefaultDB+"'@'%'"); err != nil {
			return err
		}
	}
	return w.MariaDB.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+world.DefaultDB+"."+Table+" (n bigint PRIMARY KEY, at timestamp(3) NOT NULL DEFAULT current_timestamp(3))")
}

// ServerID is what a session's server says identifies it (its port), as Write returns it.
func ServerID(i *world.Instance) string {
	if i.PG != nil {
		return strconv.Itoa(i.PG.Port)
	}
	return strconv.Itoa(i.MariaDB.Port)
}

// FailOver does what a managed failover does to the cluster, for real: MySQL's old writer is
// first made read-only (the demotion a planned failover starts with), then the old writer's
// server is killed (SIGKILL) and next promoted. It returns when the promotion is complete
// (next answers as writer), and when old stopped taking writes (read_only set, or killed).
func FailOver(ctx context.Context, old, next *world.Instance) (demoted, promoted time.Time, err error) {
	if old.MariaDB != nil {
		if err := old.MariaDB.SetReadOnly(ctx, true); err != nil {
			return time.Time{}, time.Time{}, err
		}
		demoted = time.Now()
	}
	old.Kill()
	if demoted.IsZero() {
		demoted = time.Now()
	}
	if err := next.Promote(ctx); err != nil {
		return demoted, time.Time{}, err
	}
	return demoted, time.Now(), nil
}

// Session is one client session.
type Session interface {
	// Write runs one transaction inserting n and returns the server that acknowledged it
	// (ServerID) and when its COMMIT was sent. An error names where it failed: "begin"
	// (nothing sent inside a transaction) or "in transaction".
	Write(ctx context.Context, n int64) (server string, commitSent time.Time, err error)
	// WhoAmI returns the session's server (ServerID) and whether it answers as the writer
	// (pg_is_in_recovery() false; MySQL read_only and innodb_read_only off).
	WhoAmI(ctx context.Context) (server string, writer bool, err error)
	Close()
}

// Dial opens a session to addr (host:port, plain text: the sidecar's listener, or a server
// that trusts loopback) as the world's app user.
func Dial(ctx context.Context, engine, addr string) (Session, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if engine == world.Postgres {
		c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", host, port, world.DefaultDB, world.DefaultDB))
		if err != nil {
			return nil, err
		}
		return &pgSession{c: c}, nil
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = world.DefaultDB, "tcp", addr, world.DefaultDB
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 20*time.Second, 30*time.Second, 30*time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	sc, err := db.Conn(ctx)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &mySession{db: db, c: sc}, nil
}

// errBegin and errInTx mark where a transaction failed.
var (
	errBegin = errors.New("begin")
	errInTx  = errors.New("in transaction")
)

// inTxWork is the time each transaction stays open after its insert, so that a failover
// finds transactions in flight.
const inTxWork = "0.02"

type pgSession struct{ c *pgx.Conn }

func (s *pgSession) Write(ctx context.Context, n int64) (string, time.Time, error) {
	tx, err := s.c.Begin(ctx)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", errBegin, err)
	}
	var port string
	if err := tx.QueryRow(ctx, "INSERT INTO "+Table+" (n) VALUES ($1) RETURNING current_setting('port')", n).Scan(&port); err != nil {
		_ = tx.Rollback(context.Background())
		return "", time.Time{}, fmt.Errorf("%w: %w", errInTx, err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_sleep("+inTxWork+")"); err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", errInTx, err)
	}
	sent := time.Now()
	if err := tx.Commit(ctx); err != nil {
		return "", sent, fmt.Errorf("%w: commit: %w", errInTx, err)
	}
	return port, sent, nil
}

func (s *pgSession) WhoAmI(ctx context.Context) (string, bool, error) {
	var port string
	var rec bool
	err := s.c.QueryRow(ctx, "SELECT current_setting('port'), pg_is_in_recovery()").Scan(&port, &rec)
	return port, !rec, err
}

func (s *pgSession) Close() { _ = s.c.Close(context.Background()) }

type mySession struct {
	db *sql.DB
	c  *sql.Conn
}

func (s *mySession) Write(ctx context.Context, n int64) (string, time.Time, error) {
	tx, err := s.c.BeginTx(ctx, nil)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", errBegin, err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO "+Table+" (n) VALUES (?)", n); err != nil {
		_ = tx.Rollback()
		return "", time.Time{}, fmt.Errorf("%w: %w", errInTx, err)
	}
	var port string
	if err := tx.QueryRowContext(ctx, "SELECT @@port FROM (SELECT SLEEP("+inTxWork+")) s").Scan(&port); err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", errInTx, err)
	}
	sent := time.Now()
	if err := tx.Commit(); err != nil {
		return "", sent, fmt.Errorf("%w: commit: %w", errInTx, err)
	}
	return port, sent, nil
}

func (s *mySession) WhoAmI(ctx context.Context) (string, bool, error) {
	var port string
	var ro, iro int
	err := s.c.QueryRowContext(ctx, "SELECT @@port, @@global.read_only, @@global.innodb_read_only").Scan(&port, &ro, &iro)
	return port, ro == 0 && iro == 0, err
}

func (s *mySession) Close() {
	_ = s.c.Close()
	_ = s.db.Close()
}

// Outcome is how one attempt ended.
type Outcome int

const (
	Committed       Outcome = iota // COMMIT answered OK
	OutcomeUnknown                 // the sidecar's farewell: PostgreSQL 08007, MySQL 2013/08007
	ReadOnlyRefused                // the database's own refusal (25006, 1290): nothing written
	NotBegun                       // no transaction was open: the connect or BEGIN failed
	// Unsent: in a transaction, the driver did not send the next statement or the COMMIT, on a
	// connection it found closed (database/sql's driver.ErrBadConn, which a driver returns only
	// when the server cannot have performed the operation): nothing committed. go-sql-driver's
	// liveness check before each command does this, dropping a farewell unread; and its
	// mysql.ErrBusyBuffer, returned before anything is written when bytes it has not read (a
	// farewell that came right behind the last answer) are still in its buffer.
	Unsent
	ServerFatal // in a transaction, the database's own FATAL ended the session (e.g. 57P01, its postmaster died)
	Cut         // in a transaction, the connection broke with no word on the outcome
)

var outcomeNames = [...]string{"committed", "outcome unknown", "refused read-only", "not begun", "unsent (bad connection)", "server's own FATAL", "cut, no word"}

func (o Outcome) String() string { return outcomeNames[o] }

// Classify says how an attempt that returned err ended.
func Classify(err error) Outcome {
	var pe *pgconn.PgError
	var me *mysql.MySQLError
	switch {
	case err == nil:
		return Committed
	case IsOutcomeUnknown(err):
		return OutcomeUnknown
	case errors.As(err, &pe) && pe.Code == "25006", errors.As(err, &me) && me.Number == 1290:
		return ReadOnlyRefused
	case !errors.Is(err, errInTx):
		return NotBegun
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, mysql.ErrBusyBuffer):
		return Unsent
	case errors.As(err, &pe) && pe.Severity == "FATAL":
		return ServerFatal
	}
	return Cut
}

// IsOutcomeUnknown reports whether err is the sidecar's "transaction outcome unknown" error:
// PostgreSQL 08007, MySQL ERR 2013 with SQL state 08007, saying so in words.
func IsOutcomeUnknown(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "08007" && strings.Contains(pe.Message, "outcome is unknown")
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 2013 && string(me.SQLState[:]) == "08007" && strings.Contains(me.Message, "outcome is unknown")
	}
	return false
}

// Ack is one acknowledged transaction: the server, when its COMMIT was sent and when the
// acknowledgement arrived.
type Ack struct {
	Server         string
	CommitSent, At time.Time
}

// Loop is Workers goroutines, each writing through one session at a time and opening a new
// one (with Connect) after an error, as an app's pool does.
type Loop struct {
	stop chan struct{}
	wg   sync.WaitGroup
	next atomic.Int64

	mu       sync.Mutex
	acks     []Ack
	outcomes [Cut + 1]int
	samples  []string // a few errors of the outcomes that need explaining
	changed  chan struct{}
}

// Start runs workers loops; n numbers the rows from base up. connect is given a context bound
// by timeout per attempt.
func Start(ctx context.Context, workers int, base int64, timeout time.Duration, connect func(ctx context.Context) (Session, error)) *Loop {
	l := &Loop{stop: make(chan struct{}), changed: make(chan struct{})}
	l.next.Store(base)
	for range workers {
		l.wg.Add(1)
		go l.run(ctx, timeout, connect)
	}
	return l
}

func (l *Loop) run(ctx context.Context, timeout time.Duration, connect func(ctx context.Context) (Session, error)) {
	defer l.wg.Done()
	var s Session
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	for {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		var err error
		var a Ack
		if s == nil {
			s, err = connect(actx)
		}
		if err == nil {
			a.Server, a.CommitSent, err = s.Write(actx, l.next.Add(1))
		}
		cancel()
		a.At = time.Now()
		l.record(a, err)
		if err != nil {
			if s != nil {
				s.Close()
				s = nil
			}
			// A refused connect is answered at once; the loop should not spin on it.
			select {
			case <-l.stop:
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

func (l *Loop) record(a Ack, err error) {
	o := Classify(err)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.outcomes[o]++
	if o == Committed {
		l.acks = append(l.acks, a)
		close(l.changed)
		l.changed = make(chan struct{})
	} else if (o == Cut || o == ServerFatal) && len(l.samples) < 5 {
		l.samples = append(l.samples, err.Error())
	}
}

// FirstAck waits (until ctx ends) for the first transaction acknowledged by server at or
// after since, and returns when it was acknowledged.
func (l *Loop) FirstAck(ctx context.Context, server string, since time.Time) (time.Time, error) {
	seen := 0
	for {
		l.mu.Lock()
		for _, a := range l.acks[seen:] {
			if a.Server == server && !a.At.Before(since) {
				l.mu.Unlock()
				return a.At, nil
			}
		}
		seen = len(l.acks)
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("no write acknowledged by server %s: %w", server, ctx.Err())
		}
	}
}

// Acks returns how many transactions were acknowledged so far.
func (l *Loop) Acks() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks)
}

// Result is what a stopped loop saw.
type Result struct {
	Acks     []Ack
	Outcomes map[Outcome]int
	Samples  []string // errors of transactions cut with no word on their outcome, or by the server's FATAL
}

// AckedBy counts the transactions server acknowledged whose COMMIT was sent at or after
// since: with since the moment an instance was demoted (its read_only set, or it was killed),
// writes the demoted instance accepted. A commit sent before that may rightly have been
// accepted, even if its acknowledgement arrives after.
func (r Result) AckedBy(server string, since time.Time) int {
	n := 0
	for _, a := range r.Acks {
		if a.Server == server && !a.CommitSent.Before(since) {
			n++
		}
	}
	return n
}

// String is a one-line summary of the outcomes.
func (r Result) String() string {
	var parts []string
	for o := Committed; o <= Cut; o++ {
		parts = append(parts, fmt.Sprintf("%s %d", o, r.Outcomes[o]))
	}
	return strings.Join(parts, ", ")
}

// Stop ends the loops and returns what they saw.
func (l *Loop) Stop() Result {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Result{Acks: append([]Ack(nil), l.acks...), Outcomes: map[Outcome]int{}, Samples: l.samples}
	for o, n := range l.outcomes {
		r.Outcomes[Outcome(o)] = n
	}
	return r
}
