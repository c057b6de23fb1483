package pgserver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

func startStandby(t *testing.T, p *Server, ca *pki.CA) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sb, err := p.StartStandby(ctx, Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sb.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return sb
}

func count(t *testing.T, ctx context.Context, s *Server) int {
	t.Helper()
	var n int
	if err := s.queryRow(ctx, "SELECT count(*) FROM repl_t", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStandby(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	ca, err := pki.NewCA("pgserver standby test")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, ca)
	if err := p.Exec(ctx, "CREATE TABLE repl_t (id serial PRIMARY KEY, v text); INSERT INTO repl_t (v) VALUES ('before')"); err != nil {
		t.Fatal(err)
	}
	sb := startStandby(t, p, ca)
	other := startStandby(t, p, ca) // follows sb after the failover

	t.Run("streams and refuses writes", func(t *testing.T) {
		if in, err := sb.InRecovery(ctx); err != nil || !in {
			t.Fatalf("standby in recovery = %v (%v)", in, err)
		}
		if in, err := p.InRecovery(ctx); err != nil || in {
			t.Fatalf("primary in recovery = %v (%v)", in, err)
		}
		if err := p.Exec(ctx, "INSERT INTO repl_t (v) VALUES ('after')"); err != nil {
			t.Fatal(err)
		}
		if err := sb.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		if n := count(t, ctx, sb); n != 2 {
			t.Fatalf("standby has %d rows, want 2", n)
		}
		err := sb.Exec(ctx, "INSERT INTO repl_t (v) VALUES ('x')")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "25006" { // read_only_sql_transaction
			t.Fatalf("write on standby: %v, want 25006", err)
		}
		// The standby serves TLS with its own certificate from the same CA.
		c, err := pgx.Connect(ctx, sb.TLSDSN(Superuser, "postgres", caFile))
		if err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
	})

	t.Run("paused replay lags and catches up", func(t *testing.T) {
		if err := sb.PauseReplay(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.Exec(ctx, "INSERT INTO repl_t (v) SELECT 'paused' FROM generate_series(1, 1000)"); err != nil {
			t.Fatal(err)
		}
		l1, err := sb.ReplayLag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l1.Bytes <= 0 || !l1.HasReplayTimestamp || l1.ReplayAge <= 0 {
			t.Fatalf("lag while paused after writes: %+v", l1)
		}
		// Lag grows: wait (polling, not sleeping blind) until the replay age has moved on,
		// with more WAL owed after another write.
		deadline := time.Now().Add(5 * time.Second)
		var l2 Lag
		for {
			if err := p.Exec(ctx, "INSERT INTO repl_t (v) VALUES ('more')"); err != nil {
				t.Fatal(err)
			}
			if l2, err = sb.ReplayLag(ctx); err != nil {
				t.Fatal(err)
			}
			if l2.ReplayAge >= l1.ReplayAge+200*time.Millisecond && l2.Bytes > l1.Bytes {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("lag did not grow: %+v then %+v", l1, l2)
			}
			time.Sleep(50 * time.Millisecond) // pacing the writes, not synchronisation
		}
		if n := count(t, ctx, sb); n != 2 {
			t.Fatalf("paused standby shows %d rows, want 2", n)
		}
		t.Logf("lag while paused: %+v then %+v", l1, l2)
		if err := sb.ResumeReplay(ctx); err != nil {
			t.Fatal(err)
		}
		if err := sb.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		l3, err := sb.ReplayLag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l3.Bytes != 0 || l3.ReplayAge != 0 {
			t.Fatalf("lag after catch-up: %+v", l3)
		}
		if n, want := count(t, ctx, sb), count(t, ctx, p); n != want {
			t.Fatalf("standby has %d rows, primary %d", n, want)
		}
	})

	t.Run("promoted standby accepts writes", func(t *testing.T) {
		p.Kill()
		if err := sb.Promote(ctx); err != nil {
			t.Fatal(err)
		}
		if in, err := sb.InRecovery(ctx); err != nil || in {
			t.Fatalf("after promote in recovery = %v (%v)", in, err)
		}
		before := count(t, ctx, sb)
		if err := sb.Exec(ctx, "INSERT INTO repl_t (v) VALUES ('promoted')"); err != nil {
			t.Fatal(err)
		}
		if n := count(t, ctx, sb); n != before+1 {
			t.Fatalf("rows %d after a write on %d", n, before)
		}
	})

	t.Run("the other standby follows the promoted one", func(t *testing.T) {
		if err := other.Follow(ctx, sb); err != nil {
			t.Fatal(err)
		}
		if err := sb.Exec(ctx, "INSERT INTO repl_t (v) VALUES ('followed')"); err != nil {
			t.Fatal(err)
		}
		if err := other.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		if n, want := count(t, ctx, other), count(t, ctx, sb); n != want {
			t.Fatalf("follower has %d rows, new primary %d", n, want)
		}
		if in, err := other.InRecovery(ctx); err != nil || !in {
			t.Fatalf("follower in recovery = %v (%v)", in, err)
		}
	})
}
