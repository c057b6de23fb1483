package dbusers_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/internal/dbusers"
	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

const (
	pgMaster   = "valet_master"
	pgMasterPW = "master-Pw-1"
	pgDB       = "app"
)

type pgWorld struct {
	t      *testing.T
	srv    *pgserver.Server
	ca     *pki.CA
	caFile string
}

// startPG runs a real PostgreSQL set up the way RDS sets one up for the provisioner: a master
// user with CREATEROLE and a password (not a superuser), the database it owns, and the role
// rds_iam, which RDS has and a plain server does not (so the test creates it). Autovacuum is
// off so that the transaction counter moves only when a statement writes (the proof that a
// second run changes nothing).
func startPG(t *testing.T) *pgWorld {
	t.Helper()
	if testing.Short() {
		t.Skip("real PostgreSQL: skipped with -short")
	}
	ctx := context.Background()
	ca, err := pki.NewCA("dbusers test")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pgserver.Start(ctx, pgserver.Options{CA: ca, Logf: t.Logf, Settings: map[string]string{"autovacuum": "off"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	caFile, err := ca.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &pgWorld{t: t, srv: srv, ca: ca, caFile: caFile}
	if err := srv.CreatePasswordRole(ctx, pgMaster, pgMasterPW, pgserver.SCRAM); err != nil {
		t.Fatal(err)
	}
	w.super("CREATE ROLE rds_iam; ALTER ROLE " + pgMaster + " CREATEROLE")
	if err := srv.CreateDatabase(ctx, pgDB, pgMaster); err != nil {
		t.Fatal(err)
	}
	// The master creates the schemas and tables, as the migrations would.
	w.asMaster("CREATE SCHEMA orders; CREATE TABLE orders.items (id serial PRIMARY KEY, name text);" +
		"CREATE SCHEMA reporting; CREATE TABLE reporting.daily (day date, total int)")
	return w
}

func (w *pgWorld) super(sql string) {
	w.t.Helper()
	if err := w.srv.Exec(context.Background(), sql); err != nil {
		w.t.Fatal(err)
	}
}

func (w *pgWorld) asMaster(sql string) {
	w.t.Helper()
	c := w.login(pgMaster, pgMasterPW)
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		w.t.Fatalf("as master: %s: %v", sql, err)
	}
}

// login is a real login over verified TLS (app roles are trusted on loopback by the harness's
// pg_hba, as IAM users are let in by RDS once the token checks out).
func (w *pgWorld) login(user, password string) *pgx.Conn {
	w.t.Helper()
	cfg, err := pgx.ParseConfig(w.srv.TLSDSN(user, pgDB, w.caFile))
	if err != nil {
		w.t.Fatal(err)
	}
	cfg.Password = password
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		w.t.Fatalf("login as %s: %v", user, err)
	}
	return c
}

func (w *pgWorld) target() dbusers.Target {
	return dbusers.Target{Engine: "postgres", Addr: w.srv.Addr(), ServerName: "localhost", RootCAs: w.ca.CertPool(),
		User: pgMaster, Password: pgMasterPW, Database: pgDB, ConnectTimeout: 10 * time.Second}
}

func (w *pgWorld) session() dbusers.Session {
	w.t.Helper()
	s, err := dbusers.Connect(context.Background(), w.target())
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(s.Close)
	return s
}

// run plans and applies, returning the plan and what ran.
func (w *pgWorld) run(s dbusers.Session, users []dbusers.User, revoke bool) ([]dbusers.Change, []string) {
	w.t.Helper()
	ctx := context.Background()
	plan, err := s.Plan(ctx, users, revoke)
	if err != nil {
		w.t.Fatal(err)
	}
	ran, err := s.Apply(ctx, plan)
	if err != nil {
		w.t.Fatal(err)
	}
	return plan, ran
}

func (w *pgWorld) txid() int64 {
	w.t.Helper()
	c, err := w.srv.Connect(context.Background(), pgserver.Superuser, pgDB)
	if err != nil {
		w.t.Fatal(err)
	}
	defer c.Close(context.Background())
	var x int64
	if err := c.QueryRow(context.Background(), "SELECT txid_current()").Scan(&x); err != nil {
		w.t.Fatal(err)
	}
	return x
}

func (w *pgWorld) query(user, sql string) error {
	w.t.Helper()
	c := w.login(user, "")
	defer c.Close(context.Background())
	_, err := c.Exec(context.Background(), sql)
	return err
}

func (w *pgWorld) bool(sql string) bool {
	w.t.Helper()
	c, err := w.srv.Connect(context.Background(), pgserver.Superuser, pgDB)
	if err != nil {
		w.t.Fatal(err)
	}
	defer c.Close(context.Background())
	var b bool
	if err := c.QueryRow(context.Background(), sql).Scan(&b); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
	return b
}

func mustGrants(t *testing.T, engine string, gs ...string) []dbusers.Grant {
	t.Helper()
	var out []dbusers.Grant
	for _, g := range gs {
		pg, err := dbusers.ParseGrant(g, engine)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pg)
	}
	return out
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Errorf("%s: want permission denied (42501), got %v", what, err)
	}
}

