package fakeaws

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

func (st *state) rds(c *reqCtx, action string) (any, *apiError) {
	switch action {
	case "CreateDBSubnetGroup":
		name := strings.ToLower(c.get("DBSubnetGroupName"))
		if st.subnetGroups[name] != nil {
			return nil, errf(400, "DBSubnetGroupAlreadyExists", "DB subnet group %s already exists", name)
		}
		subs := c.strs("SubnetIds")
		if len(subs) < 2 {
			return nil, errf(400, "DBSubnetGroupDoesNotCoverEnoughAZs", "DB Subnet Group doesn't meet availability zone coverage requirement.")
		}
		g := &subnetGroup{name: name, desc: c.get("DBSubnetGroupDescription"), arn: c.arn("rds", "subgrp:"+name),
			vpc: "vpc-0a1b2c3d4e5f60718", subnets: subs, tags: c.tagsFrom("Tags")}
		st.subnetGroups[name] = g
		return []X{st.subnetGroupX(g, "DBSubnetGroup")}, nil
	case "DescribeDBSubnetGroups":
		name := strings.ToLower(c.get("DBSubnetGroupName"))
		var items []X
		for _, g := range st.subnetGroups {
			if name == "" || g.name == name {
				items = append(items, st.subnetGroupX(g, "DBSubnetGroup"))
			}
		}
		if name != "" && len(items) == 0 {
			return nil, errf(404, "DBSubnetGroupNotFoundFault", "DB subnet group '%s' not found", name)
		}
		return []X{E("DBSubnetGroups", items...)}, nil
	case "ModifyDBSubnetGroup":
		g := st.subnetGroups[strings.ToLower(c.get("DBSubnetGroupName"))]
		if g == nil {
			return nil, errf(404, "DBSubnetGroupNotFoundFault", "DB subnet group not found")
		}
		g.subnets = c.strs("SubnetIds")
		return []X{st.subnetGroupX(g, "DBSubnetGroup")}, nil
	case "DeleteDBSubnetGroup":
		name := strings.ToLower(c.get("DBSubnetGroupName"))
		if st.subnetGroups[name] == nil {
			return nil, errf(404, "DBSubnetGroupNotFoundFault", "DB subnet group '%s' not found", name)
		}
		for _, in := range st.instances {
			if in.subnetGroup == name {
				return nil, errf(400, "InvalidDBSubnetGroupStateFault", "Cannot delete the subnet group '%s' because at least one database instance: %s is still using it.", name, in.id)
			}
		}
		delete(st.subnetGroups, name)
		return nil, nil
	case "CreateDBInstance":
		return st.createInstance(c)
	case "DescribeDBInstances":
		id := strings.ToLower(c.get("DBInstanceIdentifier"))
		var items []X
		for _, k := range sortedKeys(st.instances) {
			in := st.instances[k]
			if id != "" && in.id != id {
				continue
			}
			st.tick(&in.life)
			if in.status == "deleted" {
				delete(st.instances, k)
				continue
			}
			items = append(items, st.instanceX(in))
		}
		if id != "" && len(items) == 0 {
			return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", id)
		}
		return []X{E("DBInstances", items...)}, nil
	case "ModifyDBInstance":
		in := st.instances[strings.ToLower(c.get("DBInstanceIdentifier"))]
		if in == nil {
			return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", c.get("DBInstanceIdentifier"))
		}
		if in.status != "available" {
			return nil, errf(400, "InvalidDBInstanceState", "Database instance is not in available state (%s).", in.status)
		}
		if v := c.get("DBInstanceClass"); v != "" {
			in.class = v
		}
		if c.has("AllocatedStorage") {
			in.storage = c.int32("AllocatedStorage")
		}
		if c.has("MaxAllocatedStorage") {
			in.maxStorage = c.int32("MaxAllocatedStorage")
		}
		if c.has("MultiAZ") {
			in.multiAZ = c.boolean("MultiAZ")
		}
		if c.has("BackupRetentionPeriod") {
			in.backup = c.int32("BackupRetentionPeriod")
		}
		if c.has("DeletionProtection") {
			in.delProt = c.boolean("DeletionProtection")
		}
		if v := c.get("EngineVersion"); v != "" {
			in.version = v
		}
		if sgs := c.strs("VpcSecurityGroupIds"); len(sgs) > 0 {
			in.sgs = sgs
		}
		in.set("modifying", "available")
		return []X{st.instanceX(in)}, nil
	case "DeleteDBInstance":
		in := st.instances[strings.ToLower(c.get("DBInstanceIdentifier"))]
		if in == nil {
			return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", c.get("DBInstanceIdentifier"))
		}
		if in.delProt {
			return nil, errf(400, "InvalidParameterCombination", "Cannot delete protected DB Instance, please disable deletion protection and try again.")
		}
		if !c.boolean("SkipFinalSnapshot") && c.get("FinalDBSnapshotIdentifier") == "" {
			return nil, errf(400, "InvalidParameterCombination", "FinalDBSnapshotIdentifier is required unless SkipFinalSnapshot is specified.")
		}
		for _, p := range st.proxies {
			p.targets = remove(p.targets, in.id)
		}
		in.set("deleting", "deleted")
		return []X{st.instanceX(in)}, nil
	case "CreateDBProxy":
		return st.createProxy(c)
	case "DescribeDBProxies":
		name := c.get("DBProxyName")
		var items []X
		for _, k := range sortedKeys(st.proxies) {
			p := st.proxies[k]
			if name != "" && p.name != name {
				continue
			}
			st.tick(&p.life)
			if p.status == "deleted" {
				delete(st.proxies, k)
				continue
			}
			items = append(items, st.proxyX(p))
		}
		if name != "" && len(items) == 0 {
			return nil, errf(404, "DBProxyNotFoundFault", "DBProxy %s not found.", name)
		}
		return []X{Items("DBProxies", "member", items)}, nil
	case "ModifyDBProxy":
		p := st.proxies[c.get("DBProxyName")]
		if p == nil {
			return nil, errf(404, "DBProxyNotFoundFault", "DBProxy %s not found.", c.get("DBProxyName"))
		}
		if v := c.get("RoleArn"); v != "" {
			if aerr := st.checkRole(v); aerr != nil {
				return nil, aerr
			}
			p.roleArn = v
		}
		if a := c.structs("Auth"); len(a) > 0 {
			p.auth = a
		}
		if c.has("RequireTLS") {
			p.requireTLS = c.boolean("RequireTLS")
		}
		if sgs := c.strs("SecurityGroups"); len(sgs) > 0 {
			p.sgs = sgs
		}
		p.set("modifying", "available")
		return []X{E("DBProxy", st.proxyX(p).kids...)}, nil
	case "DeleteDBProxy":
		p := st.proxies[c.get("DBProxyName")]
		if p == nil {
			return nil, errf(404, "DBProxyNotFoundFault", "DBProxy %s not found.", c.get("DBProxyName"))
		}
		p.targets = nil
		p.set("deleting", "deleted")
		return []X{E("DBProxy", st.proxyX(p).kids...)}, nil
	case "RegisterDBProxyTargets":
		p := st.proxies[c.get("DBProxyName")]
		if p == nil {
			return nil, errf(404, "DBProxyNotFoundFault", "DBProxy %s not found.", c.get("DBProxyName"))
		}
		if p.status != "available" {
			return nil, errf(400, "InvalidDBProxyStateFault", "DBProxy %s is in state %s.", p.name, p.status)
		}
		var out []X
		for _, id := range c.strs("DBInstanceIdentifiers") {
			in := st.instances[id]
			if in == nil {
				return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", id)
			}
			if in.status != "available" {
				return nil, errf(400, "InvalidDBInstanceState", "DBInstance %s is %s.", id, in.status)
			}
			if contains(p.targets, id) {
				return nil, errf(400, "DBProxyTargetAlreadyRegisteredFault", "The proxy is already associated with the specified RDS DB instance.")
			}
			p.targets = append(p.targets, id)
			out = append(out, st.targetX(in))
		}
		return []X{Items("DBProxyTargets", "member", out)}, nil
	case "DescribeDBProxyTargets":
		p := st.proxies[c.get("DBProxyName")]
		if p == nil {
			return nil, errf(404, "DBProxyNotFoundFault", "DBProxy %s not found.", c.get("DBProxyName"))
		}
		var out []X
		for _, id := range p.targets {
			if in := st.instances[id]; in != nil {
				out = append(out, st.targetX(in))
			}
		}
		return []X{Items("Targets", "member", out)}, nil
	case "DeregisterDBProxyTargets":
		p := st.proxies[c.get("DBProxyName")]
		if p == nil {
			return nil, errf(404, "DBProxyNotFoundFault", "DBProxy %s not found.", c.get("DBProxyName"))
		}
		for _, id := range c.strs("DBInstanceIdentifiers") {
			p.targets = remove(p.targets, id)
		}
		return nil, nil
	case "ListTagsForResource":
		tags, aerr := st.rdsTags(c.get("ResourceName"))
		if aerr != nil {
			return nil, aerr
		}
		return []X{rdsTagList(*tags)}, nil
	case "AddTagsToResource":
		tags, aerr := st.rdsTags(c.get("ResourceName"))
		if aerr != nil {
			return nil, aerr
		}
		for k, v := range c.tagsFrom("Tags") {
			(*tags)[k] = v
		}
		return nil, nil
	case "RemoveTagsFromResource":
		tags, aerr := st.rdsTags(c.get("ResourceName"))
		if aerr != nil {
			return nil, aerr
		}
		for _, k := range c.strs("TagKeys") {
			delete(*tags, k)
		}
		return nil, nil
	}
	return nil, errf(400, "InvalidAction", "fakeaws: RDS action %s not implemented", action)
}

