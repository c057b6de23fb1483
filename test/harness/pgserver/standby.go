package pgserver

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"time"
)

// ReplicationRole is the role standbys stream WAL as (trusted on loopback by pg_hba.conf).
const ReplicationRole = "harness_replicator"

var slotSeq atomic.Int64

// StartStandby makes a streaming standby of s for real: a physical replication slot on s,
// pg_basebackup of s's data directory streamed through it (with -R: standby.signal and
// primary_conninfo naming the slot), then postgres on its own port, data dir and socket, with
// the TLS setup of o (give it the same CA as the primary). It returns once the standby accepts
// (read-only) connections. Stop and Kill work as on any server; Stop drops the slot on the
// primary if the primary still answers.
func (s *Server) StartStandby(ctx context.Context, o Options) (*Server, error) {
	if err := s.Exec(ctx, fmt.Sprintf(
		"DO $$BEGIN CREATE ROLE %s REPLICATION LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$",
		ReplicationRole)); err != nil {
		return nil, err
	}
	slot := fmt.Sprintf("standby_%d_%d", s.Port, slotSeq.Add(1))
	if err := s.Exec(ctx, "SELECT pg_create_physical_replication_slot('"+slot+"')"); err != nil {
		return nil, err
	}
	sb, bin, cred, base, err := prepare(o)
	if err != nil {
		_ = s.Exec(context.Background(), "SELECT pg_drop_replication_slot('"+slot+"')")
		return nil, err
	}
	sb.primary, sb.slot = s, slot
	conninfo := fmt.Sprintf("host=%s port=%d user=%s application_name=%s", s.Host, s.Port, ReplicationRole, slot)
	// --checkpoint=fast: do not wait for the primary's next checkpoint; --no-sync: a test dir.
	bb := exec.CommandContext(ctx, filepath.Join(bin, "pg_basebackup"), "-D", sb.DataDir, "-d", conninfo,
		"-X", "stream", "-S", slot, "-R", "--checkpoint=fast", "--no-sync")
	bb.Dir = base
	bb.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"}
	setCred(bb, cred)
	if out, err := bb.CombinedOutput(); err != nil {
		sb.cleanupFiles()
		_ = s.Exec(context.Background(), "SELECT pg_drop_replication_slot('"+slot+"')")
		return nil, fmt.Errorf("pgserver: pg_basebackup: %w\n%s", err, out)
	}
	// The copy carries the primary's postmaster options file and certificate; launch writes
	// the standby's own certificate and passes every setting on the command line.
	if err := sb.launch(ctx, o, bin, base, cred, nil); err != nil {
		_ = s.Exec(context.Background(), "SELECT pg_drop_replication_slot('"+slot+"')")
		return nil, err
	}
	sb.logf("pgserver: standby %s streaming from %s (slot %s)", sb.Addr(), s.Addr(), slot)
	return sb, nil
}

// Follow points a standby at another primary (after a failover: a surviving standby follows
// the promoted one): a new slot there, primary_conninfo and primary_slot_name by ALTER SYSTEM,
// a reload, and it returns once the WAL receiver streams from primary. The standby follows
// the new timeline (recovery_target_timeline is latest); it cannot if it had replayed WAL of
// the old primary that the new one never received.
func (s *Server) Follow(ctx context.Context, primary *Server) error {
	slot := fmt.Sprintf("standby_%d_%d", primary.Port, slotSeq.Add(1))
	if err := primary.Exec(ctx, "SELECT pg_create_physical_replication_slot('"+slot+"')"); err != nil {
		return err
	}
	conninfo := fmt.Sprintf("host=%s port=%d user=%s application_name=%s", primary.Host, primary.Port, ReplicationRole, slot)
	// One statement per call: ALTER SYSTEM refuses to run inside the implicit transaction of
	// a multi-statement query.
	for _, q := range []string{
		"ALTER SYSTEM SET primary_conninfo = " + quoteLiteral(conninfo),
		"ALTER SYSTEM SET primary_slot_name = " + quoteLiteral(slot),
		"SELECT pg_reload_conf()",
	} {
		if err := s.Exec(ctx, q); err != nil {
			return err
		}
	}
	s.primary, s.slot = primary, slot
	return s.poll(ctx, "streaming from "+primary.Addr(), func(ctx context.Context) (bool, error) {
		var n int
		err := s.queryRowArgs(ctx, "SELECT count(*)::int FROM pg_stat_wal_receiver WHERE status = 'streaming' AND sender_port = $1",
			[]any{primary.Port}, &n)
		return err == nil && n == 1, err
	})
}

// Primary is the server a standby was made from (nil for a primary started by Start).
func (s *Server) Primary() *Server { return s.primary }

