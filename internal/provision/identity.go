package provision

import (
	"fmt"
	"regexp"
	"strings"
)

// How pods get their IAM role, and the account checks that go with it.
//
// irsa: IAM roles for service accounts. Each ServiceAccount's role trusts the cluster's IAM
// OIDC provider, which must exist in the account that holds the roles (the account apply runs
// in, which is the database's account): IAM only accepts a Federated principal of its own
// account. apply checks it with iam:GetOpenIDConnectProvider before planning the roles, and
// creates it when the spec gives access.oidc_issuer_url.
//
// pod-identity: EKS Pod Identity. Each role trusts pods.eks.amazonaws.com, and an EKS pod
// identity association binds it to the ServiceAccount in access.cluster_name, which must be a
// cluster of the account apply runs in.

const (
	identityIRSA        = "irsa"
	identityPodIdentity = "pod-identity"
	// stsAudience is the audience EKS puts in projected ServiceAccount tokens for IRSA.
	stsAudience = "sts.amazonaws.com"
)

var (
	issuerURLRE   = regexp.MustCompile(`^https://[a-z0-9.-]+(/[A-Za-z0-9._~/-]*)?$`)
	clusterNameRE = regexp.MustCompile(`^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$`)
)

func (a AccessSpec) podIdentity() bool { return a.Identity == identityPodIdentity }

// oidcIssuerHost is the provider ARN's tail: the issuer URL without https://, which is also
// the prefix of the trust policy's condition keys.
func oidcIssuerHost(arn string) string {
	i := strings.Index(arn, ":oidc-provider/")
	if i < 0 {
		return ""
	}
	return arn[i+len(":oidc-provider/"):]
}

// arnAccount is the account field of an ARN.
func arnAccount(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 6 {
		return ""
	}
	return parts[4]
}

func validateIdentity(add func(string, string, ...any), a AccessSpec) {
	switch a.Identity {
	case "", identityIRSA:
		if !oidcRE.MatchString(a.OIDCProviderARN) {
			add("access.oidc_provider_arn", "must be an IAM OIDC provider ARN (arn:aws:iam::ACCOUNT:oidc-provider/...)")
		}
		if a.OIDCIssuerURL != "" {
			if !issuerURLRE.MatchString(a.OIDCIssuerURL) {
				add("access.oidc_issuer_url", "must be the cluster's OIDC issuer URL, https://HOST/PATH (got %q)", a.OIDCIssuerURL)
			} else if h := oidcIssuerHost(a.OIDCProviderARN); h != "" && h != strings.TrimPrefix(a.OIDCIssuerURL, "https://") {
				add("access.oidc_issuer_url", "must be the issuer of access.oidc_provider_arn (https://%s), got %q", h, a.OIDCIssuerURL)
			}
		}
		if a.ClusterName != "" {
			add("access.cluster_name", "is only used with identity: pod-identity")
		}
	case identityPodIdentity:
		if !clusterNameRE.MatchString(a.ClusterName) {
			add("access.cluster_name", "must be the EKS cluster's name (1-100 letters, digits, '-' or '_') with identity: pod-identity (got %q)", a.ClusterName)
		}
		if a.OIDCProviderARN != "" || a.OIDCIssuerURL != "" {
			add("access.oidc_provider_arn", "is only used with identity: irsa")
		}
	default:
		add("access.identity", "must be irsa or pod-identity (got %q)", a.Identity)
	}
	if p := a.SyncTargetsPrincipal; p != "" && (p == "*" || !principalR.MatchString(p)) {
		add("access.sync_targets_principal", "must be an IAM principal ARN (account root, role or user), not * (got %q)", p)
	}
}

// checkOIDCAccount refuses an OIDC provider of another account: the IRSA roles are created in
// the account apply runs in, and their Federated principal must be a provider of that account.
func checkOIDCAccount(e *env) error {
	if e.spec.Access.podIdentity() {
		return nil
	}
	if acct := arnAccount(e.spec.Access.OIDCProviderARN); acct != e.account {
		return fmt.Errorf("access.oidc_provider_arn %s is in account %s, but apply runs in account %s, where the IRSA roles are created: "+
			"IAM only trusts an OIDC provider of the role's own account. Create the cluster's OIDC provider in %s "+
			"(or set access.oidc_issuer_url to let apply create it) and use arn:aws:iam::%s:oidc-provider/%s",
			e.spec.Access.OIDCProviderARN, acct, e.account, e.account, e.account, oidcIssuerHost(e.spec.Access.OIDCProviderARN))
	}
	return nil
}

// appRoleTrust is the trust policy of a ServiceAccount's role. IRSA: the cluster's OIDC
// provider, for exactly that ServiceAccount's token with the STS audience ("Assign IAM roles
// to Kubernetes service accounts"). Pod Identity: the EKS Pod Identity service principal,
// which assumes the role and tags the session ("Create the EKS Pod Identity role").
func appRoleTrust(s *Spec, sa ServiceAccount) string {
	if s.Access.podIdentity() {
		return mustJSON(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
			"Effect": "Allow", "Principal": map[string]any{"Service": "pods.eks.amazonaws.com"},
			"Action": []string{"sts:AssumeRole", "sts:TagSession"}}}})
	}
	arn := s.Access.OIDCProviderARN
	issuer := oidcIssuerHost(arn)
	return mustJSON(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
		"Effect": "Allow", "Principal": map[string]any{"Federated": arn}, "Action": "sts:AssumeRoleWithWebIdentity",
		"Condition": map[string]any{"StringEquals": map[string]any{
			issuer + ":sub": "system:serviceaccount:" + sa.Namespace + ":" + sa.Name,
			issuer + ":aud": stsAudience}}}}})
}
