package provision_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/rdsvalet/rds-valet/internal/provision"
)

// leaseClock is a stepClock for the waiters, except that the lease's renewal timer (the only
// wait of leaseEvery) fires only when the test says so.
type leaseClock struct {
	stepClock
	mu    sync.Mutex
	ticks chan time.Time
}

const leaseTTL = 3 * time.Hour
const leaseEvery = leaseTTL / 3

func (c *leaseClock) After(d time.Duration) <-chan time.Time {
	if d == leaseEvery {
		return c.ticks
	}
	return c.stepClock.After(d)
}

func (c *leaseClock) tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stepClock.After(leaseEvery) // move Now on
	c.ticks <- c.Now()
}

func TestLeaseIsRenewedAndALostLeaseStopsTheRun(t *testing.T) {
	fake := startFake(t, 2)
	spec := exampleSpec(t)
	clock := &leaseClock{stepClock: stepClock{now: time.Unix(1_800_000_000, 0)}, ticks: make(chan time.Time)}
	newP := func() *provision.Provisioner {
		p, err := provision.New(provision.Config{Spec: spec, PollInterval: time.Second, MaxPollInterval: 10 * time.Second, WaitTimeout: time.Hour,
			LeaseHolder: "unit-a", LeaseTTL: leaseTTL},
			provision.Deps{Logger: zaptest.NewLogger(t), Clock: clock, Clients: clientsOf(t, fake)})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx := context.Background()
	plan, _, err := newP().Apply(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := plan.Counts(); c != 15 {
		t.Errorf("first apply created %d, want 15 (the security group the lease created counts)", c)
	}
	if tags := fake.SecurityGroupTags("rdsvalet-orders"); tags[provision.TagLease] != "" {
		t.Fatalf("lease not released: %v", tags)
	}

	// A second apply is held inside ModifyDBInstance while the test renews and then steals
	// its lease.
	spec.Instance.Class = "db.r6g.large"
	hit, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fake.OnCall("ModifyDBInstance", func() { once.Do(func() { close(hit); <-release }) })
	wrote := make(chan struct{}, 8)
	fake.OnCall("CreateTags", func() { wrote <- struct{}{} })
	done := make(chan error, 1)
	go func() { _, _, err := newP().Apply(ctx); done <- err }()
	select {
	case <-hit:
	case err := <-done:
		t.Fatalf("apply ended early: %v", err)
	}
	<-wrote // the take
	taken := fake.SecurityGroupTags("rdsvalet-orders")[provision.TagLease]
	if !strings.HasPrefix(taken, "unit-a:") {
		t.Fatalf("lease %q", taken)
	}
	clock.tick()
	<-wrote // the renewal
	renewed := fake.SecurityGroupTags("rdsvalet-orders")[provision.TagLease]
	if renewed == taken || !strings.HasPrefix(renewed, "unit-a:") {
		t.Fatalf("renewal: %q -> %q", taken, renewed)
	}
	// Another run took it over (say ours had expired): the next renewal notices and stops us.
	fake.SetSecurityGroupTag("rdsvalet-orders", provision.TagLease, "unit-b:1900000000")
	clock.tick()
	close(release)
	err = <-done
	if !errors.Is(err, provision.ErrLeaseLost) || !strings.Contains(err.Error(), "unit-b") {
		t.Fatalf("apply after its lease was taken: %v", err)
	}
	if got := fake.SecurityGroupTags("rdsvalet-orders")[provision.TagLease]; got != "unit-b:1900000000" {
		t.Errorf("the other run's lease was touched: %q", got)
	}
}
