// Package dbusers creates the database users the apps log in as with IAM, and their grants, by
// logging in to the database as the master user: on PostgreSQL a LOGIN role in rds_iam, on MySQL
// a user identified with AWSAuthenticationPlugin that requires TLS. It plans from the catalog
// (what exists, what is granted), so a second run plans and runs nothing. The API is the same
// for both engines; pg.go and mysql.go hold each engine's catalog queries and SQL.
//
// Every statement it builds is made of fixed SQL and names checked by ValidName, quoted as
// identifiers; values in catalog queries are bind parameters.
package dbusers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Target is how to reach and log in to one database server.
type Target struct {
	Engine string // postgres | mysql
	// Addr is the host:port dialled: the instance endpoint, or a port-forward to it.
	Addr string
	// ServerName is the name the server's certificate is verified for (the instance endpoint),
	// whatever Addr is.
	ServerName string
	// RootCAs verify the server's certificate (the RDS CA bundle); nil = the system pool.
	RootCAs *x509.CertPool
	// User and Password are the master user's.
	User, Password string
	// Database is, on PostgreSQL, the database connected to and granted in.
	Database string
	// ConnectTimeout bounds the dial, TLS and login; 0 = 15s.
	ConnectTimeout time.Duration
	// MySQLAuth replaces the RDS IAM authentication clause. Only for tests against a server
	// that is not RDS (MariaDB has no AWSAuthenticationPlugin: CREATE USER ... IDENTIFIED WITH
	// AWSAuthenticationPlugin fails there with error 1524, plugin not loaded). nil = RDS IAM.
	MySQLAuth *MySQLAuth
}

// MySQLAuth is the authentication a MySQL user is created with: IDENTIFIED WITH Plugin AS
// AuthString, checked against mysql.user's plugin and authentication_string columns.
type MySQLAuth struct{ Plugin, AuthString string }

// RDSIAM is what RDS for MySQL documents for IAM database authentication
// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.DBAccounts.html).
var RDSIAM = MySQLAuth{Plugin: "AWSAuthenticationPlugin", AuthString: "RDS"}

// User is one db user as the spec wants it.
type User struct {
	Name   string
	Grants []Grant
	// Monitor: the user reads replication status, as the sidecar's topology monitor does when
	// it logs in as this user to read each replica's lag (SHOW REPLICA STATUS). MySQL needs a
	// global privilege for that (mysql.go, monitorPrivilege); PostgreSQL none (pg.go).
	Monitor bool
}

// Action is what a run does to one db user.
type Action string

const (
	Create Action = "create"
	Update Action = "update"
	Noop   Action = "no-op"
	// Drop: a user we created that the spec no longer names, with revoking asked for.
	Drop Action = "delete"
	// Keep: a user we created that the spec no longer names, left alone (revoking not asked for).
	Keep Action = "keep"
)

// Change is one db user's planned action and the statements that carry it out, in order.
type Change struct {
	User       string
	Action     Action
	Statements []string
	// Notes say what the run could not do for the user and why (a server version with no
	// fitting privilege); they do not fail the run.
	Notes []string
}

// Session is a logged-in master connection.
type Session interface {
	// Plan compares the users with the catalog. Users this package created that are not in
	// users come last, as Drop when revokeRemoved is set, else as Keep.
	Plan(ctx context.Context, users []User, revokeRemoved bool) ([]Change, error)
	// Apply runs the changes' statements in order and returns those it ran.
	Apply(ctx context.Context, changes []Change) ([]string, error)
	Close()
}

// ErrUnreachable wraps a failure to dial, set up TLS or log in.
var ErrUnreachable = errors.New("cannot reach the database")

// Connect logs in to the target as its user over verified TLS.
func Connect(ctx context.Context, t Target) (Session, error) {
	if t.ConnectTimeout <= 0 {
		t.ConnectTimeout = 15 * time.Second
	}
	if !ValidName(t.User) {
		return nil, fmt.Errorf("dbusers: master user %q is not a valid name", t.User)
	}
	switch t.Engine {
	case "postgres":
		if !ValidName(t.Database) {
			return nil, fmt.Errorf("dbusers: database %q is not a valid name", t.Database)
		}
		return connectPG(ctx, t)
	case "mysql":
		return connectMySQL(ctx, t)
	}
	return nil, fmt.Errorf("dbusers: engine %q: want postgres or mysql", t.Engine)
}

func (t Target) tlsConfig() *tls.Config {
	return &tls.Config{ServerName: t.ServerName, RootCAs: t.RootCAs, MinVersion: tls.VersionTLS12}
}

// wanted merges a user's grants into one level per schema ("" = every schema).
func wanted(u User) map[string]Level {
	m := map[string]Level{}
	for _, g := range u.Grants {
		if l, ok := m[g.Schema]; ok {
			m[g.Schema] = stronger(l, g.Level)
		} else {
			m[g.Schema] = g.Level
		}
	}
	return m
}

func action(exists bool, stmts []string) Action {
	switch {
	case !exists:
		return Create
	case len(stmts) > 0:
		return Update
	}
	return Noop
}

// removedChanges plans the users this package created that the spec no longer names: kept
// (reported) unless revokeRemoved, else dropped with the statements drop returns.
func removedChanges(managed []string, inSpec map[string]bool, revokeRemoved bool, drop func(name string) ([]string, error)) ([]Change, error) {
	var out []Change
	for _, name := range managed {
		if inSpec[name] {
			continue
		}
		if !revokeRemoved {
			out = append(out, Change{User: name, Action: Keep})
			continue
		}
		st, err := drop(name)
		if err != nil {
			return nil, err
		}
		out = append(out, Change{User: name, Action: Drop, Statements: st})
	}
	return out, nil
}
