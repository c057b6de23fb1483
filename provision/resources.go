package provision

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2t "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbt "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamt "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdst "github.com/aws/aws-sdk-go-v2/service/rds/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smt "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
)

// handler knows one kind of resource: how to observe it, what the spec wants, and how to act.
type handler interface {
	kind() string
	immutable() []string
	observe(ctx context.Context, e *env) ([]*State, error)
	desired(e *env) []*State
	create(ctx context.Context, e *env, d *State) error
	update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error
	delete(ctx context.Context, e *env, o *State) error
	ready(o *State) (bool, error)
	export(e *env, o *State)
}

// normalizer adjusts desired to observed where AWS legitimately moves a value on its own
// (storage autoscaling, automatic minor version upgrades).
type normalizer interface{ normalize(d, o *State) }

const (
	kindSG          = "security-group"
	kindSubnetGroup = "db-subnet-group"
	kindSecret      = "secret"
	kindInstance    = "db-instance"
	kindRole        = "iam-role"
	kindProxy       = "db-proxy"
	kindProxyTarget = "db-proxy-target"
	kindLB          = "load-balancer"
	kindTargetGroup = "target-group"
	kindListener    = "listener"
	kindService     = "endpoint-service"
	kindEndpoint    = "vpc-endpoint"
)

// handlers returns every resource kind in dependency order; destroy walks it backwards.
func (p *Provisioner) handlers() []handler {
	return []handler{&sgHandler{}, &subnetGroupHandler{}, &secretHandler{}, &instanceHandler{}, proxyRoleHandler(),
		&proxyHandler{}, &proxyTargetHandler{}, &lbHandler{}, &targetGroupHandler{}, &listenerHandler{},
		&serviceHandler{}, &endpointHandler{}, irsaRoleHandler()}
}

func baseName(s *Spec) string   { return "rdsvalet-" + s.Name }
func tgName(s *Spec) string     { return baseName(s) }
func secretName(s *Spec) string { return "rdsvalet/" + s.Name + "/master" }
func engineFamily(s *Spec) string {
	if s.Engine.Type == "mysql" {
		return "MYSQL"
	}
	return "POSTGRESQL"
}

func ownTags(s *Spec) map[string]string {
	t := map[string]string{TagManagedBy: ManagedByValue, TagDatabase: s.Name}
	for k, v := range s.Tags {
		t[k] = v
	}
	return t
}

func sortedJoin(vals []string) string {
	c := append([]string(nil), vals...)
	sort.Strings(c)
	return strings.Join(c, ",")
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// setDiff returns what is in want and not in have, and what is in have and not in want.
func setDiff(want, have []string) (add, del []string) {
	w, h := map[string]bool{}, map[string]bool{}
	for _, x := range want {
		w[x] = true
	}
	for _, x := range have {
		h[x] = true
	}
	for _, x := range want {
		if !h[x] {
			add = append(add, x)
		}
	}
	for _, x := range have {
		if !w[x] {
			del = append(del, x)
		}
	}
	return
}

// tagChanges extracts the tags to set from a diff.
func tagChanges(fields []FieldDiff, d *State) map[string]string {
	out := map[string]string{}
	for _, f := range fields {
		if k, ok := strings.CutPrefix(f.Field, "tags."); ok {
			out[k] = d.Tags[k]
		}
	}
	return out
}

func canonJSON(s string) string {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only static policy shapes are marshalled
	}
	return canonJSON(string(b))
}

func b2s(b bool) string { return strconv.FormatBool(b) }

// ---- security group -----------------------------------------------------------------------

// One security group is shared by the instance, the proxy and the NLB: a self-reference lets
// NLB -> proxy -> instance traffic flow; the spec's allowed groups and CIDRs reach all three.
type sgHandler struct{}

func (sgHandler) kind() string        { return kindSG }
func (sgHandler) immutable() []string { return []string{"vpc_id"} }

func (h sgHandler) desired(e *env) []*State {
	port := strconv.Itoa(int(e.spec.Port()))
	rules := []string{"tcp:" + port + ":self"}
	for _, g := range e.spec.Network.AllowedSecurityGroupIDs {
		rules = append(rules, "tcp:"+port+":"+g)
	}
	for _, c := range e.spec.Network.AllowedCIDRs {
		rules = append(rules, "tcp:"+port+":"+c)
	}
	return []*State{{Kind: kindSG, Name: baseName(e.spec), Attrs: map[string]string{"vpc_id": e.spec.Network.VPCID, "ingress": sortedJoin(rules)}, Tags: ownTags(e.spec)}}
}

func (h sgHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	name := baseName(e.spec)
	out, err := e.c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2t.Filter{
		{Name: aws.String("group-name"), Values: []string{name}}, {Name: aws.String("vpc-id"), Values: []string{e.spec.Network.VPCID}}}})
	if err != nil {
		return nil, awsErr(kindSG, name, "ec2:DescribeSecurityGroups", err)
	}
	var res []*State
	for _, g := range out.SecurityGroups {
		id := deref(g.GroupId)
		var rules []string
		for _, p := range g.IpPermissions {
			port := strconv.Itoa(int(deref(p.FromPort)))
			for _, pair := range p.UserIdGroupPairs {
				src := deref(pair.GroupId)
				if src == id {
					src = "self"
				}
				rules = append(rules, deref(p.IpProtocol)+":"+port+":"+src)
			}
			for _, r := range p.IpRanges {
				rules = append(rules, deref(p.IpProtocol)+":"+port+":"+deref(r.CidrIp))
			}
		}
		tags := map[string]string{}
		for _, t := range g.Tags {
			tags[deref(t.Key)] = deref(t.Value)
		}
		res = append(res, &State{Kind: kindSG, Name: deref(g.GroupName), ID: id, Status: "available",
			Attrs: map[string]string{"vpc_id": deref(g.VpcId), "ingress": sortedJoin(rules)}, Tags: tags, Out: map[string]string{"sg.id": id}})
	}
	return res, nil
}

func (h sgHandler) create(ctx context.Context, e *env, d *State) error {
	out, err := e.c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(d.Name), VpcId: aws.String(e.spec.Network.VPCID),
		Description:       aws.String("rds-valet: database " + e.spec.Name + " (instance, RDS Proxy, NLB)"),
		TagSpecifications: []ec2t.TagSpecification{{ResourceType: ec2t.ResourceTypeSecurityGroup, Tags: ec2Tags(d.Tags)}}})
	if err != nil {
		return awsErr(kindSG, d.Name, "ec2:CreateSecurityGroup", err)
	}
	id := deref(out.GroupId)
	return h.setRules(ctx, e.c.EC2, d.Name, id, splitList(d.Attrs["ingress"]), nil)
}

