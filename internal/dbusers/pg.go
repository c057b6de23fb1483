package dbusers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgMarker is the comment on every role this package created: how a later run tells its users
// from everyone else's when one leaves the spec.
const pgMarker = "rds-valet: IAM db user"

// What each level grants on PostgreSQL, per kind of relation. Sequences need USAGE for
// nextval() (serial and identity columns), SELECT for currval().
var pgPrivs = map[Level]map[string][]string{
	ReadOnly:  {"table": {"SELECT"}, "sequence": {"SELECT"}},
	ReadWrite: {"table": {"SELECT", "INSERT", "UPDATE", "DELETE"}, "sequence": {"SELECT", "USAGE"}},
}

var pgKinds = []struct{ kind, all, defaults string }{
	{"table", "ALL TABLES", "TABLES"},
	{"sequence", "ALL SEQUENCES", "SEQUENCES"},
}

type pgSession struct {
	c       *pgx.Conn
	t       Target
	notices []*pgconn.Notice
}

func connectPG(ctx context.Context, t Target) (Session, error) {
	host, portS, err := net.SplitHostPort(t.Addr)
	if err != nil {
		return nil, fmt.Errorf("dbusers: address %q: %w", t.Addr, err)
	}
	port, err := strconv.ParseUint(portS, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dbusers: address %q: bad port", t.Addr)
	}
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	// Every field set here, none from PG* variables: TLS is always on and verified, with no
	// plaintext fallback.
	cfg.Host, cfg.Port, cfg.User, cfg.Password, cfg.Database = host, uint16(port), t.User, t.Password, t.Database
	cfg.TLSConfig, cfg.Fallbacks, cfg.ConnectTimeout = t.tlsConfig(), nil, t.ConnectTimeout
	cfg.RuntimeParams = map[string]string{"application_name": "rds-valet-provisioner"}
	s := &pgSession{t: t}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { s.notices = append(s.notices, n) }
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres at %s as %s: %v", ErrUnreachable, t.Addr, t.User, err)
	}
	s.c = c
	return s, nil
}

func (s *pgSession) Close() { _ = s.c.Close(context.Background()) }

func pgIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// pgRole is what the catalog says about one role.
type pgRole struct {
	exists, login, managed, iam, connect bool
	dbPrivs                              []string
	schema                               map[string]set            // schema -> privileges on it
	rel                                  map[string]map[string]cnt // schema -> kind -> privilege -> relations
	def                                  map[string]map[string]set // schema -> kind -> default privileges
}

type set map[string]bool
type cnt map[string]int

// pgCatalog is what the whole database says: schemas and the relations the master can grant on.
type pgCatalog struct {
	schemas map[string]bool           // schema -> the master may grant on it
	total   map[string]map[string]int // schema -> kind -> relations the master may grant on
}

// pgUserSchemas excludes the system schemas; pg_has_role(owner, 'USAGE') is "owned by the master
// user or a role it has the privileges of", i.e. the master may grant on it.
const pgUserSchemas = `n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'`
const pgRelKind = `CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END`
const pgRelFilter = `c.relkind IN ('r','p','v','m','f','S') AND ` + pgUserSchemas + ` AND pg_has_role(c.relowner, 'USAGE')`
const pgRoleOID = `(SELECT oid FROM pg_roles WHERE rolname = $1)`

