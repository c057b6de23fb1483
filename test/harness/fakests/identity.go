package fakests

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/awsiam"
)

// The identity side of the fake: the cluster's OIDC issuer that signs the ServiceAccount
// tokens, the IAM OIDC provider for it in the role's account, the role with its trust and
// permission policies, and what STS and the Pod Identity agent check before they issue.

// Audiences of the projected ServiceAccount tokens: IRSA's token is for STS ("Assign IAM roles
// to Kubernetes service accounts"), Pod Identity's for the EKS Auth API
// (https://docs.aws.amazon.com/eks/latest/userguide/pod-id-how-it-works.html).
const (
	STSAudience         = "sts.amazonaws.com"
	PodIdentityAudience = "pods.eks.amazonaws.com"
	// DefaultSubject is the ServiceAccount tokens are minted for when Options.Subject is empty.
	DefaultSubject = "system:serviceaccount:test:app"
	// defaultTokenLifetime is a projected token's default expirationSeconds (86400) as the EKS
	// Pod Identity webhook sets it for IRSA.
	defaultTokenLifetime = 24 * time.Hour
)

// TokenClaims choose a token's claims; zero values are the standard IRSA token for
// Options.Subject from this server's issuer, expiring after Options.TokenLifetime.
type TokenClaims struct {
	Sub, Aud, Iss string
	Exp           time.Time
}

// identity is the server's issuer and role, fixed at Start.
type identity struct {
	key         *rsa.PrivateKey
	issuer      string // https://oidc.eks.REGION.amazonaws.com/id/ID
	host        string // issuer without https://: the trust conditions' key prefix
	account     string // the role's account, where the IAM OIDC provider is
	providerARN string
	trust       string
	policies    []string
}

func newIdentity(o Options) (identity, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return identity{}, fmt.Errorf("fakests: issuer key: %w", err)
	}
	id := identity{key: key, issuer: o.Issuer, account: accountOf(o.RoleARN), policies: append([]string(nil), o.Policies...)}
	if id.issuer == "" {
		id.issuer = "https://oidc.eks.us-east-1.amazonaws.com/id/" + randString(32, "0123456789ABCDEF")
	}
	if !strings.HasPrefix(id.issuer, "https://") {
		return identity{}, fmt.Errorf("fakests: issuer %q must be an https:// URL", id.issuer)
	}
	id.host = strings.TrimPrefix(id.issuer, "https://")
	id.providerARN = "arn:aws:iam::" + id.account + ":oidc-provider/" + id.host
	id.trust = o.Trust
	if id.trust == "" {
		id.trust = awsiam.Merge(awsiam.IRSATrust(id.providerARN, id.host, o.Subject), awsiam.PodIdentityTrust())
	}
	return id, nil
}

func accountOf(arn string) string {
	if parts := strings.Split(arn, ":"); len(parts) > 4 && parts[4] != "" {
		return parts[4]
	}
	return "123456789012"
}

// Issuer is the OIDC issuer URL (the tokens' iss, the cluster's OIDC issuer).
func (s *Server) Issuer() string { return s.id.issuer }

// ProviderARN is the IAM OIDC provider for the issuer, in the role's account: the Federated
// principal an IRSA trust policy names.
func (s *Server) ProviderARN() string { return s.id.providerARN }

// Token signs a ServiceAccount token (RS256 JWT, a fresh jti each time) with the issuer's key,
// as the kubelet gets it for a projected volume; the server remembers it for RotateToken.
func (s *Server) Token(c TokenClaims) string {
	if c.Sub == "" {
		c.Sub = s.opts.Subject
	}
	if c.Aud == "" {
		c.Aud = STSAudience
	}
	if c.Iss == "" {
		c.Iss = s.id.issuer
	}
	now := s.opts.Now()
	if c.Exp.IsZero() {
		c.Exp = now.Add(s.opts.TokenLifetime)
	}
	tok, err := awsiam.SignJWT(s.id.key, "fakests", map[string]any{"iss": c.Iss, "sub": c.Sub, "aud": c.Aud,
		"jti": randString(16, "0123456789abcdef"), "iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": c.Exp.Unix()})
	if err != nil {
		panic(err) // an RSA key always signs
	}
	s.mu.Lock()
	s.minted[tok] = true
	s.mu.Unlock()
	return tok
}

