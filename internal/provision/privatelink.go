package provision

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2t "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"go.uber.org/zap"
)

// ---- VPC endpoint service (provider side of PrivateLink) ----------------------------------

type serviceHandler struct{}

func (serviceHandler) kind() string        { return kindService }
func (serviceHandler) immutable() []string { return nil }

func (serviceHandler) desired(e *env) []*State {
	if !e.spec.PrivateLink.Enabled {
		return nil
	}
	return []*State{{Kind: kindService, Name: baseName(e.spec), Tags: ownTags(e.spec), Attrs: map[string]string{
		"acceptance_required": "true", "nlb": e.get("lb.arn"), "allowed_principals": sortedJoin(e.spec.PrivateLink.AllowedPrincipals)}}}
}

func (serviceHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	name := baseName(e.spec)
	// Endpoint services have no name: ours are found by the database tag (ownership is then
	// checked on both tags like everything else).
	out, err := e.c.EC2.DescribeVpcEndpointServiceConfigurations(ctx, &ec2.DescribeVpcEndpointServiceConfigurationsInput{
		Filters: []ec2t.Filter{{Name: aws.String("tag:" + TagDatabase), Values: []string{e.spec.Name}}}})
	if err != nil {
		return nil, awsErr(kindService, name, "ec2:DescribeVpcEndpointServiceConfigurations", err)
	}
	var res []*State
	for _, s := range out.ServiceConfigurations {
		if s.ServiceState == ec2t.ServiceStateDeleted {
			continue
		}
		id := deref(s.ServiceId)
		perms, err := e.c.EC2.DescribeVpcEndpointServicePermissions(ctx, &ec2.DescribeVpcEndpointServicePermissionsInput{ServiceId: aws.String(id)})
		if err != nil {
			return nil, awsErr(kindService, name, "ec2:DescribeVpcEndpointServicePermissions", err)
		}
		var principals []string
		for _, p := range perms.AllowedPrincipals {
			principals = append(principals, deref(p.Principal))
		}
		tags := map[string]string{}
		for _, t := range s.Tags {
			tags[deref(t.Key)] = deref(t.Value)
		}
		res = append(res, &State{Kind: kindService, Name: name, ID: id, Status: string(s.ServiceState), Tags: tags,
			Attrs: map[string]string{"acceptance_required": b2s(deref(s.AcceptanceRequired)), "nlb": sortedJoin(s.NetworkLoadBalancerArns),
				"allowed_principals": sortedJoin(principals)},
			Out: map[string]string{"svc.id": id, "svc.name": deref(s.ServiceName)}})
	}
	return keepOneService(ctx, e, res)
}

func (h serviceHandler) create(ctx context.Context, e *env, d *State) error {
	// The token is derived from what is asked for (the NLB's ARN changes when the NLB is
	// re-created), so a retried or concurrent create converges on one service.
	parts := append([]string{"nlb=" + e.get("lb.arn"), "acceptance=true"}, tagParts(d.Tags)...)
	for gen := 1; gen <= 3; gen++ {
		out, err := e.c.EC2.CreateVpcEndpointServiceConfiguration(ctx, &ec2.CreateVpcEndpointServiceConfigurationInput{
			AcceptanceRequired: aws.Bool(true), NetworkLoadBalancerArns: []string{e.get("lb.arn")},
			ClientToken:       aws.String(clientToken(e.spec.Name, "endpoint-service", gen, parts...)),
			TagSpecifications: []ec2t.TagSpecification{{ResourceType: ec2t.ResourceTypeVpcEndpointService, Tags: ec2Tags(d.Tags)}}})
		if err != nil {
			return awsErr(kindService, d.Name, "ec2:CreateVpcEndpointServiceConfiguration", err)
		}
		if out.ServiceConfiguration == nil {
			return fmt.Errorf("endpoint-service %q: CreateVpcEndpointServiceConfiguration returned no service", d.Name)
		}
		switch out.ServiceConfiguration.ServiceState {
		case ec2t.ServiceStateDeleted, ec2t.ServiceStateDeleting, ec2t.ServiceStateFailed:
			// The token still answers with a service deleted since: take the next one.
			continue
		}
		return h.setPrincipals(ctx, e, d.Name, deref(out.ServiceConfiguration.ServiceId), e.spec.PrivateLink.AllowedPrincipals, nil)
	}
	return fmt.Errorf("endpoint-service %q: ec2:CreateVpcEndpointServiceConfiguration kept answering with deleted services for its client tokens; run apply again later", d.Name)
}

