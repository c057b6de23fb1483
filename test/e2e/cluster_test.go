package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/world"
	"github.com/rdsvalet/rds-valet/test/harness/writeloop"
)

// The cluster suites (docs/cluster.md): a sidecar with a writer listener ({{PG}}) and a reader
// listener ({{MYSQL}} placeholder, whatever the engine) over the instances of a real
// replicated cluster from the harness (a pg_basebackup standby or a MariaDB GTID replica per
// replica, each behind its own RDS stand-in), for both engines.

// clusterEngine is what the cluster tests need of one engine: the world and its cluster. A
// client session is writeloop's (one way to open a session for every cluster test and the
// failover benchmark).
type clusterEngine struct {
	name string // world.Postgres or world.MySQL
	opts func(replicas int) world.Options
	// instances of the world's cluster, the primary first.
	instances func(w *testWorld) []*world.Instance
}

var clusterEngines = []clusterEngine{
	{
		name:      world.Postgres,
		opts:      func(r int) world.Options { return world.Options{Replicas: r} },
		instances: func(w *testWorld) []*world.Instance { return w.Instances },
	},
	{
		name:      world.MySQL,
		opts:      func(r int) world.Options { return world.Options{MySQL: true, MySQLReplicas: r} },
		instances: func(w *testWorld) []*world.Instance { return w.MySQLInstances },
	},
}

// pgExecApp runs sql as the superuser in the app's database on the primary.
func pgExecApp(ctx context.Context, w *testWorld, sql string) error {
	c, err := w.PG.Connect(ctx, w.PG.Superuser(), world.DefaultDB)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql)
	return err
}

// connect opens an app session to addr, a listener of the sidecar.
func (e clusterEngine) connect(ctx context.Context, addr string) (writeloop.Session, error) {
	return writeloop.Dial(ctx, e.name, addr)
}

// clusterRig is a cluster world and a sidecar over it.
type clusterRig struct {
	e     clusterEngine
	w     *testWorld
	s     *sidecar
	ids   map[string]string // server id (port) -> instance id
	paths string            // the listeners' paths, YAML
}

// startClusterRig starts a world with replicas for e and a sidecar whose listeners list the
// replicas first, then the primary; extra is YAML added to both listeners' cluster blocks.
func startClusterRig(t *testing.T, e clusterEngine, replicas int, cluster string) *clusterRig {
	t.Helper()
	w := startWorldWith(t, e.opts(replicas))
	if err := writeloop.Prepare(ctxTimeout(t, 30*time.Second), w.World, e.name); err != nil {
		t.Fatalf("prepare the cluster: %v", err)
	}
	insts := e.instances(w)
	// The table is on every replica before anything fails: a replica promoted after a crash has
	// what it had received, and the write loops must find their table there.
	for _, i := range insts[1:] {
		if err := i.WaitCaughtUp(ctxTimeout(t, 30*time.Second)); err != nil {
			t.Fatalf("%s catching up: %v", i.ID, err)
		}
	}
	r := &clusterRig{e: e, w: w, ids: map[string]string{}}
	var paths strings.Builder
	for _, i := range append(append([]*world.Instance(nil), insts[1:]...), insts[0]) {
		fmt.Fprintf(&paths, "      - {name: %s, address: %q, tls_server_name: %q, token_host: %q}\n", i.ID, i.Address, i.TLSServerName, i.TokenHost)
		r.ids[writeloop.ServerID(i)] = i.ID
	}
	r.paths = paths.String()
	r.s = r.startSidecar(t, cluster)
	return r
}

