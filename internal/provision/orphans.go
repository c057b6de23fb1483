package provision

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2t "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
)

// Orphan is a database tagged as ours in an account and region that no spec names any more:
// its YAML file was deleted without a destroy.
type Orphan struct {
	Database  string          `json:"database"`
	Region    string          `json:"region"`
	Team      string          `json:"team,omitempty"`
	Owner     string          `json:"owner,omitempty"`
	Resources []OrphanedThing `json:"resources"`
}

// OrphanedThing is one resource found for an orphaned database.
type OrphanedThing struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	ID   string `json:"id"`
}

// FindOrphans lists the databases tagged rdsvalet.io/managed-by=rds-valet in the region the
// clients talk to whose name is not in known. It looks at the two resources every database
// has: the DB instance (DescribeDBInstances returns each instance's TagList) and the security
// group (DescribeSecurityGroups filtered on the tag), which is created first, so a database
// whose first apply stopped early is found too.
func FindOrphans(ctx context.Context, c Clients, region string, known map[string]bool) ([]Orphan, error) {
	byDB := map[string]*Orphan{}
	add := func(tags map[string]string, t OrphanedThing) {
		db := tags[TagDatabase]
		if tags[TagManagedBy] != ManagedByValue || db == "" || known[db] {
			return
		}
		o := byDB[db]
		if o == nil {
			o = &Orphan{Database: db, Region: region}
			byDB[db] = o
		}
		if o.Team == "" {
			o.Team, o.Owner = tags["team"], tags["owner"]
		}
		o.Resources = append(o.Resources, t)
	}
	in := &rds.DescribeDBInstancesInput{}
	for {
		out, err := c.RDS.DescribeDBInstances(ctx, in)
		if err != nil {
			return nil, awsErr("account", region, "rds:DescribeDBInstances", err)
		}
		for _, db := range out.DBInstances {
			tags := map[string]string{}
			for _, t := range db.TagList {
				tags[deref(t.Key)] = deref(t.Value)
			}
			add(tags, OrphanedThing{Kind: kindInstance, Name: deref(db.DBInstanceIdentifier), ID: deref(db.DBInstanceArn)})
		}
		if deref(out.Marker) == "" {
			break
		}
		in.Marker = out.Marker
	}
	sgIn := &ec2.DescribeSecurityGroupsInput{Filters: []ec2t.Filter{{Name: aws.String("tag:" + TagManagedBy), Values: []string{ManagedByValue}}}}
	for {
		out, err := c.EC2.DescribeSecurityGroups(ctx, sgIn)
		if err != nil {
			return nil, awsErr("account", region, "ec2:DescribeSecurityGroups", err)
		}
		for _, g := range out.SecurityGroups {
			tags := map[string]string{}
			for _, t := range g.Tags {
				tags[deref(t.Key)] = deref(t.Value)
			}
			add(tags, OrphanedThing{Kind: kindSG, Name: deref(g.GroupName), ID: deref(g.GroupId)})
		}
		if deref(out.NextToken) == "" {
			break
		}
		sgIn.NextToken = out.NextToken
	}
	res := make([]Orphan, 0, len(byDB))
	for _, db := range sortedKeys(byDB) {
		res = append(res, *byDB[db])
	}
	return res, nil
}
