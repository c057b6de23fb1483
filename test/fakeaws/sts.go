package fakeaws

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/awsiam"
)

// STS: who the caller is, and temporary credentials for a role, issued only when the role's
// trust policy lets the caller in. Each issued access key remembers its role, so that
// Authorized can later judge what the credentials may do.

// sessionNameRE is RoleSessionName's pattern and length (2-64) in the STS API reference.
var sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

func (st *state) sts(c *reqCtx, action string) (any, *apiError) {
	switch action {
	case "GetCallerIdentity":
		// https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html:
		// a role session is arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION.
		if c.caller.roleARN != "" {
			return []X{T("UserId", c.caller.roleID+":"+c.caller.session), T("Account", c.account), T("Arn", c.caller.sessionARN())}, nil
		}
		return []X{T("UserId", "AIDAFAKE"), T("Account", c.account), T("Arn", "arn:aws:iam::"+c.account+":user/provisioner")}, nil
	case "AssumeRole":
		return st.assumeRole(c)
	case "AssumeRoleWithWebIdentity":
		return st.assumeRoleWithWebIdentity(c)
	}
	return nil, errf(400, "InvalidAction", "fakeaws: STS action %s not implemented", action)
}

// roleByARN finds a role of the fake's account or a seeded role of another account.
func (st *state) roleByARN(arn string) *role {
	for _, r := range st.roles {
		if r.arn == arn {
			return r
		}
	}
	return st.ident().accountRoles[arn]
}

func accountOfARN(arn string) string {
	parts := strings.Split(arn, ":")
	if len(parts) < 6 {
		return ""
	}
	return parts[4]
}

// sessionParams checks what AssumeRole and AssumeRoleWithWebIdentity share: RoleArn,
// RoleSessionName and DurationSeconds (900 s up to the role's maximum, 3600 s by default).
func sessionParams(c *reqCtx) (roleARN, session string, dur time.Duration, _ *apiError) {
	roleARN, session = c.get("RoleArn"), c.get("RoleSessionName")
	if !roleARNPattern.MatchString(roleARN) {
		return "", "", 0, errf(400, "ValidationError", "1 validation error detected: Value '%s' at 'roleArn' failed to satisfy constraint", roleARN)
	}
	if !sessionNameRE.MatchString(session) {
		return "", "", 0, errf(400, "ValidationError", "1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*", session)
	}
	dur = time.Hour
	if v := c.get("DurationSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 900 {
			return "", "", 0, errf(400, "ValidationError", "1 validation error detected: Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900", v)
		}
		if n > 3600 {
			// The roles here keep IAM's default MaxSessionDuration of one hour.
			return "", "", 0, errf(400, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
		}
		dur = time.Duration(n) * time.Second
	}
	return roleARN, session, dur, nil
}

