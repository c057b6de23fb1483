package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// PlanFileFormat names the plan file's layout; a file of another format is refused.
const PlanFileFormat = "rds-valet-plan/1"

// PlanFile is what `plan -out FILE` writes and `apply FILE` applies: the plan, and everything it
// was computed from (the spec, the provisioner's version and every resource the plan read), so
// that apply can refuse when any of it has changed since the pull request showed the plan.
type PlanFile struct {
	Format             string `json:"format"`
	ProvisionerVersion string `json:"provisioner_version"`
	Database           string `json:"database"`
	// SpecPath is the spec file as given to plan; apply reads it from there unless -f says.
	SpecPath   string `json:"spec_path"`
	SpecSHA256 string `json:"spec_sha256"`
	// ObservedSHA256 covers Observed; Fingerprint covers the version, the spec and Observed.
	ObservedSHA256 string             `json:"observed_sha256"`
	Fingerprint    string             `json:"fingerprint"`
	Observed       []ObservedResource `json:"observed"`
	Changes        []Change           `json:"changes"`
}

// ObservedResource is one resource as the plan read it, with what later resources took from it
// (Out). The lifecycle status (it moves on its own: backing-up, modifying) and the apply lease
// tag (taken by the apply itself) are left out.
type ObservedResource struct {
	Kind  string            `json:"kind"`
	Name  string            `json:"name"`
	ID    string            `json:"id,omitempty"`
	Attrs map[string]string `json:"attrs,omitempty"`
	Tags  map[string]string `json:"tags,omitempty"`
	Out   map[string]string `json:"out,omitempty"`
}

func (o ObservedResource) key() string { return o.Kind + " " + o.Name + " " + o.ID }

