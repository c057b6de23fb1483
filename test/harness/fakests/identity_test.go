package fakests

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/rdsvalet/rds-valet/test/harness/awsiam"
)

// assume calls AssumeRoleWithWebIdentity on s with the real SDK client (unsigned, as the
// credential provider does).
func assume(t *testing.T, s *Server, role, token string) (*sts.AssumeRoleWithWebIdentityOutput, error) {
	t.Helper()
	c := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.URL), RetryMaxAttempts: 1})
	return c.AssumeRoleWithWebIdentity(context.Background(), &sts.AssumeRoleWithWebIdentityInput{
		RoleArn: aws.String(role), RoleSessionName: aws.String("identity-test"), WebIdentityToken: aws.String(token)})
}

// The token is verified (issuer, signature, expiry, audience) and the role's trust policy is
// evaluated for its sub and aud before credentials are issued, with AWS's error codes.
func TestAssumeRoleWithWebIdentityChecksTokenAndTrust(t *testing.T) {
	s := start(t, Options{Issuer: "https://oidc.eks.eu-west-1.amazonaws.com/id/ABCDEF0123456789ABCDEF0123456789", Subject: "system:serviceaccount:orders:api"})
	other := start(t, Options{Issuer: s.Issuer()}) // same issuer URL, another signing key
	if s.ProviderARN() != "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABCDEF0123456789ABCDEF0123456789" {
		t.Fatalf("provider ARN %s", s.ProviderARN())
	}
	out, err := assume(t, s, s.RoleARN(), s.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.SubjectFromWebIdentityToken) != "system:serviceaccount:orders:api" || aws.ToString(out.Audience) != STSAudience ||
		aws.ToString(out.Provider) != s.Issuer() || aws.ToString(out.AssumedRoleUser.Arn) != "arn:aws:sts::123456789012:assumed-role/rds-valet-test/identity-test" {
		t.Errorf("answer: sub %s aud %s provider %s user %s", aws.ToString(out.SubjectFromWebIdentityToken), aws.ToString(out.Audience),
			aws.ToString(out.Provider), aws.ToString(out.AssumedRoleUser.Arn))
	}
	if c, ok := issuedAs(s, aws.ToString(out.Credentials.AccessKeyId)); !ok || c.RoleARN != s.RoleARN() {
		t.Errorf("issued %+v, want a session of the role", c)
	}
	for _, tc := range []struct {
		name, role, token, code string
	}{
		{"another ServiceAccount", s.RoleARN(), s.Token(TokenClaims{Sub: "system:serviceaccount:orders:other"}), "AccessDenied"},
		{"another role", "arn:aws:iam::123456789012:role/nope", s.NewToken(), "AccessDenied"},
		{"a role of another account", "arn:aws:iam::999999999999:role/rds-valet-test", s.NewToken(), "InvalidIdentityToken"},
		{"wrong audience", s.RoleARN(), s.Token(TokenClaims{Aud: "other"}), "InvalidIdentityToken"},
		{"unknown issuer", s.RoleARN(), s.Token(TokenClaims{Iss: "https://oidc.eks.us-east-1.amazonaws.com/id/UNKNOWN"}), "InvalidIdentityToken"},
		{"signed by another key", s.RoleARN(), other.NewToken(), "InvalidIdentityToken"},
		{"expired", s.RoleARN(), s.Token(TokenClaims{Exp: time.Now().Add(-time.Second)}), "ExpiredTokenException"},
		{"not a JWT", s.RoleARN(), "opaque-token-of-the-old-fake", "InvalidIdentityToken"},
	} {
		if _, err := assume(t, s, tc.role, tc.token); apiCode(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
	if n := len(s.Issued()); n != 1 {
		t.Errorf("%d credentials issued, want only the first", n)
	}
}

// A role whose trust names another ServiceAccount refuses the pod's token; one given as a
// whole policy (Trust) is what is evaluated.
func TestTrustPolicyFromOptions(t *testing.T) {
	s := start(t, Options{Trust: awsiam.IRSATrust("arn:aws:iam::123456789012:oidc-provider/x", "x", DefaultSubject)})
	if _, err := assume(t, s, s.RoleARN(), s.NewToken()); apiCode(err) != "AccessDenied" {
		t.Fatalf("trust for another provider: %v, want AccessDenied", err)
	}
	const host = "oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF0123456789ABCDEF"
	s2 := start(t, Options{Issuer: "https://" + host,
		Trust: awsiam.IRSATrust("arn:aws:iam::123456789012:oidc-provider/"+host, host, "system:serviceaccount:test:other")})
	if _, err := assume(t, s2, s2.RoleARN(), s2.NewToken()); apiCode(err) != "AccessDenied" {
		t.Fatalf("trust for another ServiceAccount: %v, want AccessDenied", err)
	}
	if _, err := assume(t, s2, s2.RoleARN(), s2.Token(TokenClaims{Sub: "system:serviceaccount:test:other"})); err != nil {
		t.Fatalf("the trusted ServiceAccount: %v", err)
	}
}

// Authorized evaluates the role's permission policies for the credential's role.
func TestAuthorized(t *testing.T) {
	user := "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0123/app"
	s := start(t, Options{Policies: []string{awsiam.AllowPolicy("rds-db:connect", user),
		`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"rds-db:connect","Resource":"*/admin"}]}`}})
	out, err := assume(t, s, s.RoleARN(), s.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	akid := aws.ToString(out.Credentials.AccessKeyId)
	if err := s.Authorized(akid, "rds-db:connect", user); err != nil {
		t.Errorf("allowed user: %v", err)
	}
	if err := s.Authorized(akid, "rds-db:connect", strings.Replace(user, "/app", "/other", 1)); err == nil ||
		!strings.Contains(err.Error(), "assumed-role/rds-valet-test/identity-test is not authorized to perform: rds-db:connect") {
		t.Errorf("other user: %v", err)
	}
	if err := s.Authorized(akid, "rds-db:connect", strings.Replace(user, "/app", "/admin", 1)); err == nil || !strings.Contains(err.Error(), "explicit deny") {
		t.Errorf("denied user: %v", err)
	}
	if err := s.Authorized("ASIANOTISSUED", "rds-db:connect", user); err == nil {
		t.Error("unknown key authorized")
	}
}

// The Pod Identity agent checks the token (audience pods.eks.amazonaws.com), the association
// and the role's trust for pods.eks.amazonaws.com, with EKS Auth's error codes.
func TestPodIdentityChecks(t *testing.T) {
	get := func(s *Server, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, s.URL+PodIdentityPath, nil)
		req.Header.Set("Authorization", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return resp.StatusCode, b.String()
	}
	s := start(t, Options{})
	if code, body := get(s, s.PodIdentityToken()); code != 200 || !strings.Contains(body, `"AccessKeyId":"ASIA`) {
		t.Fatalf("pod identity: %d %s", code, body)
	}
	for _, tc := range []struct {
		name, token string
		status      int
		code        string
	}{
		{"IRSA audience", s.NewToken(), 400, "InvalidTokenException"},
		{"expired", s.Token(TokenClaims{Aud: PodIdentityAudience, Exp: time.Now().Add(-time.Second)}), 400, "ExpiredTokenException"},
		{"no association", s.Token(TokenClaims{Aud: PodIdentityAudience, Sub: "system:serviceaccount:test:other"}), 404, "ResourceNotFoundException"},
	} {
		if status, body := get(s, tc.token); status != tc.status || !strings.Contains(body, `"code":"`+tc.code+`"`) {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, body, tc.status, tc.code)
		}
	}
	irsaOnly := start(t, Options{Trust: awsiam.IRSATrust(s.ProviderARN(), "x", DefaultSubject)})
	if status, body := get(irsaOnly, irsaOnly.PodIdentityToken()); status != 403 || !strings.Contains(body, "AccessDeniedException") {
		t.Errorf("role without the pods.eks.amazonaws.com trust: %d %s", status, body)
	}
}
