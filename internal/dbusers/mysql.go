package dbusers

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// mysqlMarker is a role granted to every user this package created (MySQL 8 and MariaDB both
// have roles; neither MySQL 5.7-style comments nor MySQL 8's user attributes exist in both). It
// carries no privileges.
const mysqlMarker = "rdsvalet_managed"

// All db users are 'NAME'@'%': reached through the proxy and the NLB, the client host is not
// a useful restriction.
const mysqlHost = "%"

var mysqlPrivs = map[Level][]string{
	ReadOnly:  {"SELECT"},
	ReadWrite: {"DELETE", "INSERT", "SELECT", "UPDATE"},
}

var authStringRE = regexp.MustCompile(`^[A-Za-z0-9*]{0,100}$`)

type mysqlSession struct {
	db   *sql.DB
	t    Target
	auth MySQLAuth
	// monitorPriv is the global privilege that lets a user read replica status on this server
	// ("" when none fits; monitorNote says why).
	monitorPriv, monitorNote string
}

func connectMySQL(ctx context.Context, t Target) (Session, error) {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr = t.User, t.Password, "tcp", t.Addr
	c.TLS = t.tlsConfig()
	c.Timeout = t.ConnectTimeout
	// The master password goes only inside TLS (never cleartext without it: the driver refuses
	// cleartext auth on a plain connection, and TLS is always on here).
	c.AllowCleartextPasswords = true
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: mysql at %s as %s: %v", ErrUnreachable, t.Addr, t.User, err)
	}
	auth := RDSIAM
	if t.MySQLAuth != nil {
		auth = *t.MySQLAuth
	}
	// Both go into the statement text: a plugin name and an auth string of letters, digits
	// and '*' (a password hash) need no quoting beyond the literal's.
	if !ValidName(auth.Plugin) || !authStringRE.MatchString(auth.AuthString) {
		db.Close()
		return nil, fmt.Errorf("dbusers: MySQL auth %q AS %q: not a plugin name and a plain auth string", auth.Plugin, auth.AuthString)
	}
	var version string
	if err := db.QueryRowContext(ctx, "SELECT @@version").Scan(&version); err != nil {
		db.Close()
		return nil, fmt.Errorf("mysql at %s: reading the server version: %w", t.Addr, err)
	}
	s := &mysqlSession{db: db, t: t, auth: auth}
	s.monitorPriv, s.monitorNote = monitorPrivilege(version)
	return s, nil
}

// monitorPrivilege is the global privilege that allows SHOW REPLICA STATUS / SHOW SLAVE STATUS
// on a server of this @@version, and nothing more:
//   - MySQL 8.0 and 8.4 (RDS for MySQL): REPLICATION CLIENT, "enables use of the SHOW BINARY
//     LOG STATUS, SHOW REPLICA STATUS and SHOW BINARY LOGS statements"
//     (https://dev.mysql.com/doc/refman/8.4/en/privileges-provided.html#priv_replication-client);
//     RDS for MySQL's master user holds it with the grant option
//     (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.MasterAccounts.html).
//   - MariaDB 10.5.9 and later (every RDS for MariaDB version): SLAVE MONITOR (alias REPLICA
//     MONITOR), which took SHOW SLAVE STATUS over from REPLICATION CLIENT, now an alias of
//     BINLOG MONITOR (https://mariadb.com/kb/en/grant/#replica-monitor,
//     https://mariadb.com/docs/server/ref/mdb/privileges/REPLICA_MONITOR).
//   - MariaDB before 10.5: REPLICATION CLIENT.
//   - MariaDB 10.5.0-10.5.8: only REPLICATION SLAVE ADMIN allows it, which also starts and
//     stops replication; not granted (a note says so), and the lag stays unknown there.
func monitorPrivilege(version string) (priv, note string) {
	if !strings.Contains(version, "MariaDB") {
		return "REPLICATION CLIENT", ""
	}
	var major, minor, patch int
	fmt.Sscanf(version, "%d.%d.%d", &major, &minor, &patch)
	v := major*10000 + minor*100 + patch
	switch {
	case v >= 100509:
		return "SLAVE MONITOR", ""
	case v < 100500:
		return "REPLICATION CLIENT", ""
	}
	return "", fmt.Sprintf("MariaDB %s lets only REPLICATION SLAVE ADMIN (which can stop replication) read SHOW SLAVE STATUS: not granted; the replicas' lag stays unknown until 10.5.9", version)
}

