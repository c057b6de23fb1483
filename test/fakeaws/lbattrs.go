package fakeaws

import (
	"regexp"
	"strconv"
)

// Attributes of Network Load Balancers and their TCP target groups, with AWS's defaults and
// the values AWS accepts (LoadBalancerAttribute,
// https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_LoadBalancerAttribute.html;
// TargetGroupAttribute, https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetGroupAttribute.html).
// Modify*Attributes refuses an unknown key or a bad value with InvalidConfigurationRequest, the
// error both API pages list.

type attrRule struct {
	def string
	ok  *regexp.Regexp
}

var (
	boolRE = regexp.MustCompile(`^(true|false)$`)
	anyRE  = regexp.MustCompile(`^.*$`)
	// numRE: the range itself is checked in setAttrs (numericRanges).
	numRE = regexp.MustCompile(`^\d+$`)
)

var nlbAttrs = map[string]attrRule{
	"deletion_protection.enabled":            {"false", boolRE},
	"load_balancing.cross_zone.enabled":      {"false", boolRE},
	"access_logs.s3.enabled":                 {"false", boolRE},
	"access_logs.s3.bucket":                  {"", anyRE},
	"access_logs.s3.prefix":                  {"", anyRE},
	"ipv6.deny_all_igw_traffic":              {"true", boolRE},
	"dns_record.client_routing_policy":       {"any_availability_zone", regexp.MustCompile(`^(availability_zone_affinity|partial_availability_zone_affinity|any_availability_zone)$`)},
	"zonal_shift.config.enabled":             {"false", boolRE},
	"secondary_ips.auto_assigned.per_subnet": {"0", numRE},
}

var tcpTargetGroupAttrs = map[string]attrRule{
	"deregistration_delay.timeout_seconds":                         {"300", numRE},
	"deregistration_delay.connection_termination.enabled":          {"false", boolRE},
	"preserve_client_ip.enabled":                                   {"false", boolRE},
	"proxy_protocol_v2.enabled":                                    {"false", boolRE},
	"stickiness.enabled":                                           {"false", boolRE},
	"stickiness.type":                                              {"source_ip", regexp.MustCompile(`^source_ip$`)},
	"load_balancing.cross_zone.enabled":                            {"use_load_balancer_configuration", regexp.MustCompile(`^(true|false|use_load_balancer_configuration)$`)},
	"target_health_state.unhealthy.connection_termination.enabled": {"true", boolRE},
	"target_health_state.unhealthy.draining_interval_seconds":      {"0", numRE},
}

var numericRanges = map[string][2]int{
	"secondary_ips.auto_assigned.per_subnet":                  {0, 7},
	"deregistration_delay.timeout_seconds":                    {0, 3600},
	"target_health_state.unhealthy.draining_interval_seconds": {0, 360000},
}

func defaultAttrs(rules map[string]attrRule) map[string]string {
	out := map[string]string{}
	for k, r := range rules {
		out[k] = r.def
	}
	return out
}

// setAttrs validates every Attributes.member.N first and then applies them all, as AWS does.
func setAttrs(c *reqCtx, what string, rules map[string]attrRule, into map[string]string) *apiError {
	in := c.structs("Attributes")
	for _, a := range in {
		k, v := a["Key"], a["Value"]
		r, ok := rules[k]
		if !ok {
			return errf(400, "InvalidConfigurationRequest", "%s attribute key '%s' is not recognized", what, k)
		}
		if !r.ok.MatchString(v) {
			return errf(400, "InvalidConfigurationRequest", "Attribute '%s' value '%s' is not valid", k, v)
		}
		if rg, ok := numericRanges[k]; ok {
			if n, _ := strconv.Atoi(v); n < rg[0] || n > rg[1] {
				return errf(400, "InvalidConfigurationRequest", "Attribute '%s' must be between %d and %d", k, rg[0], rg[1])
			}
		}
	}
	for _, a := range in {
		into[a["Key"]] = a["Value"]
	}
	return nil
}

func attrsX(m map[string]string) X {
	var items []X
	for _, k := range sortedKeys(m) {
		items = append(items, E("member", T("Key", k), T("Value", m[k])))
	}
	return E("Attributes", items...)
}

// healthCheck is a TCP target group's health check (CreateTargetGroup / ModifyTargetGroup,
// https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateTargetGroup.html):
// interval 5-300 s (default 30), timeout 2-120 s (default 10 for TCP), healthy and unhealthy
// thresholds 2-10 (defaults 5 and 2). Out-of-range values are a ValidationError.
type healthCheck struct {
	protocol                    string
	interval, timeout, hthr, ut int
}

func defaultHealthCheck() healthCheck {
	return healthCheck{protocol: "TCP", interval: 30, timeout: 10, hthr: 5, ut: 2}
}

func (h *healthCheck) apply(c *reqCtx) *apiError {
	for _, f := range []struct {
		key    string
		lo, hi int
		dst    *int
	}{
		{"HealthCheckIntervalSeconds", 5, 300, &h.interval}, {"HealthCheckTimeoutSeconds", 2, 120, &h.timeout},
		{"HealthyThresholdCount", 2, 10, &h.hthr}, {"UnhealthyThresholdCount", 2, 10, &h.ut},
	} {
		if !c.has(f.key) {
			continue
		}
		n, err := strconv.Atoi(c.get(f.key))
		if err != nil || n < f.lo || n > f.hi {
			return errf(400, "ValidationError", "%s must be between %d and %d (got %q)", f.key, f.lo, f.hi, c.get(f.key))
		}
		*f.dst = n
	}
	if c.has("HealthCheckProtocol") {
		switch p := c.get("HealthCheckProtocol"); p {
		case "TCP", "HTTP", "HTTPS":
			h.protocol = p
		default:
			return errf(400, "ValidationError", "HealthCheckProtocol %q is not supported for a TCP target group", p)
		}
	}
	return nil
}

func (h healthCheck) xml() []X {
	return []X{T("HealthCheckProtocol", h.protocol), T("HealthCheckPort", "traffic-port"), T("HealthCheckEnabled", "true"),
		T("HealthCheckIntervalSeconds", strconv.Itoa(h.interval)), T("HealthCheckTimeoutSeconds", strconv.Itoa(h.timeout)),
		T("HealthyThresholdCount", strconv.Itoa(h.hthr)), T("UnhealthyThresholdCount", strconv.Itoa(h.ut))}
}
