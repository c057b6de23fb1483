package fakeaws

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The IAM policy language, as far as the fake needs it to decide trust (who may assume a role)
// and permission (what a role's credentials may do), following "Policy evaluation logic" and
// "IAM JSON policy elements reference"
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html,
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements.html):
// an explicit Deny wins over any Allow, and without an Allow the request is implicitly denied.

// decision is the outcome of evaluating policies for one request.
type decision int

const (
	implicitDeny decision = iota // no statement allows it
	allowed
	explicitDeny
)

func (d decision) String() string {
	return [...]string{"implicit deny", "allow", "explicit deny"}[d]
}

// principal is who makes the request: kind is the Principal element's key (AWS, Federated,
// Service) and id its value (an ARN, a provider ARN, a service name). account is the caller's
// account for AWS principals, which an account id or ACCOUNT:root principal matches.
type principal struct {
	kind, id, account string
}

// evalRequest is one request as the evaluator sees it. A nil principal means an
// identity-based policy, where Principal must not appear.
type evalRequest struct {
	principal *principal
	action    string
	resource  string // empty for trust policies, which have no Resource element
	context   map[string]string
}

type statement struct {
	Sid         string                                `json:"Sid"`
	Effect      string                                `json:"Effect"`
	Principal   json.RawMessage                       `json:"Principal"`
	Action      stringList                            `json:"Action"`
	NotAction   stringList                            `json:"NotAction"`
	Resource    stringList                            `json:"Resource"`
	NotResource stringList                            `json:"NotResource"`
	Condition   map[string]map[string]json.RawMessage `json:"Condition"`
}

type policyDoc struct {
	Version   string          `json:"Version"`
	Statement json.RawMessage `json:"Statement"`
}

// stringList is a policy element given as one string or a list of strings.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a string or a list of strings: %w", err)
	}
	*l = many
	return nil
}

// parsePolicy decodes a document whose Statement is one statement or a list of them.
func parsePolicy(doc string) ([]statement, error) {
	var p policyDoc
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		return nil, fmt.Errorf("policy is not JSON: %w", err)
	}
	if len(p.Statement) == 0 {
		return nil, fmt.Errorf("policy has no Statement")
	}
	var many []statement
	if err := json.Unmarshal(p.Statement, &many); err != nil {
		var one statement
		if err := json.Unmarshal(p.Statement, &one); err != nil {
			return nil, fmt.Errorf("Statement: %w", err)
		}
		many = []statement{one}
	}
	for i, st := range many {
		if st.Effect != "Allow" && st.Effect != "Deny" {
			return nil, fmt.Errorf("Statement[%d]: Effect must be Allow or Deny, got %q", i, st.Effect)
		}
	}
	return many, nil
}

// evalPolicy evaluates the documents (all attached to the same principal or role) for req.
// A document that does not parse allows nothing.
func evalPolicy(docs []string, req evalRequest) decision {
	out := implicitDeny
	for _, doc := range docs {
		sts, err := parsePolicy(doc)
		if err != nil {
			continue
		}
		for _, st := range sts {
			if !st.matches(req) {
				continue
			}
			if st.Effect == "Deny" {
				return explicitDeny
			}
			out = allowed
		}
	}
	return out
}

func (st statement) matches(req evalRequest) bool {
	if req.principal != nil {
		if !principalMatches(st.Principal, *req.principal) {
			return false
		}
	} else if len(st.Principal) > 0 {
		return false // Principal only belongs in resource-based (e.g. trust) policies
	}
	switch {
	case len(st.Action) > 0:
		if !anyMatch(st.Action, req.action, false) {
			return false
		}
	case len(st.NotAction) > 0:
		if anyMatch(st.NotAction, req.action, false) {
			return false
		}
	default:
		return false
	}
	if req.resource != "" {
		switch {
		case len(st.Resource) > 0:
			if !anyMatch(st.Resource, req.resource, true) {
				return false
			}
		case len(st.NotResource) > 0:
			if anyMatch(st.NotResource, req.resource, true) {
				return false
			}
		default:
			return false
		}
	}
	return conditionsHold(st.Condition, req.context)
}

// principalMatches follows "AWS JSON policy elements: Principal": "*" is everyone; an AWS
// account id or arn:aws:iam::ACCOUNT:root stands for every principal of that account; a role
// ARN matches that role's sessions; Federated and Service match exactly.
func principalMatches(raw json.RawMessage, p principal) bool {
	if len(raw) == 0 {
		return false
	}
	var star string
	if json.Unmarshal(raw, &star) == nil {
		return star == "*"
	}
	var m map[string]stringList
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	for _, v := range m[p.kind] {
		switch {
		case v == "*" || v == p.id:
			return true
		case p.kind == "AWS" && p.account != "" && (v == p.account || v == "arn:aws:iam::"+p.account+":root"):
			return true
		}
	}
	return false
}

// conditionsHold evaluates a Condition block: every operator, every key in it and, for one
// key, any of the values ("Creating a condition with multiple keys or values"). Keys are
// case-insensitive; an operator the fake does not know fails closed.
func conditionsHold(cond map[string]map[string]json.RawMessage, ctx map[string]string) bool {
	lower := make(map[string]string, len(ctx))
	for k, v := range ctx {
		lower[strings.ToLower(k)] = v
	}
	for op, kv := range cond {
		for key, raw := range kv {
			var vals stringList
			if err := json.Unmarshal(raw, &vals); err != nil {
				return false
			}
			have, present := lower[strings.ToLower(key)]
			var ok bool
			switch op {
			case "StringEquals":
				ok = present && anyOf(vals, func(v string) bool { return v == have })
			case "StringLike":
				ok = present && anyOf(vals, func(v string) bool { return wildcard(v, have, true) })
			case "StringNotEquals":
				ok = !present || !anyOf(vals, func(v string) bool { return v == have })
			case "StringNotLike":
				ok = !present || !anyOf(vals, func(v string) bool { return wildcard(v, have, true) })
			default:
				return false
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

func anyOf(vals []string, f func(string) bool) bool {
	for _, v := range vals {
		if f(v) {
			return true
		}
	}
	return false
}

// anyMatch matches value against patterns with * and ?; actions compare case-insensitively,
// resources (ARNs) case-sensitively, as IAM does.
func anyMatch(patterns []string, value string, caseSensitive bool) bool {
	return anyOf(patterns, func(p string) bool { return wildcard(p, value, caseSensitive) })
}

// wildcard matches s against pattern, where * is any run of characters and ? one character.
func wildcard(pattern, s string, caseSensitive bool) bool {
	if !caseSensitive {
		pattern, s = strings.ToLower(pattern), strings.ToLower(s)
	}
	p, v := []rune(pattern), []rune(s)
	// Classic iterative glob with one backtrack point.
	pi, vi, star, mark := 0, 0, -1, 0
	for vi < len(v) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == v[vi]):
			pi++
			vi++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, vi
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			vi = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
