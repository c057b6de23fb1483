package fakests

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go"
)

// irsaEnv points the SDK's default chain at s exactly as IRSA configures a pod, with every
// other credential source neutralised so that a developer's ~/.aws cannot leak in.
func irsaEnv(t *testing.T, s *Server, tokenFile string) {
	t.Helper()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_ENDPOINT_URL"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_CONFIG_FILE", empty)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ROLE_ARN", s.RoleARN())
	t.Setenv("AWS_ROLE_SESSION_NAME", "fakests-test")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", tokenFile)
	t.Setenv("AWS_ENDPOINT_URL_STS", s.URL)
}

func retrieve(ctx context.Context, t *testing.T) (aws.Credentials, error) {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Credentials.Retrieve(ctx)
}

func start(t *testing.T, o Options) *Server {
	t.Helper()
	o.Logf = t.Logf
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestSDKChainGetsCredentials(t *testing.T) {
	s := start(t, Options{Duration: 20 * time.Minute})
	tok := s.NewToken()
	file, err := WriteTokenFile(t.TempDir(), tok)
	if err != nil {
		t.Fatal(err)
	}
	irsaEnv(t, s, file)
	ctx := context.Background()
	c, err := retrieve(ctx, t)
	if err != nil {
		t.Fatalf("SDK chain: %v", err)
	}
	if !strings.HasPrefix(c.AccessKeyID, "ASIA") || c.SessionToken == "" || !c.CanExpire {
		t.Fatalf("unexpected credentials %+v", c)
	}
	if d := time.Until(c.Expires); d < 19*time.Minute || d > 21*time.Minute {
		t.Fatalf("expires in %v, want ~20m", d)
	}
	sec, st, ok := s.Lookup(c.AccessKeyID)
	if !ok || sec != c.SecretAccessKey || st != c.SessionToken {
		t.Fatal("Lookup does not return what the SDK received")
	}
	if _, _, ok := s.Lookup("ASIANOTISSUED"); ok {
		t.Fatal("Lookup found a key never issued")
	}
	if s.Calls() != 1 || len(s.Issued()) != 1 {
		t.Fatalf("calls=%d issued=%d, want 1/1", s.Calls(), len(s.Issued()))
	}
	s.SetCredentialDuration(5 * time.Minute)
	c, err = retrieve(ctx, t)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(c.Expires); d < 4*time.Minute || d > 6*time.Minute {
		t.Fatalf("after SetCredentialDuration: expires in %v, want ~5m", d)
	}
}

func TestRotatedTokenFile(t *testing.T) {
	s := start(t, Options{})
	oldTok, newTok := s.NewToken(), s.NewToken()
	s.RotateToken(oldTok)
	dir := t.TempDir()
	file, err := WriteTokenFile(dir, oldTok)
	if err != nil {
		t.Fatal(err)
	}
	irsaEnv(t, s, file)
	ctx := context.Background()
	if _, err := retrieve(ctx, t); err != nil {
		t.Fatal(err)
	}
	s.RotateToken(newTok)
	if _, err := retrieve(ctx, t); apiCode(err) != "ExpiredTokenException" {
		t.Fatalf("old token after rotation: got %v, want ExpiredTokenException", err)
	}
	if _, err := WriteTokenFile(dir, newTok); err != nil {
		t.Fatal(err)
	}
	if _, err := retrieve(ctx, t); err != nil {
		t.Fatalf("rotated token file: %v", err)
	}
}

func TestWrongRole(t *testing.T) {
	s := start(t, Options{RoleARN: "arn:aws:iam::123456789012:role/other"})
	tok := s.NewToken()
	file, err := WriteTokenFile(t.TempDir(), tok)
	if err != nil {
		t.Fatal(err)
	}
	irsaEnv(t, s, file)
	t.Setenv("AWS_ROLE_ARN", DefaultRoleARN)
	if _, err := retrieve(context.Background(), t); apiCode(err) != "AccessDenied" {
		t.Fatalf("got %v, want AccessDenied", err)
	}
}

func TestFaults(t *testing.T) {
	s := start(t, Options{})
	file, err := WriteTokenFile(t.TempDir(), s.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	irsaEnv(t, s, file)
	ctx := context.Background()

	mustFault := func(f Fault) {
		t.Helper()
		if err := s.SetFault(f); err != nil {
			t.Fatal(err)
		}
	}
	mustFault(Unavailable)
	if _, err := retrieve(ctx, t); apiCode(err) != "ServiceUnavailable" {
		t.Fatalf("unavailable: got %v", err)
	}
	mustFault(Reset)
	if _, err := retrieve(ctx, t); err == nil || apiCode(err) != "" {
		t.Fatalf("reset: got %v, want a transport error", err)
	}
	mustFault(Refused)
	if _, err := retrieve(ctx, t); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("refused: got %v, want connection refused", err)
	}
	mustFault(Healthy)
	if _, err := retrieve(ctx, t); err != nil {
		t.Fatalf("listening again: %v", err)
	}
	s.SetDelay(time.Minute)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := retrieve(short, t); err == nil {
		t.Fatal("slow STS: retrieval succeeded within the deadline")
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("slow STS: gave up after %v", el)
	}
	s.SetDelay(0)
	if _, err := retrieve(ctx, t); err != nil {
		t.Fatalf("healthy again: %v", err)
	}
	if s.Failures() < 2 {
		t.Fatalf("failures=%d, want >= 2 (503 and reset)", s.Failures())
	}
}

func TestWriteTokenFileReplaces(t *testing.T) {
	dir := t.TempDir()
	p1, err := WriteTokenFile(dir, "one")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := WriteTokenFile(dir, "two")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p2)
	if err != nil || p1 != p2 || string(b) != "two" {
		t.Fatalf("p1=%s p2=%s content=%q err=%v", p1, p2, b, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("leftover temp files: %v", ents)
	}
}

func TestPodIdentity(t *testing.T) {
	s := start(t, Options{})
	tok := s.PodIdentityToken()
	file, err := WriteTokenFile(t.TempDir(), tok)
	if err != nil {
		t.Fatal(err)
	}
	irsaEnv(t, s, file)
	t.Setenv("AWS_ROLE_ARN", "")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", s.URL+PodIdentityPath)
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", file)
	ctx := context.Background()
	c, err := retrieve(ctx, t)
	if err != nil {
		t.Fatalf("pod identity: %v", err)
	}
	if sec, st, ok := s.Lookup(c.AccessKeyID); !ok || sec != c.SecretAccessKey || st != c.SessionToken || !strings.HasPrefix(c.AccessKeyID, "ASIA") {
		t.Fatalf("credentials %+v not as issued", c)
	}
	if c, ok := issuedAs(s, c.AccessKeyID); !ok || c.RoleARN != s.RoleARN() || c.SessionName != "pod-identity" {
		t.Fatalf("issued %+v, want a session of %s", c, s.RoleARN())
	}
	s.RotateToken(s.PodIdentityToken())
	if _, err := retrieve(ctx, t); err == nil || !strings.Contains(err.Error(), "ExpiredTokenException") {
		t.Fatalf("pod identity with a rejected token: %v, want ExpiredTokenException", err)
	}
}

func issuedAs(s *Server, akid string) (Credential, bool) {
	for _, c := range s.Issued() {
		if c.AccessKeyID == akid {
			return c, true
		}
	}
	return Credential{}, false
}
