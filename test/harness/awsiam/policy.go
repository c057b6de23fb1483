// Package awsiam is the IAM the fakes share: one evaluator of the IAM policy language (trust
// policies and identity-based permission policies) and the verification of web identity tokens
// (JWTs) that AssumeRoleWithWebIdentity and EKS Pod Identity do, so that the provisioner's fake
// (test/fakeaws) and the sidecar's fake STS (test/harness/fakests) decide the same way AWS does.
//
// The policy language follows "Policy evaluation logic" and "IAM JSON policy elements reference"
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html,
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements.html):
// an explicit Deny wins over any Allow, and without an Allow the request is implicitly denied.
package awsiam

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Decision is the outcome of evaluating policies for one request.
type Decision int

const (
	ImplicitDeny Decision = iota // no statement allows it
	Allow
	ExplicitDeny
)

func (d Decision) String() string {
	return [...]string{"implicit deny", "allow", "explicit deny"}[d]
}

// Principal is who makes the request: Kind is the Principal element's key (AWS, Federated,
// Service) and ID its value (an ARN, a provider ARN, a service name). Account is the caller's
// account for AWS principals, which an account id or ACCOUNT:root principal matches.
type Principal struct {
	Kind, ID, Account string
}

// Request is one request as the evaluator sees it. A nil Principal means an identity-based
// policy, where the Principal element must not appear.
type Request struct {
	Principal *Principal
	Action    string
	Resource  string // empty for trust policies, which have no Resource element
	Context   map[string]string
}

type statement struct {
	Sid         string                                `json:"Sid"`
	Effect      string                                `json:"Effect"`
	Principal   json.RawMessage                       `json:"Principal"`
	Action      StringList                            `json:"Action"`
	NotAction   StringList                            `json:"NotAction"`
	Resource    StringList                            `json:"Resource"`
	NotResource StringList                            `json:"NotResource"`
	Condition   map[string]map[string]json.RawMessage `json:"Condition"`
}

type policyDoc struct {
	Version   string          `json:"Version"`
	Statement json.RawMessage `json:"Statement"`
}

// StringList is a policy element given as one string or a list of strings.
type StringList []string

func (l *StringList) UnmarshalJSON(b []byte) error {
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

// Evaluate evaluates the documents (all attached to the same principal or role) for req.
// A document that does not parse allows nothing.
func Evaluate(docs []string, req Request) Decision {
	out := ImplicitDeny
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
				return ExplicitDeny
			}
			out = Allow
		}
	}
	return out
}

func (st statement) matches(req Request) bool {
	if req.Principal != nil {
		if !principalMatches(st.Principal, *req.Principal) {
			return false
		}
	} else if len(st.Principal) > 0 {
		return false // Principal only belongs in resource-based (e.g. trust) policies
	}
	switch {
	case len(st.Action) > 0:
		if !anyMatch(st.Action, req.Action, false) {
			return false
		}
	case len(st.NotAction) > 0:
		if anyMatch(st.NotAction, req.Action, false) {
			return false
		}
	default:
		return false
	}
	if req.Resource != "" {
		switch {
		case len(st.Resource) > 0:
			if !anyMatch(st.Resource, req.Resource, true) {
				return false
			}
		case len(st.NotResource) > 0:
			if anyMatch(st.NotResource, req.Resource, true) {
				return false
			}
		default:
			return false
		}
	}
	return conditionsHold(st.Condition, req.Context)
}

// principalMatches follows "AWS JSON policy elements: Principal": "*" is everyone; an AWS
// account id or arn:aws:iam::ACCOUNT:root stands for every principal of that account; a role
// ARN matches that role's sessions; Federated and Service match exactly.
func principalMatches(raw json.RawMessage, p Principal) bool {
	if len(raw) == 0 {
		return false
	}
	var star string
	if json.Unmarshal(raw, &star) == nil {
		return star == "*"
	}
	var m map[string]StringList
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	for _, v := range m[p.Kind] {
		switch {
		case v == "*" || v == p.ID:
			return true
		case p.Kind == "AWS" && p.Account != "" && (v == p.Account || v == "arn:aws:iam::"+p.Account+":root"):
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
			var vals StringList
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

// Resources lists the Resource elements of every statement of doc, in order; nil when doc does
// not parse.
func Resources(doc string) []string {
	sts, err := parsePolicy(doc)
	if err != nil {
		return nil
	}
	var out []string
	for _, st := range sts {
		out = append(out, st.Resource...)
	}
	return out
}
