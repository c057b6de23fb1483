// Package provisioner_test runs the built provisioner binary against fakeaws, a local endpoint
// speaking the AWS wire protocols, so the real SDK serializes, signs and parses every call.
package provisioner_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/test/fakeaws"
)

const (
	account   = "111122223333"
	region    = "us-east-1"
	accessKey = "AKIDPROVISIONERTEST"
	secretKey = "provisioner-test-secret-key"
	lbName    = "rdsvalet-orders"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		code = checkDocumentedPolicy() // iampolicy_test.go
	}
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// binary builds cmd/provisioner once per test run into a temp dir.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "provisioner-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "provisioner")
		// Same flags as `make build`, so the build cache is shared with it.
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "github.com/rdsvalet/rds-valet/cmd/provisioner")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type harness struct {
	t    *testing.T
	fake *fakeaws.Server
	dir  string
	spec string
}

func newHarness(t *testing.T, edit func(string) string) *harness {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped with -short")
	}
	bin := binary(t)
	_ = bin
	fake, err := fakeaws.Start(fakeaws.Config{AccountID: account, Region: region, AccessKey: accessKey, SecretKey: secretKey, ReadyAfter: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recordActions(fake); _ = fake.Close() })
	// The security group the spec allows in (the EKS pods' group) exists beforehand.
	fake.SeedSecurityGroup("sg-0a1b2c3d4e5f60999", "eks-cluster-pods", "vpc-0a1b2c3d4e5f60718", nil)
	seedExampleSubnets(fake, consumerAccount)
	seedIdentity(fake) // the cluster's OIDC provider and the consumer account's role (identity_test.go)
	h := &harness{t: t, fake: fake, dir: t.TempDir()}
	h.writeSpec(edit)
	return h
}

