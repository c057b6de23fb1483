package provision

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Ownership tags. A resource is ours only when it carries TagManagedBy=ManagedByValue and
// TagDatabase=<spec name>; anything else is never modified or deleted.
const (
	TagPrefix      = "rdsvalet.io/"
	TagManagedBy   = "rdsvalet.io/managed-by"
	TagDatabase    = "rdsvalet.io/database"
	ManagedByValue = "rds-valet"
	// Unknown stands for a value that only exists once an earlier resource has been created.
	Unknown = "(known after apply)"
)

// State is one resource as the planner compares it: desired (from the spec) or observed (from
// AWS). Attrs hold only the fields we manage, rendered as canonical strings so that comparison
// is plain string equality (lists sorted, policies canonical JSON).
type State struct {
	Kind  string            `json:"kind"`
	Name  string            `json:"name"`
	ID    string            `json:"id,omitempty"`
	Attrs map[string]string `json:"attrs,omitempty"`
	Tags  map[string]string `json:"tags,omitempty"`
	// Status is the lifecycle state AWS reports (available, creating, ...); never diffed.
	Status string `json:"status,omitempty"`
	// Out holds values later resources reference (ARNs, endpoints); never diffed.
	Out map[string]string `json:"-"`
}

// Owned reports whether the observed resource carries our ownership tags for database db.
func (s *State) Owned(db string) bool {
	return s.Tags[TagManagedBy] == ManagedByValue && s.Tags[TagDatabase] == db
}

// Action is what apply will do to one resource.
type Action string

const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
	ActionNoop   Action = "no-op"
)

