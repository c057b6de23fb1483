package fakeaws

import (
	"net/url"
	"strings"
	"time"
)

func (st *state) iam(c *reqCtx, action string) (any, *apiError) {
	if out, aerr, ok := st.iamOIDC(c, action); ok {
		return out, aerr
	}
	name := c.get("RoleName")
	r := st.roles[name]
	if r == nil && action != "CreateRole" && action != "ListRoles" {
		return nil, errf(404, "NoSuchEntity", "The role with name %s cannot be found.", name)
	}
	switch action {
	case "CreateRole":
		if r != nil {
			return nil, errf(409, "EntityAlreadyExists", "Role with name %s already exists.", name)
		}
		path := c.get("Path")
		if path == "" {
			path = "/"
		}
		doc := c.get("AssumeRolePolicyDocument")
		if jsonCanon(doc) == doc && !strings.HasPrefix(strings.TrimSpace(doc), "{") {
			return nil, errf(400, "MalformedPolicyDocument", "This policy contains invalid Json")
		}
		r = &role{name: name, path: path, arn: "arn:aws:iam::" + c.account + ":role" + path + name, id: "AROA" + strings.ToUpper(st.id("", 17)),
			trust: doc, policies: map[string]string{}, tags: c.tagsFrom("Tags")}
		st.roles[name] = r
		return []X{roleX(r, "Role")}, nil
	case "GetRole":
		return []X{roleX(r, "Role")}, nil
	case "ListRoles":
		prefix := c.get("PathPrefix")
		var items []X
		for _, k := range sortedKeys(st.roles) {
			if rr := st.roles[k]; strings.HasPrefix(rr.path, prefix) {
				x := roleX(rr, "member")
				x.kids = x.kids[:len(x.kids)-1] // ListRoles does not return tags
				items = append(items, x)
			}
		}
		return []X{E("Roles", items...), T("IsTruncated", "false")}, nil
	case "UpdateAssumeRolePolicy":
		r.trust = c.get("PolicyDocument")
		return nil, nil
	case "PutRolePolicy":
		r.policies[c.get("PolicyName")] = c.get("PolicyDocument")
		return nil, nil
	case "GetRolePolicy":
		p, ok := r.policies[c.get("PolicyName")]
		if !ok {
			return nil, errf(404, "NoSuchEntity", "The role policy with name %s cannot be found.", c.get("PolicyName"))
		}
		return []X{T("RoleName", name), T("PolicyName", c.get("PolicyName")), T("PolicyDocument", url.QueryEscape(p))}, nil
	case "ListRolePolicies":
		return []X{Strs("PolicyNames", "member", sortedKeys(r.policies)), T("IsTruncated", "false")}, nil
	case "DeleteRolePolicy":
		if _, ok := r.policies[c.get("PolicyName")]; !ok {
			return nil, errf(404, "NoSuchEntity", "The role policy with name %s cannot be found.", c.get("PolicyName"))
		}
		delete(r.policies, c.get("PolicyName"))
		return nil, nil
	case "DeleteRole":
		if len(r.policies) > 0 {
			return nil, errf(409, "DeleteConflict", "Cannot delete entity, must delete policies first.")
		}
		delete(st.roles, name)
		return nil, nil
	case "TagRole":
		for k, v := range c.tagsFrom("Tags") {
			r.tags[k] = v
		}
		return nil, nil
	case "UntagRole":
		for _, k := range c.strs("TagKeys") {
			delete(r.tags, k)
		}
		return nil, nil
	}
	return nil, errf(400, "InvalidAction", "fakeaws: IAM action %s not implemented", action)
}

func roleX(r *role, name string) X {
	var tags []X
	for _, k := range sortedKeys(r.tags) {
		tags = append(tags, E("member", T("Key", k), T("Value", r.tags[k])))
	}
	// Real IAM returns policy documents URL-encoded.
	return E(name, T("Path", r.path), T("RoleName", r.name), T("RoleId", r.id), T("Arn", r.arn),
		T("CreateDate", "2026-01-01T00:00:00Z"), T("AssumeRolePolicyDocument", url.QueryEscape(r.trust)), E("Tags", tags...))
}

