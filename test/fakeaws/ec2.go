package fakeaws

import (
	"fmt"
	"strings"
)

// ec2Filters decodes Filter.N.Name / Filter.N.Value.M.
func ec2Filters(c *reqCtx) map[string][]string {
	out := map[string][]string{}
	for _, f := range c.structs("Filter") {
		out[f["Name"]] = fstrs(f, "Value")
	}
	return out
}

// matches applies EC2 filters: tag:KEY plus the plain attributes given in attrs.
func matches(filters map[string][]string, tags map[string]string, attrs map[string]string) bool {
	for name, vals := range filters {
		var have string
		var ok bool
		if strings.HasPrefix(name, "tag:") {
			have, ok = tags[strings.TrimPrefix(name, "tag:")]
		} else {
			have, ok = attrs[name]
		}
		if !ok || !contains(vals, have) {
			return false
		}
	}
	return true
}

func ec2TagSpec(c *reqCtx) map[string]string {
	out := map[string]string{}
	for _, ts := range c.structs("TagSpecification") {
		for _, t := range fstructs(ts, "Tag") {
			out[t["Key"]] = t["Value"]
		}
	}
	return out
}

func ruleKeys(c *reqCtx) []string {
	var keys []string
	for _, p := range c.structs("IpPermissions") {
		base := fmt.Sprintf("%s|%s|%s|", p["IpProtocol"], p["FromPort"], p["ToPort"])
		for _, g := range fstructs(p, "Groups") {
			keys = append(keys, base+g["GroupId"])
		}
		for _, r := range fstructs(p, "IpRanges") {
			keys = append(keys, base+r["CidrIp"])
		}
	}
	return keys
}

