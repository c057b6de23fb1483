package provision_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/provision"
)

// A change that lands between apply FILE's check and its act is caught before it is acted on.
func TestApplySavedStopsAtAChangeThePlanDidNotShow(t *testing.T) {
	fake := startFake(t, 2)
	spec := exampleSpec(t)
	ctx := context.Background()
	if _, _, err := newProvisioner(t, fake, spec).Apply(ctx); err != nil {
		t.Fatal(err)
	}
	spec.Instance.Class = "db.r6g.large"
	p := newProvisioner(t, fake, spec)
	plan, err := p.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pf := provision.NewPlanFile(plan, spec, "orders.yaml", "v1")
	if err := pf.CheckSpec("orders.plan", spec, "v1"); err != nil {
		t.Fatal(err)
	}
	// ApplySaved reads the account twice: for its check and for the apply. In between, someone
	// retags the instance.
	var n atomic.Int32
	fake.OnCall("GetCallerIdentity", func() {
		if n.Add(1) == 2 {
			fake.SetInstanceTag("orders", "team", "someone-else")
		}
	})
	fake.ResetCalls()
	_, _, err = p.ApplySaved(ctx, pf, "orders.plan")
	var stale *provision.StalePlanError
	if !errors.As(err, &stale) || !strings.Contains(err.Error(), `db-instance "orders": the plan said update (class), apply would now update (class, tags.team)`) {
		t.Fatalf("apply after a change behind the check: %v", err)
	}
	for _, c := range fake.Calls() {
		if c.Mutates {
			t.Errorf("acted on a stale plan: %s", c.Action)
		}
	}
	if in, _ := fake.Instance("orders"); in.Class != "db.t4g.medium" {
		t.Errorf("class %s", in.Class)
	}
}