func (h sgHandler) setRules(ctx context.Context, c EC2API, name, id string, add, del []string) error {
	perm := func(rules []string) []ec2t.IpPermission {
		var ps []ec2t.IpPermission
		for _, r := range rules {
			parts := strings.SplitN(r, ":", 3)
			port, _ := strconv.Atoi(parts[1])
			p := ec2t.IpPermission{IpProtocol: aws.String(parts[0]), FromPort: aws.Int32(int32(port)), ToPort: aws.Int32(int32(port))}
			src := parts[2]
			switch {
			case src == "self":
				p.UserIdGroupPairs = []ec2t.UserIdGroupPair{{GroupId: aws.String(id)}}
			case strings.HasPrefix(src, "sg-"):
				p.UserIdGroupPairs = []ec2t.UserIdGroupPair{{GroupId: aws.String(src)}}
			default:
				p.IpRanges = []ec2t.IpRange{{CidrIp: aws.String(src)}}
			}
			ps = append(ps, p)
		}
		return ps
	}
	if len(add) > 0 {
		if _, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: perm(add)}); err != nil && !isCode(err, "InvalidPermission.Duplicate") {
			return awsErr(kindSG, name, "ec2:AuthorizeSecurityGroupIngress", err)
		}
	}
	if len(del) > 0 {
		if _, err := c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: perm(del)}); err != nil && !isCode(err, "InvalidPermission.NotFound") {
			return awsErr(kindSG, name, "ec2:RevokeSecurityGroupIngress", err)
		}
	}
	return nil
}

func (h sgHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	add, del := setDiff(splitList(d.Attrs["ingress"]), splitList(o.Attrs["ingress"]))
	if err := h.setRules(ctx, e.c.EC2, d.Name, o.ID, add, del); err != nil {
		return err
	}
	return ec2Retag(ctx, e.c.EC2, kindSG, d.Name, o.ID, tagChanges(fields, d))
}

func (h sgHandler) delete(ctx context.Context, e *env, o *State) error {
	// The NLB's and proxy's network interfaces outlive them by minutes: until they are
	// released, AWS answers DependencyViolation.
	return e.p.retryEventual(ctx, kindSG, o.Name, 20*time.Minute, func() error {
		_, err := e.c.EC2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(o.ID)})
		switch {
		case err == nil, isCode(err, "InvalidGroup.NotFound"):
			return nil
		case isCode(err, "DependencyViolation"):
			return errRetry{awsErr(kindSG, o.Name, "ec2:DeleteSecurityGroup", err)}
		}
		return awsErr(kindSG, o.Name, "ec2:DeleteSecurityGroup", err)
	})
}

func (sgHandler) ready(*State) (bool, error) { return true, nil }
func (sgHandler) export(e *env, o *State)    { e.out["sg.id"] = o.ID }

