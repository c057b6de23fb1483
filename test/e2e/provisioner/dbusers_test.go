package provisioner_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// dbUsersSpec gives the example's two ServiceAccounts grants and names the database they are in.
func dbUsersSpec(doc string) string {
	doc = strings.Replace(doc, "db_user: orders_app}", "db_user: orders_app, grants: [readwrite on schema orders]}", 1)
	doc = strings.Replace(doc, "db_user: orders_ro}", "db_user: orders_ro, grants: [readonly]}", 1)
	return strings.Replace(doc, "  service_accounts:", "  database: orders\n  service_accounts:", 1)
}

// runDB runs the binary with the db-user step on (the shared harness turns it off).
func (h *harness) runDB(args ...string) result {
	h.t.Helper()
	cmd := h.command(args...)
	var kept []string
	for _, a := range cmd.Args {
		if a != "--skip-db-users" {
			kept = append(kept, a)
		}
	}
	cmd.Args = kept
	r := h.exec(cmd)
	if r.code != 0 {
		h.t.Fatalf("%v: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, tail(r.stderr, 4000))
	}
	return r
}

type dbPlan struct {
	Changes []change
	Notes   []string
}

func (h *harness) dbPlan(args ...string) dbPlan {
	h.t.Helper()
	r := h.runDB(append([]string{"plan", "--output", "json"}, args...)...)
	var p dbPlan
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		h.t.Fatalf("plan json: %v\n%s", err, r.stdout)
	}
	return p
}

func dbUserChanges(cs []change) map[string]change {
	m := map[string]change{}
	for _, c := range cs {
		if c.Kind == "db-user" {
			m[c.Name] = c
		}
	}
	return m
}

