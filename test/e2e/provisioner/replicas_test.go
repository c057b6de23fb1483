package provisioner_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/config"
)

// withReplicas adds an in-region and a cross-region read replica to orders.yaml.
func withReplicas(euKey string) func(string) string {
	return func(s string) string {
		return s + `replicas:
  - name: ro1
    class: db.t4g.large
  - name: eu
    region: eu-west-1
    kms_key_id: ` + euKey + `
    db_subnet_group: orders-eu
    security_group_ids: [sg-0e1d2c3b4a5960111]
reader:
  max_replica_lag: 10s
`
	}
}

func changeNames(cs []change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Action+" "+c.Kind+" "+c.Name)
	}
	return out
}

// TestReplicasPlanApplyIdempotentDestroyInOrder (issue 16): the built provisioner plans the
// replicas, creates them with CreateDBInstanceReadReplica (the cross-region one by a call to
// eu-west-1), writes the reader listener, changes nothing on a second apply, and destroy
// deletes the replicas before their source.
func TestReplicasPlanApplyIdempotentDestroyInOrder(t *testing.T) {
	h := newHarness(t, nil)
	h.fake.SeedDBSubnetGroup("eu-west-1", "orders-eu", []string{"subnet-0e1d2c3b4a5960001", "subnet-0e1d2c3b4a5960002"})
	h.writeSpec(withReplicas(h.fake.SeedKMSKeyIn("eu-west-1")))

	var replicas []string
	for _, c := range h.plan() {
		if c.Kind == "db-replica" {
			replicas = append(replicas, c.Action+" "+c.Name)
		}
	}
	if strings.Join(replicas, ",") != "create orders-ro1,create orders-eu" {
		t.Fatalf("planned replicas %v", replicas)
	}
	r := h.apply()
	if !strings.Contains(r.stderr, `"kind":"db-replica"`) {
		t.Errorf("apply's progress does not mention the replicas:\n%s", tail(r.stderr, 2000))
	}
	ro1, ok1 := h.fake.Replica("", "orders-ro1")
	eu, ok2 := h.fake.Replica("eu-west-1", "orders-eu")
	if !ok1 || !ok2 || ro1.Source != "orders" || ro1.Class != "db.t4g.large" || !ro1.IAMAuth || ro1.Status != "available" ||
		!strings.HasSuffix(eu.Source, ":db:orders") || eu.Region != "eu-west-1" || !eu.IAMAuth || eu.Tags["rdsvalet.io/managed-by"] != "rds-valet" {
		t.Fatalf("replicas: %+v %+v", ro1, eu)
	}

	// The written config: the writer listener as before, and the reader on 5433 whose paths
	// are the replicas (the cross-region one with its region) and then the primary.
	b, err := os.ReadFile(filepath.Join(h.dir, "sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_REGION", "")
	cfg, err := config.LoadFile(filepath.Join(h.dir, "sidecar.yaml"))
	if err != nil {
		t.Fatalf("written config does not load: %v\n%s", err, b)
	}
	if len(cfg.Listeners) != 2 || cfg.Listeners[1].Listen != "127.0.0.1:5433" || cfg.Listeners[1].Role != config.RoleReader ||
		len(cfg.Listeners[1].Paths) != 3 || cfg.Listeners[1].Paths[0].Name != "replica-ro1" || cfg.Listeners[1].Paths[0].Region != "" ||
		cfg.Listeners[1].Paths[1].Name != "replica-eu" || cfg.Listeners[1].Paths[1].Region != "eu-west-1" || cfg.Listeners[1].Paths[2].Name != "instance" ||
		cfg.Listeners[1].Cluster.MaxReplicaLag.String() != "10s" || !strings.Contains(string(b), "# Cross-region replica orders-eu in eu-west-1") {
		t.Errorf("written config:\n%s", b)
	}

	// status lists the replicas with their endpoints, the cross-region one included.
	st := h.mustRun("status", "--output", "json")
	var status struct {
		Replicas []struct {
			ID, Region string
			Path       *struct{ Address string }
		}
	}
	if err := json.Unmarshal([]byte(st.stdout), &status); err != nil || len(status.Replicas) != 2 || status.Replicas[1].Region != "eu-west-1" ||
		status.Replicas[1].Path == nil || !strings.HasPrefix(status.Replicas[1].Path.Address, "orders-eu.") {
		t.Errorf("status: %v\n%s", err, st.stdout)
	}
	if st := h.mustRun("status"); !strings.Contains(st.stdout, "REPLICA") || !strings.Contains(st.stdout, "orders-eu") {
		t.Errorf("status table:\n%s", st.stdout)
	}

	h.fake.ResetCalls()
	if got := h.plan(); len(got) != 0 {
		t.Errorf("second plan: %v", changeNames(got))
	}
	h.apply()
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("second plan and apply changed AWS: %v", m)
	}

	var atSourceDelete []string
	sawSource := false
	h.fake.OnCall("DeleteDBInstance", func() {
		if in, _ := h.fake.Instance("orders"); in.Status == "deleting" {
			sawSource = true
			if _, ok := h.fake.Replica("", "orders-ro1"); ok {
				atSourceDelete = append(atSourceDelete, "orders-ro1")
			}
			if _, ok := h.fake.Replica("eu-west-1", "orders-eu"); ok {
				atSourceDelete = append(atSourceDelete, "orders-eu")
			}
		}
	})
	h.mustRun("destroy", "--force-deletion-protection")
	if !sawSource || len(atSourceDelete) != 0 {
		t.Errorf("replicas still there when the source was deleted: %v", atSourceDelete)
	}
	_, ok1 = h.fake.Replica("", "orders-ro1")
	_, ok2 = h.fake.Replica("eu-west-1", "orders-eu")
	if _, src := h.fake.Instance("orders"); ok1 || ok2 || src {
		t.Errorf("after destroy: ro1 %v, eu %v, source %v", ok1, ok2, src)
	}
}

