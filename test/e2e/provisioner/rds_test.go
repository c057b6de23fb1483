package provisioner_test

import (
	"strings"
	"testing"
)

// The RDS side of issue 15 against the stricter fake: proxy authentication (items 1, 11), the
// secret's recovery window (2), storage (8, 9), KMS aliases (10) and the parameter group (15).

const proxyRole = "rdsvalet-orders-proxy"

func (h *harness) count(action string) int {
	n := 0
	for _, c := range h.fake.Calls() {
		if c.Action == action && c.Status == 200 {
			n++
		}
	}
	return n
}

// Item 1: the apps' IAM db users log in through the proxy end to end, with no secret of theirs.
func TestProxyAuthenticatesAppUsersEndToEndIAM(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	f := h.fake
	if s := f.ProxyDefaultAuthScheme("orders"); s != "IAM_AUTH" {
		t.Errorf("DefaultAuthScheme %q, want IAM_AUTH", s)
	}
	in, _ := f.Instance("orders")
	role, _ := f.Role(proxyRole)
	for _, u := range []string{"orders_app", "orders_ro"} {
		if err := f.ProxyAuthenticates("orders", u); err != nil {
			t.Errorf("IAM login as %s through the proxy: %v", u, err)
		}
		if want := "arn:aws:rds-db:us-east-1:" + account + ":dbuser:" + in.ResourceID + "/" + u; !strings.Contains(role.Policies["rds-valet"], want) {
			t.Errorf("proxy role policy lacks %s: %s", want, role.Policies["rds-valet"])
		}
	}
	// The master user goes through its secret (IAMAuth REQUIRED), which the role reads.
	if err := f.ProxyAuthenticates("orders", "orders_admin"); err != nil {
		t.Errorf("master user through the proxy: %v", err)
	}
	// A db user the spec does not name has no way in.
	if err := f.ProxyAuthenticates("orders", "intruder"); err == nil || !strings.Contains(err.Error(), "not allowed rds-db:connect") {
		t.Errorf("unknown db user: %v", err)
	}
	// A guard rail denying rds-db:connect on the role stops it, as IAM would.
	f.SetRolePolicy(proxyRole, "guardrail", `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"rds-db:*","Resource":"*"}]}`)
	if err := f.ProxyAuthenticates("orders", "orders_app"); err == nil {
		t.Error("login allowed despite an explicit Deny on the proxy role")
	}
	f.SetRolePolicy(proxyRole, "guardrail", "")

	// A ServiceAccount added to the spec: the proxy can log in as its db user after apply.
	h.writeSpec(func(s string) string {
		return strings.Replace(s, "    - {namespace: orders, name: orders-reporting, db_user: orders_ro}",
			"    - {namespace: orders, name: orders-reporting, db_user: orders_ro}\n    - {namespace: billing, name: invoicer, db_user: billing_app}", 1)
	})
	h.apply()
	if err := f.ProxyAuthenticates("orders", "billing_app"); err != nil {
		t.Errorf("new db user through the proxy: %v", err)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after apply: %+v", got)
	}
}

// Item 11: apply waits for the proxy target to be AVAILABLE, and fails on AUTH_FAILURE.
func TestApplyWaitsForProxyTargetHealth(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	if st, reason := h.fake.ProxyTargetHealth("orders", "orders"); st != "AVAILABLE" {
		t.Errorf("target health after apply: %s %s, want AVAILABLE (apply must wait out REGISTERING)", st, reason)
	}

	h2 := newHarness(t, nil)
	// Someone's guard rail lands on the proxy role just as the target registers.
	h2.fake.OnCall("RegisterDBProxyTargets", func() {
		h2.fake.SetRolePolicy(proxyRole, "guardrail", `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"rds-db:connect","Resource":"*"}]}`)
	})
	r := h2.run("apply")
	if r.code != 1 {
		t.Fatalf("apply with a proxy that cannot authenticate: exit %d, want 1\n%s", r.code, tail(r.stderr, 2000))
	}
	for _, want := range []string{`db-proxy-target "orders/default/orders"`, "UNAVAILABLE (AUTH_FAILURE)", "rds-db:connect"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, tail(r.stderr, 2000))
		}
	}
	// Removing the guard rail heals the target; apply then finishes.
	h2.fake.SetRolePolicy(proxyRole, "guardrail", "")
	h2.apply()
	if st, _ := h2.fake.ProxyTargetHealth("orders", "orders"); st != "AVAILABLE" {
		t.Errorf("target health after the fix: %s", st)
	}
}