func actions(cs []dbusers.Change) map[string]dbusers.Action {
	m := map[string]dbusers.Action{}
	for _, c := range cs {
		m[c.User] = c.Action
	}
	return m
}

func TestPostgresUsersGrantsIdempotentAndRevoke(t *testing.T) {
	w := startPG(t)
	s := w.session()
	users := []dbusers.User{
		{Name: "app_rw", Grants: mustGrants(t, "postgres", "readwrite on schema orders")},
		{Name: "app_ro", Grants: mustGrants(t, "postgres", "readonly")},
	}
	plan, ran := w.run(s, users, false)
	if a := actions(plan); a["app_rw"] != dbusers.Create || a["app_ro"] != dbusers.Create || len(a) != 2 {
		t.Fatalf("first plan: %v", a)
	}
	t.Logf("first run:\n  %s", strings.Join(ran, "\n  "))
	for _, want := range []string{`CREATE ROLE "app_rw" LOGIN`, `GRANT rds_iam TO "app_rw"`,
		`GRANT DELETE, INSERT, SELECT, UPDATE ON ALL TABLES IN SCHEMA "orders" TO "app_rw"`,
		`ALTER DEFAULT PRIVILEGES IN SCHEMA "orders" GRANT DELETE, INSERT, SELECT, UPDATE ON TABLES TO "app_rw"`,
		`GRANT SELECT ON ALL TABLES IN SCHEMA "reporting" TO "app_ro"`} {
		if !contains(ran, want) {
			t.Errorf("first run lacks %q", want)
		}
	}

	// What RDS checks at login and the privileges the apps get, by the server itself.
	for _, u := range []string{"app_rw", "app_ro"} {
		if !w.bool("SELECT pg_has_role('" + u + "', 'rds_iam', 'MEMBER')") {
			t.Errorf("%s is not in rds_iam", u)
		}
	}
	if !w.bool("SELECT has_table_privilege('app_rw', 'orders.items', 'INSERT') AND NOT has_table_privilege('app_rw', 'reporting.daily', 'SELECT')") {
		t.Error("app_rw: want INSERT on orders.items and nothing on reporting")
	}
	if err := w.query("app_rw", "INSERT INTO orders.items (name) VALUES ('a')"); err != nil {
		t.Errorf("app_rw insert (serial: the sequence's USAGE too): %v", err)
	}
	wantDenied(t, "app_rw reads reporting", w.query("app_rw", "SELECT * FROM reporting.daily"))
	if err := w.query("app_ro", "SELECT * FROM orders.items, reporting.daily"); err != nil {
		t.Errorf("app_ro select on every schema: %v", err)
	}
	wantDenied(t, "app_ro inserts", w.query("app_ro", "INSERT INTO orders.items (name) VALUES ('b')"))

	// A table the master creates later is covered by the default privileges, and needs no run.
	w.asMaster("CREATE TABLE orders.later (id serial, v text)")
	if err := w.query("app_rw", "INSERT INTO orders.later (v) VALUES ('x')"); err != nil {
		t.Errorf("app_rw on a table created after the run: %v", err)
	}

	// The second run plans nothing, runs nothing, and no transaction writes: the server's
	// transaction counter moves only by the probe's own txid_current().
	before := w.txid()
	s2 := w.session()
	plan, ran = w.run(s2, users, false)
	after := w.txid()
	for _, c := range plan {
		if c.Action != dbusers.Noop || len(c.Statements) > 0 {
			t.Errorf("second plan: %s %s %v", c.User, c.Action, c.Statements)
		}
	}
	if len(ran) != 0 || after != before+1 {
		t.Errorf("second run ran %v; transactions before %d after %d (want after = before+1)", ran, before, after)
	}

	// Narrowing a grant revokes the rest.
	users[0].Grants = mustGrants(t, "postgres", "readonly on schema orders")
	plan, ran = w.run(s2, users, false)
	if a := actions(plan); a["app_rw"] != dbusers.Update || a["app_ro"] != dbusers.Noop {
		t.Errorf("narrowed plan: %v", a)
	}
	if !contains(ran, `REVOKE DELETE, INSERT, UPDATE ON ALL TABLES IN SCHEMA "orders" FROM "app_rw"`) {
		t.Errorf("narrowing ran %v", ran)
	}
	wantDenied(t, "app_rw inserts after narrowing", w.query("app_rw", "INSERT INTO orders.items (name) VALUES ('c')"))

	// A user someone else made is never ours to drop.
	w.super("CREATE ROLE by_hand LOGIN")
	// Removed from the spec: kept without revoking ...
	users = users[:1]
	plan, ran = w.run(s2, users, false)
	if a := actions(plan); a["app_ro"] != dbusers.Keep || len(ran) != 0 {
		t.Errorf("removed without revoke: plan %v ran %v", a, ran)
	}
	if err := w.query("app_ro", "SELECT 1 FROM orders.items"); err != nil {
		t.Errorf("kept app_ro cannot read any more: %v", err)
	}
	// ... dropped with it, its grants revoked first.
	plan, ran = w.run(s2, users, true)
	if a := actions(plan); a["app_ro"] != dbusers.Drop || len(a) != 2 {
		t.Errorf("removed with revoke: plan %v", a)
	}
	if !contains(ran, `DROP ROLE "app_ro"`) {
		t.Errorf("revoke ran %v", ran)
	}
	if w.bool("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_ro')") {
		t.Error("app_ro still exists")
	}
	if !w.bool("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'by_hand')") {
		t.Error("a role not created by us was dropped")
	}
}