// TestApplyCreatesDBUsersOnTheRealServer: the fake's instance is a real PostgreSQL
// (startRealPG), reached through --db-endpoint over TLS verified for the instance endpoint's
// name against --db-ca-file.
func TestApplyCreatesDBUsersOnTheRealServer(t *testing.T) {
	h := newHarness(t, dbUsersSpec)
	ctx := context.Background()

	// Before the instance exists the users are planned as creates, unchecked.
	p := h.dbPlan()
	if cs := dbUserChanges(p.Changes); cs["orders_app"].Action != "create" || cs["orders_ro"].Action != "create" ||
		!strings.Contains(strings.Join(p.Notes, "\n"), "db users: not checked: the instance does not exist yet") {
		t.Fatalf("plan from empty: %+v notes %q", cs, p.Notes)
	}
	h.apply() // the AWS side (the shared harness skips the db users)

	endpoint, ok := h.fake.InstanceEndpoint("orders")
	if !ok {
		t.Fatal("no instance")
	}
	sec := masterSecret(t, h)

	// Unreachable: the plan says so and does not fail.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	p = h.dbPlan("--db-endpoint", closed)
	if !strings.Contains(strings.Join(p.Notes, "\n"), "db users: not checked: cannot reach the database") {
		t.Errorf("unreachable plan notes: %q", p.Notes)
	}

	rdb := startRealPG(t, endpoint, sec.Username, sec.Password)
	master, loginAs, db := rdb.master, rdb.loginAs, rdb.args

	p = h.dbPlan(db...)
	cs := dbUserChanges(p.Changes)
	if cs["orders_app"].Action != "create" || cs["orders_ro"].Action != "create" || len(p.Notes) != 0 {
		t.Fatalf("plan against the server: %+v notes %q", cs, p.Notes)
	}
	h.runDB(append([]string{"apply"}, db...)...)

	// The server's own word: rds_iam membership, privileges, real logins.
	var iam bool
	if err := master.QueryRow(ctx, "SELECT pg_has_role('orders_app', 'rds_iam', 'MEMBER') AND pg_has_role('orders_ro', 'rds_iam', 'MEMBER')").Scan(&iam); err != nil || !iam {
		t.Errorf("rds_iam membership: %v %v", iam, err)
	}
	if _, err := loginAs("orders_app", "").Exec(ctx, "INSERT INTO orders.items (name) VALUES ('x')"); err != nil {
		t.Errorf("orders_app insert: %v", err)
	}
	ro := loginAs("orders_ro", "")
	if _, err := ro.Exec(ctx, "SELECT * FROM orders.items"); err != nil {
		t.Errorf("orders_ro select: %v", err)
	}
	_, err = ro.Exec(ctx, "INSERT INTO orders.items (name) VALUES ('y')")
	if pe, ok := err.(*pgconn.PgError); !ok || pe.Code != "42501" {
		t.Errorf("orders_ro insert: want permission denied, got %v", err)
	}

	// The second apply changes nothing: no statement logged, and no transaction on the server
	// (the counter moves only by the probe's own txid_current()).
	txid := func() int64 {
		var x int64
		if err := master.QueryRow(ctx, "SELECT txid_current()").Scan(&x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	before := txid()
	r := h.runDB(append([]string{"apply"}, db...)...)
	if after := txid(); after != before+1 || strings.Contains(r.stderr, "db user statement") || !strings.Contains(r.stderr, `"statements":0`) {
		t.Errorf("second apply: transactions %d -> %d\n%s", before, after, tail(r.stderr, 3000))
	}
	for n, c := range dbUserChanges(h.dbPlan(db...).Changes) {
		if c.Action != "no-op" {
			t.Errorf("plan after apply: %s %s %+v", n, c.Action, c.Fields)
		}
	}

	// orders-reporting leaves the spec: its user is kept and reported, and dropped only with
	// --revoke-removed-users.
	h.writeSpec(func(doc string) string {
		doc = dbUsersSpec(doc)
		return strings.Replace(doc, "    - {namespace: orders, name: orders-reporting, db_user: orders_ro, grants: [readonly]}\n", "", 1)
	})
	p = h.dbPlan(db...)
	if !strings.Contains(strings.Join(p.Notes, "\n"), `db user "orders_ro" is no longer in the spec: kept`) {
		t.Errorf("plan after removal: notes %q", p.Notes)
	}
	h.runDB(append([]string{"apply"}, db...)...)
	roleExists := func() bool {
		var ok bool
		if err := master.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orders_ro')").Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !roleExists() {
		t.Fatal("orders_ro dropped without --revoke-removed-users")
	}
	if cs := dbUserChanges(h.dbPlan(append(db, "--revoke-removed-users")...).Changes); cs["orders_ro"].Action != "delete" {
		t.Errorf("plan with --revoke-removed-users: %+v", cs)
	}
	h.runDB(append([]string{"apply", "--revoke-removed-users"}, db...)...)
	if roleExists() {
		t.Error("orders_ro still exists after apply --revoke-removed-users")
	}
}

// With master_password: rds-managed the password is in the secret RDS manages, found by the
// instance's MasterUserSecret.SecretArn. The fake keeps that secret without a value; the test
// puts there what RDS would ({"username","password"}).
func TestApplyCreatesDBUsersWithTheRDSManagedSecret(t *testing.T) {
	h := newHarness(t, func(doc string) string {
		return strings.Replace(dbUsersSpec(doc), "master_password: secret", "master_password: rds-managed", 1)
	})
	h.apply()
	endpoint, ok := h.fake.InstanceEndpoint("orders")
	if !ok {
		t.Fatal("no instance")
	}
	const pw = "Rds-Managed-Pw-1"
	if !h.fake.SetSecretValue("rds!orders", `{"username":"orders_admin","password":"`+pw+`"}`) {
		t.Fatalf("no RDS-managed secret; secrets %v", h.fake.Secrets())
	}
	rdb := startRealPG(t, endpoint, "orders_admin", pw)
	h.runDB(append([]string{"apply"}, rdb.args...)...)
	var ok2 bool
	if err := rdb.master.QueryRow(context.Background(), "SELECT pg_has_role('orders_app', 'rds_iam', 'MEMBER')").Scan(&ok2); err != nil || !ok2 {
		t.Errorf("orders_app in rds_iam: %v %v", ok2, err)
	}
	for n, c := range dbUserChanges(h.dbPlan(rdb.args...).Changes) {
		if c.Action != "no-op" {
			t.Errorf("plan after apply: %s %s", n, c.Action)
		}
	}
}

// realPG is a real PostgreSQL playing the fake's instance.
type realPG struct {
	master  *pgx.Conn
	loginAs func(user, password string) *pgx.Conn
	args    []string   // --db-endpoint and --db-ca-file for the binary
	mu      sync.Mutex // master is one connection; the stand-in asks from its goroutines
}

// startRealPG starts PostgreSQL with a certificate for the fake instance's endpoint, set up as
// RDS sets one up: the master user (a CREATEROLE role, not a superuser) with the password from
// the master secret, the database orders it owns with schema orders and a table, and the role
// rds_iam, which RDS has and a plain server does not (so the test creates it).
func startRealPG(t *testing.T, endpoint, masterUser, masterPassword string) *realPG {
	t.Helper()
	ctx := context.Background()
	ca, err := pki.NewCA("rds ca stand-in")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pgserver.Start(ctx, pgserver.Options{CA: ca, TLSNames: []string{endpoint}, Logf: t.Logf, Settings: map[string]string{"autovacuum": "off"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	super := func(sql string) {
		t.Helper()
		if err := srv.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.CreatePasswordRole(ctx, masterUser, masterPassword, pgserver.SCRAM); err != nil {
		t.Fatal(err)
	}
	super("CREATE ROLE rds_iam; ALTER ROLE " + pgx.Identifier{masterUser}.Sanitize() + " CREATEROLE")
	if err := srv.CreateDatabase(ctx, "orders", masterUser); err != nil {
		t.Fatal(err)
	}
	loginAs := func(user, password string) *pgx.Conn {
		t.Helper()
		cfg, err := pgx.ParseConfig(srv.TLSDSN(user, "orders", caFile))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Password = password
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("login as %s: %v", user, err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	master := loginAs(masterUser, masterPassword)
	if _, err := master.Exec(ctx, "CREATE SCHEMA orders; CREATE TABLE orders.items (id serial PRIMARY KEY, name text)", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	return &realPG{master: master, loginAs: loginAs, args: []string{"--db-endpoint", srv.Addr(), "--db-ca-file", caFile}}
}

// masterSecret is the username and password apply put in the master secret.
func masterSecret(t *testing.T, h *harness) struct{ Username, Password string } {
	t.Helper()
	val, ok := h.fake.SecretValue("rdsvalet/orders/master")
	if !ok {
		t.Fatal("no master secret")
	}
	var sec struct{ Username, Password string }
	if err := json.Unmarshal([]byte(val), &sec); err != nil || sec.Password == "" {
		t.Fatalf("master secret: %v", err)
	}
	return sec
}
