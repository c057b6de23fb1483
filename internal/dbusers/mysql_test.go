package dbusers_test

import (
	"context"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/rdsvalet/rds-valet/internal/dbusers"
	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

const (
	myMaster   = "valetadmin"
	myMasterPW = "master-Pw-1"
	myAppPW    = "app-Pw-1"
)

type myWorld struct {
	t   *testing.T
	srv *mariadb.Server
	ca  *pki.CA
}

// startMariaDB runs a real MariaDB with a master user the way RDS for MySQL makes one: a
// password login over TCP holding the global privileges WITH GRANT OPTION.
func startMariaDB(t *testing.T) *myWorld {
	t.Helper()
	if testing.Short() {
		t.Skip("real MariaDB: skipped with -short")
	}
	ctx := context.Background()
	ca, err := pki.NewCA("dbusers mysql test")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := mariadb.Start(ctx, mariadb.Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	w := &myWorld{t: t, srv: srv, ca: ca}
	if err := srv.CreateUser(ctx, myMaster, myMasterPW); err != nil {
		t.Fatal(err)
	}
	if err := srv.Exec(ctx, "GRANT ALL PRIVILEGES ON *.* TO `"+myMaster+"`@'%' WITH GRANT OPTION;"+
		"CREATE DATABASE orders; CREATE TABLE orders.items (id int AUTO_INCREMENT PRIMARY KEY, name text);"+
		"CREATE DATABASE reporting; CREATE TABLE reporting.daily (day date, total int)"); err != nil {
		t.Fatal(err)
	}
	return w
}

// nativeHash is mysql_native_password's stored form: '*' + hex(SHA1(SHA1(password))).
func nativeHash(pw string) string {
	a := sha1.Sum([]byte(pw))
	b := sha1.Sum(a[:])
	return "*" + strings.ToUpper(hex.EncodeToString(b[:]))
}

// testAuth stands in for AWSAuthenticationPlugin, which MariaDB does not have: a password the
// test knows, so it can log in as the users for real. Everything else (REQUIRE SSL, the marker
// role, the grants) is the statement RDS gets.
var testAuth = &dbusers.MySQLAuth{Plugin: "mysql_native_password", AuthString: nativeHash(myAppPW)}

func (w *myWorld) target(auth *dbusers.MySQLAuth) dbusers.Target {
	return dbusers.Target{Engine: "mysql", Addr: w.srv.Addr(), ServerName: "localhost", RootCAs: w.ca.CertPool(),
		User: myMaster, Password: myMasterPW, ConnectTimeout: 10 * time.Second, MySQLAuth: auth}
}

func (w *myWorld) session(auth *dbusers.MySQLAuth) dbusers.Session {
	w.t.Helper()
	s, err := dbusers.Connect(context.Background(), w.target(auth))
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(s.Close)
	return s
}

func (w *myWorld) run(s dbusers.Session, users []dbusers.User, revoke bool) ([]dbusers.Change, []string) {
	w.t.Helper()
	plan, err := s.Plan(context.Background(), users, revoke)
	if err != nil {
		w.t.Fatal(err)
	}
	ran, err := s.Apply(context.Background(), plan)
	if err != nil {
		w.t.Fatal(err)
	}
	return plan, ran
}

// exec logs in as user over TCP (with TLS or not) and runs q.
func (w *myWorld) exec(user string, useTLS bool, q string) error {
	w.t.Helper()
	c := w.srv.TCPConfig(user, myAppPW, "")
	if useTLS {
		c.TLS = w.ca.ClientTLSConfig("localhost")
	}
	conn, err := mysql.NewConnector(c)
	if err != nil {
		w.t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	_, err = db.ExecContext(context.Background(), q)
	return err
}

// writes sums the server's counters of statements that change accounts, grants or rows.
func (w *myWorld) writes() int64 {
	w.t.Helper()
	db, err := w.srv.Open(mariadb.Superuser, "")
	if err != nil {
		w.t.Fatal(err)
	}
	defer db.Close()
	var n int64
	err = db.QueryRowContext(context.Background(), `SELECT SUM(VARIABLE_VALUE) FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN
		('COM_CREATE_USER','COM_ALTER_USER','COM_DROP_USER','COM_RENAME_USER','COM_GRANT','COM_GRANT_ROLE','COM_REVOKE',
		 'COM_REVOKE_ALL','COM_REVOKE_ROLE','COM_CREATE_ROLE','COM_DROP_ROLE','COM_INSERT','COM_UPDATE','COM_DELETE')`).Scan(&n)
	if err != nil {
		w.t.Fatal(err)
	}
	return n
}

func myCode(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

func (w *myWorld) userExists(name string) bool {
	w.t.Helper()
	db, err := w.srv.Open(mariadb.Superuser, "")
	if err != nil {
		w.t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM mysql.user WHERE User = ?", name).Scan(&n); err != nil {
		w.t.Fatal(err)
	}
	return n > 0
}

// RDS's clause on a server that is not RDS: MariaDB refuses it with 1524 (plugin not loaded).
// That is why the other MariaDB tests swap the clause (MySQLAuth) and nothing else.
func TestMariaDBRefusesTheRDSIAMClause(t *testing.T) {
	w := startMariaDB(t)
	s := w.session(nil)
	plan, err := s.Plan(context.Background(), []dbusers.User{{Name: "iam_user"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := "CREATE USER IF NOT EXISTS `iam_user`@`%` IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS' REQUIRE SSL"
	if len(plan) != 1 || !contains(plan[0].Statements, want) {
		t.Fatalf("plan %+v lacks %q", plan, want)
	}
	_, err = s.Apply(context.Background(), plan)
	if myCode(err) != 1524 {
		t.Fatalf("MariaDB on the RDS IAM clause: want error 1524, got %v", err)
	}
}

func TestMariaDBUsersGrantsIdempotentAndRevoke(t *testing.T) {
	w := startMariaDB(t)
	s := w.session(testAuth)
	users := []dbusers.User{
		{Name: "app_rw", Grants: mustGrants(t, "mysql", "readwrite on schema orders")},
		{Name: "app_ro", Grants: mustGrants(t, "mysql", "readonly on schema orders", "readonly on schema reporting")},
	}
	plan, ran := w.run(s, users, false)
	if a := actions(plan); a["app_rw"] != dbusers.Create || a["app_ro"] != dbusers.Create {
		t.Fatalf("first plan: %v", a)
	}
	t.Logf("first run:\n  %s", strings.Join(ran, "\n  "))
	if !contains(ran, "GRANT DELETE, INSERT, SELECT, UPDATE ON `orders`.* TO `app_rw`@`%`") {
		t.Errorf("first run: %v", ran)
	}

	// Real logins: TLS is required, and the grants hold.
	if err := w.exec("app_rw", false, "SELECT 1"); myCode(err) != 1045 {
		t.Errorf("app_rw without TLS: want access denied (1045, REQUIRE SSL), got %v", err)
	}
	if err := w.exec("app_rw", true, "INSERT INTO orders.items (name) VALUES ('a')"); err != nil {
		t.Errorf("app_rw insert: %v", err)
	}
	if err := w.exec("app_rw", true, "SELECT * FROM reporting.daily"); myCode(err) != 1142 {
		t.Errorf("app_rw reads reporting: want 1142, got %v", err)
	}
	if err := w.exec("app_ro", true, "SELECT * FROM orders.items, reporting.daily"); err != nil {
		t.Errorf("app_ro select: %v", err)
	}
	if err := w.exec("app_ro", true, "INSERT INTO orders.items (name) VALUES ('b')"); myCode(err) != 1142 {
		t.Errorf("app_ro insert: want refused (1142), got %v", err)
	}

	// Second run: nothing planned, nothing run, and the server counted no write statement.
	before := w.writes()
	s2 := w.session(testAuth)
	plan, ran = w.run(s2, users, false)
	for _, c := range plan {
		if c.Action != dbusers.Noop {
			t.Errorf("second plan: %s %s %v", c.User, c.Action, c.Statements)
		}
	}
	if after := w.writes(); len(ran) != 0 || after != before {
		t.Errorf("second run ran %v; write counters %d -> %d", ran, before, after)
	}

	// Narrowing revokes.
	users[0].Grants = mustGrants(t, "mysql", "readonly on schema orders")
	_, ran = w.run(s2, users, false)
	if !contains(ran, "REVOKE DELETE, INSERT, UPDATE ON `orders`.* FROM `app_rw`@`%`") {
		t.Errorf("narrowing ran %v", ran)
	}
	if err := w.exec("app_rw", true, "INSERT INTO orders.items (name) VALUES ('c')"); myCode(err) != 1142 {
		t.Errorf("app_rw insert after narrowing: want 1142, got %v", err)
	}

	// Someone else's user is never dropped; a removed one only with revoking asked for.
	if err := w.srv.CreateUser(context.Background(), "by_hand", "x"); err != nil {
		t.Fatal(err)
	}
	users = users[:1]
	plan, ran = w.run(s2, users, false)
	if a := actions(plan); a["app_ro"] != dbusers.Keep || len(ran) != 0 || !w.userExists("app_ro") {
		t.Errorf("removed without revoke: plan %v ran %v", a, ran)
	}
	plan, ran = w.run(s2, users, true)
	if a := actions(plan); a["app_ro"] != dbusers.Drop || len(a) != 2 || !contains(ran, "DROP USER `app_ro`@`%`") {
		t.Errorf("removed with revoke: plan %v ran %v", a, ran)
	}
	if w.userExists("app_ro") || !w.userExists("by_hand") {
		t.Errorf("after revoke: app_ro exists %v, by_hand exists %v", w.userExists("app_ro"), w.userExists("by_hand"))
	}
}

// The probe user of a reader listener reads the replicas' lag with SHOW SLAVE STATUS / SHOW
// REPLICA STATUS: Monitor grants what this server needs for that (MariaDB 10.11: SLAVE
// MONITOR), once; without Monitor it is revoked.
func TestMariaDBMonitorUserReadsReplicaStatus(t *testing.T) {
	w := startMariaDB(t)
	s := w.session(testAuth)
	users := []dbusers.User{{Name: "app_probe", Grants: mustGrants(t, "mysql", "readonly on schema orders")}}
	w.run(s, users, false)
	if err := w.exec("app_probe", true, "SHOW SLAVE STATUS"); myCode(err) != 1227 {
		t.Fatalf("SHOW SLAVE STATUS without the grant: want access denied (1227), got %v", err)
	}

	users[0].Monitor = true
	plan, ran := w.run(s, users, false)
	want := "GRANT SLAVE MONITOR ON *.* TO `app_probe`@`%`"
	if len(plan) != 1 || plan[0].Action != dbusers.Update || !contains(ran, want) || len(ran) != 1 {
		t.Fatalf("monitor plan %+v ran %v; want only %q", plan, ran, want)
	}
	for _, q := range []string{"SHOW SLAVE STATUS", "SHOW REPLICA STATUS"} {
		if err := w.exec("app_probe", true, q); err != nil {
			t.Errorf("%s after the grant: %v", q, err)
		}
	}
	if err := w.exec("app_probe", true, "STOP SLAVE"); myCode(err) != 1227 {
		t.Errorf("STOP SLAVE with the monitor grant: want access denied (1227), got %v", err)
	}

	before := w.writes()
	plan, ran = w.run(w.session(testAuth), users, false)
	if len(plan) != 1 || plan[0].Action != dbusers.Noop || len(ran) != 0 || w.writes() != before {
		t.Errorf("second run: plan %+v ran %v, write counters %d -> %d", plan, ran, before, w.writes())
	}

	users[0].Monitor = false
	_, ran = w.run(s, users, false)
	if !contains(ran, "REVOKE SLAVE MONITOR ON *.* FROM `app_probe`@`%`") {
		t.Errorf("without replicas: ran %v", ran)
	}
	if err := w.exec("app_probe", true, "SHOW SLAVE STATUS"); myCode(err) != 1227 {
		t.Errorf("SHOW SLAVE STATUS after the revoke: want 1227, got %v", err)
	}
}
