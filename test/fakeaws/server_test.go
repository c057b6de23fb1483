package fakeaws

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

func client(url, akid, secret string) *sts.Client {
	return sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(url),
		Credentials: credentials.NewStaticCredentialsProvider(akid, secret, "")})
}

func TestSigV4IsVerified(t *testing.T) {
	s, err := Start(Config{AccountID: "111122223333", Region: "us-east-1", AccessKey: "AKIDTEST", SecretKey: "right"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	out, err := client(s.URL, "AKIDTEST", "right").GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || aws.ToString(out.Account) != "111122223333" {
		t.Fatalf("good signature: %v %v", out, err)
	}
	for _, tc := range []struct{ akid, secret, code string }{
		{"AKIDTEST", "wrong", "SignatureDoesNotMatch"},
		{"AKIDOTHER", "right", "InvalidClientTokenId"},
	} {
		_, err := client(s.URL, tc.akid, tc.secret).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != tc.code {
			t.Errorf("%s/%s: got %v, want %s", tc.akid, tc.secret, err, tc.code)
		}
	}
	if s.AuthFailures() != 2 {
		t.Errorf("auth failures %d", s.AuthFailures())
	}
}

func TestQueryListDecoding(t *testing.T) {
	m := map[string]string{
		"SubnetIds.SubnetIdentifier.2": "b", "SubnetIds.SubnetIdentifier.1": "a", "Ids.member.10": "z", "Ids.member.9": "y",
		"TagSpecification.1.ResourceType": "security-group", "TagSpecification.1.Tag.2.Key": "k2", "TagSpecification.1.Tag.1.Key": "k1",
	}
	if got := fstrs(m, "SubnetIds"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("strs %v", got)
	}
	if got := fstrs(m, "Ids"); len(got) != 2 || got[0] != "y" {
		t.Errorf("numeric order %v", got)
	}
	ts := fstructs(m, "TagSpecification")
	if len(ts) != 1 || ts[0]["ResourceType"] != "security-group" {
		t.Fatalf("structs %v", ts)
	}
	if tags := fstructs(ts[0], "Tag"); len(tags) != 2 || tags[0]["Key"] != "k1" || tags[1]["Key"] != "k2" {
		t.Errorf("nested %v", tags)
	}
}