func (h *harness) writeSpec(edit func(string) string) {
	h.t.Helper()
	b, err := os.ReadFile("../../../docs/examples/orders.yaml")
	if err != nil {
		h.t.Fatal(err)
	}
	doc := string(b)
	if edit != nil {
		doc = edit(doc)
	}
	h.spec = filepath.Join(h.dir, "orders.yaml")
	if err := os.WriteFile(h.spec, []byte(doc), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) command(args ...string) *exec.Cmd {
	full := append([]string{args[0], "-f", h.spec, "--poll-interval", "2ms", "--max-poll-interval", "10ms",
		"--aws-max-backoff", "20ms", "--wait-timeout", "20s", "--log-format", "json", "--skip-final-snapshot",
		// One holder for every run of a test: a run resuming after a killed one takes its lease.
		"--lease-holder", "e2e",
		// The db users need a real database behind the fake's instance: dbusers_test.go.
		"--skip-db-users"}, args[1:]...)
	cmd := exec.Command(binary(h.t), full...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + h.dir,
		"AWS_ENDPOINT_URL=" + h.fake.URL, "AWS_ACCESS_KEY_ID=" + accessKey, "AWS_SECRET_ACCESS_KEY=" + secretKey,
		"AWS_REGION=" + region, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(h.dir, "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(h.dir, "none"),
	}
	return cmd
}

type result struct {
	code           int
	stdout, stderr string
}

func (h *harness) run(args ...string) result {
	h.t.Helper()
	return h.exec(h.command(args...))
}

// exec runs cmd and collects its exit code and output.
func (h *harness) exec(cmd *exec.Cmd) result {
	h.t.Helper()
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatal(err)
	}
	return result{code, so.String(), se.String()}
}

func (h *harness) mustRun(args ...string) result {
	h.t.Helper()
	r := h.run(args...)
	if r.code != 0 {
		h.t.Fatalf("%v: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, tail(r.stderr, 4000))
	}
	return r
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

type change struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Action string `json:"action"`
	Fields []struct {
		Field, From, To string
	} `json:"fields"`
}

func (h *harness) plan() []change {
	h.t.Helper()
	r := h.mustRun("plan", "--output", "json")
	var p struct{ Changes []change }
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		h.t.Fatalf("plan json: %v\n%s", err, r.stdout)
	}
	return p.Changes
}

func (h *harness) mutations() []string {
	var out []string
	for _, c := range h.fake.Calls() {
		if c.Mutates && !leaseOnly(c) {
			out = append(out, c.Action)
		}
	}
	return out
}

// leaseOnly reports a tagging call that only took, renewed or released the apply lease.
func leaseOnly(c fakeaws.Call) bool {
	if c.Action != "CreateTags" && c.Action != "DeleteTags" || len(c.TagKeys) == 0 {
		return false
	}
	for _, k := range c.TagKeys {
		if k != "rdsvalet.io/lease" {
			return false
		}
	}
	return true
}

func (h *harness) apply() result {
	h.t.Helper()
	return h.mustRun("apply", "--config-out", filepath.Join(h.dir, "sidecar.yaml"), "--configmap-out", filepath.Join(h.dir, "configmap.yaml"))
}

func TestApplyFromEmptyCreatesLinkedResourcesAndIsIdempotent(t *testing.T) {
	h := newHarness(t, nil)
	if got := h.plan(); len(got) != 15 {
		t.Errorf("plan from empty: %d changes, want 15 (13 kinds, 2 IRSA roles): %+v", len(got), got)
	}
	h.apply()
	f := h.fake

	in, ok := f.Instance("orders")
	if !ok || in.Status != "available" || !in.IAMAuth || !in.Encrypted || !in.DeletionProtection || !in.MultiAZ || in.SubnetGroup != "rdsvalet-orders" {
		t.Fatalf("instance: %+v", in)
	}
	if in.Tags["rdsvalet.io/managed-by"] != "rds-valet" || in.Tags["rdsvalet.io/database"] != "orders" || in.Tags["team"] != "payments" {
		t.Errorf("instance tags: %v", in.Tags)
	}
	sgs := f.SecurityGroups()
	if len(in.SecurityGroups) != 1 || sgs[in.SecurityGroups[0]]["name"] != "rdsvalet-orders" {
		t.Fatalf("instance security groups %v, groups %v", in.SecurityGroups, sgs)
	}
	sgID := in.SecurityGroups[0]
	for _, want := range []string{"tcp|5432|5432|" + sgID, "tcp|5432|5432|sg-0a1b2c3d4e5f60999", "tcp|5432|5432|10.20.0.0/16"} {
		if !strings.Contains(sgs[sgID]["rules"], want) {
			t.Errorf("security group rules %q lack %q", sgs[sgID]["rules"], want)
		}
	}

	secretARN := f.Secrets()["rdsvalet/orders/master"]
	proxyRole, ok := f.Role("rdsvalet-orders-proxy")
	if secretARN == "" || !ok {
		t.Fatalf("secret %q, proxy role %v", secretARN, ok)
	}
	if !strings.Contains(proxyRole.Trust, "rds.amazonaws.com") || !strings.Contains(proxyRole.Policies["rds-valet"], secretARN) {
		t.Errorf("proxy role does not let RDS read the secret: %+v", proxyRole)
	}
	px, ok := f.Proxy("orders")
	if !ok || px.RoleARN != proxyRole.ARN || len(px.Auth) != 1 || px.Auth[0]["SecretArn"] != secretARN || px.Auth[0]["IAMAuth"] != "REQUIRED" || !px.RequireTLS || px.EngineFamily != "POSTGRESQL" {
		t.Fatalf("proxy linkage: %+v (role %s, secret %s)", px, proxyRole.ARN, secretARN)
	}
	if len(px.Targets) != 1 || px.Targets[0] != "orders" {
		t.Errorf("proxy targets %v, want [orders]", px.Targets)
	}
	var wantTargets []string
	for _, ip := range px.IPs {
		wantTargets = append(wantTargets, ip)
	}
	sort.Strings(wantTargets)
	if got := f.TargetIPs(lbName); strings.Join(got, ",") != strings.Join(wantTargets, ",") || len(got) == 0 {
		t.Errorf("NLB targets %v, want proxy IPs %v", got, wantTargets)
	}
	lbARN, _, lbSGs, ok := f.LoadBalancer(lbName)
	if !ok || len(lbSGs) != 1 || lbSGs[0] != sgID {
		t.Fatalf("NLB: %v %v", ok, lbSGs)
	}
	if l := f.ListenerTargets(lbName); l[5432] != lbName {
		t.Errorf("listener: %v", l)
	}
	svcs := f.Services()
	if len(svcs) != 1 || !svcs[0].AcceptanceRequired || len(svcs[0].NLBs) != 1 || svcs[0].NLBs[0] != lbARN ||
		strings.Join(svcs[0].Principals, ",") != "arn:aws:iam::444455556666:root" {
		t.Fatalf("endpoint service: %+v (nlb %s)", svcs, lbARN)
	}
	eps := f.Endpoints()
	if len(eps) != 1 {
		t.Fatalf("endpoints: %v", eps)
	}
	for id, st := range eps {
		if st != "available" {
			t.Errorf("endpoint %s is %s", id, st)
		}
	}

	prx := px.ARN[strings.LastIndex(px.ARN, ":")+1:]
	for sa, user := range map[string]string{"orders-api": "orders_app", "orders-reporting": "orders_ro"} {
		r, ok := f.Role("rdsvalet-orders-orders-" + sa)
		if !ok {
			t.Fatalf("IRSA role for %s missing; roles: %v", sa, f.RoleNames())
		}
		var trust struct {
			Statement []struct {
				Principal struct{ Federated string }
				Action    string
				Condition struct{ StringEquals map[string]string }
			}
		}
		if err := json.Unmarshal([]byte(r.Trust), &trust); err != nil {
			t.Fatal(err)
		}
		st := trust.Statement[0]
		issuer := "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
		if st.Principal.Federated != "arn:aws:iam::111122223333:oidc-provider/"+issuer || st.Action != "sts:AssumeRoleWithWebIdentity" ||
			st.Condition.StringEquals[issuer+":sub"] != "system:serviceaccount:orders:"+sa || st.Condition.StringEquals[issuer+":aud"] != "sts.amazonaws.com" {
			t.Errorf("trust of %s: %s", sa, r.Trust)
		}
		pol := r.Policies["rds-valet"]
		for _, res := range []string{"arn:aws:rds-db:us-east-1:111122223333:dbuser:" + prx + "/" + user, "arn:aws:rds-db:us-east-1:111122223333:dbuser:" + in.ResourceID + "/" + user} {
			if !strings.Contains(pol, res) || !strings.Contains(pol, "rds-db:connect") {
				t.Errorf("policy of %s lacks %s: %s", sa, res, pol)
			}
		}
	}

	// The sidecar config: three paths with their three names.
	var cfg config.Config
	raw, err := os.ReadFile(filepath.Join(h.dir, "sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.AWS.Region != region || len(cfg.Listeners) != 1 || cfg.Listeners[0].Engine != "postgres" || len(cfg.Listeners[0].Paths) != 3 {
		t.Fatalf("sidecar config:\n%s", raw)
	}
	ps := cfg.Listeners[0].Paths
	if ps[0].Name != "privatelink" || !strings.Contains(ps[0].Address, ".vpce.amazonaws.com:5432") ||
		ps[0].TLSServerName != px.Endpoint || ps[0].TokenHost != px.Endpoint+":5432" {
		t.Errorf("privatelink path: %+v (proxy %s)", ps[0], px.Endpoint)
	}
	if ps[1].Name != "rds-proxy" || ps[1].Address != px.Endpoint+":5432" || ps[2].Name != "instance" || !strings.HasPrefix(ps[2].Address, "orders.") {
		t.Errorf("paths: %+v", ps)
	}
	if !strings.Contains(string(raw), "orders/orders-api -> orders_app") {
		t.Errorf("db users missing from config:\n%s", raw)
	}
	var cm struct {
		Kind     string
		Metadata struct{ Name, Namespace string }
		Data     map[string]string
	}
	rawCM, _ := os.ReadFile(filepath.Join(h.dir, "configmap.yaml"))
	if err := yaml.Unmarshal(rawCM, &cm); err != nil || cm.Kind != "ConfigMap" || cm.Metadata.Namespace != "orders" || cm.Data["config.yaml"] != string(raw) {
		t.Errorf("configmap (%v):\n%s", err, rawCM)
	}

	if n := f.AuthFailures(); n != 0 {
		t.Errorf("%d requests failed SigV4 verification", n)
	}
	// Second apply: nothing planned, nothing written.
	f.ResetCalls()
	if got := h.plan(); len(got) != 0 {
		t.Errorf("second plan not empty: %+v", got)
	}
	h.apply()
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("second apply mutated: %v", m)
	}
}

func TestChangedSpecPlansExactlyThatChange(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	h.writeSpec(func(s string) string {
		s = strings.Replace(s, "class: db.t4g.medium", "class: db.r6g.large", 1)
		return strings.Replace(s, "    - {namespace: orders, name: orders-reporting, db_user: orders_ro}",
			"    - {namespace: orders, name: orders-reporting, db_user: orders_ro}\n    - {namespace: billing, name: invoicer, db_user: billing_app}", 1)
	})
	got := h.plan()
	if len(got) != 3 {
		t.Fatalf("want 3 changes, got %+v", got)
	}
	if got[0].Kind != "db-instance" || got[0].Action != "update" || len(got[0].Fields) != 1 || got[0].Fields[0].Field != "class" ||
		got[0].Fields[0].From != "db.t4g.medium" || got[0].Fields[0].To != "db.r6g.large" {
		t.Errorf("instance change: %+v", got[0])
	}
	// The proxy logs in as the new db user too (end-to-end IAM): its role's policy follows.
	if got[1].Kind != "iam-role" || got[1].Action != "update" || got[1].Name != "rdsvalet-orders-proxy" || !strings.Contains(got[1].Fields[0].To, "/billing_app") {
		t.Errorf("proxy role change: %+v", got[1])
	}
	if got[2].Kind != "iam-role" || got[2].Action != "create" || got[2].Name != "rdsvalet-orders-billing-invoicer" {
		t.Errorf("role change: %+v", got[2])
	}
	// The human table shows the same.
	if r := h.mustRun("plan"); !strings.Contains(r.stdout, "db.r6g.large") || !strings.Contains(r.stdout, "1 to create, 2 to update, 0 to delete") {
		t.Errorf("plan table:\n%s", r.stdout)
	}
	h.fake.ResetCalls()
	h.apply()
	m := strings.Join(h.mutations(), ",")
	if m != "ModifyDBInstance,PutRolePolicy,CreateRole,PutRolePolicy" {
		t.Errorf("apply mutations: %s", m)
	}
	if in, _ := h.fake.Instance("orders"); in.Class != "db.r6g.large" {
		t.Errorf("class %s", in.Class)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after apply: %+v", got)
	}
}

func TestDriftIsRepaired(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	ips := h.fake.TargetIPs(lbName)
	h.fake.DropTarget(lbName, ips[0])
	h.fake.SetInstanceTag("orders", "team", "someone-else")
	got := h.plan()
	if len(got) != 2 || got[0].Kind != "db-instance" || got[0].Fields[0].Field != "tags.team" || got[1].Kind != "target-group" || got[1].Fields[0].Field != "targets" {
		t.Fatalf("drift plan: %+v", got)
	}
	h.apply()
	if in, _ := h.fake.Instance("orders"); in.Tags["team"] != "payments" {
		t.Errorf("tag not repaired: %v", in.Tags)
	}
	if got := h.fake.TargetIPs(lbName); strings.Join(got, ",") != strings.Join(ips, ",") {
		t.Errorf("targets %v, want %v", got, ips)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after repair: %+v", got)
	}
}

func TestInterruptedApplyResumesWithoutDuplicates(t *testing.T) {
	// Kill the process right after AWS accepted a create, before the answer reaches it: for
	// resources found by name (instance, proxy), by tag (endpoint service, consumer endpoint)
	// and mid-way through a two-call create (endpoint service, then its permissions).
	for _, tc := range []struct{ killAt, mustExist string }{
		{"CreateDBInstance", "db-instance"},
		{"CreateDBProxy", "db-proxy"},
		{"CreateVpcEndpointServiceConfiguration", "endpoint-service"},
		{"CreateVpcEndpoint", "vpc-endpoint"},
	} {
		t.Run(tc.killAt, func(t *testing.T) {
			h := newHarness(t, nil)
			hit := make(chan struct{})
			release := make(chan struct{})
			var once sync.Once
			h.fake.OnCall(tc.killAt, func() {
				once.Do(func() {
					close(hit)
					<-release
				})
			})
			cmd := h.command("apply")
			var se bytes.Buffer
			cmd.Stderr = &se
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-hit:
			case err := <-done:
				t.Fatalf("apply ended before %s: %v\n%s", tc.killAt, err, tail(se.String(), 3000))
			}
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			err := <-done
			close(release)
			if err == nil {
				t.Fatal("killed apply exited 0")
			}
			if n := h.fake.Counts()[tc.mustExist]; n != 1 {
				t.Fatalf("%s count %d after the interrupted create", tc.mustExist, n)
			}
			if n := h.fake.Counts()["iam-role"]; n == 3 {
				t.Fatal("IRSA roles exist: the kill came too late to test resumption")
			}
			h.apply()
			want := map[string]int{"subnet-group": 1, "db-instance": 1, "db-proxy": 1, "secret": 1, "iam-role": 3, "security-group": 2,
				"load-balancer": 1, "target-group": 1, "listener": 1, "endpoint-service": 1, "vpc-endpoint": 1}
			if got := h.fake.Counts(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("counts after resume: %v, want %v", got, want)
			}
			if got := h.plan(); len(got) != 0 {
				t.Errorf("plan after resume: %+v", got)
			}
			if svcs := h.fake.Services(); len(svcs[0].Principals) != 1 {
				t.Errorf("endpoint service permissions not completed: %+v", svcs)
			}
		})
	}
}

