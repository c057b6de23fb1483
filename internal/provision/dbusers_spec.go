package provision

import (
	"fmt"

	"github.com/rdsvalet/rds-valet/internal/dbusers"
)

// validateDBUsers checks the db-user keys: each grant in dbusers' grammar for the engine, and
// access.database.
func (s *Spec) validateDBUsers(add func(path, format string, args ...any)) {
	if s.Access.Database != "" && !dbusers.ValidName(s.Access.Database) {
		add("access.database", "must be 1-63 letters, digits or '_', starting with a letter or '_' (got %q)", s.Access.Database)
	}
	if s.Access.Database != "" && s.Engine.Type == "mysql" {
		add("access.database", "only for postgres; on MySQL each grant names its database (readonly on schema NAME)")
	}
	for i, sa := range s.Access.ServiceAccounts {
		// MySQL 8 user names are at most 32 characters (PostgreSQL's 63 is db_user's own rule).
		if s.Engine.Type == "mysql" && len(sa.DBUser) > 32 {
			add(fmt.Sprintf("access.service_accounts[%d].db_user", i), "MySQL user names are at most 32 characters (got %d)", len(sa.DBUser))
		}
		for j, g := range sa.Grants {
			if _, err := dbusers.ParseGrant(g, s.Engine.Type); err != nil {
				add(fmt.Sprintf("access.service_accounts[%d].grants[%d]", i, j), "%v", err)
			}
		}
	}
}

// probeUser is the db user the written reader listener's topology monitor logs in as
// (health.login_user: the first ServiceAccount's), "" without replicas or users.
func (s *Spec) probeUser() string {
	if len(s.Replicas) == 0 || len(s.Access.ServiceAccounts) == 0 {
		return ""
	}
	return s.Access.ServiceAccounts[0].DBUser
}

// dbUsers is the spec's db users, each once (ServiceAccounts may share one; their grants add
// up), in spec order. The probe user also reads replication status (dbusers.User.Monitor).
func (s *Spec) dbUsers() []dbusers.User {
	var out []dbusers.User
	idx := map[string]int{}
	for _, sa := range s.Access.ServiceAccounts {
		i, ok := idx[sa.DBUser]
		if !ok {
			i = len(out)
			idx[sa.DBUser] = i
			out = append(out, dbusers.User{Name: sa.DBUser, Monitor: sa.DBUser == s.probeUser()})
		}
		for _, g := range sa.Grants {
			if pg, err := dbusers.ParseGrant(g, s.Engine.Type); err == nil {
				out[i].Grants = append(out[i].Grants, pg)
			}
		}
	}
	return out
}

// grantsDatabase is the PostgreSQL database the grants are made in.
func (s *Spec) grantsDatabase() string {
	if s.Access.Database != "" {
		return s.Access.Database
	}
	return "postgres"
}
