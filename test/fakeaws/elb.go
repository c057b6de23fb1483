package fakeaws

import (
	"fmt"
	"strconv"
)

func (st *state) elb(c *reqCtx, action string) (any, *apiError) {
	switch action {
	case "CreateLoadBalancer":
		name := c.get("Name")
		for _, lb := range st.lbs {
			if lb.name == name {
				return nil, errf(400, "DuplicateLoadBalancerName", "A load balancer with the same name '%s' exists, but with different settings", name)
			}
		}
		id := st.id("", 16)
		lb := &loadBalancer{name: name, arn: c.arn("elasticloadbalancing", "loadbalancer/net/"+name+"/"+id),
			dns: fmt.Sprintf("%s-%s.elb.%s.amazonaws.com", name, id, c.region), scheme: c.get("Scheme"), typ: c.get("Type"),
			subnets: c.strs("Subnets"), sgs: c.strs("SecurityGroups"), tags: c.tagsFrom("Tags")}
		for _, g := range lb.sgs {
			if st.sgs[g] == nil {
				return nil, errf(400, "InvalidSecurityGroup", "Security group '%s' does not exist", g)
			}
		}
		// Subnets must exist, one per AZ (CreateLoadBalancer: SubnetNotFound,
		// InvalidConfigurationRequest; https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateLoadBalancer.html).
		subs, missing := st.findSubnets(c, lb.subnets)
		if len(missing) > 0 {
			return nil, errf(400, "SubnetNotFound", "The specified subnet does not exist: %s", missing[0])
		}
		seenAZ := map[string]bool{}
		for _, sn := range subs {
			if seenAZ[sn.az] {
				return nil, errf(400, "InvalidConfigurationRequest", "A load balancer cannot be attached to multiple subnets in the same Availability Zone")
			}
			seenAZ[sn.az] = true
		}
		lb.attrs = defaultAttrs(nlbAttrs)
		lb.set("provisioning", "active")
		st.lbs[lb.arn] = lb
		return []X{E("LoadBalancers", st.lbX(lb))}, nil
	case "DescribeLoadBalancers":
		names, arns := c.strs("Names"), c.strs("LoadBalancerArns")
		var items []X
		for _, k := range sortedKeys(st.lbs) {
			lb := st.lbs[k]
			if (len(names) > 0 && !contains(names, lb.name)) || (len(arns) > 0 && !contains(arns, lb.arn)) {
				continue
			}
			st.tick(&lb.life)
			items = append(items, st.lbX(lb))
		}
		if (len(names) > 0 || len(arns) > 0) && len(items) == 0 {
			return nil, errf(400, "LoadBalancerNotFound", "One or more load balancers not found")
		}
		return []X{E("LoadBalancers", items...)}, nil
	case "DeleteLoadBalancer":
		arn := c.get("LoadBalancerArn")
		if st.lbs[arn] == nil {
			return nil, nil // idempotent in real ELB too
		}
		for _, s := range st.services {
			if contains(s.nlbs, arn) {
				return nil, errf(400, "ResourceInUse", "Load balancer '%s' cannot be deleted because it is currently associated with another service", arn)
			}
		}
		for k, l := range st.listeners {
			if l.lbArn == arn {
				delete(st.listeners, k)
			}
		}
		for _, g := range st.lbs[arn].sgs {
			st.lingering[g] = st.readyAfter
		}
		delete(st.lbs, arn)
		return nil, nil
	case "CreateTargetGroup":
		name := c.get("Name")
		for _, tg := range st.tgs {
			if tg.name == name {
				return nil, errf(400, "DuplicateTargetGroupName", "A target group with the same name '%s' exists, but with different settings", name)
			}
		}
		tg := &targetGroup{name: name, arn: c.arn("elasticloadbalancing", "targetgroup/"+name+"/"+st.id("", 16)),
			protocol: c.get("Protocol"), vpc: c.get("VpcId"), targetType: c.get("TargetType"), port: c.int32("Port"),
			targets: map[string]*target{}, tags: c.tagsFrom("Tags"), attrs: defaultAttrs(tcpTargetGroupAttrs), hc: defaultHealthCheck()}
		if err := tg.hc.apply(c); err != nil {
			return nil, err
		}
		st.tgs[tg.arn] = tg
		return []X{E("TargetGroups", st.tgX(tg))}, nil
	case "DescribeTargetGroups":
		names, arns := c.strs("Names"), c.strs("TargetGroupArns")
		var items []X
		for _, k := range sortedKeys(st.tgs) {
			tg := st.tgs[k]
			if (len(names) > 0 && !contains(names, tg.name)) || (len(arns) > 0 && !contains(arns, tg.arn)) {
				continue
			}
			items = append(items, st.tgX(tg))
		}
		if (len(names) > 0 || len(arns) > 0) && len(items) == 0 {
			return nil, errf(400, "TargetGroupNotFound", "One or more target groups not found")
		}
		return []X{E("TargetGroups", items...)}, nil
	case "DeleteTargetGroup":
		arn := c.get("TargetGroupArn")
		for _, l := range st.listeners {
			if l.tgArn == arn {
				return nil, errf(400, "ResourceInUse", "Target group '%s' is currently in use by a listener or a rule", arn)
			}
		}
		delete(st.tgs, arn)
		return nil, nil
	case "RegisterTargets", "DeregisterTargets":
		tg := st.tgs[c.get("TargetGroupArn")]
		if tg == nil {
			return nil, errf(400, "TargetGroupNotFound", "One or more target groups not found")
		}
		ts := c.structs("Targets")
		if action == "DeregisterTargets" {
			// DeregisterTargets: InvalidTarget for a target that is not registered
			// (https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DeregisterTargets.html).
			for _, t := range ts {
				if tg.targets[t["Id"]] == nil {
					return nil, errf(400, "InvalidTarget", "The following targets are not registered in target group: %s", t["Id"])
				}
			}
		}
		for _, t := range ts {
			port := tg.port
			if p, err := strconv.Atoi(t["Port"]); err == nil {
				port = int32(p)
			}
			if action == "RegisterTargets" {
				if cur := tg.targets[t["Id"]]; cur == nil || cur.state == "draining" {
					st.registerTarget(tg, t["Id"], port)
				}
			} else if tg.targets[t["Id"]].state != "draining" {
				st.deregisterTarget(tg, t["Id"])
			}
		}
		return nil, nil
	case "DescribeTargetHealth":
		tg := st.tgs[c.get("TargetGroupArn")]
		if tg == nil {
			return nil, errf(400, "TargetGroupNotFound", "One or more target groups not found")
		}
		st.tickTargets(tg)
		var items []X
		for _, ip := range sortedKeys(tg.targets) {
			items = append(items, targetHealthX(ip, tg.targets[ip]))
		}
		return []X{E("TargetHealthDescriptions", items...)}, nil
	case "ModifyTargetGroup":
		tg := st.tgs[c.get("TargetGroupArn")]
		if tg == nil {
			return nil, errf(400, "TargetGroupNotFound", "One or more target groups not found")
		}
		hc := tg.hc
		if err := hc.apply(c); err != nil {
			return nil, err
		}
		tg.hc = hc
		return []X{E("TargetGroups", st.tgX(tg))}, nil
	case "DescribeTargetGroupAttributes", "ModifyTargetGroupAttributes":
		tg := st.tgs[c.get("TargetGroupArn")]
		if tg == nil {
			return nil, errf(400, "TargetGroupNotFound", "One or more target groups not found")
		}
		if action == "ModifyTargetGroupAttributes" {
			if err := setAttrs(c, "Target group", tcpTargetGroupAttrs, tg.attrs); err != nil {
				return nil, err
			}
		}
		return []X{attrsX(tg.attrs)}, nil
	case "DescribeLoadBalancerAttributes", "ModifyLoadBalancerAttributes":
		lb := st.lbs[c.get("LoadBalancerArn")]
		if lb == nil {
			return nil, errf(400, "LoadBalancerNotFound", "One or more load balancers not found")
		}
		if action == "ModifyLoadBalancerAttributes" {
			if err := setAttrs(c, "Load balancer", nlbAttrs, lb.attrs); err != nil {
				return nil, err
			}
		}
		return []X{attrsX(lb.attrs)}, nil
	case "CreateListener":
		lbArn := c.get("LoadBalancerArn")
		if st.lbs[lbArn] == nil {
			return nil, errf(400, "LoadBalancerNotFound", "One or more load balancers not found")
		}
		port := c.int32("Port")
		for _, l := range st.listeners {
			if l.lbArn == lbArn && l.port == port {
				return nil, errf(400, "DuplicateListener", "A listener already exists on this port for this load balancer")
			}
		}
		l := &listener{arn: c.arn("elasticloadbalancing", "listener/net/x/"+st.id("", 16)), lbArn: lbArn, protocol: c.get("Protocol"), port: port, tags: c.tagsFrom("Tags")}
		for _, a := range c.structs("DefaultActions") {
			if st.tgs[a["TargetGroupArn"]] == nil {
				return nil, errf(400, "TargetGroupNotFound", "One or more target groups not found")
			}
			l.tgArn = a["TargetGroupArn"]
		}
		st.listeners[l.arn] = l
		return []X{E("Listeners", listenerX(l))}, nil
	case "DescribeListeners":
		lbArn := c.get("LoadBalancerArn")
		var items []X
		for _, k := range sortedKeys(st.listeners) {
			if l := st.listeners[k]; l.lbArn == lbArn {
				items = append(items, listenerX(l))
			}
		}
		return []X{E("Listeners", items...)}, nil
	case "ModifyListener":
		l := st.listeners[c.get("ListenerArn")]
		if l == nil {
			return nil, errf(400, "ListenerNotFound", "One or more listeners not found")
		}
		for _, a := range c.structs("DefaultActions") {
			l.tgArn = a["TargetGroupArn"]
		}
		return []X{E("Listeners", listenerX(l))}, nil
	case "DeleteListener":
		delete(st.listeners, c.get("ListenerArn"))
		return nil, nil
	case "DescribeTags":
		var items []X
		for _, arn := range c.strs("ResourceArns") {
			tags := st.elbTags(arn)
			if tags == nil {
				return nil, errf(400, "LoadBalancerNotFound", "resource %s not found", arn)
			}
			var ts []X
			for _, k := range sortedKeys(tags) {
				ts = append(ts, E("member", T("Key", k), T("Value", tags[k])))
			}
			items = append(items, E("member", T("ResourceArn", arn), E("Tags", ts...)))
		}
		return []X{E("TagDescriptions", items...)}, nil
	case "AddTags", "RemoveTags":
		for _, arn := range c.strs("ResourceArns") {
			tags := st.elbTags(arn)
			if tags == nil {
				return nil, errf(400, "LoadBalancerNotFound", "resource %s not found", arn)
			}
			if action == "AddTags" {
				for k, v := range c.tagsFrom("Tags") {
					tags[k] = v
				}
			} else {
				for _, k := range c.strs("TagKeys") {
					delete(tags, k)
				}
			}
		}
		return nil, nil
	}
	return nil, errf(400, "InvalidAction", "fakeaws: ELBv2 action %s not implemented", action)
}