func TestSyncTargetsFollowsProxyIPsAndTouchesNothingElse(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	h.fake.SetProxyIPs("orders", []string{"10.0.1.77", "10.0.2.88"})
	h.fake.ResetCalls()
	r := h.mustRun("sync-targets")
	if got := h.fake.TargetIPs(lbName); strings.Join(got, ",") != "10.0.1.77,10.0.2.88" {
		t.Errorf("targets %v", got)
	}
	m := h.mutations()
	sort.Strings(m)
	if strings.Join(m, ",") != "DeregisterTargets,RegisterTargets" {
		t.Errorf("sync-targets mutated %v", m)
	}
	if !strings.Contains(r.stdout, "targets") {
		t.Errorf("sync-targets output:\n%s", r.stdout)
	}
	// Nothing to do the second time: reads only.
	h.fake.ResetCalls()
	h.mustRun("sync-targets")
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("idle sync-targets mutated %v", m)
	}
}

func TestDestroyRespectsProtectionAndOwnership(t *testing.T) {
	h := newHarness(t, nil)
	// Look-alikes that are not ours: under our IAM path and in our VPC, but untagged.
	h.fake.SeedRole("rdsvalet-orders-orders-legacy", "/rdsvalet/orders/irsa/", `{"Version":"2012-10-17","Statement":[]}`, nil)
	foreignSG := h.fake.SeedSecurityGroup("", "orders-legacy", "vpc-0a1b2c3d4e5f60718", map[string]string{"team": "payments"})
	h.apply()
	before := h.fake.Counts()

	r := h.run("destroy")
	if r.code == 0 || !strings.Contains(r.stderr, "deletion protection") || !strings.Contains(r.stderr, "--force-deletion-protection") {
		t.Fatalf("destroy under deletion protection: exit %d\n%s", r.code, tail(r.stderr, 2000))
	}
	if got := h.fake.Counts(); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("refused destroy still changed things: %v -> %v", before, got)
	}

	h.fake.ResetCalls()
	h.mustRun("destroy", "--force-deletion-protection")
	sgDeletes := 0
	for _, c := range h.fake.Calls() {
		if c.Action == "DeleteSecurityGroup" {
			sgDeletes++
		}
	}
	if sgDeletes != 3 {
		t.Errorf("DeleteSecurityGroup called %d times, want 3 (2 refused while the NLB's ENIs linger)", sgDeletes)
	}
	got := h.fake.Counts()
	want := map[string]int{"subnet-group": 0, "db-instance": 0, "db-proxy": 0, "secret": 0, "iam-role": 1, "security-group": 2,
		"load-balancer": 0, "target-group": 0, "listener": 0, "endpoint-service": 0, "vpc-endpoint": 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after destroy: %v, want %v", got, want)
	}
	if _, ok := h.fake.Role("rdsvalet-orders-orders-legacy"); !ok {
		t.Error("untagged role was deleted")
	}
	if _, ok := h.fake.SecurityGroups()[foreignSG]; !ok {
		t.Error("untagged security group was deleted")
	}
	// And a destroy of nothing is a no-op.
	h.mustRun("destroy")
}

