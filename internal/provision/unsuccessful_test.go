package provision

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2t "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestClientTokenIsDeterministicShortAndParameterBound(t *testing.T) {
	a := clientToken("orders", "vpc-endpoint", 1, "vpc=v", "subnets=a,b")
	if a != clientToken("orders", "vpc-endpoint", 1, "subnets=a,b", "vpc=v") {
		t.Error("token depends on the order of its parts")
	}
	if a == clientToken("orders", "vpc-endpoint", 1, "vpc=v", "subnets=a,c") || a == clientToken("billing", "vpc-endpoint", 1, "vpc=v", "subnets=a,b") {
		t.Error("different requests share a token")
	}
	if g := clientToken("orders", "vpc-endpoint", 3, "vpc=v"); len(g) > 64 || !strings.HasSuffix(g, "-g3") {
		t.Errorf("generation token %q", g)
	}
}

func TestUnsuccessfulItemsBecomeErrors(t *testing.T) {
	items := []ec2t.UnsuccessfulItem{
		{ResourceId: aws.String("vpce-1"), Error: &ec2t.UnsuccessfulItemError{Code: aws.String("InvalidVpcEndpoint.NotFound"), Message: aws.String("gone")}},
		{ResourceId: aws.String("vpce-2"), Error: &ec2t.UnsuccessfulItemError{Code: aws.String("IncorrectState"), Message: aws.String("busy")}},
	}
	if oe := unsuccessful(kindEndpoint, "x", "ec2:DeleteVpcEndpoints", items[:1], "", "InvalidVpcEndpoint.NotFound"); oe != nil {
		t.Errorf("ignored code reported: %v", oe)
	}
	oe := unsuccessful(kindEndpoint, "x", "ec2:DeleteVpcEndpoints", items, "h", "InvalidVpcEndpoint.NotFound")
	if oe == nil || oe.Code != "IncorrectState" || !strings.Contains(oe.Error(), "vpce-2") || !strings.Contains(oe.Error(), "ec2:DeleteVpcEndpoints") {
		t.Errorf("got %v", oe)
	}
}
