package provisioner_test

import (
	"sort"
	"strings"
	"testing"
)

// Issue 15, items 3-7: PrivateLink and the NLB as AWS behaves (Unsuccessful items, draining
// and initial targets, attributes, AZ IDs, principals, ClientToken, unordered lists).

func (h *harness) callCount(action string) int {
	n := 0
	for _, c := range h.fake.Calls() {
		if c.Action == action {
			n++
		}
	}
	return n
}

// callsAfter lists the actions served after the first call of action.
func (h *harness) callsAfter(action string) []string {
	var out []string
	seen := false
	for _, c := range h.fake.Calls() {
		if seen {
			out = append(out, c.Action)
		}
		seen = seen || c.Action == action
	}
	return out
}

func withoutPrivateLink(keepConsumer bool) func(string) string {
	return func(s string) string {
		i := strings.Index(s, "privatelink:")
		rest := "privatelink:\n  enabled: false\n"
		if keepConsumer {
			rest += s[strings.Index(s, "  consumer:"):]
		}
		return s[:i] + rest
	}
}

// Item 3: DeleteVpcEndpointServiceConfigurations answers 200 with ExistingVpcEndpointConnections
// while a consumer endpoint is connected; apply must stop at once and say what to do, not wait
// --wait-timeout for a deletion that will never happen.
func TestPrivateLinkOffWithForeignEndpointConnectedFailsAtOnce(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	var vpce string
	for id := range h.fake.Endpoints() {
		vpce = id
	}
	h.writeSpec(withoutPrivateLink(false)) // the endpoint is now someone else's business
	h.fake.ResetCalls()
	r := h.run("apply")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s", r.code, tail(r.stderr, 2000))
	}
	for _, want := range []string{`endpoint-service "rdsvalet-orders"`, "ec2:DeleteVpcEndpointServiceConfigurations", "ExistingVpcEndpointConnections",
		vpce, "account " + consumerAccount, "reject-vpc-endpoint-connections"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, tail(r.stderr, 2000))
		}
	}
	if after := h.callsAfter("DeleteVpcEndpointServiceConfigurations"); strings.Contains(strings.Join(after, ","), "DescribeVpcEndpointServiceConfigurations") {
		t.Errorf("waited for a deletion AWS refused: %v", after)
	}
	if len(h.fake.Services()) != 1 || h.fake.Endpoints()[vpce] != "available" {
		t.Errorf("services %v endpoints %v", h.fake.Services(), h.fake.Endpoints())
	}
}

// Item 3, the endpoint is ours: with the consumer section kept, turning PrivateLink off
// deletes our consumer endpoint first, then the service.
func TestPrivateLinkOffDeletesOurConsumerEndpointFirst(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	h.writeSpec(withoutPrivateLink(true))
	h.apply()
	if n := len(h.fake.Services()); n != 0 {
		t.Errorf("%d endpoint services left", n)
	}
	if eps := h.fake.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoints left: %v", eps)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after: %+v", got)
	}
}

// Item 3: AcceptVpcEndpointConnections answers 200 with an unsuccessful item for a connection
// that is no longer pending; apply fails on that answer, naming the call and the code.
func TestRefusedAcceptanceFailsOnTheUnsuccessfulItem(t *testing.T) {
	h := newHarness(t, nil)
	h.fake.OnCall("CreateVpcEndpoint", h.fake.RejectPendingConnections)
	r := h.run("apply")
	if r.code != 1 {
		t.Fatalf("exit %d\n%s", r.code, tail(r.stderr, 2000))
	}
	for _, want := range []string{`vpc-endpoint "rdsvalet-orders-consumer"`, "ec2:AcceptVpcEndpointConnections", "IncorrectState"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, tail(r.stderr, 2000))
		}
	}
}

