package provision

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamt "github.com/aws/aws-sdk-go-v2/service/iam/types"
)

const kindOIDCProvider = "oidc-provider"

// oidcProviderStep makes sure the IRSA roles' Federated principal exists before they are
// planned: the provider must be in the account apply runs in and list sts.amazonaws.com as a
// client id (the audience of IRSA tokens). When it is missing and the spec gives
// access.oidc_issuer_url, the step plans (and with apply, makes) CreateOpenIDConnectProvider.
// The provider is shared by every database of the cluster, so it is tagged as made by us but
// not as belonging to this database: destroy never deletes it.
func (p *Provisioner) oidcProviderStep(ctx context.Context, e *env, apply bool) (*Change, error) {
	a := e.spec.Access
	if a.podIdentity() {
		return nil, nil
	}
	if err := checkOIDCAccount(e); err != nil {
		return nil, err
	}
	arn, host := a.OIDCProviderARN, oidcIssuerHost(a.OIDCProviderARN)
	out, err := e.c.IAM.GetOpenIDConnectProvider(ctx, &iam.GetOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(arn)})
	switch {
	case err == nil:
		for _, id := range out.ClientIDList {
			if id == stsAudience {
				return &Change{Kind: kindOIDCProvider, Name: host, ID: arn, Action: ActionNoop}, nil
			}
		}
		return nil, fmt.Errorf("oidc-provider %q: its client ids %v lack %s, so STS would refuse every IRSA token (InvalidIdentityToken: Incorrect token audience); "+
			"add it: aws iam add-client-id-to-open-id-connect-provider --open-id-connect-provider-arn %s --client-id %s",
			host, out.ClientIDList, stsAudience, arn, stsAudience)
	case !isCode(err, "NoSuchEntity"):
		return nil, awsErr(kindOIDCProvider, host, "iam:GetOpenIDConnectProvider", err)
	}
	if a.OIDCIssuerURL == "" {
		return nil, fmt.Errorf("oidc-provider %q: iam:GetOpenIDConnectProvider found no %s in account %s: the IRSA roles would trust a provider that does not exist. "+
			"Create it (eksctl utils associate-iam-oidc-provider --cluster CLUSTER --approve, in this account) or set access.oidc_issuer_url: https://%s to let apply create it",
			host, arn, e.account, host)
	}
	c := &Change{Kind: kindOIDCProvider, Name: host, Action: ActionCreate,
		Fields: []FieldDiff{{Field: "url", To: a.OIDCIssuerURL}, {Field: "client_ids", To: stsAudience}}}
	if !apply {
		return c, nil
	}
	p.log.Info("create started: oidc-provider " + host)
	_, err = e.c.IAM.CreateOpenIDConnectProvider(ctx, &iam.CreateOpenIDConnectProviderInput{Url: aws.String(a.OIDCIssuerURL),
		ClientIDList: []string{stsAudience},
		Tags:         []iamt.Tag{{Key: aws.String(TagManagedBy), Value: aws.String(ManagedByValue)}, {Key: aws.String(TagPrefix + "created-for"), Value: aws.String(e.spec.Name)}}})
	if err != nil && !isCode(err, "EntityAlreadyExists") {
		return c, awsErr(kindOIDCProvider, host, "iam:CreateOpenIDConnectProvider", err)
	}
	if strings.TrimPrefix(a.OIDCIssuerURL, "https://") != host {
		return c, fmt.Errorf("oidc-provider %q: issuer URL %s does not match the ARN", host, a.OIDCIssuerURL)
	}
	return c, nil
}
