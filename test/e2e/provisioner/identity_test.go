package provisioner_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/fakeaws"
	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
)

const (
	// clusterIssuer is the EKS cluster's OIDC issuer named by docs/examples/orders.yaml.
	clusterIssuer   = "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
	consumerAccount = "444455556666"
)

// seedIdentity gives every harness what exists before the provisioner runs: the cluster's IAM
// OIDC provider in the storage account, and the consumer account's role the provisioner
// assumes (trusting the storage account, allowed the endpoint calls docs/provisioner.md lists).
func seedIdentity(f *fakeaws.Server) {
	f.SeedOIDCProvider(clusterIssuer, "sts.amazonaws.com")
	f.SeedAccountRole(consumerAccount, "rdsvalet-consumer",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::`+account+`:root"},"Action":"sts:AssumeRole"}]}`,
		map[string]string{"endpoints": `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*","Action":[` +
			`"ec2:CreateVpcEndpoint","ec2:DescribeVpcEndpoints","ec2:DeleteVpcEndpoints","ec2:CreateTags",` +
			`"ec2:DescribeVpcEndpointServices","ec2:DescribeSubnets"]}]}`})
}

// webIdentity signs ServiceAccount tokens as the cluster's issuer does.
type webIdentity struct {
	t   *testing.T
	key *rsa.PrivateKey
}

func newWebIdentity(t *testing.T, f *fakeaws.Server) *webIdentity {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f.AddOIDCIssuer(clusterIssuer, &key.PublicKey)
	return &webIdentity{t: t, key: key}
}

// tokenFile writes a projected ServiceAccount token for ns/sa with audience aud.
func (w *webIdentity) tokenFile(ns, sa, aud string) string {
	w.t.Helper()
	tok, err := fakeaws.SignJWT(w.key, "k1", map[string]any{"iss": clusterIssuer, "sub": "system:serviceaccount:" + ns + ":" + sa,
		"aud": []string{aud}, "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": sa}}})
	if err != nil {
		w.t.Fatal(err)
	}
	p := filepath.Join(w.t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// irsaToken gets credentials the way a pod does (the SDK's default chain with the IRSA
// environment, STS reached through AWS_ENDPOINT_URL_STS) and mints an RDS IAM token with them.
func irsaToken(t *testing.T, f *fakeaws.Server, tokenFile, roleARN, host, user string) (string, error) {
	t.Helper()
	for k, v := range map[string]string{"AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile, "AWS_ROLE_ARN": roleARN, "AWS_ROLE_SESSION_NAME": "orders-api-pod",
		"AWS_ENDPOINT_URL_STS": f.URL, "AWS_REGION": region, "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(t.TempDir(), "none")} {
		t.Setenv(k, v)
	}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return "", err
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return "", err
	}
	return auth.BuildAuthToken(ctx, host, region, user, cfg.Credentials)
}

// identityWorld is what an IAM login through the provisioned proxy meets: a real PostgreSQL
// with the spec's db users behind an RDS-like stand-in for the proxy endpoint, which verifies
// the token with the secret STS issued and then asks the fake IAM whether the caller may
// rds-db:connect on arn:aws:rds-db:REGION:ACCOUNT:dbuser:prx-.../USER.
type identityWorld struct {
	h                    *harness
	idp                  *webIdentity
	ca                   *pki.CA
	caFile               string
	standin              *rdsstandin.Server
	proxyHost, tokenHost string
	apiRoleARN           string
}

