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
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
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
                (--out FILE saves it with what it observed, for apply FILE)
  apply [FILE]  make AWS match the spec, then write the sidecar config; with FILE (from
                plan --out), apply exactly that plan or refuse if anything changed since
  destroy       delete everything this database owns (reverse order)
  sync-targets  make the NLB target group equal to the RDS Proxy's current IPs
  status        show the resources found and the sidecar paths
                (--orphans --specs-dir DIR: databases tagged as ours whose spec is gone)
  init          write a commented spec for a new database (-f FILE, --name, --engine, ...)

exit codes: 0 success (plan: no changes), 1 error, 2 plan --detailed-exitcode found changes
or status --orphans found orphans, 3 apply FILE refused (the plan is stale), 4 apply/destroy
refused (another run holds the lease), 64 usage error

flags:
`

// Exit codes (docs/provisioner.md, "Exit codes").
const (
	exitOK      = 0
	exitFailure = 1
	exitChanges = 2 // plan --detailed-exitcode: changes; status --orphans: orphans found
	exitStale   = 3 // apply FILE: what the plan saw has changed; nothing was applied
	exitLeased  = 4 // apply/destroy: another run holds the lease; nothing was done
	exitUsage   = 64
)

type options struct {
	files                                                       []string
	output, configOut, configMapOut, configMapName, configMapNS string
	proxyIPs, logLevel, logFormat                               string
	force, dryRun, skipFinalSnapshot, detailedExit              bool
	poll, maxPoll, waitTimeout, awsMaxBackoff                   time.Duration
	awsMaxAttempts                                              int
	planOut, leaseHolder, specsDir, region                      string
	leaseTTL                                                    time.Duration
	orphans                                                     bool
	planFile                                                    string // apply FILE
	newDB                                                       initFlags
	assumeRoleARN                                               string
	dbEndpoint, dbCAFile                                        string
	revokeRemovedUsers, skipDBUsers                             bool
}

// file is the one spec the per-database commands work on.
func (o *options) file() string {
	if len(o.files) == 0 {
		return ""
	}
	return o.files[0]
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a wrong command line: exit 64, nothing was sent to AWS.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		newFlags(&options{}, stderr).PrintDefaults()
		return exitUsage
	}
	cmd := args[0]
	var o options
	fs := newFlags(&o, stderr)
	if err := fs.Parse(terraformStyle(args[1:])); err != nil {
		if err != pflag.ErrHelp {
			fmt.Fprintln(stderr, err) // pflag leaves printing to us with ContinueOnError
		}
		return exitUsage
	}
	if err := checkUsage(cmd, &o, fs.Args()); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		if strings.HasPrefix(err.Error(), "unknown command") {
			fmt.Fprint(stderr, usage)
		}
		return exitUsage
	}
	log, err := newLogger(o.logLevel, o.logFormat, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = dispatch(ctx, cmd, o, log, stdout)
	var ex exitCode
	var ue usageError
	var stale *provision.StalePlanError
	var held *provision.LeaseHeldError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ex):
		return int(ex) // not a failure: plan --detailed-exitcode found changes, or orphans
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%v\n", err)
		return exitUsage
	case errors.As(err, &stale):
		log.Error(cmd+" refused", zap.Error(err))
		fmt.Fprintf(stderr, "refused: %v\n", err)
		return exitStale
	case errors.As(err, &held):
		log.Error(cmd+" refused", zap.Error(err))
		fmt.Fprintf(stderr, "refused: %v\n", err)
		return exitLeased
	}
	log.Error(cmd+" failed", zap.Error(err))
	fmt.Fprintf(stderr, "error: %v\n", err)
	return exitFailure
}

// terraformStyle accepts plan's -out FILE as Terraform spells it (pflag would read -out as
// the shorthands -o -u -t).
func terraformStyle(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "-out" || strings.HasPrefix(a, "-out=") {
			a = "-" + a
		}
		out[i] = a
	}
	return out
}

// checkUsage refuses command lines that cannot mean anything, before any AWS call.
func checkUsage(cmd string, o *options, rest []string) error {
	switch cmd {
	case "plan", "apply", "destroy", "sync-targets", "status", "init":
	default:
		return usagef("unknown command %q", cmd)
	}
	switch o.output {
	case "table", "json":
	case "markdown":
		if cmd == "status" || cmd == "init" {
			return usagef("--output markdown is for plan, apply, destroy and sync-targets")
		}
	default:
		return usagef("--output %q: want table, json or markdown", o.output)
	}
	if cmd == "apply" && len(rest) == 1 {
		o.planFile, rest = rest[0], nil
	}
	if len(rest) > 0 {
		return usagef("%s: unexpected argument %q (only apply takes one: a plan file from plan --out)", cmd, rest[0])
	}
	if o.planOut != "" && cmd != "plan" {
		return usagef("--out is for plan (then apply FILE)")
	}
	switch {
	case cmd == "status" && o.orphans:
		if o.specsDir == "" && len(o.files) == 0 {
			return usagef("status --orphans needs --specs-dir DIR or one -f per spec")
		}
		return nil
	case o.orphans || o.specsDir != "":
		return usagef("--orphans and --specs-dir are for status --orphans")
	case cmd == "init":
		return o.newDB.check(o)
	case cmd == "apply" && o.planFile != "":
		if len(o.files) > 1 {
			return usagef("apply FILE: at most one -f (the spec the plan was made from)")
		}
		return nil
	case len(o.files) == 0:
		return usagef("-f/--file database.yaml is required")
	case len(o.files) > 1:
		return usagef("%s works on one spec; several -f are for status --orphans", cmd)
	}
	return nil
}

type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// newFlags registers the provisioner's flags, writing into o; docs/provisioner.md's flag table
// is checked against it.
func newFlags(o *options, out io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("provisioner", pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringArrayVarP(&o.files, "file", "f", nil, "database spec (YAML); status --orphans takes several")
	fs.StringVar(&o.output, "output", "table", "plan/apply/destroy/sync-targets output: table, json or markdown (a pull-request comment with full diffs); status: table or json")
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
	fs.StringVar(&o.assumeRoleARN, "assume-role-arn", "", "make every AWS call as this IAM role (sts:AssumeRole), e.g. sync-targets from the cluster's account with rdsvalet-NAME-sync-targets")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "console", "console or json")
	fs.StringVar(&o.planOut, "out", "", "plan: save the plan and what it observed to this file, for apply FILE")
	fs.StringVar(&o.leaseHolder, "lease-holder", "", "apply/destroy: this run's name in the lease tag (default HOSTNAME/PID)")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 10*time.Minute, "apply/destroy: how long the lease lasts unless renewed (renewed every third of it)")
	fs.BoolVar(&o.orphans, "orphans", false, "status: list databases tagged as ours whose spec is not in --specs-dir or -f (exit 2 if any)")
	fs.StringVar(&o.specsDir, "specs-dir", "", "status --orphans: directory of spec files (*.yaml, *.yml, searched recursively)")
	fs.StringVar(&o.region, "region", "", "init: the database's region; status --orphans: look there too (default: the specs' regions, else AWS_REGION)")
	o.newDB.register(fs)
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
	if o.assumeRoleARN != "" {
		// The identity the environment gives (AWS_PROFILE, IRSA, ...) only assumes the role.
		cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), o.assumeRoleARN, func(ao *stscreds.AssumeRoleOptions) {
			ao.RoleSessionName = "rds-valet-provisioner"
		}))
	}
	ec2c := ec2.NewFromConfig(cfg)
	return provision.Clients{
		RDS: rds.NewFromConfig(cfg), IAM: iam.NewFromConfig(cfg), EC2: ec2c, ELB: elb.NewFromConfig(cfg),
		Secrets: secretsmanager.NewFromConfig(cfg), STS: sts.NewFromConfig(cfg), KMS: kms.NewFromConfig(cfg), EKS: eks.NewFromConfig(cfg),
		// Cross-region read replicas are created and managed by calls to their own Region.
		RDSIn: func(_ context.Context, region string) (provision.RDSAPI, error) {
			cc := cfg.Copy()
			cc.Region = region
			return rds.NewFromConfig(cc), nil
		},
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

func writePlan(w io.Writer, plan *provision.Plan, format string) error {
	switch format {
	case "json":
		return plan.WriteJSON(w)
	case "markdown":
		return plan.WriteMarkdown(w)
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
		return enc.Encode(map[string]any{"database": db, "resources": rs, "paths": out.Paths, "users": out.Users, "replicas": out.Replicas})
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
	if len(out.Replicas) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "REPLICA\tREGION\tADDRESS")
		for _, r := range out.Replicas {
			addr := "(not created)"
			if r.Path != nil {
				addr = r.Path.Address
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.ID, r.Region, addr)
		}
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
