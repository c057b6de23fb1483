// Package provision turns one database spec (a YAML file per database) into the AWS resources the
// sidecar needs, owned by tag, and writes the sidecar's config for that database. It plans from
// observed state on every run, so apply is idempotent and resumes after an interruption.
package provision

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Spec is one database as ops declare it. Field names are the YAML keys (snake_case).
type Spec struct {
	Name        string            `yaml:"name"`
	Region      string            `yaml:"region"`
	Tags        map[string]string `yaml:"tags"`
	Engine      EngineSpec        `yaml:"engine"`
	Instance    InstanceSpec      `yaml:"instance"`
	Network     NetworkSpec       `yaml:"network"`
	Access      AccessSpec        `yaml:"access"`
	PrivateLink PrivateLinkSpec   `yaml:"privatelink"`
	// Replicas are read replicas of the instance (spec_replicas.go); Reader tunes the sidecar's
	// reader listener for them.
	Replicas []ReplicaSpec `yaml:"replicas"`
	Reader   ReaderSpec    `yaml:"reader"`
}

type EngineSpec struct {
	Type    string `yaml:"type"`    // postgres | mysql
	Version string `yaml:"version"` // e.g. "16.4"
}

type InstanceSpec struct {
	Class               string `yaml:"class"`
	StorageGB           int32  `yaml:"storage_gb"`
	MaxStorageGB        int32  `yaml:"max_storage_gb"` // storage autoscaling limit; 0 = off
	MultiAZ             bool   `yaml:"multi_az"`
	BackupRetentionDays int32  `yaml:"backup_retention_days"`
	DeletionProtection  bool   `yaml:"deletion_protection"`
	KMSKeyID            string `yaml:"kms_key_id"` // empty = the AWS managed key for RDS
	MasterUsername      string `yaml:"master_username"`
	// MasterPassword: "secret" creates our own Secrets Manager secret (the proxy reads it);
	// "rds-managed" lets RDS create and rotate it (ManageMasterUserPassword).
	MasterPassword string `yaml:"master_password"`
	// Parameters go into the instance's parameter group rdsvalet-NAME, on top of the TLS one.
	Parameters map[string]string `yaml:"parameters"`
}

type NetworkSpec struct {
	VPCID                   string   `yaml:"vpc_id"`
	SubnetIDs               []string `yaml:"subnet_ids"`
	AllowedSecurityGroupIDs []string `yaml:"allowed_security_group_ids"`
	AllowedCIDRs            []string `yaml:"allowed_cidrs"`
}

type AccessSpec struct {
	// Identity is how pods get the IAM role: irsa (default) or pod-identity (identity.go).
	Identity        string           `yaml:"identity"`
	OIDCProviderARN string           `yaml:"oidc_provider_arn"`
	OIDCIssuerURL   string           `yaml:"oidc_issuer_url"` // irsa: create the OIDC provider when missing
	ClusterName     string           `yaml:"cluster_name"`    // pod-identity: the EKS cluster
	ServiceAccounts []ServiceAccount `yaml:"service_accounts"`
	// SyncTargetsPrincipal, when set, gets a role rdsvalet-NAME-sync-targets to run
	// sync-targets from another account (identity.go).
	SyncTargetsPrincipal string `yaml:"sync_targets_principal"`
	// Database (PostgreSQL) is where the db users' grants are made; empty = postgres.
	Database string `yaml:"database"`
}

type ServiceAccount struct {
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
	DBUser    string `yaml:"db_user"`
	// Grants in internal/dbusers' grammar: readonly, readwrite, LEVEL on schema NAME.
	Grants []string `yaml:"grants"`
}

type PrivateLinkSpec struct {
	Enabled           bool          `yaml:"enabled"`
	AllowedPrincipals []string      `yaml:"allowed_principals"`
	Consumer          *ConsumerSpec `yaml:"consumer"`
}

type ConsumerSpec struct {
	VPCID            string   `yaml:"vpc_id"`
	SubnetIDs        []string `yaml:"subnet_ids"`
	SecurityGroupIDs []string `yaml:"security_group_ids"`
	AssumeRoleARN    string   `yaml:"assume_role_arn"` // empty = same account as the provider
}

// Port is the engine's listener port, used for the instance, proxy, NLB and sidecar paths.
func (s *Spec) Port() int32 {
	if s.Engine.Type == "mysql" {
		return 3306
	}
	return 5432
}

// LoadSpec reads and strictly decodes a spec (unknown keys are errors), applies defaults and
// validates it.
func LoadSpec(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	s, err := ParseSpec(b)
	if err != nil {
		return nil, fmt.Errorf("spec %s: %w", path, err)
	}
	return s, nil
}

