package mariadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Replication account the replicas log in to their primary with (created on the primary,
// so it replicates and every server of a topology has it).
const (
	ReplicationUser     = "harness_repl"
	replicationPassword = "harness-repl-pw"
)

// StartReplica starts a new server (o as for Start; give it the primary's CA for TLS) and
// makes it a GTID replica of s for real: CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos over
// TLS verified against the CA, START SLAVE, read_only=1. The replica starts empty and replays
// s's whole binary log, so everything created on s since it started (users, databases) is on
// the replica too. It returns once the replica has caught up.
func (s *Server) StartReplica(ctx context.Context, o Options) (*Server, error) {
	if err := s.Exec(ctx, fmt.Sprintf("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s; GRANT REPLICATION SLAVE ON *.* TO %s@'%%'",
		quote(ReplicationUser), quote(replicationPassword), quote(ReplicationUser))); err != nil {
		return nil, err
	}
	o.Args = append(append([]string(nil), o.Args...), "--read-only=ON")
	r, err := Start(ctx, o)
	if err != nil {
		return nil, err
	}
	if err := r.Follow(ctx, s); err != nil {
		_ = r.Stop(context.Background())
		return nil, err
	}
	if err := r.WaitCaughtUp(ctx); err != nil {
		_ = r.Stop(context.Background())
		return nil, err
	}
	r.logf("mariadb: replica %s replicating from %s", r.Addr(), s.Addr())
	return r, nil
}

// Follow points this server at primary (as after a failover: the surviving replica of an
// old primary follows the promoted one) and starts replicating, from the GTID position it
// has applied. The connection uses TLS verified against the CA when this server has one.
func (s *Server) Follow(ctx context.Context, primary *Server) error {
	change := fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%d, MASTER_USER=%s, MASTER_PASSWORD=%s, "+
		"MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1",
		primary.Host, primary.Port, quote(ReplicationUser), quote(replicationPassword))
	if s.TLS {
		change += ", MASTER_SSL=1, MASTER_SSL_CA=" + quote(filepath.Join(s.base, "ca.pem")) + ", MASTER_SSL_VERIFY_SERVER_CERT=1"
	}
	if err := s.Exec(ctx, "STOP SLAVE"); err != nil {
		return err
	}
	if err := s.Exec(ctx, change+"; START SLAVE; SET GLOBAL read_only=ON"); err != nil {
		return err
	}
	s.primary = primary
	return s.poll(ctx, "replication threads running", func(ctx context.Context) (bool, error) {
		st, err := s.SlaveStatus(ctx)
		if err != nil || st == nil {
			return false, err
		}
		if st["Last_IO_Error"] != "" || st["Last_SQL_Error"] != "" {
			return false, fmt.Errorf("io error %q, sql error %q", st["Last_IO_Error"], st["Last_SQL_Error"])
		}
		return st["Slave_IO_Running"] == "Yes" && st["Slave_SQL_Running"] == "Yes", nil
	})
}

// Primary is the server a replica follows (nil for a primary or a promoted replica).
func (s *Server) Primary() *Server { return s.primary }

// Promote makes a replica a primary for real: STOP SLAVE; RESET SLAVE ALL; read_only=0.
func (s *Server) Promote(ctx context.Context) error {
	if err := s.Exec(ctx, "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=OFF"); err != nil {
		return err
	}
	s.primary = nil
	return nil
}

// SetReadOnly sets the global read_only on any server (users without SUPER / READ_ONLY
// ADMIN, such as the app's, then get error 1290 on writes).
func (s *Server) SetReadOnly(ctx context.Context, on bool) error {
	v := "OFF"
	if on {
		v = "ON"
	}
	return s.Exec(ctx, "SET GLOBAL read_only="+v)
}

// ReadOnly reports @@read_only and @@innodb_read_only, what a client checks for the writer.
func (s *Server) ReadOnly(ctx context.Context) (readOnly, innodbReadOnly bool, err error) {
	err = s.queryRow(ctx, "SELECT @@read_only, @@innodb_read_only", &readOnly, &innodbReadOnly)
	return readOnly, innodbReadOnly, err
}

