package fakeaws

import (
	"fmt"
	"net/url"
	"strings"
)

// RDS read replicas (CreateDBInstanceReadReplica), in the source's Region and in others.
// Modelled from the RDS API reference and user guide:
//   - https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstanceReadReplica.html
//     (the source must have backup retention enabled; replicas are created with backups
//     disabled and inherit the rest; same-Region replicas use the source's KMS key,
//     cross-Region ones need a KmsKeyId of the destination Region and a PreSignedUrl, which
//     the SDKs generate from SourceRegion; a cross-Region source is named by its ARN; up to
//     15 replicas per source instance).
//   - https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DBInstanceStatusInfo.html
//     (StatusInfos: StatusType "read replication", Status replicating / error / stopped /
//     terminated / replication stop point set / reached, Normal false in error).
//   - https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DeleteDBInstance.html
//     (FinalDBSnapshotIdentifier can't be specified when deleting a read replica).
//   - https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ReadRepl.html, "Considerations
//     when deleting replicas" (a source deleted with its replicas still there: each replica
//     is promoted to a standalone instance), and USER_ReadRepl.XRgn.html for cross-Region ones.
//
// Not modelled: replica lag. ReplicaLag is a CloudWatch metric
// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-metrics.html), not a field of
// DescribeDBInstances, and the fake speaks no CloudWatch; SetReplicationStatus sets what
// StatusInfos reports (e.g. error when replication broke), which is what RDS's API shows.

// replication is an instance's place in a replication tree.
type replication struct {
	// source is the ReadReplicaSourceDBInstanceIdentifier: the source's id in the same
	// Region, its ARN from another Region; "" = not a replica.
	source string
	// replicas are the ReadReplicaDBInstanceIdentifiers: ids in the same Region, ARNs in others.
	replicas []string
	// status and message are the "read replication" StatusInfo of a replica.
	status, message string
}

// maxReplicas is the per-source limit of MySQL, MariaDB and PostgreSQL sources.
const maxReplicas = 15

// instKey is the key of an instance or subnet group of region in the fake's maps.
func (st *state) instKey(region, id string) string {
	id = strings.ToLower(id)
	if region == st.home || region == "" {
		return id
	}
	return region + "/" + id
}

// instanceByRef finds an instance by id in region, or by ARN in any Region.
func (st *state) instanceByRef(region, ref string) *dbInstance {
	if strings.HasPrefix(ref, "arn:") {
		for _, in := range st.instances {
			if in.arn == ref {
				return in
			}
		}
		return nil
	}
	return st.instances[st.instKey(region, ref)]
}