var roleARNPattern = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/.+$`)

// assumeRole follows https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html:
// the role's trust policy must allow sts:AssumeRole for the caller (its ARN, its role, or its
// account's root); a caller that is itself a role session also needs its own policies to
// allow sts:AssumeRole on the target (an identity-based policy, "Cross account resource
// access in IAM"). Refusals are 403 AccessDenied.
func (st *state) assumeRole(c *reqCtx) (any, *apiError) {
	arn, session, dur, e := sessionParams(c)
	if e != nil {
		return nil, e
	}
	callerARN := "arn:aws:iam::" + c.account + ":user/provisioner"
	pid := callerARN
	if c.caller.roleARN != "" {
		callerARN, pid = c.caller.sessionARN(), c.caller.roleARN
	}
	denied := errf(403, "AccessDenied", "User: %s is not authorized to perform: sts:AssumeRole on resource: %s", callerARN, arn)
	r := st.roleByARN(arn)
	if r == nil {
		return nil, denied
	}
	req := awsiam.Request{Principal: &awsiam.Principal{Kind: "AWS", ID: pid, Account: c.account}, Action: "sts:AssumeRole",
		Context: map[string]string{"aws:PrincipalAccount": c.account, "aws:PrincipalArn": pid}}
	if awsiam.Evaluate([]string{r.trust}, req) != awsiam.Allow {
		return nil, denied
	}
	if c.caller.roleARN != "" {
		if from := st.roleByARN(c.caller.roleARN); from == nil ||
			awsiam.Evaluate(policyDocs(from), awsiam.Request{Action: "sts:AssumeRole", Resource: arn}) != awsiam.Allow {
			return nil, denied
		}
	}
	return st.issue(c, r, session, dur, nil), nil
}

// assumeRoleWithWebIdentity follows
// https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html:
// the call is unsigned; the token is checked (checkWebIdentity), then the role's trust policy
// must allow sts:AssumeRoleWithWebIdentity for Principal Federated = the provider's ARN, with
// the conditions on PROVIDER:sub and PROVIDER:aud ("Available keys for AWS web identity
// federation"). A role that does not exist or does not trust the token is AccessDenied
// "Not authorized to perform sts:AssumeRoleWithWebIdentity".
func (st *state) assumeRoleWithWebIdentity(c *reqCtx) (any, *apiError) {
	arn, session, dur, e := sessionParams(c)
	if e != nil {
		return nil, e
	}
	tok := c.get("WebIdentityToken")
	if len(tok) < 4 || len(tok) > 20000 {
		return nil, errf(400, "ValidationError", "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length between 4 and 20000")
	}
	account := accountOfARN(arn)
	p, cl, e := st.ident().checkWebIdentity(tok, account, time.Now())
	if e != nil {
		return nil, e
	}
	denied := errf(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
	r := st.roleByARN(arn)
	if r == nil {
		return nil, denied
	}
	req := awsiam.WebIdentityRequest(awsiam.Provider{ARN: p.arn, Host: p.url}, cl)
	if awsiam.Evaluate([]string{r.trust}, req) != awsiam.Allow {
		return nil, denied
	}
	c.account = account
	return st.issue(c, r, session, dur, []X{T("SubjectFromWebIdentityToken", cl.Sub), T("Provider", p.url), T("Audience", cl.Aud[0])}), nil
}

// issue mints temporary credentials for role r and remembers them.
func (st *state) issue(c *reqCtx, r *role, session string, dur time.Duration, extra []X) []X {
	akid := "ASIA" + strings.ToUpper(st.id("", 16))
	cr := creds{secret: randHex(20), account: accountOfARN(r.arn), roleARN: r.arn, roleID: r.id, roleName: r.name,
		session: session, sessionToken: "FwoGZXIvYXdzE" + randHex(24)}
	c.s.creds[akid] = cr
	exp := time.Now().Add(dur).UTC().Format(time.RFC3339)
	out := []X{E("Credentials", T("AccessKeyId", akid), T("SecretAccessKey", cr.secret), T("SessionToken", cr.sessionToken), T("Expiration", exp)),
		E("AssumedRoleUser", T("Arn", cr.sessionARN()), T("AssumedRoleId", r.id+":"+session))}
	return append(out, extra...)
}

func (c creds) sessionARN() string {
	return "arn:aws:sts::" + c.account + ":assumed-role/" + c.roleName + "/" + c.session
}

func policyDocs(r *role) []string {
	docs := make([]string, 0, len(r.policies))
	for _, k := range sortedKeys(r.policies) {
		docs = append(docs, r.policies[k])
	}
	return docs
}

// LookupCredentials returns the secret key and session token issued with an access key id
// (the static key has no session token), for verifiers of SigV4 signatures made with them,
// such as an RDS IAM auth token check.
func (s *Server) LookupCredentials(akid string) (secret, sessionToken string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.creds[akid]
	return c.secret, c.sessionToken, ok
}

// Authorized decides whether the credentials of akid may perform action on resource, from
// the policies of the role they were issued for, as IAM does for an identity-based policy
// ("Policy evaluation logic"): an explicit Deny wins, else an Allow is needed. The fake's
// static key is the account's administrator and is always allowed. The error reads like
// AWS's AccessDenied message.
func (s *Server) Authorized(akid, action, resource string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.creds[akid]
	if !ok {
		return fmt.Errorf("the security token included in the request is invalid (unknown access key %s)", akid)
	}
	if c.roleARN == "" {
		return nil
	}
	r := s.st.roleByARN(c.roleARN)
	if r == nil {
		return fmt.Errorf("User: %s is not authorized to perform: %s on resource: %s because the role no longer exists", c.sessionARN(), action, resource)
	}
	switch awsiam.Evaluate(policyDocs(r), awsiam.Request{Action: action, Resource: resource}) {
	case awsiam.Allow:
		return nil
	case awsiam.ExplicitDeny:
		return fmt.Errorf("User: %s is not authorized to perform: %s on resource: %s with an explicit deny in an identity-based policy", c.sessionARN(), action, resource)
	}
	return fmt.Errorf("User: %s is not authorized to perform: %s on resource: %s because no identity-based policy allows the %s action", c.sessionARN(), action, resource, action)
}

// isUnsignedSTS reports an unsigned AssumeRoleWithWebIdentity request: no Authorization
// header, form body with that Action.
func isUnsignedSTS(r *http.Request, body []byte) bool {
	if r.Header.Get("Authorization") != "" || r.Method != http.MethodPost {
		return false
	}
	form, err := url.ParseQuery(string(body))
	return err == nil && form.Get("Action") == "AssumeRoleWithWebIdentity"
}

// denyByRolePolicy refuses a call signed with a role session's credentials that the role's
// policies do not allow (service:Action; the fake does not model resource-level scoping of API
// calls, so only the Action element decides). GetCallerIdentity needs no permission
// (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html). The
// refusal codes are each protocol's: AccessDenied (Query), UnauthorizedOperation (EC2),
// AccessDeniedException (JSON).
func (s *Server) denyByRolePolicy(service, proto, action string, c creds) *apiError {
	if c.roleARN == "" || (service == "sts" && action == "GetCallerIdentity") {
		return nil
	}
	iamAction := service + ":" + action
	var docs []string
	if r := s.st.roleByARN(c.roleARN); r != nil {
		docs = policyDocs(r)
	}
	if awsiam.Evaluate(docs, awsiam.Request{Action: iamAction}) == awsiam.Allow {
		return nil
	}
	msg := fmt.Sprintf("User: %s is not authorized to perform: %s", c.sessionARN(), iamAction)
	switch proto {
	case "ec2":
		return errf(403, "UnauthorizedOperation", "You are not authorized to perform this operation. %s", msg)
	case "json", "rest-json":
		return errf(400, "AccessDeniedException", "%s", msg)
	}
	return errf(403, "AccessDenied", "%s", msg)
}
