// Command provisioner plans, applies and destroys the AWS resources behind one database and
// writes the sidecar's config for it. See docs/provisioner.md.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/logging"
	"github.com/rdsvalet/rds-valet/internal/provision"
)

const usage = `usage: provisioner COMMAND -f database.yaml [flags]

commands:
  plan          show every create/update/delete with the fields that differ
  apply         make AWS match the spec, then write the sidecar config
  destroy       delete everything this database owns (reverse order)
  sync-targets  make the NLB target group equal to the RDS Proxy's current IPs
  status        show the resources found and the sidecar paths

flags:
`

type options struct {
	file, output, configOut, configMapOut, configMapName, configMapNS string
	proxyIPs, logLevel, logFormat                                     string
	force, dryRun, skipFinalSnapshot, detailedExit                    bool
	dbEndpoint, dbCAFile                                              string
	revokeRemovedUsers, skipDBUsers                                   bool
	poll, maxPoll, waitTimeout, awsMaxBackoff                         time.Duration
	awsMaxAttempts                                                    int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		newFlags(&options{}, stderr).PrintDefaults()
		return 2
	}
	cmd := args[0]
	var o options
	fs := newFlags(&o, stderr)
	if err := fs.Parse(args[1:]); err != nil {
		if err != pflag.ErrHelp {
			fmt.Fprintln(stderr, err) // pflag leaves printing to us with ContinueOnError
		}
		return 2
	}
	switch cmd {
	case "plan", "apply", "destroy", "sync-targets", "status":
	default:
		fmt.Fprintf(stderr, "unknown command %q\n%s", cmd, usage)
		return 2
	}
	if o.file == "" {
		fmt.Fprintln(stderr, "-f/--file database.yaml is required")
		return 2
	}
	log, err := newLogger(o.logLevel, o.logFormat, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := execute(ctx, cmd, o, log, stdout); err != nil {
		var ex exitCode
		if errors.As(err, &ex) {
			return int(ex) // not a failure: plan --detailed-exitcode found changes
		}
		log.Error(cmd+" failed", zap.Error(err))
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	return 0
}

type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// newFlags registers the provisioner's flags, writing into o; docs/provisioner.md's flag table
// is checked against it.
func newFlags(o *options, out io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("provisioner", pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVarP(&o.file, "file", "f", "", "database spec (YAML)")
	fs.StringVar(&o.output, "output", "table", "plan/status/destroy output: table or json")
	fs.StringVar(&o.configOut, "config-out", "", "apply/status: write the sidecar config here")
	fs.StringVar(&o.configMapOut, "configmap-out", "", "apply/status: write the sidecar ConfigMap manifest(s) here")
	fs.StringVar(&o.configMapName, "configmap-name", "", "ConfigMap name (default rdsvalet-NAME)")
	fs.StringVar(&o.configMapNS, "configmap-namespace", "", "ConfigMap namespace (default: one per ServiceAccount namespace)")
	fs.StringVar(&o.proxyIPs, "proxy-ips", "eni", "how to find the RDS Proxy's IPs: eni (EC2 DescribeNetworkInterfaces) or dns (resolve the proxy endpoint; run inside the VPC)")
	fs.BoolVar(&o.force, "force-deletion-protection", false, "destroy: turn deletion protection off and delete anyway")
	fs.BoolVar(&o.dryRun, "dry-run", false, "destroy: only print what would be deleted")
	fs.BoolVar(&o.skipFinalSnapshot, "skip-final-snapshot", false, "destroy: delete the instance without a final snapshot")
	fs.BoolVar(&o.detailedExit, "detailed-exitcode", false, "plan: exit 2 when there are changes")
	fs.StringVar(&o.dbEndpoint, "db-endpoint", "", "plan/apply: host:port to reach the database at for the db users (default the instance endpoint; e.g. a port-forward)")
	fs.StringVar(&o.dbCAFile, "db-ca-file", "", "plan/apply: PEM bundle verifying the database's TLS certificate (the RDS CA bundle; default the system pool)")
	fs.BoolVar(&o.revokeRemovedUsers, "revoke-removed-users", false, "plan/apply: drop db users this provisioner created that the spec no longer names (default: only report them)")
	fs.BoolVar(&o.skipDBUsers, "skip-db-users", false, "plan/apply: do not log in to the database; db users are neither checked nor created")
	fs.DurationVar(&o.poll, "poll-interval", 5*time.Second, "first wait between status checks (grows 1.5x)")
	fs.DurationVar(&o.maxPoll, "max-poll-interval", 30*time.Second, "longest wait between status checks")
	fs.DurationVar(&o.waitTimeout, "wait-timeout", 60*time.Minute, "longest wait for one resource to become available")
	fs.IntVar(&o.awsMaxAttempts, "aws-max-attempts", 10, "attempts per AWS call (throttling and transient errors are retried)")
	fs.DurationVar(&o.awsMaxBackoff, "aws-max-backoff", 20*time.Second, "longest backoff between retries of one AWS call")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "console", "console or json")
	return fs
}

func newLogger(level, format string, out io.Writer) (*zap.Logger, error) {
	log, err := logging.New(out, level, format)
	if err != nil {
		return nil, fmt.Errorf("--log-level/--log-format: %w", err)
	}
	return log, nil
}

func clients(ctx context.Context, region string, o options) (provision.Clients, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region),
		awsconfig.WithRetryer(func() aws.Retryer {
			// Standard retryer: throttling (Throttling, ThrottlingException, 429) and 5xx are
			// retried with jittered exponential backoff, bounded by these two knobs.
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = o.awsMaxAttempts
				so.MaxBackoff = o.awsMaxBackoff
			})
		}))
	if err != nil {
		return provision.Clients{}, fmt.Errorf("load AWS config: %w", err)
	}
	ec2c := ec2.NewFromConfig(cfg)
	return provision.Clients{
		RDS: rds.NewFromConfig(cfg), IAM: iam.NewFromConfig(cfg), EC2: ec2c, ELB: elb.NewFromConfig(cfg),
		Secrets: secretsmanager.NewFromConfig(cfg), STS: sts.NewFromConfig(cfg),
		ConsumerEC2: func(ctx context.Context, roleARN string) (provision.ConsumerEC2API, error) {
			if roleARN == "" {
				return ec2c, nil
			}
			cc := cfg.Copy()
			cc.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), roleARN, func(ao *stscreds.AssumeRoleOptions) {
				ao.RoleSessionName = "rds-valet-provisioner"
			}))
			return ec2.NewFromConfig(cc), nil
		},
	}, nil
}

