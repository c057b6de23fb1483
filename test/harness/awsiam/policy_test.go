package awsiam

import "testing"

func TestEvalPolicyIdentityBased(t *testing.T) {
	allowConnect := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect",
		"Resource":["arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABC/orders_app","arn:aws:rds-db:us-east-1:111122223333:dbuser:prx-*/orders_*"]}]}`
	denyRO := `{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"rds-db:*","Resource":"arn:aws:rds-db:*:*:dbuser:*/orders_ro"}}`
	wildcardAction := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"RDS-DB:Conn?ct","Resource":"*"}]}`
	notAction := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}]}`
	withPrincipal := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`
	for _, tc := range []struct {
		name     string
		docs     []string
		action   string
		resource string
		want     Decision
	}{
		{"exact resource", []string{allowConnect}, "rds-db:connect", "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABC/orders_app", Allow},
		{"other user", []string{allowConnect}, "rds-db:connect", "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABC/orders_ro", ImplicitDeny},
		{"other instance", []string{allowConnect}, "rds-db:connect", "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-XYZ/orders_app", ImplicitDeny},
		{"resource wildcard", []string{allowConnect}, "rds-db:connect", "arn:aws:rds-db:us-east-1:111122223333:dbuser:prx-123/orders_ro", Allow},
		{"resources are case-sensitive", []string{allowConnect}, "rds-db:connect", "arn:aws:rds-db:us-east-1:111122223333:dbuser:DB-ABC/orders_app", ImplicitDeny},
		{"other action", []string{allowConnect}, "rds:DescribeDBInstances", "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABC/orders_app", ImplicitDeny},
		{"explicit deny wins", []string{allowConnect, denyRO}, "rds-db:connect", "arn:aws:rds-db:us-east-1:111122223333:dbuser:prx-123/orders_ro", ExplicitDeny},
		{"actions are case-insensitive with ?", []string{wildcardAction}, "rds-db:connect", "x", Allow},
		{"NotAction", []string{notAction}, "iam:PassRole", "x", ImplicitDeny},
		{"NotAction allows the rest", []string{notAction}, "ec2:DescribeVpcs", "x", Allow},
		{"Principal in an identity policy", []string{withPrincipal}, "ec2:DescribeVpcs", "x", ImplicitDeny},
		{"malformed document", []string{`{"Statement":`}, "rds-db:connect", "x", ImplicitDeny},
		{"no documents", nil, "rds-db:connect", "x", ImplicitDeny},
	} {
		if got := Evaluate(tc.docs, Request{Action: tc.action, Resource: tc.resource}); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestEvalPolicyTrust(t *testing.T) {
	issuer := "oidc.eks.us-east-1.amazonaws.com/id/ABC"
	prov := "arn:aws:iam::111122223333:oidc-provider/" + issuer
	irsa := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"` + prov + `"},
		"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringEquals":{"` + issuer + `:sub":"system:serviceaccount:orders:api","` + issuer + `:aud":"sts.amazonaws.com"}}}]}`
	like := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"` + prov + `"},
		"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringLike":{"` + strings2(issuer) + `:SUB":"system:serviceaccount:orders:*"}}}]}`
	web := func(sub, aud string) Request {
		return Request{Principal: &Principal{Kind: "Federated", ID: prov}, Action: "sts:AssumeRoleWithWebIdentity",
			Context: map[string]string{issuer + ":sub": sub, issuer + ":aud": aud}}
	}
	cross := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"sts:AssumeRole"}]}`
	byRole := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::999999999999:role/ci"]},"Action":"sts:AssumeRole"}]}`
	pods := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"pods.eks.amazonaws.com"},"Action":["sts:AssumeRole","sts:TagSession"]}]}`
	aws := func(id, account string) Request {
		return Request{Principal: &Principal{Kind: "AWS", ID: id, Account: account}, Action: "sts:AssumeRole"}
	}
	for _, tc := range []struct {
		name string
		doc  string
		req  Request
		want Decision
	}{
		{"irsa ok", irsa, web("system:serviceaccount:orders:api", "sts.amazonaws.com"), Allow},
		{"irsa other sa", irsa, web("system:serviceaccount:orders:other", "sts.amazonaws.com"), ImplicitDeny},
		{"irsa wrong aud", irsa, web("system:serviceaccount:orders:api", "other"), ImplicitDeny},
		{"irsa other provider", irsa, Request{Principal: &Principal{Kind: "Federated", ID: prov + "X"}, Action: "sts:AssumeRoleWithWebIdentity",
			Context: map[string]string{issuer + ":sub": "system:serviceaccount:orders:api", issuer + ":aud": "sts.amazonaws.com"}}, ImplicitDeny},
		{"irsa other action", irsa, Request{Principal: &Principal{Kind: "Federated", ID: prov}, Action: "sts:AssumeRole"}, ImplicitDeny},
		{"StringLike, keys case-insensitive", like, web("system:serviceaccount:orders:x", ""), Allow},
		{"StringLike other namespace", like, web("system:serviceaccount:billing:x", ""), ImplicitDeny},
		{"account root admits its users", cross, aws("arn:aws:iam::111122223333:user/provisioner", "111122223333"), Allow},
		{"account root admits its roles", cross, aws("arn:aws:iam::111122223333:role/x", "111122223333"), Allow},
		{"account root: other account", cross, aws("arn:aws:iam::444455556666:user/p", "444455556666"), ImplicitDeny},
		{"role principal", byRole, aws("arn:aws:iam::999999999999:role/ci", "999999999999"), Allow},
		{"role Principal: other role", byRole, aws("arn:aws:iam::999999999999:role/dev", "999999999999"), ImplicitDeny},
		{"service principal", pods, Request{Principal: &Principal{Kind: "Service", ID: "pods.eks.amazonaws.com"}, Action: "sts:TagSession"}, Allow},
		{"service Principal: AWS caller", pods, aws("arn:aws:iam::111122223333:root", "111122223333"), ImplicitDeny},
		{"unknown operator fails closed", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2099-01-01T00:00:00Z"}}}]}`,
			aws("x", "1"), ImplicitDeny},
	} {
		if got := Evaluate([]string{tc.doc}, tc.req); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// strings2 upper-cases the issuer's host so the test shows condition keys match regardless of case.
func strings2(s string) string {
	out := []rune(s)
	for i, r := range out {
		if r >= 'a' && r <= 'z' {
			out[i] = r - 32
		}
	}
	return string(out)
}

func TestWildcard(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"a*c", "abbbc", true}, {"a*c", "abbb", false}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"*orders_*", "dbuser:prx-1/orders_app", true}, {"a*b*c", "aXbYbZc", true}, {"", "x", false},
	} {
		if got := wildcard(tc.p, tc.s, true); got != tc.want {
			t.Errorf("wildcard(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}