func (serviceHandler) setPrincipals(ctx context.Context, e *env, name, id string, add, del []string) error {
	if len(add)+len(del) == 0 {
		return nil
	}
	_, err := e.c.EC2.ModifyVpcEndpointServicePermissions(ctx, &ec2.ModifyVpcEndpointServicePermissionsInput{ServiceId: aws.String(id),
		AddAllowedPrincipals: add, RemoveAllowedPrincipals: del})
	return awsErr(kindService, name, "ec2:ModifyVpcEndpointServicePermissions", err)
}

func (h serviceHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	for _, f := range fields {
		switch f.Field {
		case "acceptance_required":
			if _, err := e.c.EC2.ModifyVpcEndpointServiceConfiguration(ctx, &ec2.ModifyVpcEndpointServiceConfigurationInput{ServiceId: aws.String(o.ID), AcceptanceRequired: aws.Bool(true)}); err != nil {
				return awsErr(kindService, d.Name, "ec2:ModifyVpcEndpointServiceConfiguration", err)
			}
		case "nlb":
			add, del := setDiff(splitList(f.To), splitList(f.From))
			if _, err := e.c.EC2.ModifyVpcEndpointServiceConfiguration(ctx, &ec2.ModifyVpcEndpointServiceConfigurationInput{ServiceId: aws.String(o.ID),
				AddNetworkLoadBalancerArns: add, RemoveNetworkLoadBalancerArns: del}); err != nil {
				return awsErr(kindService, d.Name, "ec2:ModifyVpcEndpointServiceConfiguration", err)
			}
		case "allowed_principals":
			add, del := setDiff(splitList(f.To), splitList(f.From))
			if err := h.setPrincipals(ctx, e, d.Name, o.ID, add, del); err != nil {
				return err
			}
		}
	}
	return ec2Retag(ctx, e.c.EC2, kindService, d.Name, o.ID, tagChanges(fields, d))
}

func (serviceHandler) delete(ctx context.Context, e *env, o *State) error {
	const call = "ec2:DeleteVpcEndpointServiceConfigurations"
	for attempt := 1; ; attempt++ {
		out, err := e.c.EC2.DeleteVpcEndpointServiceConfigurations(ctx, &ec2.DeleteVpcEndpointServiceConfigurationsInput{ServiceIds: []string{o.ID}})
		if isCode(err, "InvalidVpcEndpointServiceId.NotFound", "InvalidVpcEndpointService.NotFound") {
			return nil
		}
		if err != nil {
			return awsErr(kindService, o.Name, call, err)
		}
		oe := unsuccessful(kindService, o.Name, call, out.Unsuccessful, "", "InvalidVpcEndpointServiceId.NotFound", "InvalidVpcEndpointService.NotFound")
		if oe == nil {
			return nil
		}
		if oe.Code != "ExistingVpcEndpointConnections" {
			oe.Hint = "the AWS documentation for " + call
			return oe
		}
		// Our own consumer endpoint holds it (PrivateLink turned off with the consumer
		// section still there): delete that first, then try once more.
		if attempt == 1 && e.spec.PrivateLink.Consumer != nil {
			deleted, err := deleteOwnConsumerEndpoints(ctx, e)
			if err != nil {
				return err
			}
			if deleted {
				continue
			}
		}
		oe.Hint = connectedEndpointsHint(ctx, e, o.ID)
		return oe
	}
}

// deleteOwnConsumerEndpoints deletes the consumer endpoints this database owns and waits for
// them to be gone; it reports whether there were any.
func deleteOwnConsumerEndpoints(ctx context.Context, e *env) (bool, error) {
	h := endpointHandler{}
	obs, err := h.observe(ctx, e)
	if err != nil {
		return false, err
	}
	n := 0
	for _, o := range obs {
		if !o.Owned(e.spec.Name) {
			continue
		}
		e.p.log.Info("deleting our consumer endpoint first: it holds the endpoint service", zap.String("id", o.ID))
		if err := h.delete(ctx, e, o); err != nil {
			return false, err
		}
		if err := e.p.waitGone(ctx, h, e, o.Name); err != nil {
			return false, err
		}
		n++
	}
	return n > 0, nil
}

