package provision

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdst "github.com/aws/aws-sdk-go-v2/service/rds/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smt "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"go.uber.org/zap"
)

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
	// Only the tags and the deletion state are managed: the value belongs to whoever rotates
	// it, and the description is cosmetic. A secret of ours scheduled for deletion (a destroy,
	// then an apply within the recovery window) is restored, not re-created: Secrets Manager
	// refuses a new secret with that name until the window ends.
	return []*State{{Kind: kindSecret, Name: secretName(e.spec), Attrs: map[string]string{attrScheduledDeletion: "false"}, Tags: ownTags(e.spec)}}
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
	if out.DeletedDate != nil && e.spec.Instance.MasterPassword != "secret" {
		// Ours from an earlier "secret" mode, already deleted: nothing left to plan.
		return nil, nil
	}
	tags := map[string]string{}
	for _, t := range out.Tags {
		tags[deref(t.Key)] = deref(t.Value)
	}
	// DeletedDate: deleted with a recovery window; still describable until the window ends
	// (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DescribeSecret.html).
	st := &State{Kind: kindSecret, Name: deref(out.Name), ID: deref(out.ARN), Status: "available", Attrs: map[string]string{attrScheduledDeletion: "false"}, Tags: tags}
	if out.DeletedDate != nil {
		st.Status, st.Attrs[attrScheduledDeletion] = "scheduled-for-deletion", "true"
	}
	return []*State{st}, nil
}

const attrScheduledDeletion = "scheduled_for_deletion"

// gone: a secret waiting out its recovery window is deleted as far as destroy is concerned.
func (secretHandler) gone(o *State) bool { return o.Attrs[attrScheduledDeletion] == "true" }

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
	for _, f := range fields {
		if f.Field == attrScheduledDeletion {
			if _, err := e.c.Secrets.RestoreSecret(ctx, &secretsmanager.RestoreSecretInput{SecretId: aws.String(o.ID)}); err != nil {
				return awsErr(kindSecret, d.Name, "secretsmanager:RestoreSecret", err)
			}
			e.p.log.Info("restored secret scheduled for deletion", zap.String("name", d.Name))
		}
	}
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

func (h secretHandler) delete(ctx context.Context, e *env, o *State) error {
	if h.gone(o) {
		return nil
	}
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
		"master_password": in.MasterPassword, "parameter_group": paramGroupName(e.spec),
	}
	if in.KMSKeyID != "" {
		// The key ARN DescribeKey resolved the alias or key id to: what RDS reports back.
		a["kms_key_id"] = e.get("kms.key_arn")
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
	// Storage autoscaling off shows as no MaxAllocatedStorage, or as one equal to the
	// allocated storage (the value that turns it off): both are max_storage_gb 0.
	if d.Attrs["max_storage_gb"] == "0" && o.Attrs["max_storage_gb"] == o.Attrs["storage_gb"] {
		o.Attrs["max_storage_gb"] = "0"
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
	if err := resolveKMSKey(ctx, e); err != nil {
		return nil, err
	}
	out, err := e.c.RDS.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String(name)})
	if isCode(err, "DBInstanceNotFound", "DBInstanceNotFoundFault") {
		return nil, nil
	}
	if err != nil {
		return nil, awsErr(kindInstance, name, "rds:DescribeDBInstances", err)
	}
	var res []*State
	for _, in := range out.DBInstances {
		sgs, tags := instanceGroupsAndTags(in)
		mp := "secret"
		secretArn := ""
		if in.MasterUserSecret != nil {
			mp, secretArn = "rds-managed", deref(in.MasterUserSecret.SecretArn)
		}
		sgName := ""
		if in.DBSubnetGroup != nil {
			sgName = deref(in.DBSubnetGroup.DBSubnetGroupName)
		}
		pgName, pgApply := "", ""
		if len(in.DBParameterGroups) > 0 {
			pgName, pgApply = deref(in.DBParameterGroups[0].DBParameterGroupName), deref(in.DBParameterGroups[0].ParameterApplyStatus)
		}

		a := map[string]string{
			"engine": deref(in.Engine), "engine_version": deref(in.EngineVersion), "class": deref(in.DBInstanceClass),
			"storage_gb": strconv.Itoa(int(deref(in.AllocatedStorage))), "max_storage_gb": strconv.Itoa(int(deref(in.MaxAllocatedStorage))),
			"multi_az": b2s(deref(in.MultiAZ)), "backup_retention_days": strconv.Itoa(int(deref(in.BackupRetentionPeriod))),
			"deletion_protection": b2s(deref(in.DeletionProtection)), "iam_auth": b2s(deref(in.IAMDatabaseAuthenticationEnabled)),
			"encrypted": b2s(deref(in.StorageEncrypted)), "subnet_group": sgName, "security_groups": sortedJoin(sgs),
			"master_username": deref(in.MasterUsername), "master_password": mp, "kms_key_id": deref(in.KmsKeyId),
			"parameter_group": pgName,
		}
		o := &State{Kind: kindInstance, Name: deref(in.DBInstanceIdentifier), ID: deref(in.DBInstanceArn), Status: deref(in.DBInstanceStatus),
			Attrs: a, Tags: tags, Out: map[string]string{"instance.resource_id": deref(in.DbiResourceId), "instance.secret_arn": secretArn,
				"instance.parameter_apply_status": pgApply,
				// Its read replicas: ids in this Region, ARNs in others (replicas.go finds them).
				"instance.replicas": strings.Join(in.ReadReplicaDBInstanceIdentifiers, ",")}}
		if in.Endpoint != nil {
			o.Out["instance.address"] = deref(in.Endpoint.Address)
			o.Out["instance.port"] = strconv.Itoa(int(deref(in.Endpoint.Port)))
		}
		res = append(res, o)
	}
	return res, nil
}

