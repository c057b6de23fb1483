package provision

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/dbusers"
)

func specWith(t *testing.T, edit func(string) string) (*Spec, error) {
	t.Helper()
	b, err := os.ReadFile("../../docs/examples/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return ParseSpec([]byte(edit(string(b))))
}

func TestDBUserGrantsValidatedWithTheirPath(t *testing.T) {
	_, err := specWith(t, func(doc string) string {
		doc = strings.Replace(doc, "db_user: orders_app}", `db_user: orders_app, grants: [readonly, "drop table x"]}`, 1)
		return strings.Replace(doc, "  service_accounts:", "  database: \"a-b\"\n  service_accounts:", 1)
	})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want ValidationError, got %v", err)
	}
	got := map[string]bool{}
	for _, fe := range ve.Errors {
		got[fe.Path] = true
	}
	if len(ve.Errors) != 2 || !got["access.service_accounts[0].grants[1]"] || !got["access.database"] {
		t.Errorf("got %v", err)
	}
}

func TestMySQLGrantsNameTheirDatabase(t *testing.T) {
	_, err := specWith(t, func(doc string) string {
		doc = strings.Replace(doc, "type: postgres", "type: mysql", 1)
		doc = strings.Replace(doc, "db_user: orders_ro}", "db_user: "+strings.Repeat("r", 33)+"}", 1)
		return strings.Replace(doc, "db_user: orders_app}", "db_user: orders_app, grants: [readwrite]}", 1)
	})
	if err == nil || !strings.Contains(err.Error(), "access.service_accounts[0].grants[0]") || !strings.Contains(err.Error(), "names its database") ||
		!strings.Contains(err.Error(), "access.service_accounts[1].db_user: MySQL user names are at most 32") {
		t.Errorf("got %v", err)
	}
}

func TestDBUsersMergeSharedUsersInSpecOrder(t *testing.T) {
	s, err := specWith(t, func(doc string) string {
		doc = strings.Replace(doc, "db_user: orders_app}", "db_user: orders_app, grants: [readonly on schema a]}", 1)
		return strings.Replace(doc, "db_user: orders_ro}", "db_user: orders_app, grants: [readwrite on schema b]}", 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	us := s.dbUsers()
	want := []dbusers.Grant{{Level: dbusers.ReadOnly, Schema: "a"}, {Level: dbusers.ReadWrite, Schema: "b"}}
	if len(us) != 1 || us[0].Name != "orders_app" || len(us[0].Grants) != 2 || us[0].Grants[0] != want[0] || us[0].Grants[1] != want[1] {
		t.Errorf("dbUsers = %+v", us)
	}
	if s.grantsDatabase() != "postgres" {
		t.Errorf("default grants database %q", s.grantsDatabase())
	}
}

func TestPlanNotesArePrinted(t *testing.T) {
	p := &Plan{Database: "orders", Notes: []string{"db users: not checked: cannot reach the database (x)"}}
	var tb, jb bytes.Buffer
	if err := p.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteJSON(&jb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tb.String(), "Note: db users: not checked") || !strings.Contains(jb.String(), `"notes": [`) || !p.Empty() {
		t.Errorf("table:\n%s\njson:\n%s", tb.String(), jb.String())
	}
}

// With replicas, the first db user is the reader listener's probe user (health.login_user)
// and is asked to read replication status (dbusers.User.Monitor); without, nobody is.
func TestProbeUserMonitorsReplicas(t *testing.T) {
	s, err := LoadSpec("../../docs/examples/catalog-replicas.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var monitors []string
	for _, u := range s.dbUsers() {
		if u.Monitor {
			monitors = append(monitors, u.Name)
		}
	}
	r := (&env{spec: s, region: s.Region, out: map[string]string{"instance.address": "catalog.cxyz.us-east-1.rds.amazonaws.com",
		"replica.catalog-ro1.address": "catalog-ro1.cxyz.us-east-1.rds.amazonaws.com", "replica.catalog-ro1.port": "5432"}}).outputs().readerListener()
	if len(monitors) != 1 || r == nil || monitors[0] != r.Health.LoginUser || monitors[0] != s.probeUser() {
		t.Fatalf("monitor users %v, reader listener %+v", monitors, r)
	}
	s.Replicas = nil
	for _, u := range s.dbUsers() {
		if u.Monitor {
			t.Errorf("no replicas, yet %s monitors", u.Name)
		}
	}
}