func ec2Tags(m map[string]string) []ec2t.Tag {
	var out []ec2t.Tag
	for _, k := range sortedKeys(m) {
		out = append(out, ec2t.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

type tagger interface {
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

func ec2Retag(ctx context.Context, c tagger, kind, name, id string, tags map[string]string) error {
	if len(tags) == 0 {
		return nil
	}
	_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: ec2Tags(tags)})
	return awsErr(kind, name, "ec2:CreateTags", err)
}

// ---- DB subnet group ----------------------------------------------------------------------

type subnetGroupHandler struct{}

func (subnetGroupHandler) kind() string        { return kindSubnetGroup }
func (subnetGroupHandler) immutable() []string { return nil }

func (subnetGroupHandler) desired(e *env) []*State {
	return []*State{{Kind: kindSubnetGroup, Name: baseName(e.spec), Attrs: map[string]string{"subnet_ids": sortedJoin(e.spec.Network.SubnetIDs)}, Tags: ownTags(e.spec)}}
}

func (subnetGroupHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	name := baseName(e.spec)
	out, err := e.c.RDS.DescribeDBSubnetGroups(ctx, &rds.DescribeDBSubnetGroupsInput{DBSubnetGroupName: aws.String(name)})
	if isCode(err, "DBSubnetGroupNotFoundFault") {
		return nil, nil
	}
	if err != nil {
		return nil, awsErr(kindSubnetGroup, name, "rds:DescribeDBSubnetGroups", err)
	}
	var res []*State
	for _, g := range out.DBSubnetGroups {
		var subs []string
		for _, s := range g.Subnets {
			subs = append(subs, deref(s.SubnetIdentifier))
		}
		tags, err := rdsTags(ctx, e, kindSubnetGroup, name, deref(g.DBSubnetGroupArn))
		if err != nil {
			return nil, err
		}
		res = append(res, &State{Kind: kindSubnetGroup, Name: deref(g.DBSubnetGroupName), ID: deref(g.DBSubnetGroupArn), Status: "available",
			Attrs: map[string]string{"subnet_ids": sortedJoin(subs)}, Tags: tags})
	}
	return res, nil
}

func rdsTags(ctx context.Context, e *env, kind, name, arn string) (map[string]string, error) {
	out, err := e.c.RDS.ListTagsForResource(ctx, &rds.ListTagsForResourceInput{ResourceName: aws.String(arn)})
	if err != nil {
		return nil, awsErr(kind, name, "rds:ListTagsForResource", err)
	}
	tags := map[string]string{}
	for _, t := range out.TagList {
		tags[deref(t.Key)] = deref(t.Value)
	}
	return tags, nil
}

func rdsTagList(m map[string]string) []rdst.Tag {
	var out []rdst.Tag
	for _, k := range sortedKeys(m) {
		out = append(out, rdst.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

func rdsRetag(ctx context.Context, e *env, kind, name, arn string, tags map[string]string) error {
	if len(tags) == 0 {
		return nil
	}
	_, err := e.c.RDS.AddTagsToResource(ctx, &rds.AddTagsToResourceInput{ResourceName: aws.String(arn), Tags: rdsTagList(tags)})
	return awsErr(kind, name, "rds:AddTagsToResource", err)
}

func (subnetGroupHandler) create(ctx context.Context, e *env, d *State) error {
	_, err := e.c.RDS.CreateDBSubnetGroup(ctx, &rds.CreateDBSubnetGroupInput{DBSubnetGroupName: aws.String(d.Name),
		DBSubnetGroupDescription: aws.String("rds-valet: database " + e.spec.Name), SubnetIds: e.spec.Network.SubnetIDs, Tags: rdsTagList(d.Tags)})
	return awsErr(kindSubnetGroup, d.Name, "rds:CreateDBSubnetGroup", err)
}

func (subnetGroupHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	for _, f := range fields {
		if f.Field == "subnet_ids" {
			_, err := e.c.RDS.ModifyDBSubnetGroup(ctx, &rds.ModifyDBSubnetGroupInput{DBSubnetGroupName: aws.String(d.Name), SubnetIds: e.spec.Network.SubnetIDs})
			if err != nil {
				return awsErr(kindSubnetGroup, d.Name, "rds:ModifyDBSubnetGroup", err)
			}
		}
	}
	return rdsRetag(ctx, e, kindSubnetGroup, d.Name, o.ID, tagChanges(fields, d))
}

func (subnetGroupHandler) delete(ctx context.Context, e *env, o *State) error {
	_, err := e.c.RDS.DeleteDBSubnetGroup(ctx, &rds.DeleteDBSubnetGroupInput{DBSubnetGroupName: aws.String(o.Name)})
	if isCode(err, "DBSubnetGroupNotFoundFault") {
		return nil
	}
	return awsErr(kindSubnetGroup, o.Name, "rds:DeleteDBSubnetGroup", err)
}

func (subnetGroupHandler) ready(*State) (bool, error) { return true, nil }
func (subnetGroupHandler) export(e *env, o *State)    { e.out["subnet_group.name"] = o.Name }

// ---- master secret ------------------------------------------------------------------------

type secretHandler struct{}

func (secretHandler) kind() string        { return kindSecret }
func (secretHandler) immutable() []string { return nil }

func (secretHandler) desired(e *env) []*State {
	if e.spec.Instance.MasterPassword != "secret" {
		return nil
	}
	// Only the tags are managed: the value belongs to whoever rotates it, and the description
	// is cosmetic.
	return []*State{{Kind: kindSecret, Name: secretName(e.spec), Attrs: map[string]string{}, Tags: ownTags(e.spec)}}
}

func (secretHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	name := secretName(e.spec)
	out, err := e.c.Secrets.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	if isCode(err, "ResourceNotFoundException") {
		return nil, nil
	}
	if err != nil {
		return nil, awsErr(kindSecret, name, "secretsmanager:DescribeSecret", err)
	}
	if out.DeletedDate != nil {
		return nil, fmt.Errorf("secret %q is scheduled for deletion; restore it (secretsmanager restore-secret) or wait for the recovery window to end", name)
	}
	tags := map[string]string{}
	for _, t := range out.Tags {
		tags[deref(t.Key)] = deref(t.Value)
	}
	return []*State{{Kind: kindSecret, Name: deref(out.Name), ID: deref(out.ARN), Status: "available", Attrs: map[string]string{}, Tags: tags}}, nil
}

func randomPassword() (string, error) {
	// RDS forbids / @ " and spaces in master passwords.
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.~!#%^*+="
	b := make([]byte, 32)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", fmt.Errorf("generate password: %w", err)
		}
		b[i] = alphabet[n.Int64()]
	}
	return string(b), nil
}

func (secretHandler) create(ctx context.Context, e *env, d *State) error {
	pw, err := randomPassword()
	if err != nil {
		return err
	}
	val, _ := json.Marshal(map[string]string{"username": e.spec.Instance.MasterUsername, "password": pw, "engine": e.spec.Engine.Type})
	var tags []smt.Tag
	for _, k := range sortedKeys(d.Tags) {
		tags = append(tags, smt.Tag{Key: aws.String(k), Value: aws.String(d.Tags[k])})
	}
	_, err = e.c.Secrets.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(d.Name), Description: aws.String("rds-valet: master user of " + e.spec.Name),
		SecretString: aws.String(string(val)), Tags: tags})
	return awsErr(kindSecret, d.Name, "secretsmanager:CreateSecret", err)
}

func (secretHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	tags := tagChanges(fields, d)
	if len(tags) == 0 {
		return nil
	}
	var st []smt.Tag
	for _, k := range sortedKeys(tags) {
		st = append(st, smt.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	_, err := e.c.Secrets.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: aws.String(o.ID), Tags: st})
	return awsErr(kindSecret, d.Name, "secretsmanager:TagResource", err)
}

func (secretHandler) delete(ctx context.Context, e *env, o *State) error {
	// A recovery window, not a force delete: a destroyed database's password stays recoverable.
	_, err := e.c.Secrets.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String(o.ID), RecoveryWindowInDays: aws.Int64(7)})
	if isCode(err, "ResourceNotFoundException") {
		return nil
	}
	return awsErr(kindSecret, o.Name, "secretsmanager:DeleteSecret", err)
}

func (secretHandler) ready(*State) (bool, error) { return true, nil }
func (secretHandler) export(e *env, o *State)    { e.out["secret.arn"] = o.ID }

// ---- DB instance --------------------------------------------------------------------------

type instanceHandler struct{}

func (instanceHandler) kind() string { return kindInstance }
func (instanceHandler) immutable() []string {
	return []string{"engine", "encrypted", "kms_key_id", "subnet_group", "master_username", "master_password"}
}

func (instanceHandler) desired(e *env) []*State {
	in := e.spec.Instance
	a := map[string]string{
		"engine": e.spec.Engine.Type, "engine_version": e.spec.Engine.Version, "class": in.Class,
		"storage_gb": strconv.Itoa(int(in.StorageGB)), "max_storage_gb": strconv.Itoa(int(in.MaxStorageGB)),
		"multi_az": b2s(in.MultiAZ), "backup_retention_days": strconv.Itoa(int(in.BackupRetentionDays)),
		"deletion_protection": b2s(in.DeletionProtection), "iam_auth": "true", "encrypted": "true",
		"subnet_group": baseName(e.spec), "security_groups": e.get("sg.id"), "master_username": in.MasterUsername,
		"master_password": in.MasterPassword,
	}
	if strings.HasPrefix(in.KMSKeyID, "arn:") {
		a["kms_key_id"] = in.KMSKeyID
	}
	return []*State{{Kind: kindInstance, Name: e.spec.Name, Attrs: a, Tags: ownTags(e.spec)}}
}