func (st *state) secretsAPI(c *reqCtx, action string) (any, *apiError) {
	id := c.jstr("SecretId")
	var s *secret
	for _, x := range st.secrets {
		if x.name == id || x.arn == id {
			s = x
		}
	}
	if s == nil && action != "CreateSecret" {
		return nil, errf(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
	}
	// A secret scheduled for deletion is still there (DescribeSecret shows DeletedDate) but
	// refuses value access until RestoreSecret
	// (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DeleteSecret.html).
	if s != nil && s.deletedDate != 0 {
		switch action {
		case "GetSecretValue", "DeleteSecret", "PutSecretValue", "UpdateSecret":
			return nil, errf(400, "InvalidRequestException", "You can't perform this operation on the secret because it was marked for deletion.")
		}
	}
	switch action {
	case "CreateSecret":
		name := c.jstr("Name")
		if x := st.secrets[name]; x != nil && x.deletedDate != 0 {
			return nil, errf(400, "InvalidRequestException", "You can't create this secret because a secret with this name is already scheduled for deletion.")
		}
		if st.secrets[name] != nil {
			return nil, errf(400, "ResourceExistsException", "The operation failed because the secret %s already exists.", name)
		}
		tags := map[string]string{}
		if ts, ok := c.json["Tags"].([]any); ok {
			for _, t := range ts {
				m, _ := t.(map[string]any)
				k, _ := m["Key"].(string)
				v, _ := m["Value"].(string)
				tags[k] = v
			}
		}
		s = &secret{name: name, arn: c.arn("secretsmanager", "secret:"+name+"-"+randHex(3)), desc: c.jstr("Description"),
			kms: c.jstr("KmsKeyId"), value: c.jstr("SecretString"), tags: tags}
		st.secrets[name] = s
		return map[string]any{"ARN": s.arn, "Name": s.name, "VersionId": randHex(8)}, nil
	case "DescribeSecret":
		var tags []map[string]string
		for _, k := range sortedKeys(s.tags) {
			tags = append(tags, map[string]string{"Key": k, "Value": s.tags[k]})
		}
		out := map[string]any{"ARN": s.arn, "Name": s.name, "Description": s.desc, "Tags": tags}
		if s.kms != "" {
			out["KmsKeyId"] = s.kms
		}
		if s.deletedDate != 0 {
			out["DeletedDate"] = s.deletedDate
		}
		return out, nil
	case "GetSecretValue":
		return map[string]any{"ARN": s.arn, "Name": s.name, "SecretString": s.value, "VersionId": "v1"}, nil
	case "DeleteSecret":
		return st.deleteSecret(c, s)
	case "RestoreSecret":
		// RestoreSecret removes DeletedDate and makes the value readable again
		// (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_RestoreSecret.html).
		s.deletedDate = 0
		return map[string]any{"ARN": s.arn, "Name": s.name}, nil
	case "TagResource":
		if ts, ok := c.json["Tags"].([]any); ok {
			for _, t := range ts {
				m, _ := t.(map[string]any)
				k, _ := m["Key"].(string)
				v, _ := m["Value"].(string)
				s.tags[k] = v
			}
		}
		return map[string]any{}, nil
	case "UntagResource":
		if ks, ok := c.json["TagKeys"].([]any); ok {
			for _, k := range ks {
				ks, _ := k.(string)
				delete(s.tags, ks)
			}
		}
		return map[string]any{}, nil
	}
	return nil, errf(400, "InvalidAction", "fakeaws: Secrets Manager action %s not implemented", action)
}

// deleteSecret: without ForceDeleteWithoutRecovery the secret stays, describable with
// DeletedDate, for RecoveryWindowInDays (7-30, default 30); the two options exclude each other
// (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DeleteSecret.html). The
// fake never ends the window on its own: tests run for seconds, windows last days.
func (st *state) deleteSecret(c *reqCtx, s *secret) (any, *apiError) {
	force, _ := c.json["ForceDeleteWithoutRecovery"].(bool)
	days, hasDays := c.json["RecoveryWindowInDays"].(float64)
	if force && hasDays {
		return nil, errf(400, "InvalidParameterException", "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.")
	}
	now := float64(time.Now().Unix())
	if force {
		delete(st.secrets, s.name)
		return map[string]any{"ARN": s.arn, "Name": s.name, "DeletionDate": now}, nil
	}
	if !hasDays {
		days = 30
	}
	if days < 7 || days > 30 {
		return nil, errf(400, "InvalidParameterException", "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).")
	}
	s.deletedDate = now
	return map[string]any{"ARN": s.arn, "Name": s.name, "DeletionDate": now + days*86400}, nil
}
