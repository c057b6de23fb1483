package provisioner_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/rdsvalet/rds-valet/test/fakeaws"
)

// The documented IAM policy of the provisioner must allow every call the provisioner made in
// this package's run. Each harness's fake hands its call log over on cleanup; TestMain checks
// the union after all tests ran. Only calls signed with the provisioner's own key count: the
// consumer and sync-targets roles' calls are those roles' permissions, and unsigned calls
// (AssumeRoleWithWebIdentity from a pod) need none.

var (
	actionsMu sync.Mutex
	actions   = map[string]bool{} // service:Action
)

func recordActions(f *fakeaws.Server) {
	actionsMu.Lock()
	defer actionsMu.Unlock()
	for _, c := range f.Calls() {
		if c.Caller == accessKey && c.Action != "" {
			actions[c.Service+":"+c.Action] = true
		}
	}
}

// checkDocumentedPolicy returns 1, listing what is missing, when the policy in
// docs/provisioner.md does not allow an action the run called.
func checkDocumentedPolicy() int {
	actionsMu.Lock()
	defer actionsMu.Unlock()
	if len(actions) == 0 {
		return 0 // nothing ran (-short, or a -run that started no harness)
	}
	allowed, err := documentedActions("../../../docs/provisioner.md")
	if err != nil {
		fmt.Fprintln(os.Stderr, "documented IAM policy:", err)
		return 1
	}
	var missing []string
	for a := range actions {
		if !allowedBy(allowed, a) {
			missing = append(missing, a)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: docs/provisioner.md \"IAM permissions the provisioner needs\" lacks actions the provisioner called in this run:\n  %s\n",
			strings.Join(missing, "\n  "))
		return 1
	}
	return 0
}

var policyBlockRE = regexp.MustCompile("(?s)## IAM permissions the provisioner needs\n.*?```json\n(.*?)```")

// documentedActions reads the Allow statements' actions of the policy in the doc.
func documentedActions(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := policyBlockRE.FindSubmatch(b)
	if m == nil {
		return nil, fmt.Errorf("%s: no json block under \"## IAM permissions the provisioner needs\"", path)
	}
	var doc struct {
		Statement []struct {
			Effect string
			Action json.RawMessage
		}
	}
	if err := json.Unmarshal(m[1], &doc); err != nil {
		return nil, fmt.Errorf("%s: the policy is not valid JSON: %w", path, err)
	}
	var out []string
	for _, st := range doc.Statement {
		if st.Effect != "Allow" {
			continue
		}
		var one string
		var many []string
		if json.Unmarshal(st.Action, &one) == nil {
			many = []string{one}
		} else if err := json.Unmarshal(st.Action, &many); err != nil {
			return nil, fmt.Errorf("%s: Action %s: %w", path, st.Action, err)
		}
		out = append(out, many...)
	}
	return out, nil
}

// allowedBy matches action against IAM action patterns (case-insensitive, * wildcards).
func allowedBy(patterns []string, action string) bool {
	for _, p := range patterns {
		re := "^" + strings.ReplaceAll(regexp.QuoteMeta(strings.ToLower(p)), `\*`, ".*") + "$"
		if regexp.MustCompile(re).MatchString(strings.ToLower(action)) {
			return true
		}
	}
	return false
}
