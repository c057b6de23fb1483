package provision

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbt "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// ---- NLB, target group, listener ----------------------------------------------------------

type lbHandler struct{}

func (lbHandler) kind() string { return kindLB }
func (lbHandler) immutable() []string {
	return []string{"scheme", "type", "subnet_ids", "security_groups"}
}

func (lbHandler) desired(e *env) []*State {
	a := map[string]string{"scheme": "internal", "type": "network", "subnet_ids": sortedJoin(e.spec.Network.SubnetIDs), "security_groups": e.get("sg.id")}
	for k, v := range lbAttributes {
		a[attrPrefix+k] = v
	}
	return []*State{{Kind: kindLB, Name: baseName(e.spec), Tags: ownTags(e.spec), Attrs: a}}
}

func elbTags(ctx context.Context, e *env, kind, name, arn string) (map[string]string, error) {
	out, err := e.c.ELB.DescribeTags(ctx, &elb.DescribeTagsInput{ResourceArns: []string{arn}})
	if err != nil {
		return nil, awsErr(kind, name, "elasticloadbalancing:DescribeTags", err)
	}
	tags := map[string]string{}
	for _, d := range out.TagDescriptions {
		for _, t := range d.Tags {
			tags[deref(t.Key)] = deref(t.Value)
		}
	}
	return tags, nil
}

