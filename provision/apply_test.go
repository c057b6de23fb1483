package provision_test

import (
	"context"
	"errors"
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
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"go.uber.org/zap/zaptest"

	"github.com/rdsvalet/rds-valet/provision"
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

func newProvisioner(t *testing.T, fake *fakeaws.Server, spec *provision.Spec) *provision.Provisioner {
	t.Helper()
	cfg := aws.Config{Region: spec.Region, BaseEndpoint: aws.String(fake.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDUNIT", "unit-secret", ""),
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 5; o.MaxBackoff = time.Millisecond })
		}}
	ec2c := ec2.NewFromConfig(cfg)
	p, err := provision.New(provision.Config{Spec: spec, PollInterval: time.Second, MaxPollInterval: 10 * time.Second, WaitTimeout: time.Hour},
		provision.Deps{Logger: zaptest.NewLogger(t), Clock: &stepClock{now: time.Unix(1_800_000_000, 0)}, Clients: provision.Clients{
			RDS: rds.NewFromConfig(cfg), IAM: iam.NewFromConfig(cfg), EC2: ec2c, ELB: elb.NewFromConfig(cfg),
			Secrets: secretsmanager.NewFromConfig(cfg), STS: sts.NewFromConfig(cfg),
			ConsumerEC2: func(context.Context, string) (provision.ConsumerEC2API, error) { return ec2c, nil },
		}})
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
	return fake
}

func exampleSpec(t *testing.T) *provision.Spec {
	t.Helper()
	s, err := provision.LoadSpec("../docs/examples/orders.yaml")
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
	if c, u, d := plan.Counts(); c != 14 || u != 0 || d != 0 {
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
