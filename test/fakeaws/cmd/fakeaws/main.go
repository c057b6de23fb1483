// Command fakeaws runs the AWS stand-in on loopback so the provisioner can be tried by hand:
//
//	go run ./test/fakeaws/cmd/fakeaws &   # prints the env to export
//	provisioner apply -f docs/examples/orders.yaml
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rdsvalet/rds-valet/test/fakeaws"
)

func main() {
	account := flag.String("account", "111122223333", "account id of the static credentials")
	region := flag.String("region", "us-east-1", "region")
	ready := flag.Int("ready-after", 2, "Describe calls before a resource settles")
	seed := flag.String("seed-sg", "sg-0a1b2c3d4e5f60999", "security group to create up front (the example spec allows it in), with the example's subnets; empty = none")
	alias := flag.String("seed-kms-alias", "", "create a KMS key with this alias (alias/NAME) up front, for a spec's kms_key_id; empty = none")
	flag.Parse()
	s, err := fakeaws.Start(fakeaws.Config{AccountID: *account, Region: *region, AccessKey: "AKIDFAKEAWS", SecretKey: "fakeaws-secret", ReadyAfter: *ready})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *seed != "" {
		s.SeedSecurityGroup(*seed, "seeded", "vpc-0a1b2c3d4e5f60718", nil)
		// The example spec's subnets (VPCs and subnets are made outside the provisioner); the
		// consumer's are in the same account here, as the README's sed makes it.
		for i, az := range []string{*region + "a", *region + "b"} {
			s.SeedSubnet(*account, fmt.Sprintf("subnet-0a1b2c3d4e5f6000%d", i+1), "vpc-0a1b2c3d4e5f60718", az)
			s.SeedSubnet(*account, fmt.Sprintf("subnet-0f1e2d3c4b5a6000%d", i+1), "vpc-0f1e2d3c4b5a69788", az)
		}
	}
	if *alias != "" {
		_, arn := s.SeedKMSKey(*alias)
		fmt.Fprintf(os.Stderr, "KMS key %s (%s)\n", arn, *alias)
	}
	fmt.Printf("export AWS_ENDPOINT_URL=%s AWS_ACCESS_KEY_ID=AKIDFAKEAWS AWS_SECRET_ACCESS_KEY=fakeaws-secret AWS_REGION=%s AWS_EC2_METADATA_DISABLED=true\n", s.URL, *region)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	_ = s.Close()
}
