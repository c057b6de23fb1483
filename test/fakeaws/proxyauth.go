package fakeaws

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/rdsvalet/rds-valet/test/harness/awsiam"
)

// RDS Proxy authentication, modelled on "Configuring IAM authentication for RDS Proxy"
// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-iam-setup.html) and
// API_CreateDBProxy / API_UserAuthConfig:
//   - standard IAM authentication: the client presents an IAM token to the proxy, and the proxy
//     logs in to the database with the Secrets Manager secret of that user (an Auth entry with
//     IAMAuth REQUIRED), which the proxy's role must be able to read;
//   - end-to-end IAM authentication (DefaultAuthScheme IAM_AUTH): the proxy logs in to the
//     database with IAM too, as the same user, so its role needs rds-db:connect on
//     arn:aws:rds-db:REGION:ACCOUNT:dbuser:DBI-RESOURCE-ID/USER, and the instance needs IAM
//     database authentication on.

// ProxyAuthenticates says whether an IAM login as dbUser through the named proxy would get
// through to the database, and if not, why. It only reads state.
func (s *Server) ProxyAuthenticates(proxyName, dbUser string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.proxyAuthenticates(proxyName, dbUser)
}

func (st *state) proxyAuthenticates(proxyName, dbUser string) error {
	p := st.proxies[proxyName]
	if p == nil {
		return fmt.Errorf("db-proxy %q does not exist", proxyName)
	}
	if len(p.targets) == 0 {
		return fmt.Errorf("db-proxy %q has no registered target", proxyName)
	}
	in := st.instances[p.targets[0]]
	if in == nil {
		return fmt.Errorf("db-proxy %q: target %q does not exist", proxyName, p.targets[0])
	}
	docs := st.rolePolicyDocs(p.roleArn)
	for _, a := range p.auth {
		sec := st.secretByARN(a["SecretArn"])
		if sec == nil || secretUser(sec) != dbUser {
			continue
		}
		if a["IAMAuth"] != "REQUIRED" {
			return fmt.Errorf("db-proxy %q: the secret for db user %q has IAMAuth %q: the proxy takes passwords, not IAM tokens, for that user", proxyName, dbUser, a["IAMAuth"])
		}
		return st.roleReadsSecret(p, docs, sec)
	}
	if p.defaultAuthScheme != "IAM_AUTH" {
		return fmt.Errorf("db-proxy %q: no secret in Auth is for db user %q and DefaultAuthScheme is %s, so the proxy has no way to log in as that user", proxyName, dbUser, scheme(p))
	}
	if !in.iamAuth {
		return fmt.Errorf("db-proxy %q: end-to-end IAM needs IAM database authentication on db-instance %q", proxyName, in.id)
	}
	arn := dbUserARN(p, in, dbUser)
	if !allows(docs, "rds-db:connect", arn) {
		return fmt.Errorf("db-proxy %q: its role %s is not allowed rds-db:connect on %s", proxyName, p.roleArn, arn)
	}
	return nil
}

// targetHealth is what DescribeDBProxyTargets reports for a registered, settled target: the
// proxy must be able to use every credential it was configured with, else UNAVAILABLE with
// reason AUTH_FAILURE (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_TargetHealth.html).
// For IAM_AUTH, "usable" means the role may rds-db:connect as at least one db user of this
// instance: the db users it names in its policies are tried.
func (st *state) targetHealth(p *dbProxy, in *dbInstance) (state, reason, desc string) {
	docs := st.rolePolicyDocs(p.roleArn)
	for _, a := range p.auth {
		sec := st.secretByARN(a["SecretArn"])
		if sec == nil {
			return "UNAVAILABLE", "AUTH_FAILURE", fmt.Sprintf("Proxy cannot find the secret %s.", a["SecretArn"])
		}
		if err := st.roleReadsSecret(p, docs, sec); err != nil {
			return "UNAVAILABLE", "AUTH_FAILURE", "Proxy cannot read its credentials: " + err.Error()
		}
	}
	if p.defaultAuthScheme == "IAM_AUTH" {
		ok := false
		for _, u := range connectUsers(docs) {
			if in.iamAuth && allows(docs, "rds-db:connect", dbUserARN(p, in, u)) {
				ok = true
			}
		}
		if !ok {
			return "UNAVAILABLE", "AUTH_FAILURE", fmt.Sprintf("Proxy role %s is not allowed rds-db:connect on any db user of %s.", p.roleArn, in.resID)
		}
	}
	return "AVAILABLE", "", ""
}

func (st *state) roleReadsSecret(p *dbProxy, docs []string, sec *secret) error {
	if sec.deletedDate != 0 {
		return fmt.Errorf("secret %s is scheduled for deletion", sec.arn)
	}
	if !allows(docs, "secretsmanager:GetSecretValue", sec.arn) {
		return fmt.Errorf("role %s is not allowed secretsmanager:GetSecretValue on %s", p.roleArn, sec.arn)
	}
	return nil
}

func (st *state) rolePolicyDocs(roleARN string) []string {
	var docs []string
	for _, r := range st.roles {
		if r.arn == roleARN {
			for _, k := range sortedKeys(r.policies) {
				docs = append(docs, r.policies[k])
			}
		}
	}
	return docs
}

func (st *state) secretByARN(arn string) *secret {
	for _, s := range st.secrets {
		if s.arn == arn {
			return s
		}
	}
	return nil
}

// secretUser is the username in a database secret's JSON value
// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-secrets-arns.html).
func secretUser(s *secret) string {
	var v struct {
		Username string `json:"username"`
	}
	_ = json.Unmarshal([]byte(s.value), &v)
	return v.Username
}

// connectUsers lists the db user names the policies mention in rds-db:connect resources; a
// wildcard user stands for any name, so a probe name is tried for it.
func connectUsers(docs []string) []string {
	var out []string
	for _, d := range docs {
		for _, r := range awsiam.Resources(d) { // a stored policy parsed when IAM took it
			if i := strings.LastIndex(r, "/"); i >= 0 && strings.Contains(r, ":dbuser:") {
				u := strings.NewReplacer("*", "x", "?", "x").Replace(r[i+1:])
				out = append(out, u)
			}
		}
	}
	return out
}

func dbUserARN(p *dbProxy, in *dbInstance, user string) string {
	parts := strings.Split(p.arn, ":") // arn:aws:rds:REGION:ACCOUNT:db-proxy:prx-...
	return fmt.Sprintf("arn:aws:rds-db:%s:%s:dbuser:%s/%s", parts[3], parts[4], in.resID, user)
}

func scheme(p *dbProxy) string {
	if p.defaultAuthScheme == "" {
		return "NONE"
	}
	return p.defaultAuthScheme
}

// allows says whether identity policies docs allow action on resource.
func allows(docs []string, action, resource string) bool {
	return awsiam.Evaluate(docs, awsiam.Request{Action: action, Resource: resource}) == awsiam.Allow
}
