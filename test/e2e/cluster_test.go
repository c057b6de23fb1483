package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// The cluster suites (docs/cluster.md): a sidecar with a writer listener ({{PG}}) and a reader
// listener ({{MYSQL}} placeholder, whatever the engine) over the instances of a real
// replicated cluster from the harness (a pg_basebackup standby or a MariaDB GTID replica per
// replica, each behind its own RDS stand-in), for both engines.

// clusterEngine is what the cluster tests need of one engine: the world, and a client session.
type clusterEngine struct {
	name string
	opts func(replicas int) world.Options
	// instances of the world's cluster, the primary first.
	instances func(w *testWorld) []*world.Instance
	connect   func(ctx context.Context, addr string) (clusterSession, error)
	// serverID is what a session's server says identifies it (its port), per instance.
	serverID func(i *world.Instance) string
	// prepare runs once on the primary before the sidecar starts.
	prepare func(ctx context.Context, w *testWorld) error
}

// clusterSession is one app session through the sidecar.
type clusterSession interface {
	// whoami returns the session's server (its port) and whether it answers as the writer.
	whoami(ctx context.Context) (server string, writer bool, err error)
	// write runs one transaction inserting n, returning the server that acknowledged it; err
	// says where it failed (committed is true once COMMIT was answered OK).
	write(ctx context.Context, n int) (server string, committed bool, err error)
	close()
}

var clusterEngines = []clusterEngine{
	{
		name: "postgres",
		opts: func(r int) world.Options { return world.Options{Replicas: r} },
		instances: func(w *testWorld) []*world.Instance {
			return w.Instances
		},
		connect: func(ctx context.Context, addr string) (clusterSession, error) {
			host, port, _ := strings.Cut(addr, ":")
			c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable connect_timeout=20", host, port))
			if err != nil {
				return nil, err
			}
			return &pgSession{c: c}, nil
		},
		serverID: func(i *world.Instance) string { return strconv.Itoa(i.PG.Port) },
		prepare: func(ctx context.Context, w *testWorld) error {
			return pgExecApp(ctx, w, "CREATE TABLE IF NOT EXISTS writes (n int PRIMARY KEY); GRANT ALL ON writes TO app")
		},
	},
	{
		name: "mysql",
		opts: func(r int) world.Options { return world.Options{MySQL: true, MySQLReplicas: r} },
		instances: func(w *testWorld) []*world.Instance {
			return w.MySQLInstances
		},
		connect: func(ctx context.Context, addr string) (clusterSession, error) {
			c := mysql.NewConfig()
			c.User, c.Net, c.Addr, c.DBName = "app", "tcp", addr, "app"
			c.Timeout, c.ReadTimeout, c.WriteTimeout = 20*time.Second, 30*time.Second, 30*time.Second
			conn, err := mysql.NewConnector(c)
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
		},
		serverID: func(i *world.Instance) string { return strconv.Itoa(i.MariaDB.Port) },
		prepare: func(ctx context.Context, w *testWorld) error {
			// The monitor reads SHOW REPLICA STATUS as the probe user (docs/cluster.md):
			// MariaDB asks for SLAVE MONITOR. Granted on each instance (not replicated: the
			// replicas are read-only to the replication stream's view of grants too).
			for _, i := range w.MySQLInstances {
				if err := i.MariaDB.Exec(ctx, "SET SESSION sql_log_bin=0; GRANT SLAVE MONITOR ON *.* TO 'app'@'%'"); err != nil {
					return err
				}
			}
			return w.MariaDB.Exec(ctx, "CREATE TABLE IF NOT EXISTS app.writes (n int PRIMARY KEY)")
		},
	},
}

// pgExecApp runs sql as the superuser in the app's database on the primary.
func pgExecApp(ctx context.Context, w *testWorld, sql string) error {
	c, err := w.PG.Connect(ctx, w.PG.Superuser(), "app")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql)
	return err
}

type pgSession struct{ c *pgx.Conn }

func (s *pgSession) whoami(ctx context.Context) (string, bool, error) {
	var port string
	var rec bool
	err := s.c.QueryRow(ctx, "SELECT current_setting('port'), pg_is_in_recovery()").Scan(&port, &rec)
	return port, !rec, err
}