func TestThrottlingBurstsAreSurvived(t *testing.T) {
	h := newHarness(t, nil)
	bursts := map[[2]string]int{
		{"sts", "GetCallerIdentity"}: 2, {"ec2", "DescribeSecurityGroups"}: 3, {"rds", "CreateDBInstance"}: 3,
		{"rds", "DescribeDBInstances"}: 4, {"iam", "CreateRole"}: 2, {"secretsmanager", "CreateSecret"}: 3,
		{"elasticloadbalancing", "RegisterTargets"}: 3, {"ec2", "CreateVpcEndpoint"}: 2,
	}
	total := 0
	for k, n := range bursts {
		h.fake.InjectThrottle(k[0], k[1], n)
		total += n
	}
	h.apply()
	throttled, bare429 := 0, 0
	for _, c := range h.fake.Calls() {
		if c.Code == "Throttling" {
			throttled++
			if c.Status == 429 {
				bare429++
			}
		}
	}
	if bare429 == 0 {
		t.Error("no 429 responses were served")
	}
	if throttled != total {
		t.Errorf("served %d throttled responses, injected %d", throttled, total)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after throttled apply: %+v", got)
	}
}

func TestAccessDeniedFailsWithActionableMessage(t *testing.T) {
	h := newHarness(t, nil)
	h.fake.InjectError("rds", "CreateDBProxy", "AccessDenied",
		"User: arn:aws:iam::111122223333:user/ci is not authorized to perform: rds:CreateDBProxy", 403, 100)
	r := h.run("apply")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1", r.code)
	}
	for _, want := range []string{`db-proxy "orders"`, "rds:CreateDBProxy", "AWS said AccessDenied", "not authorized to perform: rds:CreateDBProxy", "IAM permissions"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, tail(r.stderr, 1500))
		}
	}
	n := 0
	for _, c := range h.fake.Calls() {
		if c.Action == "CreateDBProxy" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("AccessDenied was retried: %d CreateDBProxy calls", n)
	}
}