func startIdentityWorld(t *testing.T) *identityWorld {
	t.Helper()
	h := newHarness(t, nil)
	w := &identityWorld{h: h, idp: newWebIdentity(t, h.fake)}
	h.apply()
	role, ok := h.fake.Role("rdsvalet-orders-orders-orders-api")
	px, _ := h.fake.Proxy("orders")
	if !ok || px.Endpoint == "" {
		t.Fatalf("role %v, proxy %+v", ok, px)
	}
	w.apiRoleARN, w.proxyHost = role.ARN, px.Endpoint
	w.tokenHost = net.JoinHostPort(w.proxyHost, "5432")
	prx := px.ARN[strings.LastIndex(px.ARN, ":")+1:]

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	if w.ca, err = pki.NewCA("identity test CA"); err != nil {
		t.Fatal(err)
	}
	if w.caFile, err = w.ca.WriteCAFile(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	pg, err := pgserver.Start(ctx, pgserver.Options{Dir: t.TempDir(), CA: w.ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop(context.Background()) })
	for _, u := range []string{"orders_app", "orders_ro"} {
		if err := pg.CreateRole(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	srvTLS, err := w.ca.ServerTLSConfig(w.proxyHost)
	if err != nil {
		t.Fatal(err)
	}
	w.standin, err = rdsstandin.Start(rdsstandin.Options{Backend: pg.Addr(), TLS: srvTLS, Logf: t.Logf,
		Verify:         rdsstandin.IAMVerifier(iamtoken.Options{ExpectHost: w.tokenHost, Region: region, Lookup: h.fake.LookupCredentials}),
		DBUserResource: "arn:aws:rds-db:" + region + ":" + account + ":dbuser:" + prx,
		Authorize: func(akid, dbUserARN string) error {
			return h.fake.Authorized(akid, "rds-db:connect", dbUserARN)
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.standin.Close() })
	return w
}

// login connects to addr as user with password over TLS when tlsName is set (the stand-in
// directly), else in plaintext (the sidecar's local listener), and checks the session's user.
func (w *identityWorld) login(t *testing.T, addr, tlsName, user, password string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host, port, _ := net.SplitHostPort(addr)
	mode := "disable"
	if tlsName != "" {
		mode = "verify-full"
	}
	cfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " dbname=postgres sslmode=" + mode)
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password, cfg.Fallbacks = user, password, nil
	if tlsName != "" {
		cfg.TLSConfig = w.ca.ClientTLSConfig(tlsName)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var who string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != user {
		t.Fatalf("session user %q, %v", who, err)
	}
	return nil
}

func isPAMFailure(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "28P01" && strings.Contains(pe.Message, "PAM authentication failed")
}

// TestIRSALoginAsAWSEnforcesIt: the provisioner's IRSA role, assumed with a ServiceAccount
// token through STS, yields an IAM token an RDS-like endpoint accepts for the role's db user,
// and nothing else gets in: another ServiceAccount's token, a token for another audience, a
// db user the role's policy does not allow. The app side is pgx with the SDK directly;
// TestIRSALoginThroughTheSidecar does the same through the sidecar binary.
func TestIRSALoginAsAWSEnforcesIt(t *testing.T) {
	w := startIdentityWorld(t)
	h, idp, standin := w.h, w.idp, w.standin
	apiToken := idp.tokenFile("orders", "orders-api", "sts.amazonaws.com")
	tok, err := irsaToken(t, h.fake, apiToken, w.apiRoleARN, w.tokenHost, "orders_app")
	if err != nil {
		t.Fatalf("credentials for orders/orders-api: %v", err)
	}
	if err := w.login(t, standin.Addr(), w.proxyHost, "orders_app", tok); err != nil {
		t.Fatalf("orders-api as orders_app: %v", err)
	}

	t.Run("another ServiceAccount's token", func(t *testing.T) {
		_, err := irsaToken(t, h.fake, idp.tokenFile("orders", "orders-reporting", "sts.amazonaws.com"), w.apiRoleARN, w.tokenHost, "orders_app")
		if err == nil || !strings.Contains(err.Error(), "AccessDenied") || !strings.Contains(err.Error(), "Not authorized to perform sts:AssumeRoleWithWebIdentity") {
			t.Fatalf("want STS AccessDenied, got %v", err)
		}
		_, err = irsaToken(t, h.fake, idp.tokenFile("billing", "orders-api", "sts.amazonaws.com"), w.apiRoleARN, w.tokenHost, "orders_app")
		if err == nil || !strings.Contains(err.Error(), "AccessDenied") {
			t.Fatalf("same name in another namespace: want AccessDenied, got %v", err)
		}
	})
	t.Run("wrong audience", func(t *testing.T) {
		_, err := irsaToken(t, h.fake, idp.tokenFile("orders", "orders-api", "https://kubernetes.default.svc"), w.apiRoleARN, w.tokenHost, "orders_app")
		if err == nil || !strings.Contains(err.Error(), "InvalidIdentityToken") {
			t.Fatalf("want InvalidIdentityToken, got %v", err)
		}
	})
	t.Run("db user the role may not connect as", func(t *testing.T) {
		tok, err := irsaToken(t, h.fake, apiToken, w.apiRoleARN, w.tokenHost, "orders_ro")
		if err != nil {
			t.Fatal(err)
		}
		before := standin.Stats().LoginsFailed[rdsstandin.ReasonNotAuthorized]
		if err := w.login(t, standin.Addr(), w.proxyHost, "orders_ro", tok); !isPAMFailure(err) {
			t.Fatalf("want 28P01 PAM authentication failed, got %v", err)
		}
		if got := standin.Stats().LoginsFailed[rdsstandin.ReasonNotAuthorized]; got != before+1 {
			t.Errorf("not_authorized logins %d, want %d", got, before+1)
		}
	})
	if st := standin.Stats(); st.LoginsOK != 1 {
		t.Errorf("stand-in stats %+v: only the first login may pass", st)
	}
}

// TestOIDCProviderMustExistInTheStorageAccount (issue 15 item 13): the IRSA roles trust an
// OIDC provider of the account apply runs in; another account's provider, or one that does not
// exist, fails before anything is created; with oidc_issuer_url apply creates it, once, and
// destroy leaves it (other databases of the cluster use it).
func TestOIDCProviderMustExistInTheStorageAccount(t *testing.T) {
	const otherIssuer = "oidc.eks.us-east-1.amazonaws.com/id/0THERC1USTER0000000000000000000"
	t.Run("another account's provider", func(t *testing.T) {
		h := newHarness(t, func(s string) string {
			return strings.Replace(s, "arn:aws:iam::111122223333:oidc-provider/", "arn:aws:iam::999999999999:oidc-provider/", 1)
		})
		r := h.run("apply")
		if r.code != 1 || !strings.Contains(r.stderr, "account 999999999999") || !strings.Contains(r.stderr, "runs in account 111122223333") {
			t.Fatalf("exit %d\n%s", r.code, tail(r.stderr, 2000))
		}
		if m := h.mutations(); len(m) != 0 {
			t.Errorf("mutated %v", m)
		}
	})
	t.Run("missing provider", func(t *testing.T) {
		h := newHarness(t, func(s string) string {
			return strings.Replace(s, "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE", otherIssuer, 1)
		})
		r := h.run("plan")
		if r.code != 1 || !strings.Contains(r.stderr, "iam:GetOpenIDConnectProvider found no") || !strings.Contains(r.stderr, "oidc_issuer_url") {
			t.Fatalf("exit %d\n%s", r.code, tail(r.stderr, 2000))
		}
		if m := h.mutations(); len(m) != 0 {
			t.Errorf("mutated %v", m)
		}
	})
	t.Run("created from oidc_issuer_url", func(t *testing.T) {
		h := newHarness(t, func(s string) string {
			s = strings.Replace(s, "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE", otherIssuer, 1)
			s = strings.Replace(s, "deletion_protection: true", "deletion_protection: false", 1)
			return strings.Replace(s, "  service_accounts:", "  oidc_issuer_url: https://"+otherIssuer+"\n  service_accounts:", 1)
		})
		got := h.plan()
		if len(got) == 0 || got[0].Kind != "oidc-provider" || got[0].Action != "create" {
			t.Fatalf("plan: %+v", got)
		}
		h.apply()
		want := "arn:aws:iam::" + account + ":oidc-provider/" + otherIssuer
		if p := h.fake.OIDCProviders(); !containsStr(p, want) {
			t.Fatalf("providers %v lack %s", p, want)
		}
		if got := h.plan(); len(got) != 0 {
			t.Errorf("second plan: %+v", got)
		}
		h.mustRun("destroy")
		if p := h.fake.OIDCProviders(); !containsStr(p, want) {
			t.Errorf("destroy deleted the cluster's shared OIDC provider: %v", p)
		}
	})
	t.Run("issuer url not matching the ARN", func(t *testing.T) {
		h := newHarness(t, func(s string) string {
			return strings.Replace(s, "  service_accounts:", "  oidc_issuer_url: https://"+otherIssuer+"\n  service_accounts:", 1)
		})
		if r := h.run("plan"); r.code != 1 || !strings.Contains(r.stderr, "access.oidc_issuer_url") {
			t.Fatalf("exit %d\n%s", r.code, tail(r.stderr, 2000))
		}
	})
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