// TestReplicasWithoutSourceBackupsAreRefusedBeforeAnyCall: RDS refuses a replica of a source
// with no automated backups, so the spec is refused before any AWS call, saying what to set.
func TestReplicasWithoutSourceBackupsAreRefusedBeforeAnyCall(t *testing.T) {
	h := newHarness(t, nil)
	h.writeSpec(func(s string) string {
		s = strings.Replace(s, "backup_retention_days: 7", "backup_retention_days: 0", 1)
		return withReplicas("arn:aws:kms:eu-west-1:111122223333:key/5678abcd-12ab-34cd-56ef-1234567890ab")(s)
	})
	for _, cmd := range []string{"plan", "apply"} {
		r := h.run(cmd)
		if r.code != 1 || !strings.Contains(r.stderr, "instance.backup_retention_days: read replicas need automated backups on the source") {
			t.Errorf("%s: exit %d\n%s", cmd, r.code, tail(r.stderr, 2000))
		}
	}
	if calls := h.fake.Calls(); len(calls) != 0 {
		t.Errorf("AWS was called: %+v", calls)
	}
}

// TestReplicaDriftIsRepairedAndADroppedReplicaDeleted: a replica's class changed behind our
// back is set back with ModifyDBInstance in its Region; one dropped from the spec is found
// through the source's ReadReplicaDBInstanceIdentifiers and deleted, without a final snapshot.
func TestReplicaDriftIsRepairedAndADroppedReplicaDeleted(t *testing.T) {
	h := newHarness(t, nil)
	h.fake.SeedDBSubnetGroup("eu-west-1", "orders-eu", []string{"subnet-0e1d2c3b4a5960001", "subnet-0e1d2c3b4a5960002"})
	key := h.fake.SeedKMSKeyIn("eu-west-1")
	h.writeSpec(withReplicas(key))
	h.apply()
	h.fake.SetInstanceClass("eu-west-1", "orders-eu", "db.t4g.micro")
	got := h.plan()
	if len(got) != 1 || got[0].Name != "orders-eu" || got[0].Action != "update" || len(got[0].Fields) != 1 || got[0].Fields[0].Field != "class" ||
		got[0].Fields[0].From != "db.t4g.micro" || got[0].Fields[0].To != "db.t4g.medium" {
		t.Fatalf("drift plan %+v", got)
	}
	h.apply()
	if eu, _ := h.fake.Replica("eu-west-1", "orders-eu"); eu.Class != "db.t4g.medium" {
		t.Errorf("class after apply: %s", eu.Class)
	}
	h.writeSpec(func(s string) string {
		s = withReplicas(key)(s)
		i := strings.Index(s, "  - name: eu")
		j := strings.Index(s, "reader:")
		return s[:i] + s[j:]
	})
	names := changeNames(h.plan())
	if len(names) < 1 || names[0] != "delete db-replica orders-eu" {
		t.Fatalf("plan after dropping eu: %v", names)
	}
	h.apply()
	if _, ok := h.fake.Replica("eu-west-1", "orders-eu"); ok {
		t.Error("orders-eu still there")
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after the removal: %v", changeNames(got))
	}
}
