package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
)

// EKSAPI is what the EKS Pod Identity associations need.
type EKSAPI interface {
	CreatePodIdentityAssociation(context.Context, *eks.CreatePodIdentityAssociationInput, ...func(*eks.Options)) (*eks.CreatePodIdentityAssociationOutput, error)
	ListPodIdentityAssociations(context.Context, *eks.ListPodIdentityAssociationsInput, ...func(*eks.Options)) (*eks.ListPodIdentityAssociationsOutput, error)
	DescribePodIdentityAssociation(context.Context, *eks.DescribePodIdentityAssociationInput, ...func(*eks.Options)) (*eks.DescribePodIdentityAssociationOutput, error)
	UpdatePodIdentityAssociation(context.Context, *eks.UpdatePodIdentityAssociationInput, ...func(*eks.Options)) (*eks.UpdatePodIdentityAssociationOutput, error)
	DeletePodIdentityAssociation(context.Context, *eks.DeletePodIdentityAssociationInput, ...func(*eks.Options)) (*eks.DeletePodIdentityAssociationOutput, error)
	TagResource(context.Context, *eks.TagResourceInput, ...func(*eks.Options)) (*eks.TagResourceOutput, error)
}

const kindPodIdentity = "pod-identity-association"

// podIdentityHandler binds each ServiceAccount to its role with an EKS Pod Identity
// association in access.cluster_name (identity: pod-identity). Associations are named
// NAMESPACE/SERVICEACCOUNT and owned by tag like everything else; one of ours whose
// ServiceAccount left the spec is deleted. Without a cluster name there is nothing to look at.
type podIdentityHandler struct{}

func (podIdentityHandler) kind() string        { return kindPodIdentity }
func (podIdentityHandler) immutable() []string { return nil }

func (podIdentityHandler) desired(e *env) []*State {
	if !e.spec.Access.podIdentity() {
		return nil
	}
	var out []*State
	for _, sa := range e.spec.Access.ServiceAccounts {
		out = append(out, &State{Kind: kindPodIdentity, Name: sa.Namespace + "/" + sa.Name, Tags: ownTags(e.spec),
			Attrs: map[string]string{"role_arn": e.get("role." + irsaRoleName(e.spec, sa) + ".arn")}})
	}
	return out
}

func (podIdentityHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	cluster := e.spec.Access.ClusterName
	if cluster == "" {
		return nil, nil
	}
	if e.c.EKS == nil {
		return nil, errors.New("pod-identity-association: no EKS client configured")
	}
	var res []*State
	var next *string
	for {
		out, err := e.c.EKS.ListPodIdentityAssociations(ctx, &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String(cluster), NextToken: next})
		if err != nil {
			return nil, awsErr(kindPodIdentity, cluster, "eks:ListPodIdentityAssociations", err)
		}
		for _, a := range out.Associations {
			name := deref(a.Namespace) + "/" + deref(a.ServiceAccount)
			d, err := e.c.EKS.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String(cluster), AssociationId: a.AssociationId})
			if isCode(err, "ResourceNotFoundException") {
				continue // deleted between the list and the describe
			}
			if err != nil {
				return nil, awsErr(kindPodIdentity, name, "eks:DescribePodIdentityAssociation", err)
			}
			as := d.Association
			res = append(res, &State{Kind: kindPodIdentity, Name: name, ID: deref(as.AssociationId), Status: "available",
				Tags: as.Tags, Attrs: map[string]string{"role_arn": deref(as.RoleArn)}, Out: map[string]string{"arn": deref(as.AssociationArn)}})
		}
		if out.NextToken == nil {
			return res, nil
		}
		next = out.NextToken
	}
}

func (podIdentityHandler) create(ctx context.Context, e *env, d *State) error {
	ns, sa := splitName(d.Name)
	// A token derived from what is created: an SDK retry of a create that AWS did complete
	// gets the same association back instead of ResourceInUseException.
	h := sha256.Sum256([]byte(e.spec.Name + "|" + d.Name + "|" + d.Attrs["role_arn"]))
	_, err := e.c.EKS.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String(e.spec.Access.ClusterName),
		Namespace: aws.String(ns), ServiceAccount: aws.String(sa), RoleArn: aws.String(d.Attrs["role_arn"]), Tags: d.Tags,
		ClientRequestToken: aws.String(hex.EncodeToString(h[:16]))})
	return awsErr(kindPodIdentity, d.Name, "eks:CreatePodIdentityAssociation", err)
}

func (podIdentityHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	for _, f := range fields {
		if f.Field == "role_arn" {
			_, err := e.c.EKS.UpdatePodIdentityAssociation(ctx, &eks.UpdatePodIdentityAssociationInput{ClusterName: aws.String(e.spec.Access.ClusterName),
				AssociationId: aws.String(o.ID), RoleArn: aws.String(f.To)})
			if err != nil {
				return awsErr(kindPodIdentity, d.Name, "eks:UpdatePodIdentityAssociation", err)
			}
		}
	}
	if tags := tagChanges(fields, d); len(tags) > 0 {
		_, err := e.c.EKS.TagResource(ctx, &eks.TagResourceInput{ResourceArn: aws.String(o.Out["arn"]), Tags: tags})
		return awsErr(kindPodIdentity, d.Name, "eks:TagResource", err)
	}
	return nil
}

func (podIdentityHandler) delete(ctx context.Context, e *env, o *State) error {
	_, err := e.c.EKS.DeletePodIdentityAssociation(ctx, &eks.DeletePodIdentityAssociationInput{ClusterName: aws.String(e.spec.Access.ClusterName), AssociationId: aws.String(o.ID)})
	if isCode(err, "ResourceNotFoundException") {
		return nil
	}
	return awsErr(kindPodIdentity, o.Name, "eks:DeletePodIdentityAssociation", err)
}

func (podIdentityHandler) ready(*State) (bool, error) { return true, nil }
func (podIdentityHandler) export(*env, *State)        {}

func splitName(n string) (ns, sa string) {
	for i := 0; i < len(n); i++ {
		if n[i] == '/' {
			return n[:i], n[i+1:]
		}
	}
	return n, ""
}
