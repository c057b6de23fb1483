package fakeaws

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
)

// TestReadReplicaRules drives CreateDBInstanceReadReplica through the SDK: the documented
// refusals, the replication fields DescribeDBInstances returns, a cross-Region replica made
// in the destination Region with a presigned request, and what deleting does.
func TestReadReplicaRules(t *testing.T) {
	s := startTestFake(t, 2)
	ctx := context.Background()
	cfg := sdkConfig(s)
	r := rds.NewFromConfig(cfg)
	eucfg := cfg.Copy()
	eucfg.Region = "eu-west-1"
	eu := rds.NewFromConfig(eucfg)
	sg := s.SeedSecurityGroup("", "db", "vpc-1", nil)
	if _, err := r.CreateDBSubnetGroup(ctx, &rds.CreateDBSubnetGroupInput{DBSubnetGroupName: aws.String("sub"), DBSubnetGroupDescription: aws.String("d"), SubnetIds: []string{"subnet-1", "subnet-2"}}); err != nil {
		t.Fatal(err)
	}
	s.SeedDBSubnetGroup("eu-west-1", "eu-sub", []string{"subnet-3", "subnet-4"})
	euKey := s.SeedKMSKeyIn("eu-west-1")
	create := func(id string, backups int32) {
		t.Helper()
		if _, err := r.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{DBInstanceIdentifier: aws.String(id), DBInstanceClass: aws.String("db.t4g.micro"),
			Engine: aws.String("postgres"), EngineVersion: aws.String("16.4"), DBSubnetGroupName: aws.String("sub"), VpcSecurityGroupIds: []string{sg},
			MasterUsername: aws.String("u"), MasterUserPassword: aws.String("p"), StorageEncrypted: aws.Bool(true), BackupRetentionPeriod: aws.Int32(backups),
			AllocatedStorage: aws.Int32(20)}); err != nil {
			t.Fatal(err)
		}
	}
	describe := func(c *rds.Client, id string) *rds.DescribeDBInstancesOutput {
		t.Helper()
		out, err := c.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String(id)})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	create("nobackup", 0)
	create("src", 7)
	_, err := r.CreateDBInstanceReadReplica(ctx, &rds.CreateDBInstanceReadReplicaInput{DBInstanceIdentifier: aws.String("early"), SourceDBInstanceIdentifier: aws.String("src")})
	wantCode(t, "replica of a source still creating", err, "InvalidDBInstanceState")
	for range 2 { // creating -> available
		describe(r, "nobackup")
		describe(r, "src")
	}
	_, err = r.CreateDBInstanceReadReplica(ctx, &rds.CreateDBInstanceReadReplicaInput{DBInstanceIdentifier: aws.String("r0"), SourceDBInstanceIdentifier: aws.String("nobackup")})
	wantCode(t, "replica of a source without backups", err, "InvalidDBInstanceState")
	_, err = r.CreateDBInstanceReadReplica(ctx, &rds.CreateDBInstanceReadReplicaInput{DBInstanceIdentifier: aws.String("r0"), SourceDBInstanceIdentifier: aws.String("missing")})
	wantCode(t, "replica of a missing source", err, "DBInstanceNotFound")

	if _, err := r.CreateDBInstanceReadReplica(ctx, &rds.CreateDBInstanceReadReplicaInput{DBInstanceIdentifier: aws.String("r1"),
		SourceDBInstanceIdentifier: aws.String("src"), DBInstanceClass: aws.String("db.t4g.small"), AvailabilityZone: aws.String("us-east-1c")}); err != nil {
		t.Fatal(err)
	}
	srcOut := describe(r, "src").DBInstances[0]
	in := describe(r, "r1").DBInstances[0]
	if aws.ToString(in.DBInstanceStatus) != "creating" || aws.ToString(in.ReadReplicaSourceDBInstanceIdentifier) != "src" || aws.ToString(in.Engine) != "postgres" ||
		aws.ToInt32(in.BackupRetentionPeriod) != 0 || aws.ToString(in.KmsKeyId) != aws.ToString(srcOut.KmsKeyId) || aws.ToString(in.AvailabilityZone) != "us-east-1c" ||
		len(in.StatusInfos) != 1 || aws.ToString(in.StatusInfos[0].StatusType) != "read replication" || aws.ToString(in.StatusInfos[0].Status) != "replicating" || !aws.ToBool(in.StatusInfos[0].Normal) {
		t.Errorf("replica as described: %+v", in)
	}
	if ids := srcOut.ReadReplicaDBInstanceIdentifiers; len(ids) != 1 || ids[0] != "r1" {
		t.Errorf("source's replicas %v", ids)
	}
	if in := describe(r, "r1").DBInstances[0]; aws.ToString(in.DBInstanceStatus) != "available" {
		t.Errorf("replica after a poll: %s", aws.ToString(in.DBInstanceStatus))
	}
	s.SetReplicationStatus("", "r1", "error", "replication broke")
	if si := describe(r, "r1").DBInstances[0].StatusInfos[0]; aws.ToString(si.Status) != "error" || aws.ToBool(si.Normal) || aws.ToString(si.Message) != "replication broke" {
		t.Errorf("status info %+v", si)
	}

	// Cross-Region: called in eu-west-1 with the source's ARN; an encrypted source needs a KMS
	// key of eu-west-1 and the presigned request (the SDK makes it from SourceRegion).
	srcARN := aws.ToString(srcOut.DBInstanceArn)
	_, err = eu.CreateDBInstanceReadReplica(ctx, &rds.CreateDBInstanceReadReplicaInput{DBInstanceIdentifier: aws.String("reu"), SourceDBInstanceIdentifier: aws.String("src"), DBSubnetGroupName: aws.String("eu-sub")})
	wantCode(t, "cross-region source by id", err, "DBInstanceNotFound")
	_, err = eu.CreateDBInstanceReadReplica(ctx, &rds.CreateDBInstanceReadReplicaInput{DBInstanceIdentifier: aws.String("reu"), SourceDBInstanceIdentifier: aws.String(srcARN),
		DBSubnetGroupName: aws.String("eu-sub"), SourceRegion: aws.String("us-east-1")})
	wantCode(t, "cross-region without KmsKeyId", err, "InvalidParameterCombination")
	_, err = eu.CreateDBInstanceReadReplica(ctx, &rds.CreateDBInstanceReadReplicaInput{DBInstanceIdentifier: aws.String("reu"), SourceDBInstanceIdentifier: aws.String(srcARN),
		DBSubnetGroupName: aws.String("eu-sub"), KmsKeyId: aws.String(euKey)})
	wantCode(t, "cross-region without PreSignedUrl", err, "InvalidParameterValue")
	if _, err := eu.CreateDBInstanceReadReplica(ctx, &rds.CreateDBInstanceReadReplicaInput{DBInstanceIdentifier: aws.String("reu"), SourceDBInstanceIdentifier: aws.String(srcARN),
		DBSubnetGroupName: aws.String("eu-sub"), KmsKeyId: aws.String(euKey), SourceRegion: aws.String("us-east-1")}); err != nil {
		t.Fatal(err)
	}
	reu := describe(eu, "reu").DBInstances[0]
	if aws.ToString(reu.ReadReplicaSourceDBInstanceIdentifier) != srcARN || aws.ToString(reu.KmsKeyId) != euKey || aws.ToString(reu.DBSubnetGroup.DBSubnetGroupName) != "eu-sub" {
		t.Errorf("cross-region replica %+v", reu)
	}
	if _, err := r.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String("reu")}); err == nil {
		t.Error("the eu-west-1 replica is visible in us-east-1")
	}
	if ids := describe(r, "src").DBInstances[0].ReadReplicaDBInstanceIdentifiers; len(ids) != 2 || ids[1] != aws.ToString(reu.DBInstanceArn) {
		t.Errorf("source's replicas %v", ids)
	}

	// A replica takes no final snapshot; deleting the source promotes the replicas left.
	_, err = r.DeleteDBInstance(ctx, &rds.DeleteDBInstanceInput{DBInstanceIdentifier: aws.String("r1"), FinalDBSnapshotIdentifier: aws.String("snap")})
	wantCode(t, "replica with a final snapshot", err, "InvalidParameterCombination")
	if _, err := r.DeleteDBInstance(ctx, &rds.DeleteDBInstanceInput{DBInstanceIdentifier: aws.String("src"), SkipFinalSnapshot: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	for c, id := range map[*rds.Client]string{r: "r1", eu: "reu"} {
		if in := describe(c, id).DBInstances[0]; in.ReadReplicaSourceDBInstanceIdentifier != nil || len(in.StatusInfos) != 0 {
			t.Errorf("%s not promoted: %+v", id, in)
		}
	}
}