// Item 4: after a proxy IP change the old targets drain and the new ones start "initial";
// neither is a diff, and sync-targets does not deregister a draining target again.
func TestDrainingAndInitialTargetsAreNoDiff(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	old := h.fake.TargetIPs(lbName)
	h.fake.SetProxyIPs("orders", []string{"10.0.1.77", "10.0.2.88"})
	h.mustRun("sync-targets")
	st := h.fake.TargetStates(lbName)
	for _, ip := range old {
		if st[ip] != "draining" {
			t.Errorf("old target %s is %q, want draining (states %v)", ip, st[ip], st)
		}
	}
	for _, ip := range []string{"10.0.1.77", "10.0.2.88"} {
		if st[ip] != "initial" {
			t.Errorf("new target %s is %q, want initial", ip, st[ip])
		}
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan while targets drain: %+v", got)
	}
	h.fake.ResetCalls()
	h.mustRun("sync-targets")
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("sync-targets while targets drain mutated %v", m)
	}
	// Drained away and healthy a few polls later (30 s delay = a few polls in the fake).
	for i := 0; i < 4; i++ {
		h.plan()
	}
	st = h.fake.TargetStates(lbName)
	if len(st) != 2 || st["10.0.1.77"] != "healthy" || st["10.0.2.88"] != "healthy" {
		t.Errorf("targets after draining: %v", st)
	}
}

// Item 5: cross-zone load balancing on, a 30 s deregistration delay that closes connections,
// a health check for a proxy; drift in any of them is repaired.
func TestNLBAndTargetGroupAttributesAreSetAndRepaired(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	if a := h.fake.LoadBalancerAttributes(lbName); a["load_balancing.cross_zone.enabled"] != "true" {
		t.Errorf("NLB attributes: %v", a)
	}
	want := map[string]string{"deregistration_delay.timeout_seconds": "30", "deregistration_delay.connection_termination.enabled": "true",
		"hc.interval": "10", "hc.timeout": "5", "hc.healthy": "2", "hc.unhealthy": "2"}
	tg := h.fake.TargetGroupAttributes(lbName)
	for k, v := range want {
		if tg[k] != v {
			t.Errorf("target group %s = %q, want %q", k, tg[k], v)
		}
	}
	h.fake.SetLoadBalancerAttribute(lbName, "load_balancing.cross_zone.enabled", "false")
	h.fake.SetTargetGroupAttribute(lbName, "deregistration_delay.timeout_seconds", "300")
	got := h.plan()
	var fields []string
	for _, c := range got {
		for _, f := range c.Fields {
			fields = append(fields, c.Kind+":"+f.Field+":"+f.From+"->"+f.To)
		}
	}
	sort.Strings(fields)
	if strings.Join(fields, " ") != "load-balancer:attr.load_balancing.cross_zone.enabled:false->true target-group:attr.deregistration_delay.timeout_seconds:300->30" {
		t.Errorf("drift plan: %v", fields)
	}
	h.apply()
	if a := h.fake.LoadBalancerAttributes(lbName); a["load_balancing.cross_zone.enabled"] != "true" {
		t.Errorf("not repaired: %v", a)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after repair: %+v", got)
	}
}

// Item 6: AZ names differ between accounts. Consumer subnets called us-east-1a/b in the
// consumer account are not the provider's us-east-1a/b; the provisioner says so before
// CreateVpcEndpoint, by AZ ID.
func TestConsumerSubnetsInUnservedAZsAreRefusedByAZID(t *testing.T) {
	h := newHarness(t, func(s string) string {
		return strings.Replace(s, "subnet_ids: [subnet-0f1e2d3c4b5a60001, subnet-0f1e2d3c4b5a60002]", "subnet_ids: [subnet-0f1e2d3c4b5a60011, subnet-0f1e2d3c4b5a60012]", 1)
	})
	h.fake.SeedSubnet(consumerAccount, "subnet-0f1e2d3c4b5a60011", "vpc-0f1e2d3c4b5a69788", "us-east-1a")
	h.fake.SeedSubnet(consumerAccount, "subnet-0f1e2d3c4b5a60012", "vpc-0f1e2d3c4b5a69788", "us-east-1b")
	r := h.run("apply")
	if r.code != 1 {
		t.Fatalf("exit %d\n%s", r.code, tail(r.stderr, 2000))
	}
	for _, want := range []string{`vpc-endpoint "rdsvalet-orders-consumer"`, "subnet-0f1e2d3c4b5a60011 (us-east-1a, use1-az2)", "serves AZ IDs use1-az1, use1-az6", "network.subnet_ids"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, tail(r.stderr, 2000))
		}
	}
	if n := h.callCount("CreateVpcEndpoint"); n != 0 {
		t.Errorf("CreateVpcEndpoint called %d times", n)
	}
}

