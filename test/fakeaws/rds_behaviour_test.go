package fakeaws

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdst "github.com/aws/aws-sdk-go-v2/service/rds/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// The recovery window, KMS DescribeKey and parameter group rules, through the real SDK.
func TestSecretRecoveryWindowKMSAndParameterGroups(t *testing.T) {
	s, err := Start(Config{AccountID: "111122223333", Region: "us-east-1", AccessKey: "AKIDTEST", SecretKey: "right"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	cfg := sdkConfig(s)
	sm, k, r := secretsmanager.NewFromConfig(cfg), kms.NewFromConfig(cfg), rds.NewFromConfig(cfg)

	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("a"), SecretString: aws.String(`{"username":"u","password":"p"}`)}); err != nil {
		t.Fatal(err)
	}
	_, err = sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String("a"), RecoveryWindowInDays: aws.Int64(3)})
	wantCode(t, "recovery window of 3 days", err, "InvalidParameterException")
	if _, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String("a"), RecoveryWindowInDays: aws.Int64(7)}); err != nil {
		t.Fatal(err)
	}
	d, err := sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String("a")})
	if err != nil || d.DeletedDate == nil {
		t.Fatalf("describe after delete: %v %+v", err, d)
	}
	_, err = sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("a")})
	wantCode(t, "value of a deleted secret", err, "InvalidRequestException")
	_, err = sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("a"), SecretString: aws.String("x")})
	wantCode(t, "create over a deleted secret", err, "InvalidRequestException")
	if _, err := sm.RestoreSecret(ctx, &secretsmanager.RestoreSecretInput{SecretId: aws.String("a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("a")}); err != nil {
		t.Errorf("value after restore: %v", err)
	}

	id, arn := s.SeedKMSKey("alias/db")
	for _, ref := range []string{id, arn, "alias/db", "arn:aws:kms:us-east-1:111122223333:alias/db"} {
		out, err := k.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ref)})
		if err != nil || aws.ToString(out.KeyMetadata.Arn) != arn {
			t.Errorf("DescribeKey %s: %v", ref, err)
		}
	}
	_, err = k.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/nope")})
	wantCode(t, "unknown alias", err, "NotFoundException")

	ev, err := r.DescribeDBEngineVersions(ctx, &rds.DescribeDBEngineVersionsInput{Engine: aws.String("postgres"), EngineVersion: aws.String("16.4")})
	if err != nil || len(ev.DBEngineVersions) != 1 || aws.ToString(ev.DBEngineVersions[0].DBParameterGroupFamily) != "postgres16" {
		t.Fatalf("engine versions: %v %+v", err, ev)
	}
	if _, err := r.CreateDBParameterGroup(ctx, &rds.CreateDBParameterGroupInput{DBParameterGroupName: aws.String("pg"), DBParameterGroupFamily: aws.String("postgres16"), Description: aws.String("d")}); err != nil {
		t.Fatal(err)
	}
	set := func(name, value string, m rdst.ApplyMethod) error {
		_, err := r.ModifyDBParameterGroup(ctx, &rds.ModifyDBParameterGroupInput{DBParameterGroupName: aws.String("pg"),
			Parameters: []rdst.Parameter{{ParameterName: aws.String(name), ParameterValue: aws.String(value), ApplyMethod: m}}})
		return err
	}
	wantCode(t, "static parameter applied immediately", set("max_connections", "10", rdst.ApplyMethodImmediate), "InvalidParameterCombination")
	wantCode(t, "unknown parameter", set("no_such_thing", "1", rdst.ApplyMethodImmediate), "InvalidParameterValue")
	if err := set("rds.force_ssl", "1", rdst.ApplyMethodImmediate); err != nil {
		t.Fatal(err)
	}
	ps, err := r.DescribeDBParameters(ctx, &rds.DescribeDBParametersInput{DBParameterGroupName: aws.String("pg"), Source: aws.String("user")})
	if err != nil || len(ps.Parameters) != 1 || aws.ToString(ps.Parameters[0].ParameterValue) != "1" {
		t.Errorf("user parameters: %v %+v", err, ps)
	}
	_, err = r.DeleteDBParameterGroup(ctx, &rds.DeleteDBParameterGroupInput{DBParameterGroupName: aws.String("nope")})
	wantCode(t, "delete unknown group", err, "DBParameterGroupNotFound")
}