// SpecDigest is the SHA-256 of the spec as decoded (defaults applied), so a comment or a
// reordering does not count as a change and any value does.
func SpecDigest(s *Spec) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a Spec is plain data
	}
	return sha(b)
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func observedOf(plan *Plan) []ObservedResource {
	out := []ObservedResource{}
	for _, s := range plan.Observed() {
		tags := copyMap(s.Tags)
		delete(tags, TagLease)
		out = append(out, ObservedResource{Kind: s.Kind, Name: s.Name, ID: s.ID, Attrs: s.Attrs, Tags: tags, Out: s.Out})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

func digestObserved(obs []ObservedResource) string {
	b, _ := json.Marshal(obs)
	return sha(b)
}

// NewPlanFile records plan with what it was computed from.
func NewPlanFile(plan *Plan, spec *Spec, specPath, version string) *PlanFile {
	obs := observedOf(plan)
	pf := &PlanFile{Format: PlanFileFormat, ProvisionerVersion: version, Database: plan.Database, SpecPath: specPath,
		SpecSHA256: SpecDigest(spec), ObservedSHA256: digestObserved(obs), Observed: obs, Changes: plan.Changes}
	pf.Fingerprint = sha([]byte(pf.ProvisionerVersion + "\n" + pf.SpecSHA256 + "\n" + pf.ObservedSHA256))
	if pf.Changes == nil {
		pf.Changes = []Change{}
	}
	return pf
}

// Write saves the plan file (it holds no secret: the observed attributes are ids, settings
// and policies).
func (pf *PlanFile) Write(path string) error {
	b, err := json.MarshalIndent(pf, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write plan file: %w", err)
	}
	return nil
}

// ReadPlanFile loads a plan file written by Write.
func ReadPlanFile(path string) (*PlanFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plan file: %w", err)
	}
	var pf PlanFile
	if err := json.Unmarshal(b, &pf); err != nil {
		return nil, fmt.Errorf("plan file %s: not a plan written by provisioner plan -out: %w", path, err)
	}
	if pf.Format != PlanFileFormat {
		return nil, fmt.Errorf("plan file %s: format %q, want %q (written by provisioner plan -out)", path, pf.Format, PlanFileFormat)
	}
	return &pf, nil
}

// StalePlanError says why a saved plan no longer describes what apply would do.
type StalePlanError struct {
	Path    string
	Reasons []string
}

func (e *StalePlanError) Error() string {
	return fmt.Sprintf("plan file %s is stale, nothing was applied by this check:\n  %s\nrun plan -out again, review it, and apply the new file",
		e.Path, strings.Join(e.Reasons, "\n  "))
}

// CheckSpec refuses a spec or provisioner other than the ones the plan was made with.
func (pf *PlanFile) CheckSpec(path string, spec *Spec, version string) error {
	var why []string
	if pf.ProvisionerVersion != version {
		why = append(why, fmt.Sprintf("provisioner version: the plan was made by %q, this is %q", pf.ProvisionerVersion, version))
	}
	if spec.Name != pf.Database {
		why = append(why, fmt.Sprintf("the plan is for database %q, the spec is %q", pf.Database, spec.Name))
	} else if SpecDigest(spec) != pf.SpecSHA256 {
		why = append(why, "the spec changed since the plan was made")
	}
	if len(why) > 0 {
		return &StalePlanError{Path: path, Reasons: why}
	}
	return nil
}

// CheckObserved compares what a fresh plan observes and plans with what the saved one did.
func (pf *PlanFile) CheckObserved(path string, now *Plan) error {
	obs := observedOf(now)
	var why []string
	if digestObserved(obs) != pf.ObservedSHA256 {
		why = append(why, diffObserved(pf.Observed, obs)...)
		if len(why) == 0 {
			why = append(why, "the observed resources differ from the plan file's record (was it edited?)")
		}
	}
	if len(why) == 0 {
		why = diffChanges(pf.Changes, now.Changes)
	}
	if len(why) > 0 {
		return &StalePlanError{Path: path, Reasons: why}
	}
	return nil
}

func diffObserved(was, now []ObservedResource) []string {
	index := func(l []ObservedResource) map[string]ObservedResource {
		m := map[string]ObservedResource{}
		for _, o := range l {
			m[o.key()] = o
		}
		return m
	}
	w, n := index(was), index(now)
	var why []string
	for _, k := range sortedKeys(w) {
		o, ok := n[k]
		if !ok {
			why = append(why, fmt.Sprintf("%s %q (%s) is gone", w[k].Kind, w[k].Name, w[k].ID))
			continue
		}
		for _, f := range changedFields(w[k], o) {
			why = append(why, fmt.Sprintf("%s %q: %s changed", o.Kind, o.Name, f))
		}
	}
	for _, k := range sortedKeys(n) {
		if _, ok := w[k]; !ok {
			why = append(why, fmt.Sprintf("%s %q (%s) appeared", n[k].Kind, n[k].Name, n[k].ID))
		}
	}
	return why
}

func changedFields(a, b ObservedResource) []string {
	var out []string
	cmp := func(prefix string, x, y map[string]string) {
		keys := map[string]bool{}
		for k := range x {
			keys[k] = true
		}
		for k := range y {
			keys[k] = true
		}
		for _, k := range sortedKeys(keys) {
			if x[k] != y[k] {
				out = append(out, prefix+k)
			}
		}
	}
	cmp("", a.Attrs, b.Attrs)
	cmp("tags.", a.Tags, b.Tags)
	cmp("outputs.", a.Out, b.Out)
	return out
}

func changeKey(c Change) string { return c.Kind + " " + c.Name }

func diffChanges(was, now []Change) []string {
	w := map[string]Change{}
	for _, c := range was {
		w[changeKey(c)] = c
	}
	var why []string
	seen := map[string]bool{}
	for _, c := range now {
		seen[changeKey(c)] = true
		if p, ok := w[changeKey(c)]; !ok {
			if c.Action != ActionNoop {
				why = append(why, fmt.Sprintf("%s %q: now planned %s, absent from the plan", c.Kind, c.Name, c.Action))
			}
		} else if !sameChange(p, c, false) {
			why = append(why, fmt.Sprintf("%s %q: the plan said %s, now %s", c.Kind, c.Name, describe(p), describe(c)))
		}
	}
	for _, c := range was {
		if !seen[changeKey(c)] && c.Action != ActionNoop {
			why = append(why, fmt.Sprintf("%s %q: the plan said %s, now nothing", c.Kind, c.Name, c.Action))
		}
	}
	return why
}

func describe(c Change) string {
	var fs []string
	for _, f := range c.Fields {
		fs = append(fs, f.Field)
	}
	if len(fs) == 0 {
		return string(c.Action)
	}
	return string(c.Action) + " (" + strings.Join(fs, ", ") + ")"
}

// sameChange compares a planned change with an actual one; with resolved set, a planned
// "(known after apply)" matches whatever the value turned out to be.
func sameChange(planned, actual Change, resolved bool) bool {
	if planned.Action != actual.Action || len(planned.Fields) != len(actual.Fields) {
		return false
	}
	eq := func(p, a string) bool { return p == a || resolved && strings.Contains(p, Unknown) }
	for i, f := range planned.Fields {
		g := actual.Fields[i]
		if f.Field != g.Field || !eq(f.From, g.From) || !eq(f.To, g.To) {
			return false
		}
	}
	return true
}

// ApplySaved applies exactly the saved plan: a fresh read-only plan must observe what the saved
// one did and plan the same changes, and while applying, every change must be one the saved
// plan showed (values it showed as "(known after apply)" excepted). Anything else stops the run
// with a StalePlanError. The spec must have been checked with CheckSpec.
func (p *Provisioner) ApplySaved(ctx context.Context, pf *PlanFile, path string) (*Plan, *Outputs, error) {
	now, err := p.Plan(ctx)
	if err != nil {
		return now, nil, err
	}
	if err := pf.CheckObserved(path, now); err != nil {
		return nil, nil, err
	}
	planned := map[string]Change{}
	for _, c := range pf.Changes {
		planned[changeKey(c)] = c
	}
	p.guard = func(c Change) error {
		want, ok := planned[changeKey(c)]
		switch {
		case !ok && c.Action == ActionNoop:
			return nil
		case !ok:
			return &StalePlanError{Path: path, Reasons: []string{fmt.Sprintf("%s %q: apply would now %s it, which the plan did not show", c.Kind, c.Name, c.Action)}}
		case want.Action == ActionCreate && c.Action == ActionNoop && c.Kind == kindSG:
			return nil // taking the lease created the security group as the plan said
		case !sameChange(want, c, true):
			return &StalePlanError{Path: path, Reasons: []string{fmt.Sprintf("%s %q: the plan said %s, apply would now %s", c.Kind, c.Name, describe(want), describe(c))}}
		}
		return nil
	}
	defer func() { p.guard = nil }()
	return p.Apply(ctx)
}
