package fakeaws

import (
	"fmt"
	"time"
)

// PrivateLink: endpoint services (provider side) and interface endpoints (consumer side).
// The batch calls (Accept/Reject connections, DeleteVpcEndpoints,
// DeleteVpcEndpointServiceConfigurations) answer 200 with an "unsuccessful" list for the items
// they could not do, as their API reference pages describe.
func (st *state) privateLink(c *reqCtx, action string) (any, *apiError, bool) {
	var out any
	var err *apiError
	switch action {
	case "CreateVpcEndpointServiceConfiguration":
		out, err = st.createService(c)
	case "DescribeVpcEndpointServiceConfigurations":
		ids := c.strs("ServiceId")
		filters := ec2Filters(c)
		var items []X
		for _, k := range sortedKeys(st.services) {
			s := st.services[k]
			if (len(ids) > 0 && !contains(ids, s.id)) || !matches(filters, s.tags, map[string]string{"service-id": s.id}) {
				continue
			}
			st.tick(&s.life)
			items = append(items, st.serviceX(c, s, "item"))
		}
		out = []X{E("serviceConfigurationSet", items...)}
	case "ModifyVpcEndpointServiceConfiguration":
		s := st.services[c.get("ServiceId")]
		if s == nil {
			return nil, errf(400, "InvalidVpcEndpointServiceId.NotFound", "service %s not found", c.get("ServiceId")), true
		}
		if c.has("AcceptanceRequired") {
			s.acceptance = c.boolean("AcceptanceRequired")
		}
		out = []X{T("return", "true")}
	case "DescribeVpcEndpointServicePermissions":
		s := st.services[c.get("ServiceId")]
		if s == nil {
			return nil, errf(400, "InvalidVpcEndpointServiceId.NotFound", "service %s not found", c.get("ServiceId")), true
		}
		var items []X
		for _, p := range s.principals {
			items = append(items, E("item", T("principal", p), T("principalType", principalType(p))))
		}
		out = []X{E("allowedPrincipals", items...)}
	case "ModifyVpcEndpointServicePermissions":
		out, err = st.modifyPermissions(c)
	case "DescribeVpcEndpointConnections":
		out, err = st.describeConnections(c)
	case "DeleteVpcEndpointServiceConfigurations":
		var bad []X
		for _, id := range c.strs("ServiceId") {
			s := st.services[id]
			if s == nil {
				bad = append(bad, unsuccessfulItem(id, "InvalidVpcEndpointService.NotFound", fmt.Sprintf("The VpcEndpointService Id '%s' does not exist", id)))
				continue
			}
			// "Before you can delete an endpoint service configuration, you must reject any
			// Available or PendingAcceptance interface endpoint connections" (API_DeleteVpcEndpointServiceConfigurations);
			// the code is ExistingVpcEndpointConnections (EC2 API error codes page).
			if st.connected(s) {
				bad = append(bad, unsuccessfulItem(id, "ExistingVpcEndpointConnections", "Service has existing active VPC Endpoint connections!"))
				continue
			}
			delete(st.services, id)
		}
		out = []X{E("unsuccessful", bad...)}
	case "CreateVpcEndpoint":
		out, err = st.createEndpoint(c)
	case "DescribeVpcEndpoints":
		ids := c.strs("VpcEndpointId")
		filters := ec2Filters(c)
		var items []X
		for _, k := range sortedKeys(st.endpoints) {
			e := st.endpoints[k]
			if e.account != c.account || (len(ids) > 0 && !contains(ids, e.id)) ||
				!matches(filters, e.tags, map[string]string{"vpc-id": e.vpc, "service-name": e.serviceName, "vpc-endpoint-id": e.id}) {
				continue
			}
			st.tick(&e.life)
			if e.status == "deleted" {
				delete(st.endpoints, k)
				continue
			}
			items = append(items, st.endpointX(e, "item"))
		}
		out = []X{E("vpcEndpointSet", items...)}
	case "AcceptVpcEndpointConnections", "RejectVpcEndpointConnections":
		s := st.services[c.get("ServiceId")]
		if s == nil || s.account != c.account {
			return nil, errf(400, "InvalidVpcEndpointServiceId.NotFound", "The VpcEndpointService Id '%s' does not exist", c.get("ServiceId")), true
		}
		var bad []X
		for _, id := range c.strs("VpcEndpointId") {
			e := st.endpoints[id]
			switch {
			case e == nil || !st.endpointOf(e, s):
				bad = append(bad, unsuccessfulItem(id, "InvalidVpcEndpointId.NotFound", fmt.Sprintf("The Vpc Endpoint Id '%s' does not exist", id)))
			case action == "AcceptVpcEndpointConnections" && e.status != "pendingAcceptance":
				bad = append(bad, unsuccessfulItem(id, "IncorrectState", fmt.Sprintf("Vpc Endpoint %s is in state %s, not pendingAcceptance", id, e.status)))
			case action == "RejectVpcEndpointConnections" && e.status != "pendingAcceptance" && e.status != "available" && e.status != "pending":
				bad = append(bad, unsuccessfulItem(id, "IncorrectState", fmt.Sprintf("Vpc Endpoint %s is in state %s", id, e.status)))
			case action == "AcceptVpcEndpointConnections":
				delete(s.pendingConnections, id)
				e.set("pending", "available")
			default:
				delete(s.pendingConnections, id)
				e.set("rejected", "")
			}
		}
		out = []X{E("unsuccessful", bad...)}
	case "DeleteVpcEndpoints":
		var bad []X
		for _, id := range c.strs("VpcEndpointId") {
			e := st.endpoints[id]
			if e == nil || e.account != c.account {
				bad = append(bad, unsuccessfulItem(id, "InvalidVpcEndpoint.NotFound", fmt.Sprintf("The Vpc Endpoint Id '%s' does not exist", id)))
				continue
			}
			if e.status != "deleting" {
				e.set("deleting", "deleted")
			}
		}
		out = []X{E("unsuccessful", bad...)}
	default:
		return nil, nil, false
	}
	return out, err, true
}

