package fakeaws

import (
	"encoding/json"
	"strings"
)

// evalPolicy decides whether identity-based policy documents allow action on resource, the way
// IAM evaluates them: an explicit Deny in any statement wins, otherwise at least one Allow must
// match, otherwise the request is implicitly denied
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html).
// Action and Resource match case-insensitively for the action ("service:Action" names are not
// case sensitive) and case-sensitively for the resource, with * and ? wildcards
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html,
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html).
// NotAction and NotResource are honoured; a statement with a Condition is treated as not
// matching (the fake has no request context to evaluate it against), which for an Allow is the
// strict choice and for a Deny is noted in docs/provisioner.md.
func evalPolicy(docs []string, action, resource string) bool {
	allowed := false
	for _, d := range docs {
		for _, s := range policyStatements(d) {
			if !s.matches(action, resource) {
				continue
			}
			switch s.Effect {
			case "Deny":
				return false
			case "Allow":
				allowed = true
			}
		}
	}
	return allowed
}

type policyStatement struct {
	Effect      string
	Action      stringOrList
	NotAction   stringOrList
	Resource    stringOrList
	NotResource stringOrList
	Condition   map[string]any
}

// stringOrList is a policy element that may be one string or a list of strings.
type stringOrList []string

func (l *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*l = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

// policyStatements decodes a policy document; a malformed one has no statements (IAM refuses
// it at PutRolePolicy, so nothing stored can be malformed in practice).
func policyStatements(doc string) []policyStatement {
	var one struct{ Statement policyStatement }
	var many struct{ Statement []policyStatement }
	if json.Unmarshal([]byte(doc), &many) == nil {
		return many.Statement
	}
	if json.Unmarshal([]byte(doc), &one) == nil {
		return []policyStatement{one.Statement}
	}
	return nil
}

func (s policyStatement) matches(action, resource string) bool {
	if len(s.Condition) > 0 {
		return false
	}
	actionOK := anyMatch(s.Action, action, true)
	if len(s.NotAction) > 0 {
		actionOK = !anyMatch(s.NotAction, action, true)
	}
	resourceOK := anyMatch(s.Resource, resource, false)
	if len(s.NotResource) > 0 {
		resourceOK = !anyMatch(s.NotResource, resource, false)
	}
	return actionOK && resourceOK
}

func anyMatch(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		if fold {
			p, s = strings.ToLower(p), strings.ToLower(s)
		}
		if wildcardMatch(p, s) {
			return true
		}
	}
	return false
}

// wildcardMatch matches s against p, where * is any run of characters and ? any one character.
func wildcardMatch(p, s string) bool {
	for len(p) > 0 {
		switch p[0] {
		case '*':
			for len(p) > 0 && p[0] == '*' {
				p = p[1:]
			}
			if p == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if wildcardMatch(p, s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != p[0] {
				return false
			}
		}
		p, s = p[1:], s[1:]
	}
	return s == ""
}
