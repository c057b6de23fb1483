package fakeaws

import (
	"crypto"
	"errors"
	"strings"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/awsiam"
)

// IAM OIDC identity providers and the web identity tokens (JWTs) they vouch for.

type oidcProvider struct {
	arn, url, account string // url without https://, as GetOpenIDConnectProvider returns it
	clientIDs         []string
	thumbprints       []string
	tags              map[string]string
}

// identityState is the fake's IAM identity side beyond roles: OIDC providers, the issuers'
// signing keys, roles of other accounts, and the role behind each issued credential.
type identityState struct {
	providers    map[string]*oidcProvider // by ARN
	issuerKeys   map[string][]crypto.PublicKey
	accountRoles map[string]*role // roles of accounts other than the fake's own, by ARN
}

func (st *state) ident() *identityState {
	if st.idn == nil {
		st.idn = &identityState{providers: map[string]*oidcProvider{}, issuerKeys: map[string][]crypto.PublicKey{},
			accountRoles: map[string]*role{}}
	}
	return st.idn
}

// AddOIDCIssuer registers a public key that signs the issuer's tokens (what AWS fetches from
// the issuer's /.well-known/openid-configuration jwks_uri). issuerURL is the token's iss,
// e.g. https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE. Keys: *rsa.PublicKey (RS256) or
// *ecdsa.PublicKey (ES256).
func (s *Server) AddOIDCIssuer(issuerURL string, pub crypto.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.st.ident()
	id.issuerKeys[issuerURL] = append(id.issuerKeys[issuerURL], pub)
}

// SeedOIDCProvider creates an IAM OIDC provider in the fake's account the way
// CreateOpenIDConnectProvider does (e.g. what eksctl made for a cluster) and returns its ARN.
func (s *Server) SeedOIDCProvider(issuerURL string, clientIDs ...string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.st.ident().newProvider(s.cfg.AccountID, issuerURL, clientIDs, nil, nil)
	return p.arn
}

// OIDCProviders lists the ARNs of every OIDC provider.
func (s *Server) OIDCProviders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedKeys(s.st.ident().providers)
}

// SeedAccountRole places a role in another account (e.g. the consumer account's role the
// provisioner assumes) with its trust policy and inline policies; returns its ARN. The fake's
// IAM API serves only its own account, so such roles are reachable through STS only.
func (s *Server) SeedAccountRole(account, name, trust string, policies map[string]string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	arn := "arn:aws:iam::" + account + ":role/" + name
	s.st.ident().accountRoles[arn] = &role{name: name, path: "/", arn: arn, id: "AROASEEDED" + strings.ToUpper(name),
		trust: trust, policies: copyTags(policies), tags: map[string]string{}}
	return arn
}

func (id *identityState) newProvider(account, url string, clientIDs, thumbs []string, tags map[string]string) *oidcProvider {
	host := strings.TrimPrefix(url, "https://")
	p := &oidcProvider{arn: "arn:aws:iam::" + account + ":oidc-provider/" + host, url: host, account: account,
		clientIDs: append([]string(nil), clientIDs...), thumbprints: append([]string(nil), thumbs...), tags: copyTags(tags)}
	id.providers[p.arn] = p
	return p
}