// StopSQLThread stops applying replicated events (STOP SLAVE SQL_THREAD); the IO thread
// keeps fetching the primary's binary log, so the replica falls behind with every write.
func (s *Server) StopSQLThread(ctx context.Context) error {
	return s.Exec(ctx, "STOP SLAVE SQL_THREAD")
}

// StartSQLThread resumes applying (START SLAVE SQL_THREAD).
func (s *Server) StartSQLThread(ctx context.Context) error {
	return s.Exec(ctx, "START SLAVE SQL_THREAD")
}

// SecondsBehindMaster is SHOW SLAVE STATUS's Seconds_Behind_Master. known is false when the
// server reports NULL: the SQL or IO thread is not running (RDS's ReplicaLag metric reports
// that as -1), or the server is not a replica.
func (s *Server) SecondsBehindMaster(ctx context.Context) (seconds int64, known bool, err error) {
	st, err := s.SlaveStatus(ctx)
	if err != nil || st == nil {
		return 0, false, err
	}
	v := st["Seconds_Behind_Master"]
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("mariadb: Seconds_Behind_Master %q: %w", v, err)
	}
	return n, true, nil
}

// SlaveStatus is SHOW SLAVE STATUS as column -> value (NULL as ""); nil when the server is
// not a replica.
func (s *Server) SlaveStatus(ctx context.Context) (map[string]string, error) {
	db, err := s.Open(Superuser, "")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return nil, fmt.Errorf("mariadb %s: show slave status: %w", s.Addr(), err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	m := make(map[string]string, len(cols))
	for i, c := range cols {
		m[c] = vals[i].String
	}
	return m, rows.Err()
}

// GTIDBinlogPos is @@gtid_binlog_pos: the last GTID per domain this server has written to its
// binary log (on a primary: what its replicas must reach).
func (s *Server) GTIDBinlogPos(ctx context.Context) (string, error) {
	var pos string
	err := s.queryRow(ctx, "SELECT @@gtid_binlog_pos", &pos)
	return pos, err
}

// GTIDSlavePos is @@gtid_slave_pos: the last GTID per domain this replica has applied.
func (s *Server) GTIDSlavePos(ctx context.Context) (string, error) {
	var pos string
	err := s.queryRow(ctx, "SELECT @@gtid_slave_pos", &pos)
	return pos, err
}

// WaitCaughtUp returns once the replica has applied every transaction its primary had
// logged when WaitCaughtUp was called (MASTER_GTID_WAIT).
func (s *Server) WaitCaughtUp(ctx context.Context) error {
	if s.primary == nil {
		return errors.New("mariadb: WaitCaughtUp on a server that is not a replica")
	}
	pos, err := s.primary.GTIDBinlogPos(ctx)
	if err != nil {
		return err
	}
	if pos == "" {
		return nil
	}
	return s.poll(ctx, "catch-up to "+pos, func(ctx context.Context) (bool, error) {
		var r int
		// A short server-side wait per round, so that a dead server or ctx ends it soon.
		err := s.queryRow(ctx, "SELECT MASTER_GTID_WAIT("+quote(pos)+", 0.5)", &r)
		return err == nil && r == 0, err
	})
}

// poll checks cond every 20ms until it holds, ctx ends, 30s pass or the server exits.
func (s *Server) poll(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	if err := s.proc.Poll(ctx, 30*time.Second, what, cond); err != nil {
		return fmt.Errorf("mariadb %s: %w", s.Addr(), err)
	}
	return nil
}

func (s *Server) queryRow(ctx context.Context, q string, dest ...any) error {
	db, err := s.Open(Superuser, "")
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, q).Scan(dest...); err != nil {
		return fmt.Errorf("mariadb %s: %q: %w", s.Addr(), q, err)
	}
	return nil
}

// GTIDSeq is the highest sequence number of domain 0 in a GTID position ("0-3306-42,1-7-3"
// gives 42): with one writer at a time, a total order of the cluster's transactions.
func GTIDSeq(pos string) int64 {
	var best int64
	for _, g := range strings.Split(pos, ",") {
		parts := strings.Split(strings.TrimSpace(g), "-")
		if len(parts) != 3 || parts[0] != "0" {
			continue
		}
		if n, err := strconv.ParseInt(parts[2], 10, 64); err == nil && n > best {
			best = n
		}
	}
	return best
}
