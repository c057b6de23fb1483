package fakeaws

import "strconv"

// target is one registered NLB target and its health as DescribeTargetHealth reports it
// ("Health checks for Network Load Balancer target groups", target health status,
// https://docs.aws.amazon.com/elasticloadbalancing/latest/network/target-group-health-checks.html):
// a new target is "initial" (Elb.RegistrationInProgress) until its first health checks pass,
// then "healthy"; a deregistered one is "draining" (Target.DeregistrationInProgress) for the
// deregistration delay (deregistration_delay.timeout_seconds, 300 s by default), then gone.
// Time is counted in DescribeTargetHealth polls: readyAfter polls for the first health checks,
// and readyAfter polls per started 30 s of deregistration delay, so tests compress it.
type target struct {
	port   int32
	state  string // initial | healthy | draining
	reason string
	polls  int
	left   int // polls until the state moves on
}

func (st *state) registerTarget(tg *targetGroup, ip string, port int32) {
	tg.targets[ip] = &target{port: port, state: "initial", reason: "Elb.RegistrationInProgress", left: st.readyAfter}
}

func (st *state) deregisterTarget(tg *targetGroup, ip string) {
	delay, _ := strconv.Atoi(tg.attrs["deregistration_delay.timeout_seconds"])
	if delay == 0 {
		delete(tg.targets, ip)
		return
	}
	t := tg.targets[ip]
	t.state, t.reason, t.polls = "draining", "Target.DeregistrationInProgress", 0
	t.left = st.readyAfter * (1 + (delay-1)/30)
}

// tickTargets advances every target by one DescribeTargetHealth poll.
func (st *state) tickTargets(tg *targetGroup) {
	for ip, t := range tg.targets {
		if t.state == "healthy" {
			continue
		}
		t.polls++
		if t.polls < t.left {
			continue
		}
		if t.state == "draining" {
			delete(tg.targets, ip)
			continue
		}
		t.state, t.reason = "healthy", ""
	}
}

func targetHealthX(ip string, t *target) X {
	h := E("TargetHealth", T("State", t.state))
	if t.reason != "" {
		desc := "Target registration is in progress"
		if t.state == "draining" {
			desc = "Target deregistration is in progress"
		}
		h.kids = append(h.kids, T("Reason", t.reason), T("Description", desc))
	}
	return E("member", E("Target", T("Id", ip), T("Port", i2s(t.port))), T("HealthCheckPort", i2s(t.port)), h)
}
