package dbusers

import "testing"

func TestParseGrant(t *testing.T) {
	ok := []struct {
		in, engine string
		want       Grant
	}{
		{"readonly", "postgres", Grant{ReadOnly, ""}},
		{"readwrite", "postgres", Grant{ReadWrite, ""}},
		{"readwrite on schema orders", "postgres", Grant{ReadWrite, "orders"}},
		{"readonly on schema Big_2", "mysql", Grant{ReadOnly, "Big_2"}},
	}
	for _, c := range ok {
		g, err := ParseGrant(c.in, c.engine)
		if err != nil || g != c.want || g.String() != c.in {
			t.Errorf("ParseGrant(%q, %s) = %+v, %v", c.in, c.engine, g, err)
		}
	}
	bad := []struct{ in, engine string }{
		{"", "postgres"}, {"READONLY", "postgres"}, {"readonly ", "postgres"}, {"admin", "postgres"},
		{"readonly on schema", "postgres"}, {"readonly on table x", "postgres"}, {"readonly on schema a.b", "postgres"},
		{`readonly on schema x"; DROP ROLE y; --`, "postgres"}, {"readonly on schema `x`", "mysql"},
		{"readonly on schema pg_catalog", "postgres"}, {"readonly on schema information_schema", "postgres"},
		{"readonly on schema mysql", "mysql"}, {"readonly", "mysql"}, {"readwrite", "mysql"},
		{"readonly on schema " + string(make([]byte, 64)), "postgres"},
	}
	for _, c := range bad {
		if g, err := ParseGrant(c.in, c.engine); err == nil {
			t.Errorf("ParseGrant(%q, %s) = %+v, want an error", c.in, c.engine, g)
		}
	}
}

func TestWantedMergesToTheStrongerLevel(t *testing.T) {
	got := wanted(User{Grants: []Grant{{ReadOnly, "a"}, {ReadWrite, "a"}, {ReadOnly, "a"}, {ReadOnly, ""}}})
	if len(got) != 2 || got["a"] != ReadWrite || got[""] != ReadOnly {
		t.Errorf("wanted = %v", got)
	}
}

// The RDS clause is pinned here because no test server has the plugin (MariaDB: error 1524).
func TestRDSIAMClause(t *testing.T) {
	if RDSIAM.Plugin != "AWSAuthenticationPlugin" || RDSIAM.AuthString != "RDS" {
		t.Errorf("RDSIAM = %+v", RDSIAM)
	}
}

func TestMonitorPrivilegeByVersion(t *testing.T) {
	for v, want := range map[string]string{
		"8.0.39": "REPLICATION CLIENT", "8.4.3": "REPLICATION CLIENT", "5.7.44-log": "REPLICATION CLIENT",
		"10.11.9-MariaDB-log": "SLAVE MONITOR", "10.5.9-MariaDB": "SLAVE MONITOR", "11.4.3-MariaDB": "SLAVE MONITOR",
		"10.4.34-MariaDB": "REPLICATION CLIENT", "10.5.8-MariaDB": "",
	} {
		got, note := monitorPrivilege(v)
		if got != want || (got == "") != (note != "") {
			t.Errorf("%s: %q (note %q), want %q", v, got, note, want)
		}
	}
}
