package provision

import (
	"os"
	"strings"
	"testing"
)

func TestValidateIdentity(t *testing.T) {
	b, err := os.ReadFile("../../docs/examples/orders.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const arnLine = "  oidc_provider_arn: arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE\n"
	base := string(b)
	if !strings.Contains(base, arnLine) {
		t.Fatal("example changed: update the test")
	}
	for _, tc := range []struct {
		name, replace, wantErr string
	}{
		{"irsa with issuer url", arnLine + "  oidc_issuer_url: https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE\n", ""},
		{"issuer url of another provider", arnLine + "  oidc_issuer_url: https://oidc.eks.us-east-1.amazonaws.com/id/OTHER\n", "access.oidc_issuer_url: must be the issuer of"},
		{"issuer url without https", arnLine + "  oidc_issuer_url: oidc.eks.us-east-1.amazonaws.com/id/X\n", "access.oidc_issuer_url: must be the cluster's OIDC issuer URL"},
		{"irsa without provider", "", "access.oidc_provider_arn"},
		{"pod identity", "  identity: pod-identity\n  cluster_name: prod-eks\n", ""},
		{"pod identity without cluster", "  identity: pod-identity\n", "access.cluster_name"},
		{"pod identity with a provider", "  identity: pod-identity\n  cluster_name: prod\n" + arnLine, "access.oidc_provider_arn: is only used with identity: irsa"},
		{"cluster name with irsa", arnLine + "  cluster_name: prod\n", "access.cluster_name: is only used with identity: pod-identity"},
		{"unknown identity", "  identity: kiam\n", "access.identity: must be irsa or pod-identity"},
		{"sync-targets principal", arnLine + "  sync_targets_principal: arn:aws:iam::444455556666:role/ci-sync\n", ""},
		{"sync-targets principal *", arnLine + "  sync_targets_principal: \"*\"\n", "access.sync_targets_principal"},
	} {
		_, err := ParseSpec([]byte(strings.Replace(base, arnLine, tc.replace, 1)))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestAppRoleTrustByIdentity(t *testing.T) {
	s := &Spec{Access: AccessSpec{Identity: identityPodIdentity, ClusterName: "prod"}}
	sa := ServiceAccount{Namespace: "orders", Name: "api"}
	if got := appRoleTrust(s, sa); got != `{"Statement":[{"Action":["sts:AssumeRole","sts:TagSession"],"Effect":"Allow","Principal":{"Service":"pods.eks.amazonaws.com"}}],"Version":"2012-10-17"}` {
		t.Errorf("pod identity trust: %s", got)
	}
	s = &Spec{Access: AccessSpec{OIDCProviderARN: "arn:aws:iam::111122223333:oidc-provider/oidc.example.com/id/X"}}
	if got := appRoleTrust(s, sa); !strings.Contains(got, `"oidc.example.com/id/X:sub":"system:serviceaccount:orders:api"`) ||
		!strings.Contains(got, `"Federated":"arn:aws:iam::111122223333:oidc-provider/oidc.example.com/id/X"`) {
		t.Errorf("irsa trust: %s", got)
	}
}
