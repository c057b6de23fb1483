package provision

import (
	"context"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbt "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// attrPrefix marks an ELB attribute among a resource's compared fields ("attr.KEY").
const attrPrefix = "attr."

// lbAttributes are the NLB attributes we own. Cross-zone load balancing is on: the proxy has
// ENIs in only some of the NLB's AZs, and with it off a consumer's endpoint ENI in an AZ
// without a proxy target has nowhere to send connections.
var lbAttributes = map[string]string{"load_balancing.cross_zone.enabled": "true"}

// tgAttributes are the target group attributes we own: a proxy IP that went away drains for 30 s
// (not the default 300 s), and its connections are closed when draining ends so clients
// reconnect to a live proxy IP instead of hanging on a dead one.
var tgAttributes = map[string]string{
	"deregistration_delay.timeout_seconds":                "30",
	"deregistration_delay.connection_termination.enabled": "true",
}

// healthCheck is the target group's TCP health check.
type healthCheck struct{ interval, timeout, healthy, unhealthy int32 }

// proxyHealthCheck suits an RDS Proxy target: a TCP connect every 10 s, 2 passes to become
// healthy and 2 failures to be taken out (about 20 s either way, instead of the defaults'
// 30 s interval and 5 passes).
var proxyHealthCheck = healthCheck{interval: 10, timeout: 5, healthy: 2, unhealthy: 2}

func (h healthCheck) attrs() map[string]string {
	return map[string]string{
		"health_check": "TCP interval=" + strconv.Itoa(int(h.interval)) + "s timeout=" + strconv.Itoa(int(h.timeout)) +
			"s healthy=" + strconv.Itoa(int(h.healthy)) + " unhealthy=" + strconv.Itoa(int(h.unhealthy)),
	}
}

func observedHealthCheck(tg elbt.TargetGroup) healthCheck {
	return healthCheck{interval: deref(tg.HealthCheckIntervalSeconds), timeout: deref(tg.HealthCheckTimeoutSeconds),
		healthy: deref(tg.HealthyThresholdCount), unhealthy: deref(tg.UnhealthyThresholdCount)}
}

// repairHealthCheck sets the health check back when it drifted (ModifyTargetGroup).
func repairHealthCheck(ctx context.Context, e *env, name, arn string, fields []FieldDiff) error {
	for _, f := range fields {
		if f.Field != "health_check" {
			continue
		}
		h := proxyHealthCheck
		_, err := e.c.ELB.ModifyTargetGroup(ctx, &elb.ModifyTargetGroupInput{TargetGroupArn: aws.String(arn), HealthCheckProtocol: elbt.ProtocolEnumTcp,
			HealthCheckIntervalSeconds: aws.Int32(h.interval), HealthCheckTimeoutSeconds: aws.Int32(h.timeout),
			HealthyThresholdCount: aws.Int32(h.healthy), UnhealthyThresholdCount: aws.Int32(h.unhealthy)})
		return awsErr(kindTargetGroup, name, "elasticloadbalancing:ModifyTargetGroup", err)
	}
	return nil
}

// attrChanges picks the attribute fields out of a diff: key -> wanted value.
func attrChanges(fields []FieldDiff) map[string]string {
	out := map[string]string{}
	for _, f := range fields {
		if k, ok := strings.CutPrefix(f.Field, attrPrefix); ok {
			out[k] = f.To
		}
	}
	return out
}

func observeLBAttributes(ctx context.Context, e *env, name, arn string, into map[string]string) error {
	out, err := e.c.ELB.DescribeLoadBalancerAttributes(ctx, &elb.DescribeLoadBalancerAttributesInput{LoadBalancerArn: aws.String(arn)})
	if err != nil {
		return awsErr(kindLB, name, "elasticloadbalancing:DescribeLoadBalancerAttributes", err)
	}
	have := map[string]string{}
	for _, a := range out.Attributes {
		have[deref(a.Key)] = deref(a.Value)
	}
	for k := range lbAttributes {
		into[attrPrefix+k] = have[k]
	}
	return nil
}

func observeTGAttributes(ctx context.Context, e *env, name, arn string, into map[string]string) error {
	out, err := e.c.ELB.DescribeTargetGroupAttributes(ctx, &elb.DescribeTargetGroupAttributesInput{TargetGroupArn: aws.String(arn)})
	if err != nil {
		return awsErr(kindTargetGroup, name, "elasticloadbalancing:DescribeTargetGroupAttributes", err)
	}
	have := map[string]string{}
	for _, a := range out.Attributes {
		have[deref(a.Key)] = deref(a.Value)
	}
	for k := range tgAttributes {
		into[attrPrefix+k] = have[k]
	}
	return nil
}

func setLBAttributes(ctx context.Context, e *env, name, arn string, want map[string]string) error {
	if len(want) == 0 {
		return nil
	}
	var attrs []elbt.LoadBalancerAttribute
	for _, k := range sortedKeys(want) {
		attrs = append(attrs, elbt.LoadBalancerAttribute{Key: aws.String(k), Value: aws.String(want[k])})
	}
	_, err := e.c.ELB.ModifyLoadBalancerAttributes(ctx, &elb.ModifyLoadBalancerAttributesInput{LoadBalancerArn: aws.String(arn), Attributes: attrs})
	return awsErr(kindLB, name, "elasticloadbalancing:ModifyLoadBalancerAttributes", err)
}

func setTGAttributes(ctx context.Context, e *env, name, arn string, want map[string]string) error {
	if len(want) == 0 {
		return nil
	}
	var attrs []elbt.TargetGroupAttribute
	for _, k := range sortedKeys(want) {
		attrs = append(attrs, elbt.TargetGroupAttribute{Key: aws.String(k), Value: aws.String(want[k])})
	}
	_, err := e.c.ELB.ModifyTargetGroupAttributes(ctx, &elb.ModifyTargetGroupAttributesInput{TargetGroupArn: aws.String(arn), Attributes: attrs})
	return awsErr(kindTargetGroup, name, "elasticloadbalancing:ModifyTargetGroupAttributes", err)
}
