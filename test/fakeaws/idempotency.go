package fakeaws

import (
	"sort"
	"strings"
)

// clientTokens implements EC2's ClientToken idempotency ("Ensuring idempotency in Amazon EC2
// API requests", https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html):
// a retry with the same token and the same parameters returns the original result and does
// nothing more; the same token with different parameters fails with
// IdempotentParameterMismatch. Tokens are case-sensitive, at most 64 ASCII characters, and
// scoped to the account (and region: one fake is one region).
type tokenRecord struct {
	params string // the request's parameters, canonical
	id     string // the resource the first request created
}

// requestFingerprint is the request's parameters without the token and the protocol fields.
func requestFingerprint(c *reqCtx) string {
	var kv []string
	for k, v := range c.form {
		if k == "ClientToken" || k == "Action" || k == "Version" {
			continue
		}
		kv = append(kv, k+"="+strings.Join(v, ","))
	}
	sort.Strings(kv)
	return strings.Join(kv, "&")
}

// checkToken looks the request's token up: it returns the id of the resource an identical
// earlier request created ("" when the token is new or absent), or an error.
func (st *state) checkToken(c *reqCtx, action string) (string, *apiError) {
	tok := c.get("ClientToken")
	if tok == "" {
		return "", nil
	}
	if len(tok) > 64 {
		return "", errf(400, "InvalidClientToken", "The client token must be at most 64 ASCII characters")
	}
	r := st.tokens[c.account+"|"+action+"|"+tok]
	if r == nil {
		return "", nil
	}
	if r.params != requestFingerprint(c) {
		return "", errf(400, "IdempotentParameterMismatch", "The client token %s was already used with different parameters", tok)
	}
	return r.id, nil
}

// rememberToken records which resource the request with this token created.
func (st *state) rememberToken(c *reqCtx, action, id string) {
	if tok := c.get("ClientToken"); tok != "" {
		st.tokens[c.account+"|"+action+"|"+tok] = &tokenRecord{params: requestFingerprint(c), id: id}
	}
}
