package fakeaws

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"
)

func TestPodIdentityAssociationsFollowEKS(t *testing.T) {
	s, err := Start(Config{AccountID: "111122223333", Region: "us-east-1", AccessKey: "AKIDTEST", SecretKey: "right"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	c := eks.New(eks.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.URL), Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "right", "")})
	in := func(cluster, sa, role, token string) *eks.CreatePodIdentityAssociationInput {
		i := &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String(cluster), Namespace: aws.String("orders"), ServiceAccount: aws.String(sa),
			RoleArn: aws.String(role), Tags: map[string]string{"team": "payments"}}
		if token != "" {
			i.ClientRequestToken = aws.String(token)
		}
		return i
	}
	role := "arn:aws:iam::111122223333:role/app"
	if _, err := c.CreatePodIdentityAssociation(ctx, in("prod", "api", role, "")); code(err) != "ResourceNotFoundException" {
		t.Fatalf("no cluster: %v", err)
	}
	s.AddEKSCluster("prod")
	a, err := c.CreatePodIdentityAssociation(ctx, in("prod", "api", role, "tok1"))
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(a.Association.AssociationId)
	again, err := c.CreatePodIdentityAssociation(ctx, in("prod", "api", role, "tok1"))
	if err != nil || aws.ToString(again.Association.AssociationId) != id {
		t.Errorf("same client token: %v %v", again, err)
	}
	if _, err := c.CreatePodIdentityAssociation(ctx, in("prod", "api", role, "tok2")); code(err) != "ResourceInUseException" {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := c.CreatePodIdentityAssociation(ctx, in("prod", "web", "arn:aws:iam::444455556666:role/app", "")); code(err) != "InvalidParameterException" {
		t.Errorf("role of another account: %v", err)
	}
	if _, err := c.CreatePodIdentityAssociation(ctx, in("prod", "web", role, "")); err != nil {
		t.Fatal(err)
	}
	page, err := c.ListPodIdentityAssociations(ctx, &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("prod"), MaxResults: aws.Int32(1)})
	if err != nil || len(page.Associations) != 1 || page.NextToken == nil {
		t.Fatalf("page 1: %+v %v", page, err)
	}
	page2, err := c.ListPodIdentityAssociations(ctx, &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("prod"), MaxResults: aws.Int32(1), NextToken: page.NextToken})
	if err != nil || len(page2.Associations) != 1 || page2.NextToken != nil {
		t.Fatalf("page 2: %+v %v", page2, err)
	}
	f, err := c.ListPodIdentityAssociations(ctx, &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("prod"), ServiceAccount: aws.String("web")})
	if err != nil || len(f.Associations) != 1 || aws.ToString(f.Associations[0].ServiceAccount) != "web" {
		t.Errorf("filter: %+v %v", f, err)
	}
	d, err := c.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String("prod"), AssociationId: aws.String(id)})
	if err != nil || aws.ToString(d.Association.RoleArn) != role || d.Association.Tags["team"] != "payments" || d.Association.CreatedAt == nil {
		t.Errorf("describe: %+v %v", d, err)
	}
	if _, err := c.UpdatePodIdentityAssociation(ctx, &eks.UpdatePodIdentityAssociationInput{ClusterName: aws.String("prod"), AssociationId: aws.String(id),
		RoleArn: aws.String("arn:aws:iam::111122223333:role/other")}); err != nil {
		t.Error(err)
	}
	if _, err := c.TagResource(ctx, &eks.TagResourceInput{ResourceArn: d.Association.AssociationArn, Tags: map[string]string{"owner": "x"}}); err != nil {
		t.Error(err)
	}
	if got := s.PodIdentityAssociations()[0]; got.RoleARN != "arn:aws:iam::111122223333:role/other" || got.Tags["owner"] != "x" {
		t.Errorf("after update and tag: %+v", got)
	}
	if _, err := c.DeletePodIdentityAssociation(ctx, &eks.DeletePodIdentityAssociationInput{ClusterName: aws.String("prod"), AssociationId: aws.String(id)}); err != nil {
		t.Error(err)
	}
	if _, err := c.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String("prod"), AssociationId: aws.String(id)}); code(err) != "ResourceNotFoundException" {
		t.Errorf("describe deleted: %v", err)
	}
}
