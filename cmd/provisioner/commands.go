package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"

	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/provision"
)

// version is set at build time (-ldflags "-X main.version=..."); the VCS revision the binary
// was built from is added to it, so a plan file is only applied by the build that made it.
var version = "dev"

func provisionerVersion() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			v += "+" + rev
			if dirty {
				v += "-dirty"
			}
		}
	}
	return v
}

func leaseHolder(o options) string {
	if o.leaseHolder != "" {
		return o.leaseHolder
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

// dispatch runs one command line that checkUsage accepted.
func dispatch(ctx context.Context, cmd string, o options, log *zap.Logger, stdout io.Writer) error {
	switch {
	case cmd == "init":
		return runInit(o, stdout)
	case cmd == "status" && o.orphans:
		return runOrphans(ctx, o, stdout)
	case cmd == "apply" && o.planFile != "":
		return applySaved(ctx, o, log, stdout)
	}
	spec, err := provision.LoadSpec(o.file())
	if err != nil {
		return err
	}
	return execute(ctx, cmd, spec, o, log, stdout)
}

func newProvisioner(ctx context.Context, spec *provision.Spec, o options, log *zap.Logger) (*provision.Provisioner, error) {
	cl, err := clients(ctx, spec.Region, o)
	if err != nil {
		return nil, err
	}
	dbu, err := dbUsersConfig(o)
	if err != nil {
		return nil, err
	}
	return provision.New(provision.Config{Spec: spec, PollInterval: o.poll, MaxPollInterval: o.maxPoll, WaitTimeout: o.waitTimeout,
		ProxyIPSource: o.proxyIPs, SkipFinalSnapshot: o.skipFinalSnapshot, LeaseHolder: leaseHolder(o), LeaseTTL: o.leaseTTL, DBUsers: dbu},
		provision.Deps{Clients: cl, Logger: log.With(zap.String("database", spec.Name)), Clock: provision.RealClock(), Resolver: net.DefaultResolver})
}

func execute(ctx context.Context, cmd string, spec *provision.Spec, o options, log *zap.Logger, stdout io.Writer) error {
	p, err := newProvisioner(ctx, spec, o, log)
	if err != nil {
		return err
	}
	switch cmd {
	case "plan":
		plan, err := p.Plan(ctx)
		if err != nil {
			return err
		}
		if err := writePlan(stdout, plan, o.output); err != nil {
			return err
		}
		if o.planOut != "" {
			if err := provision.NewPlanFile(plan, spec, o.file(), provisionerVersion()).Write(o.planOut); err != nil {
				return err
			}
			log.Info("plan saved; apply it with: provisioner apply "+o.planOut, zap.String("plan_file", o.planOut))
		}
		if o.detailedExit && !plan.Empty() {
			return exitCode(exitChanges)
		}
		return nil
	case "apply":
		plan, out, err := p.Apply(ctx)
		return finishApply(stdout, plan, out, err, o)
	case "destroy":
		plan, err := p.Destroy(ctx, provision.DestroyOptions{DryRun: o.dryRun, ForceDeletionProtection: o.force})
		return printPlan(stdout, plan, err, o.output)
	case "sync-targets":
		plan, err := p.SyncTargets(ctx)
		return printPlan(stdout, plan, err, o.output)
	case "status":
		states, out, err := p.Status(ctx)
		if err != nil {
			return err
		}
		if err := writeStatus(stdout, spec.Name, states, out, o.output); err != nil {
			return err
		}
		if len(out.Paths) > 0 {
			return writeOutputs(out, o)
		}
		return nil
	}
	return nil
}

// printPlan prints the plan a command executed (also when it failed part-way) and returns the
// command's error first.
func printPlan(w io.Writer, plan *provision.Plan, err error, format string) error {
	if plan != nil {
		if werr := writePlan(w, plan, format); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

func finishApply(w io.Writer, plan *provision.Plan, out *provision.Outputs, err error, o options) error {
	if err := printPlan(w, plan, err, o.output); err != nil {
		return err
	}
	return writeOutputs(out, o)
}

// applySaved applies a plan file: same provisioner, same spec, same observed state, same plan.
func applySaved(ctx context.Context, o options, log *zap.Logger, stdout io.Writer) error {
	pf, err := provision.ReadPlanFile(o.planFile)
	if err != nil {
		return err
	}
	path := o.file()
	if path == "" {
		path = pf.SpecPath
	}
	spec, err := provision.LoadSpec(path)
	if err != nil {
		return fmt.Errorf("apply %s: the plan's spec: %w", o.planFile, err)
	}
	if err := pf.CheckSpec(o.planFile, spec, provisionerVersion()); err != nil {
		return err
	}
	p, err := newProvisioner(ctx, spec, o, log)
	if err != nil {
		return err
	}
	plan, out, err := p.ApplySaved(ctx, pf, o.planFile)
	return finishApply(stdout, plan, out, err, o)
}