// connectedEndpointsHint names the endpoints still connected to the service and what to do:
// AWS deletes a service only once no connection is Available or PendingAcceptance.
func connectedEndpointsHint(ctx context.Context, e *env, serviceID string) string {
	var held []string
	out, err := e.c.EC2.DescribeVpcEndpointConnections(ctx, &ec2.DescribeVpcEndpointConnectionsInput{
		Filters: []ec2t.Filter{{Name: aws.String("service-id"), Values: []string{serviceID}}}})
	if err == nil {
		for _, c := range out.VpcEndpointConnections {
			switch strings.ToLower(string(c.VpcEndpointState)) {
			case "available", "pendingacceptance", "pending":
				held = append(held, fmt.Sprintf("%s (account %s, %s)", deref(c.VpcEndpointId), deref(c.VpcEndpointOwner), c.VpcEndpointState))
			}
		}
	}
	sort.Strings(held)
	list := "see ec2:DescribeVpcEndpointConnections for the service"
	if len(held) > 0 {
		list = "still connected: " + strings.Join(held, ", ")
	}
	return fmt.Sprintf("%s; reject those connections (aws ec2 reject-vpc-endpoint-connections --service-id %s --vpc-endpoint-ids ...) or have their owners delete the endpoints, then run apply again. "+
		"If it is the consumer endpoint this spec created, keep the privatelink.consumer section while setting privatelink.enabled to false: apply then deletes that endpoint first", list, serviceID)
}

func (serviceHandler) ready(o *State) (bool, error) {
	switch o.Status {
	case string(ec2t.ServiceStateAvailable):
		return true, nil
	case string(ec2t.ServiceStateFailed):
		return false, fmt.Errorf("endpoint-service %q failed", o.Name)
	}
	return false, nil
}

func (serviceHandler) export(e *env, o *State) {
	for k, v := range o.Out {
		e.out[k] = v
	}
}

// ---- consumer VPC endpoint ----------------------------------------------------------------

type endpointHandler struct{}

func (endpointHandler) kind() string { return kindEndpoint }
func (endpointHandler) immutable() []string {
	return []string{"service_name", "vpc_id", "subnet_ids", "security_group_ids"}
}

func consumerName(s *Spec) string { return baseName(s) + "-consumer" }

func (endpointHandler) desired(e *env) []*State {
	c := e.spec.PrivateLink.Consumer
	if !e.spec.PrivateLink.Enabled || c == nil {
		return nil
	}
	return []*State{{Kind: kindEndpoint, Name: consumerName(e.spec), Tags: ownTags(e.spec), Attrs: map[string]string{
		"service_name": e.get("svc.name"), "vpc_id": c.VPCID, "subnet_ids": sortedJoin(c.SubnetIDs),
		"security_group_ids": sortedJoin(c.SecurityGroupIDs), "connection": "accepted"}}}
}

func (e *env) consumer(ctx context.Context) (ConsumerEC2API, error) {
	if e.consumerEC2 != nil {
		return e.consumerEC2, nil
	}
	if e.c.ConsumerEC2 == nil {
		return nil, errors.New("vpc-endpoint: no consumer client configured")
	}
	c, err := e.c.ConsumerEC2(ctx, e.spec.PrivateLink.Consumer.AssumeRoleARN)
	if err != nil {
		return nil, fmt.Errorf("vpc-endpoint: consumer account client (assume %q): %w", e.spec.PrivateLink.Consumer.AssumeRoleARN, err)
	}
	e.consumerEC2 = c
	return c, nil
}

func (endpointHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	cs := e.spec.PrivateLink.Consumer
	if cs == nil {
		// Without the consumer section we cannot know which account to look in; an endpoint
		// created earlier is left alone (see docs/provisioner.md).
		return nil, nil
	}
	c, err := e.consumer(ctx)
	if err != nil {
		return nil, err
	}
	name := consumerName(e.spec)
	out, err := c.DescribeVpcEndpoints(ctx, &ec2.DescribeVpcEndpointsInput{Filters: []ec2t.Filter{
		{Name: aws.String("tag:" + TagDatabase), Values: []string{e.spec.Name}}, {Name: aws.String("vpc-id"), Values: []string{cs.VPCID}}}})
	if err != nil {
		return nil, awsErr(kindEndpoint, name, "ec2:DescribeVpcEndpoints (consumer)", err)
	}
	var res []*State
	for _, v := range out.VpcEndpoints {
		state := string(v.State)
		if strings.EqualFold(state, "deleted") {
			continue
		}
		var sgs []string
		for _, g := range v.Groups {
			sgs = append(sgs, deref(g.GroupId))
		}
		tags := map[string]string{}
		for _, t := range v.Tags {
			tags[deref(t.Key)] = deref(t.Value)
		}
		conn := "accepted"
		if strings.EqualFold(state, "pendingAcceptance") {
			conn = "pending"
		}
		dns := ""
		if len(v.DnsEntries) > 0 {
			dns = deref(v.DnsEntries[0].DnsName)
		}
		created := ""
		if v.CreationTimestamp != nil {
			created = v.CreationTimestamp.UTC().Format(time.RFC3339Nano)
		}
		res = append(res, &State{Kind: kindEndpoint, Name: name, ID: deref(v.VpcEndpointId), Status: state, Tags: tags,
			Attrs: map[string]string{"service_name": deref(v.ServiceName), "vpc_id": deref(v.VpcId), "subnet_ids": sortedJoin(v.SubnetIds),
				"security_group_ids": sortedJoin(sgs), "connection": conn},
			Out: map[string]string{"vpce.id": deref(v.VpcEndpointId), "vpce.dns": dns, "vpce.created": created}})
	}
	return keepOldest(e, kindEndpoint, res), nil
}