func (st *state) elbTags(arn string) map[string]string {
	if lb := st.lbs[arn]; lb != nil {
		return lb.tags
	}
	if tg := st.tgs[arn]; tg != nil {
		return tg.tags
	}
	if l := st.listeners[arn]; l != nil {
		return l.tags
	}
	return nil
}

func (st *state) lbX(lb *loadBalancer) X {
	var azs []X
	for _, s := range lb.subnets {
		zone := ""
		if sn := st.subnets[s]; sn != nil {
			zone = sn.az
		}
		azs = append(azs, E("member", T("SubnetId", s), T("ZoneName", zone)))
	}
	return E("member", T("LoadBalancerArn", lb.arn), T("DNSName", lb.dns), T("LoadBalancerName", lb.name), T("Scheme", lb.scheme),
		T("VpcId", "vpc-0a1b2c3d4e5f60718"), E("State", T("Code", lb.status)), T("Type", lb.typ),
		Strs("SecurityGroups", "member", lb.sgs), E("AvailabilityZones", azs...))
}

func (st *state) tgX(tg *targetGroup) X {
	var lbs []string
	for _, l := range st.listeners {
		if l.tgArn == tg.arn {
			lbs = append(lbs, l.lbArn)
		}
	}
	x := E("member", T("TargetGroupArn", tg.arn), T("TargetGroupName", tg.name), T("Protocol", tg.protocol), T("Port", i2s(tg.port)),
		T("VpcId", tg.vpc), T("TargetType", tg.targetType), Strs("LoadBalancerArns", "member", lbs))
	x.kids = append(x.kids, tg.hc.xml()...)
	return x
}

func listenerX(l *listener) X {
	return E("member", T("ListenerArn", l.arn), T("LoadBalancerArn", l.lbArn), T("Port", i2s(l.port)), T("Protocol", l.protocol),
		E("DefaultActions", E("member", T("Type", "forward"), T("TargetGroupArn", l.tgArn))))
}