func (st *state) endpointOf(e *vpcEndpoint, s *endpointService) bool { return e.serviceName == s.name }

// connected: an endpoint holds the service while its connection is Available or
// PendingAcceptance (or on its way there).
func (st *state) connected(s *endpointService) bool {
	for _, e := range st.endpoints {
		if st.endpointOf(e, s) && (e.status == "available" || e.status == "pendingAcceptance" || e.status == "pending") {
			return true
		}
	}
	return false
}

func (st *state) createService(c *reqCtx) (any, *apiError) {
	if id, err := st.checkToken(c, "CreateVpcEndpointServiceConfiguration"); err != nil {
		return nil, err
	} else if id != "" {
		if s := st.services[id]; s != nil {
			return []X{st.serviceX(c, s, "serviceConfiguration"), T("clientToken", c.get("ClientToken"))}, nil
		}
		return []X{E("serviceConfiguration", T("serviceId", id), T("serviceState", "Deleted")), T("clientToken", c.get("ClientToken"))}, nil
	}
	nlbs := c.strs("NetworkLoadBalancerArn")
	for _, a := range nlbs {
		lb := st.lbs[a]
		if lb == nil {
			return nil, errf(400, "InvalidParameter", "Load balancer %s not found", a)
		}
		if lb.status != "active" {
			return nil, errf(400, "InvalidParameter", "Load balancer %s is not active", a)
		}
	}
	id := st.id("vpce-svc-", 17)
	s := &endpointService{id: id, name: "com.amazonaws.vpce." + c.region + "." + id, account: c.account,
		acceptance: c.boolean("AcceptanceRequired"), nlbs: nlbs, tags: ec2TagSpec(c), pendingConnections: map[string]bool{}}
	s.set("Pending", "Available")
	st.services[id] = s
	st.rememberToken(c, "CreateVpcEndpointServiceConfiguration", id)
	return []X{st.serviceX(c, s, "serviceConfiguration"), T("clientToken", c.get("ClientToken"))}, nil
}

func (st *state) modifyPermissions(c *reqCtx) (any, *apiError) {
	s := st.services[c.get("ServiceId")]
	if s == nil {
		return nil, errf(400, "InvalidVpcEndpointServiceId.NotFound", "service %s not found", c.get("ServiceId"))
	}
	add := c.strs("AddAllowedPrincipals")
	for _, p := range append(append([]string(nil), add...), c.strs("RemoveAllowedPrincipals")...) {
		if !principalRE.MatchString(p) {
			return nil, errf(400, "InvalidParameter", "Invalid principal %q: use *, arn:aws:iam::ACCOUNT:root, or an IAM role or user ARN without a path", p)
		}
	}
	var added []X
	for _, p := range add {
		if !contains(s.principals, p) {
			s.principals = append(s.principals, p)
		}
		added = append(added, E("item", T("principal", p), T("principalType", principalType(p)), T("serviceId", s.id)))
	}
	for _, p := range c.strs("RemoveAllowedPrincipals") {
		s.principals = remove(s.principals, p)
	}
	return []X{E("addedPrincipalSet", added...), T("return", "true")}, nil
}