func (s *pgSession) write(ctx context.Context, n int) (string, bool, error) {
	tx, err := s.c.Begin(ctx)
	if err != nil {
		return "", false, err
	}
	var port string
	if err := tx.QueryRow(ctx, "INSERT INTO writes VALUES ($1) RETURNING current_setting('port')", n).Scan(&port); err != nil {
		_ = tx.Rollback(context.Background())
		return "", false, fmt.Errorf("in transaction: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_sleep(0.03)"); err != nil {
		_ = tx.Rollback(context.Background())
		return "", false, fmt.Errorf("in transaction: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return "", false, fmt.Errorf("in transaction: commit: %w", err)
	}
	return port, true, nil
}

func (s *pgSession) close() { _ = s.c.Close(context.Background()) }

type mySession struct {
	db *sql.DB
	c  *sql.Conn
}

func (s *mySession) whoami(ctx context.Context) (string, bool, error) {
	var port string
	var ro, iro int
	err := s.c.QueryRowContext(ctx, "SELECT @@port, @@global.read_only, @@global.innodb_read_only").Scan(&port, &ro, &iro)
	return port, ro == 0 && iro == 0, err
}

func (s *mySession) write(ctx context.Context, n int) (string, bool, error) {
	tx, err := s.c.BeginTx(ctx, nil)
	if err != nil {
		return "", false, err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO writes VALUES (?)", n); err != nil {
		_ = tx.Rollback()
		return "", false, fmt.Errorf("in transaction: %w", err)
	}
	var port string
	if err := tx.QueryRowContext(ctx, "SELECT @@port FROM (SELECT SLEEP(0.03)) s").Scan(&port); err != nil {
		_ = tx.Rollback() // database/sql's Conn.Close waits for an open Tx
		return "", false, fmt.Errorf("in transaction: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return "", false, fmt.Errorf("in transaction: commit: %w", err)
	}
	return port, true, nil
}

func (s *mySession) close() {
	_ = s.c.Close()
	_ = s.db.Close()
}

// outcomeUnknown reports whether err is the sidecar's "transaction outcome unknown" farewell:
// PostgreSQL 08007, MySQL ERR 2013 with SQL state 08007.
func outcomeUnknown(err error) bool {
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

// readOnlyRefusal reports whether err is the database refusing a write as read-only
// (PostgreSQL 25006, MySQL 1290 --read-only).
func readOnlyRefusal(err error) bool {
	var pe *pgconn.PgError
	var me *mysql.MySQLError
	return errors.As(err, &pe) && pe.Code == "25006" || errors.As(err, &me) && me.Number == 1290
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
	if err := e.prepare(ctxTimeout(t, 30*time.Second), w); err != nil {
		t.Fatalf("prepare the cluster: %v", err)
	}
	insts := e.instances(w)
	r := &clusterRig{e: e, w: w, ids: map[string]string{}}
	var paths strings.Builder
	for _, i := range append(append([]*world.Instance(nil), insts[1:]...), insts[0]) {
		fmt.Fprintf(&paths, "      - {name: %s, address: %q, tls_server_name: %q, token_host: %q}\n", i.ID, i.Address, i.TLSServerName, i.TokenHost)
		r.ids[e.serverID(i)] = i.ID
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
    cluster: {refresh_interval: 300ms, failover_refresh_interval: 50ms, failover_window: 10s%s}
    paths:
%s`, name, e.name, addr, role, w.CAFile, cluster, r.paths)
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
	r.waitTopology(t, "every instance checked", func(ls map[string]topologyListener) error {
		for _, l := range ls {
			for _, in := range l.Instances {
				if in.Role == "unknown" {
					return fmt.Errorf("%s: %s not checked yet (%s)", l.Listener, in.Name, in.LastError)
				}
			}
		}
		return nil
	})
	return s
}

type topologyListener struct {
	Listener  string  `json:"listener"`
	Writer    string  `json:"writer"`
	Failovers float64 `json:"failovers"`
	Instances []struct {
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
		srv, writer, err := s.whoami(ctx)
		s.close()
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
			defer lagging.close()
			if err := paused.PauseReplication(ctx); err != nil {
				t.Fatal(err)
			}
			// Lag is made for real: writes on the primary that the paused replica does not replay.
			stop := make(chan struct{})
			writesDone := make(chan error, 1)
			go func() { writesDone <- keepWriting(ctx, e, r.w, stop) }()
			r.waitTopology(t, "the paused reader left out", r.fresh(t, paused.ID, false))
			if got := r.landings(t, 100, false); got[fresh.ID] != 100 {
				t.Fatalf("one reader past max_replica_lag: 100 sessions landed %v, want all on %s", got, fresh.ID)
			}
			if _, _, err := lagging.whoami(ctx); err == nil || !strings.Contains(err.Error(), "max_replica_lag") {
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
			defer onFresh.close()
			fresh.Kill()
			waitFor(t, 20*time.Second, "the killed reader's session to end with the sidecar's farewell", func() error {
				_, _, err := onFresh.whoami(ctx)
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
func (r *clusterRig) readerSessionOn(t *testing.T, ctx context.Context, instance string) clusterSession {
	t.Helper()
	for range 10 {
		s, err := r.e.connect(ctx, r.s.myAddr)
		if err != nil {
			t.Fatal(err)
		}
		if srv, _, err := s.whoami(ctx); err == nil && r.ids[srv] == instance {
			return s
		}
		s.close()
	}
	t.Fatalf("no reader-listener session landed on %s in 10 tries", instance)
	return nil
}

// keepWriting inserts on the primary directly until stop, so a paused replica falls behind.
func keepWriting(ctx context.Context, e clusterEngine, w *testWorld, stop <-chan struct{}) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for n := 1_000_000; ; n++ {
		var err error
		if e.name == "postgres" {
			err = pgExecApp(ctx, w, fmt.Sprintf("INSERT INTO writes VALUES (%d)", n))
		} else {
			err = w.MariaDB.Exec(ctx, fmt.Sprintf("INSERT INTO app.writes VALUES (%d)", n))
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
// never on the writer, across many connects while the cluster fails over twice (promote a
// standby, kill the old writer; then again). Role changes and connects are ordered by a lock so
// that no role changes between a session's login and its query (that race belongs to the
// monitor, which ends such sessions after the fact): what is tested is that each login is
// checked, while the monitor's view is stale right after each change.
func TestClusterRolesAcrossFailovers(t *testing.T) {
	const (
		maxConnects = 1000
		budget      = 25 * time.Second
	)
	for _, e := range clusterEngines {
		t.Run(e.name, func(t *testing.T) {
			r := startClusterRig(t, e, 2, ", max_replica_lag: 30s, reader_fallback: none")
			insts := e.instances(r.w)
			ctx := ctxTimeout(t, 2*time.Minute)
			var mu sync.RWMutex
			type tally struct{ ok, refused, wrong int }
			var wmu sync.Mutex
			counts := map[string]*tally{"rw": {}, "ro": {}}
			var wrong []string
			total := atomic.Int64{}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			loop := func(listener, addr string, wantWriter bool) {
				defer wg.Done()
				for total.Load() < maxConnects {
					select {
					case <-stop:
						return
					default:
					}
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
						srv, writer, err = s.whoami(cctx)
						s.close()
					}
					cancel()
					mu.RUnlock()
					total.Add(1)
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
					wmu.Unlock()
				}
			}
			wg.Add(2)
			go loop("rw", r.s.pgAddr, true)
			go loop("ro", r.s.myAddr, false)
			start := time.Now()
			failover := func(next, old *world.Instance) {
				time.Sleep(time.Duration(budget.Nanoseconds() / 4)) // connects run between failovers
				mu.Lock()
				if err := next.Promote(ctx); err != nil {
					t.Errorf("promote %s: %v", next.ID, err)
				}
				mu.Unlock()
				time.Sleep(200 * time.Millisecond) // two writers for a moment: the current one is kept
				mu.Lock()
				old.Kill()
				mu.Unlock()
			}
			failover(insts[1], insts[0])
			failover(insts[2], insts[1])
			time.Sleep(time.Duration(budget.Nanoseconds() / 4))
			close(stop)
			wg.Wait()
			t.Logf("%d connects in %v: writer listener %+v, reader listener %+v", total.Load(), time.Since(start).Round(time.Millisecond), *counts["rw"], *counts["ro"])
			if len(wrong) > 0 {
				t.Fatalf("%d sessions ran on the wrong role: %v", len(wrong), wrong)
			}
			if counts["rw"].ok < 30 || counts["ro"].ok < 10 {
				t.Fatalf("too few sessions served to show anything: writer %+v, reader %+v", *counts["rw"], *counts["ro"])
			}
			if counts["rw"].refused > 0 {
				t.Fatalf("%d writer-listener connects failed: new connections must wait for the new writer within connect_timeout", counts["rw"].refused)
			}
			if n := r.s.metric("rdsvalet_topology_failovers_total", `listener="rw"`); n != 2 {
				t.Fatalf("rdsvalet_topology_failovers_total{listener=rw} = %v, want 2", n)
			}
			if w := r.topology(t)["rw"].Writer; w != insts[2].ID {
				t.Fatalf("/topology writer %q, want %s", w, insts[2].ID)
			}
		})
	}
}

// A write loop through the writer listener while the primary is killed and the replica
// promoted (a crash failover: the old writer's host gone): every transaction either committed or failed with the outcome-unknown error (or failed
// before it began, on a session the failover ended between transactions); no write was
// acknowledged by an instance after it stopped being the writer; writes resume on the new one.
func TestClusterWriteLoopAcrossFailover(t *testing.T) {
	const loops = 4
	for _, e := range clusterEngines {
		t.Run(e.name, func(t *testing.T) {
			r := startClusterRig(t, e, 1, "")
			insts := e.instances(r.w)
			old, next := insts[0], insts[1]
			ctx := ctxTimeout(t, 2*time.Minute)
			type ack struct {
				server string
				at     time.Time
			}
			var mu sync.Mutex
			var acks []ack
			var unknown, beforeBegin, refusedRO int
			var bad []string
			var n atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range loops {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var s clusterSession
					defer func() {
						if s != nil {
							s.close()
						}
					}()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if s == nil {
							var err error
							if s, err = e.connect(ctx, r.s.pgAddr); err != nil {
								mu.Lock()
								bad = append(bad, "connect: "+err.Error())
								mu.Unlock()
								return
							}
						}
						srv, committed, err := s.write(ctx, int(n.Add(1)))
						now := time.Now()
						mu.Lock()
						switch {
						case committed:
							acks = append(acks, ack{srv, now})
						case outcomeUnknown(err):
							unknown++
						case readOnlyRefusal(err):
							refusedRO++ // a read-only instance's own refusal: nothing written
						case !strings.Contains(err.Error(), "in transaction"):
							beforeBegin++ // the session was ended between transactions
						default:
							bad = append(bad, err.Error())
						}
						mu.Unlock()
						if err != nil {
							s.close()
							s = nil
						}
					}
				}()
			}
			count := func() int {
				mu.Lock()
				defer mu.Unlock()
				return len(acks)
			}
			waitFor(t, 20*time.Second, "writes before the failover", func() error {
				if c := count(); c < 20 {
					return fmt.Errorf("%d acknowledged", c)
				}
				return nil
			})
			// The host dies: its connections vanish without a word (a dying PostgreSQL would
			// otherwise say its own FATAL first), then the server is gone.
			old.Standin.DropSessions()
			old.Kill()
			demotedAt := time.Now()
			if err := next.Promote(ctx); err != nil {
				t.Fatal(err)
			}
			promotedAt := time.Now()
			before := count()
			waitFor(t, 20*time.Second, "writes on the new writer", func() error {
				mu.Lock()
				defer mu.Unlock()
				for _, a := range acks[before:] {
					if r.ids[a.server] == next.ID {
						return nil
					}
				}
				return errors.New("none yet")
			})
			firstWrite := time.Since(promotedAt)
			time.Sleep(500 * time.Millisecond)
			close(stop)
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			onOld, onNext := 0, 0
			for _, a := range acks {
				switch r.ids[a.server] {
				case old.ID:
					onOld++
					if a.at.After(demotedAt.Add(time.Second)) {
						t.Errorf("a write acknowledged by %s at %v, %v after it was demoted", old.ID, a.at.Format("15:04:05.000"), a.at.Sub(demotedAt))
					}
				case next.ID:
					onNext++
				default:
					t.Errorf("a write acknowledged by unknown server %q", a.server)
				}
			}
			t.Logf("%d writes acknowledged (%d by %s, %d by %s), %d outcome unknown, %d refused read-only, %d ended between transactions; first write on the new writer %v after promotion",
				len(acks), onOld, old.ID, onNext, next.ID, unknown, refusedRO, beforeBegin, firstWrite.Round(time.Millisecond))
			if len(bad) > 0 {
				t.Fatalf("%d transactions failed otherwise than committed or outcome unknown: %v", len(bad), bad)
			}
			if unknown == 0 {
				t.Fatalf("no transaction was in flight at the failover (%d loops in 30 ms transactions): the test shows nothing", loops)
			}
			if firstWrite > 5*time.Second {
				t.Fatalf("first write on the new writer %v after promotion; want well within connect_timeout", firstWrite)
			}
		})
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
