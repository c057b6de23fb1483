package provisioner_test

// GitOps: the provisioner run from a repository of specs by CI (issue 15, item 16). Exit codes
// a pipeline can branch on, a plan file that apply applies exactly or refuses, a pull-request
// comment with full diffs, a lease against two concurrent applies, orphaned databases, and
// specs written by a tool.

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/internal/provision"
)

const leaseTag = "rdsvalet.io/lease"

// bare runs the binary with the harness's environment but only the given arguments (no -f).
func (h *harness) bare(args ...string) result {
	h.t.Helper()
	cmd := h.command("plan")
	cmd.Args = append([]string{cmd.Args[0]}, args...)
	return h.exec(cmd)
}

// started is a provisioner run in the background.
type started struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

func (h *harness) start(args ...string) *started {
	h.t.Helper()
	cmd := h.command(args...)
	s := &started{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = &syncWriter{w: s.stderr}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { s.done <- cmd.Wait() }()
	h.t.Cleanup(func() { _ = cmd.Process.Kill() })
	return s
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// holdAt makes the fake stop (once) right after serving action until the returned release
// is called; hit is closed when it got there.
func (h *harness) holdAt(action string) (hit <-chan struct{}, release func()) {
	hitc, rel := make(chan struct{}), make(chan struct{})
	var once, relOnce sync.Once
	h.fake.OnCall(action, func() {
		once.Do(func() {
			close(hitc)
			<-rel
		})
	})
	release = func() { relOnce.Do(func() { close(rel) }) }
	h.t.Cleanup(release)
	return hitc, release
}

func waitHit(t *testing.T, hit <-chan struct{}, s *started, what string) {
	t.Helper()
	select {
	case <-hit:
	case err := <-s.done:
		t.Fatalf("run ended before %s: %v\n%s", what, err, tail(s.stderr.String(), 3000))
	case <-time.After(60 * time.Second):
		t.Fatalf("run never reached %s", what)
	}
}

func TestGitOpsUsageErrorsAreNotChanges(t *testing.T) {
	h := newHarness(t, nil)
	for _, args := range [][]string{
		{"plan", "--output", "yaml"},
		{"plan", "stray-argument"},
		{"apply", "a.plan", "b.plan"},
		{"status", "--output", "markdown"},
		{"destroy", "--out", "x.plan"},
		{"init"},
	} {
		if r := h.run(args...); r.code != 64 || r.stderr == "" {
			t.Errorf("%v: exit %d, want 64 (usage)\n%s", args, r.code, r.stderr)
		}
	}
	if len(h.fake.Calls()) != 0 {
		t.Error("a usage error reached AWS")
	}
	// Changes are 2 only with --detailed-exitcode; a plan without it exits 0 even with changes.
	if r := h.run("plan", "--detailed-exitcode"); r.code != 2 {
		t.Errorf("plan --detailed-exitcode with changes: exit %d, want 2", r.code)
	}
	if r := h.run("plan"); r.code != 0 {
		t.Errorf("plan with changes: exit %d, want 0", r.code)
	}
}

func TestPlanTableSaysWhereTheFullValuesAre(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	h.writeSpec(func(s string) string {
		return strings.Replace(s, "db_user: orders_app}", "db_user: orders_writer}", 1)
	})
	r := h.mustRun("plan")
	if !strings.Contains(r.stdout, "...") || !strings.Contains(r.stdout, "--output markdown") || !strings.Contains(r.stdout, "--output json") {
		t.Errorf("the table shortens the policy without saying where the full one is:\n%s", r.stdout)
	}
	// JSON carries the whole policy, valid and with the new user.
	var found bool
	for _, c := range h.plan() {
		for _, f := range c.Fields {
			if c.Kind == "iam-role" && f.Field == "policy" {
				found = true
				var doc map[string]any
				if len(f.To) <= 100 || json.Unmarshal([]byte(f.To), &doc) != nil || !strings.Contains(f.To, "/orders_writer") {
					t.Errorf("json plan policy is not whole: %s", f.To)
				}
			}
		}
	}
	if !found {
		t.Error("no policy change in the json plan")
	}
}

func TestPlanMarkdownForAPullRequest(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	h.writeSpec(func(s string) string {
		s = strings.Replace(s, "class: db.t4g.medium", "class: db.r6g.large", 1)
		return strings.Replace(s, "db_user: orders_app}", "db_user: orders_writer}", 1)
	})
	md := h.mustRun("plan", "--output", "markdown").stdout
	for _, want := range []string{
		"### Plan for `orders`: 0 to create, 3 to update, 0 to delete",
		"| action | kind | name | fields |",
		"| update | db-instance | orders | `class` |",
		"| update | iam-role | rdsvalet-orders-orders-orders-api | `policy` |",
		"| update | iam-role | rdsvalet-orders-proxy | `policy` |",
		"```diff",
		"- db.t4g.medium",
		"+ db.r6g.large",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// The policy is pretty-printed and diffed line by line: the unchanged statement parts are
	// context lines, the old and new db user ARNs a - and a + line each: the app's role names
	// the proxy's and the instance's user, the proxy role (end-to-end IAM) the instance's.
	if !regexp.MustCompile(`(?m)^  \s+"Action": "rds-db:connect",?$`).MatchString(md) {
		t.Errorf("policy not shown as pretty JSON with context:\n%s", md)
	}
	minus := regexp.MustCompile(`(?m)^-\s+"arn:aws:rds-db:[^"]+/orders_app",?$`).FindAllString(md, -1)
	plus := regexp.MustCompile(`(?m)^\+\s+"arn:aws:rds-db:[^"]+/orders_writer",?$`).FindAllString(md, -1)
	if len(minus) != 3 || len(plus) != 3 {
		t.Errorf("policy diff: %d - lines, %d + lines, want 3 each (app role: proxy and instance users; proxy role: instance user):\n%s", len(minus), len(plus), md)
	}
}

func TestPlanFileIsAppliedExactlyOrRefused(t *testing.T) {
	h := newHarness(t, nil)
	pf := filepath.Join(h.dir, "create.plan")
	// From empty: the saved plan creates everything, and apply FILE does exactly that.
	h.mustRun("plan", "-out", pf)
	var saved struct {
		Format             string `json:"format"`
		ProvisionerVersion string `json:"provisioner_version"`
		SpecSHA256         string `json:"spec_sha256"`
		Fingerprint        string `json:"fingerprint"`
		Changes            []change
	}
	raw, err := os.ReadFile(pf)
	if err != nil || json.Unmarshal(raw, &saved) != nil {
		t.Fatalf("plan file: %v\n%s", err, raw)
	}
	if saved.Format != "rds-valet-plan/1" || saved.ProvisionerVersion == "" || saved.SpecSHA256 == "" || saved.Fingerprint == "" || countAction(saved.Changes, "create") != 15 {
		t.Fatalf("plan file content: %+v", saved)
	}
	r := h.mustRun("apply", pf, "--config-out", filepath.Join(h.dir, "sidecar.yaml"))
	if !strings.Contains(r.stdout, "15 to create") {
		t.Errorf("apply FILE output:\n%s", r.stdout)
	}
	if c := h.fake.Counts(); c["db-instance"] != 1 || c["iam-role"] != 3 || c["vpc-endpoint"] != 1 {
		t.Errorf("counts after apply FILE: %v", c)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after apply FILE: %+v", got)
	}

	// A plan for a class change, then someone changes a tag in the console: refused, untouched.
	h.writeSpec(func(s string) string { return strings.Replace(s, "class: db.t4g.medium", "class: db.r6g.large", 1) })
	resize := filepath.Join(h.dir, "resize.plan")
	h.mustRun("plan", "--out", resize)
	h.fake.SetInstanceTag("orders", "team", "someone-else")
	h.fake.ResetCalls()
	r = h.run("apply", resize)
	if r.code != 3 || !strings.Contains(r.stderr, "stale") || !strings.Contains(r.stderr, `db-instance "orders": tags.team changed`) {
		t.Errorf("apply of a plan whose observed state changed: exit %d, want 3 naming the change\n%s", r.code, tail(r.stderr, 2000))
	}
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("a refused plan file still changed AWS: %v", m)
	}
	if in, _ := h.fake.Instance("orders"); in.Class != "db.t4g.medium" {
		t.Errorf("class %s after a refused apply", in.Class)
	}
	h.fake.SetInstanceTag("orders", "team", "payments")

	// The spec changed after the plan: refused.
	h.mustRun("plan", "--out", resize)
	h.writeSpec(func(s string) string {
		s = strings.Replace(s, "class: db.t4g.medium", "class: db.r6g.large", 1)
		return strings.Replace(s, "backup_retention_days: 7", "backup_retention_days: 14", 1)
	})
	if r := h.run("apply", resize); r.code != 3 || !strings.Contains(r.stderr, "the spec changed") {
		t.Errorf("apply of a plan whose spec changed: exit %d, want 3\n%s", r.code, tail(r.stderr, 2000))
	}
	// A plan file from another provisioner build: refused.
	h.writeSpec(func(s string) string { return strings.Replace(s, "class: db.t4g.medium", "class: db.r6g.large", 1) })
	h.mustRun("plan", "--out", resize)
	raw, _ = os.ReadFile(resize)
	other := strings.Replace(string(raw), `"provisioner_version": "`, `"provisioner_version": "0.0.1-other+`, 1)
	otherPath := filepath.Join(h.dir, "other.plan")
	if err := os.WriteFile(otherPath, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := h.run("apply", otherPath); r.code != 3 || !strings.Contains(r.stderr, "provisioner version") {
		t.Errorf("apply of another build's plan: exit %d, want 3\n%s", r.code, tail(r.stderr, 2000))
	}
	// The fresh plan applies, changing only what it showed; without -f, apply reads the spec
	// from where the plan did.
	h.fake.ResetCalls()
	if r := h.bare("apply", resize, "--poll-interval", "2ms", "--max-poll-interval", "10ms", "--wait-timeout", "20s", "--skip-db-users"); r.code != 0 {
		t.Fatalf("apply FILE without -f: exit %d\n%s", r.code, tail(r.stderr, 3000))
	}
	if m := strings.Join(h.mutations(), ","); m != "ModifyDBInstance" {
		t.Errorf("apply FILE mutations: %s", m)
	}
	if in, _ := h.fake.Instance("orders"); in.Class != "db.r6g.large" {
		t.Errorf("class %s after apply FILE", in.Class)
	}
	// And apply -f without a plan file still plans and applies in one go.
	h.writeSpec(nil)
	h.mustRun("apply")
	if in, _ := h.fake.Instance("orders"); in.Class != "db.t4g.medium" {
		t.Errorf("class %s after apply -f", in.Class)
	}
}

var leaseRE = regexp.MustCompile(`^(.+):(\d+)$`)

func TestLeaseRefusesASecondApplyOrDestroy(t *testing.T) {
	h := newHarness(t, nil)
	// The very first apply creates the security group with its lease on it: a second first
	// apply is refused, not racing it.
	hit, release := h.holdAt("CreateSecurityGroup")
	first := h.start("apply", "--lease-holder", "ci-first")
	waitHit(t, hit, first, "CreateSecurityGroup")
	if tags := h.fake.SecurityGroupTags(lbName); !strings.HasPrefix(tags[leaseTag], "ci-first:") {
		t.Fatalf("security group created without the lease: %v", tags)
	}
	r := h.run("apply", "--lease-holder", "ci-second")
	if r.code != 4 || !strings.Contains(r.stderr, `holder "ci-first"`) {
		t.Errorf("second first apply: exit %d, want 4 naming the holder\n%s", r.code, tail(r.stderr, 2000))
	}
	release()
	if err := <-first.done; err != nil {
		t.Fatalf("first apply: %v\n%s", err, tail(first.stderr.String(), 3000))
	}
	if tags := h.fake.SecurityGroupTags(lbName); tags[leaseTag] != "" {
		t.Errorf("lease not released: %v", tags)
	}
	if c := h.fake.Counts(); c["security-group"] != 2 || c["db-instance"] != 1 {
		t.Errorf("counts: %v", c)
	}

	// A running apply holds the lease and renews it; another apply and a destroy are refused
	// with the holder and expiry; plan does not need it.
	h.writeSpec(func(s string) string { return strings.Replace(s, "class: db.t4g.medium", "class: db.r6g.large", 1) })
	renewed := make(chan struct{}, 16)
	h.fake.OnCall("CreateTags", func() {
		select {
		case renewed <- struct{}{}:
		default:
		}
	})
	hit, release = h.holdAt("ModifyDBInstance")
	running := h.start("apply", "--lease-holder", "ci-a", "--lease-ttl", "3s")
	waitHit(t, hit, running, "ModifyDBInstance")
	first1 := h.fake.SecurityGroupTags(lbName)[leaseTag]
	m := leaseRE.FindStringSubmatch(first1)
	if m == nil || m[1] != "ci-a" {
		t.Fatalf("lease tag %q, want ci-a:EXPIRY", first1)
	}
	// Take (1 CreateTags), then a renewal (another) while the apply is held.
	for n := 0; n < 2; n++ {
		select {
		case <-renewed:
		case <-time.After(30 * time.Second):
			t.Fatal("the lease was never renewed")
		}
	}
	if now := h.fake.SecurityGroupTags(lbName)[leaseTag]; !strings.HasPrefix(now, "ci-a:") {
		t.Fatalf("lease after renewal: %q", now)
	}
	expiry := regexp.QuoteMeta(time.Now().UTC().Format("2006-01-02T"))
	for _, cmd := range []string{"apply", "destroy"} {
		r := h.run(cmd, "--lease-holder", "ci-b", "--force-deletion-protection")
		if r.code != 4 || !strings.Contains(r.stderr, `holder "ci-a"`) || !regexp.MustCompile(`until `+expiry).MatchString(r.stderr) {
			t.Errorf("%s during an apply: exit %d, want 4 naming holder and expiry\n%s", cmd, r.code, tail(r.stderr, 2000))
		}
	}
	if r := h.run("plan"); r.code != 0 {
		t.Errorf("plan during an apply: exit %d\n%s", r.code, tail(r.stderr, 2000))
	}
	release()
	if err := <-running.done; err != nil {
		t.Fatalf("held apply: %v\n%s", err, tail(running.stderr.String(), 3000))
	}
	if in, _ := h.fake.Instance("orders"); in.Class != "db.r6g.large" {
		t.Errorf("class %s", in.Class)
	}
	if tags := h.fake.SecurityGroupTags(lbName); tags[leaseTag] != "" {
		t.Errorf("lease not released: %v", tags)
	}

	// A lease left by a run that died expires and is taken over.
	h.fake.SetSecurityGroupTag(lbName, leaseTag, "ci-dead/4242:1000000000")
	r = h.mustRun("apply", "--lease-holder", "ci-c")
	if !strings.Contains(r.stderr, "taking over a lease") || !strings.Contains(r.stderr, "ci-dead/4242") {
		t.Errorf("takeover not logged:\n%s", tail(r.stderr, 2000))
	}
	if tags := h.fake.SecurityGroupTags(lbName); tags[leaseTag] != "" {
		t.Errorf("lease not released after takeover: %v", tags)
	}
}

func TestStatusOrphansListsDatabasesWithoutSpec(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	// A database whose first apply got only as far as its security group.
	h.fake.SeedSecurityGroup("", "rdsvalet-ghost", "vpc-0a1b2c3d4e5f60718",
		map[string]string{"rdsvalet.io/managed-by": "rds-valet", "rdsvalet.io/database": "ghost", "team": "spooky"})
	// Not ours: no managed-by tag.
	h.fake.SeedSecurityGroup("", "rdsvalet-other", "vpc-0a1b2c3d4e5f60718", map[string]string{"rdsvalet.io/database": "other"})

	withOrders := filepath.Join(h.dir, "specs-with-orders")
	without := filepath.Join(h.dir, "specs-without-orders")
	for _, d := range []string{filepath.Join(withOrders, "payments"), without} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	spec, _ := os.ReadFile(h.spec)
	if err := os.WriteFile(filepath.Join(withOrders, "payments", "orders.yaml"), spec, 0o644); err != nil {
		t.Fatal(err)
	}
	// Another database's spec, in the same region, whose resources do not exist yet.
	other := strings.Replace(string(spec), "name: orders", "name: invoices", 1)
	if err := os.WriteFile(filepath.Join(without, "invoices.yml"), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}

	r := h.bare("status", "--orphans", "--specs-dir", without)
	if r.code != 2 || !strings.Contains(r.stdout, "orders") || !strings.Contains(r.stdout, "payments") ||
		!strings.Contains(r.stdout, "ghost") || strings.Contains(r.stdout, "invoices") || strings.Contains(r.stdout, "rdsvalet-other") {
		t.Errorf("orphans without the orders spec: exit %d, want 2 listing orders and ghost only\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, tail(r.stderr, 1500))
	}
	r = h.bare("status", "--orphans", "--specs-dir", without, "--output", "json")
	var out struct {
		Orphans []struct {
			Database  string
			Resources []struct{ Kind, Name, ID string }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 2 || len(out.Orphans) != 2 ||
		out.Orphans[0].Database != "ghost" || out.Orphans[1].Database != "orders" || len(out.Orphans[1].Resources) != 2 {
		t.Errorf("json orphans (exit %d, %v):\n%s", r.code, err, r.stdout)
	}
	// With the orders spec present, only ghost is left; with both named by -f, none.
	if r := h.bare("status", "--orphans", "--specs-dir", withOrders); r.code != 2 || strings.Contains(r.stdout, "orders") || !strings.Contains(r.stdout, "ghost") {
		t.Errorf("orphans with the orders spec: exit %d\n%s", r.code, r.stdout)
	}
	ghost := strings.Replace(string(spec), "name: orders", "name: ghost", 1)
	ghostPath := filepath.Join(h.dir, "ghost.yaml")
	if err := os.WriteFile(ghostPath, []byte(ghost), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := h.bare("status", "--orphans", "-f", h.spec, "-f", ghostPath); r.code != 0 || !strings.Contains(r.stdout, "No orphans") {
		t.Errorf("no orphans: exit %d, want 0\n%s\n%s", r.code, r.stdout, tail(r.stderr, 1500))
	}
	// An invalid spec in the directory stops the check: it may be the one naming a database.
	if err := os.WriteFile(filepath.Join(without, "broken.yaml"), []byte("name: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := h.bare("status", "--orphans", "--specs-dir", without); r.code != 1 || !strings.Contains(r.stderr, "broken.yaml") {
		t.Errorf("orphans with a broken spec: exit %d, want 1\n%s", r.code, tail(r.stderr, 1500))
	}
}

func TestInitWritesAStrictlyValidSpecOnce(t *testing.T) {
	h := newHarness(t, nil)
	path := filepath.Join(h.dir, "inventory.yaml")
	args := []string{"init", "-f", path, "--name", "inventory", "--engine", "mysql", "--region", "us-east-1",
		"--vpc-id", "vpc-0a1b2c3d4e5f60718", "--subnet-ids", "subnet-0a1b2c3d4e5f60001,subnet-0a1b2c3d4e5f60002",
		"--allowed-security-group-ids", "sg-0a1b2c3d4e5f60999", "--team", "warehouse", "--owner", "warehouse@example.com",
		"--oidc-provider-arn", "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE", /* seeded by seedIdentity */
		"--service-account", "shop/inventory-api=inventory_app", "--service-account", "shop/reports=inventory_ro"}
	if r := h.bare(args...); r.code != 0 {
		t.Fatalf("init: exit %d\n%s", r.code, r.stderr)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The strict decoder (unknown keys are errors) and the validator accept it.
	s, err := provision.ParseSpec(raw)
	if err != nil {
		t.Fatalf("init wrote an invalid spec: %v\n%s", err, raw)
	}
	if s.Name != "inventory" || s.Engine.Type != "mysql" || s.Engine.Version != "8.0.39" || s.Tags["team"] != "warehouse" ||
		len(s.Access.ServiceAccounts) != 2 || !reflect.DeepEqual(s.Access.ServiceAccounts[1], provision.ServiceAccount{Namespace: "shop", Name: "reports", DBUser: "inventory_ro"}) ||
		len(s.Network.SubnetIDs) != 2 || !s.Instance.DeletionProtection {
		t.Errorf("spec: %+v", s)
	}
	if strings.Count(string(raw), "#") < 10 {
		t.Errorf("the spec is not commented:\n%s", raw)
	}
	// It is a spec the provisioner plans from.
	if r := h.bare("plan", "-f", path, "--output", "json", "--skip-db-users"); r.code != 0 || !strings.Contains(r.stdout, `"name": "inventory"`) {
		t.Errorf("plan of the init spec: exit %d\n%s\n%s", r.code, r.stdout, tail(r.stderr, 1500))
	}
	// Never over an existing file.
	r := h.bare(append(args[:len(args):len(args)], "--team", "someone-else")...)
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("init over an existing file: exit %d\n%s", r.code, r.stderr)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, raw) {
		t.Error("init overwrote the existing spec")
	}
	// Missing answers and invalid values are usage errors, and nothing is written.
	other := filepath.Join(h.dir, "other.yaml")
	if r := h.bare("init", "-f", other, "--name", "x1"); r.code != 64 || !strings.Contains(r.stderr, "--team") {
		t.Errorf("init without --team: exit %d\n%s", r.code, r.stderr)
	}
	bad := append([]string{}, args...)
	bad[2] = other
	bad = append(bad, "--vpc-id", "nope")
	if r := h.bare(bad...); r.code != 64 || !strings.Contains(r.stderr, "network.vpc_id") {
		t.Errorf("init with a bad VPC id: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("a refused init wrote %s", other)
	}
}

// countAction counts the changes of a plan with that action (a plan file also keeps no-ops).
func countAction(cs []change, action string) int {
	n := 0
	for _, c := range cs {
		if c.Action == action {
			n++
		}
	}
	return n
}
