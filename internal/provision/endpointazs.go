package provision

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// checkEndpointAZs refuses, before CreateVpcEndpoint, consumer subnets in AZs the endpoint
// service does not serve. AZ names differ between accounts, so the match is by AZ ID: the
// service offers the AZ IDs of its NLB's subnets (DescribeVpcEndpointServices,
// ServiceDetails.AvailabilityZoneIds) and each consumer subnet has one (DescribeSubnets).
func checkEndpointAZs(ctx context.Context, c ConsumerEC2API, name, service string, subnets []string) error {
	svc, err := c.DescribeVpcEndpointServices(ctx, &ec2.DescribeVpcEndpointServicesInput{ServiceNames: []string{service}})
	if err != nil {
		return awsErr(kindEndpoint, name, "ec2:DescribeVpcEndpointServices (consumer)", err)
	}
	if len(svc.ServiceDetails) == 0 {
		return fmt.Errorf("vpc-endpoint %q: ec2:DescribeVpcEndpointServices (consumer) does not show %s; check privatelink.allowed_principals lets the consumer account (or its role) in", name, service)
	}
	// AZ IDs when AWS gives them; otherwise the AZ names, which DescribeVpcEndpointServices
	// reports in the caller's (the consumer's) own naming. Neither: leave it to CreateVpcEndpoint.
	byID, served := true, map[string]bool{}
	for _, id := range svc.ServiceDetails[0].AvailabilityZoneIds {
		served[id] = true
	}
	if len(served) == 0 {
		byID = false
		for _, n := range svc.ServiceDetails[0].AvailabilityZones {
			served[n] = true
		}
	}
	if len(served) == 0 {
		return nil
	}
	subs, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: subnets})
	if err != nil {
		return awsErr(kindEndpoint, name, "ec2:DescribeSubnets (consumer)", err)
	}
	var bad []string
	for _, s := range subs.Subnets {
		key := deref(s.AvailabilityZone)
		if byID {
			key = deref(s.AvailabilityZoneId)
		}
		if id := deref(s.AvailabilityZoneId); !served[key] {
			bad = append(bad, fmt.Sprintf("%s (%s, %s)", deref(s.SubnetId), deref(s.AvailabilityZone), id))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	what := "AZ IDs"
	if !byID {
		what = "AZs (consumer account's names)"
	}
	return fmt.Errorf("vpc-endpoint %q: privatelink.consumer.subnet_ids %s are in Availability Zones the endpoint service %s does not serve; it serves %s %s "+
		"(those of the NLB's subnets, matched by AZ ID because AZ names differ between accounts); use consumer subnets in those AZs, or add provider subnets in the missing AZs to network.subnet_ids",
		name, strings.Join(bad, ", "), service, what, strings.Join(sortedKeys(served), ", "))
}