func (s *mysqlSession) Close() { _ = s.db.Close() }

func myIdent(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }
func myAccount(name string) string {
	return myIdent(name) + "@" + myIdent(mysqlHost)
}

// myLiteral quotes a string for SQL; only for fixed or validated values (the auth string).
func myLiteral(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

type myUser struct {
	exists, authOK, sslOK, managed bool
	privs                          map[string]set // database -> privileges
	global                         set            // privileges ON *.*
}

func (s *mysqlSession) user(ctx context.Context, name string) (*myUser, error) {
	u := &myUser{privs: map[string]set{}, global: set{}}
	var plugin, sslType, authStr sql.NullString
	err := s.db.QueryRowContext(ctx, "SELECT plugin, ssl_type, authentication_string FROM mysql.user WHERE User = ? AND Host = ?", name, mysqlHost).
		Scan(&plugin, &sslType, &authStr)
	if errors.Is(err, sql.ErrNoRows) {
		return u, nil
	}
	if err != nil {
		return nil, s.queryErr("user "+name, err)
	}
	u.exists = true
	u.authOK = plugin.String == s.auth.Plugin && authStr.String == s.auth.AuthString
	// ssl_type ANY is REQUIRE SSL.
	u.sslOK = strings.EqualFold(sslType.String, "ANY")
	rows, err := s.db.QueryContext(ctx, "SHOW GRANTS FOR "+myAccount(name))
	if err != nil {
		return nil, s.queryErr("grants of "+name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return nil, s.queryErr("grants of "+name, err)
		}
		// MySQL 8: GRANT `rdsvalet_managed`@`%` TO ...; MariaDB: GRANT `rdsvalet_managed` TO ....
		// MariaDB grants a new role to its creator WITH ADMIN OPTION: that is the master, not
		// one of our users.
		marker := strings.HasPrefix(g, "GRANT "+myIdent(mysqlMarker)+" ") || strings.HasPrefix(g, "GRANT "+myIdent(mysqlMarker)+"@")
		if marker && !strings.HasSuffix(g, "WITH ADMIN OPTION") {
			u.managed = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, s.queryErr("grants of "+name, err)
	}
	prows, err := s.db.QueryContext(ctx, "SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = ?",
		"'"+name+"'@'"+mysqlHost+"'")
	if err != nil {
		return nil, s.queryErr("privileges of "+name, err)
	}
	defer prows.Close()
	for prows.Next() {
		var db, p string
		if err := prows.Scan(&db, &p); err != nil {
			return nil, s.queryErr("privileges of "+name, err)
		}
		if u.privs[db] == nil {
			u.privs[db] = set{}
		}
		u.privs[db][p] = true
	}
	if err := prows.Err(); err != nil {
		return nil, s.queryErr("privileges of "+name, err)
	}
	grows, err := s.db.QueryContext(ctx, "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?",
		"'"+name+"'@'"+mysqlHost+"'")
	if err != nil {
		return nil, s.queryErr("global privileges of "+name, err)
	}
	defer grows.Close()
	for grows.Next() {
		var p string
		if err := grows.Scan(&p); err != nil {
			return nil, s.queryErr("global privileges of "+name, err)
		}
		u.global[p] = true
	}
	return u, grows.Err()
}

func (s *mysqlSession) Plan(ctx context.Context, users []User, revokeRemoved bool) ([]Change, error) {
	var markerExists bool
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) > 0 FROM mysql.user WHERE User = ?", mysqlMarker).Scan(&markerExists); err != nil {
		return nil, s.queryErr("role "+mysqlMarker, err)
	}
	var out []Change
	inSpec := map[string]bool{}
	authClause := "IDENTIFIED WITH " + s.auth.Plugin + " AS " + myLiteral(s.auth.AuthString) + " REQUIRE SSL"
	for _, want := range users {
		inSpec[want.Name] = true
		if !ValidName(want.Name) {
			return nil, fmt.Errorf("db user %q: not a valid name", want.Name)
		}
		u, err := s.user(ctx, want.Name)
		if err != nil {
			return nil, err
		}
		acct := myAccount(want.Name)
		var st []string
		if !markerExists {
			st = append(st, "CREATE ROLE IF NOT EXISTS "+myIdent(mysqlMarker))
			markerExists = true
		}
		switch {
		case !u.exists:
			// IAM authentication for RDS for MySQL, and TLS required
			// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.DBAccounts.html).
			st = append(st, "CREATE USER IF NOT EXISTS "+acct+" "+authClause)
		case !u.authOK || !u.sslOK:
			st = append(st, "ALTER USER "+acct+" "+authClause)
		}
		if !u.managed {
			st = append(st, "GRANT "+myIdent(mysqlMarker)+" TO "+acct)
		}
		st = append(st, myPrivStatements(acct, wanted(want), u)...)
		var notes []string
		switch {
		case want.Monitor && s.monitorPriv == "":
			notes = append(notes, s.monitorNote)
		case want.Monitor && !u.global[s.monitorPriv]:
			// The sidecar's topology monitor reads the replicas' lag as this user.
			st = append(st, "GRANT "+s.monitorPriv+" ON *.* TO "+acct)
		case !want.Monitor && s.monitorPriv != "" && u.global[s.monitorPriv]:
			st = append(st, "REVOKE "+s.monitorPriv+" ON *.* FROM "+acct)
		}
		out = append(out, Change{User: want.Name, Action: action(u.exists, st), Statements: st, Notes: notes})
	}
	removed, err := s.managedUsers(ctx)
	if err != nil {
		return nil, err
	}
	gone, err := removedChanges(removed, inSpec, revokeRemoved, func(name string) ([]string, error) {
		// DROP USER takes its privileges with it.
		return []string{"DROP USER " + myAccount(name)}, nil
	})
	if err != nil {
		return nil, err
	}
	return append(out, gone...), nil
}

