package provisioner_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
)

// TestAppLogsInOnThePrivateLinkPathAsTheProvisionedUser is the whole chain an app's login goes
// through, each link decided by what the provisioner made:
//
//   - the sidecar runs with the config apply wrote, on its privatelink path (the VPC endpoint's
//     DNS name dialled, TLS verified and the token signed for the proxy's name);
//   - its credentials come from STS only if the IRSA role apply made trusts the pod's
//     ServiceAccount token (issuer, sub, aud);
//   - the stand-in plays VPC endpoint -> NLB -> RDS Proxy with end-to-end IAM: it verifies the
//     token, lets the caller in only if its role may rds-db:connect as the db user on the
//     proxy (prx-...), then only if the proxy itself can log in to the instance as that user
//     (the fake's model of DefaultAuthScheme=IAM_AUTH: the proxy role's rds-db:connect on
//     db-RESOURCEID/USER), and then, as RDS does, only if the user exists in the database with
//     the rds_iam grant, which apply's db-user step made on a real PostgreSQL.
//
// Each link is then broken on its own and the same login is refused.
func TestAppLogsInOnThePrivateLinkPathAsTheProvisionedUser(t *testing.T) {
	h := newHarness(t, dbUsersSpec)
	idp := newWebIdentity(t, h.fake)
	h.apply() // the AWS side; the db users come later, against the real server

	endpoint, ok := h.fake.InstanceEndpoint("orders")
	if !ok {
		t.Fatal("no instance")
	}
	sec := masterSecret(t, h)
	rdb := startRealPG(t, endpoint, sec.Username, sec.Password)

	role, ok := h.fake.Role("rdsvalet-orders-orders-orders-api")
	px, _ := h.fake.Proxy("orders")
	if !ok || px.Endpoint == "" {
		t.Fatalf("role %v, proxy %+v", ok, px)
	}
	prx := px.ARN[strings.LastIndex(px.ARN, ":")+1:]
	w := &identityWorld{h: h, idp: idp, apiRoleARN: role.ARN, proxyHost: px.Endpoint, tokenHost: net.JoinHostPort(px.Endpoint, "5432")}

	// The written config's privatelink path dials the consumer endpoint's DNS name.
	vpceDNS := privateLinkAddress(t, filepath.Join(h.dir, "sidecar.yaml"))
	if !strings.Contains(vpceDNS, ".vpce.amazonaws.com:") {
		t.Fatalf("privatelink path address %q is not a VPC endpoint name", vpceDNS)
	}

	var err error
	if w.ca, err = pki.NewCA("privatelink test CA"); err != nil {
		t.Fatal(err)
	}
	if w.caFile, err = w.ca.WriteCAFile(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	srvTLS, err := w.ca.ServerTLSConfig(w.proxyHost)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		refusal []string // why the stand-in refused, in order
	)
	refuse := func(err error) error {
		mu.Lock()
		defer mu.Unlock()
		refusal = append(refusal, err.Error())
		return err
	}
	lastRefusal := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(refusal) == 0 {
			return ""
		}
		return refusal[len(refusal)-1]
	}
	w.standin, err = rdsstandin.Start(rdsstandin.Options{Backend: rdb.addr(t), TLS: srvTLS, Logf: t.Logf,
		Verify:         rdsstandin.IAMVerifier(iamtoken.Options{ExpectHost: w.tokenHost, Region: region, Lookup: h.fake.LookupCredentials}),
		DBUserResource: "arn:aws:rds-db:" + region + ":" + account + ":dbuser:" + prx,
		Authorize: func(akid, dbUserARN string) error {
			if err := h.fake.Authorized(akid, "rds-db:connect", dbUserARN); err != nil {
				return refuse(fmt.Errorf("app role: %w", err))
			}
			user := dbUserARN[strings.LastIndex(dbUserARN, "/")+1:]
			if err := h.fake.ProxyAuthenticates("orders", user); err != nil {
				return refuse(fmt.Errorf("proxy: %w", err))
			}
			if !rdb.isIAMUser(t, user) {
				return refuse(fmt.Errorf("database: %s is not a member of rds_iam", user))
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.standin.Close() })

	api := startProvisionedSidecarOn(t, w, "privatelink", idp.tokenFile("orders", "orders-api", "sts.amazonaws.com"), w.apiRoleARN)
	insert := func() error { return insertAs(t, api.listen, "orders_app") }

	// Before the db-user step the user does not exist: RDS refuses the IAM login.
	if err := insert(); err == nil {
		t.Fatal("orders_app logged in before the provisioner created it")
	}
	if r := lastRefusal(); !strings.Contains(r, "database: orders_app is not a member of rds_iam") {
		t.Fatalf("refusal before the db-user step: %q", r)
	}

	// apply with the db-user step: the user exists with rds_iam and its grants, and the app's
	// login through the sidecar on the PrivateLink path writes a row.
	h.runDB(append([]string{"apply", "--config-out", filepath.Join(h.dir, "sidecar.yaml")}, rdb.args...)...)
	if err := insert(); err != nil {
		t.Fatalf("orders_app through the sidecar on the privatelink path: %v\nrefusals: %q", err, refusal)
	}

	t.Run("the role's trust does not allow the pod", func(t *testing.T) {
		other := startProvisionedSidecarOn(t, w, "privatelink", idp.tokenFile("payments", "orders-api", "sts.amazonaws.com"), w.apiRoleARN)
		before := w.standin.Stats().LoginsOK
		if err := insertAs(t, other.listen, "orders_app"); err == nil {
			t.Fatal("a pod of another namespace logged in with orders-api's role")
		}
		if !stsRefused(w, "AccessDenied") {
			t.Error("STS did not refuse the web identity")
		}
		if after := w.standin.Stats().LoginsOK; after != before {
			t.Errorf("the stand-in let a session in (%d -> %d)", before, after)
		}
	})

	t.Run("the app role's rds-db:connect does not allow the user", func(t *testing.T) {
		// orders_ro exists in the database (orders-reporting's user) but orders-api's role may
		// not connect as it.
		if err := insertAs(t, api.listen, "orders_ro"); err == nil {
			t.Fatal("orders-api logged in as orders_ro")
		}
		if r := lastRefusal(); !strings.HasPrefix(r, "app role: ") {
			t.Errorf("refusal: %q", r)
		}
	})

	t.Run("the proxy role's rds-db:connect is denied", func(t *testing.T) {
		iamc := fakeIAM(h)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		deny := `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"rds-db:connect","Resource":"*"}]}`
		if _, err := iamc.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("rdsvalet-orders-proxy"),
			PolicyName: aws.String("deny-connect"), PolicyDocument: aws.String(deny)}); err != nil {
			t.Fatal(err)
		}
		if err := insert(); err == nil {
			t.Fatal("logged in while the proxy may not connect as the user")
		}
		if r := lastRefusal(); !strings.HasPrefix(r, "proxy: ") {
			t.Errorf("refusal: %q", r)
		}
		if _, err := iamc.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String("rdsvalet-orders-proxy"),
			PolicyName: aws.String("deny-connect")}); err != nil {
			t.Fatal(err)
		}
		// A refused login is the database's answer, not a dead path: the same sidecar logs in
		// again at once.
		if err := insert(); err != nil {
			t.Fatalf("after the deny was lifted: %v", err)
		}
	})
}