// NewToken is Token(TokenClaims{}): an IRSA token for Options.Subject.
func (s *Server) NewToken() string { return s.Token(TokenClaims{}) }

// PodIdentityToken is a token for Options.Subject with the Pod Identity audience.
func (s *Server) PodIdentityToken() string { return s.Token(TokenClaims{Aud: PodIdentityAudience}) }

// verifyToken checks tok as AWS does (awsiam.VerifyWebIdentity: issuer known in account,
// signature, expiry, audience aud) and then the rejected set, which stands for tokens past
// their expiry. It returns the claims or the *awsiam.TokenError.
func (s *Server) verifyToken(tok, account, aud string) (awsiam.Claims, error) {
	_, cl, err := awsiam.VerifyWebIdentity(tok, func(iss string) (awsiam.Provider, bool) {
		if iss != s.id.issuer || account != s.id.account {
			return awsiam.Provider{}, false
		}
		return awsiam.Provider{ARN: s.id.providerARN, Host: s.id.host, ClientIDs: []string{aud}, Keys: []crypto.PublicKey{&s.id.key.PublicKey}}, true
	}, s.opts.Now())
	if err != nil {
		return cl, err
	}
	s.mu.Lock()
	rejected := s.rejected[tok]
	s.mu.Unlock()
	if rejected {
		// RejectToken: the token was rotated away and has expired, which AWS answers with
		// ExpiredTokenException (API_AssumeRoleWithWebIdentity, Errors).
		return cl, &awsiam.TokenError{Code: "ExpiredTokenException", Message: "Token expired: the token was rotated and is past its expiration date/time"}
	}
	return cl, nil
}

// trusts evaluates the role's trust policy for the request.
func (s *Server) trusts(req awsiam.Request) bool {
	return awsiam.Evaluate([]string{s.id.trust}, req) == awsiam.Allow
}

// Authorized decides whether the credentials of accessKeyID may perform action on resource,
// from the permission policies of the role they were issued for (Options.Policies), as IAM does
// for an identity-based policy ("Policy evaluation logic"): an explicit Deny wins, else an
// Allow is needed. The error reads like AWS's AccessDenied message. An RDS stand-in asks it
// for rds-db:connect on the db user's ARN.
func (s *Server) Authorized(accessKeyID, action, resource string) error {
	s.mu.Lock()
	c, ok := s.issued[accessKeyID]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("the security token included in the request is invalid (unknown access key %s)", accessKeyID)
	}
	who := c.sessionARN()
	switch awsiam.Evaluate(s.id.policies, awsiam.Request{Action: action, Resource: resource}) {
	case awsiam.Allow:
		return nil
	case awsiam.ExplicitDeny:
		return fmt.Errorf("User: %s is not authorized to perform: %s on resource: %s with an explicit deny in an identity-based policy", who, action, resource)
	}
	return fmt.Errorf("User: %s is not authorized to perform: %s on resource: %s because no identity-based policy allows the %s action", who, action, resource, action)
}

func (c Credential) sessionARN() string {
	return "arn:aws:sts::" + accountOf(c.RoleARN) + ":assumed-role/" + c.RoleARN[strings.LastIndex(c.RoleARN, "/")+1:] + "/" + c.SessionName
}

func tokenError(err error) *awsiam.TokenError {
	var te *awsiam.TokenError
	if errors.As(err, &te) {
		return te
	}
	return &awsiam.TokenError{Code: "InvalidIdentityToken", Message: err.Error()}
}