func elbTagList(m map[string]string) []elbt.Tag {
	var out []elbt.Tag
	for _, k := range sortedKeys(m) {
		out = append(out, elbt.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

func elbRetag(ctx context.Context, e *env, kind, name, arn string, tags map[string]string) error {
	if len(tags) == 0 {
		return nil
	}
	_, err := e.c.ELB.AddTags(ctx, &elb.AddTagsInput{ResourceArns: []string{arn}, Tags: elbTagList(tags)})
	return awsErr(kind, name, "elasticloadbalancing:AddTags", err)
}

func (lbHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	name := baseName(e.spec)
	out, err := e.c.ELB.DescribeLoadBalancers(ctx, &elb.DescribeLoadBalancersInput{Names: []string{name}})
	if isCode(err, "LoadBalancerNotFound") {
		return nil, nil
	}
	if err != nil {
		return nil, awsErr(kindLB, name, "elasticloadbalancing:DescribeLoadBalancers", err)
	}
	var res []*State
	for _, lb := range out.LoadBalancers {
		var subs []string
		for _, az := range lb.AvailabilityZones {
			subs = append(subs, deref(az.SubnetId))
		}
		tags, err := elbTags(ctx, e, kindLB, name, deref(lb.LoadBalancerArn))
		if err != nil {
			return nil, err
		}
		status := ""
		if lb.State != nil {
			status = string(lb.State.Code)
		}
		attrs := map[string]string{"scheme": string(lb.Scheme), "type": string(lb.Type), "subnet_ids": sortedJoin(subs), "security_groups": sortedJoin(lb.SecurityGroups)}
		if err := observeLBAttributes(ctx, e, name, deref(lb.LoadBalancerArn), attrs); err != nil {
			return nil, err
		}
		res = append(res, &State{Kind: kindLB, Name: deref(lb.LoadBalancerName), ID: deref(lb.LoadBalancerArn), Status: status, Tags: tags,
			Attrs: attrs, Out: map[string]string{"lb.dns": deref(lb.DNSName)}})
	}
	return res, nil
}

func (lbHandler) create(ctx context.Context, e *env, d *State) error {
	out, err := e.c.ELB.CreateLoadBalancer(ctx, &elb.CreateLoadBalancerInput{Name: aws.String(d.Name), Type: elbt.LoadBalancerTypeEnumNetwork,
		Scheme: elbt.LoadBalancerSchemeEnumInternal, Subnets: e.spec.Network.SubnetIDs, SecurityGroups: []string{e.get("sg.id")}, Tags: elbTagList(d.Tags)})
	if err != nil {
		return awsErr(kindLB, d.Name, "elasticloadbalancing:CreateLoadBalancer", err)
	}
	if len(out.LoadBalancers) == 0 {
		return fmt.Errorf("load-balancer %q: CreateLoadBalancer returned no load balancer", d.Name)
	}
	// Attributes are set once it is active (an interrupted run sets them as drift next time).
	if _, err := e.p.waitReady(ctx, lbHandler{}, e, d.Name); err != nil {
		return err
	}
	return setLBAttributes(ctx, e, d.Name, deref(out.LoadBalancers[0].LoadBalancerArn), lbAttributes)
}

func (lbHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	if err := setLBAttributes(ctx, e, d.Name, o.ID, attrChanges(fields)); err != nil {
		return err
	}
	return elbRetag(ctx, e, kindLB, d.Name, o.ID, tagChanges(fields, d))
}

func (lbHandler) delete(ctx context.Context, e *env, o *State) error {
	_, err := e.c.ELB.DeleteLoadBalancer(ctx, &elb.DeleteLoadBalancerInput{LoadBalancerArn: aws.String(o.ID)})
	return awsErr(kindLB, o.Name, "elasticloadbalancing:DeleteLoadBalancer", err)
}

func (lbHandler) ready(o *State) (bool, error) {
	if o.Status == "failed" {
		return false, fmt.Errorf("load-balancer %q failed to provision", o.Name)
	}
	return o.Status == "active", nil
}

func (lbHandler) export(e *env, o *State) {
	e.out["lb.arn"] = o.ID
	e.out["lb.dns"] = o.Out["lb.dns"]
}

type targetGroupHandler struct{}

func (targetGroupHandler) kind() string { return kindTargetGroup }
func (targetGroupHandler) immutable() []string {
	return []string{"protocol", "port", "vpc_id", "target_type"}
}

func (targetGroupHandler) desired(e *env) []*State {
	port := strconv.Itoa(int(e.spec.Port()))
	targets := Unknown
	if ips, ok := e.out["proxy.ips"]; ok {
		var t []string
		for _, ip := range splitList(ips) {
			t = append(t, ip+":"+port)
		}
		targets = sortedJoin(t)
	}
	a := map[string]string{"protocol": "TCP", "port": port, "vpc_id": e.spec.Network.VPCID, "target_type": "ip", "targets": targets}
	for k, v := range tgAttributes {
		a[attrPrefix+k] = v
	}
	for k, v := range proxyHealthCheck.attrs() {
		a[k] = v
	}
	return []*State{{Kind: kindTargetGroup, Name: tgName(e.spec), Tags: ownTags(e.spec), Attrs: a}}
}

func (targetGroupHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	name := tgName(e.spec)
	out, err := e.c.ELB.DescribeTargetGroups(ctx, &elb.DescribeTargetGroupsInput{Names: []string{name}})
	if isCode(err, "TargetGroupNotFound") {
		return nil, nil
	}
	if err != nil {
		return nil, awsErr(kindTargetGroup, name, "elasticloadbalancing:DescribeTargetGroups", err)
	}
	var res []*State
	for _, tg := range out.TargetGroups {
		arn := deref(tg.TargetGroupArn)
		tags, err := elbTags(ctx, e, kindTargetGroup, name, arn)
		if err != nil {
			return nil, err
		}
		h, err := e.c.ELB.DescribeTargetHealth(ctx, &elb.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)})
		if err != nil {
			return nil, awsErr(kindTargetGroup, name, "elasticloadbalancing:DescribeTargetHealth", err)
		}
		var targets []string
		for _, d := range h.TargetHealthDescriptions {
			// A deregistered target stays listed as draining for the deregistration delay: it
			// is on its way out, not a target to remove again. A new one is "initial": present.
			if d.Target != nil && (d.TargetHealth == nil || d.TargetHealth.State != elbt.TargetHealthStateEnumDraining) {
				targets = append(targets, deref(d.Target.Id)+":"+strconv.Itoa(int(deref(d.Target.Port))))
			}
		}
		attrs := map[string]string{"protocol": string(tg.Protocol), "port": strconv.Itoa(int(deref(tg.Port))), "vpc_id": deref(tg.VpcId),
			"target_type": string(tg.TargetType), "targets": sortedJoin(targets)}
		for k, v := range observedHealthCheck(tg).attrs() {
			attrs[k] = v
		}
		if err := observeTGAttributes(ctx, e, name, arn, attrs); err != nil {
			return nil, err
		}
		res = append(res, &State{Kind: kindTargetGroup, Name: deref(tg.TargetGroupName), ID: arn, Status: "available", Tags: tags, Attrs: attrs})
	}
	return res, nil
}

func targetDescs(list []string) []elbt.TargetDescription {
	var out []elbt.TargetDescription
	for _, t := range list {
		host, port, _ := strings.Cut(t, ":")
		n, _ := strconv.Atoi(port)
		out = append(out, elbt.TargetDescription{Id: aws.String(host), Port: aws.Int32(int32(n))})
	}
	return out
}

func (h targetGroupHandler) create(ctx context.Context, e *env, d *State) error {
	hc := proxyHealthCheck
	out, err := e.c.ELB.CreateTargetGroup(ctx, &elb.CreateTargetGroupInput{Name: aws.String(d.Name), Protocol: elbt.ProtocolEnumTcp,
		Port: aws.Int32(e.spec.Port()), VpcId: aws.String(e.spec.Network.VPCID), TargetType: elbt.TargetTypeEnumIp, Tags: elbTagList(d.Tags),
		HealthCheckProtocol: elbt.ProtocolEnumTcp, HealthCheckIntervalSeconds: aws.Int32(hc.interval), HealthCheckTimeoutSeconds: aws.Int32(hc.timeout),
		HealthyThresholdCount: aws.Int32(hc.healthy), UnhealthyThresholdCount: aws.Int32(hc.unhealthy)})
	if err != nil {
		return awsErr(kindTargetGroup, d.Name, "elasticloadbalancing:CreateTargetGroup", err)
	}
	if len(out.TargetGroups) == 0 {
		return fmt.Errorf("target-group %q: CreateTargetGroup returned no target group", d.Name)
	}
	arn := deref(out.TargetGroups[0].TargetGroupArn)
	if err := setTGAttributes(ctx, e, d.Name, arn, tgAttributes); err != nil {
		return err
	}
	return h.setTargets(ctx, d.Name, arn, e, splitList(d.Attrs["targets"]), nil)
}

func (targetGroupHandler) setTargets(ctx context.Context, name, arn string, e *env, add, del []string) error {
	if len(add) > 0 && add[0] != Unknown {
		if _, err := e.c.ELB.RegisterTargets(ctx, &elb.RegisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: targetDescs(add)}); err != nil {
			return awsErr(kindTargetGroup, name, "elasticloadbalancing:RegisterTargets", err)
		}
	}
	if len(del) > 0 {
		if _, err := e.c.ELB.DeregisterTargets(ctx, &elb.DeregisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: targetDescs(del)}); err != nil {
			return awsErr(kindTargetGroup, name, "elasticloadbalancing:DeregisterTargets", err)
		}
	}
	return nil
}