func (st *state) createInstance(c *reqCtx) (any, *apiError) {
	id := strings.ToLower(c.get("DBInstanceIdentifier"))
	if st.instances[id] != nil {
		return nil, errf(400, "DBInstanceAlreadyExists", "DB instance already exists")
	}
	sg := st.subnetGroups[strings.ToLower(c.get("DBSubnetGroupName"))]
	if sg == nil {
		return nil, errf(404, "DBSubnetGroupNotFoundFault", "DBSubnetGroup %s not found.", c.get("DBSubnetGroupName"))
	}
	sgs := c.strs("VpcSecurityGroupIds")
	for _, g := range sgs {
		if st.sgs[g] == nil {
			return nil, errf(400, "InvalidParameterValue", "Invalid security group , groupId= %s, groupName=.", g)
		}
	}
	managed := c.boolean("ManageMasterUserPassword")
	if !managed && c.get("MasterUserPassword") == "" {
		return nil, errf(400, "InvalidParameterValue", "The parameter MasterUserPassword must be provided and must not be blank.")
	}
	port := int32(5432)
	if c.get("Engine") == "mysql" {
		port = 3306
	}
	in := &dbInstance{id: id, arn: c.arn("rds", "db:"+id), resID: "db-" + strings.ToUpper(st.id("", 26)),
		class: c.get("DBInstanceClass"), engine: c.get("Engine"), version: c.get("EngineVersion"),
		masterUser: c.get("MasterUsername"), subnetGroup: sg.name, kms: c.get("KmsKeyId"),
		storage: c.int32("AllocatedStorage"), maxStorage: c.int32("MaxAllocatedStorage"), backup: c.int32("BackupRetentionPeriod"),
		multiAZ: c.boolean("MultiAZ"), delProt: c.boolean("DeletionProtection"), iamAuth: c.boolean("EnableIAMDatabaseAuthentication"),
		encrypted: c.boolean("StorageEncrypted"), managed: managed, sgs: sgs, tags: c.tagsFrom("Tags"), port: port,
		endpoint: fmt.Sprintf("%s.c%s.%s.rds.amazonaws.com", id, st.id("", 10), c.region)}
	if in.encrypted && in.kms == "" {
		in.kms = c.arn("kms", "key/aws-rds-default")
	}
	if managed {
		in.secretArn = c.arn("secretsmanager", "secret:rds!db-"+randHex(4)+"-"+randHex(3))
		st.secrets["rds!"+id] = &secret{name: "rds!" + id, arn: in.secretArn, tags: map[string]string{}}
	}
	in.set("creating", "available")
	st.instances[id] = in
	return []X{st.instanceX(in)}, nil
}