func (instanceHandler) normalize(d, o *State) {
	// Storage autoscaling grows storage past the spec; RDS cannot shrink it anyway.
	want, _ := strconv.Atoi(d.Attrs["storage_gb"])
	have, _ := strconv.Atoi(o.Attrs["storage_gb"])
	if have > want {
		d.Attrs["storage_gb"] = o.Attrs["storage_gb"]
	}
	// Automatic minor upgrades move the version forward within the same major.
	if versionAtLeast(o.Attrs["engine_version"], d.Attrs["engine_version"]) {
		d.Attrs["engine_version"] = o.Attrs["engine_version"]
	}
}

// versionAtLeast reports whether have is want or a later version with the same major.
func versionAtLeast(have, want string) bool {
	hp, wp := strings.Split(have, "."), strings.Split(want, ".")
	if hp[0] != wp[0] {
		return false
	}
	for i := 1; i < len(wp); i++ {
		if i >= len(hp) {
			return false
		}
		h, err1 := strconv.Atoi(hp[i])
		w, err2 := strconv.Atoi(wp[i])
		if err1 != nil || err2 != nil {
			return hp[i] == wp[i]
		}
		if h != w {
			return h > w
		}
	}
	return true
}

func (instanceHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	name := e.spec.Name
	out, err := e.c.RDS.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String(name)})
	if isCode(err, "DBInstanceNotFound", "DBInstanceNotFoundFault") {
		return nil, nil
	}
	if err != nil {
		return nil, awsErr(kindInstance, name, "rds:DescribeDBInstances", err)
	}
	var res []*State
	for _, in := range out.DBInstances {
		var sgs []string
		for _, g := range in.VpcSecurityGroups {
			sgs = append(sgs, deref(g.VpcSecurityGroupId))
		}
		tags := map[string]string{}
		for _, t := range in.TagList {
			tags[deref(t.Key)] = deref(t.Value)
		}
		mp := "secret"
		secretArn := ""
		if in.MasterUserSecret != nil {
			mp, secretArn = "rds-managed", deref(in.MasterUserSecret.SecretArn)
		}
		sgName := ""
		if in.DBSubnetGroup != nil {
			sgName = deref(in.DBSubnetGroup.DBSubnetGroupName)
		}
		a := map[string]string{
			"engine": deref(in.Engine), "engine_version": deref(in.EngineVersion), "class": deref(in.DBInstanceClass),
			"storage_gb": strconv.Itoa(int(deref(in.AllocatedStorage))), "max_storage_gb": strconv.Itoa(int(deref(in.MaxAllocatedStorage))),
			"multi_az": b2s(deref(in.MultiAZ)), "backup_retention_days": strconv.Itoa(int(deref(in.BackupRetentionPeriod))),
			"deletion_protection": b2s(deref(in.DeletionProtection)), "iam_auth": b2s(deref(in.IAMDatabaseAuthenticationEnabled)),
			"encrypted": b2s(deref(in.StorageEncrypted)), "subnet_group": sgName, "security_groups": sortedJoin(sgs),
			"master_username": deref(in.MasterUsername), "master_password": mp, "kms_key_id": deref(in.KmsKeyId),
		}
		o := &State{Kind: kindInstance, Name: deref(in.DBInstanceIdentifier), ID: deref(in.DBInstanceArn), Status: deref(in.DBInstanceStatus),
			Attrs: a, Tags: tags, Out: map[string]string{"instance.resource_id": deref(in.DbiResourceId), "instance.secret_arn": secretArn}}
		if in.Endpoint != nil {
			o.Out["instance.address"] = deref(in.Endpoint.Address)
			o.Out["instance.port"] = strconv.Itoa(int(deref(in.Endpoint.Port)))
		}
		res = append(res, o)
	}
	return res, nil
}

func (instanceHandler) create(ctx context.Context, e *env, d *State) error {
	in := e.spec.Instance
	input := &rds.CreateDBInstanceInput{
		DBInstanceIdentifier: aws.String(d.Name), DBInstanceClass: aws.String(in.Class), Engine: aws.String(e.spec.Engine.Type),
		EngineVersion: aws.String(e.spec.Engine.Version), AllocatedStorage: aws.Int32(in.StorageGB), MultiAZ: aws.Bool(in.MultiAZ),
		BackupRetentionPeriod: aws.Int32(in.BackupRetentionDays), DeletionProtection: aws.Bool(in.DeletionProtection),
		EnableIAMDatabaseAuthentication: aws.Bool(true), StorageEncrypted: aws.Bool(true), PubliclyAccessible: aws.Bool(false),
		CopyTagsToSnapshot: aws.Bool(true), DBSubnetGroupName: aws.String(baseName(e.spec)), VpcSecurityGroupIds: []string{e.get("sg.id")},
		MasterUsername: aws.String(in.MasterUsername), Port: aws.Int32(e.spec.Port()), Tags: rdsTagList(d.Tags),
	}
	if in.MaxStorageGB > 0 {
		input.MaxAllocatedStorage = aws.Int32(in.MaxStorageGB)
	}
	if in.KMSKeyID != "" {
		input.KmsKeyId = aws.String(in.KMSKeyID)
	}
	if in.MasterPassword == "rds-managed" {
		input.ManageMasterUserPassword = aws.Bool(true)
	} else {
		// The password lives only in our secret; reading it back keeps a resumed apply
		// consistent with the secret created by an interrupted one.
		sv, err := e.c.Secrets.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(e.get("secret.arn"))})
		if err != nil {
			return awsErr(kindSecret, secretName(e.spec), "secretsmanager:GetSecretValue", err)
		}
		var v struct{ Password string }
		if err := json.Unmarshal([]byte(deref(sv.SecretString)), &v); err != nil || v.Password == "" {
			return fmt.Errorf("secret %q: no password field in its JSON value; fix or delete the secret", secretName(e.spec))
		}
		input.MasterUserPassword = aws.String(v.Password)
	}
	_, err := e.c.RDS.CreateDBInstance(ctx, input)
	return awsErr(kindInstance, d.Name, "rds:CreateDBInstance", err)
}