func (h endpointHandler) create(ctx context.Context, e *env, d *State) error {
	c, err := e.consumer(ctx)
	if err != nil {
		return err
	}
	cs := e.spec.PrivateLink.Consumer
	if err := checkEndpointAZs(ctx, c, d.Name, e.get("svc.name"), cs.SubnetIDs); err != nil {
		return err
	}
	parts := append([]string{"service=" + e.get("svc.name"), "vpc=" + cs.VPCID, "subnets=" + sortedJoin(cs.SubnetIDs),
		"sgs=" + sortedJoin(cs.SecurityGroupIDs)}, tagParts(d.Tags)...)
	for gen := 1; gen <= 3; gen++ {
		out, err := c.CreateVpcEndpoint(ctx, &ec2.CreateVpcEndpointInput{VpcEndpointType: ec2t.VpcEndpointTypeInterface, ServiceName: aws.String(e.get("svc.name")),
			VpcId: aws.String(cs.VPCID), SubnetIds: cs.SubnetIDs, SecurityGroupIds: cs.SecurityGroupIDs, PrivateDnsEnabled: aws.Bool(false),
			ClientToken:       aws.String(clientToken(e.spec.Name, "vpc-endpoint", gen, parts...)),
			TagSpecifications: []ec2t.TagSpecification{{ResourceType: ec2t.ResourceTypeVpcEndpoint, Tags: ec2Tags(d.Tags)}}})
		if err != nil {
			return awsErr(kindEndpoint, d.Name, "ec2:CreateVpcEndpoint (consumer)", err)
		}
		if out.VpcEndpoint == nil {
			return fmt.Errorf("vpc-endpoint %q: CreateVpcEndpoint returned no endpoint", d.Name)
		}
		switch strings.ToLower(string(out.VpcEndpoint.State)) {
		case "deleted", "deleting", "rejected", "failed", "expired":
			// The token still answers with an endpoint that is gone since: take the next one.
			continue
		case "pendingacceptance":
			return h.accept(ctx, e, d.Name, deref(out.VpcEndpoint.VpcEndpointId))
		}
		return nil // already accepted (a retry or a concurrent apply got there first)
	}
	return fmt.Errorf("vpc-endpoint %q: ec2:CreateVpcEndpoint (consumer) kept answering with deleted endpoints for its client tokens; run apply again later", d.Name)
}

// accept approves the connection on the provider side (acceptance is required by design, so
// only endpoints we created ourselves get in without a human).
func (endpointHandler) accept(ctx context.Context, e *env, name, id string) error {
	const call = "ec2:AcceptVpcEndpointConnections"
	out, err := e.c.EC2.AcceptVpcEndpointConnections(ctx, &ec2.AcceptVpcEndpointConnectionsInput{ServiceId: aws.String(e.get("svc.id")), VpcEndpointIds: []string{id}})
	if err != nil {
		return awsErr(kindEndpoint, name, call, err)
	}
	if oe := unsuccessful(kindEndpoint, name, call, out.Unsuccessful,
		"the endpoint's connection state (ec2:DescribeVpcEndpointConnections): a rejected or expired connection cannot be accepted; delete the endpoint and run apply again"); oe != nil {
		return oe
	}
	return nil
}

func (h endpointHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	for _, f := range fields {
		if f.Field == "connection" {
			if err := h.accept(ctx, e, d.Name, o.ID); err != nil {
				return err
			}
		}
	}
	c, err := e.consumer(ctx)
	if err != nil {
		return err
	}
	return ec2Retag(ctx, c, kindEndpoint, d.Name, o.ID, tagChanges(fields, d))
}

