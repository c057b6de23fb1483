package provision_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"go.uber.org/zap/zaptest"

	"github.com/rdsvalet/rds-valet/internal/provision"
	"github.com/rdsvalet/rds-valet/test/fakeaws"
)

// stepClock never sleeps: After fires at once and moves Now forward by d, so waiters run
// through their backoff schedule instantly and wait timeouts are still enforced.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func clientsOf(t *testing.T, fake *fakeaws.Server) provision.Clients {
	t.Helper()
	cfg := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(fake.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDUNIT", "unit-secret", ""),
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 5; o.MaxBackoff = time.Millisecond })
		}}
	ec2c := ec2.NewFromConfig(cfg)
	return provision.Clients{
		RDS: rds.NewFromConfig(cfg), IAM: iam.NewFromConfig(cfg), EC2: ec2c, ELB: elb.NewFromConfig(cfg),
		Secrets: secretsmanager.NewFromConfig(cfg), STS: sts.NewFromConfig(cfg), KMS: kms.NewFromConfig(cfg),
		RDSIn: func(_ context.Context, region string) (provision.RDSAPI, error) {
			cc := cfg.Copy()
			cc.Region = region
			return rds.NewFromConfig(cc), nil
		},
		ConsumerEC2: func(context.Context, string) (provision.ConsumerEC2API, error) { return ec2c, nil },
	}
}

