package provision

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
)

// ---- read replicas ------------------------------------------------------------------------
//
// Each spec replica is an RDS read replica of the database's instance
// (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstanceReadReplica.html).
// An in-Region one is created in the database's Region from the source's identifier and
// inherits its subnet group, KMS key and parameter group; a cross-Region one is created by a
// call to the destination Region, naming the source by its ARN, with that Region's KMS key,
// subnet group and security groups, and SourceRegion so the SDK presigns the request RDS
// forwards to the source's Region. Replicas are found by the ids the spec names and by the
// source's ReadReplicaDBInstanceIdentifiers, so a replica the spec dropped is deleted.

type replicaHandler struct{}

func (replicaHandler) kind() string { return kindReplica }

// immutable: where a replica lives and what it replicates cannot change in place. A replica
// that was promoted (its source gone) shows an empty source and is refused, not re-created.
func (replicaHandler) immutable() []string {
	return []string{"region", "source", "availability_zone", "kms_key_id", "subnet_group"}
}

func (replicaHandler) desired(e *env) []*State {
	var out []*State
	for _, r := range e.spec.Replicas {
		class := r.Class
		if class == "" {
			class = e.spec.Instance.Class
		}
		a := map[string]string{"region": e.spec.ReplicaRegion(r), "class": class, "iam_auth": "true", "source": e.spec.Name}
		if r.AvailabilityZone != "" {
			a["availability_zone"] = r.AvailabilityZone
		}
		if e.spec.CrossRegion(r) {
			// A cross-Region source is named (and reported) by its ARN.
			a["source"] = e.get("instance.arn")
			a["kms_key_id"], a["subnet_group"] = r.KMSKeyID, r.DBSubnetGroup
			a["security_groups"] = sortedJoin(r.SecurityGroupIDs)
		} else {
			a["security_groups"] = e.get("sg.id")
		}
		out = append(out, &State{Kind: kindReplica, Name: e.spec.ReplicaID(r), Attrs: a, Tags: ownTags(e.spec)})
	}
	return out
}

// replicaRef is one replica to look at: its Region and identifier.
type replicaRef struct{ region, id string }

// replicaRefs are the spec's replicas and those the source lists (ids in its Region, ARNs
// arn:aws:rds:REGION:ACCOUNT:db:ID in others), each once.
func replicaRefs(e *env) []replicaRef {
	var refs []replicaRef
	seen := map[replicaRef]bool{}
	add := func(r replicaRef) {
		if !seen[r] {
			seen[r] = true
			refs = append(refs, r)
		}
	}
	for _, r := range e.spec.Replicas {
		add(replicaRef{e.spec.ReplicaRegion(r), e.spec.ReplicaID(r)})
	}
	for _, x := range splitList(e.out["instance.replicas"]) {
		if p := strings.Split(x, ":"); strings.HasPrefix(x, "arn:") && len(p) == 7 {
			add(replicaRef{p[3], p[6]})
		} else {
			add(replicaRef{e.region, x})
		}
	}
	return refs
}

// rdsIn is the RDS client of region: the database's own, or one made for another Region.
func rdsIn(ctx context.Context, e *env, region string) (RDSAPI, error) {
	if region == e.region {
		return e.c.RDS, nil
	}
	if e.c.RDSIn == nil {
		return nil, fmt.Errorf("db-replica: no RDS client for region %s (cross-region replicas need Clients.RDSIn)", region)
	}
	return e.c.RDSIn(ctx, region)
}

func (replicaHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	var res []*State
	for _, ref := range replicaRefs(e) {
		c, err := rdsIn(ctx, e, ref.region)
		if err != nil {
			return nil, err
		}
		out, err := c.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String(ref.id)})
		if isCode(err, "DBInstanceNotFound", "DBInstanceNotFoundFault") {
			continue
		}
		if err != nil {
			return nil, awsErr(kindReplica, ref.id, "rds:DescribeDBInstances", err)
		}
		for _, in := range out.DBInstances {
			sgs, tags := instanceGroupsAndTags(in)
			a := map[string]string{"region": ref.region, "class": deref(in.DBInstanceClass), "iam_auth": b2s(deref(in.IAMDatabaseAuthenticationEnabled)),
				"source": deref(in.ReadReplicaSourceDBInstanceIdentifier), "security_groups": sortedJoin(sgs),
				"availability_zone": deref(in.AvailabilityZone)}
			if ref.region != e.region {
				a["kms_key_id"] = deref(in.KmsKeyId)
				if in.DBSubnetGroup != nil {
					a["subnet_group"] = deref(in.DBSubnetGroup.DBSubnetGroupName)
				}
			}
			// The "read replication" status RDS reports (replicating, error, stopped, ...):
			// shown by status, never diffed (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DBInstanceStatusInfo.html).
			repl := ""
			for _, si := range in.StatusInfos {
				if deref(si.StatusType) == "read replication" {
					repl = deref(si.Status)
				}
			}
			st := &State{Kind: kindReplica, Name: deref(in.DBInstanceIdentifier), ID: deref(in.DBInstanceArn), Status: deref(in.DBInstanceStatus),
				Attrs: a, Tags: tags, Out: map[string]string{"region": ref.region, "resource_id": deref(in.DbiResourceId), "replication": repl}}
			if in.Endpoint != nil {
				st.Out["address"] = deref(in.Endpoint.Address)
				st.Out["port"] = strconv.Itoa(int(deref(in.Endpoint.Port)))
			}
			res = append(res, st)
		}
	}
	return res, nil
}