func TestUntaggedNameCollisionIsRefused(t *testing.T) {
	h := newHarness(t, nil)
	h.fake.SeedRole("rdsvalet-orders-proxy", "/rdsvalet/orders/proxy/", `{"Version":"2012-10-17","Statement":[]}`, nil)
	r := h.run("apply")
	if r.code != 1 || !strings.Contains(r.stderr, "rdsvalet-orders-proxy") || !strings.Contains(r.stderr, "not tagged") {
		t.Fatalf("exit %d\n%s", r.code, tail(r.stderr, 1500))
	}
	if role, _ := h.fake.Role("rdsvalet-orders-proxy"); len(role.Tags) != 0 || len(role.Policies) != 0 {
		t.Errorf("foreign role was modified: %+v", role)
	}
}

func TestInvalidSpecReportsEveryField(t *testing.T) {
	h := newHarness(t, func(s string) string {
		s = strings.Replace(s, "class: db.t4g.medium", "class: huge", 1)
		return strings.Replace(s, "vpc_id: vpc-0a1b2c3d4e5f60718", "vpc_id: nope", 1)
	})
	r := h.run("plan")
	if r.code != 1 || !strings.Contains(r.stderr, "instance.class") || !strings.Contains(r.stderr, "network.vpc_id") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if len(h.fake.Calls()) != 0 {
		t.Error("an invalid spec reached AWS")
	}
}

