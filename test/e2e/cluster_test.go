package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
			return w.PG.Exec(ctx, "CREATE TABLE IF NOT EXISTS writes (n int PRIMARY KEY); GRANT ALL ON writes TO app")
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

// clusterRig is a cluster world and a sidecar over it.
type clusterRig struct {
	e   clusterEngine
	w   *testWorld
	s   *sidecar
	ids map[string]string // server id (port) -> instance id
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
%s`, name, e.name, addr, role, w.CAFile, cluster, paths.String())
	}
	cfg := fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
aws: {region: %s}
shutdown: {max_delay: 10s, kill_grace: 2s}
listeners:%s%s`, w.Region, listener("rw", "writer", "{{PG}}"), listener("ro", "reader", "{{MYSQL}}"))
	r.s = startSidecar(t, cfg, w.SidecarEnv)
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
	return r
}

type topologyListener struct {
	Listener  string  `json:"listener"`
	Writer    string  `json:"writer"`
	Failovers float64 `json:"failovers"`
	Instances []struct {
		Name       string   `json:"name"`
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
// ones go to the other; no reader left: the fallback, the writer.
func TestClusterReaderFollowsLag(t *testing.T) {
	for _, e := range clusterEngines {
		t.Run(e.name, func(t *testing.T) {
			r := startClusterRig(t, e, 2, ", max_replica_lag: 1s, reader_fallback: writer")
			insts := e.instances(r.w)
			primary, paused, fresh := insts[0], insts[1], insts[2]
			if got := r.landings(t, 20, false); got[paused.ID] == 0 || got[fresh.ID] == 0 {
				t.Fatalf("both readers fresh: sessions landed %v, want both readers used", got)
			}
			ctx := ctxTimeout(t, 2*time.Minute)
			// A session on the reader about to lag: with lag_action end-at-idle it ends at idle.
			var lagging clusterSession
			for range 10 {
				s, err := e.connect(ctx, r.s.myAddr)
				if err != nil {
					t.Fatal(err)
				}
				if srv, _, err := s.whoami(ctx); err == nil && r.ids[srv] == paused.ID {
					lagging = s
					break
				}
				s.close()
			}
			if lagging == nil {
				t.Fatal("no session landed on the reader to pause in 10 tries")
			}
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
			var onFresh clusterSession
			for range 10 {
				s, err := e.connect(ctx, r.s.myAddr)
				if err != nil {
					t.Fatal(err)
				}
				if srv, _, err := s.whoami(ctx); err == nil && r.ids[srv] == fresh.ID {
					onFresh = s
					break
				}
				s.close()
			}
			if onFresh == nil {
				t.Fatal("no session landed on the reader to kill in 10 tries")
			}
			defer onFresh.close()
			fresh.Kill()
			waitFor(t, 20*time.Second, "the killed reader's session to end with the sidecar's farewell", func() error {
				_, _, err := onFresh.whoami(ctx)
				if err == nil {
					return errors.New("still answers")
				}
				if !strings.Contains(err.Error(), fresh.ID) {
					t.Fatalf("the killed reader's session: %v; want the sidecar's farewell naming %s", err, fresh.ID)
				}
				return nil
			})
			if got := r.landings(t, 20, false); got[paused.ID] != 20 {
				t.Fatalf("a reader killed: sessions landed %v, want all on %s", got, paused.ID)
			}
			paused.Kill()
			if got := r.landings(t, 5, true); got[primary.ID] != 5 {
				t.Fatalf("no reader left: sessions landed %v, want the fallback %s", got, primary.ID)
			}
		})
	}
}

// keepWriting inserts on the primary directly until stop, so a paused replica falls behind.
func keepWriting(ctx context.Context, e clusterEngine, w *testWorld, stop <-chan struct{}) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for n := 1_000_000; ; n++ {
		var err error
		if e.name == "postgres" {
			err = w.PG.Exec(ctx, fmt.Sprintf("INSERT INTO writes VALUES (%d)", n))
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