// instanceGroupsAndTags are a described instance's VPC security group ids and tags (the source
// and its replicas alike).
func instanceGroupsAndTags(in rdst.DBInstance) ([]string, map[string]string) {
	var sgs []string
	for _, g := range in.VpcSecurityGroups {
		sgs = append(sgs, deref(g.VpcSecurityGroupId))
	}
	tags := map[string]string{}
	for _, t := range in.TagList {
		tags[deref(t.Key)] = deref(t.Value)
	}
	return sgs, tags
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
		DBParameterGroupName: aws.String(paramGroupName(e.spec)),
	}
	// No MaxAllocatedStorage on create = storage autoscaling off.
	if in.MaxStorageGB > 0 {
		input.MaxAllocatedStorage = aws.Int32(in.MaxStorageGB)
	}
	if in.KMSKeyID != "" {
		input.KmsKeyId = aws.String(e.get("kms.key_arn"))
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
			if n == 0 {
				// Autoscaling off is a threshold equal to the allocated storage; RDS refuses 0
				// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_PIOPS.Autoscaling.html).
				n, _ = strconv.Atoi(d.Attrs["storage_gb"])
			}
			in.MaxAllocatedStorage = aws.Int32(int32(n))
		case "parameter_group":
			in.DBParameterGroupName = aws.String(f.To)
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
	// storage-optimization follows every storage change and can last hours; the instance is
	// fully usable meanwhile (only further storage changes wait for it).
	case "available", "storage-optimization":
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
	if o.Out["instance.parameter_apply_status"] == "pending-reboot" {
		e.notice(fmt.Sprintf("db-instance %q: parameter group %q has changes that take effect only after a reboot (ParameterApplyStatus pending-reboot); "+
			"reboot it in a maintenance window: aws rds reboot-db-instance --db-instance-identifier %s", o.Name, o.Attrs["parameter_group"], o.Name))
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
		"iam_auth": "REQUIRED", "require_tls": "true", "subnet_ids": sortedJoin(e.spec.Network.SubnetIDs), "security_groups": e.get("sg.id"),
		"default_auth_scheme": string(rdst.DefaultAuthSchemeIamAuth)}}}
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
				"security_groups": sortedJoin(p.VpcSecurityGroupIds), "default_auth_scheme": defaultScheme(p.DefaultAuthScheme)},
			Out: map[string]string{"proxy.endpoint": deref(p.Endpoint), "proxy.resource_id": arn[strings.LastIndex(arn, ":")+1:], "proxy.name": deref(p.DBProxyName)}})
	}
	return res, nil
}

