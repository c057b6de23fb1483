package awsiam

import "encoding/json"

// Policy documents in the shapes the provisioner writes, for fakes that need a role set up the
// way apply leaves it.

// IRSATrust is an IRSA role's trust policy ("Assign IAM roles to Kubernetes service accounts",
// https://docs.aws.amazon.com/eks/latest/userguide/associate-service-account-role.html): the
// cluster's OIDC provider may assume the role with web identity, for exactly the ServiceAccount
// sub (system:serviceaccount:NS:SA) and the STS audience.
func IRSATrust(providerARN, providerHost, sub string) string {
	return mustJSON(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
		"Effect": "Allow", "Principal": map[string]any{"Federated": providerARN}, "Action": "sts:AssumeRoleWithWebIdentity",
		"Condition": map[string]any{"StringEquals": map[string]any{
			providerHost + ":sub": sub,
			providerHost + ":aud": "sts.amazonaws.com"}}}}})
}

// PodIdentityTrust is an EKS Pod Identity role's trust policy ("Create the EKS Pod Identity
// role", https://docs.aws.amazon.com/eks/latest/userguide/pod-id-role.html): the service
// principal pods.eks.amazonaws.com may assume the role and tag the session.
func PodIdentityTrust() string {
	return mustJSON(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
		"Effect": "Allow", "Principal": map[string]any{"Service": "pods.eks.amazonaws.com"},
		"Action": []string{"sts:AssumeRole", "sts:TagSession"}}}})
}

// AllowPolicy is an identity-based policy with one Allow statement of action on resources.
func AllowPolicy(action string, resources ...string) string {
	return mustJSON(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
		"Effect": "Allow", "Action": action, "Resource": resources}}})
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// Merge joins the statements of several policy documents into one document, e.g. a role that
// trusts both IRSA and Pod Identity. A document that does not parse is left out.
func Merge(docs ...string) string {
	var all []any
	for _, d := range docs {
		var p struct {
			Statement json.RawMessage `json:"Statement"`
		}
		if json.Unmarshal([]byte(d), &p) != nil {
			continue
		}
		var many []any
		if json.Unmarshal(p.Statement, &many) != nil {
			var one any
			if json.Unmarshal(p.Statement, &one) != nil {
				continue
			}
			many = []any{one}
		}
		all = append(all, many...)
	}
	return mustJSON(map[string]any{"Version": "2012-10-17", "Statement": all})
}