func (instanceHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	in := &rds.ModifyDBInstanceInput{DBInstanceIdentifier: aws.String(d.Name), ApplyImmediately: aws.Bool(true)}
	changed := false
	for _, f := range fields {
		changed = changed || !strings.HasPrefix(f.Field, "tags.")
		switch f.Field {
		case "engine_version":
			in.EngineVersion, in.AllowMajorVersionUpgrade = aws.String(f.To), aws.Bool(!versionAtLeast(f.To, strings.Split(f.From, ".")[0]))
		case "class":
			in.DBInstanceClass = aws.String(f.To)
		case "storage_gb":
			n, _ := strconv.Atoi(f.To)
			in.AllocatedStorage = aws.Int32(int32(n))
		case "max_storage_gb":
			n, _ := strconv.Atoi(f.To)
			in.MaxAllocatedStorage = aws.Int32(int32(n))
		case "multi_az":
			in.MultiAZ = aws.Bool(f.To == "true")
		case "backup_retention_days":
			n, _ := strconv.Atoi(f.To)
			in.BackupRetentionPeriod = aws.Int32(int32(n))
		case "deletion_protection":
			in.DeletionProtection = aws.Bool(f.To == "true")
		case "iam_auth":
			in.EnableIAMDatabaseAuthentication = aws.Bool(true)
		case "security_groups":
			in.VpcSecurityGroupIds = splitList(f.To)
		}
	}
	if changed {
		if _, err := e.c.RDS.ModifyDBInstance(ctx, in); err != nil {
			return awsErr(kindInstance, d.Name, "rds:ModifyDBInstance", err)
		}
	}
	return rdsRetag(ctx, e, kindInstance, d.Name, o.ID, tagChanges(fields, d))
}

func (instanceHandler) delete(ctx context.Context, e *env, o *State) error {
	if o.Attrs["deletion_protection"] == "true" {
		// Destroy only gets here with --force-deletion-protection.
		if _, err := e.c.RDS.ModifyDBInstance(ctx, &rds.ModifyDBInstanceInput{DBInstanceIdentifier: aws.String(o.Name), DeletionProtection: aws.Bool(false), ApplyImmediately: aws.Bool(true)}); err != nil {
			return awsErr(kindInstance, o.Name, "rds:ModifyDBInstance", err)
		}
		if _, err := e.p.waitReady(ctx, instanceHandler{}, e, o.Name); err != nil {
			return err
		}
	}
	in := &rds.DeleteDBInstanceInput{DBInstanceIdentifier: aws.String(o.Name), DeleteAutomatedBackups: aws.Bool(false)}
	if e.p.cfg.SkipFinalSnapshot {
		in.SkipFinalSnapshot = aws.Bool(true)
	} else {
		in.FinalDBSnapshotIdentifier = aws.String(fmt.Sprintf("%s-final-%d", o.Name, e.p.deps.Clock.Now().Unix()))
	}
	_, err := e.c.RDS.DeleteDBInstance(ctx, in)
	if isCode(err, "DBInstanceNotFound", "DBInstanceNotFoundFault") {
		return nil
	}
	return awsErr(kindInstance, o.Name, "rds:DeleteDBInstance", err)
}

func (instanceHandler) ready(o *State) (bool, error) {
	switch o.Status {
	case "available":
		return true, nil
	case "failed", "incompatible-parameters", "incompatible-network", "storage-full", "inaccessible-encryption-credentials":
		return false, fmt.Errorf("db-instance %q is %s; see its RDS events", o.Name, o.Status)
	}
	return false, nil
}

func (instanceHandler) export(e *env, o *State) {
	for k, v := range o.Out {
		e.out[k] = v
	}
	e.out["instance.arn"] = o.ID
}

// ---- IAM roles (proxy role, IRSA roles) ---------------------------------------------------

const rolePolicyName = "rds-valet"

type roleSpec struct {
	name, trust, policy string
}

// roleHandler manages the roles under one IAM path; every role there that this database owns
// and the spec no longer wants is deleted.
type roleHandler struct {
	label string // proxy | irsa
	path  func(s *Spec) string
	want  func(e *env) []roleSpec
}

func proxyRoleHandler() *roleHandler {
	return &roleHandler{label: "proxy", path: func(s *Spec) string { return "/rdsvalet/" + s.Name + "/proxy/" }, want: func(e *env) []roleSpec {
		secret := e.get("secret.arn")
		if e.spec.Instance.MasterPassword == "rds-managed" {
			secret = e.get("instance.secret_arn")
		}
		trust := mustJSON(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
			"Effect": "Allow", "Principal": map[string]any{"Service": "rds.amazonaws.com"}, "Action": "sts:AssumeRole"}}})
		stmts := []any{map[string]any{"Sid": "ReadMasterSecret", "Effect": "Allow",
			"Action": []string{"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}, "Resource": secret}}
		if k := e.spec.Instance.KMSKeyID; strings.HasPrefix(k, "arn:") {
			stmts = append(stmts, map[string]any{"Sid": "DecryptSecret", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": k,
				"Condition": map[string]any{"StringEquals": map[string]any{"kms:ViaService": "secretsmanager." + e.region + ".amazonaws.com"}}})
		}
		policy := mustJSON(map[string]any{"Version": "2012-10-17", "Statement": stmts})
		return []roleSpec{{name: baseName(e.spec) + "-proxy", trust: trust, policy: policy}}
	}}
}

// irsaRoleName fits the 64-character IAM limit, keeping names unique with a hash suffix.
func irsaRoleName(s *Spec, sa ServiceAccount) string {
	n := fmt.Sprintf("rdsvalet-%s-%s-%s", s.Name, sa.Namespace, sa.Name)
	if len(n) <= 64 {
		return n
	}
	h := sha256.Sum256([]byte(n))
	return n[:55] + "-" + hex.EncodeToString(h[:4])
}