// InRecovery reports pg_is_in_recovery(): true on a standby that has not been promoted.
func (s *Server) InRecovery(ctx context.Context) (bool, error) {
	var r bool
	err := s.queryRow(ctx, "SELECT pg_is_in_recovery()", &r)
	return r, err
}

// Promote promotes a standby for real (pg_ctl promote) and returns once pg_is_in_recovery()
// is false, i.e. the server accepts writes.
func (s *Server) Promote(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "pg_ctl"), "promote", "-D", s.DataDir, "-W")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"}
	setCred(cmd, s.cred)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgserver: pg_ctl promote: %w\n%s", err, out)
	}
	return s.poll(ctx, "promotion", func(ctx context.Context) (bool, error) {
		in, err := s.InRecovery(ctx)
		return err == nil && !in, nil
	})
}

// PauseReplay pauses WAL replay on a standby (pg_wal_replay_pause) and returns once replay
// has actually stopped; the standby keeps receiving WAL, so its lag grows with the primary's
// writes.
func (s *Server) PauseReplay(ctx context.Context) error {
	if err := s.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		return err
	}
	return s.poll(ctx, "replay pause", func(ctx context.Context) (bool, error) {
		var state string
		err := s.queryRow(ctx, "SELECT pg_get_wal_replay_pause_state()", &state)
		return err == nil && state == "paused", err
	})
}

// ResumeReplay resumes WAL replay (pg_wal_replay_resume).
func (s *Server) ResumeReplay(ctx context.Context) error {
	return s.Exec(ctx, "SELECT pg_wal_replay_resume()")
}

// Lag is how far a standby is behind, measured the two ways a client can.
type Lag struct {
	// ReplayAge is now() - pg_last_xact_replay_timestamp() on the standby: the age of the
	// last transaction replayed. Zero when the standby has replayed all the primary's WAL
	// (an idle primary writes no commits, so the raw age would grow while nothing is owed).
	// HasReplayTimestamp is false when nothing has been replayed since the standby started.
	ReplayAge          time.Duration
	HasReplayTimestamp bool
	// Bytes is pg_wal_lsn_diff(primary's pg_current_wal_insert_lsn(), standby's
	// pg_last_wal_replay_lsn()): WAL the primary has written that the standby has not
	// replayed (0 when caught up; never negative).
	Bytes int64
	// ReceivedBytes is WAL received but not yet replayed (standby-local, no primary needed).
	ReceivedBytes int64
}

// ReplayLag measures a standby's lag; it needs the primary to answer (for Bytes).
func (s *Server) ReplayLag(ctx context.Context) (Lag, error) {
	if s.primary == nil {
		return Lag{}, errors.New("pgserver: ReplayLag on a server that is not a standby")
	}
	var primaryLSN string
	if err := s.primary.queryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text", &primaryLSN); err != nil {
		return Lag{}, err
	}
	var l Lag
	var ageUS *float64
	err := s.queryRowArgs(ctx, `SELECT
		GREATEST(pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()), 0)::bigint,
		COALESCE(GREATEST(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0), 0)::bigint,
		EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 * 1e6`,
		[]any{primaryLSN}, &l.Bytes, &l.ReceivedBytes, &ageUS)
	if err != nil {
		return Lag{}, err
	}
	if ageUS != nil {
		l.HasReplayTimestamp = true
		if l.Bytes > 0 {
			l.ReplayAge = time.Duration(*ageUS) * time.Microsecond
		}
	}
	return l, nil
}

// WaitCaughtUp returns once the standby has replayed all the WAL its primary had written
// when WaitCaughtUp was called.
func (s *Server) WaitCaughtUp(ctx context.Context) error {
	if s.primary == nil {
		return errors.New("pgserver: WaitCaughtUp on a server that is not a standby")
	}
	var target string
	if err := s.primary.queryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text", &target); err != nil {
		return err
	}
	return s.poll(ctx, "catch-up to "+target, func(ctx context.Context) (bool, error) {
		var done bool
		err := s.queryRowArgs(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", []any{target}, &done)
		return err == nil && done, nil
	})
}

// poll checks cond every 20ms until it holds, ctx ends, 30s pass or the server exits.
func (s *Server) poll(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	if err := s.proc.Poll(ctx, 30*time.Second, what, cond); err != nil {
		return fmt.Errorf("pgserver %s: %w", s.Addr(), err)
	}
	return nil
}

// queryRow runs one query (no parameters) as the superuser and scans its single row.
func (s *Server) queryRow(ctx context.Context, sql string, dest ...any) error {
	return s.queryRowArgs(ctx, sql, nil, dest...)
}

func (s *Server) queryRowArgs(ctx context.Context, sql string, args []any, dest ...any) error {
	c, err := s.Connect(ctx, Superuser, "postgres")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	if err := c.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		return fmt.Errorf("pgserver %s: %q: %w", s.Addr(), sql, err)
	}
	return nil
}