// Item 2: destroy finishes while the secret waits out its recovery window; apply restores it.
func TestDestroyLeavesSecretInRecoveryWindowAndApplyRestoresIt(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	h.mustRun("destroy", "--force-deletion-protection")
	c := h.fake.Counts()
	if c["subnet-group"] != 0 || c["security-group"] != 1 || c["db-instance"] != 0 || c["secret"] != 0 {
		t.Errorf("after destroy: %v (want subnet group and our security group gone)", c)
	}
	if exists, scheduled := h.fake.SecretScheduledForDeletion("rdsvalet/orders/master"); !exists || !scheduled {
		t.Errorf("secret exists %v, scheduled for deletion %v: want it kept for the recovery window", exists, scheduled)
	}
	if _, _, _, ok := h.fake.ParameterGroup("rdsvalet-orders"); ok {
		t.Error("parameter group left behind")
	}
	// A second destroy has nothing left to do.
	h.fake.ResetCalls()
	h.mustRun("destroy", "--force-deletion-protection")
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("second destroy mutated %v", m)
	}

	// Re-creating the database within the window: the secret is restored, not re-created.
	var plannedRestore bool
	for _, ch := range h.plan() {
		if ch.Kind == "secret" && ch.Action == "update" && len(ch.Fields) == 1 && ch.Fields[0].Field == "scheduled_for_deletion" && ch.Fields[0].To == "false" {
			plannedRestore = true
		}
	}
	if !plannedRestore {
		t.Error("plan does not show the secret's restore")
	}
	h.fake.ResetCalls()
	h.apply()
	if h.count("RestoreSecret") != 1 || h.count("CreateSecret") != 0 {
		t.Errorf("RestoreSecret %d, CreateSecret %d: want the secret restored once", h.count("RestoreSecret"), h.count("CreateSecret"))
	}
	if _, scheduled := h.fake.SecretScheduledForDeletion("rdsvalet/orders/master"); scheduled {
		t.Error("secret still scheduled for deletion")
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after apply: %+v", got)
	}
}

// Item 8: a storage change ends in storage-optimization, which lasts hours and is usable.
func TestStorageOptimizationCountsAsReady(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	h.writeSpec(func(s string) string { return strings.Replace(s, "storage_gb: 50", "storage_gb: 60", 1) })
	// A short wait timeout: storage-optimization outlasts it by far.
	r := h.run("apply", "--wait-timeout", "3s")
	if r.code != 0 {
		t.Fatalf("apply after a storage change: exit %d\n%s", r.code, tail(r.stderr, 2000))
	}
	st, _ := h.fake.InstanceStorage("orders")
	if st.Status != "storage-optimization" || st.AllocatedGB != 60 {
		t.Errorf("instance %+v, want storage-optimization with 60 GB", st)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan during storage-optimization: %+v", got)
	}
	// Another storage change must wait for the optimization: RDS refuses it, and apply says so.
	h.writeSpec(func(s string) string { return strings.Replace(s, "storage_gb: 50", "storage_gb: 70", 1) })
	r = h.run("apply", "--wait-timeout", "3s")
	if r.code != 1 || !strings.Contains(r.stderr, "rds:ModifyDBInstance") || !strings.Contains(r.stderr, "being optimized") {
		t.Errorf("second storage change: exit %d\n%s", r.code, tail(r.stderr, 2000))
	}
}

// Item 9: turning storage autoscaling off sends MaxAllocatedStorage = AllocatedStorage.
func TestStorageAutoscalingOff(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	if st, _ := h.fake.InstanceStorage("orders"); st.MaxAllocatedGB != 200 {
		t.Fatalf("max storage %d, want 200", st.MaxAllocatedGB)
	}
	h.writeSpec(func(s string) string {
		return strings.Replace(s, "max_storage_gb: 200       # storage autoscaling limit; 0 = off", "max_storage_gb: 0", 1)
	})
	got := h.plan()
	if len(got) != 1 || got[0].Kind != "db-instance" || got[0].Fields[0].Field != "max_storage_gb" || got[0].Fields[0].To != "0" {
		t.Fatalf("plan: %+v", got)
	}
	h.apply()
	if st, _ := h.fake.InstanceStorage("orders"); st.MaxAllocatedGB != 0 || st.AllocatedGB != 50 {
		t.Errorf("instance %+v, want autoscaling off at 50 GB", st)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after turning autoscaling off: %+v", got)
	}
	// And on again.
	h.writeSpec(nil)
	h.apply()
	if st, _ := h.fake.InstanceStorage("orders"); st.MaxAllocatedGB != 200 {
		t.Errorf("max storage %d after turning it on again", st.MaxAllocatedGB)
	}
}

// Item 10: kms_key_id as alias ARN, alias name or key id resolves to the key ARN: no diff.
func TestKMSKeyAliasHasNoPermanentDiff(t *testing.T) {
	h := newHarness(t, nil)
	keyID, keyARN := h.fake.SeedKMSKey("alias/orders-db")
	useKey := func(k string) {
		h.writeSpec(func(s string) string {
			return strings.Replace(s, `kms_key_id: ""            # empty = AWS managed key (aws/rds)`, "kms_key_id: "+k, 1)
		})
	}
	useKey("arn:aws:kms:us-east-1:" + account + ":alias/orders-db")
	h.apply()
	if in, _ := h.fake.Instance("orders"); in.KMS != keyARN {
		t.Errorf("instance key %q, want %q", in.KMS, keyARN)
	}
	if role, _ := h.fake.Role(proxyRole); !strings.Contains(role.Policies["rds-valet"], keyARN) {
		t.Errorf("proxy role's kms:Decrypt is not on the key ARN: %s", role.Policies["rds-valet"])
	}
	for _, k := range []string{"arn:aws:kms:us-east-1:" + account + ":alias/orders-db", "alias/orders-db", keyID, keyARN} {
		useKey(k)
		if got := h.plan(); len(got) != 0 {
			t.Errorf("kms_key_id %s: plan %+v", k, got)
		}
	}
	useKey("alias/no-such-key")
	if r := h.run("plan"); r.code != 1 || !strings.Contains(r.stderr, "kms:DescribeKey") || !strings.Contains(r.stderr, "alias/no-such-key") {
		t.Errorf("unknown alias: exit %d\n%s", r.code, tail(r.stderr, 1500))
	}
}