func (s *pgSession) catalog(ctx context.Context) (*pgCatalog, error) {
	cat := &pgCatalog{schemas: map[string]bool{}, total: map[string]map[string]int{}}
	err := s.rows(ctx, `SELECT n.nspname, pg_has_role(n.nspowner, 'USAGE') FROM pg_namespace n WHERE `+pgUserSchemas, nil, func(r pgx.Rows) error {
		var n string
		var ok bool
		if err := r.Scan(&n, &ok); err != nil {
			return err
		}
		cat.schemas[n] = ok
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.rows(ctx, `SELECT n.nspname, `+pgRelKind+`, count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE `+pgRelFilter+` GROUP BY 1, 2`, nil, func(r pgx.Rows) error {
		var n, k string
		var c int
		if err := r.Scan(&n, &k, &c); err != nil {
			return err
		}
		if cat.total[n] == nil {
			cat.total[n] = map[string]int{}
		}
		cat.total[n][k] = c
		return nil
	})
	return cat, err
}

func (s *pgSession) role(ctx context.Context, name string) (*pgRole, error) {
	r := &pgRole{schema: map[string]set{}, rel: map[string]map[string]cnt{}, def: map[string]map[string]set{}}
	var comment string
	err := s.c.QueryRow(ctx, `SELECT rolcanlogin, coalesce(shobj_description(oid, 'pg_authid'), ''),
		EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = 'rds_iam' AND m.member = r.oid),
		has_database_privilege(r.oid, current_database(), 'CONNECT')
		FROM pg_roles r WHERE rolname = $1`, name).Scan(&r.login, &comment, &r.iam, &r.connect)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, nil
	}
	if err != nil {
		return nil, s.queryErr("role "+name, err)
	}
	r.exists, r.managed = true, comment == pgMarker
	args := []any{name}
	err = s.rows(ctx, `SELECT a.privilege_type FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a
		WHERE d.datname = current_database() AND a.grantee = `+pgRoleOID, args, func(rs pgx.Rows) error {
		var p string
		if err := rs.Scan(&p); err != nil {
			return err
		}
		r.dbPrivs = append(r.dbPrivs, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.rows(ctx, `SELECT n.nspname, a.privilege_type FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
		WHERE a.grantee = `+pgRoleOID+` AND `+pgUserSchemas, args, func(rs pgx.Rows) error {
		var n, p string
		if err := rs.Scan(&n, &p); err != nil {
			return err
		}
		if r.schema[n] == nil {
			r.schema[n] = set{}
		}
		r.schema[n][p] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.rows(ctx, `SELECT n.nspname, `+pgRelKind+`, a.privilege_type, count(*) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace CROSS JOIN LATERAL aclexplode(c.relacl) a
		WHERE a.grantee = `+pgRoleOID+` AND `+pgRelFilter+` GROUP BY 1, 2, 3`, args, func(rs pgx.Rows) error {
		var n, k, p string
		var c int
		if err := rs.Scan(&n, &k, &p, &c); err != nil {
			return err
		}
		if r.rel[n] == nil {
			r.rel[n] = map[string]cnt{}
		}
		if r.rel[n][k] == nil {
			r.rel[n][k] = cnt{}
		}
		r.rel[n][k][p] = c
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Default privileges are the master's own (ALTER DEFAULT PRIVILEGES without FOR ROLE): they
	// apply to what the master creates later.
	err = s.rows(ctx, `SELECT n.nspname, CASE WHEN d.defaclobjtype = 'S' THEN 'sequence' ELSE 'table' END, a.privilege_type
		FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace CROSS JOIN LATERAL aclexplode(d.defaclacl) a
		WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND d.defaclobjtype IN ('r', 'S')
		AND a.grantee = `+pgRoleOID, args, func(rs pgx.Rows) error {
		var n, k, p string
		if err := rs.Scan(&n, &k, &p); err != nil {
			return err
		}
		if r.def[n] == nil {
			r.def[n] = map[string]set{}
		}
		if r.def[n][k] == nil {
			r.def[n][k] = set{}
		}
		r.def[n][k][p] = true
		return nil
	})
	return r, err
}

func (s *pgSession) Plan(ctx context.Context, users []User, revokeRemoved bool) ([]Change, error) {
	cat, err := s.catalog(ctx)
	if err != nil {
		return nil, err
	}
	var out []Change
	inSpec := map[string]bool{}
	// User.Monitor needs nothing here: pg_is_in_recovery(), pg_last_wal_receive_lsn(),
	// pg_last_wal_replay_lsn() and pg_last_xact_replay_timestamp() are executable by PUBLIC
	// ("Recovery Information Functions",
	// https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-RECOVERY-CONTROL).
	for _, u := range users {
		inSpec[u.Name] = true
		if !ValidName(u.Name) {
			return nil, fmt.Errorf("db user %q: not a valid name", u.Name)
		}
		r, err := s.role(ctx, u.Name)
		if err != nil {
			return nil, err
		}
		want := map[string]Level{}
		for sch, l := range wanted(u) {
			if sch == "" {
				// Every schema the master may grant on, as it is now; schemas created later
				// are covered by the next apply.
				for n, ok := range cat.schemas {
					if ok {
						want[n] = stronger(l, want[n])
					}
				}
				continue
			}
			grantable, exists := cat.schemas[sch]
			if !exists {
				return nil, fmt.Errorf("db user %q: grant on schema %q: no such schema in database %q; create it (the migrations) and apply again", u.Name, sch, s.t.Database)
			}
			if !grantable {
				return nil, fmt.Errorf("db user %q: grant on schema %q: its owner is not the master user %q nor a role it is a member of, so the master cannot grant on it", u.Name, sch, s.t.User)
			}
			want[sch] = stronger(l, want[sch])
		}
		id := pgIdent(u.Name)
		var st []string
		switch {
		case !r.exists:
			st = append(st, "CREATE ROLE "+id+" LOGIN")
		case !r.login:
			st = append(st, "ALTER ROLE "+id+" LOGIN")
		}
		if !r.managed {
			st = append(st, "COMMENT ON ROLE "+id+" IS '"+pgMarker+"'")
		}
		if !r.iam {
			// rds_iam: RDS then takes only IAM tokens for this role
			// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.DBAccounts.html).
			st = append(st, "GRANT rds_iam TO "+id)
		}
		if !r.connect {
			st = append(st, "GRANT CONNECT ON DATABASE "+pgIdent(s.t.Database)+" TO "+id)
		}
		st = append(st, pgSchemaStatements(id, want, r, cat)...)
		out = append(out, Change{User: u.Name, Action: action(r.exists, st), Statements: st})
	}
	removed, err := s.managedRoles(ctx)
	if err != nil {
		return nil, err
	}
	gone, err := removedChanges(removed, inSpec, revokeRemoved, func(name string) ([]string, error) {
		r, err := s.role(ctx, name)
		if err != nil {
			return nil, err
		}
		id := pgIdent(name)
		st := pgSchemaStatements(id, nil, r, cat)
		if len(r.dbPrivs) > 0 {
			st = append(st, "REVOKE ALL ON DATABASE "+pgIdent(s.t.Database)+" FROM "+id)
		}
		return append(st, "DROP ROLE "+id), nil
	})
	if err != nil {
		return nil, err
	}
	return append(out, gone...), nil
}

// pgSchemaStatements grants what want asks for and revokes what the role holds beyond it, for
// every schema in either.
func pgSchemaStatements(id string, want map[string]Level, r *pgRole, cat *pgCatalog) []string {
	schemas := set{}
	for n := range want {
		schemas[n] = true
	}
	for n := range r.schema {
		schemas[n] = true
	}
	for n := range r.rel {
		schemas[n] = true
	}
	for n := range r.def {
		schemas[n] = true
	}
	var st []string
	for _, n := range sortedSet(schemas) {
		sch := pgIdent(n)
		lvl, ok := want[n]
		wantSchema := set{}
		if ok {
			wantSchema["USAGE"] = true
		}
		add, drop := diffSets(wantSchema, r.schema[n])
		if len(add) > 0 {
			st = append(st, "GRANT USAGE ON SCHEMA "+sch+" TO "+id)
		}
		for _, k := range pgKinds {
			w := set{}
			if ok {
				for _, p := range pgPrivs[lvl][k.kind] {
					w[p] = true
				}
			}
			have := r.rel[n][k.kind]
			var missing, extra []string
			for _, p := range sortedSet(w) {
				if have[p] < cat.total[n][k.kind] {
					missing = append(missing, p)
				}
			}
			for _, p := range sortedKeysCnt(have) {
				if !w[p] && have[p] > 0 {
					extra = append(extra, p)
				}
			}
			if len(missing) > 0 {
				st = append(st, "GRANT "+strings.Join(missing, ", ")+" ON "+k.all+" IN SCHEMA "+sch+" TO "+id)
			}
			if len(extra) > 0 {
				st = append(st, "REVOKE "+strings.Join(extra, ", ")+" ON "+k.all+" IN SCHEMA "+sch+" FROM "+id)
			}
			dAdd, dDrop := diffSets(w, r.def[n][k.kind])
			if len(dAdd) > 0 {
				st = append(st, "ALTER DEFAULT PRIVILEGES IN SCHEMA "+sch+" GRANT "+strings.Join(dAdd, ", ")+" ON "+k.defaults+" TO "+id)
			}
			if len(dDrop) > 0 {
				st = append(st, "ALTER DEFAULT PRIVILEGES IN SCHEMA "+sch+" REVOKE "+strings.Join(dDrop, ", ")+" ON "+k.defaults+" FROM "+id)
			}
		}
		if len(drop) > 0 {
			st = append(st, "REVOKE "+strings.Join(drop, ", ")+" ON SCHEMA "+sch+" FROM "+id)
		}
	}
	return st
}

func (s *pgSession) managedRoles(ctx context.Context) ([]string, error) {
	var out []string
	err := s.rows(ctx, `SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = $1 AND rolname <> current_user ORDER BY 1`, []any{pgMarker}, func(r pgx.Rows) error {
		var n string
		if err := r.Scan(&n); err != nil {
			return err
		}
		out = append(out, n)
		return nil
	})
	return out, err
}

// Apply runs each user's statements in one transaction (PostgreSQL's DDL is transactional), so
// a failure leaves that user as it was. A "no privileges were granted/revoked" warning is an
// error: the master lacked the grant option and the next run would plan the same again.
func (s *pgSession) Apply(ctx context.Context, changes []Change) ([]string, error) {
	var ran []string
	for _, c := range changes {
		if len(c.Statements) == 0 {
			continue
		}
		tx, err := s.c.Begin(ctx)
		if err != nil {
			return ran, s.queryErr("begin", err)
		}
		for _, q := range c.Statements {
			s.notices = nil
			if _, err := tx.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
				_ = tx.Rollback(ctx)
				return ran, fmt.Errorf("db user %q: %s: %w", c.User, q, err)
			}
			for _, n := range s.notices {
				if n.Code == "01007" || n.Code == "01006" {
					_ = tx.Rollback(ctx)
					return ran, fmt.Errorf("db user %q: %s: PostgreSQL warned %q; the master user lacks the grant option there", c.User, q, n.Message)
				}
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return ran, fmt.Errorf("db user %q: commit: %w", c.User, err)
		}
		ran = append(ran, c.Statements...)
	}
	return ran, nil
}

func (s *pgSession) rows(ctx context.Context, q string, args []any, each func(pgx.Rows) error) error {
	rs, err := s.c.Query(ctx, q, args...)
	if err != nil {
		return s.queryErr("catalog", err)
	}
	defer rs.Close()
	for rs.Next() {
		if err := each(rs); err != nil {
			return s.queryErr("catalog", err)
		}
	}
	if err := rs.Err(); err != nil {
		return s.queryErr("catalog", err)
	}
	return nil
}

func (s *pgSession) queryErr(what string, err error) error {
	return fmt.Errorf("postgres at %s, database %q: reading %s: %w", s.t.Addr, s.t.Database, what, err)
}

func diffSets(want, have set) (add, drop []string) {
	for _, p := range sortedSet(want) {
		if !have[p] {
			add = append(add, p)
		}
	}
	for _, p := range sortedSet(have) {
		if !want[p] {
			drop = append(drop, p)
		}
	}
	return add, drop
}

func sortedSet(s set) []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedKeysCnt(c cnt) []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
