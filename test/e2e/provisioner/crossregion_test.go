package provisioner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
)

const westRegion = "us-west-2"

// TestCrossRegionReplicaSignsForItsRegion (issue 16): apply with a us-west-2 read replica
// writes it into orders-reader with region us-west-2; the built sidecar, run with that config
// and the pod's IRSA credentials, signs that path's IAM token for us-west-2, which an RDS
// stand-in for the replica (a real streaming standby behind it) verifies cryptographically,
// credential scope included, and authorizes against the app role's policy as IAM would
// (rds-db:connect on arn:aws:rds-db:us-west-2:ACCOUNT:dbuser:DBI/orders_app). The same stand-in
// refuses a token for the same host and user signed for us-east-1.
func TestCrossRegionReplicaSignsForItsRegion(t *testing.T) {
	h := newHarness(t, nil)
	idp := newWebIdentity(t, h.fake)
	h.fake.SeedDBSubnetGroup(westRegion, "orders-west", []string{"subnet-0e1d2c3b4a5960001", "subnet-0e1d2c3b4a5960002"})
	key := h.fake.SeedKMSKeyIn(westRegion)
	h.writeSpec(func(s string) string {
		return s + "replicas:\n  - name: west\n    region: " + westRegion + "\n    kms_key_id: " + key +
			"\n    db_subnet_group: orders-west\n    security_group_ids: [sg-0e1d2c3b4a5960111]\n"
	})
	h.apply()

	// What apply found: the replica's endpoint and DbiResourceId, the instance's, the app role.
	var status struct {
		Replicas []struct {
			ID, Region string
			ResourceID string `json:"resource_id"`
			Path       *struct{ Address string }
		}
	}
	st := h.mustRun("status", "--output", "json")
	if err := json.Unmarshal([]byte(st.stdout), &status); err != nil || len(status.Replicas) != 1 || status.Replicas[0].Path == nil {
		t.Fatalf("status: %v\n%s", err, st.stdout)
	}
	west := status.Replicas[0]
	if west.Region != westRegion || !strings.HasPrefix(west.ResourceID, "db-") {
		t.Fatalf("replica %+v", west)
	}
	westHost, _, _ := net.SplitHostPort(west.Path.Address)
	inst, _ := h.fake.Instance("orders")
	role, ok := h.fake.Role("rdsvalet-orders-orders-orders-api")
	if !ok || inst.ResourceID == "" {
		t.Fatalf("role %v, instance %+v", ok, inst)
	}

	// The written config: the replica in orders-reader, signed for its own Region.
	raw, err := os.ReadFile(filepath.Join(h.dir, "sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	ls := cfg["listeners"].([]any)
	if len(ls) != 2 {
		t.Fatalf("written config:\n%s", raw)
	}
	writer, reader := ls[0].(map[string]any), ls[1].(map[string]any)
	var instanceHost string
	for _, p := range reader["paths"].([]any) {
		pm := p.(map[string]any)
		switch pm["name"] {
		case "replica-west":
			if pm["region"] != westRegion || pm["token_host"] != west.Path.Address || pm["tls_server_name"] != westHost {
				t.Fatalf("replica path %v:\n%s", pm, raw)
			}
		case "instance":
			if pm["region"] != nil {
				t.Fatalf("the instance's path has a region of its own: %v", pm)
			}
			instanceHost = pm["tls_server_name"].(string)
		}
	}
	if reader["name"] != "orders-reader" || instanceHost == "" {
		t.Fatalf("reader listener:\n%s", raw)
	}

	// A real primary and streaming standby, each behind a stand-in for its endpoint.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ca, err := pki.NewCA("cross-region test CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	primary, err := pgserver.Start(ctx, pgserver.Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = primary.Stop(context.Background()) })
	if err := primary.CreateRole(ctx, "orders_app"); err != nil {
		t.Fatal(err)
	}
	standby, err := primary.StartStandby(ctx, pgserver.Options{Dir: t.TempDir(), CA: ca, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = standby.Stop(context.Background()) })
	if err := standby.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	standIn := func(backend, host, tokenHost, region, resourceID string) *rdsstandin.Server {
		t.Helper()
		srvTLS, err := ca.ServerTLSConfig(host)
		if err != nil {
			t.Fatal(err)
		}
		s, err := rdsstandin.Start(rdsstandin.Options{Backend: backend, TLS: srvTLS, Logf: t.Logf,
			Verify:         rdsstandin.IAMVerifier(iamtoken.Options{ExpectHost: tokenHost, Region: region, Lookup: h.fake.LookupCredentials}),
			DBUserResource: "arn:aws:rds-db:" + region + ":" + account + ":dbuser:" + resourceID,
			Authorize:      func(akid, arn string) error { return h.fake.Authorized(akid, "rds-db:connect", arn) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	home := standIn(primary.Addr(), instanceHost, net.JoinHostPort(instanceHost, "5432"), region, inst.ResourceID)
	westIn := standIn(standby.Addr(), westHost, west.Path.Address, westRegion, west.ResourceID)

	// The sidecar, changed only where this machine differs from the VPC: listen and dial
	// addresses, the CA file; the writer keeps only its instance path.
	s := &runningSidecar{listen: loopbackAddr(t), admin: loopbackAddr(t), logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	readerListen := loopbackAddr(t)
	writer["listen"], reader["listen"] = s.listen, readerListen
	for _, l := range []map[string]any{writer, reader} {
		l["tls"].(map[string]any)["ca_file"] = caFile
		var kept []any
		for _, p := range l["paths"].([]any) {
			pm := p.(map[string]any)
			switch pm["name"] {
			case "instance":
				pm["address"] = home.Addr()
			case "replica-west":
				pm["address"] = westIn.Addr()
			default:
				continue
			}
			kept = append(kept, pm)
		}
		l["paths"] = kept
	}
	launchSidecar(t, h, cfg, s, idp.tokenFile("orders", "orders-api", "sts.amazonaws.com"), role.ARN)

	// The monitor logs in to the replica as the probe user (a us-west-2 token) and finds it a
	// fresh reader; /topology and /paths say its Region.
	var topo []struct {
		Listener  string
		Instances []struct {
			Name, Region, Role string
			Fresh              bool
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		topo = nil
		fresh := false
		if resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + s.admin + "/topology"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&topo)
			resp.Body.Close()
		}
		for _, l := range topo {
			for _, in := range l.Instances {
				if l.Listener == "orders-reader" && in.Name == "replica-west" && in.Fresh {
					fresh = in.Region == westRegion
				}
			}
		}
		if fresh {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica-west not a fresh us-west-2 reader after 30s: %+v\nstand-in %+v\n%s", topo, westIn.Stats(), s.log())
		}
		<-time.After(50 * time.Millisecond) // poll interval
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + s.admin + "/paths")
	if err != nil {
		t.Fatal(err)
	}
	var paths []struct {
		Listener string
		Paths    []struct{ Name, Region string }
	}
	err = json.NewDecoder(resp.Body).Decode(&paths)
	resp.Body.Close()
	regions := map[string]string{}
	for _, l := range paths {
		for _, p := range l.Paths {
			regions[l.Listener+"/"+p.Name] = p.Region
		}
	}
	if err != nil || regions["orders-reader/replica-west"] != westRegion || regions["orders-reader/instance"] != region || regions["orders/instance"] != region {
		t.Errorf("/paths regions %v (%v), want replica-west in %s, the instance in %s", regions, err, westRegion, region)
	}

	// The app's read through orders-reader lands on the standby in us-west-2.
	conn, err := pgx.Connect(ctx, "postgres://orders_app@"+readerListen+"/postgres?sslmode=disable")
	if err != nil {
		t.Fatalf("through orders-reader: %v\n%s", err, s.log())
	}
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || !inRecovery {
		t.Errorf("reader session in recovery %v, %v: want the us-west-2 standby", inRecovery, err)
	}
	conn.Close(ctx)
	if st := westIn.Stats(); st.LoginsOK < 2 || len(st.LoginsFailed) != 0 {
		t.Errorf("us-west-2 stand-in: %+v; want the monitor's and the app's logins, none refused", st)
	}

	// The stand-in is no pushover: the same credentials, host and user signed for the wrong
	// Region are refused (credential scope), and for the right one accepted.
	for _, tc := range []struct {
		region, reason string
	}{{region, "token_wrong_scope"}, {westRegion, ""}} {
		before := westIn.Stats()
		tok := irsaTokenIn(t, h, idp.tokenFile("orders", "orders-api", "sts.amazonaws.com"), role.ARN, west.Path.Address, "orders_app", tc.region)
		err := westLogin(ctx, t, westIn.Addr(), westHost, ca, tok)
		after := westIn.Stats()
		switch {
		case tc.reason != "" && (err == nil || after.LoginsFailed[tc.reason] != before.LoginsFailed[tc.reason]+1):
			t.Errorf("token signed for %s: login %v, stand-in %+v; want refused as %s", tc.region, err, after, tc.reason)
		case tc.reason == "" && err != nil:
			t.Errorf("token signed for %s: %v", tc.region, err)
		}
	}
}

// irsaTokenIn is irsaToken for another Region.
func irsaTokenIn(t *testing.T, h *harness, tokenFile, roleARN, host, user, signRegion string) string {
	t.Helper()
	for k, v := range map[string]string{"AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile, "AWS_ROLE_ARN": roleARN, "AWS_ROLE_SESSION_NAME": "orders-api-pod",
		"AWS_ENDPOINT_URL_STS": h.fake.URL, "AWS_REGION": region, "AWS_EC2_METADATA_DISABLED": "true",
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
		t.Fatal(err)
	}
	tok, err := auth.BuildAuthToken(ctx, host, signRegion, user, cfg.Credentials)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func westLogin(ctx context.Context, t *testing.T, addr, tlsName string, ca *pki.CA, token string) error {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " dbname=postgres sslmode=verify-full")
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password, cfg.Fallbacks, cfg.TLSConfig = "orders_app", token, nil, ca.ClientTLSConfig(tlsName)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
