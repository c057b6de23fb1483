package provision

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// ReplicaSpec is one read replica of the database's instance, in its Region or another.
type ReplicaSpec struct {
	// Name is the suffix of the replica's identifier: NAME-SUFFIX.
	Name string `yaml:"name"`
	// Region empty (or the database's) = an in-Region replica.
	Region string `yaml:"region"`
	// Class empty = instance.class.
	Class string `yaml:"class"`
	// AvailabilityZone empty = AWS chooses.
	AvailabilityZone string `yaml:"availability_zone"`
	// Cross-Region only: the destination Region's KMS key ARN (the source is always encrypted
	// and KMS keys are regional), its DB subnet group and VPC security groups (that Region's
	// network is not ours, as network.* is not at home).
	KMSKeyID         string   `yaml:"kms_key_id"`
	DBSubnetGroup    string   `yaml:"db_subnet_group"`
	SecurityGroupIDs []string `yaml:"security_group_ids"`
}

// ReaderSpec tunes the reader listener the sidecar config gets when there are replicas.
type ReaderSpec struct {
	// MaxReplicaLag leaves out a replica lagging more than this; 0 = 30s.
	MaxReplicaLag time.Duration `yaml:"max_replica_lag"`
}

// DefaultMaxReplicaLag is the reader listener's max_replica_lag when the spec sets none.
const DefaultMaxReplicaLag = 30 * time.Second

// maxReplicas is RDS's limit of read replicas per MySQL, MariaDB or PostgreSQL source
// (API_CreateDBInstanceReadReplica, SourceDBInstanceIdentifier).
const maxReplicas = 15

var (
	replicaSuffixRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	kmsKeyARNRE     = regexp.MustCompile(`^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:key/.+$`)
	subnetGroupRE   = regexp.MustCompile(`^[a-zA-Z0-9 ._-]{1,255}$`)
)

// ReplicaID is the RDS identifier of a replica.
func (s *Spec) ReplicaID(r ReplicaSpec) string { return s.Name + "-" + r.Name }

// CrossRegion reports whether the replica lives outside the database's Region.
func (s *Spec) CrossRegion(r ReplicaSpec) bool { return r.Region != "" && r.Region != s.Region }

// ReplicaRegion is the Region the replica lives in.
func (s *Spec) ReplicaRegion(r ReplicaSpec) string {
	if r.Region == "" {
		return s.Region
	}
	return r.Region
}

func (s *Spec) validateReplicas(add func(string, string, ...any)) {
	if len(s.Replicas) == 0 {
		return
	}
	if len(s.Replicas) > maxReplicas {
		add("replicas", "at most %d read replicas per source instance (RDS's limit); got %d", maxReplicas, len(s.Replicas))
	}
	// RDS refuses a replica of a source without automated backups (InvalidDBInstanceState);
	// say so before anything is created.
	if s.Instance.BackupRetentionDays == 0 {
		add("instance.backup_retention_days", "read replicas need automated backups on the source: set 1-35 (RDS refuses CreateDBInstanceReadReplica otherwise)")
	}
	if s.Reader.MaxReplicaLag < 0 {
		add("reader.max_replica_lag", "must not be negative")
	}
	seen := map[string]int{}
	for i, r := range s.Replicas {
		p := fmt.Sprintf("replicas[%d]", i)
		id := s.ReplicaID(r)
		switch {
		case !replicaSuffixRE.MatchString(r.Name):
			add(p+".name", "must be a-z, 0-9 and '-', not starting or ending with '-' (got %q)", r.Name)
		case strings.Contains(id, "--") || len(id) > 63:
			add(p+".name", "the replica's identifier %q must be at most 63 characters without '--'", id)
		}
		if j, dup := seen[r.Name]; dup {
			add(p+".name", "%q is already the name of replicas[%d]", r.Name, j)
		}
		seen[r.Name] = i
		if r.Region != "" && !regionRE.MatchString(r.Region) {
			add(p+".region", "must be an AWS region such as eu-west-1 (got %q)", r.Region)
		}
		if r.Class != "" && !classRE.MatchString(r.Class) {
			add(p+".class", "must be an RDS instance class such as db.t4g.medium (got %q)", r.Class)
		}
		region := s.ReplicaRegion(r)
		if r.AvailabilityZone != "" && (!strings.HasPrefix(r.AvailabilityZone, region) || len(r.AvailabilityZone) != len(region)+1) {
			add(p+".availability_zone", "must be an Availability Zone of %s such as %sa (got %q)", region, region, r.AvailabilityZone)
		}
		if !s.CrossRegion(r) {
			// An in-Region replica uses the source's KMS key, subnet group and our security group.
			for _, f := range []struct {
				key string
				set bool
			}{{"kms_key_id", r.KMSKeyID != ""}, {"db_subnet_group", r.DBSubnetGroup != ""}, {"security_group_ids", len(r.SecurityGroupIDs) > 0}} {
				if f.set {
					add(p+"."+f.key, "only for a replica in another region (an in-region replica uses the source's)")
				}
			}
			continue
		}
		if m := kmsKeyARNRE.FindStringSubmatch(r.KMSKeyID); m == nil || m[1] != r.Region {
			add(p+".kms_key_id", "required for a cross-region replica: the key ARN of a KMS key in %s (the source is encrypted and KMS keys are regional)", r.Region)
		}
		if !subnetGroupRE.MatchString(r.DBSubnetGroup) {
			add(p+".db_subnet_group", "required for a cross-region replica: an existing DB subnet group in %s", r.Region)
		}
		if len(r.SecurityGroupIDs) == 0 {
			add(p+".security_group_ids", "required for a cross-region replica: security groups of that VPC allowing the engine port")
		}
		checkList(add, p+".security_group_ids", r.SecurityGroupIDs, sgRE, "a security group id (sg-...)")
	}
}