// ParseSpec decodes, defaults and validates a spec document.
func ParseSpec(b []byte) (*Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s Spec
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty spec")
		}
		return nil, fmt.Errorf("decode: %w", err)
	}
	s.applyDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Spec) applyDefaults() {
	if s.Instance.MasterUsername == "" {
		s.Instance.MasterUsername = "rdsadmin_valet"
		if s.Engine.Type == "mysql" {
			s.Instance.MasterUsername = "valetadmin"
		}
	}
	if s.Instance.MasterPassword == "" {
		s.Instance.MasterPassword = "secret"
	}
}

// FieldError is one problem in the spec, at a YAML key path.
type FieldError struct {
	Path string
	Msg  string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Msg }

// ValidationError carries every problem found, so ops fix the file in one round.
type ValidationError struct{ Errors []FieldError }

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		msgs[i] = fe.Error()
	}
	return fmt.Sprintf("invalid spec (%d problems):\n  %s", len(msgs), strings.Join(msgs, "\n  "))
}

var (
	// RDS identifiers: letter first, letters/digits/hyphens, no double or trailing hyphen.
	nameRE     = regexp.MustCompile(`^[a-z][a-z0-9-]{0,20}[a-z0-9]$`)
	regionRE   = regexp.MustCompile(`^[a-z]{2}(-gov)?-[a-z]+-\d$`)
	vpcRE      = regexp.MustCompile(`^vpc-[0-9a-f]{8,17}$`)
	subnetRE   = regexp.MustCompile(`^subnet-[0-9a-f]{8,17}$`)
	sgRE       = regexp.MustCompile(`^sg-[0-9a-f]{8,17}$`)
	cidrRE     = regexp.MustCompile(`^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$`)
	classRE    = regexp.MustCompile(`^db\.[a-z0-9]+\.[a-z0-9]+$`)
	oidcRE     = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/.+$`)
	roleARNRE  = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/.+$`)
	principalR = regexp.MustCompile(`^(\*|arn:aws[a-z-]*:iam::\d{12}:(root|role/[\w+=,.@-]+|user/[\w+=,.@-]+))$`)
	k8sNameRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	dbUserRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
	tagKeyRE   = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$`)
)

// Validate reports every problem with its field path.
func (s *Spec) Validate() error {
	var errs []FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if !nameRE.MatchString(s.Name) {
		add("name", "must be 2-22 chars of a-z, 0-9 and '-', starting with a letter (got %q)", s.Name)
	} else if strings.Contains(s.Name, "--") {
		add("name", "must not contain '--'")
	}
	if !regionRE.MatchString(s.Region) {
		add("region", "must be an AWS region such as us-east-1 (got %q)", s.Region)
	}
	// Every resource carries the owning team and a contact, so whoever finds it in the
	// account knows whom to ask.
	for _, k := range []string{"team", "owner"} {
		if s.Tags[k] == "" {
			add("tags."+k, "required (who owns this database)")
		}
	}
	keys := make([]string, 0, len(s.Tags))
	for k := range s.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, "aws:") || strings.HasPrefix(k, TagPrefix) {
			add("tags."+k, "prefixes aws: and %s are reserved", TagPrefix)
		} else if !tagKeyRE.MatchString(k) {
			add("tags."+k, "not a valid tag key")
		}
		if len(s.Tags[k]) > 256 {
			add("tags."+k, "value longer than 256 characters")
		}
	}
	switch s.Engine.Type {
	case "postgres", "mysql":
	default:
		add("engine.type", "must be postgres or mysql (got %q)", s.Engine.Type)
	}
	if s.Engine.Version == "" {
		add("engine.version", "required (e.g. \"16.4\")")
	}
	in := s.Instance
	if !classRE.MatchString(in.Class) {
		add("instance.class", "must be an RDS instance class such as db.t4g.medium (got %q)", in.Class)
	}
	if in.StorageGB < 20 || in.StorageGB > 65536 {
		add("instance.storage_gb", "must be between 20 and 65536 (got %d)", in.StorageGB)
	}
	// RDS requires the autoscaling limit to be at least 10% above the allocated storage.
	if in.MaxStorageGB != 0 && int64(in.MaxStorageGB)*10 < int64(in.StorageGB)*11 {
		add("instance.max_storage_gb", "must be 0 (no autoscaling) or at least 10%% above storage_gb (got %d)", in.MaxStorageGB)
	}
	if in.BackupRetentionDays < 0 || in.BackupRetentionDays > 35 {
		add("instance.backup_retention_days", "must be between 0 and 35 (got %d)", in.BackupRetentionDays)
	}
	if !dbUserRE.MatchString(in.MasterUsername) {
		add("instance.master_username", "must be 1-63 letters, digits or '_', starting with a letter")
	}
	switch in.MasterPassword {
	case "secret", "rds-managed":
	default:
		add("instance.master_password", "must be secret or rds-managed (got %q)", in.MasterPassword)
	}
	if in.KMSKeyID != "" && !strings.HasPrefix(in.KMSKeyID, "arn:") && !strings.HasPrefix(in.KMSKeyID, "alias/") && !kmsKeyIDRE.MatchString(in.KMSKeyID) {
		add("instance.kms_key_id", "must be a key id, key ARN, alias/NAME or alias ARN")
	}
	validateParameters(add, s)
	n := s.Network
	if !vpcRE.MatchString(n.VPCID) {
		add("network.vpc_id", "must be a VPC id (vpc-...) (got %q)", n.VPCID)
	}
	if len(n.SubnetIDs) < 2 {
		add("network.subnet_ids", "at least two subnets in different AZs are required by RDS")
	}
	checkList(add, "network.subnet_ids", n.SubnetIDs, subnetRE, "a subnet id (subnet-...)")
	checkList(add, "network.allowed_security_group_ids", n.AllowedSecurityGroupIDs, sgRE, "a security group id (sg-...)")
	checkList(add, "network.allowed_cidrs", n.AllowedCIDRs, cidrRE, "an IPv4 CIDR")
	if len(n.AllowedSecurityGroupIDs)+len(n.AllowedCIDRs) == 0 {
		add("network", "set allowed_security_group_ids or allowed_cidrs: nothing could reach the database")
	}
	a := s.Access
	validateIdentity(add, a)
	seenSA := map[string]bool{}
	for i, sa := range a.ServiceAccounts {
		p := fmt.Sprintf("access.service_accounts[%d]", i)
		if !k8sNameRE.MatchString(sa.Namespace) || len(sa.Namespace) > 63 {
			add(p+".namespace", "must be a Kubernetes namespace name (got %q)", sa.Namespace)
		}
		if !k8sNameRE.MatchString(sa.Name) {
			add(p+".name", "must be a Kubernetes ServiceAccount name (got %q)", sa.Name)
		}
		if !dbUserRE.MatchString(sa.DBUser) {
			add(p+".db_user", "must be 1-63 letters, digits or '_', starting with a letter (got %q)", sa.DBUser)
		}
		if sa.DBUser == in.MasterUsername {
			add(p+".db_user", "must not be the master user")
		}
		key := sa.Namespace + "/" + sa.Name
		if seenSA[key] {
			add(p, "duplicate ServiceAccount %s", key)
		}
		seenSA[key] = true
	}
	s.validateDBUsers(add)
	s.validateReplicas(add)
	pl := s.PrivateLink
	// Principal ARNs take no path: EC2 refuses them (API_ModifyVpcEndpointServicePermissions).
	// A consumer section with enabled: false says where our consumer endpoint is, so turning
	// PrivateLink off deletes it before the endpoint service (which AWS refuses while connected).
	if !pl.Enabled && len(pl.AllowedPrincipals) > 0 {
		add("privatelink.enabled", "must be true when allowed_principals are set")
	}
	checkList(add, "privatelink.allowed_principals", pl.AllowedPrincipals, principalR, "an IAM principal ARN without a path (account root, role or user) or *")
	if c := pl.Consumer; c != nil {
		if !vpcRE.MatchString(c.VPCID) {
			add("privatelink.consumer.vpc_id", "must be a VPC id (got %q)", c.VPCID)
		}
		if len(c.SubnetIDs) == 0 {
			add("privatelink.consumer.subnet_ids", "at least one subnet is required")
		}
		checkList(add, "privatelink.consumer.subnet_ids", c.SubnetIDs, subnetRE, "a subnet id")
		checkList(add, "privatelink.consumer.security_group_ids", c.SecurityGroupIDs, sgRE, "a security group id")
		if c.AssumeRoleARN != "" && !roleARNRE.MatchString(c.AssumeRoleARN) {
			add("privatelink.consumer.assume_role_arn", "must be an IAM role ARN")
		}
	}
	if len(errs) > 0 {
		return &ValidationError{Errors: errs}
	}
	return nil
}

func checkList(add func(string, string, ...any), path string, vals []string, re *regexp.Regexp, what string) {
	seen := map[string]bool{}
	for i, v := range vals {
		p := fmt.Sprintf("%s[%d]", path, i)
		if !re.MatchString(v) {
			add(p, "must be %s (got %q)", what, v)
		}
		if seen[v] {
			add(p, "duplicate %q", v)
		}
		seen[v] = true
	}
}
