package fakeaws

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2t "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestEC2TagsDescribeAndConditionalDelete(t *testing.T) {
	s, err := Start(Config{AccountID: "111122223333", Region: "us-east-1", AccessKey: "AKIDTEST", SecretKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.URL), Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "k", "")})
	ctx := context.Background()
	id := s.SeedSecurityGroup("", "g", "vpc-1", map[string]string{"lease": "a:1", "team": "x"})
	s.SeedSecurityGroup("", "other", "vpc-1", map[string]string{"lease": "z:9"})
	describe := func() map[string]string {
		out, err := c.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2t.Filter{
			{Name: aws.String("resource-id"), Values: []string{id}}, {Name: aws.String("key"), Values: []string{"lease"}}}})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, tg := range out.Tags {
			if aws.ToString(tg.ResourceId) != id || tg.ResourceType != ec2t.ResourceTypeSecurityGroup {
				t.Errorf("tag of another resource: %+v", tg)
			}
			got[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
		}
		return got
	}
	if got := describe(); len(got) != 1 || got["lease"] != "a:1" {
		t.Fatalf("describe: %v", got)
	}
	del := func(v *string) {
		if _, err := c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []ec2t.Tag{{Key: aws.String("lease"), Value: v}}}); err != nil {
			t.Fatal(err)
		}
	}
	del(aws.String("b:2")) // another value: kept
	if got := describe(); got["lease"] != "a:1" {
		t.Fatalf("a non-matching value deleted the tag: %v", got)
	}
	del(aws.String("")) // the empty value matches only an empty value
	if got := describe(); got["lease"] != "a:1" {
		t.Fatalf("an empty value deleted the tag: %v", got)
	}
	del(aws.String("a:1"))
	if got := describe(); len(got) != 0 {
		t.Fatalf("a matching value kept the tag: %v", got)
	}
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []ec2t.Tag{{Key: aws.String("lease"), Value: aws.String("c:3")}}}); err != nil {
		t.Fatal(err)
	}
	del(nil) // no value: whatever it is
	if got := describe(); len(got) != 0 {
		t.Fatalf("a value-less delete kept the tag: %v", got)
	}
	if _, err := c.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2t.Filter{{Name: aws.String("nonsense"), Values: []string{"x"}}}}); err == nil {
		t.Error("an unknown filter was accepted")
	}
	var last Call
	for _, c := range s.Calls() {
		if c.Action == "DeleteTags" {
			last = c
		}
	}
	if !last.Mutates || len(last.TagKeys) != 1 || last.TagKeys[0] != "lease" {
		t.Errorf("call log: %+v", last)
	}
}