func (st *state) createReadReplica(c *reqCtx) (any, *apiError) {
	id := strings.ToLower(c.get("DBInstanceIdentifier"))
	if id == "" || c.get("SourceDBInstanceIdentifier") == "" {
		return nil, errf(400, "MissingParameter", "DBInstanceIdentifier and SourceDBInstanceIdentifier are required.")
	}
	if st.instances[st.instKey(c.region, id)] != nil {
		return nil, errf(400, "DBInstanceAlreadyExists", "DB instance already exists")
	}
	ref := c.get("SourceDBInstanceIdentifier")
	src := st.instanceByRef(c.region, ref)
	if src == nil || src.status == "deleted" {
		// A source in another Region must be named by its ARN; a plain id is looked up here.
		return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", ref)
	}
	cross := src.region != c.region
	if src.status != "available" && src.status != "storage-optimization" {
		return nil, errf(400, "InvalidDBInstanceState", "DB Instance %s is not in available state (%s).", src.id, src.status)
	}
	if src.backup == 0 {
		return nil, errf(400, "InvalidDBInstanceState", "Automated backups are not enabled for this database instance. To enable automated backups, use ModifyDBInstance to set the backup retention period to a non-zero value.")
	}
	if len(src.replica.replicas) >= maxReplicas {
		return nil, errf(400, "InvalidDBInstanceState", "DB Instance %s already has the maximum number of read replicas (%d).", src.id, maxReplicas)
	}
	in := &dbInstance{id: id, region: c.region, arn: c.arn("rds", "db:"+id), resID: "db-" + strings.ToUpper(st.id("", 26)),
		class: src.class, engine: src.engine, version: src.version, masterUser: src.masterUser,
		storage: src.storage, maxStorage: src.maxStorage, encrypted: src.encrypted, kms: src.kms,
		iamAuth: src.iamAuth, paramGroup: src.paramGroup, paramApply: "in-sync", port: src.port,
		subnetGroup: src.subnetGroup, sgs: append([]string(nil), src.sgs...), tags: c.tagsFrom("Tags"),
		multiAZ: c.boolean("MultiAZ"), endpoint: fmt.Sprintf("%s.c%s.%s.rds.amazonaws.com", id, st.id("", 10), c.region)}
	if v := c.get("DBInstanceClass"); v != "" {
		in.class = v
	}
	if c.has("EnableIAMDatabaseAuthentication") {
		in.iamAuth = c.boolean("EnableIAMDatabaseAuthentication")
	}
	if cross {
		// A cross-Region replica: default parameter group of the engine, the subnet group
		// named (of this Region), and for an encrypted source a KMS key of this Region plus
		// the presigned request to the source Region.
		in.paramGroup = "default." + in.engine + strings.Split(in.version, ".")[0]
		in.subnetGroup, in.sgs = "", nil
		if src.encrypted {
			k := c.get("KmsKeyId")
			if k == "" {
				return nil, errf(400, "InvalidParameterCombination", "KmsKeyId is required to create an encrypted read replica in a different Region.")
			}
			key := st.kmsKey(k)
			if key == nil || !strings.Contains(key.arn, ":"+c.region+":") {
				return nil, errf(400, "KMSKeyNotAccessibleFault", "The specified KMS key %s does not exist or is not accessible in %s.", k, c.region)
			}
			in.kms = key.arn
			if aerr := checkPresignedReplica(c, src); aerr != nil {
				return nil, aerr
			}
		}
	}
	if g := c.get("DBSubnetGroupName"); g != "" {
		sg := st.subnetGroups[st.instKey(c.region, g)]
		if sg == nil {
			return nil, errf(404, "DBSubnetGroupNotFoundFault", "DBSubnetGroup %s not found.", g)
		}
		in.subnetGroup = st.instKey(c.region, g)
	} else if cross {
		return nil, errf(400, "InvalidParameterCombination", "DBSubnetGroupName is required for a cross-Region read replica in a VPC.")
	}
	if sgs := c.strs("VpcSecurityGroupIds"); len(sgs) > 0 {
		for _, g := range sgs {
			if st.sgs[g] == nil && !cross {
				return nil, errf(400, "InvalidParameterValue", "Invalid security group , groupId= %s, groupId=.", g)
			}
		}
		in.sgs = sgs
	}
	// No AvailabilityZone: "a random, system-chosen Availability Zone in the endpoint's Region".
	in.az = c.region + "b"
	if az := c.get("AvailabilityZone"); az != "" {
		if !strings.HasPrefix(az, c.region) {
			return nil, errf(400, "InvalidParameterValue", "Availability Zone %s is not in Region %s.", az, c.region)
		}
		in.az = az
	}
	in.replica = replication{source: src.id, status: "replicating"}
	srcRef := in.id
	if cross {
		in.replica.source, srcRef = src.arn, in.arn
	}
	src.replica.replicas = append(src.replica.replicas, srcRef)
	in.set("creating", "available")
	st.instances[st.instKey(c.region, id)] = in
	return []X{st.instanceX(in)}, nil
}

// checkPresignedReplica: the presigned URL is a CreateDBInstanceReadReplica request for the
// source Region carrying DestinationRegion and the same KmsKeyId and source ARN
// (API_CreateDBInstanceReadReplica, PreSignedUrl).
func checkPresignedReplica(c *reqCtx, src *dbInstance) *apiError {
	raw := c.get("PreSignedUrl")
	if raw == "" {
		return errf(400, "InvalidParameterValue", "PreSignedUrl is required to create an encrypted read replica from another Region (set SourceRegion in the SDK).")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errf(400, "InvalidParameterValue", "PreSignedUrl is not a URL.")
	}
	q := u.Query()
	switch {
	case q.Get("Action") != "CreateDBInstanceReadReplica":
		return errf(400, "InvalidParameterValue", "PreSignedUrl is not a CreateDBInstanceReadReplica request.")
	case q.Get("DestinationRegion") != c.region:
		return errf(400, "InvalidParameterValue", "PreSignedUrl's DestinationRegion %q is not %s.", q.Get("DestinationRegion"), c.region)
	case q.Get("SourceDBInstanceIdentifier") != src.arn:
		return errf(400, "InvalidParameterValue", "PreSignedUrl's SourceDBInstanceIdentifier is not %s.", src.arn)
	case !strings.Contains(q.Get("X-Amz-Credential"), "/"+src.region+"/rds/"):
		return errf(400, "InvalidParameterValue", "PreSignedUrl is not signed for the source Region %s.", src.region)
	}
	return nil
}