// FieldDiff is one field that differs. Tags appear as "tags.KEY".
type FieldDiff struct {
	Field string `json:"field"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// Change is the planned action on one resource with the fields that differ.
type Change struct {
	Kind   string      `json:"kind"`
	Name   string      `json:"name"`
	ID     string      `json:"id,omitempty"`
	Action Action      `json:"action"`
	Fields []FieldDiff `json:"fields,omitempty"`
}

// ImmutableError says a field can only change by replacing the resource, which the provisioner
// refuses to do on its own for anything that holds data or identity.
type ImmutableError struct {
	Kind, Name, Field, From, To string
}

func (e *ImmutableError) Error() string {
	return fmt.Sprintf("%s %q: %s cannot change in place (%q -> %q); revert the spec or destroy and re-create the resource deliberately", e.Kind, e.Name, e.Field, e.From, e.To)
}

// NotOwnedError says a resource with our name exists without our ownership tags.
type NotOwnedError struct {
	Kind, Name, ID string
	Tags           map[string]string
}

func (e *NotOwnedError) Error() string {
	return fmt.Sprintf("%s %q (%s) already exists but is not tagged %s=%s and %s=<this database>: refusing to modify it; rename the spec, delete it, or tag it if it really belongs to this database", e.Kind, e.Name, e.ID, TagManagedBy, ManagedByValue, TagDatabase)
}

// Diff compares desired with observed (nil = absent) for database db. immutable lists the
// fields that cannot change in place. A nil desired means the resource should not exist.
// It is pure: the planner's unit tests drive it with desired/observed pairs.
func Diff(db string, desired, observed *State, immutable []string) (Change, error) {
	switch {
	case desired == nil && observed == nil:
		return Change{Action: ActionNoop}, nil
	case desired == nil:
		if !observed.Owned(db) {
			// Not ours: leave it alone and say nothing.
			return Change{Kind: observed.Kind, Name: observed.Name, ID: observed.ID, Action: ActionNoop}, nil
		}
		return Change{Kind: observed.Kind, Name: observed.Name, ID: observed.ID, Action: ActionDelete}, nil
	case observed == nil:
		c := Change{Kind: desired.Kind, Name: desired.Name, Action: ActionCreate}
		for _, k := range sortedKeys(desired.Attrs) {
			c.Fields = append(c.Fields, FieldDiff{Field: k, To: desired.Attrs[k]})
		}
		// On create the tags are one line: there is nothing to compare them with.
		var tags []string
		for _, k := range sortedKeys(desired.Tags) {
			tags = append(tags, k+"="+desired.Tags[k])
		}
		if len(tags) > 0 {
			c.Fields = append(c.Fields, FieldDiff{Field: "tags", To: strings.Join(tags, ",")})
		}
		return c, nil
	}
	if !observed.Owned(db) {
		return Change{}, &NotOwnedError{Kind: observed.Kind, Name: observed.Name, ID: observed.ID, Tags: observed.Tags}
	}
	c := Change{Kind: desired.Kind, Name: desired.Name, ID: observed.ID, Action: ActionNoop}
	imm := map[string]bool{}
	for _, f := range immutable {
		imm[f] = true
	}
	for _, k := range sortedKeys(desired.Attrs) {
		want, have := desired.Attrs[k], observed.Attrs[k]
		if want == have {
			continue
		}
		if imm[k] && want != Unknown {
			return Change{}, &ImmutableError{Kind: desired.Kind, Name: desired.Name, Field: k, From: have, To: want}
		}
		c.Fields = append(c.Fields, FieldDiff{Field: k, From: have, To: want})
	}
	// Tags we set must match; extra tags someone else added are left alone.
	for _, k := range sortedKeys(desired.Tags) {
		if want, have := desired.Tags[k], observed.Tags[k]; want != have {
			c.Fields = append(c.Fields, FieldDiff{Field: "tags." + k, From: have, To: want})
		}
	}
	if len(c.Fields) > 0 {
		c.Action = ActionUpdate
	}
	return c, nil
}

// Plan is the ordered list of changes for one run.
type Plan struct {
	Database string   `json:"database"`
	Changes  []Change `json:"changes"`
	// observed is every resource the run read, in the order it read them: what a plan file
	// fingerprints (planfile.go).
	observed []*State
	// Notes are what the plan could not check or leaves alone on purpose (e.g. db users).
	Notes []string `json:"notes,omitempty"`
}

// Observed returns every resource the run read (ours or not), in the order it read them.
func (p *Plan) Observed() []*State { return p.observed }

// Empty reports whether applying the plan would change nothing.
func (p *Plan) Empty() bool {
	for _, c := range p.Changes {
		if c.Action != ActionNoop {
			return false
		}
	}
	return true
}

// Counts returns how many creates, updates and deletes the plan holds.
func (p *Plan) Counts() (create, update, del int) {
	for _, c := range p.Changes {
		switch c.Action {
		case ActionCreate:
			create++
		case ActionUpdate:
			update++
		case ActionDelete:
			del++
		}
	}
	return
}

// WriteTable prints the plan for humans: one block per resource that changes.
// Long values (policies) are shortened to keep the table readable; a closing line then says
// where the full values are.
func (p *Plan) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	shortened := 0
	show := func(s string) string {
		v, cut := showCell(s)
		if cut {
			shortened++
		}
		return v
	}
	fmt.Fprintf(tw, "ACTION\tKIND\tNAME\tFIELD\tFROM\tTO\n")
	for _, c := range p.Changes {
		if c.Action == ActionNoop {
			continue
		}
		if len(c.Fields) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\n", c.Action, c.Kind, c.Name)
			continue
		}
		for i, f := range c.Fields {
			act, kind, name := string(c.Action), c.Kind, c.Name
			if i > 0 {
				act, kind, name = "", "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", act, kind, name, f.Field, show(f.From), show(f.To))
		}
	}
	cr, up, de := p.Counts()
	fmt.Fprintf(tw, "\nPlan for %s: %d to create, %d to update, %d to delete.\n", p.Database, cr, up, de)
	for _, n := range p.Notes {
		fmt.Fprintf(tw, "Note: %s\n", n)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if shortened > 0 {
		what := fmt.Sprintf("%d values were", shortened)
		if shortened == 1 {
			what = "1 value was"
		}
		_, err := fmt.Fprintf(w, "%s shortened to %d characters (marked ...); run plan with --output markdown (per-field diffs, policies as JSON) or --output json for the full values.\n", what, cellWidth)
		return err
	}
	return nil
}

// WriteJSON prints the plan for machines (CI gates on it).
func (p *Plan) WriteJSON(w io.Writer) error {
	out := Plan{Database: p.Database, Changes: []Change{}, Notes: p.Notes}
	for _, c := range p.Changes {
		if c.Action != ActionNoop {
			out.Changes = append(out.Changes, c)
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// cellWidth is the longest value the plan table shows whole.
const cellWidth = 100

// showCell renders a value for one table cell and says whether it was shortened.
func showCell(s string) (string, bool) {
	if s == "" {
		return "-", false
	}
	s = strings.ReplaceAll(s, "\n", " ")
	if r := []rune(s); len(r) > cellWidth {
		return string(r[:cellWidth-3]) + "...", true
	}
	return s, false
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
