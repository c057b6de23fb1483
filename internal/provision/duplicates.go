package provision

import (
	"context"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2t "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"go.uber.org/zap"
)

// Resources found by tag can exist twice (made before ClientToken was used, or by hand).
// Describe lists come in no particular order, so which one is kept must not depend on list
// position: the one kept gets the resource's name, the others "NAME#ID" and are planned for
// deletion.

// keepOldest keeps the oldest consumer endpoint (CreationTimestamp, then id).
func keepOldest(e *env, kind string, res []*State) []*State {
	if len(res) < 2 {
		return res
	}
	sort.SliceStable(res, func(i, j int) bool {
		a, b := res[i].Out["vpce.created"], res[j].Out["vpce.created"]
		if a != b {
			return a < b
		}
		return res[i].ID < res[j].ID
	})
	return markDuplicates(e, kind, res, "the oldest")
}

// keepOneService keeps the endpoint service consumers use: the one with the most Available or
// PendingAcceptance connections (endpoint services carry no creation time), then the lowest id.
func keepOneService(ctx context.Context, e *env, res []*State) ([]*State, error) {
	if len(res) < 2 {
		return res, nil
	}
	conns := map[string]int{}
	for _, r := range res {
		out, err := e.c.EC2.DescribeVpcEndpointConnections(ctx, &ec2.DescribeVpcEndpointConnectionsInput{
			Filters: []ec2t.Filter{{Name: aws.String("service-id"), Values: []string{r.ID}}}})
		if err != nil {
			return nil, awsErr(kindService, r.Name, "ec2:DescribeVpcEndpointConnections", err)
		}
		for _, c := range out.VpcEndpointConnections {
			switch strings.ToLower(string(c.VpcEndpointState)) {
			case "available", "pendingacceptance", "pending":
				conns[r.ID]++
			}
		}
	}
	sort.SliceStable(res, func(i, j int) bool {
		if a, b := conns[res[i].ID], conns[res[j].ID]; a != b {
			return a > b
		}
		return res[i].ID < res[j].ID
	})
	return markDuplicates(e, kindService, res, "the one with the most endpoint connections"), nil
}

func markDuplicates(e *env, kind string, res []*State, rule string) []*State {
	for _, r := range res[1:] {
		e.p.log.Warn("duplicate found: keeping "+rule+", planning the other for deletion", zap.String("kind", kind),
			zap.String("keep", res[0].ID), zap.String("delete", r.ID))
		r.Name = r.Name + "#" + r.ID
	}
	return res
}
