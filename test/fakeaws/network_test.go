package fakeaws

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbt "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

func TestAZNamesDifferBetweenAccountsButIDsMatch(t *testing.T) {
	a, b := AZID("us-east-1", "111122223333", "us-east-1a"), AZID("us-east-1", "444455556666", "us-east-1a")
	if a == b || a == "" {
		t.Fatalf("us-east-1a is %s in one account and %s in the other: the mapping must differ", a, b)
	}
	if AZID("us-east-1", "444455556666", AZName("us-east-1", "444455556666", a)) != a {
		t.Error("AZName is not the inverse of AZID")
	}
}

// strictNLB starts a fake with an active NLB and a target group, returning their ARNs.
func strictNLB(t *testing.T) (*Server, *elb.Client, *ec2.Client, string, string) {
	t.Helper()
	s, err := Start(Config{AccountID: "111122223333", Region: "us-east-1", AccessKey: "AKIDTEST", SecretKey: "right", ReadyAfter: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.SeedSubnet("111122223333", "subnet-1", "vpc-1", "us-east-1a")
	s.SeedSubnet("111122223333", "subnet-2", "vpc-1", "us-east-1b")
	ctx := context.Background()
	cfg := sdkConfig(s)
	l, e := elb.NewFromConfig(cfg), ec2.NewFromConfig(cfg)
	_, err = l.CreateLoadBalancer(ctx, &elb.CreateLoadBalancerInput{Name: aws.String("nlb"), Type: elbt.LoadBalancerTypeEnumNetwork, Subnets: []string{"subnet-1", "subnet-nope"}})
	wantCode(t, "unknown subnet", err, "SubnetNotFound")
	lb, err := l.CreateLoadBalancer(ctx, &elb.CreateLoadBalancerInput{Name: aws.String("nlb"), Type: elbt.LoadBalancerTypeEnumNetwork, Subnets: []string{"subnet-1", "subnet-2"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.DescribeLoadBalancers(ctx, &elb.DescribeLoadBalancersInput{Names: []string{"nlb"}}); err != nil {
		t.Fatal(err)
	}
	_, err = l.CreateTargetGroup(ctx, &elb.CreateTargetGroupInput{Name: aws.String("tg"), Protocol: elbt.ProtocolEnumTcp, Port: aws.Int32(5432),
		VpcId: aws.String("vpc-1"), TargetType: elbt.TargetTypeEnumIp, HealthCheckIntervalSeconds: aws.Int32(400)})
	wantCode(t, "health check interval 400", err, "ValidationError")
	tg, err := l.CreateTargetGroup(ctx, &elb.CreateTargetGroupInput{Name: aws.String("tg"), Protocol: elbt.ProtocolEnumTcp, Port: aws.Int32(5432),
		VpcId: aws.String("vpc-1"), TargetType: elbt.TargetTypeEnumIp})
	if err != nil {
		t.Fatal(err)
	}
	return s, l, e, *lb.LoadBalancers[0].LoadBalancerArn, *tg.TargetGroups[0].TargetGroupArn
}

func TestELBAttributesAreValidatedAsAWSDocuments(t *testing.T) {
	_, l, _, lbARN, tgARN := strictNLB(t)
	ctx := context.Background()
	for _, a := range []elbt.LoadBalancerAttribute{{Key: aws.String("no.such.key"), Value: aws.String("true")},
		{Key: aws.String("load_balancing.cross_zone.enabled"), Value: aws.String("yes")}} {
		_, err := l.ModifyLoadBalancerAttributes(ctx, &elb.ModifyLoadBalancerAttributesInput{LoadBalancerArn: aws.String(lbARN), Attributes: []elbt.LoadBalancerAttribute{a}})
		wantCode(t, *a.Key+"="+*a.Value, err, "InvalidConfigurationRequest")
	}
	_, err := l.ModifyTargetGroupAttributes(ctx, &elb.ModifyTargetGroupAttributesInput{TargetGroupArn: aws.String(tgARN),
		Attributes: []elbt.TargetGroupAttribute{{Key: aws.String("deregistration_delay.timeout_seconds"), Value: aws.String("3601")}}})
	wantCode(t, "deregistration delay 3601", err, "InvalidConfigurationRequest")
	out, err := l.DescribeTargetGroupAttributes(ctx, &elb.DescribeTargetGroupAttributesInput{TargetGroupArn: aws.String(tgARN)})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range out.Attributes {
		if *a.Key == "deregistration_delay.timeout_seconds" && *a.Value != "300" {
			t.Errorf("a refused modify changed the delay to %s", *a.Value)
		}
	}
}

func TestTargetsStartInitialAndDrainForTheDelay(t *testing.T) {
	_, l, _, _, tgARN := strictNLB(t)
	ctx := context.Background()
	states := func() map[string]string {
		out, err := l.DescribeTargetHealth(ctx, &elb.DescribeTargetHealthInput{TargetGroupArn: aws.String(tgARN)})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, d := range out.TargetHealthDescriptions {
			m[*d.Target.Id] = string(d.TargetHealth.State) + "/" + string(d.TargetHealth.Reason)
		}
		return m
	}
	if _, err := l.RegisterTargets(ctx, &elb.RegisterTargetsInput{TargetGroupArn: aws.String(tgARN), Targets: []elbt.TargetDescription{{Id: aws.String("10.0.0.1")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ModifyTargetGroupAttributes(ctx, &elb.ModifyTargetGroupAttributesInput{TargetGroupArn: aws.String(tgARN),
		Attributes: []elbt.TargetGroupAttribute{{Key: aws.String("deregistration_delay.timeout_seconds"), Value: aws.String("60")}}}); err != nil {
		t.Fatal(err)
	}
	// ReadyAfter 1: the first poll already sees the health checks pass.
	if got := states()["10.0.0.1"]; got != "healthy/" {
		t.Fatalf("after first poll: %s", got)
	}
	if _, err := l.DeregisterTargets(ctx, &elb.DeregisterTargetsInput{TargetGroupArn: aws.String(tgARN), Targets: []elbt.TargetDescription{{Id: aws.String("10.0.0.1")}}}); err != nil {
		t.Fatal(err)
	}
	// 60 s of delay = 2 polls at ReadyAfter 1: seen draining once, gone at the second.
	if got := states()["10.0.0.1"]; got != "draining/Target.DeregistrationInProgress" {
		t.Errorf("after deregister: %s", got)
	}
	if got := states(); len(got) != 0 {
		t.Errorf("after the delay: %v", got)
	}
	_, err := l.DeregisterTargets(ctx, &elb.DeregisterTargetsInput{TargetGroupArn: aws.String(tgARN), Targets: []elbt.TargetDescription{{Id: aws.String("10.0.0.1")}}})
	wantCode(t, "deregister a target that is gone", err, "InvalidTarget")
}

func TestPrivateLinkClientTokensPrincipalsAndUnsuccessfulItems(t *testing.T) {
	_, _, e, lbARN, _ := strictNLB(t)
	ctx := context.Background()
	in := &ec2.CreateVpcEndpointServiceConfigurationInput{NetworkLoadBalancerArns: []string{lbARN}, AcceptanceRequired: aws.Bool(true), ClientToken: aws.String("tok-1")}
	a, err := e.CreateVpcEndpointServiceConfiguration(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.CreateVpcEndpointServiceConfiguration(ctx, in)
	if err != nil || *b.ServiceConfiguration.ServiceId != *a.ServiceConfiguration.ServiceId {
		t.Fatalf("same token, same parameters: %v %v", b, err)
	}
	in.AcceptanceRequired = aws.Bool(false)
	_, err = e.CreateVpcEndpointServiceConfiguration(ctx, in)
	wantCode(t, "same token, other parameters", err, "IdempotentParameterMismatch")
	id := a.ServiceConfiguration.ServiceId
	for _, p := range []string{"arn:aws:iam::444455556666:role/app", "arn:aws:iam::444455556666:user/bob", "arn:aws:iam::444455556666:root", "*"} {
		if _, err := e.ModifyVpcEndpointServicePermissions(ctx, &ec2.ModifyVpcEndpointServicePermissionsInput{ServiceId: id, AddAllowedPrincipals: []string{p}}); err != nil {
			t.Errorf("principal %s: %v", p, err)
		}
	}
	for _, p := range []string{"arn:aws:iam::444455556666:role/path/app", "444455556666", "arn:aws:iam::4444:root"} {
		_, err := e.ModifyVpcEndpointServicePermissions(ctx, &ec2.ModifyVpcEndpointServicePermissionsInput{ServiceId: id, AddAllowedPrincipals: []string{p}})
		wantCode(t, "principal "+p, err, "InvalidParameter")
	}
	del, err := e.DeleteVpcEndpointServiceConfigurations(ctx, &ec2.DeleteVpcEndpointServiceConfigurationsInput{ServiceIds: []string{*id, "vpce-svc-0000"}})
	if err != nil || len(del.Unsuccessful) != 1 || *del.Unsuccessful[0].ResourceId != "vpce-svc-0000" || *del.Unsuccessful[0].Error.Code != "InvalidVpcEndpointService.NotFound" {
		t.Errorf("batch delete: %+v %v", del, err)
	}
}
