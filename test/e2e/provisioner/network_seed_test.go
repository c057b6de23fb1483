package provisioner_test

import (
	"fmt"

	"github.com/rdsvalet/rds-valet/test/fakeaws"
)

// consumerAccount is declared in identity_test.go.

// seedExampleSubnets places the subnets docs/examples/orders.yaml names: the provider's in
// us-east-1a and us-east-1b of our account, the consumer's in the consumer account's AZs with
// the same AZ IDs (AZ names differ between accounts; the fake maps them like AWS does).
func seedExampleSubnets(fake *fakeaws.Server, consumer string) {
	for i, az := range []string{"us-east-1a", "us-east-1b"} {
		fake.SeedSubnet(account, fmt.Sprintf("subnet-0a1b2c3d4e5f6000%d", i+1), "vpc-0a1b2c3d4e5f60718", az)
		fake.SeedSubnet(consumer, fmt.Sprintf("subnet-0f1e2d3c4b5a6000%d", i+1), "vpc-0f1e2d3c4b5a69788",
			fakeaws.AZName(region, consumer, fakeaws.AZID(region, account, az)))
	}
}