// Item 6: a role ARN is a valid endpoint service principal (AWS accepts it), and lets that
// role create the endpoint; an ARN with a path is refused before any AWS call (AWS refuses it).
func TestRolePrincipalsAndPathsAsAWSDoes(t *testing.T) {
	h := newHarness(t, func(s string) string {
		return strings.Replace(s, "allowed_principals: [arn:aws:iam::444455556666:root]", "allowed_principals: [arn:aws:iam::444455556666:role/rdsvalet-consumer]", 1)
	})
	h.apply()
	if eps := h.fake.Endpoints(); len(eps) != 1 {
		t.Fatalf("endpoints %v", eps)
	}
	h.writeSpec(func(s string) string {
		return strings.Replace(s, "allowed_principals: [arn:aws:iam::444455556666:root]", "allowed_principals: [arn:aws:iam::444455556666:role/teams/consumer]", 1)
	})
	h.fake.ResetCalls()
	r := h.run("plan")
	if r.code != 1 || !strings.Contains(r.stderr, "privatelink.allowed_principals[0]") || !strings.Contains(r.stderr, "without a path") {
		t.Errorf("path principal: exit %d\n%s", r.code, tail(r.stderr, 1500))
	}
	if n := len(h.fake.Calls()); n != 0 {
		t.Errorf("an invalid principal reached AWS (%d calls)", n)
	}
}

// Item 7: the create reached AWS but its answer was lost; the SDK retries with the same
// ClientToken and gets the same service and endpoint back, not a second one.
func TestLostCreateAnswersConvergeOnOneResource(t *testing.T) {
	h := newHarness(t, nil)
	h.fake.InjectErrorAfter("ec2", "CreateVpcEndpointServiceConfiguration", "InternalError", "We encountered an internal error", 500, 1)
	h.fake.InjectErrorAfter("ec2", "CreateVpcEndpoint", "InternalError", "We encountered an internal error", 500, 1)
	h.apply()
	for _, a := range []string{"CreateVpcEndpointServiceConfiguration", "CreateVpcEndpoint"} {
		if n := h.callCount(a); n != 2 {
			t.Errorf("%s called %d times, want 2 (one lost answer, one retry)", a, n)
		}
	}
	if c := h.fake.Counts(); c["endpoint-service"] != 1 || c["vpc-endpoint"] != 1 {
		t.Errorf("counts %v", c)
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("plan after: %+v", got)
	}
}

// Item 7: a duplicate found by tag is chosen by age, not by its place in an unordered list:
// the newer duplicate goes even when its id sorts first.
func TestDuplicateEndpointKeepsTheOldest(t *testing.T) {
	h := newHarness(t, nil)
	h.apply()
	var orig string
	for id := range h.fake.Endpoints() {
		orig = id
	}
	dup := "vpce-00000000000000000" // sorts before any id the fake hands out
	h.fake.DuplicateEndpoint(orig, dup)
	got := h.plan()
	if len(got) != 1 || got[0].Action != "delete" || got[0].Name != "rdsvalet-orders-consumer#"+dup {
		t.Fatalf("plan with a duplicate: %+v", got)
	}
	h.apply()
	eps := h.fake.Endpoints()
	if _, ok := eps[orig]; !ok || len(eps) != 1 {
		t.Errorf("endpoints after: %v (kept must be %s)", eps, orig)
	}
}