func newProvisioner(t *testing.T, fake *fakeaws.Server, spec *provision.Spec) *provision.Provisioner {
	t.Helper()
	p, err := provision.New(provision.Config{Spec: spec, PollInterval: time.Second, MaxPollInterval: 10 * time.Second, WaitTimeout: time.Hour},
		provision.Deps{Logger: zaptest.NewLogger(t), Clock: &stepClock{now: time.Unix(1_800_000_000, 0)}, Clients: clientsOf(t, fake)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func startFake(t *testing.T, readyAfter int) *fakeaws.Server {
	t.Helper()
	fake, err := fakeaws.Start(fakeaws.Config{AccountID: "111122223333", Region: "us-east-1", AccessKey: "AKIDUNIT", SecretKey: "unit-secret", ReadyAfter: readyAfter})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	fake.SeedSecurityGroup("sg-0a1b2c3d4e5f60999", "eks-pods", "vpc-0a1b2c3d4e5f60718", nil)
	// The example's subnets; the consumer is in the same account here.
	for i, az := range []string{"us-east-1a", "us-east-1b"} {
		fake.SeedSubnet("111122223333", fmt.Sprintf("subnet-0a1b2c3d4e5f6000%d", i+1), "vpc-0a1b2c3d4e5f60718", az)
		fake.SeedSubnet("111122223333", fmt.Sprintf("subnet-0f1e2d3c4b5a6000%d", i+1), "vpc-0f1e2d3c4b5a69788", az)
	}
	// The cluster's IAM OIDC provider exists, as eksctl or the EKS console made it.
	fake.SeedOIDCProvider("https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE", "sts.amazonaws.com")
	return fake
}

func exampleSpec(t *testing.T) *provision.Spec {
	t.Helper()
	s, err := provision.LoadSpec("../../docs/examples/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.PrivateLink.Consumer.AssumeRoleARN = "" // same account in this test
	s.PrivateLink.AllowedPrincipals = []string{"arn:aws:iam::111122223333:root"}
	return s
}

func TestApplyConvergesInProcess(t *testing.T) {
	fake := startFake(t, 3)
	p := newProvisioner(t, fake, exampleSpec(t))
	ctx := context.Background()
	plan, out, err := p.Apply(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c, u, d := plan.Counts(); c != 15 || u != 0 || d != 0 {
		t.Errorf("first apply: %d/%d/%d", c, u, d)
	}
	if len(out.Paths) != 3 || out.Paths[0].Name != "privatelink" || len(out.Users) != 2 || !strings.HasPrefix(out.Users[0].RoleARN, "arn:aws:iam::111122223333:role/rdsvalet/orders/irsa/") {
		t.Errorf("outputs: %+v", out)
	}
	plan, err = p.Plan(ctx)
	if err != nil || !plan.Empty() {
		t.Fatalf("second plan: %v %+v", err, plan)
	}
	if _, err := p.Destroy(ctx, provision.DestroyOptions{}); !errors.Is(err, provision.ErrDeletionProtected) {
		t.Fatalf("destroy under protection: %v", err)
	}
	if _, err := p.Destroy(ctx, provision.DestroyOptions{ForceDeletionProtection: true}); err != nil {
		t.Fatal(err)
	}
	for k, n := range fake.Counts() {
		if n != 0 && k != "security-group" {
			t.Errorf("%s left: %d", k, n)
		}
	}
}

func TestWaitTimeoutIsBounded(t *testing.T) {
	fake := startFake(t, 1_000_000) // the instance never becomes available
	spec := exampleSpec(t)
	p := newProvisioner(t, fake, spec)
	_, _, err := p.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), `db-instance "orders": still "creating" after 1h0m0s`) {
		t.Fatalf("want a bounded wait, got %v", err)
	}
}

func TestAccessDeniedIsAnOpError(t *testing.T) {
	fake := startFake(t, 1)
	fake.InjectError("iam", "CreateRole", "AccessDenied", "not authorized to perform: iam:CreateRole", 403, 10)
	p := newProvisioner(t, fake, exampleSpec(t))
	_, _, err := p.Apply(context.Background())
	var oe *provision.OpError
	if !errors.As(err, &oe) || oe.Call != "iam:CreateRole" || oe.Code != "AccessDenied" || oe.Kind != "iam-role" || !strings.Contains(oe.Hint, "IAM permissions") {
		t.Fatalf("got %#v", err)
	}
}

func TestEveryKindRepairsTagDriftAndFollowsSpecChanges(t *testing.T) {
	fake := startFake(t, 2)
	spec := exampleSpec(t)
	p := newProvisioner(t, fake, spec)
	ctx := context.Background()
	if _, _, err := p.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	fake.TamperTag("team", "someone-else")
	plan, err := p.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, c := range plan.Changes {
		if c.Action == provision.ActionUpdate {
			if len(c.Fields) != 1 || c.Fields[0].Field != "tags.team" {
				t.Errorf("%s %s: %+v", c.Kind, c.Name, c.Fields)
			}
			kinds[c.Kind] = true
		}
	}
	// Every taggable kind: all but the proxy target.
	if len(kinds) != 12 {
		t.Errorf("tag drift planned on %d kinds: %v", len(kinds), kinds)
	}
	if _, _, err := p.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if plan, err := p.Plan(ctx); err != nil || !plan.Empty() {
		t.Fatalf("after repair: %v %+v", err, plan)
	}

	// Spec changes on several kinds at once plan exactly those fields.
	spec.Network.AllowedCIDRs = []string{"10.30.0.0/16"}
	spec.PrivateLink.AllowedPrincipals = append(spec.PrivateLink.AllowedPrincipals, "arn:aws:iam::444455556666:root")
	spec.Instance.BackupRetentionDays = 14
	spec.Instance.MultiAZ = false
	spec.Access.ServiceAccounts = spec.Access.ServiceAccounts[:1]
	plan, err = p.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := changeLines(plan, false)
	// The proxy role's rds-db:connect list follows the ServiceAccounts (end-to-end IAM).
	want := "update security-group ingress|update db-instance backup_retention_days+multi_az|update iam-role policy|update endpoint-service allowed_principals|delete iam-role "
	if strings.Join(got, "|") != want {
		t.Errorf("plan:\n got %s\nwant %s", strings.Join(got, "|"), want)
	}
	if _, _, err := p.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if plan, err := p.Plan(ctx); err != nil || !plan.Empty() {
		t.Fatalf("after spec change: %v %+v", err, plan)
	}
	if len(fake.RoleNames()) != 2 {
		t.Errorf("roles %v", fake.RoleNames())
	}

	// sync-targets and status, in process.
	fake.SetProxyIPs("orders", []string{"10.0.9.9"})
	sp, err := p.SyncTargets(ctx)
	if err != nil || sp.Empty() {
		t.Fatalf("sync-targets: %v %+v", err, sp)
	}
	if got := fake.TargetIPs("rdsvalet-orders"); len(got) != 1 || got[0] != "10.0.9.9" {
		t.Errorf("targets %v", got)
	}
	states, out, err := p.Status(ctx)
	if err != nil || len(states) != 14 || len(out.Paths) != 3 {
		t.Errorf("status: %v %d %+v", err, len(states), out)
	}
}
