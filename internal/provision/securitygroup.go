package provision

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2t "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// ---- security group -----------------------------------------------------------------------

// One security group is shared by the instance, the proxy and the NLB: a self-reference lets
// NLB -> proxy -> instance traffic flow; the spec's allowed groups and CIDRs reach all three.
type sgHandler struct{}

func (sgHandler) kind() string        { return kindSG }
func (sgHandler) immutable() []string { return []string{"vpc_id"} }

func (h sgHandler) desired(e *env) []*State {
	port := strconv.Itoa(int(e.spec.Port()))
	rules := []string{"tcp:" + port + ":self"}
	for _, g := range e.spec.Network.AllowedSecurityGroupIDs {
		rules = append(rules, "tcp:"+port+":"+g)
	}
	for _, c := range e.spec.Network.AllowedCIDRs {
		rules = append(rules, "tcp:"+port+":"+c)
	}
	return []*State{{Kind: kindSG, Name: baseName(e.spec), Attrs: map[string]string{"vpc_id": e.spec.Network.VPCID, "ingress": sortedJoin(rules)}, Tags: ownTags(e.spec)}}
}

func (h sgHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	name := baseName(e.spec)
	out, err := e.c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2t.Filter{
		{Name: aws.String("group-name"), Values: []string{name}}, {Name: aws.String("vpc-id"), Values: []string{e.spec.Network.VPCID}}}})
	if err != nil {
		return nil, awsErr(kindSG, name, "ec2:DescribeSecurityGroups", err)
	}
	var res []*State
	for _, g := range out.SecurityGroups {
		id := deref(g.GroupId)
		var rules []string
		for _, p := range g.IpPermissions {
			port := strconv.Itoa(int(deref(p.FromPort)))
			for _, pair := range p.UserIdGroupPairs {
				src := deref(pair.GroupId)
				if src == id {
					src = "self"
				}
				rules = append(rules, deref(p.IpProtocol)+":"+port+":"+src)
			}
			for _, r := range p.IpRanges {
				rules = append(rules, deref(p.IpProtocol)+":"+port+":"+deref(r.CidrIp))
			}
		}
		tags := map[string]string{}
		for _, t := range g.Tags {
			tags[deref(t.Key)] = deref(t.Value)
		}
		res = append(res, &State{Kind: kindSG, Name: deref(g.GroupName), ID: id, Status: "available",
			Attrs: map[string]string{"vpc_id": deref(g.VpcId), "ingress": sortedJoin(rules)}, Tags: tags, Out: map[string]string{"sg.id": id}})
	}
	return res, nil
}

func (h sgHandler) create(ctx context.Context, e *env, d *State) error {
	out, err := e.c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(d.Name), VpcId: aws.String(e.spec.Network.VPCID),
		Description:       aws.String("rds-valet: database " + e.spec.Name + " (instance, RDS Proxy, NLB)"),
		TagSpecifications: []ec2t.TagSpecification{{ResourceType: ec2t.ResourceTypeSecurityGroup, Tags: ec2Tags(d.Tags)}}})
	if err != nil {
		return awsErr(kindSG, d.Name, "ec2:CreateSecurityGroup", err)
	}
	id := deref(out.GroupId)
	return h.setRules(ctx, e.c.EC2, d.Name, id, splitList(d.Attrs["ingress"]), nil)
}

func (h sgHandler) setRules(ctx context.Context, c EC2API, name, id string, add, del []string) error {
	perm := func(rules []string) []ec2t.IpPermission {
		var ps []ec2t.IpPermission
		for _, r := range rules {
			parts := strings.SplitN(r, ":", 3)
			port, _ := strconv.Atoi(parts[1])
			p := ec2t.IpPermission{IpProtocol: aws.String(parts[0]), FromPort: aws.Int32(int32(port)), ToPort: aws.Int32(int32(port))}
			src := parts[2]
			switch {
			case src == "self":
				p.UserIdGroupPairs = []ec2t.UserIdGroupPair{{GroupId: aws.String(id)}}
			case strings.HasPrefix(src, "sg-"):
				p.UserIdGroupPairs = []ec2t.UserIdGroupPair{{GroupId: aws.String(src)}}
			default:
				p.IpRanges = []ec2t.IpRange{{CidrIp: aws.String(src)}}
			}
			ps = append(ps, p)
		}
		return ps
	}
	if len(add) > 0 {
		if _, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: perm(add)}); err != nil && !isCode(err, "InvalidPermission.Duplicate") {
			return awsErr(kindSG, name, "ec2:AuthorizeSecurityGroupIngress", err)
		}
	}
	if len(del) > 0 {
		if _, err := c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: perm(del)}); err != nil && !isCode(err, "InvalidPermission.NotFound") {
			return awsErr(kindSG, name, "ec2:RevokeSecurityGroupIngress", err)
		}
	}
	return nil
}

func (h sgHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	add, del := setDiff(splitList(d.Attrs["ingress"]), splitList(o.Attrs["ingress"]))
	if err := h.setRules(ctx, e.c.EC2, d.Name, o.ID, add, del); err != nil {
		return err
	}
	return ec2Retag(ctx, e.c.EC2, kindSG, d.Name, o.ID, tagChanges(fields, d))
}

func (h sgHandler) delete(ctx context.Context, e *env, o *State) error {
	// The NLB's and proxy's network interfaces outlive them by minutes: until they are
	// released, AWS answers DependencyViolation.
	return e.p.retryEventual(ctx, kindSG, o.Name, 20*time.Minute, func() error {
		_, err := e.c.EC2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(o.ID)})
		switch {
		case err == nil, isCode(err, "InvalidGroup.NotFound"):
			return nil
		case isCode(err, "DependencyViolation"):
			return errRetry{awsErr(kindSG, o.Name, "ec2:DeleteSecurityGroup", err)}
		}
		return awsErr(kindSG, o.Name, "ec2:DeleteSecurityGroup", err)
	})
}

func (sgHandler) ready(*State) (bool, error) { return true, nil }
func (sgHandler) export(e *env, o *State)    { e.out["sg.id"] = o.ID }

func ec2Tags(m map[string]string) []ec2t.Tag {
	var out []ec2t.Tag
	for _, k := range sortedKeys(m) {
		out = append(out, ec2t.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

type tagger interface {
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

func ec2Retag(ctx context.Context, c tagger, kind, name, id string, tags map[string]string) error {
	if len(tags) == 0 {
		return nil
	}
	_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: ec2Tags(tags)})
	return awsErr(kind, name, "ec2:CreateTags", err)
}
