package provision_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/provision"
	"github.com/rdsvalet/rds-valet/test/fakeaws"
	"github.com/rdsvalet/rds-valet/test/harness/awsiam"
)

// replicaWorld is the fake with what catalog-replicas.yaml needs outside its own Region: the
// eu-west-1 DB subnet group and KMS key (that Region's network and keys are the team's).
func replicaWorld(t *testing.T) (*fakeaws.Server, *provision.Spec) {
	t.Helper()
	fake := startFake(t, 2)
	fake.SeedDBSubnetGroup("eu-west-1", "catalog-eu", []string{"subnet-0e1d2c3b4a5960001", "subnet-0e1d2c3b4a5960002"})
	s, err := provision.LoadSpec("../../docs/examples/catalog-replicas.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.Replicas[2].KMSKeyID = fake.SeedKMSKeyIn("eu-west-1")
	return fake, s
}

// changesOf renders each change of the plan as "ACTION KIND NAME FIELD+FIELD".
func changesOf(plan *provision.Plan) []string { return changeLines(plan, true) }

// changeLines renders each change as "ACTION KIND [NAME ]FIELD+FIELD", no-ops left out.
func changeLines(plan *provision.Plan, withName bool) []string {
	var got []string
	for _, c := range plan.Changes {
		if c.Action == provision.ActionNoop {
			continue
		}
		var fs []string
		for _, f := range c.Fields {
			fs = append(fs, f.Field)
		}
		name := ""
		if withName {
			name = c.Name + " "
		}
		got = append(got, string(c.Action)+" "+c.Kind+" "+name+strings.Join(fs, "+"))
	}
	return got
}

func TestReplicasApplyIdempotentDriftRemoveDestroy(t *testing.T) {
	fake, spec := replicaWorld(t)
	p := newProvisioner(t, fake, spec)
	ctx := context.Background()
	plan, out, err := p.Apply(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var creates []string
	for _, c := range plan.Changes {
		if c.Kind == "db-replica" && c.Action == provision.ActionCreate {
			creates = append(creates, c.Name)
		}
	}
	if strings.Join(creates, ",") != "catalog-ro1,catalog-ro2,catalog-eu" {
		t.Errorf("replica creates %v", creates)
	}
	src, _ := fake.Instance("catalog")
	ro1, ok1 := fake.Replica("", "catalog-ro1")
	ro2, ok2 := fake.Replica("", "catalog-ro2")
	eu, ok3 := fake.Replica("eu-west-1", "catalog-eu")
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("replicas: %v %v %v", ok1, ok2, ok3)
	}
	for _, r := range []fakeaws.ReplicaInfo{ro1, ro2, eu} {
		if r.Status != "available" || !r.IAMAuth || !r.Encrypted || r.BackupRetention != 0 || r.Tags["rdsvalet.io/managed-by"] != "rds-valet" ||
			r.Tags["rdsvalet.io/database"] != "catalog" || r.Tags["team"] != "catalog" || r.ReplicationStatus != "replicating" {
			t.Errorf("replica %+v", r)
		}
	}
	if ro1.Source != "catalog" || ro1.Class != "db.r6g.large" || ro1.KMSKeyID != src.KMS || ro2.Class != "db.r6g.xlarge" || ro2.AvailabilityZone != "us-east-1b" {
		t.Errorf("in-region replicas: %+v %+v (source kms %s)", ro1, ro2, src.KMS)
	}
	if !strings.HasPrefix(eu.Source, "arn:aws:rds:us-east-1:111122223333:db:catalog") || eu.KMSKeyID != spec.Replicas[2].KMSKeyID || eu.Region != "eu-west-1" || eu.SubnetGroup != "eu-west-1/catalog-eu" {
		t.Errorf("cross-region replica %+v", eu)
	}

	// The outputs: three replicas with their endpoints; the written config's reader listener
	// holds them all (the cross-region one with its region), then the primary.
	if len(out.Replicas) != 3 || out.Replicas[2].Region != "eu-west-1" || out.Replicas[0].Path == nil || !strings.Contains(out.Replicas[2].Path.Address, ".eu-west-1.rds.amazonaws.com:5432") {
		t.Fatalf("replica outputs %+v", out.Replicas)
	}
	cfgText, err := out.SidecarConfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"name: catalog-reader", "listen: 127.0.0.1:5433", "role: reader", "name: replica-ro1", "name: replica-ro2",
		"discovery: static", "max_replica_lag: 30s", "reader_fallback: writer", "# Cross-region replica catalog-eu in eu-west-1",
		"name: replica-eu", "region: eu-west-1"} {
		if !strings.Contains(string(cfgText), want) {
			t.Errorf("sidecar config lacks %q:\n%s", want, cfgText)
		}
	}

	// The app role may connect to every replica, each in its Region, besides proxy and instance.
	role, ok := fake.Role("rdsvalet-catalog-catalog-catalog-api")
	if !ok {
		t.Fatalf("roles %v", fake.RoleNames())
	}
	pol := role.Policies["rds-valet"]
	for _, r := range out.Replicas {
		arn := "arn:aws:rds-db:" + r.Region + ":111122223333:dbuser:" + r.ResourceID + "/catalog_app"
		if r.ResourceID == "" || !strings.Contains(pol, arn) {
			t.Errorf("policy lacks %s: %s", arn, pol)
		}
		// As IAM decides it (the evaluator the fake's Authorized uses): allowed in the
		// replica's own Region, not for the same DbiResourceId in another Region.
		if d := awsiam.Evaluate([]string{pol}, awsiam.Request{Action: "rds-db:connect", Resource: arn}); d != awsiam.Allow {
			t.Errorf("rds-db:connect on %s: %v", arn, d)
		}
		other := "us-west-2"
		if r.Region == other {
			other = "us-east-1"
		}
		wrong := strings.Replace(arn, ":"+r.Region+":", ":"+other+":", 1)
		if d := awsiam.Evaluate([]string{pol}, awsiam.Request{Action: "rds-db:connect", Resource: wrong}); d == awsiam.Allow {
			t.Errorf("rds-db:connect allowed on %s (the replica's id in the wrong Region)", wrong)
		}
	}

	if plan, err := p.Plan(ctx); err != nil || !plan.Empty() {
		t.Fatalf("second plan: %v %v", err, changesOf(plan))
	}

	// Drift on a replica is set back with ModifyDBInstance in its own Region.
	fake.SetInstanceClass("eu-west-1", "catalog-eu", "db.t4g.small")
	plan, err = p.Plan(ctx)
	if err != nil || strings.Join(changesOf(plan), "|") != "update db-replica catalog-eu class" {
		t.Fatalf("drift plan: %v %v", err, changesOf(plan))
	}
	if _, _, err := p.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if eu, _ := fake.Replica("eu-west-1", "catalog-eu"); eu.Class != "db.r6g.large" {
		t.Errorf("class after repair: %s", eu.Class)
	}

	// A replica the spec drops is found through the source and deleted; the role loses it.
	spec.Replicas = spec.Replicas[1:]
	plan, err = p.Plan(ctx)
	if err != nil || strings.Join(changesOf(plan), "|") != "delete db-replica catalog-ro1 |update iam-role rdsvalet-catalog-catalog-catalog-api policy" {
		t.Fatalf("removal plan: %v %v", err, changesOf(plan))
	}
	if _, _, err := p.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := fake.Replica("", "catalog-ro1"); ok {
		t.Error("catalog-ro1 still there")
	}
	if plan, err := p.Plan(ctx); err != nil || !plan.Empty() {
		t.Fatalf("after removal: %v %v", err, changesOf(plan))
	}

	// Destroy deletes the replicas before their source: when the source's delete comes, none
	// is left (RDS would promote them to standalone instances, left running).
	var atSourceDelete []string
	sawSource := false
	fake.OnCall("DeleteDBInstance", func() {
		if in, _ := fake.Instance("catalog"); in.Status == "deleting" {
			sawSource = true
			for _, r := range []struct{ region, id string }{{"", "catalog-ro2"}, {"eu-west-1", "catalog-eu"}} {
				if _, ok := fake.Replica(r.region, r.id); ok {
					atSourceDelete = append(atSourceDelete, r.id)
				}
			}
		}
	})
	if _, err := p.Destroy(ctx, provision.DestroyOptions{ForceDeletionProtection: true}); err != nil {
		t.Fatal(err)
	}
	if !sawSource || len(atSourceDelete) != 0 {
		t.Errorf("replicas still there when the source was deleted: %v", atSourceDelete)
	}
	for k, n := range fake.Counts() {
		// The eu-west-1 subnet group was seeded (the team's), not ours.
		if (k == "subnet-group" && n != 1) || (k != "subnet-group" && k != "security-group" && n != 0) {
			t.Errorf("%s left: %d", k, n)
		}
	}
}

