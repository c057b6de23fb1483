package fakeaws

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
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

// jwtClaims are the claims AssumeRoleWithWebIdentity looks at.
type jwtClaims struct {
	Iss string     `json:"iss"`
	Sub string     `json:"sub"`
	Aud stringList `json:"aud"`
	Exp int64      `json:"exp"`
	Nbf int64      `json:"nbf"`
}

var errBadJWT = errors.New("malformed JWT")

// parseJWT splits and decodes a compact JWS without checking its signature.
func parseJWT(tok string) (alg string, claims jwtClaims, signed, sig []byte, err error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", claims, nil, nil, errBadJWT
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return "", claims, nil, nil, errBadJWT
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hb, &h) != nil || json.Unmarshal(cb, &claims) != nil {
		return "", claims, nil, nil, errBadJWT
	}
	return h.Alg, claims, []byte(parts[0] + "." + parts[1]), sig, nil
}

// verifyJWTSignature checks sig over signed with any of the keys (RS256 or ES256).
func verifyJWTSignature(alg string, signed, sig []byte, keys []crypto.PublicKey) bool {
	sum := sha256.Sum256(signed)
	for _, k := range keys {
		switch pk := k.(type) {
		case *rsa.PublicKey:
			if alg == "RS256" && rsa.VerifyPKCS1v15(pk, crypto.SHA256, sum[:], sig) == nil {
				return true
			}
		case *ecdsa.PublicKey:
			if alg == "ES256" && len(sig) == 64 &&
				ecdsa.Verify(pk, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
				return true
			}
		}
	}
	return false
}

// checkWebIdentity validates a web identity token for a role in account, the order AWS
// documents for AssumeRoleWithWebIdentity
// (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html):
// the token must parse, its issuer must be an IAM OIDC provider of the role's account, the
// signature must verify with the issuer's keys, it must not be expired, and its audience must
// be one of the provider's client ids. It returns the provider and the claims.
func (id *identityState) checkWebIdentity(tok, account string, now time.Time) (*oidcProvider, jwtClaims, *apiError) {
	alg, cl, signed, sig, err := parseJWT(tok)
	if err != nil {
		return nil, cl, errf(400, "InvalidIdentityToken", "The ID Token provided is not a valid JWT.")
	}
	p := id.providers["arn:aws:iam::"+account+":oidc-provider/"+strings.TrimPrefix(cl.Iss, "https://")]
	if p == nil || !strings.HasPrefix(cl.Iss, "https://") {
		return nil, cl, errf(400, "InvalidIdentityToken", "No OpenIDConnect provider found in your account for %s", cl.Iss)
	}
	if !verifyJWTSignature(alg, signed, sig, id.issuerKeys[cl.Iss]) {
		return nil, cl, errf(400, "InvalidIdentityToken", "Couldn't verify the token signature with the keys of the identity provider %s", cl.Iss)
	}
	if cl.Exp == 0 || now.Unix() >= cl.Exp {
		return nil, cl, errf(400, "ExpiredTokenException", "Token expired: current date/time %d must be before the expiration date/time %d", now.Unix(), cl.Exp)
	}
	if cl.Nbf != 0 && now.Unix() < cl.Nbf {
		return nil, cl, errf(400, "InvalidIdentityToken", "Token is not valid yet (nbf %d)", cl.Nbf)
	}
	aud := ""
	for _, a := range cl.Aud {
		if contains(p.clientIDs, a) {
			aud = a
		}
	}
	if aud == "" {
		return nil, cl, errf(400, "InvalidIdentityToken", "Incorrect token audience")
	}
	cl.Aud = stringList{aud}
	return p, cl, nil
}

// SignJWT makes a compact RS256 or ES256 JWT over claims with key (*rsa.PrivateKey or
// *ecdsa.PrivateKey with P-256), as an OIDC issuer (the EKS cluster) does for a projected
// ServiceAccount token. For tests.
func SignJWT(key crypto.Signer, kid string, claims map[string]any) (string, error) {
	alg := "RS256"
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		alg = "ES256"
	}
	hb, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT", "kid": kid})
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signed := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(nil, k, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k, sum[:])
		if err == nil {
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	default:
		return "", fmt.Errorf("SignJWT: unsupported key %T", key)
	}
	if err != nil {
		return "", err
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