func (endpointHandler) delete(ctx context.Context, e *env, o *State) error {
	c, err := e.consumer(ctx)
	if err != nil {
		return err
	}
	const call = "ec2:DeleteVpcEndpoints (consumer)"
	out, err := c.DeleteVpcEndpoints(ctx, &ec2.DeleteVpcEndpointsInput{VpcEndpointIds: []string{o.ID}})
	if isCode(err, "InvalidVpcEndpointId.NotFound", "InvalidVpcEndpoint.NotFound") {
		return nil
	}
	if err != nil {
		return awsErr(kindEndpoint, o.Name, call, err)
	}
	if oe := unsuccessful(kindEndpoint, o.Name, call, out.Unsuccessful, "the consumer account's permissions (ec2:DeleteVpcEndpoints) and the endpoint's state",
		"InvalidVpcEndpointId.NotFound", "InvalidVpcEndpoint.NotFound"); oe != nil {
		return oe
	}
	return nil
}

func (endpointHandler) ready(o *State) (bool, error) {
	switch strings.ToLower(o.Status) {
	case "available":
		return true, nil
	case "pendingacceptance":
		// Settled as far as AWS goes: it waits for us, and the "connection" field's diff
		// accepts it (this is where a run interrupted between create and accept resumes).
		return true, nil
	case "rejected", "failed", "expired":
		return false, fmt.Errorf("vpc-endpoint %q is %s", o.Name, o.Status)
	}
	return false, nil
}

func (endpointHandler) export(e *env, o *State) {
	for k, v := range o.Out {
		e.out[k] = v
	}
}

// ---- proxy IPs ----------------------------------------------------------------------------

// ProxyENIDescription is how the RDS Proxy's network interfaces are described in EC2; that is
// what the "eni" IP source matches on.
func ProxyENIDescription(proxy string) string { return "Network interface for DBProxy " + proxy }

// resolveProxyIPs finds the proxy's current private IPs, which become the NLB's targets.
// AWS offers no API field with them: they are the proxy endpoint's DNS answers inside the VPC,
// and the private IPs of the ENIs RDS creates for the proxy. Both are supported.
func (p *Provisioner) resolveProxyIPs(ctx context.Context, e *env) error {
	if !e.known("proxy.name") {
		return nil
	}
	var ips []string
	switch p.cfg.ProxyIPSource {
	case "dns":
		if p.deps.Resolver == nil {
			return errors.New("proxy IPs: dns source selected but no resolver configured")
		}
		addrs, err := p.deps.Resolver.LookupHost(ctx, e.get("proxy.endpoint"))
		if err != nil {
			return fmt.Errorf("db-proxy %q: resolve %s: %w; run where the VPC's DNS answers, or use --proxy-ips=eni", e.spec.Name, e.get("proxy.endpoint"), err)
		}
		for _, a := range addrs {
			if ip := net.ParseIP(a); ip != nil && ip.To4() != nil {
				ips = append(ips, a)
			}
		}
	default:
		out, err := e.c.EC2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2t.Filter{
			{Name: aws.String("description"), Values: []string{ProxyENIDescription(e.spec.Name)}},
			{Name: aws.String("vpc-id"), Values: []string{e.spec.Network.VPCID}}}})
		if err != nil {
			return awsErr(kindProxy, e.spec.Name, "ec2:DescribeNetworkInterfaces", err)
		}
		for _, n := range out.NetworkInterfaces {
			if ip := deref(n.PrivateIpAddress); ip != "" {
				ips = append(ips, ip)
			}
		}
	}
	if len(ips) == 0 {
		return fmt.Errorf("db-proxy %q: found no IPs (source %s); refusing to empty the NLB target group; check that the proxy is available and, for eni, ec2:DescribeNetworkInterfaces permission", e.spec.Name, p.cfg.ProxyIPSource)
	}
	sort.Strings(ips)
	e.out["proxy.ips"] = strings.Join(ips, ",")
	return nil
}

// errRetry marks an error as eventual consistency worth retrying.
type errRetry struct{ err error }

func (e errRetry) Error() string { return e.err.Error() }

// retryEventual retries f while it returns errRetry, with the provisioner's backoff, up to
// a few minutes (IAM propagation is usually seconds).
func (p *Provisioner) retryEventual(ctx context.Context, kind, name string, limit time.Duration, f func() error) error {
	delay := p.cfg.PollInterval
	deadline := p.deps.Clock.Now().Add(limit)
	for {
		err := f()
		var r errRetry
		if !errors.As(err, &r) {
			return err
		}
		if p.deps.Clock.Now().After(deadline) {
			return r.err
		}
		p.log.Info("AWS not consistent yet, retrying", zap.String("kind", kind), zap.String("name", name), zap.Error(r.err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.deps.Clock.After(delay):
		}
		delay = min(delay*2, p.cfg.MaxPollInterval)
	}
}
