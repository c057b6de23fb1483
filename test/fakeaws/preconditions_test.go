package fakeaws

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdst "github.com/aws/aws-sdk-go-v2/service/rds/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"
)

func sdkConfig(s *Server) aws.Config {
	return aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(s.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "right", "")}
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != code {
		t.Errorf("%s: got %v, want %s", what, err, code)
	}
}

// startTestFake starts a fake for sdkConfig's credentials, closed when the test ends.
func startTestFake(t *testing.T, readyAfter int) *Server {
	t.Helper()
	s, err := Start(Config{AccountID: "111122223333", Region: "us-east-1", AccessKey: "AKIDTEST", SecretKey: "right", ReadyAfter: readyAfter})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestPreconditionsAndLifecycle(t *testing.T) {
	s := startTestFake(t, 2)
	ctx := context.Background()
	cfg := sdkConfig(s)
	r, i, sm, e := rds.NewFromConfig(cfg), iam.NewFromConfig(cfg), secretsmanager.NewFromConfig(cfg), ec2.NewFromConfig(cfg)

	sg, err := e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("g"), VpcId: aws.String("vpc-1"), Description: aws.String("d")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("g"), VpcId: aws.String("vpc-1"), Description: aws.String("d")})
	wantCode(t, "duplicate security group", err, "InvalidGroup.Duplicate")

	_, err = r.CreateDBSubnetGroup(ctx, &rds.CreateDBSubnetGroupInput{DBSubnetGroupName: aws.String("sg"), DBSubnetGroupDescription: aws.String("d"), SubnetIds: []string{"subnet-1", "subnet-2"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.CreateDBSubnetGroup(ctx, &rds.CreateDBSubnetGroupInput{DBSubnetGroupName: aws.String("sg"), DBSubnetGroupDescription: aws.String("d"), SubnetIds: []string{"subnet-1", "subnet-2"}})
	wantCode(t, "duplicate subnet group", err, "DBSubnetGroupAlreadyExists")

	_, err = r.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{DBInstanceIdentifier: aws.String("db"), DBInstanceClass: aws.String("db.t4g.micro"),
		Engine: aws.String("postgres"), DBSubnetGroupName: aws.String("sg"), VpcSecurityGroupIds: []string{*sg.GroupId},
		MasterUsername: aws.String("u"), MasterUserPassword: aws.String("p"), DeletionProtection: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for range 3 {
		out, err := r.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String("db")})
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, aws.ToString(out.DBInstances[0].DBInstanceStatus))
	}
	if states[0] != "creating" || states[1] != "available" || states[2] != "available" {
		t.Errorf("lifecycle %v", states)
	}
	_, err = r.DeleteDBInstance(ctx, &rds.DeleteDBInstanceInput{DBInstanceIdentifier: aws.String("db"), SkipFinalSnapshot: aws.Bool(true)})
	wantCode(t, "delete under deletion protection", err, "InvalidParameterCombination")
	_, err = r.DeleteDBSubnetGroup(ctx, &rds.DeleteDBSubnetGroupInput{DBSubnetGroupName: aws.String("sg")})
	wantCode(t, "subnet group in use", err, "InvalidDBSubnetGroupStateFault")
	_, err = e.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: sg.GroupId})
	wantCode(t, "security group in use", err, "DependencyViolation")

	auth := []rdst.UserAuthConfig{{AuthScheme: rdst.AuthSchemeSecrets, IAMAuth: rdst.IAMAuthModeRequired, SecretArn: aws.String("arn:aws:secretsmanager:us-east-1:111122223333:secret:nope")}}
	_, err = r.CreateDBProxy(ctx, &rds.CreateDBProxyInput{DBProxyName: aws.String("p"), EngineFamily: rdst.EngineFamilyPostgresql,
		RoleArn: aws.String("arn:aws:iam::111122223333:role/missing"), Auth: auth, VpcSubnetIds: []string{"subnet-1", "subnet-2"}})
	wantCode(t, "proxy without role", err, "InvalidParameterValue")
	role, err := i.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("r"), AssumeRolePolicyDocument: aws.String(`{"Statement":[{"Principal":{"Service":"rds.amazonaws.com"}}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.CreateDBProxy(ctx, &rds.CreateDBProxyInput{DBProxyName: aws.String("p"), EngineFamily: rdst.EngineFamilyPostgresql,
		RoleArn: role.Role.Arn, Auth: auth, VpcSubnetIds: []string{"subnet-1", "subnet-2"}})
	wantCode(t, "proxy without secret", err, "InvalidParameterValue")
	sec, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("s"), SecretString: aws.String(`{"password":"x"}`)})
	if err != nil {
		t.Fatal(err)
	}
	auth[0].SecretArn = sec.ARN
	if _, err = r.CreateDBProxy(ctx, &rds.CreateDBProxyInput{DBProxyName: aws.String("p"), EngineFamily: rdst.EngineFamilyPostgresql,
		RoleArn: role.Role.Arn, Auth: auth, VpcSubnetIds: []string{"subnet-1", "subnet-2"}}); err != nil {
		t.Fatal(err)
	}
	_, err = r.RegisterDBProxyTargets(ctx, &rds.RegisterDBProxyTargetsInput{DBProxyName: aws.String("p"), DBInstanceIdentifiers: []string{"db"}})
	wantCode(t, "register on a creating proxy", err, "InvalidDBProxyStateFault")
	_, err = sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("s"), SecretString: aws.String("x")})
	wantCode(t, "duplicate secret", err, "ResourceExistsException")

	s.InjectThrottle("secretsmanager", "DescribeSecret", 1)
	_, err = sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String("s")})
	wantCode(t, "JSON throttling", err, "ThrottlingException")
	s.InjectError("iam", "GetRole", "AccessDenied", "no", 403, 1)
	_, err = i.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("r")})
	wantCode(t, "injected AccessDenied", err, "AccessDenied")
	if _, err = i.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("r")}); err != nil {
		t.Errorf("injection outlived its count: %v", err)
	}
}
