package topology

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
)

// DefaultMySQLSchema is where the Aurora MySQL stand-in lives: MariaDB does not let anyone
// create objects in information_schema, so SCHEMA.replica_host_status stands for
// information_schema.replica_host_status and SCHEMA.aurora_server_id() for @@aurora_server_id.
const DefaultMySQLSchema = "aurora_information_schema"

// MySQLMember is an instance and the real server that plays it.
type MySQLMember struct {
	Instance
	Server *mariadb.Server
}

// MySQLOptions configure StartMySQL.
type MySQLOptions struct {
	// Schema holds replica_host_status and aurora_server_id(); default DefaultMySQLSchema.
	Schema string
	// Members are the cluster's instances.
	Members []MySQLMember
	// Interval is how often the status rows are rewritten from the servers' real state;
	// 0 means 100ms. LAST_UPDATE_TIMESTAMP says when a row was written.
	Interval time.Duration
	Logf     func(format string, args ...any)
}

// MySQL keeps the MySQL stand-ins of every member up to date. MariaDB has no way to ask
// another server from inside a view, so the harness does the asking: every Interval it reads
// each member's real state (@@read_only, @@gtid_binlog_pos, SHOW SLAVE STATUS) and writes the
// rows into each member that answers, unlogged (sql_log_bin=0: never replicated, never a GTID).
type MySQL struct {
	schema   string
	interval time.Duration
	logf     func(string, ...any)

	mu      sync.Mutex
	members []MySQLMember
	// history of the writer's GTID sequence: when each sequence was first seen, to date a
	// replica's oldest unapplied transaction (its lag) even with its SQL thread stopped.
	history []seen
	lastErr map[string]error

	stop chan struct{}
	done chan struct{}
}

