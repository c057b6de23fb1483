package provisioner_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// TestSyncTargetsFromTheClusterAccount (issue 15 item 13): with access.sync_targets_principal,
// apply creates rdsvalet-NAME-sync-targets in the storage account, trusted by that principal
// and allowed only what sync-targets does; `sync-targets --assume-role-arn` run with the
// cluster account's identity uses it, and the same identity without it, or the role for
// anything else, is refused.
func TestSyncTargetsFromTheClusterAccount(t *testing.T) {
	const ciRole = "arn:aws:iam::" + consumerAccount + ":role/ci-sync"
	h := newHarness(t, func(s string) string {
		return strings.Replace(s, "  service_accounts:", "  sync_targets_principal: "+ciRole+"\n  service_accounts:", 1)
	})
	h.apply()
	role, ok := h.fake.Role("rdsvalet-orders-sync-targets")
	if !ok || role.Path != "/rdsvalet/orders/sync-targets/" {
		t.Fatalf("sync-targets role: %v %+v (roles %v)", ok, role, h.fake.RoleNames())
	}
	var trust struct {
		Statement []struct {
			Principal struct{ AWS string }
			Action    string
		}
	}
	if err := json.Unmarshal([]byte(role.Trust), &trust); err != nil || len(trust.Statement) != 1 ||
		trust.Statement[0].Principal.AWS != ciRole || trust.Statement[0].Action != "sts:AssumeRole" {
		t.Errorf("trust %s (%v)", role.Trust, err)
	}
	px, _ := h.fake.Proxy("orders")
	pol := role.Policies["rds-valet"]
	for _, want := range []string{"rds:DescribeDBProxies", "ec2:DescribeNetworkInterfaces", "elasticloadbalancing:RegisterTargets",
		"elasticloadbalancing:DeregisterTargets", px.ARN, ":targetgroup/rdsvalet-orders/"} {
		if !strings.Contains(pol, want) {
			t.Errorf("policy lacks %s: %s", want, pol)
		}
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("second plan: %+v", got)
	}

	// The cluster account's CronJob identity: allowed to assume roles, nothing else.
	h.fake.SeedAccountRole(consumerAccount, "ci-sync",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::`+account+`:root"},"Action":"sts:AssumeRole"}]}`,
		map[string]string{"assume": `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}`})
	c := sts.New(sts.Options{Region: region, BaseEndpoint: aws.String(h.fake.URL), Credentials: credentials.NewStaticCredentialsProvider(accessKey, secretKey, "")})
	out, err := c.AssumeRole(context.Background(), &sts.AssumeRoleInput{RoleArn: aws.String(ciRole), RoleSessionName: aws.String("cronjob")})
	if err != nil {
		t.Fatal(err)
	}
	asCI := func(args ...string) result {
		cmd := h.command(args...)
		env := cmd.Env[:0:0]
		for _, kv := range cmd.Env {
			if !strings.HasPrefix(kv, "AWS_ACCESS_KEY_ID=") && !strings.HasPrefix(kv, "AWS_SECRET_ACCESS_KEY=") {
				env = append(env, kv)
			}
		}
		cmd.Env = append(env, "AWS_ACCESS_KEY_ID="+aws.ToString(out.Credentials.AccessKeyId),
			"AWS_SECRET_ACCESS_KEY="+aws.ToString(out.Credentials.SecretAccessKey), "AWS_SESSION_TOKEN="+aws.ToString(out.Credentials.SessionToken))
		var so, se strings.Builder
		cmd.Stdout, cmd.Stderr = &so, &se
		code := 0
		if err := cmd.Run(); err != nil {
			code = cmd.ProcessState.ExitCode()
		}
		return result{code, so.String(), se.String()}
	}
	h.fake.SetProxyIPs("orders", []string{"10.0.1.77", "10.0.2.88"})
	if r := asCI("sync-targets"); r.code != 1 || !strings.Contains(r.stderr, "AccessDenied") || !strings.Contains(r.stderr, "rds:DescribeDBProxies") {
		t.Fatalf("sync-targets as the bare CI identity: exit %d\n%s", r.code, tail(r.stderr, 1500))
	}
	h.fake.ResetCalls()
	if r := asCI("sync-targets", "--assume-role-arn", role.ARN); r.code != 0 {
		t.Fatalf("sync-targets --assume-role-arn: exit %d\n%s", r.code, tail(r.stderr, 3000))
	}
	if got := h.fake.TargetIPs(lbName); strings.Join(got, ",") != "10.0.1.77,10.0.2.88" {
		t.Errorf("targets %v", got)
	}
	assumed := false
	for _, c := range h.fake.Calls() {
		assumed = assumed || (c.Action == "AssumeRole" && c.Status == 200)
	}
	if !assumed {
		t.Error("sync-targets did not assume the role")
	}
	// The role is for sync-targets only.
	if r := asCI("plan", "--assume-role-arn", role.ARN); r.code != 1 || !strings.Contains(r.stderr, "UnauthorizedOperation") && !strings.Contains(r.stderr, "AccessDenied") {
		t.Errorf("plan as the sync-targets role: exit %d\n%s", r.code, tail(r.stderr, 1500))
	}
}
