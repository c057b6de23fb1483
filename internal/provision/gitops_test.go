package provision

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLineDiffListsRemovalsThenAdditionsAroundContext(t *testing.T) {
	got := strings.Join(lineDiff([]string{"a", "b", "c"}, []string{"a", "x", "c", "d"}), "|")
	if want := "  a|- b|+ x|  c|+ d"; got != want {
		t.Errorf("lineDiff = %q, want %q", got, want)
	}
	if got := lineDiff(nil, []string{"new"}); len(got) != 1 || got[0] != "+ new" {
		t.Errorf("create: %q", got)
	}
}

func TestDiffLinesPrettyPrintsJSONAndSplitsLists(t *testing.T) {
	js := diffLines(`{"b":1,"a":["x<y"]}`)
	if strings.Join(js, "\n") != "{\n  \"a\": [\n    \"x<y\"\n  ],\n  \"b\": 1\n}" {
		t.Errorf("json lines: %q", js)
	}
	if l := diffLines("tcp:5432:self,tcp:5432:10.0.0.0/16"); len(l) != 2 {
		t.Errorf("list lines: %q", l)
	}
	if l := diffLines("a sentence, with a comma"); len(l) != 1 {
		t.Errorf("text lines: %q", l)
	}
}

func TestTableShortensLongValuesAndSaysWhereTheyAre(t *testing.T) {
	long := `{"Statement":"` + strings.Repeat("é", 150) + `"}`
	p := &Plan{Database: "orders", Changes: []Change{{Kind: "iam-role", Name: "r", Action: ActionUpdate,
		Fields: []FieldDiff{{Field: "policy", From: "{}", To: long}}}}}
	var b bytes.Buffer
	if err := p.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), long) || !strings.Contains(b.String(), "1 value was shortened") || !strings.Contains(b.String(), "--output markdown") {
		t.Errorf("table:\n%s", b.String())
	}
	if !strings.Contains(b.String(), strings.Repeat("é", 80)) {
		t.Error("shortened in the middle of a character")
	}
	var md bytes.Buffer
	if err := p.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), strings.Repeat("é", 150)) {
		t.Errorf("markdown lost the full value:\n%s", md.String())
	}
	b.Reset()
	p.Changes[0].Fields[0].To = "{}"
	_ = p.WriteTable(&b)
	if strings.Contains(b.String(), "shortened") {
		t.Errorf("nothing was shortened:\n%s", b.String())
	}
}

func TestMarkdownOfAnEmptyPlan(t *testing.T) {
	var b bytes.Buffer
	if err := (&Plan{Database: "orders", Changes: []Change{{Kind: "k", Name: "n", Action: ActionNoop}}}).WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "No changes") {
		t.Errorf("markdown:\n%s", b.String())
	}
}

func TestPlanFileFingerprintIgnoresStatusAndLease(t *testing.T) {
	spec := &Spec{Name: "orders", Region: "us-east-1"}
	sg := func(tags map[string]string, status string) *State {
		return &State{Kind: kindSG, Name: "rdsvalet-orders", ID: "sg-1", Status: status, Attrs: map[string]string{"ingress": "tcp:5432:self"}, Tags: tags}
	}
	plan := func(s *State) *Plan {
		return &Plan{Database: "orders", Changes: []Change{{Kind: kindSG, Name: "rdsvalet-orders", Action: ActionNoop}}, observed: []*State{s}}
	}
	pf := NewPlanFile(plan(sg(map[string]string{"team": "a"}, "available")), spec, "orders.yaml", "v1")
	if err := pf.CheckSpec("p", spec, "v1"); err != nil {
		t.Fatal(err)
	}
	if err := pf.CheckObserved("p", plan(sg(map[string]string{"team": "a", TagLease: "x:1"}, "modifying"))); err != nil {
		t.Errorf("status or lease made the plan stale: %v", err)
	}
	err := pf.CheckObserved("p", plan(sg(map[string]string{"team": "b"}, "available")))
	var stale *StalePlanError
	if !errors.As(err, &stale) || !strings.Contains(err.Error(), `security-group "rdsvalet-orders": tags.team changed`) {
		t.Errorf("tag change: %v", err)
	}
	if err := pf.CheckObserved("p", &Plan{Database: "orders"}); err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Errorf("resource gone: %v", err)
	}
	other := *spec
	other.Region = "eu-west-1"
	if err := pf.CheckSpec("p", &other, "v1"); err == nil || !strings.Contains(err.Error(), "the spec changed") {
		t.Errorf("spec change: %v", err)
	}
	if err := pf.CheckSpec("p", spec, "v2"); err == nil || !strings.Contains(err.Error(), "provisioner version") {
		t.Errorf("version change: %v", err)
	}
}