// startSidecar starts a sidecar over the rig's cluster with cluster added to both listeners'
// cluster blocks, and waits until it has checked every instance.
func (r *clusterRig) startSidecar(t *testing.T, cluster string) *sidecar {
	t.Helper()
	w, e := r.w, r.e
	refresh := "refresh_interval: 300ms, " // unless cluster sets its own
	if strings.Contains(cluster, " refresh_interval:") {
		refresh = ""
	}
	listener := func(name, role, addr string) string {
		return fmt.Sprintf(`
  - name: %s
    engine: %s
    listen: "%s"
    role: %s
    connect_timeout: 15s
    auth: {user: app}
    tls: {ca_file: %q}
    health: {interval: 500ms, timeout: 400ms, tls_interval: 500ms, rise: 2, fall: 2}
    cluster: {%sfailover_refresh_interval: 50ms, failover_window: 10s%s}
    paths:
%s`, name, e.name, addr, role, w.CAFile, refresh, cluster, r.paths)
	}
	cfg := fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
aws: {region: %s}
shutdown: {max_delay: 10s, kill_grace: 2s}
listeners:%s%s`, w.Region, listener("rw", "writer", "{{PG}}"), listener("ro", "reader", "{{MYSQL}}"))
	s := startSidecar(t, cfg, w.SidecarEnv)
	prev := r.s
	r.s = s
	defer func() { r.s = prev }()
	r.waitTopology(t, "every instance checked", everyInstanceChecked)
	return s
}

type topologyListener struct {
	Listener  string  `json:"listener"`
	Writer    string  `json:"writer"`
	Failovers float64 `json:"failovers"`
	// WritersAnswering lists the instances answering as writer when more than one does.
	WritersAnswering []string `json:"writers_answering"`
	Instances        []struct {
		Name       string   `json:"name"`
		Discovered bool     `json:"discovered"`
		Role       string   `json:"role"`
		Fresh      bool     `json:"fresh"`
		LagSeconds *float64 `json:"lag_seconds"`
		Sessions   int      `json:"sessions"`
		LastError  string   `json:"last_error"`
	} `json:"instances"`
}

func (r *clusterRig) topology(t *testing.T) map[string]topologyListener {
	t.Helper()
	_, body, err := r.s.get("/topology")
	if err != nil {
		t.Fatal(err)
	}
	var ls []topologyListener
	if err := json.Unmarshal([]byte(body), &ls); err != nil {
		t.Fatalf("/topology: %v\n%s", err, body)
	}
	out := map[string]topologyListener{}
	for _, l := range ls {
		out[l.Listener] = l
	}
	return out
}

func (r *clusterRig) waitTopology(t *testing.T, what string, cond func(map[string]topologyListener) error) {
	t.Helper()
	waitFor(t, 30*time.Second, what, func() error { return cond(r.topology(t)) })
}

func (r *clusterRig) fresh(t *testing.T, instance string, want bool) func(map[string]topologyListener) error {
	return func(ls map[string]topologyListener) error {
		for _, in := range ls["ro"].Instances {
			if in.Name == instance {
				if in.Fresh != want {
					return fmt.Errorf("%s fresh %v (lag %v, %s), want %v", instance, in.Fresh, in.LagSeconds, in.LastError, want)
				}
				return nil
			}
		}
		return fmt.Errorf("%s not in /topology", instance)
	}
}

// landings opens n sessions on the reader listener one after another and counts the
// instances they ran on; every session must answer as a reader unless fallback is set.
func (r *clusterRig) landings(t *testing.T, n int, fallback bool) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		ctx := ctxTimeout(t, 30*time.Second)
		s, err := r.e.connect(ctx, r.s.myAddr)
		if err != nil {
			t.Fatalf("connect to the reader listener: %v", err)
		}
		srv, writer, err := s.WhoAmI(ctx)
		s.Close()
		if err != nil {
			t.Fatalf("query on the reader listener: %v", err)
		}
		if writer && !fallback {
			t.Fatalf("a reader-listener session ran on the writer %s", r.ids[srv])
		}
		got[r.ids[srv]]++
	}
	return got
}

// Reader listener, two replicas, one paused past max_replica_lag: new connections all land on
// the fresh one; resumed, both again; a reader killed: its session ends with a farewell and new
// ones go to the other; the last reader behind: the fallback, the writer, whose sessions end at
// idle once the reader is back; no reader left: the fallback again.
func TestClusterReaderFollowsLag(t *testing.T) {
	for _, e := range clusterEngines {
		t.Run(e.name, func(t *testing.T) {
			r := startClusterRig(t, e, 2, ", max_replica_lag: 1s, reader_fallback: writer")
			insts := e.instances(r.w)
			primary, paused, fresh := insts[0], insts[1], insts[2]
			// A standby's lag is known from its second check: until then the fallback would put
			// sessions on the writer.
			r.waitTopology(t, "both readers fresh", r.fresh(t, paused.ID, true))
			r.waitTopology(t, "both readers fresh", r.fresh(t, fresh.ID, true))
			if got := r.landings(t, 20, false); got[paused.ID] == 0 || got[fresh.ID] == 0 {
				t.Fatalf("both readers fresh: sessions landed %v, want both readers used", got)
			}
			ctx := ctxTimeout(t, 2*time.Minute)
			// A session on the reader about to lag: with lag_action end-at-idle it ends at idle.
			lagging := r.readerSessionOn(t, ctx, paused.ID)
			defer lagging.Close()
			if err := paused.PauseReplication(ctx); err != nil {
				t.Fatal(err)
			}
			// Lag is made for real: writes on the primary that the paused replica does not replay.
			stop := make(chan struct{})
			writesDone := make(chan error, 1)
			go func() { writesDone <- keepWriting(ctx, e, r.w, 1_000_000, stop) }()
			r.waitTopology(t, "the paused reader left out", r.fresh(t, paused.ID, false))
			if got := r.landings(t, 100, false); got[fresh.ID] != 100 {
				t.Fatalf("one reader past max_replica_lag: 100 sessions landed %v, want all on %s", got, fresh.ID)
			}
			if _, _, err := lagging.WhoAmI(ctx); err == nil || !strings.Contains(err.Error(), "max_replica_lag") {
				t.Fatalf("the lagging reader's idle session: %v, want its farewell naming max_replica_lag", err)
			}
			close(stop)
			if err := <-writesDone; err != nil {
				t.Fatal(err)
			}
			if err := paused.ResumeReplication(ctx); err != nil {
				t.Fatal(err)
			}
			r.waitTopology(t, "the resumed reader back", r.fresh(t, paused.ID, true))
			if got := r.landings(t, 20, false); got[paused.ID] == 0 || got[fresh.ID] == 0 {
				t.Fatalf("after resume: sessions landed %v, want both readers again", got)
			}
			// Kill a reader under an idle session on it.
			onFresh := r.readerSessionOn(t, ctx, fresh.ID)
			defer onFresh.Close()
			fresh.Kill()
			waitFor(t, 20*time.Second, "the killed reader's session to end with the sidecar's farewell", func() error {
				_, _, err := onFresh.WhoAmI(ctx)
				if err == nil {
					return errors.New("still answers")
				}
				// The sidecar's farewell names the instance; a dying PostgreSQL says its own
				// FATAL first (then the sidecar stays quiet): either way an error in the
				// protocol, never a bare EOF.
				var pe *pgconn.PgError
				var me *mysql.MySQLError
				if !errors.As(err, &pe) && !errors.As(err, &me) {
					t.Fatalf("the killed reader's session: %v; want a farewell in the protocol", err)
				}
				if pe != nil && pe.Severity != "FATAL" || me != nil && !strings.Contains(err.Error(), fresh.ID) {
					t.Fatalf("the killed reader's session: %v; want a FATAL, or the sidecar's ERR naming %s", err, fresh.ID)
				}
				t.Logf("the killed reader's session ended with: %v", err)
				return nil
			})
			if got := r.landings(t, 20, false); got[paused.ID] != 20 {
				t.Fatalf("a reader killed: sessions landed %v, want all on %s", got, paused.ID)
			}
			// The last reader falls behind: no fresh reader, the fallback puts sessions on the
			// writer; once it is back, they end at their next idle point and new ones go to it.
			r.fallbackMovesBack(t, ctx, primary, paused)
			paused.Kill()
			if got := r.landings(t, 5, true); got[primary.ID] != 5 {
				t.Fatalf("no reader left: sessions landed %v, want the fallback %s", got, primary.ID)
			}
		})
	}
}

// readerSessionOn opens reader-listener sessions until one runs on instance (the balance
// rotates, so a few tries do).
func (r *clusterRig) readerSessionOn(t *testing.T, ctx context.Context, instance string) writeloop.Session {
	t.Helper()
	for range 10 {
		s, err := r.e.connect(ctx, r.s.myAddr)
		if err != nil {
			t.Fatal(err)
		}
		if srv, _, err := s.WhoAmI(ctx); err == nil && r.ids[srv] == instance {
			return s
		}
		s.Close()
	}
	t.Fatalf("no reader-listener session landed on %s in 10 tries", instance)
	return nil
}

// keepWriting inserts n, n+1, ... on the primary directly until stop, so a paused replica
// falls behind.
func keepWriting(ctx context.Context, e clusterEngine, w *testWorld, n int, stop <-chan struct{}) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for ; ; n++ {
		var err error
		if e.name == world.Postgres {
			err = pgExecApp(ctx, w, fmt.Sprintf("INSERT INTO %s (n) VALUES (%d)", writeloop.Table, n))
		} else {
			err = w.MariaDB.Exec(ctx, fmt.Sprintf("INSERT INTO %s.%s (n) VALUES (%d)", world.DefaultDB, writeloop.Table, n))
		}
		if err != nil {
			return fmt.Errorf("write on the primary: %w", err)
		}
		select {
		case <-stop:
			return nil
		case <-t.C:
		}
	}
}

// A session on the writer listener never runs on a reader, and one on the reader listener
// never on the writer, across 1,000 connects (each a fresh login and role check: the rig has no
// pool) while the cluster fails over three times, spread across the connects (promote a standby
// while the old writer still runs, so two writers answer for a moment, then kill the old one;
// MariaDB's remaining replicas then follow the new writer, or they would stop being fresh).
// Role changes and connects are ordered by a lock so that no role changes between a session's
// login and its query (that race belongs to the monitor, which ends such sessions after the
// fact): what is tested is that each login is checked, while the monitor's view is stale right
// after each change.
func TestClusterRolesAcrossFailovers(t *testing.T) {
	const (
		connects   = 1000 // sessions that ran their role query, both listeners together
		failovers  = 3
		connectors = 4               // per listener, at once
		window     = 3 * time.Minute // fewer connects by then fails the test
	)
	for _, e := range clusterEngines {
		t.Run(e.name, func(t *testing.T) {
			// The monitor checks slowly in steady state, so that after each promotion its view
			// stays stale for a while and only the login's role check keeps sessions right.
			r := startClusterRig(t, e, failovers+1, ", refresh_interval: 2s, max_replica_lag: 30s, reader_fallback: none")
			insts := e.instances(r.w)
			ctx := ctxTimeout(t, window+2*time.Minute)
			deadline := time.Now().Add(window)
			var mu sync.RWMutex
			type tally struct{ ok, refused, wrong int }
			var wmu sync.Mutex
			counts := map[string]*tally{"rw": {}, "ro": {}}
			var wrong []string
			var served atomic.Int64
			done := func() bool { return served.Load() >= connects || time.Now().After(deadline) }
			var wg sync.WaitGroup
			loop := func(listener, addr string, wantWriter bool) {
				defer wg.Done()
				for !done() {
					mu.RLock()
					// A reader listener left without a reader waits connect_timeout: the
					// client gives up sooner so that the loop goes on.
					wait := 20 * time.Second
					if !wantWriter {
						wait = 3 * time.Second
					}
					cctx, cancel := context.WithTimeout(ctx, wait)
					s, err := e.connect(cctx, addr)
					var srv string
					var writer bool
					if err == nil {
						srv, writer, err = s.WhoAmI(cctx)
						s.Close()
					}
					cancel()
					mu.RUnlock()
					wmu.Lock()
					c := counts[listener]
					switch {
					case err != nil:
						c.refused++ // no instance with the role (a reader listener with no reader left)
					case writer != wantWriter:
						c.wrong++
						wrong = append(wrong, fmt.Sprintf("%s session on %s answered writer=%v", listener, r.ids[srv], writer))
					default:
						c.ok++
					}
					if err == nil {
						served.Add(1)
					}
					wmu.Unlock()
				}
			}
			for range connectors {
				wg.Add(2)
				go loop("rw", r.s.pgAddr, true)
				go loop("ro", r.s.myAddr, false)
			}
			start := time.Now()
			done1 := 0
			for k := 1; k <= failovers; k++ {
				// The k-th failover once k/(failovers+1) of the connects have run.
				at := int64(connects * k / (failovers + 1))
				for served.Load() < at && !done() {
					time.Sleep(20 * time.Millisecond) // polling the counter
				}
				if done() {
					break
				}
				old, next := insts[k-1], insts[k]
				mu.Lock()
				err := next.Promote(ctx)
				mu.Unlock()
				if err != nil {
					t.Errorf("promote %s: %v", next.ID, err)
					break
				}
				// Two writers answer: the current one is kept until it is gone.
				r.waitTopology(t, "the monitor sees two writers", func(ls map[string]topologyListener) error {
					if n := len(ls["rw"].WritersAnswering); n != 2 {
						return fmt.Errorf("%d writers answering", n)
					}
					return nil
				})
				mu.Lock()
				old.Kill()
				mu.Unlock()
				done1 = k
				if e.name == world.MySQL {
					for _, i := range insts[k+1:] {
						if err := i.Follow(ctx, next); err != nil {
							t.Errorf("%s follows %s: %v", i.ID, next.ID, err)
						}
					}
				}
			}
			wg.Wait()
			t.Logf("%d connects served in %v (%d failovers): writer listener %+v, reader listener %+v",
				served.Load(), time.Since(start).Round(time.Millisecond), done1, *counts["rw"], *counts["ro"])
			if len(wrong) > 0 {
				t.Fatalf("%d sessions ran on the wrong role: %v", len(wrong), wrong)
			}
			if served.Load() < connects || done1 < failovers {
				t.Fatalf("%d connects and %d failovers in %v, want %d and %d", served.Load(), done1, window, connects, failovers)
			}
			if counts["rw"].ok < connects/10 || counts["ro"].ok < connects/10 {
				t.Fatalf("one listener hardly served: writer %+v, reader %+v", *counts["rw"], *counts["ro"])
			}
			if counts["rw"].refused > 0 {
				t.Fatalf("%d writer-listener connects failed: new connections must wait for the new writer within connect_timeout", counts["rw"].refused)
			}
			if n := r.s.metric("rdsvalet_topology_failovers_total", `listener="rw"`); n != failovers {
				t.Fatalf("rdsvalet_topology_failovers_total{listener=rw} = %v, want %d", n, failovers)
			}
			if w := r.topology(t)["rw"].Writer; w != insts[failovers].ID {
				t.Fatalf("/topology writer %q, want %s", w, insts[failovers].ID)
			}
		})
	}
}

// A write loop through the writer listener while the old writer goes and the replica is
// promoted, in two ways: the host dies (its connections vanish without a word, then the server
// is killed), and the server is stopped as an operator does, so that it speaks its own last
// words if it has any (PostgreSQL's fast shutdown: FATAL 57P01 from each backend, which the
// sidecar replaces; MariaDB 10.11 closes its connections without a word, as it does on KILL,
// and the sidecar's farewell speaks). Either way every transaction either committed or failed with the
// outcome-unknown error (the sidecar's farewell, or the server's own words replaced by it), or
// failed before it began (on a session the failover ended between transactions), or had a
// statement the driver did not send (database/sql's ErrBadConn: nothing committed); none heard
// the server's FATAL or a bare disconnect. No write was acknowledged by the old writer after it
// was gone; writes resume on the new one.
func TestClusterWriteLoopAcrossFailover(t *testing.T) {
	const loops = 4
	ways := []struct {
		name string
		fail func(ctx context.Context, old *world.Instance) error
	}{
		{"host dies", func(_ context.Context, old *world.Instance) error {
			old.Standin.DropSessions()
			old.Kill()
			return nil
		}},
		{"server stopped", func(ctx context.Context, old *world.Instance) error { return old.Stop(ctx) }},
	}
	for _, e := range clusterEngines {
		for _, way := range ways {
			t.Run(e.name+"/"+way.name, func(t *testing.T) {
				r := startClusterRig(t, e, 1, "")
				insts := e.instances(r.w)
				old, next := insts[0], insts[1]
				ctx := ctxTimeout(t, 2*time.Minute)
				l := writeloop.Start(ctx, loops, 0, 20*time.Second, func(ctx context.Context) (writeloop.Session, error) {
					return e.connect(ctx, r.s.pgAddr)
				})
				waitFor(t, 20*time.Second, "writes before the failover", func() error {
					if c := l.Acks(); c < 20 {
						return fmt.Errorf("%d acknowledged", c)
					}
					return nil
				})
				if err := way.fail(ctx, old); err != nil {
					l.Stop()
					t.Fatal(err)
				}
				gone := time.Now()
				if err := next.Promote(ctx); err != nil {
					l.Stop()
					t.Fatal(err)
				}
				promotedAt := time.Now()
				wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				first, err := l.FirstAck(wctx, writeloop.ServerID(next), time.Time{})
				cancel()
				res := l.Stop()
				if err != nil {
					t.Fatalf("writes on the new writer: %v (%s)", err, res)
				}
				firstWrite := first.Sub(promotedAt)
				onOld, onNext := 0, 0
				for _, a := range res.Acks {
					switch a.Server {
					case writeloop.ServerID(old):
						onOld++
					case writeloop.ServerID(next):
						onNext++
					default:
						t.Errorf("a write acknowledged by unknown server %q", a.Server)
					}
				}
				t.Logf("%s; %d acknowledged by %s, %d by %s; first write on the new writer %v after promotion",
					res, onOld, old.ID, onNext, next.ID, firstWrite.Round(time.Millisecond))
				if n := res.AckedBy(writeloop.ServerID(old), gone); n > 0 {
					t.Errorf("%d writes acknowledged by %s whose COMMIT was sent after it was gone", n, old.ID)
				}
				if bad := res.Outcomes[writeloop.ServerFatal] + res.Outcomes[writeloop.Cut]; bad > 0 {
					t.Fatalf("%d transactions failed otherwise than committed or outcome unknown: %v", bad, res.Samples)
				}
				if res.Outcomes[writeloop.OutcomeUnknown] == 0 {
					t.Fatalf("no transaction was in flight at the failover (%d loops in 20 ms transactions): the test shows nothing", loops)
				}
				if firstWrite > 5*time.Second {
					t.Fatalf("first write on the new writer %v after promotion; want well within connect_timeout", firstWrite)
				}
			})
		}
	}
}

// A MySQL writer demoted with read_only while it keeps running (no kill): the replica is
// promoted, then the old writer made read-only, as a planned switchover does. New connections
// go to the new writer; the old writer's idle session ends with the failover farewell, its
// busy ones at their transaction's end (none is cut: no outcome-unknown error, no bare
// disconnect); no write is accepted by the demoted instance through the sidecar (a COMMIT sent
// after the demotion is refused, 1290); the write loop resumes on the new writer. PostgreSQL
// has no such case: a running primary cannot be made read-only (default_transaction_read_only
// is a default a session can undo; only a restart as a standby demotes it), so its failovers
// are the kills and stops of TestClusterWriteLoopAcrossFailover.
func TestClusterWriterDemotedReadOnly(t *testing.T) {
	const loops = 4
	e := clusterEngines[1]
	r := startClusterRig(t, e, 1, "")
	insts := e.instances(r.w)
	old, next := insts[0], insts[1]
	ctx := ctxTimeout(t, 2*time.Minute)
	idle, err := e.connect(ctx, r.s.pgAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if srv, writer, err := idle.WhoAmI(ctx); err != nil || r.ids[srv] != old.ID || !writer {
		t.Fatalf("the idle session: on %q writer %v (%v), want on the writer %s", r.ids[srv], writer, err, old.ID)
	}
	l := writeloop.Start(ctx, loops, 0, 20*time.Second, func(ctx context.Context) (writeloop.Session, error) {
		return e.connect(ctx, r.s.pgAddr)
	})
	waitFor(t, 20*time.Second, "writes before the switchover", func() error {
		if c := l.Acks(); c < 20 {
			return fmt.Errorf("%d acknowledged", c)
		}
		return nil
	})
	if err := next.Promote(ctx); err != nil {
		l.Stop()
		t.Fatal(err)
	}
	if err := old.MariaDB.SetReadOnly(ctx, true); err != nil {
		l.Stop()
		t.Fatal(err)
	}
	demoted := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err = l.FirstAck(wctx, writeloop.ServerID(next), demoted)
	cancel()
	// The idle session on the demoted writer ends with the failover farewell.
	waitFor(t, 20*time.Second, "the idle session on the demoted writer to end", func() error {
		_, _, err := idle.WhoAmI(ctx)
		if err == nil {
			return errors.New("still answers")
		}
		var me *mysql.MySQLError
		if !errors.As(err, &me) || !strings.Contains(me.Message, "failover") || !strings.Contains(me.Message, old.ID) {
			t.Fatalf("the idle session on the demoted writer: %v; want the failover farewell naming %s", err, old.ID)
		}
		return nil
	})
	r.waitTopology(t, "no session left on the demoted writer", func(ls map[string]topologyListener) error {
		for _, in := range ls["rw"].Instances {
			if in.Name == old.ID && in.Sessions != 0 {
				return fmt.Errorf("%d sessions on %s", in.Sessions, old.ID)
			}
		}
		return nil
	})
	res := l.Stop()
	t.Logf("%s", res)
	if err != nil {
		t.Fatalf("writes on the new writer: %v", err)
	}
	if n := res.AckedBy(writeloop.ServerID(old), demoted); n > 0 {
		t.Errorf("%d writes acknowledged by the demoted %s, COMMIT sent after its read_only was set", n, old.ID)
	}
	if cut := res.Outcomes[writeloop.OutcomeUnknown] + res.Outcomes[writeloop.ServerFatal] + res.Outcomes[writeloop.Cut]; cut > 0 {
		t.Fatalf("%d transactions cut (the demoted writer's busy sessions must end at their transaction's end): %v", cut, res.Samples)
	}
	for range 10 {
		s, err := e.connect(ctx, r.s.pgAddr)
		if err != nil {
			t.Fatal(err)
		}
		srv, writer, err := s.WhoAmI(ctx)
		s.Close()
		if err != nil || r.ids[srv] != next.ID || !writer {
			t.Fatalf("a new session after the switchover: on %q writer %v (%v), want the new writer %s", r.ids[srv], writer, err, next.ID)
		}
	}
}

// Discovery against the topology stand-ins inside the real servers (test/harness/topology):
// each view's query runs on every instance without error, its members are the configured
// instances (matched by id or endpoint name), the writer is the primary, and the reader's lag
// is known (from the view for Aurora).
func TestClusterDiscoveryViews(t *testing.T) {
	for _, e := range clusterEngines {
		t.Run(e.name, func(t *testing.T) {
			r := startClusterRig(t, e, 1, "")
			insts := e.instances(r.w)
			tmpl, aurora, multiAZ := r.w.InstanceTemplate, "aurora-postgresql", "multi-az-postgresql"
			extra := ""
			if e.name == "mysql" {
				tmpl, aurora, multiAZ = r.w.MySQLInstanceTemplate, "aurora-mysql", "multi-az-mysql"
				extra = ", topology_schema: " + r.w.MySQLTopology.Schema()
			}
			for _, d := range []string{aurora, multiAZ} {
				cluster := fmt.Sprintf(", discovery: %s, instance_template: %q", d, tmpl)
				if d == aurora {
					cluster += extra
				}
				r.s = r.startSidecar(t, cluster)
				r.waitTopology(t, d+": the views read, the reader's lag known", func(ls map[string]topologyListener) error {
					for _, l := range ls {
						if l.Writer != insts[0].ID {
							return fmt.Errorf("%s: writer %q, want %s", l.Listener, l.Writer, insts[0].ID)
						}
						for _, in := range l.Instances {
							switch {
							case in.LastError != "":
								return fmt.Errorf("%s: %s: %s", l.Listener, in.Name, in.LastError)
							case in.Discovered:
								t.Fatalf("%s: %s discovered as a new instance: the view's members are the configured ones", d, in.Name)
							case in.Role == "reader" && in.LagSeconds == nil:
								return fmt.Errorf("%s: reader %s has no lag", l.Listener, in.Name)
							}
						}
					}
					return nil
				})
				if n := r.landings(t, 5, false); n[insts[1].ID] != 5 {
					t.Fatalf("%s: reader sessions landed %v, want all on %s", d, n, insts[1].ID)
				}
			}
		})
	}
}

// everyInstanceChecked holds once the monitor has a role for every instance of every listener.
func everyInstanceChecked(ls map[string]topologyListener) error {
	for _, l := range ls {
		for _, in := range l.Instances {
			if in.Role == "unknown" {
				return fmt.Errorf("%s: %s not checked yet (%s)", l.Listener, in.Name, in.LastError)
			}
		}
	}
	return nil
}
