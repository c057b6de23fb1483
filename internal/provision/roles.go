package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamt "github.com/aws/aws-sdk-go-v2/service/iam/types"
)

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
		if users := proxyConnectResources(e); len(users) > 0 {
			stmts = append(stmts, map[string]any{"Sid": "ConnectAsAppDBUsers", "Effect": "Allow", "Action": "rds-db:connect", "Resource": users})
		}
		if e.spec.Instance.KMSKeyID != "" {
			stmts = append(stmts, map[string]any{"Sid": "DecryptSecret", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": e.get("kms.key_arn"),
				"Condition": map[string]any{"StringEquals": map[string]any{"kms:ViaService": "secretsmanager." + e.region + ".amazonaws.com"}}})
		}
		policy := mustJSON(map[string]any{"Version": "2012-10-17", "Statement": stmts})
		return []roleSpec{{name: baseName(e.spec) + "-proxy", trust: trust, policy: policy}}
	}}
}

// proxyConnectResources are the db users the proxy logs in as with end-to-end IAM: every
// db_user of the spec, on the instance's resource id
// (arn:aws:rds-db:REGION:ACCOUNT:dbuser:db-RESOURCEID/USER, "Configuring IAM authentication for
// RDS Proxy", https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-iam-setup.html).
func proxyConnectResources(e *env) []string {
	seen := map[string]bool{}
	for _, sa := range e.spec.Access.ServiceAccounts {
		seen[sa.DBUser] = true
	}
	var out []string
	dbi := e.get("instance.resource_id")
	for _, u := range sortedKeys(seen) {
		if dbi == Unknown {
			return []string{Unknown}
		}
		out = append(out, fmt.Sprintf("arn:aws:rds-db:%s:%s:dbuser:%s/%s", e.region, e.account, dbi, u))
	}
	return out
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
		prx, dbi := e.get("proxy.resource_id"), e.get("instance.resource_id")
		var out []roleSpec
		for _, sa := range e.spec.Access.ServiceAccounts {
			trust := appRoleTrust(e.spec, sa)
			res := []string{}
			for _, id := range []string{prx, dbi} {
				if id == Unknown {
					res = append(res, Unknown)
					continue
				}
				res = append(res, fmt.Sprintf("arn:aws:rds-db:%s:%s:dbuser:%s/%s", e.region, e.account, id, sa.DBUser))
			}
			// The read replicas are reached at their instance endpoints: the app's role
			// connects there too, each replica in its own Region.
			res = append(res, replicaConnectResources(e, sa.DBUser)...)
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
	if h.label == "sync-targets" {
		e.out["sync_targets_role.arn"] = o.ID
	}
}