func TestSameChangeResolvesOnlyUnknownValues(t *testing.T) {
	planned := Change{Kind: "k", Name: "n", Action: ActionCreate, Fields: []FieldDiff{{Field: "arn", To: Unknown}, {Field: "class", To: "a"}}}
	if !sameChange(planned, Change{Action: ActionCreate, Fields: []FieldDiff{{Field: "arn", To: "arn:x"}, {Field: "class", To: "a"}}}, true) {
		t.Error("a known-after-apply value did not match its value")
	}
	if sameChange(planned, Change{Action: ActionCreate, Fields: []FieldDiff{{Field: "arn", To: "arn:x"}, {Field: "class", To: "b"}}}, true) {
		t.Error("a changed value matched")
	}
	if sameChange(planned, Change{Action: ActionCreate, Fields: []FieldDiff{{Field: "arn", To: "arn:x"}, {Field: "class", To: "a"}}}, false) {
		t.Error("unresolved comparison matched an unknown")
	}
}

func TestParseLease(t *testing.T) {
	h, exp, ok := parseLease("ci-runner-7/123:1800000000")
	if !ok || h != "ci-runner-7/123" || !exp.Equal(time.Unix(1800000000, 0)) {
		t.Errorf("parseLease: %q %v %v", h, exp, ok)
	}
	if _, _, ok := parseLease("garbage"); ok {
		t.Error("garbage parsed")
	}
	e := &LeaseHeldError{Database: "orders", GroupID: "sg-1", Holder: "ci-a", Expiry: time.Unix(1800000000, 0)}
	if !strings.Contains(e.Error(), `holder "ci-a" until 2027-01-15T08:00:00Z`) {
		t.Errorf("message: %s", e)
	}
}

func TestRenderSpecIsStrictlyValid(t *testing.T) {
	o := InitOptions{Name: "inv", Engine: "postgres", Region: "us-east-1", VPCID: "vpc-0a1b2c3d4e5f60718",
		SubnetIDs: []string{"subnet-0a1b2c3d4e5f60001", "subnet-0a1b2c3d4e5f60002"}, AllowedCIDRs: []string{"10.0.0.0/16"},
		Team: "t: with a colon", Owner: "o@example.com", OIDCProviderARN: "arn:aws:iam::111122223333:oidc-provider/oidc.example/id/X",
		ServiceAccounts: []string{"ns/sa=app_user"}}
	b, err := RenderSpec(o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSpec(b)
	if err != nil || s.Tags["team"] != "t: with a colon" || s.Engine.Version != "16.4" || s.Access.ServiceAccounts[0].DBUser != "app_user" {
		t.Fatalf("%v %+v\n%s", err, s, b)
	}
	o.ServiceAccounts = []string{"no-equals"}
	if _, err := RenderSpec(o); err == nil {
		t.Error("a malformed --service-account was accepted")
	}
	o.ServiceAccounts, o.SubnetIDs = nil, []string{"subnet-0a1b2c3d4e5f60001"}
	if _, err := RenderSpec(o); err == nil || !strings.Contains(err.Error(), "network.subnet_ids") {
		t.Errorf("one subnet: %v", err)
	}
}