func TestPostgresMissingSchemaIsAClearError(t *testing.T) {
	w := startPG(t)
	_, err := w.session().Plan(context.Background(), []dbusers.User{{Name: "u1", Grants: mustGrants(t, "postgres", "readonly on schema nope")}}, false)
	if err == nil || !strings.Contains(err.Error(), `no such schema in database "app"`) {
		t.Fatalf("got %v", err)
	}
}

func TestPostgresConnectVerifiesTLSAndSaysUnreachable(t *testing.T) {
	w := startPG(t)
	tg := w.target()
	other, err := pki.NewCA("not the server's")
	if err != nil {
		t.Fatal(err)
	}
	tg.RootCAs = other.CertPool()
	if _, err := dbusers.Connect(context.Background(), tg); !errors.Is(err, dbusers.ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted CA: %v", err)
	}
	tg = w.target()
	tg.ServerName = "orders.cabc.us-east-1.rds.amazonaws.com"
	if _, err := dbusers.Connect(context.Background(), tg); !errors.Is(err, dbusers.ErrUnreachable) {
		t.Errorf("wrong server name: %v", err)
	}
	tg = w.target()
	tg.Password = "wrong"
	if _, err := dbusers.Connect(context.Background(), tg); !errors.Is(err, dbusers.ErrUnreachable) || strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong password (must not be echoed): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	tg = w.target()
	tg.Addr = "127.0.0.1:" + strconv.Itoa(port)
	if _, err := dbusers.Connect(context.Background(), tg); !errors.Is(err, dbusers.ErrUnreachable) {
		t.Errorf("closed port: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// On PostgreSQL the topology monitor's queries need no grant: the recovery information
// functions are executable by PUBLIC. Monitor plans the same statements, and the user runs the
// sidecar's monitoring query (wire/pg monitorQuery) right after creation.
func TestPostgresMonitorNeedsNoGrant(t *testing.T) {
	w := startPG(t)
	s := w.session()
	plain, err := s.Plan(context.Background(), []dbusers.User{{Name: "app_probe"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	plan, _ := w.run(s, []dbusers.User{{Name: "app_probe", Monitor: true}}, false)
	if len(plan) != 1 || len(plain) != 1 || strings.Join(plan[0].Statements, ";") != strings.Join(plain[0].Statements, ";") || len(plan[0].Notes) != 0 {
		t.Fatalf("monitor plan %+v, without monitor %+v", plan, plain)
	}
	if err := w.query("app_probe", "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_wal_receive_lsn()::text, "+
		"pg_catalog.pg_last_wal_replay_lsn()::text, EXTRACT(EPOCH FROM pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp())"); err != nil {
		t.Fatalf("the monitoring query as a new db user: %v", err)
	}
}
