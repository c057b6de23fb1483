package provision

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleSpecIsValid(t *testing.T) {
	s, err := LoadSpec("../../docs/examples/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "orders" || s.Port() != 5432 || len(s.Access.ServiceAccounts) != 2 || s.PrivateLink.Consumer == nil {
		t.Fatalf("unexpected spec: %+v", s)
	}
}

func TestEveryExampleIsValid(t *testing.T) {
	files, err := filepath.Glob("../../docs/examples/*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		if _, err := LoadSpec(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestUnknownFieldRejected(t *testing.T) {
	b, err := os.ReadFile("../../docs/examples/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(b), "  multi_az: true", "  multi_az: true\n  multi_azz: true", 1)
	_, err = ParseSpec([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "multi_azz") {
		t.Fatalf("want unknown field error, got %v", err)
	}
}

func TestValidateReportsEveryErrorWithPath(t *testing.T) {
	doc := `
name: Orders_DB
region: moon-1
tags: {"rdsvalet.io/x": y}
engine: {type: oracle}
instance: {class: big, storage_gb: 10, max_storage_gb: 5, backup_retention_days: 40, master_password: plain}
network: {vpc_id: vpc-1, subnet_ids: [subnet-0123456789abcdef0, subnet-0123456789abcdef0], allowed_cidrs: [10.0.0.0]}
access:
  oidc_provider_arn: nope
  service_accounts:
    - {namespace: Bad_NS, name: api, db_user: "1x"}
    - {namespace: Bad_NS, name: api, db_user: ok}
privatelink: {enabled: false, allowed_principals: ["bob"]}
`
	_, err := ParseSpec([]byte(doc))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want ValidationError, got %v", err)
	}
	got := map[string]bool{}
	for _, fe := range ve.Errors {
		got[fe.Path] = true
	}
	for _, p := range []string{
		"name", "region", "tags.rdsvalet.io/x", "tags.team", "tags.owner", "engine.type", "engine.version", "instance.class",
		"instance.storage_gb", "instance.max_storage_gb", "instance.backup_retention_days",
		"instance.master_password", "network.vpc_id", "network.subnet_ids[1]", "network.allowed_cidrs[0]",
		"access.oidc_provider_arn", "access.service_accounts[0].namespace", "access.service_accounts[0].db_user",
		"access.service_accounts[1]", "privatelink.enabled", "privatelink.allowed_principals[0]",
	} {
		if !got[p] {
			t.Errorf("missing error for %s; got %v", p, err)
		}
	}
}