// Item 15: the instance uses a parameter group of ours, TLS required, with the spec's parameters.
func TestParameterGroupRequiresTLSAndCarriesSpecParameters(t *testing.T) {
	withParams := func(params string) func(string) string {
		return func(s string) string {
			return strings.Replace(s, "  master_password: secret", "  parameters: {"+params+"}\n  master_password: secret", 1)
		}
	}
	h := newHarness(t, withParams(`log_min_duration_statement: "500", max_connections: "200"`))
	h.apply()
	f := h.fake
	fam, params, tags, ok := f.ParameterGroup("rdsvalet-orders")
	if !ok || fam != "postgres16" || params["rds.force_ssl"] != "1" || params["log_min_duration_statement"] != "500" || params["max_connections"] != "200" || len(params) != 3 {
		t.Fatalf("parameter group %v %s %v", ok, fam, params)
	}
	if tags["rdsvalet.io/database"] != "orders" || tags["team"] != "payments" {
		t.Errorf("parameter group tags %v", tags)
	}
	if st, _ := f.InstanceStorage("orders"); st.ParameterGroup != "rdsvalet-orders" || st.ParameterApply != "in-sync" {
		t.Errorf("instance parameter group %+v", st)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("second plan: %+v", got)
	}

	// Drift (someone turned TLS off) is repaired.
	f.SetParameter("rdsvalet-orders", "rds.force_ssl", "0")
	if got := h.plan(); len(got) != 1 || got[0].Kind != "db-parameter-group" || got[0].Fields[0].Field != "parameters" {
		t.Fatalf("drift plan: %+v", got)
	}
	h.apply()
	if _, params, _, _ := f.ParameterGroup("rdsvalet-orders"); params["rds.force_ssl"] != "1" {
		t.Errorf("TLS not restored: %v", params)
	}

	// A static parameter changes only after a reboot: apply says so. A dropped one is reset.
	h.writeSpec(withParams(`max_connections: "300"`))
	r := h.mustRun("apply")
	if !strings.Contains(r.stderr, "pending-reboot") || !strings.Contains(r.stderr, "aws rds reboot-db-instance --db-instance-identifier orders") {
		t.Errorf("apply does not say a reboot is needed:\n%s", tail(r.stderr, 2000))
	}
	if st, _ := f.InstanceStorage("orders"); st.ParameterApply != "pending-reboot" {
		t.Errorf("instance parameter apply status %q", st.ParameterApply)
	}
	if _, params, _, _ := f.ParameterGroup("rdsvalet-orders"); params["max_connections"] != "300" || len(params) != 2 {
		t.Errorf("parameters after change: %v", params)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after change: %+v", got)
	}

	// The spec cannot turn TLS off.
	h.writeSpec(withParams(`rds.force_ssl: "0"`))
	if r := h.run("plan"); r.code != 1 || !strings.Contains(r.stderr, "instance.parameters.rds.force_ssl") {
		t.Errorf("TLS off in the spec: exit %d\n%s", r.code, r.stderr)
	}

	// Destroy deletes the group after the instance.
	h.writeSpec(withParams(`max_connections: "300"`))
	h.fake.ResetCalls()
	h.mustRun("destroy", "--force-deletion-protection")
	order := strings.Join(h.mutations(), ",")
	if i, j := strings.Index(order, "DeleteDBInstance"), strings.Index(order, "DeleteDBParameterGroup"); i < 0 || j < i {
		t.Errorf("destroy order: %s", order)
	}
	if _, _, _, ok := f.ParameterGroup("rdsvalet-orders"); ok {
		t.Error("parameter group left behind")
	}
}

func TestMySQLParameterGroupRequiresSecureTransport(t *testing.T) {
	h := newHarness(t, func(s string) string {
		s = strings.Replace(s, "type: postgres            # postgres | mysql", "type: mysql", 1)
		return strings.Replace(s, `version: "16.4"`, `version: "8.0.39"`, 1)
	})
	h.apply()
	fam, params, _, ok := h.fake.ParameterGroup("rdsvalet-orders")
	if !ok || fam != "mysql8.0" || params["require_secure_transport"] != "ON" || len(params) != 1 {
		t.Errorf("parameter group %v %s %v", ok, fam, params)
	}
}
