package fakeaws

import (
	"fmt"
	"hash/fnv"
	"regexp"
	"sort"
	"strings"
)

// Availability Zones and subnets. AZ names are per account: us-east-1a in one account is not
// the same physical zone as us-east-1a in another; the AZ ID (use1-az1) is the same everywhere
// ("AZ IDs for your AWS resources", https://docs.aws.amazon.com/ram/latest/userguide/working-with-az-ids.html).
// The fake maps names to IDs with a per-account rotation, so two accounts disagree on names.

var azLetters = []string{"a", "b", "c", "d", "e", "f"}

// regionAZPrefix turns us-east-1 into use1, the prefix of that region's AZ IDs.
func regionAZPrefix(region string) string {
	p := strings.Split(region, "-")
	if len(p) < 3 {
		return region
	}
	return p[0] + p[1][:1] + p[len(p)-1]
}

func accountRotation(account string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(account))
	return int(h.Sum32() % uint32(len(azLetters)))
}

// AZID is the AZ ID behind the AZ name azName in account.
func AZID(region, account, azName string) string {
	letter := strings.TrimPrefix(azName, region)
	for i, l := range azLetters {
		if l == letter {
			return fmt.Sprintf("%s-az%d", regionAZPrefix(region), (i+accountRotation(account))%len(azLetters)+1)
		}
	}
	return ""
}

// AZName is the name account uses for the AZ ID azID (the inverse of AZID).
func AZName(region, account, azID string) string {
	for _, l := range azLetters {
		if AZID(region, account, region+l) == azID {
			return region + l
		}
	}
	return ""
}

type subnet struct {
	id, account, vpc, az string
}

// SeedSubnet places an existing subnet (VPCs and subnets are made outside the provisioner).
func (s *Server) SeedSubnet(account, id, vpc, azName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.subnets[id] = &subnet{id: id, account: account, vpc: vpc, az: azName}
}

func (st *state) subnetAZID(region string, sn *subnet) string { return AZID(region, sn.account, sn.az) }

// findSubnets resolves subnet ids in the caller's account; missing ones are named in the error.
func (st *state) findSubnets(c *reqCtx, ids []string) ([]*subnet, []string) {
	var out []*subnet
	var missing []string
	for _, id := range ids {
		sn := st.subnets[id]
		if sn == nil || sn.account != c.account {
			missing = append(missing, id)
			continue
		}
		out = append(out, sn)
	}
	return out, missing
}

func (st *state) describeSubnets(c *reqCtx) (any, *apiError) {
	ids := c.strs("SubnetId")
	filters := ec2Filters(c)
	var items []X
	for _, k := range sortedKeys(st.subnets) {
		sn := st.subnets[k]
		if sn.account != c.account || (len(ids) > 0 && !contains(ids, sn.id)) ||
			!matches(filters, nil, map[string]string{"vpc-id": sn.vpc, "subnet-id": sn.id, "availability-zone": sn.az}) {
			continue
		}
		items = append(items, E("item", T("subnetId", sn.id), T("vpcId", sn.vpc), T("state", "available"),
			T("availabilityZone", sn.az), T("availabilityZoneId", st.subnetAZID(c.region, sn)), T("ownerId", sn.account)))
	}
	// DescribeSubnets: an unknown id fails the whole call
	// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSubnets.html).
	if _, missing := st.findSubnets(c, ids); len(missing) > 0 {
		return nil, errf(400, "InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", missing[0])
	}
	return []X{E("subnetSet", items...)}, nil
}

// serviceAZIDs are the AZ IDs an endpoint service is available in: those of its NLBs' subnets
// ("Share your services through AWS PrivateLink": consumers can only use the service's AZs,
// https://docs.aws.amazon.com/vpc/latest/privatelink/privatelink-share-your-services.html).
func (st *state) serviceAZIDs(region string, s *endpointService) []string {
	seen := map[string]bool{}
	for _, a := range s.nlbs {
		lb := st.lbs[a]
		if lb == nil {
			continue
		}
		for _, id := range lb.subnets {
			if sn := st.subnets[id]; sn != nil {
				seen[st.subnetAZID(region, sn)] = true
			}
		}
	}
	return sortedKeys(seen)
}

// azNamesFor renders AZ IDs with the names account uses for them.
func azNamesFor(region, account string, ids []string) []string {
	var out []string
	for _, id := range ids {
		out = append(out, AZName(region, account, id))
	}
	sort.Strings(out)
	return out
}

// principalRE is what ModifyVpcEndpointServicePermissions accepts: "*", an account root, or
// an IAM role or user ARN; "Principal ARNs with path components aren't supported"
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyVpcEndpointServicePermissions.html).
var principalRE = regexp.MustCompile(`^(\*|arn:aws[a-z-]*:iam::\d{12}:(root|role/[\w+=,.@-]+|user/[\w+=,.@-]+))$`)

func principalType(p string) string {
	switch {
	case p == "*":
		return "All"
	case strings.HasSuffix(p, ":root"):
		return "Account"
	case strings.Contains(p, ":role/"):
		return "Role"
	}
	return "User"
}

// allowedCaller reports whether the caller may connect an endpoint to s: "*", its account's
// root, or its own role/user ARN is on the service's permission list.
func allowedCaller(s *endpointService, c *reqCtx) bool {
	if c.account == s.account {
		return true
	}
	for _, p := range s.principals {
		if p == "*" || p == "arn:aws:iam::"+c.account+":root" || (c.caller.roleARN != "" && p == c.caller.roleARN) {
			return true
		}
	}
	return false
}

// describeVpcEndpointServices is the consumer's view of services it may connect to, with the
// AZs in the consumer's own names and their IDs
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeVpcEndpointServices.html).
func (st *state) describeVpcEndpointServices(c *reqCtx) (any, *apiError) {
	names := c.strs("ServiceName")
	var items []X
	var found []string
	for _, k := range sortedKeys(st.services) {
		s := st.services[k]
		if (len(names) > 0 && !contains(names, s.name)) || !allowedCaller(s, c) || s.status != "Available" {
			continue
		}
		found = append(found, s.name)
		ids := st.serviceAZIDs(c.region, s)
		items = append(items, E("item", T("serviceName", s.name), T("serviceId", s.id), T("owner", s.account),
			T("acceptanceRequired", b2s(s.acceptance)), Strs("availabilityZoneSet", "item", azNamesFor(c.region, c.account, ids)),
			Strs("availabilityZoneIdSet", "item", ids), E("serviceType", E("item", T("serviceType", "Interface")))))
	}
	for _, n := range names {
		if !contains(found, n) {
			return nil, errf(400, "InvalidServiceName", "The Vpc Endpoint Service '%s' does not exist", n)
		}
	}
	return []X{Strs("serviceNameSet", "item", found), E("serviceDetailSet", items...)}, nil
}

// unsuccessfulItem is one entry of the 200-with-unsuccessful answer of EC2's batch calls
// (UnsuccessfulItem, https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_UnsuccessfulItem.html).
func unsuccessfulItem(id, code, msg string) X {
	return E("item", T("resourceId", id), E("error", T("code", code), T("message", msg)))
}