func TestMySQLWithRDSManagedPasswordAndNoConsumer(t *testing.T) {
	h := newHarness(t, func(s string) string {
		s = strings.Replace(s, "type: postgres            # postgres | mysql", "type: mysql", 1)
		s = strings.Replace(s, `version: "16.4"`, `version: "8.0.39"`, 1)
		s = strings.Replace(s, "master_password: secret   # secret (our Secrets Manager secret) | rds-managed", "master_password: rds-managed", 1)
		s = strings.Replace(s, "deletion_protection: true", "deletion_protection: false", 1)
		// PrivateLink off entirely: no endpoint service, no consumer endpoint.
		i := strings.Index(s, "privatelink:")
		return s[:i] + "privatelink:\n  enabled: false\n"
	})
	h.apply()
	in, _ := h.fake.Instance("orders")
	px, _ := h.fake.Proxy("orders")
	if in.Engine != "mysql" || in.SecretARN == "" || px.EngineFamily != "MYSQL" || px.Auth[0]["SecretArn"] != in.SecretARN {
		t.Fatalf("instance %+v proxy %+v", in, px)
	}
	if _, ok := h.fake.Secrets()["rdsvalet/orders/master"]; ok {
		t.Error("our own secret was created in rds-managed mode")
	}
	if role, _ := h.fake.Role("rdsvalet-orders-proxy"); !strings.Contains(role.Policies["rds-valet"], in.SecretARN) {
		t.Errorf("proxy role does not read the RDS-managed secret: %s", role.Policies["rds-valet"])
	}
	if c := h.fake.Counts(); c["endpoint-service"] != 0 || c["vpc-endpoint"] != 0 {
		t.Errorf("counts %v", c)
	}
	if got := h.fake.TargetIPs(lbName); len(got) != 2 {
		t.Errorf("targets %v", got)
	}
	raw, _ := os.ReadFile(filepath.Join(h.dir, "sidecar.yaml"))
	if strings.Contains(string(raw), "privatelink") || !strings.Contains(string(raw), "engine: mysql") || !strings.Contains(string(raw), ":3306") {
		t.Errorf("config:\n%s", raw)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("second plan: %+v", got)
	}
	// Without deletion protection, destroy goes straight through.
	h.mustRun("destroy")
	if c := h.fake.Counts(); c["db-instance"] != 0 || c["iam-role"] != 0 || c["security-group"] != 1 {
		t.Errorf("after destroy: %v", c)
	}
}