func (st *state) checkRole(arn string) *apiError {
	for _, r := range st.roles {
		if r.arn == arn {
			if !strings.Contains(r.trust, "rds.amazonaws.com") {
				return errf(400, "InvalidParameterValue", "IAM role %s cannot be assumed by rds.amazonaws.com", arn)
			}
			return nil
		}
	}
	return errf(400, "InvalidParameterValue", "IAM role ARN value is invalid or does not include the required permissions for: %s", arn)
}

func (st *state) createProxy(c *reqCtx) (any, *apiError) {
	name := c.get("DBProxyName")
	if st.proxies[name] != nil {
		return nil, errf(400, "DBProxyAlreadyExistsFault", "DB proxy %s already exists.", name)
	}
	if aerr := st.checkRole(c.get("RoleArn")); aerr != nil {
		return nil, aerr
	}
	auth := c.structs("Auth")
	if len(auth) == 0 {
		return nil, errf(400, "InvalidParameterValue", "Auth is required")
	}
	for _, a := range auth {
		found := false
		for _, s := range st.secrets {
			if s.arn == a["SecretArn"] {
				found = true
			}
		}
		if !found {
			return nil, errf(400, "InvalidParameterValue", "Secret %s not found or not accessible.", a["SecretArn"])
		}
	}
	subs := c.strs("VpcSubnetIds")
	p := &dbProxy{name: name, arn: c.arn("rds", "db-proxy:prx-"+st.id("", 17)), engineFamily: c.get("EngineFamily"),
		roleArn: c.get("RoleArn"), requireTLS: c.boolean("RequireTLS"), auth: auth, subnets: subs,
		sgs: c.strs("VpcSecurityGroupIds"), tags: c.tagsFrom("Tags"), vpc: "vpc-0a1b2c3d4e5f60718",
		endpoint: fmt.Sprintf("%s.proxy-c%s.%s.rds.amazonaws.com", name, st.id("", 10), c.region)}
	for i := range subs {
		st.n++
		p.ips = append(p.ips, fmt.Sprintf("10.0.%d.%d", i+1, 10+st.n%200))
	}
	p.set("creating", "available")
	st.proxies[name] = p
	return []X{E("DBProxy", st.proxyX(p).kids...)}, nil
}