func myPrivStatements(acct string, want map[string]Level, u *myUser) []string {
	dbs := set{}
	for d := range want {
		dbs[d] = true
	}
	for d := range u.privs {
		dbs[d] = true
	}
	var st []string
	for _, d := range sortedSet(dbs) {
		w := set{}
		if l, ok := want[d]; ok {
			for _, p := range mysqlPrivs[l] {
				w[p] = true
			}
		}
		add, drop := diffSets(w, u.privs[d])
		on := " ON " + myIdent(d) + ".* "
		if len(add) > 0 {
			st = append(st, "GRANT "+strings.Join(add, ", ")+on+"TO "+acct)
		}
		if len(drop) > 0 {
			st = append(st, "REVOKE "+strings.Join(drop, ", ")+on+"FROM "+acct)
		}
	}
	return st
}

// managedUsers lists the '%' users that hold the marker role, by SHOW GRANTS (the same on MySQL
// 8 and MariaDB, unlike the role tables behind it).
func (s *mysqlSession) managedUsers(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT User FROM mysql.user WHERE Host = ? AND User <> ? ORDER BY User", mysqlHost, mysqlMarker)
	if err != nil {
		return nil, s.queryErr("users", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, s.queryErr("users", err)
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, s.queryErr("users", err)
	}
	var out []string
	for _, n := range names {
		if !ValidName(n) || n == s.t.User {
			continue // not a name this package could have created, or the master itself
		}
		u, err := s.user(ctx, n)
		if err != nil {
			return nil, err
		}
		if u.managed {
			out = append(out, n)
		}
	}
	return out, nil
}

// Apply runs the statements one by one: MySQL commits each account statement on its own.
func (s *mysqlSession) Apply(ctx context.Context, changes []Change) ([]string, error) {
	var ran []string
	for _, c := range changes {
		for _, q := range c.Statements {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				return ran, fmt.Errorf("db user %q: %s: %w", c.User, q, err)
			}
			ran = append(ran, q)
		}
	}
	return ran, nil
}

func (s *mysqlSession) queryErr(what string, err error) error {
	return fmt.Errorf("mysql at %s: reading %s: %w", s.t.Addr, what, err)
}