func TestProxyWaitsForIAMRolePropagation(t *testing.T) {
	h := newHarness(t, nil)
	// What RDS answers while a fresh role has not reached it yet.
	h.fake.InjectError("rds", "CreateDBProxy", "InvalidParameterValue",
		"IAM role ARN value is invalid or does not include the required permissions for: SECRETS", 400, 2)
	h.apply()
	n := 0
	for _, c := range h.fake.Calls() {
		if c.Action == "CreateDBProxy" {
			n++
		}
	}
	if n != 3 {
		t.Errorf("CreateDBProxy called %d times, want 3 (2 refused, 1 accepted)", n)
	}
	if c := h.fake.Counts(); c["db-proxy"] != 1 {
		t.Errorf("counts %v", c)
	}
}

func TestStatusAndDetailedExitCode(t *testing.T) {
	h := newHarness(t, nil)
	if r := h.run("plan", "--detailed-exitcode"); r.code != 2 || strings.Contains(r.stderr, "error") {
		t.Errorf("plan with changes: exit %d, want 2 and no error\n%s", r.code, r.stderr)
	}
	h.apply()
	if r := h.run("plan", "--detailed-exitcode"); r.code != 0 {
		t.Errorf("plan without changes: exit %d, want 0\n%s", r.code, r.stdout)
	}
	r := h.mustRun("status", "--output", "json")
	var st struct {
		Resources []struct {
			Kind, Name, Status string
			Owned              bool
		}
		Paths []struct{ Name, Address string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if len(st.Resources) != 15 || len(st.Paths) != 3 {
		t.Errorf("status: %d resources, %d paths\n%s", len(st.Resources), len(st.Paths), r.stdout)
	}
	for _, res := range st.Resources {
		if !res.Owned {
			t.Errorf("not owned: %+v", res)
		}
	}
	if r := h.mustRun("status"); !strings.Contains(r.stdout, "privatelink") || !strings.Contains(r.stdout, "db-proxy") {
		t.Errorf("status table:\n%s", r.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	h := newHarness(t, nil)
	for _, args := range [][]string{{}, {"frobnicate", "-f", h.spec}, {"plan"}, {"plan", "-f", h.spec, "--no-such-flag"}} {
		cmd := exec.Command(binary(t), args...)
		var se bytes.Buffer
		cmd.Stderr = &se
		err := cmd.Run()
		var ee *exec.ExitError
		// 64 (EX_USAGE): distinct from 2, which plan --detailed-exitcode uses for changes.
		if !errors.As(err, &ee) || ee.ExitCode() != 64 || se.Len() == 0 {
			t.Errorf("%v: %v, stderr %q", args, err, se.String())
		}
	}
	if len(h.fake.Calls()) != 0 {
		t.Error("a usage error reached AWS")
	}
}