func (st *state) describeConnections(c *reqCtx) (any, *apiError) {
	filters := ec2Filters(c)
	var items []X
	for _, k := range sortedKeys(st.endpoints) {
		e := st.endpoints[k]
		for _, s := range st.services {
			if s.account != c.account || !st.endpointOf(e, s) || !matches(filters, nil, map[string]string{"service-id": s.id, "vpc-endpoint-id": e.id,
				"vpc-endpoint-owner": e.account, "vpc-endpoint-state": e.status}) {
				continue
			}
			items = append(items, E("item", T("serviceId", s.id), T("vpcEndpointId", e.id), T("vpcEndpointOwner", e.account),
				T("vpcEndpointState", e.status), T("creationTimestamp", e.created.UTC().Format(time.RFC3339))))
		}
	}
	return []X{E("vpcEndpointConnectionSet", items...)}, nil
}

func (st *state) createEndpoint(c *reqCtx) (any, *apiError) {
	if id, err := st.checkToken(c, "CreateVpcEndpoint"); err != nil {
		return nil, err
	} else if id != "" {
		if e := st.endpoints[id]; e != nil {
			return []X{st.endpointX(e, "vpcEndpoint"), T("clientToken", c.get("ClientToken"))}, nil
		}
		return []X{E("vpcEndpoint", T("vpcEndpointId", id), T("state", "deleted")), T("clientToken", c.get("ClientToken"))}, nil
	}
	name := c.get("ServiceName")
	var svc *endpointService
	for _, s := range st.services {
		if s.name == name {
			svc = s
		}
	}
	if svc == nil || !allowedCaller(svc, c) {
		return nil, errf(400, "InvalidServiceName", "The Vpc Endpoint Service '%s' does not exist", name)
	}
	subs, missing := st.findSubnets(c, c.strs("SubnetId"))
	if len(missing) > 0 {
		return nil, errf(400, "InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", missing[0])
	}
	served := st.serviceAZIDs(c.region, svc)
	seenAZ := map[string]bool{}
	for _, sn := range subs {
		if sn.vpc != c.get("VpcId") {
			return nil, errf(400, "InvalidParameter", "The subnet %s does not belong to VPC %s", sn.id, c.get("VpcId"))
		}
		az := st.subnetAZID(c.region, sn)
		// One subnet per AZ (DuplicateSubnetsInSameZone, EC2 API error codes page).
		if seenAZ[az] {
			return nil, errf(400, "DuplicateSubnetsInSameZone", "Found another subnet in the same Availability Zone as %s", sn.id)
		}
		seenAZ[az] = true
		// Matched by AZ ID, the zone the service's NLB is really in (see network.go).
		if !contains(served, az) {
			return nil, errf(400, "InvalidParameter", "The VPC endpoint service %s does not support the availability zone of the subnet: %s.", name, sn.id)
		}
	}
	id := st.id("vpce-", 17)
	e := &vpcEndpoint{id: id, serviceName: name, vpc: c.get("VpcId"), account: c.account, subnets: c.strs("SubnetId"),
		sgs: c.strs("SecurityGroupId"), tags: ec2TagSpec(c), dns: fmt.Sprintf("%s-%s.%s.%s.vpce.amazonaws.com", id, randHex(4), svc.id, c.region),
		created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(st.n) * time.Second)}
	if svc.acceptance {
		e.set("pendingAcceptance", "")
		svc.pendingConnections[id] = true
	} else {
		e.set("pending", "available")
	}
	st.endpoints[id] = e
	st.rememberToken(c, "CreateVpcEndpoint", id)
	return []X{st.endpointX(e, "vpcEndpoint"), T("clientToken", c.get("ClientToken"))}, nil
}

func (st *state) serviceX(c *reqCtx, s *endpointService, name string) X {
	ids := st.serviceAZIDs(c.region, s)
	return E(name, T("serviceId", s.id), T("serviceName", s.name), T("serviceState", s.status),
		E("serviceType", E("item", T("serviceType", "Interface"))),
		T("acceptanceRequired", b2s(s.acceptance)), Strs("networkLoadBalancerArnSet", "item", s.nlbs),
		Strs("availabilityZoneSet", "item", azNamesFor(c.region, s.account, ids)), Strs("availabilityZoneIdSet", "item", ids),
		E("tagSet", tagItems(s.tags, "key", "value")...))
}

func (st *state) endpointX(e *vpcEndpoint, name string) X {
	return E(name, T("vpcEndpointId", e.id), T("vpcEndpointType", "Interface"), T("vpcId", e.vpc), T("serviceName", e.serviceName),
		T("state", e.status), Strs("subnetIdSet", "item", e.subnets), groupSet(e.sgs),
		T("creationTimestamp", e.created.UTC().Format(time.RFC3339)),
		E("dnsEntrySet", E("item", T("dnsName", e.dns), T("hostedZoneId", "Z7HUB22UULQXV"))),
		E("tagSet", tagItems(e.tags, "key", "value")...))
}
