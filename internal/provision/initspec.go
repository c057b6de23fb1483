package provision

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// InitOptions are the few answers `provisioner init` needs for a new database's spec; the rest
// gets safe defaults, each explained by a comment in the file.
type InitOptions struct {
	Name, Engine, EngineVersion, Region string
	VPCID                               string
	SubnetIDs                           []string
	AllowedSecurityGroupIDs             []string
	AllowedCIDRs                        []string
	Team, Owner                         string
	OIDCProviderARN                     string
	// ServiceAccounts are "namespace/name=db_user".
	ServiceAccounts []string
	InstanceClass   string
}

// DefaultEngineVersion is the version init writes when none is given.
var DefaultEngineVersion = map[string]string{"postgres": "16.4", "mysql": "8.0.39"}

// RenderSpec writes a commented spec for a new database and checks it the way apply will
// (strict decoding and validation), so what init writes is always accepted.
func RenderSpec(o InitOptions) ([]byte, error) {
	if o.EngineVersion == "" {
		o.EngineVersion = DefaultEngineVersion[o.Engine]
	}
	if o.InstanceClass == "" {
		o.InstanceClass = "db.t4g.medium"
	}
	var sas []ServiceAccount
	for _, s := range o.ServiceAccounts {
		nsName, user, ok1 := strings.Cut(s, "=")
		ns, name, ok2 := strings.Cut(nsName, "/")
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("--service-account %q: want namespace/name=db_user", s)
		}
		sas = append(sas, ServiceAccount{Namespace: ns, Name: name, DBUser: user})
	}
	q := func(s string) string {
		b, _ := json.Marshal(s) // a JSON string is a YAML double-quoted scalar
		return string(b)
	}
	list := func(vals []string) string {
		qs := make([]string, len(vals))
		for i, v := range vals {
			qs[i] = q(v)
		}
		return "[" + strings.Join(qs, ", ") + "]"
	}
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Database %s, written by `provisioner init`. Review it, commit it, and open a pull request:", o.Name)
	w("# CI runs `provisioner plan` on it and `provisioner apply` once it is merged (docs/provisioner.md).")
	w("name: %s                 # the RDS instance and proxy are called this; other resources rdsvalet-NAME", q(o.Name))
	w("region: %s", q(o.Region))
	w("tags:                          # on every resource; team and owner say whom to ask")
	w("  team: %s", q(o.Team))
	w("  owner: %s", q(o.Owner))
	w("engine:")
	w("  type: %s                # postgres | mysql", q(o.Engine))
	w("  version: %s              # later minor versions from automatic upgrades are not planned as changes", q(o.EngineVersion))
	w("instance:")
	w("  class: %s      # changing it later modifies the instance in place", q(o.InstanceClass))
	w("  storage_gb: 20               # allocated storage, 20-65536; autoscaling growth is not planned as a change")
	w("  max_storage_gb: 100          # storage autoscaling limit; 0 = off; at least 10%% above storage_gb")
	w("  multi_az: false              # true for production: a standby in another AZ")
	w("  backup_retention_days: 7     # 0-35")
	w("  deletion_protection: true    # destroy refuses unless --force-deletion-protection")
	w("  kms_key_id: \"\"               # empty = the AWS managed key (aws/rds); a key ARN cannot change later")
	w("  master_password: secret      # secret (our Secrets Manager secret) | rds-managed (RDS rotates it)")
	w("network:")
	w("  vpc_id: %s", q(o.VPCID))
	w("  subnet_ids: %s   # at least two, in different AZs", list(o.SubnetIDs))
	w("  allowed_security_group_ids: %s   # e.g. the EKS pods' security group", list(o.AllowedSecurityGroupIDs))
	w("  allowed_cidrs: %s   # with PrivateLink, include the consumer VPC's CIDR", list(o.AllowedCIDRs))
	w("access:")
	w("  oidc_provider_arn: %s", q(o.OIDCProviderARN))
	w("  service_accounts:            # one IRSA role each, allowed to log in as db_user only")
	if len(sas) == 0 {
		w("    []")
	}
	for _, sa := range sas {
		w("    - {namespace: %s, name: %s, db_user: %s}", q(sa.Namespace), q(sa.Name), q(sa.DBUser))
	}
	w("privatelink:")
	w("  enabled: false               # true: a VPC endpoint service in front of the NLB (see docs/provisioner.md)")
	out := b.Bytes()
	if _, err := ParseSpec(out); err != nil {
		return nil, err
	}
	return out, nil
}
