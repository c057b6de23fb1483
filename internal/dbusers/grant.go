package dbusers

import (
	"fmt"
	"regexp"
	"strings"
)

// Level is how much a grant allows on the tables (and sequences) in its scope.
type Level string

const (
	// ReadOnly: SELECT.
	ReadOnly Level = "readonly"
	// ReadWrite: SELECT, INSERT, UPDATE, DELETE (and, on PostgreSQL, the sequences' USAGE for
	// serial/identity columns). Never DDL: the schema belongs to whoever runs the migrations.
	ReadWrite Level = "readwrite"
)

// Grant is one entry of a db user's `grants:` list. The grammar, strict and case-sensitive:
//
//	readonly | readwrite                         PostgreSQL: every schema of the database
//	readonly on schema NAME | readwrite on schema NAME
//	                                             PostgreSQL: that schema of the database;
//	                                             MySQL: the database NAME (MySQL's schemas)
//
// NAME is 1-63 letters, digits or '_', starting with a letter or '_' (the same rule as db users),
// so no name needs more than identifier quoting and none can smuggle SQL.
type Grant struct {
	Level  Level
	Schema string // "" = every schema (PostgreSQL only)
}

var (
	grantRE = regexp.MustCompile(`^(readonly|readwrite)(?: on schema ([A-Za-z_][A-Za-z0-9_]{0,62}))?$`)
	nameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
)

// ParseGrant parses one grant in the grammar above; engine is "postgres" or "mysql".
func ParseGrant(s, engine string) (Grant, error) {
	m := grantRE.FindStringSubmatch(s)
	if m == nil {
		return Grant{}, fmt.Errorf("%q: want readonly, readwrite, or LEVEL on schema NAME (NAME: letters, digits, '_')", s)
	}
	g := Grant{Level: Level(m[1]), Schema: m[2]}
	if g.Schema == "" && engine == "mysql" {
		// A grant on *.* would include the mysql system schema (readwrite there is every
		// privilege).
		return Grant{}, fmt.Errorf("%q: on MySQL a grant names its database: %s on schema NAME", s, g.Level)
	}
	if isSystemSchema(g.Schema, engine) {
		return Grant{}, fmt.Errorf("%q: %s is a system schema", s, g.Schema)
	}
	return g, nil
}

// String is the grant in the spec's grammar.
func (g Grant) String() string {
	if g.Schema == "" {
		return string(g.Level)
	}
	return string(g.Level) + " on schema " + g.Schema
}

// ValidName reports whether s is a user, database or schema name the package accepts.
func ValidName(s string) bool { return nameRE.MatchString(s) }

func isSystemSchema(s, engine string) bool {
	l := strings.ToLower(s)
	if engine == "mysql" {
		return l == "mysql" || l == "sys" || l == "information_schema" || l == "performance_schema"
	}
	return strings.HasPrefix(l, "pg_") || l == "information_schema"
}

// stronger returns the more permissive of two levels.
func stronger(a, b Level) Level {
	if a == ReadWrite || b == ReadWrite {
		return ReadWrite
	}
	return ReadOnly
}
