package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/spf13/pflag"

	"github.com/rdsvalet/rds-valet/internal/provision"
)

// initFlags are init's answers (the region comes from --region).
type initFlags struct {
	name, engine, engineVersion, vpcID, team, owner, oidc, class string
	subnets, allowedSGs, allowedCIDRs, serviceAccounts           []string
}

func (f *initFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "init: database name")
	fs.StringVar(&f.engine, "engine", "postgres", "init: postgres or mysql")
	fs.StringVar(&f.engineVersion, "engine-version", "", "init: engine version (default 16.4 for postgres, 8.0.39 for mysql)")
	fs.StringVar(&f.class, "instance-class", "db.t4g.medium", "init: RDS instance class")
	fs.StringVar(&f.vpcID, "vpc-id", "", "init: the VPC of the database")
	fs.StringSliceVar(&f.subnets, "subnet-ids", nil, "init: subnets in at least two AZs (comma-separated)")
	fs.StringSliceVar(&f.allowedSGs, "allowed-security-group-ids", nil, "init: security groups allowed in on the engine port (comma-separated)")
	fs.StringSliceVar(&f.allowedCIDRs, "allowed-cidrs", nil, "init: IPv4 CIDRs allowed in on the engine port (comma-separated)")
	fs.StringVar(&f.team, "team", "", "init: the owning team (tag team)")
	fs.StringVar(&f.owner, "owner", "", "init: a contact (tag owner)")
	fs.StringVar(&f.oidc, "oidc-provider-arn", "", "init: the EKS cluster's IAM OIDC provider ARN")
	fs.StringArrayVar(&f.serviceAccounts, "service-account", nil, "init: NAMESPACE/NAME=DB_USER allowed in (repeat the flag)")
}

func (f *initFlags) check(o *options) error {
	var missing []string
	for _, r := range []struct{ flag, v string }{{"-f", o.file()}, {"--name", f.name}, {"--region", o.region}, {"--vpc-id", f.vpcID},
		{"--subnet-ids", strings.Join(f.subnets, ",")}, {"--team", f.team}, {"--owner", f.owner}, {"--oidc-provider-arn", f.oidc},
		{"--allowed-security-group-ids or --allowed-cidrs", strings.Join(append(append([]string{}, f.allowedSGs...), f.allowedCIDRs...), ",")}} {
		if r.v == "" {
			missing = append(missing, r.flag)
		}
	}
	if len(missing) > 0 {
		return usagef("init: missing %s", strings.Join(missing, ", "))
	}
	if len(o.files) > 1 {
		return usagef("init writes one spec: one -f")
	}
	if _, ok := provision.DefaultEngineVersion[f.engine]; !ok {
		return usagef("init: --engine %q: want postgres or mysql", f.engine)
	}
	return nil
}

// runInit writes the new spec, never over an existing file.
func runInit(o options, stdout io.Writer) error {
	f := o.newDB
	b, err := provision.RenderSpec(provision.InitOptions{Name: f.name, Engine: f.engine, EngineVersion: f.engineVersion, Region: o.region,
		VPCID: f.vpcID, SubnetIDs: f.subnets, AllowedSecurityGroupIDs: f.allowedSGs, AllowedCIDRs: f.allowedCIDRs, Team: f.team,
		Owner: f.owner, OIDCProviderARN: f.oidc, ServiceAccounts: f.serviceAccounts, InstanceClass: f.class})
	if err != nil {
		return usagef("init: the flags make an invalid spec: %v", err)
	}
	path := o.file()
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("init: %s already exists; not overwriting it (edit it, or choose another -f)", path)
	}
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		_ = w.Close()
		return fmt.Errorf("init: write %s: %w", path, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("init: write %s: %w", path, err)
	}
	fmt.Fprintf(stdout, "wrote %s; next: provisioner plan -f %s\n", path, path)
	return nil
}

// specFiles returns -f's files and every *.yaml/*.yml under --specs-dir.
func specFiles(o options) ([]string, error) {
	files := append([]string(nil), o.files...)
	if o.specsDir == "" {
		return files, nil
	}
	err := filepath.WalkDir(o.specsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("--specs-dir: %w", err)
	}
	return files, nil
}

// runOrphans lists, per region, the databases tagged as ours that no spec names. Every spec
// must load: a spec that does not parse might be the one that names a database.
func runOrphans(ctx context.Context, o options, stdout io.Writer) error {
	files, err := specFiles(o)
	if err != nil {
		return err
	}
	known := map[string]map[string]bool{} // region -> database names
	for _, f := range files {
		s, err := provision.LoadSpec(f)
		if err != nil {
			return fmt.Errorf("status --orphans: %w (every spec must be valid to tell what is orphaned)", err)
		}
		if known[s.Region] == nil {
			known[s.Region] = map[string]bool{}
		}
		known[s.Region][s.Name] = true
	}
	regions := map[string]bool{}
	for r := range known {
		regions[r] = true
	}
	if o.region != "" {
		regions[o.region] = true
	}
	if len(regions) == 0 {
		// No spec names a region: the SDK's default (AWS_REGION, the profile).
		cfg, err := awsconfig.LoadDefaultConfig(ctx)
		if err != nil || cfg.Region == "" {
			return usagef("status --orphans: no spec names a region; give --region (or AWS_REGION)")
		}
		regions[cfg.Region] = true
	}
	var all []provision.Orphan
	for _, r := range sortedNames(regions) {
		cl, err := clients(ctx, r, o)
		if err != nil {
			return err
		}
		found, err := provision.FindOrphans(ctx, cl, r, known[r])
		if err != nil {
			return err
		}
		all = append(all, found...)
	}
	if err := writeOrphans(stdout, all, o.output, len(files)); err != nil {
		return err
	}
	if len(all) > 0 {
		return exitCode(exitChanges)
	}
	return nil
}

func writeOrphans(w io.Writer, orphans []provision.Orphan, format string, specs int) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if orphans == nil {
			orphans = []provision.Orphan{}
		}
		return enc.Encode(map[string]any{"specs": specs, "orphans": orphans})
	}
	if len(orphans) == 0 {
		_, err := fmt.Fprintf(w, "No orphans: every database tagged %s=%s has one of the %d specs.\n", provision.TagManagedBy, provision.ManagedByValue, specs)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATABASE\tREGION\tTEAM\tOWNER\tRESOURCES")
	for _, o := range orphans {
		var rs []string
		for _, r := range o.Resources {
			rs = append(rs, r.Kind+" "+r.Name)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Database, o.Region, o.Team, o.Owner, strings.Join(rs, ", "))
	}
	fmt.Fprintf(tw, "\nOrphans (tagged as ours, no spec among the %d read): %d. Restore each one's spec, or destroy it with the spec from history.\n", specs, len(orphans))
	return tw.Flush()
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