func (st *state) rdsTags(arn string) (*map[string]string, *apiError) {
	for _, in := range st.instances {
		if in.arn == arn {
			return &in.tags, nil
		}
	}
	for _, p := range st.proxies {
		if p.arn == arn {
			return &p.tags, nil
		}
	}
	for _, g := range st.subnetGroups {
		if g.arn == arn {
			return &g.tags, nil
		}
	}
	return nil, errf(404, "DBInstanceNotFound", "Resource %s not found", arn)
}

func rdsTagList(tags map[string]string) X {
	var items []X
	for _, k := range sortedKeys(tags) {
		items = append(items, E("Tag", T("Key", k), T("Value", tags[k])))
	}
	return E("TagList", items...)
}

func (st *state) subnetGroupX(g *subnetGroup, name string) X {
	var subs []X
	for _, s := range g.subnets {
		subs = append(subs, E("Subnet", T("SubnetIdentifier", s), T("SubnetStatus", "Active")))
	}
	return E(name, T("DBSubnetGroupName", g.name), T("DBSubnetGroupDescription", g.desc), T("VpcId", g.vpc),
		T("SubnetGroupStatus", "Complete"), E("Subnets", subs...), T("DBSubnetGroupArn", g.arn))
}

func (st *state) instanceX(in *dbInstance) X {
	var sgs []X
	for _, g := range in.sgs {
		sgs = append(sgs, E("VpcSecurityGroupMembership", T("VpcSecurityGroupId", g), T("Status", "active")))
	}
	kids := []X{T("DBInstanceIdentifier", in.id), T("DBInstanceClass", in.class), T("Engine", in.engine),
		T("EngineVersion", in.version), T("DBInstanceStatus", in.status), T("MasterUsername", in.masterUser),
		E("Endpoint", T("Address", in.endpoint), T("Port", i2s(in.port))),
		T("AllocatedStorage", i2s(in.storage)), T("BackupRetentionPeriod", i2s(in.backup)), T("MultiAZ", b2s(in.multiAZ)),
		T("DeletionProtection", b2s(in.delProt)), T("StorageEncrypted", b2s(in.encrypted)),
		T("IAMDatabaseAuthenticationEnabled", b2s(in.iamAuth)), T("DbiResourceId", in.resID), T("DBInstanceArn", in.arn),
		E("VpcSecurityGroups", sgs...), rdsTagList(in.tags)}
	if in.maxStorage > 0 {
		kids = append(kids, T("MaxAllocatedStorage", i2s(in.maxStorage)))
	}
	if in.kms != "" {
		kids = append(kids, T("KmsKeyId", in.kms))
	}
	if g := st.subnetGroups[in.subnetGroup]; g != nil {
		kids = append(kids, st.subnetGroupX(g, "DBSubnetGroup"))
	}
	if in.managed {
		kids = append(kids, E("MasterUserSecret", T("SecretArn", in.secretArn), T("SecretStatus", "active")))
	}
	return E("DBInstance", kids...)
}

func (st *state) proxyX(p *dbProxy) X {
	var auth []X
	for _, a := range p.auth {
		auth = append(auth, E("member", T("AuthScheme", a["AuthScheme"]), T("SecretArn", a["SecretArn"]), T("IAMAuth", a["IAMAuth"]), T("Description", a["Description"])))
	}
	return E("member", T("DBProxyName", p.name), T("DBProxyArn", p.arn), T("Status", p.status), T("EngineFamily", p.engineFamily),
		T("VpcId", p.vpc), Strs("VpcSecurityGroupIds", "member", p.sgs), Strs("VpcSubnetIds", "member", p.subnets),
		E("Auth", auth...), T("RoleArn", p.roleArn), T("Endpoint", p.endpoint), T("RequireTLS", b2s(p.requireTLS)))
}

func (st *state) targetX(in *dbInstance) X {
	return E("member", T("TargetArn", in.arn), T("Endpoint", in.endpoint), T("TrackedClusterId", ""), T("RdsResourceId", in.id),
		T("Port", i2s(in.port)), T("Type", "RDS_INSTANCE"), E("TargetHealth", T("State", "AVAILABLE")))
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func remove(list []string, s string) []string {
	var out []string
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// jsonCanon renders a JSON document canonically, for comparing policies.
func jsonCanon(s string) string {
	var v any
	if json.Unmarshal([]byte(s), &v) != nil {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}