type seen struct {
	at  time.Time
	seq int64
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,63}$`)

// StartMySQL installs the tables and views on every member and starts refreshing them; it
// returns after the first refresh. Close stops it.
func StartMySQL(ctx context.Context, o MySQLOptions) (*MySQL, error) {
	if o.Schema == "" {
		o.Schema = DefaultMySQLSchema
	}
	if !identRE.MatchString(o.Schema) {
		return nil, fmt.Errorf("topology: schema %q: want a plain lower-case identifier", o.Schema)
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	t := &MySQL{schema: o.Schema, interval: o.Interval, logf: o.Logf, lastErr: map[string]error{},
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := t.SetMembers(ctx, o.Members); err != nil {
		return nil, err
	}
	if err := t.Refresh(ctx); err != nil {
		return nil, err
	}
	go t.loop()
	return t, nil
}

// Schema is where replica_host_status and aurora_server_id() are.
func (t *MySQL) Schema() string { return t.schema }

// SetMembers replaces the member list and (re)installs the stand-ins on every member.
func (t *MySQL) SetMembers(ctx context.Context, members []MySQLMember) error {
	var b strings.Builder
	fmt.Fprintf(&b, "SET SESSION sql_log_bin=0;\nCREATE DATABASE IF NOT EXISTS `%s`;\n", t.schema)
	// The base table is the harness's; the view has Aurora's documented column names.
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS `%[1]s`.replica_host_status_rows ("+
		"SERVER_ID varchar(100) NOT NULL PRIMARY KEY, SESSION_ID varchar(100) NOT NULL, "+
		"LAST_UPDATE_TIMESTAMP datetime(6) NOT NULL, REPLICA_LAG_IN_MILLISECONDS double, CPU double, "+
		"MASTER_SLAVE_LATENCY_IN_MICROSECONDS bigint, DURABLE_LSN bigint unsigned, HIGHEST_LSN_RCVD bigint unsigned, "+
		"OLDEST_READ_VIEW_TRX_ID bigint unsigned, OLDEST_READ_VIEW_LSN bigint unsigned, IS_CURRENT tinyint) ENGINE=InnoDB;\n", t.schema)
	fmt.Fprintf(&b, "CREATE OR REPLACE SQL SECURITY DEFINER VIEW `%[1]s`.replica_host_status AS SELECT SERVER_ID, SESSION_ID, "+
		"LAST_UPDATE_TIMESTAMP, REPLICA_LAG_IN_MILLISECONDS, CPU, MASTER_SLAVE_LATENCY_IN_MICROSECONDS, DURABLE_LSN, "+
		"HIGHEST_LSN_RCVD, OLDEST_READ_VIEW_TRX_ID, OLDEST_READ_VIEW_LSN, IS_CURRENT FROM `%[1]s`.replica_host_status_rows;\n", t.schema)
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS `%[1]s`.instances (SERVER_ID varchar(100) NOT NULL PRIMARY KEY, "+
		"BACKEND_PORT int NOT NULL) ENGINE=InnoDB;\n", t.schema)
	fmt.Fprintf(&b, "CREATE OR REPLACE FUNCTION `%[1]s`.aurora_server_id() RETURNS varchar(100) READS SQL DATA SQL SECURITY DEFINER "+
		"RETURN (SELECT SERVER_ID FROM `%[1]s`.instances WHERE BACKEND_PORT = @@port);\n", t.schema)
	b.WriteString("CREATE TABLE IF NOT EXISTS mysql.rds_topology (id bigint unsigned NOT NULL PRIMARY KEY, " +
		"endpoint varchar(255) NOT NULL, port int NOT NULL) ENGINE=InnoDB;\n")
	fmt.Fprintf(&b, "DELETE FROM `%s`.instances; DELETE FROM mysql.rds_topology;\n", t.schema)
	for _, m := range members {
		fmt.Fprintf(&b, "INSERT INTO `%s`.instances VALUES (%s, %d);\n", t.schema, lit(m.ID), m.Server.Port)
		// Multi-AZ MySQL: id is the instance's @@server_id (the harness sets it to the port).
		fmt.Fprintf(&b, "INSERT INTO mysql.rds_topology VALUES (%d, %s, %d);\n", m.Server.Port, lit(m.Endpoint), m.Port)
	}
	fmt.Fprintf(&b, "GRANT SELECT ON `%[1]s`.* TO PUBLIC; GRANT EXECUTE ON FUNCTION `%[1]s`.aurora_server_id TO PUBLIC; "+
		"GRANT SELECT ON mysql.rds_topology TO PUBLIC;\n", t.schema)
	var errs []error
	for _, m := range members {
		if err := m.Server.Exec(ctx, b.String()); err != nil {
			errs = append(errs, fmt.Errorf("topology: install on %s: %w", m.ID, err))
		}
	}
	t.mu.Lock()
	t.members = append([]MySQLMember(nil), members...)
	t.mu.Unlock()
	return errors.Join(errs...)
}

type mysqlState struct {
	m        MySQLMember
	readOnly bool
	replica  bool
	applied  int64 // GTID sequence applied (replica) or logged (primary)
	received int64
	sbm      sql.NullInt64
}

// Refresh reads every member's state once and rewrites the rows on every member that
// answers. It fails only if no member answers.
func (t *MySQL) Refresh(ctx context.Context) error {
	t.mu.Lock()
	members := append([]MySQLMember(nil), t.members...)
	t.mu.Unlock()
	now := time.Now()
	var states []mysqlState
	var errs []error
	writerSeq := int64(-1)
	for _, m := range members {
		st, err := readMySQLState(ctx, m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		states = append(states, st)
		if !st.readOnly && st.applied > writerSeq {
			writerSeq = st.applied
		}
	}
	if len(states) == 0 {
		return fmt.Errorf("topology: no member answers: %w", errors.Join(errs...))
	}
	t.mu.Lock()
	if writerSeq >= 0 && (len(t.history) == 0 || t.history[len(t.history)-1].seq < writerSeq) {
		t.history = append(t.history, seen{now, writerSeq})
	}
	for len(t.history) > 0 && now.Sub(t.history[0].at) > 10*time.Minute {
		t.history = t.history[1:]
	}
	hist := append([]seen(nil), t.history...)
	t.mu.Unlock()

	var rows strings.Builder
	ts := now.UTC().Format("2006-01-02 15:04:05.000000")
	for _, st := range states {
		session, lag := "MASTER_SESSION_ID", "0"
		if st.readOnly {
			session = sessionUUID(st.m.ID)
			lag = "NULL"
			if writerSeq >= 0 {
				lag = fmt.Sprintf("%d", lagMillis(hist, st.applied, writerSeq, now))
			}
		}
		sbm := "NULL"
		if st.sbm.Valid {
			sbm = fmt.Sprintf("%d", st.sbm.Int64*1_000_000)
		}
		fmt.Fprintf(&rows, "(%s, %s, '%s', %s, NULL, %s, %d, %d, NULL, NULL, NULL),", lit(st.m.ID), lit(session), ts, lag,
			sbm, st.applied, st.received)
	}
	values := strings.TrimSuffix(rows.String(), ",")
	stmt := fmt.Sprintf("SET SESSION sql_log_bin=0; START TRANSACTION; DELETE FROM `%[1]s`.replica_host_status_rows; "+
		"INSERT INTO `%[1]s`.replica_host_status_rows VALUES %[2]s; COMMIT", t.schema, values)
	for _, st := range states {
		if err := st.m.Server.Exec(ctx, stmt); err != nil {
			t.noteErr(st.m.ID, err)
		}
	}
	return nil
}

// lagMillis dates the oldest transaction a replica has not applied by when the writer was
// first seen past it; 0 when it has applied everything.
func lagMillis(hist []seen, applied, writerSeq int64, now time.Time) int64 {
	if applied >= writerSeq {
		return 0
	}
	for _, h := range hist {
		if h.seq > applied {
			return now.Sub(h.at).Milliseconds()
		}
	}
	return 0
}

func readMySQLState(ctx context.Context, m MySQLMember) (mysqlState, error) {
	st := mysqlState{m: m}
	db, err := m.Server.Open(mariadb.Superuser, "")
	if err != nil {
		return st, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var binlogPos, slavePos string
	if err := db.QueryRowContext(ctx, "SELECT @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos").Scan(&st.readOnly, &binlogPos, &slavePos); err != nil {
		return st, fmt.Errorf("topology: %s: %w", m.ID, err)
	}
	ss, err := m.Server.SlaveStatus(ctx)
	if err != nil {
		return st, err
	}
	st.replica = ss != nil
	st.applied, st.received = mariadb.GTIDSeq(binlogPos), mariadb.GTIDSeq(binlogPos)
	if st.replica {
		st.applied = mariadb.GTIDSeq(slavePos)
		if v := ss["Seconds_Behind_Master"]; v != "" {
			st.sbm.Valid = true
			fmt.Sscan(v, &st.sbm.Int64)
		}
		if g := mariadb.GTIDSeq(ss["Gtid_IO_Pos"]); g > st.received {
			st.received = g
		}
	}
	return st, nil
}

func (t *MySQL) noteErr(id string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	prev := t.lastErr[id]
	t.lastErr[id] = err
	if prev == nil {
		t.logf("topology: %s: %v", id, err)
	}
}

func (t *MySQL) loop() {
	defer close(t.done)
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := t.Refresh(ctx); err != nil {
			t.noteErr("*", err)
		}
		cancel()
	}
}

// Close stops the refresher (the rows stay as last written).
func (t *MySQL) Close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	<-t.done
}