// iamOIDC serves the OIDC provider actions; ok is false for any other action.
func (st *state) iamOIDC(c *reqCtx, action string) (out any, aerr *apiError, ok bool) {
	id := st.ident()
	find := func() (*oidcProvider, *apiError) {
		arn := c.get("OpenIDConnectProviderArn")
		if !strings.HasPrefix(arn, "arn:aws:iam::") || !strings.Contains(arn, ":oidc-provider/") {
			return nil, errf(400, "InvalidInput", "ARN %s is not valid.", arn)
		}
		p := id.providers[arn]
		if p == nil || p.account != c.account {
			return nil, errf(404, "NoSuchEntity", "OpenIDConnect Provider not found for arn %s", arn)
		}
		return p, nil
	}
	switch action {
	case "CreateOpenIDConnectProvider":
		// https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateOpenIDConnectProvider.html:
		// the URL must begin with https://; ThumbprintList is optional (IAM then uses the
		// issuer's CA); one provider per URL and account (EntityAlreadyExists).
		url := c.get("Url")
		if !strings.HasPrefix(url, "https://") || len(url) > 255 || strings.ContainsAny(url, "?#") {
			return nil, errf(400, "InvalidInput", "Invalid Url %q: it must begin with https:// and have no query or fragment", url), true
		}
		arn := "arn:aws:iam::" + c.account + ":oidc-provider/" + strings.TrimPrefix(url, "https://")
		if id.providers[arn] != nil {
			return nil, errf(409, "EntityAlreadyExists", "Provider with url %s already exists.", url), true
		}
		p := id.newProvider(c.account, url, c.strs("ClientIDList"), c.strs("ThumbprintList"), c.tagsFrom("Tags"))
		return []X{T("OpenIDConnectProviderArn", p.arn), E("Tags", tagMembers(p.tags)...)}, nil, true
	case "GetOpenIDConnectProvider":
		// https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetOpenIDConnectProvider.html
		p, e := find()
		if e != nil {
			return nil, e, true
		}
		return []X{T("Url", p.url), Strs("ClientIDList", "member", p.clientIDs), Strs("ThumbprintList", "member", p.thumbprints),
			T("CreateDate", "2026-01-01T00:00:00Z"), E("Tags", tagMembers(p.tags)...)}, nil, true
	case "ListOpenIDConnectProviders":
		var items []X
		for _, arn := range sortedKeys(id.providers) {
			if id.providers[arn].account == c.account {
				items = append(items, E("member", T("Arn", arn)))
			}
		}
		return []X{E("OpenIDConnectProviderList", items...)}, nil, true
	case "DeleteOpenIDConnectProvider":
		p, e := find()
		if e != nil {
			return nil, e, true
		}
		delete(id.providers, p.arn)
		return nil, nil, true
	}
	return nil, nil, false
}

func tagMembers(tags map[string]string) []X {
	var out []X
	for _, k := range sortedKeys(tags) {
		out = append(out, E("member", T("Key", k), T("Value", tags[k])))
	}
	return out
}

// checkWebIdentity validates a web identity token for a role in account (awsiam.VerifyWebIdentity,
// https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html): its
// issuer must be an IAM OIDC provider of the role's account, signed with the keys registered
// by AddOIDCIssuer. It returns the provider and the claims.
func (id *identityState) checkWebIdentity(tok, account string, now time.Time) (*oidcProvider, awsiam.Claims, *apiError) {
	var found *oidcProvider
	_, cl, err := awsiam.VerifyWebIdentity(tok, func(iss string) (awsiam.Provider, bool) {
		found = id.providers["arn:aws:iam::"+account+":oidc-provider/"+strings.TrimPrefix(iss, "https://")]
		if found == nil {
			return awsiam.Provider{}, false
		}
		return awsiam.Provider{ARN: found.arn, Host: found.url, ClientIDs: found.clientIDs, Keys: id.issuerKeys[iss]}, true
	}, now)
	var te *awsiam.TokenError
	if errors.As(err, &te) {
		return nil, cl, errf(400, te.Code, "%s", te.Message)
	}
	if err != nil {
		return nil, cl, errf(400, "InvalidIdentityToken", "%v", err)
	}
	return found, cl, nil
}

// SignJWT makes a compact RS256 or ES256 JWT over claims with key, as an OIDC issuer (the EKS
// cluster) does for a projected ServiceAccount token (awsiam.SignJWT). For tests.
func SignJWT(key crypto.Signer, kid string, claims map[string]any) (string, error) {
	return awsiam.SignJWT(key, kid, claims)
}
