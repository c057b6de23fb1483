package provision

import (
	"strings"
	"testing"
)

func testEnv(t *testing.T, out map[string]string) *env {
	t.Helper()
	s, err := LoadSpec("../../docs/examples/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return &env{spec: s, account: "111122223333", region: s.Region, out: out}
}

func TestIRSADesiredPinsOIDCAndDBUser(t *testing.T) {
	e := testEnv(t, map[string]string{"proxy.resource_id": "prx-0abc", "instance.resource_id": "db-XYZ"})
	des := irsaRoleHandler().desired(e)
	if len(des) != 2 || des[0].Name != "rdsvalet-orders-orders-orders-api" || des[0].Attrs["path"] != "/rdsvalet/orders/irsa/" {
		t.Fatalf("%+v", des)
	}
	trust, pol := des[0].Attrs["trust_policy"], des[0].Attrs["policy"]
	for _, want := range []string{`"Federated":"arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"`,
		`"oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE:sub":"system:serviceaccount:orders:orders-api"`,
		`"oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE:aud":"sts.amazonaws.com"`, `"sts:AssumeRoleWithWebIdentity"`} {
		if !strings.Contains(trust, want) {
			t.Errorf("trust lacks %s: %s", want, trust)
		}
	}
	for _, want := range []string{`"rds-db:connect"`, `arn:aws:rds-db:us-east-1:111122223333:dbuser:prx-0abc/orders_app`, `arn:aws:rds-db:us-east-1:111122223333:dbuser:db-XYZ/orders_app`} {
		if !strings.Contains(pol, want) {
			t.Errorf("policy lacks %s: %s", want, pol)
		}
	}
	if strings.Contains(pol, "orders_ro") {
		t.Errorf("policy of orders-api allows another db user: %s", pol)
	}
	// Before the proxy exists the policy is not known yet, and says so.
	if d := irsaRoleHandler().desired(testEnv(t, map[string]string{}))[0]; d.Attrs["policy"] != Unknown {
		t.Errorf("policy before proxy: %s", d.Attrs["policy"])
	}
}

func TestProxyDesiredFollowsPasswordMode(t *testing.T) {
	e := testEnv(t, map[string]string{"secret.arn": "arn:secret:ours", "instance.secret_arn": "arn:secret:rds", "proxy_role.arn": "arn:role", "sg.id": "sg-1",
		"instance.resource_id": "db-XYZ"})
	d := proxyHandler{}.desired(e)[0]
	if d.Attrs["secret_arn"] != "arn:secret:ours" || d.Attrs["iam_auth"] != "REQUIRED" || d.Attrs["require_tls"] != "true" || d.Attrs["role_arn"] != "arn:role" ||
		d.Attrs["default_auth_scheme"] != "IAM_AUTH" {
		t.Errorf("%+v", d.Attrs)
	}
	e.spec.Instance.MasterPassword = "rds-managed"
	if d := (proxyHandler{}).desired(e)[0]; d.Attrs["secret_arn"] != "arn:secret:rds" {
		t.Errorf("rds-managed: %+v", d.Attrs)
	}
	if got := (secretHandler{}).desired(e); got != nil {
		t.Errorf("own secret wanted in rds-managed mode: %+v", got)
	}
	pol := proxyRoleHandler().desired(e)[0].Attrs["policy"]
	if !strings.Contains(pol, "arn:secret:rds") {
		t.Errorf("proxy role policy: %s", pol)
	}
	// End-to-end IAM: the proxy may log in as every app db user, on the instance only.
	for _, want := range []string{`"rds-db:connect"`, "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-XYZ/orders_app", "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-XYZ/orders_ro"} {
		if !strings.Contains(pol, want) {
			t.Errorf("proxy role policy lacks %s: %s", want, pol)
		}
	}
	delete(e.out, "instance.resource_id")
	if pol := proxyRoleHandler().desired(e)[0].Attrs["policy"]; pol != Unknown {
		t.Errorf("proxy role policy before the instance exists: %s", pol)
	}
}

func TestSecurityGroupAndTargetsDesired(t *testing.T) {
	e := testEnv(t, map[string]string{"proxy.ips": "10.0.2.9,10.0.1.5"})
	sg := sgHandler{}.desired(e)[0]
	if sg.Attrs["ingress"] != "tcp:5432:10.20.0.0/16,tcp:5432:self,tcp:5432:sg-0a1b2c3d4e5f60999" {
		t.Errorf("ingress %s", sg.Attrs["ingress"])
	}
	tg := targetGroupHandler{}.desired(e)[0]
	if tg.Attrs["targets"] != "10.0.1.5:5432,10.0.2.9:5432" {
		t.Errorf("targets %s", tg.Attrs["targets"])
	}
	if tg := (targetGroupHandler{}).desired(testEnv(t, map[string]string{}))[0]; tg.Attrs["targets"] != Unknown {
		t.Errorf("targets before the proxy exists: %s", tg.Attrs["targets"])
	}
	e.spec.PrivateLink.Enabled = false
	if (serviceHandler{}).desired(e) != nil || (endpointHandler{}).desired(e) != nil {
		t.Error("PrivateLink resources wanted while disabled")
	}
}