func (st *state) ec2(c *reqCtx, action string) (any, *apiError) {
	switch action {
	case "CreateSecurityGroup":
		name, vpc := c.get("GroupName"), c.get("VpcId")
		for _, g := range st.sgs {
			if g.name == name && g.vpc == vpc {
				return nil, errf(400, "InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, vpc)
			}
		}
		g := &secGroup{id: st.id("sg-", 17), name: name, vpc: vpc, desc: c.get("GroupDescription"), rules: map[string]bool{}, tags: ec2TagSpec(c)}
		st.sgs[g.id] = g
		return []X{T("groupId", g.id)}, nil
	case "DescribeSecurityGroups":
		ids := c.strs("GroupId")
		filters := ec2Filters(c)
		var items []X
		for _, k := range sortedKeys(st.sgs) {
			g := st.sgs[k]
			if len(ids) > 0 && !contains(ids, g.id) {
				continue
			}
			if !matches(filters, g.tags, map[string]string{"group-name": g.name, "vpc-id": g.vpc, "group-id": g.id}) {
				continue
			}
			items = append(items, sgX(g))
		}
		if len(ids) > 0 && len(items) < len(ids) {
			return nil, errf(400, "InvalidGroup.NotFound", "The security group '%s' does not exist", strings.Join(ids, ","))
		}
		return []X{E("securityGroupInfo", items...)}, nil
	case "AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress":
		g := st.sgs[c.get("GroupId")]
		if g == nil {
			return nil, errf(400, "InvalidGroup.NotFound", "The security group '%s' does not exist", c.get("GroupId"))
		}
		for _, k := range ruleKeys(c) {
			src := k[strings.LastIndex(k, "|")+1:]
			if strings.HasPrefix(src, "sg-") && st.sgs[src] == nil {
				return nil, errf(400, "InvalidGroup.NotFound", "The security group '%s' does not exist", src)
			}
			if action == "AuthorizeSecurityGroupIngress" {
				if g.rules[k] {
					return nil, errf(400, "InvalidPermission.Duplicate", "the specified rule %q already exists", k)
				}
				g.rules[k] = true
			} else {
				if !g.rules[k] {
					return nil, errf(400, "InvalidPermission.NotFound", "The specified rule does not exist in this security group.")
				}
				delete(g.rules, k)
			}
		}
		return []X{T("return", "true")}, nil
	case "DeleteSecurityGroup":
		id := c.get("GroupId")
		g := st.sgs[id]
		if g == nil {
			return nil, errf(400, "InvalidGroup.NotFound", "The security group '%s' does not exist", id)
		}
		inUse := false
		for _, in := range st.instances {
			inUse = inUse || contains(in.sgs, id)
		}
		for _, p := range st.proxies {
			inUse = inUse || contains(p.sgs, id)
		}
		for _, lb := range st.lbs {
			inUse = inUse || contains(lb.sgs, id)
		}
		if st.lingering[id] > 0 {
			st.lingering[id]--
			inUse = true
		}
		if inUse {
			return nil, errf(400, "DependencyViolation", "resource %s has a dependent object", id)
		}
		delete(st.sgs, id)
		return []X{T("return", "true")}, nil
	case "CreateTags", "DeleteTags":
		for _, id := range c.strs("ResourceId") {
			tags := st.ec2Tags(id)
			if tags == nil {
				return nil, errf(400, "InvalidID", "The ID '%s' is not valid", id)
			}
			if action == "DeleteTags" {
				deleteTags(tags, c.structs("Tag"))
				continue
			}
			for _, t := range c.structs("Tag") {
				tags[t["Key"]] = t["Value"]
			}
		}
		return []X{T("return", "true")}, nil
	case "DescribeTags":
		return st.describeTags(c)
	case "DescribeNetworkInterfaces":
		// The RDS Proxy's ENIs: that is where its current IPs are visible through the API.
		filters := ec2Filters(c)
		var items []X
		for _, k := range sortedKeys(st.proxies) {
			p := st.proxies[k]
			if p.status == "deleting" {
				continue
			}
			for i, ip := range p.ips {
				desc := "Network interface for DBProxy " + p.name
				eni := fmt.Sprintf("eni-%s%04d", strings.Repeat("0", 13), i+1)
				if !matches(filters, nil, map[string]string{"description": desc, "vpc-id": p.vpc, "status": "in-use"}) {
					continue
				}
				items = append(items, E("item", T("networkInterfaceId", eni), T("description", desc), T("privateIpAddress", ip),
					T("subnetId", p.subnets[i%len(p.subnets)]), T("vpcId", p.vpc), T("status", "in-use"), T("interfaceType", "interface"),
					T("requesterManaged", "true")))
			}
		}
		return []X{E("networkInterfaceSet", items...)}, nil
	case "DescribeSubnets":
		return st.describeSubnets(c)
	case "DescribeVpcEndpointServices":
		return st.describeVpcEndpointServices(c)
	default:
		if out, err, ok := st.privateLink(c, action); ok {
			return out, err
		}
	}
	return nil, errf(400, "InvalidAction", "fakeaws: EC2 action %s not implemented", action)
}

func (st *state) ec2Tags(id string) map[string]string {
	if g := st.sgs[id]; g != nil {
		return g.tags
	}
	if s := st.services[id]; s != nil {
		return s.tags
	}
	if e := st.endpoints[id]; e != nil {
		return e.tags
	}
	return nil
}

func sgX(g *secGroup) X {
	var perms []X
	for _, k := range sortedKeys(g.rules) {
		p := strings.Split(k, "|")
		src := T("cidrIp", p[3])
		wrap := "ipRanges"
		if strings.HasPrefix(p[3], "sg-") {
			src, wrap = T("groupId", p[3]), "groups"
		}
		perms = append(perms, E("item", T("ipProtocol", p[0]), T("fromPort", p[1]), T("toPort", p[2]), E(wrap, E("item", src))))
	}
	return E("item", T("groupId", g.id), T("groupName", g.name), T("groupDescription", g.desc), T("vpcId", g.vpc),
		E("ipPermissions", perms...), E("tagSet", tagItems(g.tags, "key", "value")...))
}

func groupSet(ids []string) X {
	x := E("groupSet")
	for _, id := range ids {
		x.kids = append(x.kids, E("item", T("groupId", id)))
	}
	return x
}