func irsaRoleHandler() *roleHandler {
	return &roleHandler{label: "irsa", path: func(s *Spec) string { return "/rdsvalet/" + s.Name + "/irsa/" }, want: func(e *env) []roleSpec {
		arn := e.spec.Access.OIDCProviderARN
		issuer := arn[strings.Index(arn, ":oidc-provider/")+len(":oidc-provider/"):]
		prx, dbi := e.get("proxy.resource_id"), e.get("instance.resource_id")
		var out []roleSpec
		for _, sa := range e.spec.Access.ServiceAccounts {
			trust := mustJSON(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
				"Effect": "Allow", "Principal": map[string]any{"Federated": arn}, "Action": "sts:AssumeRoleWithWebIdentity",
				"Condition": map[string]any{"StringEquals": map[string]any{
					issuer + ":sub": "system:serviceaccount:" + sa.Namespace + ":" + sa.Name,
					issuer + ":aud": "sts.amazonaws.com"}}}}})
			res := []string{}
			for _, id := range []string{prx, dbi} {
				if id == Unknown {
					res = append(res, Unknown)
					continue
				}
				res = append(res, fmt.Sprintf("arn:aws:rds-db:%s:%s:dbuser:%s/%s", e.region, e.account, id, sa.DBUser))
			}
			policy := mustJSON(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
				"Sid": "ConnectAsDBUser", "Effect": "Allow", "Action": "rds-db:connect", "Resource": res}}})
			out = append(out, roleSpec{name: irsaRoleName(e.spec, sa), trust: trust, policy: policy})
		}
		return out
	}}
}

func (h *roleHandler) kind() string        { return kindRole }
func (h *roleHandler) immutable() []string { return []string{"path"} }

func (h *roleHandler) desired(e *env) []*State {
	var out []*State
	for _, r := range h.want(e) {
		policy := r.policy
		if strings.Contains(policy, Unknown) {
			policy = Unknown
		}
		out = append(out, &State{Kind: kindRole, Name: r.name, Attrs: map[string]string{"path": h.path(e.spec), "trust_policy": r.trust, "policy": policy}, Tags: ownTags(e.spec)})
	}
	return out
}

func (h *roleHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	// Every role under our path, so that roles the spec dropped are found and deleted; the
	// desired names are also looked up directly, to catch an untagged role squatting a name.
	names := map[string]bool{}
	var marker *string
	for {
		out, err := e.c.IAM.ListRoles(ctx, &iam.ListRolesInput{PathPrefix: aws.String(h.path(e.spec)), Marker: marker})
		if err != nil {
			return nil, awsErr(kindRole, h.path(e.spec)+"*", "iam:ListRoles", err)
		}
		for _, r := range out.Roles {
			names[deref(r.RoleName)] = true
		}
		if !out.IsTruncated {
			break
		}
		marker = out.Marker
	}
	for _, r := range h.want(e) {
		names[r.name] = true
	}
	var res []*State
	for _, n := range sortedKeys(names) {
		out, err := e.c.IAM.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(n)})
		if isCode(err, "NoSuchEntity") {
			continue
		}
		if err != nil {
			return nil, awsErr(kindRole, n, "iam:GetRole", err)
		}
		trust, _ := url.QueryUnescape(deref(out.Role.AssumeRolePolicyDocument))
		tags := map[string]string{}
		for _, t := range out.Role.Tags {
			tags[deref(t.Key)] = deref(t.Value)
		}
		st := &State{Kind: kindRole, Name: n, ID: deref(out.Role.Arn), Status: "available", Tags: tags,
			Attrs: map[string]string{"path": deref(out.Role.Path), "trust_policy": canonJSON(trust)}}
		if st.Owned(e.spec.Name) {
			pol, err := e.c.IAM.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(n), PolicyName: aws.String(rolePolicyName)})
			switch {
			case isCode(err, "NoSuchEntity"):
			case err != nil:
				return nil, awsErr(kindRole, n, "iam:GetRolePolicy", err)
			default:
				doc, _ := url.QueryUnescape(deref(pol.PolicyDocument))
				st.Attrs["policy"] = canonJSON(doc)
			}
		}
		res = append(res, st)
	}
	return res, nil
}

func (h *roleHandler) create(ctx context.Context, e *env, d *State) error {
	var tags []iamt.Tag
	for _, k := range sortedKeys(d.Tags) {
		tags = append(tags, iamt.Tag{Key: aws.String(k), Value: aws.String(d.Tags[k])})
	}
	_, err := e.c.IAM.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(d.Name), Path: aws.String(d.Attrs["path"]),
		AssumeRolePolicyDocument: aws.String(d.Attrs["trust_policy"]), Tags: tags,
		Description: aws.String("rds-valet " + h.label + " role for database " + e.spec.Name)})
	if err != nil {
		return awsErr(kindRole, d.Name, "iam:CreateRole", err)
	}
	return h.putPolicy(ctx, e, d)
}

func (h *roleHandler) putPolicy(ctx context.Context, e *env, d *State) error {
	if d.Attrs["policy"] == Unknown {
		return fmt.Errorf("iam-role %q: policy references a resource that does not exist yet", d.Name)
	}
	_, err := e.c.IAM.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(d.Name), PolicyName: aws.String(rolePolicyName), PolicyDocument: aws.String(d.Attrs["policy"])})
	return awsErr(kindRole, d.Name, "iam:PutRolePolicy", err)
}

func (h *roleHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	for _, f := range fields {
		switch f.Field {
		case "path":
			return &ImmutableError{Kind: kindRole, Name: d.Name, Field: "path", From: f.From, To: f.To}
		case "trust_policy":
			if _, err := e.c.IAM.UpdateAssumeRolePolicy(ctx, &iam.UpdateAssumeRolePolicyInput{RoleName: aws.String(d.Name), PolicyDocument: aws.String(f.To)}); err != nil {
				return awsErr(kindRole, d.Name, "iam:UpdateAssumeRolePolicy", err)
			}
		case "policy":
			if err := h.putPolicy(ctx, e, d); err != nil {
				return err
			}
		}
	}
	if tags := tagChanges(fields, d); len(tags) > 0 {
		var it []iamt.Tag
		for _, k := range sortedKeys(tags) {
			it = append(it, iamt.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
		}
		if _, err := e.c.IAM.TagRole(ctx, &iam.TagRoleInput{RoleName: aws.String(d.Name), Tags: it}); err != nil {
			return awsErr(kindRole, d.Name, "iam:TagRole", err)
		}
	}
	return nil
}

func (h *roleHandler) delete(ctx context.Context, e *env, o *State) error {
	pols, err := e.c.IAM.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String(o.Name)})
	if isCode(err, "NoSuchEntity") {
		return nil
	}
	if err != nil {
		return awsErr(kindRole, o.Name, "iam:ListRolePolicies", err)
	}
	for _, pn := range pols.PolicyNames {
		if _, err := e.c.IAM.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String(o.Name), PolicyName: aws.String(pn)}); err != nil && !isCode(err, "NoSuchEntity") {
			return awsErr(kindRole, o.Name, "iam:DeleteRolePolicy", err)
		}
	}
	_, err = e.c.IAM.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String(o.Name)})
	if isCode(err, "NoSuchEntity") {
		return nil
	}
	return awsErr(kindRole, o.Name, "iam:DeleteRole", err)
}

