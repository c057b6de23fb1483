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
		if st.subnetGroups[st.instKey(c.region, name)] != nil {
			return nil, errf(400, "DBSubnetGroupAlreadyExists", "DB subnet group %s already exists", name)
		}
		subs := c.strs("SubnetIds")
		if len(subs) < 2 {
			return nil, errf(400, "DBSubnetGroupDoesNotCoverEnoughAZs", "DB Subnet Group doesn't meet availability zone coverage requirement.")
		}
		g := &subnetGroup{name: name, region: c.region, desc: c.get("DBSubnetGroupDescription"), arn: c.arn("rds", "subgrp:"+name),
			vpc: "vpc-0a1b2c3d4e5f60718", subnets: subs, tags: c.tagsFrom("Tags")}
		st.subnetGroups[st.instKey(c.region, name)] = g
		return []X{st.subnetGroupX(g, "DBSubnetGroup")}, nil
	case "DescribeDBSubnetGroups":
		name := strings.ToLower(c.get("DBSubnetGroupName"))
		var items []X
		for _, g := range st.subnetGroups {
			if (name == "" || g.name == name) && g.region == c.region {
				items = append(items, st.subnetGroupX(g, "DBSubnetGroup"))
			}
		}
		if name != "" && len(items) == 0 {
			return nil, errf(404, "DBSubnetGroupNotFoundFault", "DB subnet group '%s' not found", name)
		}
		return []X{E("DBSubnetGroups", items...)}, nil
	case "ModifyDBSubnetGroup":
		g := st.subnetGroups[st.instKey(c.region, c.get("DBSubnetGroupName"))]
		if g == nil {
			return nil, errf(404, "DBSubnetGroupNotFoundFault", "DB subnet group not found")
		}
		g.subnets = c.strs("SubnetIds")
		return []X{st.subnetGroupX(g, "DBSubnetGroup")}, nil
	case "DeleteDBSubnetGroup":
		name := strings.ToLower(c.get("DBSubnetGroupName"))
		key := st.instKey(c.region, name)
		if st.subnetGroups[key] == nil {
			return nil, errf(404, "DBSubnetGroupNotFoundFault", "DB subnet group '%s' not found", name)
		}
		for _, in := range st.instances {
			if in.subnetGroup == key {
				return nil, errf(400, "InvalidDBSubnetGroupStateFault", "Cannot delete the subnet group '%s' because at least one database instance: %s is still using it.", name, in.id)
			}
		}
		delete(st.subnetGroups, key)
		return nil, nil
	case "CreateDBInstance":
		return st.createInstance(c)
	case "CreateDBInstanceReadReplica":
		return st.createReadReplica(c)
	case "DescribeDBInstances":
		id := strings.ToLower(c.get("DBInstanceIdentifier"))
		var items []X
		for _, k := range sortedKeys(st.instances) {
			in := st.instances[k]
			// Each Region has its own instances (cross-Region read replicas live in theirs).
			if (id != "" && in.id != id) || in.region != c.region {
				continue
			}
			st.tick(&in.life)
			if in.status == "deleted" {
				delete(st.instances, k)
				continue
			}
			items = append(items, st.instanceX(in))
			if in.paramApply == "applying" {
				in.paramApply = "in-sync"
			}
		}
		if id != "" && len(items) == 0 {
			return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", id)
		}
		return []X{E("DBInstances", items...)}, nil
	case "ModifyDBInstance":
		in := st.instances[st.instKey(c.region, c.get("DBInstanceIdentifier"))]
		if in == nil {
			return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", c.get("DBInstanceIdentifier"))
		}
		// storage-optimization is a usable state: other modifications go through, storage ones
		// are refused until it ends (https://repost.aws/knowledge-center/rds-autoscaling-low-free-storage,
		// "Working with storage for Amazon RDS DB instances").
		if in.status != "available" && in.status != "storage-optimization" {
			return nil, errf(400, "InvalidDBInstanceState", "Database instance is not in available state (%s).", in.status)
		}
		storageChange := c.has("AllocatedStorage") && c.int32("AllocatedStorage") != in.storage
		if storageChange && in.status == "storage-optimization" {
			return nil, errf(400, "InvalidParameterCombination", "You can't currently modify the storage of this DB instance because the previous storage change is being optimized.")
		}
		alloc, maxSt := in.storage, in.maxStorage
		if c.has("AllocatedStorage") {
			alloc = c.int32("AllocatedStorage")
		}
		if alloc < in.storage {
			return nil, errf(400, "InvalidParameterValue", "Invalid storage size for engine name %s: allocated storage can only grow (from %d to %d).", in.engine, in.storage, alloc)
		}
		if c.has("MaxAllocatedStorage") {
			maxSt = c.int32("MaxAllocatedStorage")
		}
		maxSt, aerr := checkMaxStorage(in.engine, alloc, maxSt, c.has("MaxAllocatedStorage") || in.maxStorage > 0)
		if aerr != nil {
			return nil, aerr
		}
		if pg := c.get("DBParameterGroupName"); pg != "" && pg != in.paramGroup {
			if aerr := st.useParamGroup(in, pg); aerr != nil {
				return nil, aerr
			}
		}
		if v := c.get("DBInstanceClass"); v != "" {
			in.class = v
		}
		in.storage, in.maxStorage = alloc, maxSt
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
		if storageChange {
			// After a storage change the instance optimizes its volume, for hours; it is fully
			// usable meanwhile (DescribeDBInstances shows storage-optimization).
			in.then = &lifeStep{status: "available", polls: storageOptimizationPolls}
			in.next = "storage-optimization"
		}
		return []X{st.instanceX(in)}, nil
	case "DeleteDBInstance":
		in := st.instances[st.instKey(c.region, c.get("DBInstanceIdentifier"))]
		if in == nil {
			return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", c.get("DBInstanceIdentifier"))
		}
		if in.delProt {
			return nil, errf(400, "InvalidParameterCombination", "Cannot delete protected DB Instance, please disable deletion protection and try again.")
		}
		if !c.boolean("SkipFinalSnapshot") && c.get("FinalDBSnapshotIdentifier") == "" {
			return nil, errf(400, "InvalidParameterCombination", "FinalDBSnapshotIdentifier is required unless SkipFinalSnapshot is specified.")
		}
		if aerr := st.deleteReplicaRules(c, in); aerr != nil {
			return nil, aerr
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
			if aerr := st.checkProxyAuth(a); aerr != nil {
				return nil, aerr
			}
			p.auth = a
		}
		if c.has("DefaultAuthScheme") {
			scheme, aerr := defaultAuthScheme(c.get("DefaultAuthScheme"), len(p.auth))
			if aerr != nil {
				return nil, aerr
			}
			p.defaultAuthScheme = scheme
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
			if in.status != "available" && in.status != "storage-optimization" {
				return nil, errf(400, "InvalidDBInstanceState", "DBInstance %s is %s.", id, in.status)
			}
			if contains(p.targets, id) {
				return nil, errf(400, "DBProxyTargetAlreadyRegisteredFault", "The proxy is already associated with the specified RDS DB instance.")
			}
			p.targets = append(p.targets, id)
			// A new target is REGISTERING while the proxy first connects to it
			// (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_TargetHealth.html).
			p.registering[id] = st.readyAfter
			out = append(out, st.targetX(p, in))
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
				out = append(out, st.targetX(p, in))
				if p.registering[id] > 0 {
					p.registering[id]--
				}
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
	case "DescribeDBEngineVersions", "CreateDBParameterGroup", "DescribeDBParameterGroups", "DescribeDBParameters",
		"ModifyDBParameterGroup", "ResetDBParameterGroup", "DeleteDBParameterGroup":
		return st.paramGroupAPI(c, action)
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
	if st.instances[st.instKey(c.region, id)] != nil {
		return nil, errf(400, "DBInstanceAlreadyExists", "DB instance already exists")
	}
	sg := st.subnetGroups[st.instKey(c.region, c.get("DBSubnetGroupName"))]
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
	maxSt, aerr := checkMaxStorage(c.get("Engine"), c.int32("AllocatedStorage"), c.int32("MaxAllocatedStorage"), c.has("MaxAllocatedStorage"))
	if aerr != nil {
		return nil, aerr
	}
	kms := ""
	if k := c.get("KmsKeyId"); k != "" {
		// RDS takes a key id, key ARN, alias name or alias ARN and reports the key ARN
		// (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstance.html, KmsKeyId).
		key := st.kmsKey(k)
		if key == nil {
			return nil, errf(400, "KMSKeyNotAccessibleFault", "The specified KMS key %s does not exist or is not accessible.", k)
		}
		kms = key.arn
	}
	pg, aerr := st.paramGroupFor(c.get("DBParameterGroupName"), c.get("Engine"), c.get("EngineVersion"))
	if aerr != nil {
		return nil, aerr
	}
	in := &dbInstance{id: id, region: c.region, arn: c.arn("rds", "db:"+id), resID: "db-" + strings.ToUpper(st.id("", 26)),
		class: c.get("DBInstanceClass"), engine: c.get("Engine"), version: c.get("EngineVersion"),
		masterUser: c.get("MasterUsername"), subnetGroup: st.instKey(c.region, sg.name), kms: kms, paramGroup: pg, paramApply: "in-sync",
		storage: c.int32("AllocatedStorage"), maxStorage: maxSt, backup: c.int32("BackupRetentionPeriod"),
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
	st.instances[st.instKey(c.region, id)] = in
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
	scheme, aerr := defaultAuthScheme(c.get("DefaultAuthScheme"), len(auth))
	if aerr != nil {
		return nil, aerr
	}
	if aerr := st.checkProxyAuth(auth); aerr != nil {
		return nil, aerr
	}
	subs := c.strs("VpcSubnetIds")
	p := &dbProxy{name: name, arn: c.arn("rds", "db-proxy:prx-"+st.id("", 17)), engineFamily: c.get("EngineFamily"),
		roleArn: c.get("RoleArn"), requireTLS: c.boolean("RequireTLS"), auth: auth, subnets: subs, defaultAuthScheme: scheme,
		registering: map[string]int{},
		sgs:         c.strs("VpcSecurityGroupIds"), tags: c.tagsFrom("Tags"), vpc: "vpc-0a1b2c3d4e5f60718",
		endpoint: fmt.Sprintf("%s.proxy-c%s.%s.rds.amazonaws.com", name, st.id("", 10), c.region)}
	for i := range subs {
		st.n++
		p.ips = append(p.ips, fmt.Sprintf("10.0.%d.%d", i+1, 10+st.n%200))
	}
	p.set("creating", "available")
	st.proxies[name] = p
	return []X{E("DBProxy", st.proxyX(p).kids...)}, nil
}

// defaultAuthScheme checks DefaultAuthScheme: NONE (the default) or IAM_AUTH; without IAM_AUTH
// the Auth list is required (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBProxy.html).
func defaultAuthScheme(v string, nAuth int) (string, *apiError) {
	switch v {
	case "", "NONE":
		if nAuth == 0 {
			return "", errf(400, "InvalidParameterValue", "Auth must be specified when DefaultAuthScheme is NONE.")
		}
		return "NONE", nil
	case "IAM_AUTH":
		return v, nil
	}
	return "", errf(400, "InvalidParameterValue", "Invalid DefaultAuthScheme %q: valid values are NONE and IAM_AUTH.", v)
}

// checkProxyAuth checks each UserAuthConfig: AuthScheme SECRETS with an existing secret, IAMAuth
// DISABLED or REQUIRED (ENABLED is for SQL Server only)
// (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_UserAuthConfig.html).
func (st *state) checkProxyAuth(auth []fields) *apiError {
	for _, a := range auth {
		if a["AuthScheme"] != "" && a["AuthScheme"] != "SECRETS" {
			return errf(400, "InvalidParameterValue", "Invalid AuthScheme %q: the only valid value is SECRETS.", a["AuthScheme"])
		}
		switch a["IAMAuth"] {
		case "", "DISABLED", "REQUIRED":
		default:
			return errf(400, "InvalidParameterValue", "Invalid IAMAuth %q for this engine family.", a["IAMAuth"])
		}
		if st.secretByARN(a["SecretArn"]) == nil {
			return errf(400, "InvalidParameterValue", "Secret %s not found or not accessible.", a["SecretArn"])
		}
	}
	return nil
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
	for _, g := range st.paramGroups {
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
	if in.paramGroup != "" {
		kids = append(kids, E("DBParameterGroups", E("DBParameterGroup", T("DBParameterGroupName", in.paramGroup), T("ParameterApplyStatus", in.paramApply))))
	}
	if g := st.subnetGroups[in.subnetGroup]; g != nil {
		kids = append(kids, st.subnetGroupX(g, "DBSubnetGroup"))
	}
	if in.managed {
		kids = append(kids, E("MasterUserSecret", T("SecretArn", in.secretArn), T("SecretStatus", "active")))
	}
	if in.az != "" {
		kids = append(kids, T("AvailabilityZone", in.az))
	}
	kids = append(kids, st.replicationX(in)...)
	return E("DBInstance", kids...)
}

func (st *state) proxyX(p *dbProxy) X {
	var auth []X
	for _, a := range p.auth {
		auth = append(auth, E("member", T("AuthScheme", a["AuthScheme"]), T("SecretArn", a["SecretArn"]), T("IAMAuth", a["IAMAuth"]), T("Description", a["Description"])))
	}
	return E("member", T("DBProxyName", p.name), T("DBProxyArn", p.arn), T("Status", p.status), T("EngineFamily", p.engineFamily),
		T("VpcId", p.vpc), Strs("VpcSecurityGroupIds", "member", p.sgs), Strs("VpcSubnetIds", "member", p.subnets),
		E("Auth", auth...), T("RoleArn", p.roleArn), T("Endpoint", p.endpoint), T("RequireTLS", b2s(p.requireTLS)),
		T("DefaultAuthScheme", scheme(p)))
}

func (st *state) targetX(p *dbProxy, in *dbInstance) X {
	health := []X{T("State", "REGISTERING")}
	if p.registering[in.id] == 0 {
		state, reason, desc := st.targetHealth(p, in)
		health = []X{T("State", state)}
		if reason != "" {
			health = append(health, T("Reason", reason), T("Description", desc))
		}
	}
	return E("member", T("TargetArn", in.arn), T("Endpoint", in.endpoint), T("TrackedClusterId", ""), T("RdsResourceId", in.id),
		T("Port", i2s(in.port)), T("Type", "RDS_INSTANCE"), E("TargetHealth", health...))
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