func execute(ctx context.Context, cmd string, o options, log *zap.Logger, stdout io.Writer) error {
	spec, err := provision.LoadSpec(o.file)
	if err != nil {
		return err
	}
	cl, err := clients(ctx, spec.Region, o)
	if err != nil {
		return err
	}
	dbu, err := dbUsersConfig(o)
	if err != nil {
		return err
	}
	p, err := provision.New(provision.Config{Spec: spec, PollInterval: o.poll, MaxPollInterval: o.maxPoll, WaitTimeout: o.waitTimeout,
		ProxyIPSource: o.proxyIPs, SkipFinalSnapshot: o.skipFinalSnapshot, DBUsers: dbu},
		provision.Deps{Clients: cl, Logger: log.With(zap.String("database", spec.Name)), Clock: provision.RealClock(), Resolver: net.DefaultResolver})
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
		if o.detailedExit && !plan.Empty() {
			return exitCode(2)
		}
		return nil
	case "apply":
		plan, out, err := p.Apply(ctx)
		if plan != nil {
			if werr := writePlan(stdout, plan, o.output); werr != nil && err == nil {
				err = werr
			}
		}
		if err != nil {
			return err
		}
		return writeOutputs(out, o)
	case "destroy":
		plan, err := p.Destroy(ctx, provision.DestroyOptions{DryRun: o.dryRun, ForceDeletionProtection: o.force})
		if plan != nil {
			if werr := writePlan(stdout, plan, o.output); werr != nil && err == nil {
				err = werr
			}
		}
		return err
	case "sync-targets":
		plan, err := p.SyncTargets(ctx)
		if plan != nil {
			if werr := writePlan(stdout, plan, o.output); werr != nil && err == nil {
				err = werr
			}
		}
		return err
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

func writePlan(w io.Writer, plan *provision.Plan, format string) error {
	if format == "json" {
		return plan.WriteJSON(w)
	}
	return plan.WriteTable(w)
}

func writeStatus(w io.Writer, db string, states []*provision.State, out *provision.Outputs, format string) error {
	if format == "json" {
		type res struct {
			*provision.State
			Owned bool `json:"owned"`
		}
		var rs []res
		for _, s := range states {
			rs = append(rs, res{s, s.Owned(db)})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"database": db, "resources": rs, "paths": out.Paths, "users": out.Users})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tSTATUS\tOWNED\tID")
	for _, s := range states {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", s.Kind, s.Name, s.Status, s.Owned(db), s.ID)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "PATH\tADDRESS\tTLS SERVER NAME\tTOKEN HOST")
	for _, pth := range out.Paths {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", pth.Name, pth.Address, pth.TLSServerName, pth.TokenHost)
	}
	return tw.Flush()
}

func writeOutputs(out *provision.Outputs, o options) error {
	if o.configOut != "" {
		b, err := out.SidecarConfig()
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.configOut, b, 0o644); err != nil {
			return fmt.Errorf("write sidecar config: %w", err)
		}
	}
	if o.configMapOut != "" {
		b, err := out.ConfigMaps(o.configMapName, o.configMapNS)
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.configMapOut, b, 0o644); err != nil {
			return fmt.Errorf("write ConfigMap: %w", err)
		}
	}
	return nil
}

// dbUsersConfig turns the db-user flags into the provisioner's config (nil: --skip-db-users).
func dbUsersConfig(o options) (*provision.DBUsersConfig, error) {
	if o.skipDBUsers {
		return nil, nil
	}
	c := &provision.DBUsersConfig{Endpoint: o.dbEndpoint, RevokeRemoved: o.revokeRemovedUsers}
	if o.dbEndpoint != "" {
		if _, _, err := net.SplitHostPort(o.dbEndpoint); err != nil {
			return nil, fmt.Errorf("--db-endpoint %q: want host:port", o.dbEndpoint)
		}
	}
	if o.dbCAFile != "" {
		b, err := os.ReadFile(o.dbCAFile)
		if err != nil {
			return nil, fmt.Errorf("--db-ca-file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--db-ca-file %s: no PEM certificate in it", o.dbCAFile)
		}
	}
	return c, nil
}