func TestReplicaSpecValidation(t *testing.T) {
	base, err := provision.LoadSpec("../../docs/examples/catalog-replicas.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(s *provision.Spec)
		want []string
	}{
		{"no backups", func(s *provision.Spec) { s.Instance.BackupRetentionDays = 0 },
			[]string{"instance.backup_retention_days: read replicas need automated backups on the source"}},
		{"cross-region without key, group, sgs", func(s *provision.Spec) {
			s.Replicas[2].KMSKeyID, s.Replicas[2].DBSubnetGroup, s.Replicas[2].SecurityGroupIDs = "", "", nil
		}, []string{"replicas[2].kms_key_id: required for a cross-region replica", "replicas[2].db_subnet_group: required", "replicas[2].security_group_ids: required"}},
		{"key of another region", func(s *provision.Spec) {
			s.Replicas[2].KMSKeyID = "arn:aws:kms:us-east-1:111122223333:key/5678abcd-12ab-34cd-56ef-1234567890ab"
		}, []string{"replicas[2].kms_key_id: required for a cross-region replica: the key ARN of a KMS key in eu-west-1"}},
		{"in-region with a key", func(s *provision.Spec) { s.Replicas[0].KMSKeyID = "alias/x" },
			[]string{"replicas[0].kms_key_id: only for a replica in another region"}},
		{"duplicate and bad names, bad AZ", func(s *provision.Spec) {
			s.Replicas[1].Name, s.Replicas[0].Name, s.Replicas[0].AvailabilityZone = "ro1", "-x", "eu-west-1a"
		}, []string{`replicas[0].name: must be a-z`, `replicas[0].availability_zone: must be an Availability Zone of us-east-1`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := *base
			s.Replicas = append([]provision.ReplicaSpec(nil), base.Replicas...)
			tc.edit(&s)
			err := s.Validate()
			if err == nil {
				t.Fatal("valid")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	dup := *base
	dup.Replicas = append([]provision.ReplicaSpec(nil), base.Replicas...)
	dup.Replicas[1].Name = "ro1"
	if err := dup.Validate(); err == nil || !strings.Contains(err.Error(), `replicas[1].name: "ro1" is already the name of replicas[0]`) {
		t.Errorf("duplicate: %v", err)
	}
}