// privateLinkAddress is the address of the privatelink path in a written sidecar config.
func privateLinkAddress(t *testing.T, file string) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Listeners []struct {
			Paths []struct{ Name, Address string }
		}
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, l := range cfg.Listeners {
		for _, p := range l.Paths {
			if p.Name == "privatelink" {
				return p.Address
			}
		}
	}
	t.Fatalf("no privatelink path in\n%s", raw)
	return ""
}

// insertAs logs in through the sidecar's plaintext listener as user (the sidecar supplies the
// IAM token) to the apps' database and writes a row, which only readwrite may.
func insertAs(t *testing.T, listen, user string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host, port, _ := net.SplitHostPort(listen)
	cfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " dbname=orders sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password, cfg.Fallbacks = user, "unused", nil
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "INSERT INTO orders.items (name) VALUES ('through privatelink')")
	return err
}

// fakeIAM is an IAM client of the fake with the account's static (admin) key, for a test to
// change a role behind the provisioner's back.
func fakeIAM(h *harness) *iam.Client {
	return iam.NewFromConfig(aws.Config{Region: region, BaseEndpoint: aws.String(h.fake.URL),
		Credentials: credentials.NewStaticCredentialsProvider(accessKey, secretKey, "")})
}

// addr is the real server's address for the stand-in's backend connection.
func (r *realPG) addr(t *testing.T) string {
	t.Helper()
	for i, a := range r.args {
		if a == "--db-endpoint" && i+1 < len(r.args) {
			return r.args[i+1]
		}
	}
	t.Fatal("no --db-endpoint in the real server's args")
	return ""
}

// isIAMUser says, as RDS decides whether an IAM login may proceed, whether user exists and is
// a member of rds_iam.
func (r *realPG) isIAMUser(t *testing.T, user string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ok bool
	err := r.master.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member
		JOIN pg_roles g ON g.oid = m.roleid WHERE u.rolname = $1 AND g.rolname = 'rds_iam')`, user).Scan(&ok)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("rds_iam membership of %s: %v", user, err)
	}
	return ok
}
