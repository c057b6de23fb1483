package fakeaws

import "testing"

func TestEvalPolicy(t *testing.T) {
	const user = "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABC/orders_app"
	allow := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"` + user + `"}]}`
	wild := `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"rds-db:*","Resource":["arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABC/*"]}}`
	deny := `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}`
	notRes := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"RDS-DB:Connect","NotResource":"arn:aws:rds-db:*:*:dbuser:*/admin"}]}`
	cond := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"true"}}}]}`
	for _, tc := range []struct {
		name     string
		docs     []string
		resource string
		want     bool
	}{
		{"exact allow", []string{allow}, user, true},
		{"other user", []string{allow}, user + "x", false},
		{"no policies", nil, user, false},
		{"action and resource wildcards", []string{wild}, user, true},
		{"wildcard for another instance", []string{wild}, "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-XYZ/orders_app", false},
		{"deny wins", []string{allow, deny}, user, false},
		{"action case-insensitive, NotResource", []string{notRes}, user, true},
		{"NotResource excludes", []string{notRes}, "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABC/admin", false},
		{"condition not evaluated", []string{cond}, user, false},
		{"malformed", []string{"{"}, user, false},
	} {
		if got := evalPolicy(tc.docs, "rds-db:connect", tc.resource); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	if !wildcardMatch("a?c*", "abcdef") || wildcardMatch("a?c", "ac") {
		t.Error("wildcardMatch")
	}
}