func (h *roleHandler) ready(*State) (bool, error) { return true, nil }

func (h *roleHandler) export(e *env, o *State) {
	e.out["role."+o.Name+".arn"] = o.ID
	if h.label == "proxy" {
		e.out["proxy_role.arn"] = o.ID
	}
}

// ---- RDS Proxy ----------------------------------------------------------------------------

type proxyHandler struct{}

func (proxyHandler) kind() string        { return kindProxy }
func (proxyHandler) immutable() []string { return []string{"engine_family", "subnet_ids"} }

func proxySecret(e *env) string {
	if e.spec.Instance.MasterPassword == "rds-managed" {
		return e.get("instance.secret_arn")
	}
	return e.get("secret.arn")
}

func (proxyHandler) desired(e *env) []*State {
	return []*State{{Kind: kindProxy, Name: e.spec.Name, Tags: ownTags(e.spec), Attrs: map[string]string{
		"engine_family": engineFamily(e.spec), "role_arn": e.get("proxy_role.arn"), "secret_arn": proxySecret(e),
		"iam_auth": "REQUIRED", "require_tls": "true", "subnet_ids": sortedJoin(e.spec.Network.SubnetIDs), "security_groups": e.get("sg.id")}}}
}

func (proxyHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	name := e.spec.Name
	out, err := e.c.RDS.DescribeDBProxies(ctx, &rds.DescribeDBProxiesInput{DBProxyName: aws.String(name)})
	if isCode(err, "DBProxyNotFoundFault") {
		return nil, nil
	}
	if err != nil {
		return nil, awsErr(kindProxy, name, "rds:DescribeDBProxies", err)
	}
	var res []*State
	for _, p := range out.DBProxies {
		var secrets, iamAuth []string
		for _, a := range p.Auth {
			secrets = append(secrets, deref(a.SecretArn))
			iamAuth = append(iamAuth, string(a.IAMAuth))
		}
		tags, err := rdsTags(ctx, e, kindProxy, name, deref(p.DBProxyArn))
		if err != nil {
			return nil, err
		}
		arn := deref(p.DBProxyArn)
		res = append(res, &State{Kind: kindProxy, Name: deref(p.DBProxyName), ID: arn, Status: string(p.Status), Tags: tags,
			Attrs: map[string]string{"engine_family": deref(p.EngineFamily), "role_arn": deref(p.RoleArn), "secret_arn": sortedJoin(secrets),
				"iam_auth": sortedJoin(iamAuth), "require_tls": b2s(deref(p.RequireTLS)), "subnet_ids": sortedJoin(p.VpcSubnetIds),
				"security_groups": sortedJoin(p.VpcSecurityGroupIds)},
			Out: map[string]string{"proxy.endpoint": deref(p.Endpoint), "proxy.resource_id": arn[strings.LastIndex(arn, ":")+1:], "proxy.name": deref(p.DBProxyName)}})
	}
	return res, nil
}

func (h proxyHandler) auth(e *env) []rdst.UserAuthConfig {
	return []rdst.UserAuthConfig{{AuthScheme: rdst.AuthSchemeSecrets, IAMAuth: rdst.IAMAuthModeRequired, SecretArn: aws.String(proxySecret(e)),
		Description: aws.String("rds-valet: master secret, IAM auth required")}}
}

func (h proxyHandler) create(ctx context.Context, e *env, d *State) error {
	in := &rds.CreateDBProxyInput{DBProxyName: aws.String(d.Name), EngineFamily: rdst.EngineFamily(engineFamily(e.spec)),
		RoleArn: aws.String(e.get("proxy_role.arn")), Auth: h.auth(e), RequireTLS: aws.Bool(true), VpcSubnetIds: e.spec.Network.SubnetIDs,
		VpcSecurityGroupIds: []string{e.get("sg.id")}, Tags: rdsTagList(d.Tags)}
	// A role created seconds ago is often not yet assumable by RDS (IAM is eventually
	// consistent): RDS says the role ARN is invalid. Retry that one error for a while.
	return e.p.retryEventual(ctx, kindProxy, d.Name, 5*time.Minute, func() error {
		_, err := e.c.RDS.CreateDBProxy(ctx, in)
		if err != nil && isCode(err, "InvalidParameterValue") && strings.Contains(strings.ToLower(err.Error()), "role") {
			return errRetry{awsErr(kindProxy, d.Name, "rds:CreateDBProxy", err)}
		}
		return awsErr(kindProxy, d.Name, "rds:CreateDBProxy", err)
	})
}

func (h proxyHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	in := &rds.ModifyDBProxyInput{DBProxyName: aws.String(d.Name)}
	changed := false
	for _, f := range fields {
		switch f.Field {
		case "role_arn":
			in.RoleArn, changed = aws.String(f.To), true
		case "secret_arn", "iam_auth":
			in.Auth, changed = h.auth(e), true
		case "require_tls":
			in.RequireTLS, changed = aws.Bool(true), true
		case "security_groups":
			in.SecurityGroups, changed = splitList(f.To), true
		}
	}
	if changed {
		if _, err := e.c.RDS.ModifyDBProxy(ctx, in); err != nil {
			return awsErr(kindProxy, d.Name, "rds:ModifyDBProxy", err)
		}
	}
	return rdsRetag(ctx, e, kindProxy, d.Name, o.ID, tagChanges(fields, d))
}

func (proxyHandler) delete(ctx context.Context, e *env, o *State) error {
	_, err := e.c.RDS.DeleteDBProxy(ctx, &rds.DeleteDBProxyInput{DBProxyName: aws.String(o.Name)})
	if isCode(err, "DBProxyNotFoundFault") {
		return nil
	}
	return awsErr(kindProxy, o.Name, "rds:DeleteDBProxy", err)
}

func (proxyHandler) ready(o *State) (bool, error) {
	switch o.Status {
	case "available":
		return true, nil
	case "incompatible-network", "insufficient-resource-limits":
		return false, fmt.Errorf("db-proxy %q is %s", o.Name, o.Status)
	}
	return false, nil
}

func (proxyHandler) export(e *env, o *State) {
	for k, v := range o.Out {
		e.out[k] = v
	}
	e.out["proxy.arn"] = o.ID
}

