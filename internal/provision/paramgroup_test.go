package provision

import (
	"strings"
	"testing"
)

func TestParameterGroupDesiredAlwaysRequiresTLS(t *testing.T) {
	e := testEnv(t, map[string]string{"paramgroup.family": "postgres16"})
	e.spec.Instance.Parameters = map[string]string{"work_mem": "8192"}
	d := paramGroupHandler{}.desired(e)[0]
	if d.Name != "rdsvalet-orders" || d.Attrs["family"] != "postgres16" || d.Attrs["parameters"] != `{"rds.force_ssl":"1","work_mem":"8192"}` {
		t.Errorf("%+v", d.Attrs)
	}
	e.spec.Engine = EngineSpec{Type: "mysql", Version: "8.0.39"}
	e.spec.Instance.Parameters = nil
	if d := (paramGroupHandler{}).desired(e)[0]; d.Attrs["parameters"] != `{"require_secure_transport":"ON"}` {
		t.Errorf("mysql: %+v", d.Attrs)
	}
	for _, tc := range []struct{ engine, version, want string }{
		{"postgres", "16.4", "postgres16"}, {"postgres", "17", "postgres17"}, {"mysql", "8.0.39", "mysql8.0"}, {"mysql", "8.4.3", "mysql8.4"}, {"mysql", "8", ""},
	} {
		if got := derivedFamily(&Spec{Engine: EngineSpec{Type: tc.engine, Version: tc.version}}); got != tc.want {
			t.Errorf("%s %s: family %q, want %q", tc.engine, tc.version, got, tc.want)
		}
	}
}

func TestSpecParametersAndKMSKeyForms(t *testing.T) {
	e := testEnv(t, nil)
	s := *e.spec
	s.Instance.Parameters = map[string]string{"rds.force_ssl": "0", "bad name": "1", "work_mem": "1"}
	s.Instance.KMSKeyID = "my-key"
	err := s.Validate()
	for _, want := range []string{"instance.parameters.rds.force_ssl: TLS is always required", "instance.parameters.bad name", "instance.kms_key_id"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "work_mem") {
		t.Errorf("valid parameter refused: %v", err)
	}
	s.Instance.Parameters = map[string]string{"rds.force_ssl": "1"}
	for _, k := range []string{"1234abcd-12ab-34cd-56ef-1234567890ab", "mrk-1234abcd12ab34cd56ef1234567890ab", "alias/orders",
		"arn:aws:kms:us-east-1:111122223333:alias/orders", "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"} {
		s.Instance.KMSKeyID = k
		if err := s.Validate(); err != nil {
			t.Errorf("kms_key_id %s: %v", k, err)
		}
	}
}