// deleteReplicaRules applies to DeleteDBInstance: a replica takes no final snapshot, and a
// source's replicas are promoted once it is gone (done here, at the delete, for simplicity).
func (st *state) deleteReplicaRules(c *reqCtx, in *dbInstance) *apiError {
	if in.replica.source != "" && c.get("FinalDBSnapshotIdentifier") != "" {
		return errf(400, "InvalidParameterCombination", "FinalDBSnapshotIdentifier can't be specified when deleting a read replica.")
	}
	if in.replica.source != "" {
		// The replica leaves its source's list.
		if src := st.instanceByRef(in.region, in.replica.source); src != nil {
			src.replica.replicas = remove(src.replica.replicas, in.id)
			src.replica.replicas = remove(src.replica.replicas, in.arn)
		}
		in.replica.source = ""
	}
	for _, ref := range in.replica.replicas {
		if r := st.instanceByRef(in.region, ref); r != nil {
			r.replica = replication{}
		}
	}
	in.replica.replicas = nil
	return nil
}

// replicationX renders the replication fields of DescribeDBInstances.
func (st *state) replicationX(in *dbInstance) []X {
	var out []X
	if in.replica.source != "" {
		out = append(out, T("ReadReplicaSourceDBInstanceIdentifier", in.replica.source))
		normal := in.replica.status != "error"
		info := []X{T("StatusType", "read replication"), T("Status", in.replica.status), T("Normal", b2s(normal))}
		if in.replica.message != "" {
			info = append(info, T("Message", in.replica.message))
		}
		out = append(out, E("StatusInfos", E("DBInstanceStatusInfo", info...)))
	}
	if len(in.replica.replicas) > 0 {
		var ids []X
		for _, r := range in.replica.replicas {
			ids = append(ids, T("ReadReplicaDBInstanceIdentifier", r))
		}
		out = append(out, E("ReadReplicaDBInstanceIdentifiers", ids...))
	}
	return out
}

// SeedDBSubnetGroup creates a DB subnet group in region, as a team's network stack in that
// Region would have (the provisioner only creates the one of the database's own Region).
func (s *Server) SeedDBSubnetGroup(region, name string, subnets []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := s.st.instKey(region, name)
	s.st.subnetGroups[key] = &subnetGroup{name: strings.ToLower(name), region: region, desc: "seeded",
		arn: fmt.Sprintf("arn:aws:rds:%s:%s:subgrp:%s", region, s.cfg.AccountID, strings.ToLower(name)), vpc: "vpc-0e1d2c3b4a5968778",
		subnets: subnets, tags: map[string]string{}}
}

// SeedKMSKeyIn creates a customer managed key in region (KMS keys are regional) and returns
// its ARN.
func (s *Server) SeedKMSKeyIn(region string) string {
	_, arn := s.SeedKMSKey()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.st.kmsKeys {
		if k.arn == arn {
			k.arn = strings.Replace(arn, ":"+s.cfg.Region+":", ":"+region+":", 1)
			return k.arn
		}
	}
	return arn
}

// ReplicaInfo is a read replica as the fake holds it.
type ReplicaInfo struct {
	Region, Status, Class, Source, KMSKeyID, SubnetGroup, AvailabilityZone string
	IAMAuth, Encrypted                                                     bool
	BackupRetention                                                        int32
	Tags                                                                   map[string]string
	ReplicationStatus                                                      string
}

// Replica reports the instance id of region ("" = the fake's Region) with its replication
// fields, without counting as a poll.
func (s *Server) Replica(region, id string) (ReplicaInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.st.instances[s.st.instKey(region, id)]
	if in == nil || in.status == "deleted" {
		return ReplicaInfo{}, false
	}
	return ReplicaInfo{Region: in.region, Status: in.status, Class: in.class, Source: in.replica.source, KMSKeyID: in.kms,
		SubnetGroup: in.subnetGroup, AvailabilityZone: in.az, IAMAuth: in.iamAuth, Encrypted: in.encrypted, BackupRetention: in.backup,
		Tags: copyTags(in.tags), ReplicationStatus: in.replica.status}, true
}

// SetReplicationStatus sets a replica's "read replication" StatusInfo (replicating, error,
// stopped, terminated, ...) and its message.
func (s *Server) SetReplicationStatus(region, id, status, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.st.instances[s.st.instKey(region, id)]; in != nil && in.replica.source != "" {
		in.replica.status, in.replica.message = status, message
	}
}

// SetInstanceClass changes an instance's class behind the provisioner's back (drift).
func (s *Server) SetInstanceClass(region, id, class string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.st.instances[s.st.instKey(region, id)]; in != nil {
		in.class = class
	}
}