// ---- proxy target (the instance registered in the proxy's default target group) -----------

type proxyTargetHandler struct{}

func (proxyTargetHandler) kind() string        { return kindProxyTarget }
func (proxyTargetHandler) immutable() []string { return nil }

func (proxyTargetHandler) desired(e *env) []*State {
	return []*State{{Kind: kindProxyTarget, Name: e.spec.Name + "/default/" + e.spec.Name, Attrs: map[string]string{"instance": e.spec.Name}, Tags: ownTags(e.spec)}}
}

func (proxyTargetHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	if !e.known("proxy.name") {
		return nil, nil
	}
	out, err := e.c.RDS.DescribeDBProxyTargets(ctx, &rds.DescribeDBProxyTargetsInput{DBProxyName: aws.String(e.spec.Name)})
	if isCode(err, "DBProxyNotFoundFault", "DBProxyTargetGroupNotFoundFault") {
		return nil, nil
	}
	if err != nil {
		return nil, awsErr(kindProxyTarget, e.spec.Name, "rds:DescribeDBProxyTargets", err)
	}
	var res []*State
	for _, t := range out.Targets {
		if t.Type != rdst.TargetTypeRdsInstance {
			continue
		}
		id := deref(t.RdsResourceId)
		// Targets carry no tags: they belong to whoever owns the proxy, which we checked.
		res = append(res, &State{Kind: kindProxyTarget, Name: e.spec.Name + "/default/" + id, ID: deref(t.TargetArn), Status: "available",
			Attrs: map[string]string{"instance": id}, Tags: ownTags(e.spec)})
	}
	return res, nil
}

func (proxyTargetHandler) create(ctx context.Context, e *env, d *State) error {
	_, err := e.c.RDS.RegisterDBProxyTargets(ctx, &rds.RegisterDBProxyTargetsInput{DBProxyName: aws.String(e.spec.Name), DBInstanceIdentifiers: []string{d.Attrs["instance"]}})
	if isCode(err, "DBProxyTargetAlreadyRegisteredFault") {
		return nil
	}
	return awsErr(kindProxyTarget, d.Name, "rds:RegisterDBProxyTargets", err)
}

func (proxyTargetHandler) update(context.Context, *env, *State, *State, []FieldDiff) error {
	return nil
}

func (proxyTargetHandler) delete(ctx context.Context, e *env, o *State) error {
	_, err := e.c.RDS.DeregisterDBProxyTargets(ctx, &rds.DeregisterDBProxyTargetsInput{DBProxyName: aws.String(e.spec.Name), DBInstanceIdentifiers: []string{o.Attrs["instance"]}})
	if isCode(err, "DBProxyNotFoundFault", "DBProxyTargetNotFoundFault") {
		return nil
	}
	return awsErr(kindProxyTarget, o.Name, "rds:DeregisterDBProxyTargets", err)
}

func (proxyTargetHandler) ready(*State) (bool, error) { return true, nil }
func (proxyTargetHandler) export(*env, *State)        {}

// ---- NLB, target group, listener ----------------------------------------------------------

type lbHandler struct{}

func (lbHandler) kind() string { return kindLB }
func (lbHandler) immutable() []string {
	return []string{"scheme", "type", "subnet_ids", "security_groups"}
}

func (lbHandler) desired(e *env) []*State {
	return []*State{{Kind: kindLB, Name: baseName(e.spec), Tags: ownTags(e.spec), Attrs: map[string]string{
		"scheme": "internal", "type": "network", "subnet_ids": sortedJoin(e.spec.Network.SubnetIDs), "security_groups": e.get("sg.id")}}}
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
		res = append(res, &State{Kind: kindLB, Name: deref(lb.LoadBalancerName), ID: deref(lb.LoadBalancerArn), Status: status, Tags: tags,
			Attrs: map[string]string{"scheme": string(lb.Scheme), "type": string(lb.Type), "subnet_ids": sortedJoin(subs), "security_groups": sortedJoin(lb.SecurityGroups)},
			Out:   map[string]string{"lb.dns": deref(lb.DNSName)}})
	}
	return res, nil
}

func (lbHandler) create(ctx context.Context, e *env, d *State) error {
	_, err := e.c.ELB.CreateLoadBalancer(ctx, &elb.CreateLoadBalancerInput{Name: aws.String(d.Name), Type: elbt.LoadBalancerTypeEnumNetwork,
		Scheme: elbt.LoadBalancerSchemeEnumInternal, Subnets: e.spec.Network.SubnetIDs, SecurityGroups: []string{e.get("sg.id")}, Tags: elbTagList(d.Tags)})
	return awsErr(kindLB, d.Name, "elasticloadbalancing:CreateLoadBalancer", err)
}

func (lbHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
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
	return []*State{{Kind: kindTargetGroup, Name: tgName(e.spec), Tags: ownTags(e.spec), Attrs: map[string]string{
		"protocol": "TCP", "port": port, "vpc_id": e.spec.Network.VPCID, "target_type": "ip", "targets": targets}}}
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
			if d.Target != nil {
				targets = append(targets, deref(d.Target.Id)+":"+strconv.Itoa(int(deref(d.Target.Port))))
			}
		}
		res = append(res, &State{Kind: kindTargetGroup, Name: deref(tg.TargetGroupName), ID: arn, Status: "available", Tags: tags,
			Attrs: map[string]string{"protocol": string(tg.Protocol), "port": strconv.Itoa(int(deref(tg.Port))), "vpc_id": deref(tg.VpcId),
				"target_type": string(tg.TargetType), "targets": sortedJoin(targets)}})
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
	out, err := e.c.ELB.CreateTargetGroup(ctx, &elb.CreateTargetGroupInput{Name: aws.String(d.Name), Protocol: elbt.ProtocolEnumTcp,
		Port: aws.Int32(e.spec.Port()), VpcId: aws.String(e.spec.Network.VPCID), TargetType: elbt.TargetTypeEnumIp, Tags: elbTagList(d.Tags)})
	if err != nil {
		return awsErr(kindTargetGroup, d.Name, "elasticloadbalancing:CreateTargetGroup", err)
	}
	if len(out.TargetGroups) == 0 {
		return fmt.Errorf("target-group %q: CreateTargetGroup returned no target group", d.Name)
	}
	return h.setTargets(ctx, d.Name, deref(out.TargetGroups[0].TargetGroupArn), e, splitList(d.Attrs["targets"]), nil)
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
