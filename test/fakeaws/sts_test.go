package fakeaws

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

const testIssuer = "https://oidc.eks.us-east-1.amazonaws.com/id/UNITTEST"

func irsaTrust(sub string) string {
	host := strings.TrimPrefix(testIssuer, "https://")
	return `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"arn:aws:iam::111122223333:oidc-provider/` + host + `"},` +
		`"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringEquals":{"` + host + `:sub":"` + sub + `","` + host + `:aud":"sts.amazonaws.com"}}}]}`
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestAssumeRoleWithWebIdentityEvaluatesTokenAndTrust(t *testing.T) {
	s, err := Start(Config{AccountID: "111122223333", Region: "us-east-1", AccessKey: "AKIDTEST", SecretKey: "right"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	s.AddOIDCIssuer(testIssuer, &rsaKey.PublicKey)
	s.AddOIDCIssuer(testIssuer, &ecKey.PublicKey)
	s.SeedRole("app", "/", irsaTrust("system:serviceaccount:orders:api"), nil)
	roleARN := "arn:aws:iam::111122223333:role/app"
	anon := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.URL), Credentials: aws.AnonymousCredentials{}})
	ctx := context.Background()
	tok := func(key crypto.Signer, mod func(map[string]any)) string {
		c := map[string]any{"iss": testIssuer, "sub": "system:serviceaccount:orders:api", "aud": []string{"sts.amazonaws.com"},
			"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
		if mod != nil {
			mod(c)
		}
		j, err := SignJWT(key, "k1", c)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	assume := func(token string) (*sts.AssumeRoleWithWebIdentityOutput, error) {
		return anon.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{RoleArn: aws.String(roleARN),
			RoleSessionName: aws.String("s1"), WebIdentityToken: aws.String(token)})
	}
	// Without the IAM OIDC provider, the issuer is unknown to the account.
	if _, err := assume(tok(rsaKey, nil)); code(err) != "InvalidIdentityToken" || !strings.Contains(err.Error(), "No OpenIDConnect provider") {
		t.Fatalf("no provider: %v", err)
	}
	s.SeedOIDCProvider(testIssuer, "sts.amazonaws.com")
	for _, tc := range []struct {
		name, token, code string
	}{
		{"rsa", tok(rsaKey, nil), ""},
		{"ecdsa", tok(ecKey, nil), ""},
		{"foreign key", tok(otherKey, nil), "InvalidIdentityToken"},
		{"expired", tok(rsaKey, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), "ExpiredTokenException"},
		{"wrong audience", tok(rsaKey, func(c map[string]any) { c["aud"] = "someone-else" }), "InvalidIdentityToken"},
		{"other ServiceAccount", tok(rsaKey, func(c map[string]any) { c["sub"] = "system:serviceaccount:orders:other" }), "AccessDenied"},
		{"other issuer", tok(rsaKey, func(c map[string]any) { c["iss"] = "https://evil.example.com" }), "InvalidIdentityToken"},
		{"not a JWT", "abcd.efgh", "InvalidIdentityToken"},
	} {
		out, err := assume(tc.token)
		if code(err) != tc.code || (tc.code == "" && err != nil) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.code)
			continue
		}
		if tc.code != "" {
			continue
		}
		akid := aws.ToString(out.Credentials.AccessKeyId)
		secret, token, ok := s.LookupCredentials(akid)
		if !ok || secret != aws.ToString(out.Credentials.SecretAccessKey) || token != aws.ToString(out.Credentials.SessionToken) || token == "" {
			t.Errorf("%s: LookupCredentials(%s) = %v", tc.name, akid, ok)
		}
		if got := aws.ToString(out.AssumedRoleUser.Arn); got != "arn:aws:sts::111122223333:assumed-role/app/s1" {
			t.Errorf("%s: assumed role %s", tc.name, got)
		}
		// The credentials work only with their session token, and say who they are.
		with := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.URL),
			Credentials: credentials.NewStaticCredentialsProvider(akid, secret, token)})
		id, err := with.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil || aws.ToString(id.Arn) != "arn:aws:sts::111122223333:assumed-role/app/s1" {
			t.Errorf("%s: GetCallerIdentity %v %v", tc.name, id, err)
		}
		without := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.URL),
			Credentials: credentials.NewStaticCredentialsProvider(akid, secret, "")})
		if _, err := without.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); code(err) != "InvalidClientTokenId" {
			t.Errorf("%s: without session token: %v", tc.name, err)
		}
	}
	// A role that does not exist is refused like an untrusting one.
	_, err = anon.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{RoleArn: aws.String("arn:aws:iam::111122223333:role/nope"),
		RoleSessionName: aws.String("s1"), WebIdentityToken: aws.String(tok(rsaKey, nil))})
	if code(err) != "AccessDenied" {
		t.Errorf("missing role: %v", err)
	}
}

func TestAssumeRoleEvaluatesTrustAndAuthorizedEvaluatesPolicies(t *testing.T) {
	s, err := Start(Config{AccountID: "111122223333", Region: "us-east-1", AccessKey: "AKIDTEST", SecretKey: "right"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	consumer := s.SeedAccountRole("444455556666", "consumer",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"sts:AssumeRole"}]}`,
		map[string]string{"p": `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"arn:aws:rds-db:*:*:dbuser:db-*/app"}]}`})
	closed := s.SeedAccountRole("444455556666", "closed",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"sts:AssumeRole"}]}`, nil)
	c := client(s.URL, "AKIDTEST", "right")
	out, err := c.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(consumer), RoleSessionName: aws.String("prov")})
	if err != nil {
		t.Fatal(err)
	}
	akid := aws.ToString(out.Credentials.AccessKeyId)
	if err := s.Authorized(akid, "rds-db:connect", "arn:aws:rds-db:us-east-1:444455556666:dbuser:db-X/app"); err != nil {
		t.Errorf("allowed resource: %v", err)
	}
	if err := s.Authorized(akid, "rds-db:connect", "arn:aws:rds-db:us-east-1:444455556666:dbuser:db-X/admin"); err == nil ||
		!strings.Contains(err.Error(), "assumed-role/consumer/prov is not authorized to perform: rds-db:connect") {
		t.Errorf("other db user: %v", err)
	}
	if err := s.Authorized("AKIDNOPE", "rds-db:connect", "x"); err == nil {
		t.Error("unknown key authorized")
	}
	for _, arn := range []string{closed, "arn:aws:iam::444455556666:role/missing"} {
		if _, err := c.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(arn), RoleSessionName: aws.String("prov")}); code(err) != "AccessDenied" {
			t.Errorf("%s: %v", arn, err)
		}
	}
	// A role session assuming another role needs its own policy to allow it too.
	rc := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.URL), Credentials: credentials.NewStaticCredentialsProvider(
		akid, aws.ToString(out.Credentials.SecretAccessKey), aws.ToString(out.Credentials.SessionToken))})
	open := s.SeedAccountRole("444455556666", "open",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"sts:AssumeRole"}]}`, nil)
	if _, err := rc.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(open), RoleSessionName: aws.String("chain")}); code(err) != "AccessDenied" {
		t.Errorf("chained without identity policy: %v", err)
	}
	if _, err := c.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(consumer), RoleSessionName: aws.String("x")}); code(err) != "ValidationError" {
		t.Errorf("one-character session name: %v", err)
	}
}
