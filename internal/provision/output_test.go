package provision

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/smithy-go"
	"gopkg.in/yaml.v3"

	"github.com/rdsvalet/rds-valet/internal/config"
)

func TestVersionAtLeast(t *testing.T) {
	for _, tc := range []struct {
		have, want string
		ok         bool
	}{
		{"16.4", "16.4", true}, {"16.6", "16.4", true}, {"16.10", "16.9", true}, {"16.3", "16.4", false},
		{"17.1", "16.4", false}, {"16.4", "16", true}, {"8.0.39", "8.0.36", true}, {"8.0.3", "8.0.36", false},
	} {
		if got := versionAtLeast(tc.have, tc.want); got != tc.ok {
			t.Errorf("versionAtLeast(%s, %s) = %v", tc.have, tc.want, got)
		}
	}
}

func TestInstanceNormalize(t *testing.T) {
	d := &State{Attrs: map[string]string{"storage_gb": "50", "engine_version": "16.4"}}
	o := &State{Attrs: map[string]string{"storage_gb": "80", "engine_version": "16.6"}}
	instanceHandler{}.normalize(d, o)
	if d.Attrs["storage_gb"] != "80" || d.Attrs["engine_version"] != "16.6" {
		t.Errorf("autoscaled storage / minor upgrade planned as changes: %v", d.Attrs)
	}
	d = &State{Attrs: map[string]string{"storage_gb": "100", "engine_version": "17.2"}}
	instanceHandler{}.normalize(d, o)
	if d.Attrs["storage_gb"] != "100" || d.Attrs["engine_version"] != "17.2" {
		t.Errorf("real changes hidden: %v", d.Attrs)
	}
}

func TestIRSARoleNameFitsIAMLimit(t *testing.T) {
	s := &Spec{Name: "orders-with-a-long-nm"}
	long := ServiceAccount{Namespace: strings.Repeat("n", 40), Name: strings.Repeat("s", 40)}
	other := ServiceAccount{Namespace: strings.Repeat("n", 40), Name: strings.Repeat("s", 39) + "t"}
	a, b := irsaRoleName(s, long), irsaRoleName(s, other)
	if len(a) > 64 || len(b) > 64 || a == b {
		t.Errorf("%q (%d) %q (%d)", a, len(a), b, len(b))
	}
	if got := irsaRoleName(&Spec{Name: "orders"}, ServiceAccount{Namespace: "ns", Name: "api"}); got != "rdsvalet-orders-ns-api" {
		t.Errorf("short name %q", got)
	}
}

func TestOutputsRenderThreeNamesPerPath(t *testing.T) {
	e := &env{spec: &Spec{Name: "orders", Engine: EngineSpec{Type: "postgres"}, Access: AccessSpec{ServiceAccounts: []ServiceAccount{
		{Namespace: "orders", Name: "api", DBUser: "app"}, {Namespace: "billing", Name: "inv", DBUser: "bill"}}}},
		region: "eu-west-1", out: map[string]string{
			"vpce.dns": "vpce-1.vpce-svc-2.eu-west-1.vpce.amazonaws.com", "proxy.endpoint": "orders.proxy-x.eu-west-1.rds.amazonaws.com",
			"instance.address": "orders.x.eu-west-1.rds.amazonaws.com", "role.rdsvalet-orders-orders-api.arn": "arn:aws:iam::1:role/a"}}
	o := e.outputs()
	b, err := o.SidecarConfig()
	if err != nil {
		t.Fatal(err)
	}
	var cfg config.Config
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	ps := cfg.Listeners[0].Paths
	if cfg.AWS.Region != "eu-west-1" || cfg.Listeners[0].Listen != "127.0.0.1:5432" || len(ps) != 3 ||
		ps[0].Address != "vpce-1.vpce-svc-2.eu-west-1.vpce.amazonaws.com:5432" ||
		ps[0].TLSServerName != "orders.proxy-x.eu-west-1.rds.amazonaws.com" ||
		ps[0].TokenHost != "orders.proxy-x.eu-west-1.rds.amazonaws.com:5432" ||
		ps[2].TokenHost != "orders.x.eu-west-1.rds.amazonaws.com:5432" {
		t.Fatalf("config:\n%s", b)
	}
	cms, err := o.ConfigMaps("", "")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(cms), "---\n")
	if len(docs) != 2 || !strings.Contains(docs[0], "namespace: billing") || !strings.Contains(docs[1], "namespace: orders") ||
		!strings.Contains(docs[1], "config.yaml:") || !strings.Contains(docs[1], "orders/api=app") {
		t.Errorf("configmaps:\n%s", cms)
	}
	if _, err := (&Outputs{Database: "x"}).SidecarConfig(); err == nil {
		t.Error("config without paths accepted")
	}
}

func TestAWSErrorsAreActionable(t *testing.T) {
	for code, hint := range map[string]string{
		"AccessDenied": "IAM permissions", "UnauthorizedOperation": "IAM permissions", "ExpiredToken": "credentials",
		"Throttling": "throttling", "DependencyViolation": "still uses it", "InvalidDBInstanceState": "busy",
		"InvalidParameterValue": "spec values", "SomethingNew": "AWS documentation",
	} {
		err := awsErr("db-instance", "orders", "rds:CreateDBInstance", fmt.Errorf("op: %w", &smithy.GenericAPIError{Code: code, Message: "msg"}))
		var oe *OpError
		if !errors.As(err, &oe) || !strings.Contains(oe.Hint, hint) || !strings.Contains(err.Error(), `db-instance "orders": rds:CreateDBInstance failed: AWS said `+code+": msg") {
			t.Errorf("%s: %v", code, err)
		}
	}
	if awsErr("k", "n", "c", nil) != nil {
		t.Error("nil error wrapped")
	}
}

func TestSetDiff(t *testing.T) {
	add, del := setDiff([]string{"a", "b", "c"}, []string{"b", "d"})
	if fmt.Sprint(add, del) != "[a c] [d]" {
		t.Errorf("%v %v", add, del)
	}
}