func (h targetGroupHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	if err := setTGAttributes(ctx, e, d.Name, o.ID, attrChanges(fields)); err != nil {
		return err
	}
	if err := repairHealthCheck(ctx, e, d.Name, o.ID, fields); err != nil {
		return err
	}
	for _, f := range fields {
		if f.Field == "targets" {
			add, del := setDiff(splitList(f.To), splitList(f.From))
			if err := h.setTargets(ctx, d.Name, o.ID, e, add, del); err != nil {
				return err
			}
		}
	}
	return elbRetag(ctx, e, kindTargetGroup, d.Name, o.ID, tagChanges(fields, d))
}

func (targetGroupHandler) delete(ctx context.Context, e *env, o *State) error {
	_, err := e.c.ELB.DeleteTargetGroup(ctx, &elb.DeleteTargetGroupInput{TargetGroupArn: aws.String(o.ID)})
	if isCode(err, "TargetGroupNotFound") {
		return nil
	}
	return awsErr(kindTargetGroup, o.Name, "elasticloadbalancing:DeleteTargetGroup", err)
}

func (targetGroupHandler) ready(*State) (bool, error) { return true, nil }
func (targetGroupHandler) export(e *env, o *State)    { e.out["tg.arn"] = o.ID }

type listenerHandler struct{}