// normalize: with no availability_zone in the spec, the one AWS chose is not a difference.
func (replicaHandler) normalize(d, o *State) {
	if _, ok := d.Attrs["availability_zone"]; !ok {
		delete(o.Attrs, "availability_zone")
	}
}

func (replicaHandler) create(ctx context.Context, e *env, d *State) error {
	region := d.Attrs["region"]
	// The source must be available (RDS refuses a replica of a busy source), e.g. right
	// after an earlier replica was created or a modification was made.
	if _, err := e.p.waitReady(ctx, instanceHandler{}, e, e.spec.Name); err != nil {
		return err
	}
	c, err := rdsIn(ctx, e, region)
	if err != nil {
		return err
	}
	in := &rds.CreateDBInstanceReadReplicaInput{DBInstanceIdentifier: aws.String(d.Name), SourceDBInstanceIdentifier: aws.String(d.Attrs["source"]),
		DBInstanceClass: aws.String(d.Attrs["class"]), EnableIAMDatabaseAuthentication: aws.Bool(true), PubliclyAccessible: aws.Bool(false),
		CopyTagsToSnapshot: aws.Bool(true), Tags: rdsTagList(d.Tags), VpcSecurityGroupIds: splitList(d.Attrs["security_groups"])}
	if az := d.Attrs["availability_zone"]; az != "" {
		in.AvailabilityZone = aws.String(az)
	}
	if region != e.region {
		// KmsKeyId of the destination Region, and SourceRegion: the SDK presigns the
		// CreateDBInstanceReadReplica request for the source Region (PreSignedUrl).
		in.KmsKeyId, in.DBSubnetGroupName, in.SourceRegion = aws.String(d.Attrs["kms_key_id"]), aws.String(d.Attrs["subnet_group"]), aws.String(e.region)
	}
	_, err = c.CreateDBInstanceReadReplica(ctx, in)
	return awsErr(kindReplica, d.Name, "rds:CreateDBInstanceReadReplica", err)
}

func (replicaHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	c, err := rdsIn(ctx, e, o.Out["region"])
	if err != nil {
		return err
	}
	in := &rds.ModifyDBInstanceInput{DBInstanceIdentifier: aws.String(d.Name), ApplyImmediately: aws.Bool(true)}
	changed := false
	for _, f := range fields {
		switch f.Field {
		case "class":
			in.DBInstanceClass, changed = aws.String(f.To), true
		case "iam_auth":
			in.EnableIAMDatabaseAuthentication, changed = aws.Bool(true), true
		case "security_groups":
			in.VpcSecurityGroupIds, changed = splitList(f.To), true
		}
	}
	if changed {
		if _, err := c.ModifyDBInstance(ctx, in); err != nil {
			return awsErr(kindReplica, d.Name, "rds:ModifyDBInstance", err)
		}
	}
	tags := tagChanges(fields, d)
	if len(tags) == 0 {
		return nil
	}
	_, err = c.AddTagsToResource(ctx, &rds.AddTagsToResourceInput{ResourceName: aws.String(o.ID), Tags: rdsTagList(tags)})
	return awsErr(kindReplica, d.Name, "rds:AddTagsToResource", err)
}

// delete: a read replica takes no final snapshot (API_DeleteDBInstance: FinalDBSnapshotIdentifier
// "can't be specified when deleting a read replica"); its data is the source's.
func (replicaHandler) delete(ctx context.Context, e *env, o *State) error {
	c, err := rdsIn(ctx, e, o.Out["region"])
	if err != nil {
		return err
	}
	_, err = c.DeleteDBInstance(ctx, &rds.DeleteDBInstanceInput{DBInstanceIdentifier: aws.String(o.Name), SkipFinalSnapshot: aws.Bool(true), DeleteAutomatedBackups: aws.Bool(true)})
	if isCode(err, "DBInstanceNotFound", "DBInstanceNotFoundFault") {
		return nil
	}
	return awsErr(kindReplica, o.Name, "rds:DeleteDBInstance", err)
}

// ready: the same DB instance states as the source ("Viewing Amazon RDS DB instance status",
// https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/accessing-monitoring.html).
func (replicaHandler) ready(o *State) (bool, error) { return instanceHandler{}.ready(o) }

func (replicaHandler) export(e *env, o *State) {
	for k, v := range o.Out {
		e.out["replica."+o.Name+"."+k] = v
	}
}

// replicaOutputs are the spec's replicas as far as they exist, in spec order.
func (e *env) replicaOutputs() []ReplicaOut {
	var out []ReplicaOut
	for _, r := range e.spec.Replicas {
		id := e.spec.ReplicaID(r)
		k := "replica." + id + "."
		ro := ReplicaOut{Name: r.Name, ID: id, Region: e.spec.ReplicaRegion(r), ResourceID: e.out[k+"resource_id"]}
		if addr := e.out[k+"address"]; addr != "" {
			port := e.out[k+"port"]
			ro.Path = &PathOut{Name: "replica-" + r.Name, Address: addr + ":" + port, TLSServerName: addr, TokenHost: addr + ":" + port}
		}
		out = append(out, ro)
	}
	return out
}

// replicaConnectResources are the rds-db:connect ARNs of user on every spec replica, each in
// its own Region; Unknown while a replica does not exist yet.
func replicaConnectResources(e *env, user string) []string {
	var out []string
	for _, r := range e.replicaOutputs() {
		if r.ResourceID == "" {
			out = append(out, Unknown)
			continue
		}
		out = append(out, fmt.Sprintf("arn:aws:rds-db:%s:%s:dbuser:%s/%s", r.Region, e.account, r.ResourceID, user))
	}
	return out
}
