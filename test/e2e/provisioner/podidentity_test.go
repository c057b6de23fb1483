package provisioner_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"
)

func podIdentitySpec(s string) string {
	i := strings.Index(s, "  oidc_provider_arn:")
	j := i + strings.Index(s[i:], "\n") + 1
	s = s[:i] + "  identity: pod-identity\n  cluster_name: prod-eks\n" + s[j:]
	return strings.Replace(s, "deletion_protection: true", "deletion_protection: false", 1)
}

// TestPodIdentityAssociatesEachServiceAccount (issue 15 item 12): with identity: pod-identity
// each ServiceAccount's role trusts pods.eks.amazonaws.com (sts:AssumeRole and
// sts:TagSession) and an EKS Pod Identity association binds it in the cluster; associations
// follow the spec, a foreign one is never taken over, and destroy removes ours.
func TestPodIdentityAssociatesEachServiceAccount(t *testing.T) {
	h := newHarness(t, podIdentitySpec)
	if r := h.run("apply"); r.code != 1 || !strings.Contains(r.stderr, "eks:ListPodIdentityAssociations") || !strings.Contains(r.stderr, "ResourceNotFoundException") {
		t.Fatalf("apply without the cluster: exit %d\n%s", r.code, tail(r.stderr, 2000))
	}
	h.fake.AddEKSCluster("prod-eks")
	h.apply()
	assocs := h.fake.PodIdentityAssociations()
	if len(assocs) != 2 {
		t.Fatalf("associations %+v", assocs)
	}
	for _, a := range assocs {
		role, ok := h.fake.Role("rdsvalet-orders-" + a.Namespace + "-" + a.ServiceAccount)
		if !ok || a.Cluster != "prod-eks" || a.RoleARN != role.ARN || a.Tags["rdsvalet.io/database"] != "orders" || a.Tags["team"] != "payments" {
			t.Errorf("association %+v, role %+v", a, role)
		}
		var trust struct {
			Statement []struct {
				Principal struct{ Service string }
				Action    []string
				Condition map[string]any
			}
		}
		if err := json.Unmarshal([]byte(role.Trust), &trust); err != nil || len(trust.Statement) != 1 ||
			trust.Statement[0].Principal.Service != "pods.eks.amazonaws.com" || strings.Join(trust.Statement[0].Action, ",") != "sts:AssumeRole,sts:TagSession" ||
			trust.Statement[0].Condition != nil {
			t.Errorf("trust of %s: %s (%v)", role.Name, role.Trust, err)
		}
	}
	if got := h.plan(); len(got) != 0 {
		t.Errorf("second plan: %+v", got)
	}
	if p := h.fake.OIDCProviders(); len(p) != 1 {
		t.Errorf("pod identity touched OIDC providers: %v", p)
	}

	// A ServiceAccount leaves the spec: its association and role go.
	h.writeSpec(func(s string) string {
		return strings.Replace(podIdentitySpec(s), "    - {namespace: orders, name: orders-reporting, db_user: orders_ro}\n", "", 1)
	})
	h.apply()
	if a := h.fake.PodIdentityAssociations(); len(a) != 1 || a[0].ServiceAccount != "orders-api" {
		t.Errorf("after removing orders-reporting: %+v", a)
	}
	if _, ok := h.fake.Role("rdsvalet-orders-orders-orders-reporting"); ok {
		t.Error("orders-reporting's role is still there")
	}

	// Someone else's association for a ServiceAccount of the spec is refused, not taken over.
	ec := eks.New(eks.Options{Region: region, BaseEndpoint: aws.String(h.fake.URL), Credentials: credentials.NewStaticCredentialsProvider(accessKey, secretKey, "")})
	if _, err := ec.CreatePodIdentityAssociation(context.Background(), &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String("prod-eks"),
		Namespace: aws.String("orders"), ServiceAccount: aws.String("orders-reporting"), RoleArn: aws.String("arn:aws:iam::" + account + ":role/theirs")}); err != nil {
		t.Fatal(err)
	}
	h.writeSpec(podIdentitySpec)
	if r := h.run("apply"); r.code != 1 || !strings.Contains(r.stderr, `pod-identity-association "orders/orders-reporting"`) || !strings.Contains(r.stderr, "not tagged") {
		t.Errorf("foreign association: exit %d\n%s", r.code, tail(r.stderr, 2000))
	}

	h.mustRun("destroy")
	if a := h.fake.PodIdentityAssociations(); len(a) != 1 || a[0].RoleARN != "arn:aws:iam::"+account+":role/theirs" {
		t.Errorf("after destroy: %+v (only the foreign one may stay)", a)
	}
}