func (listenerHandler) kind() string        { return kindListener }
func (listenerHandler) immutable() []string { return []string{"port"} }

func (listenerHandler) desired(e *env) []*State {
	port := strconv.Itoa(int(e.spec.Port()))
	return []*State{{Kind: kindListener, Name: baseName(e.spec) + ":" + port, Tags: ownTags(e.spec), Attrs: map[string]string{
		"protocol": "TCP", "port": port, "target_group": e.get("tg.arn")}}}
}

func (listenerHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	if !e.known("lb.arn") {
		return nil, nil
	}
	name := baseName(e.spec)
	out, err := e.c.ELB.DescribeListeners(ctx, &elb.DescribeListenersInput{LoadBalancerArn: aws.String(e.get("lb.arn"))})
	if isCode(err, "LoadBalancerNotFound") {
		return nil, nil
	}
	if err != nil {
		return nil, awsErr(kindListener, name, "elasticloadbalancing:DescribeListeners", err)
	}
	var res []*State
	for _, l := range out.Listeners {
		tg := ""
		for _, a := range l.DefaultActions {
			if a.Type == elbt.ActionTypeEnumForward {
				tg = deref(a.TargetGroupArn)
			}
		}
		port := strconv.Itoa(int(deref(l.Port)))
		tags, err := elbTags(ctx, e, kindListener, name, deref(l.ListenerArn))
		if err != nil {
			return nil, err
		}
		res = append(res, &State{Kind: kindListener, Name: name + ":" + port, ID: deref(l.ListenerArn), Status: "available", Tags: tags,
			Attrs: map[string]string{"protocol": string(l.Protocol), "port": port, "target_group": tg}})
	}
	return res, nil
}

func fwd(tg string) []elbt.Action {
	return []elbt.Action{{Type: elbt.ActionTypeEnumForward, TargetGroupArn: aws.String(tg)}}
}

func (listenerHandler) create(ctx context.Context, e *env, d *State) error {
	_, err := e.c.ELB.CreateListener(ctx, &elb.CreateListenerInput{LoadBalancerArn: aws.String(e.get("lb.arn")), Protocol: elbt.ProtocolEnumTcp,
		Port: aws.Int32(e.spec.Port()), DefaultActions: fwd(e.get("tg.arn")), Tags: elbTagList(d.Tags)})
	return awsErr(kindListener, d.Name, "elasticloadbalancing:CreateListener", err)
}

func (listenerHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	for _, f := range fields {
		if f.Field == "target_group" || f.Field == "protocol" {
			if _, err := e.c.ELB.ModifyListener(ctx, &elb.ModifyListenerInput{ListenerArn: aws.String(o.ID), Protocol: elbt.ProtocolEnumTcp, DefaultActions: fwd(e.get("tg.arn"))}); err != nil {
				return awsErr(kindListener, d.Name, "elasticloadbalancing:ModifyListener", err)
			}
			break
		}
	}
	return elbRetag(ctx, e, kindListener, d.Name, o.ID, tagChanges(fields, d))
}

func (listenerHandler) delete(ctx context.Context, e *env, o *State) error {
	_, err := e.c.ELB.DeleteListener(ctx, &elb.DeleteListenerInput{ListenerArn: aws.String(o.ID)})
	if isCode(err, "ListenerNotFound") {
		return nil
	}
	return awsErr(kindListener, o.Name, "elasticloadbalancing:DeleteListener", err)
}

func (listenerHandler) ready(*State) (bool, error) { return true, nil }
func (listenerHandler) export(*env, *State)        {}