func defaultScheme(s *string) string {
	if deref(s) == "" {
		return string(rdst.DefaultAuthSchemeNone)
	}
	return *s
}

// auth: the apps' db users need no secret, the proxy logs in as them with IAM (end-to-end IAM,
// DefaultAuthScheme IAM_AUTH, its role allowed rds-db:connect on them; see proxyRoleHandler).
// The master secret stays, with IAMAuth REQUIRED: the master user has no rds_iam grant, so the
// proxy can only log in as it with the password, for an IAM principal allowed rds-db:connect
// as the master user on the proxy ("Migrating from standard IAM authentication to end-to-end
// IAM authentication for RDS Proxy" keeps secrets and rds-db:connect side by side).
func (h proxyHandler) auth(e *env) []rdst.UserAuthConfig {
	return []rdst.UserAuthConfig{{AuthScheme: rdst.AuthSchemeSecrets, IAMAuth: rdst.IAMAuthModeRequired, SecretArn: aws.String(proxySecret(e)),
		Description: aws.String("rds-valet: master secret, IAM auth required")}}
}

func (h proxyHandler) create(ctx context.Context, e *env, d *State) error {
	in := &rds.CreateDBProxyInput{DBProxyName: aws.String(d.Name), EngineFamily: rdst.EngineFamily(engineFamily(e.spec)),
		RoleArn: aws.String(e.get("proxy_role.arn")), Auth: h.auth(e), DefaultAuthScheme: rdst.DefaultAuthSchemeIamAuth,
		RequireTLS: aws.Bool(true), VpcSubnetIds: e.spec.Network.SubnetIDs,
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
		case "default_auth_scheme":
			in.DefaultAuthScheme, changed = rdst.DefaultAuthSchemeIamAuth, true
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
		// Status is the target's health: REGISTERING, then AVAILABLE or UNAVAILABLE with a reason
		// (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_TargetHealth.html).
		health, reason, desc := "", "", ""
		if t.TargetHealth != nil {
			health, reason, desc = string(t.TargetHealth.State), string(t.TargetHealth.Reason), deref(t.TargetHealth.Description)
		}
		status := health
		if reason != "" {
			status += " (" + reason + ")"
		}
		// Targets carry no tags: they belong to whoever owns the proxy, which we checked.
		res = append(res, &State{Kind: kindProxyTarget, Name: e.spec.Name + "/default/" + id, ID: deref(t.TargetArn), Status: status,
			Attrs: map[string]string{"instance": id}, Tags: ownTags(e.spec),
			Out: map[string]string{"health.state": health, "health.reason": reason, "health.description": desc}})
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

// ready waits out REGISTERING (and other UNAVAILABLE reasons, which may be transient, e.g.
// PENDING_PROXY_CAPACITY); AUTH_FAILURE does not heal by waiting: the proxy cannot log in.
func (proxyTargetHandler) ready(o *State) (bool, error) {
	switch {
	case o.Out["health.state"] == string(rdst.TargetStateAvailable):
		return true, nil
	case o.Out["health.state"] == string(rdst.TargetStateUnavailable) && o.Out["health.reason"] == string(rdst.TargetHealthReasonAuthFailure):
		return false, fmt.Errorf("db-proxy-target %q is UNAVAILABLE (AUTH_FAILURE): %s; the proxy cannot log in to the database: check the proxy role's policy "+
			"(rds-db:connect on the db users, secretsmanager:GetSecretValue on the master secret), any policy denying them, and IAM database authentication on the instance",
			o.Name, o.Out["health.description"])
	}
	return false, nil
}

func (proxyTargetHandler) export(*env, *State) {}
