package awsiam

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

// Web identity tokens: the JWTs an OIDC issuer (an EKS cluster) signs for a ServiceAccount, and
// what AWS checks before it trusts one.

// Claims are the claims AssumeRoleWithWebIdentity looks at.
type Claims struct {
	Iss string     `json:"iss"`
	Sub string     `json:"sub"`
	Aud StringList `json:"aud"`
	Exp int64      `json:"exp"`
	Nbf int64      `json:"nbf"`
}

// Provider is an OIDC identity provider as the verifier sees it: ARN is the IAM provider's ARN
// (the Federated principal of a trust policy), Host the issuer URL without https:// (the prefix
// of the :sub and :aud condition keys), ClientIDs the accepted audiences and Keys the issuer's
// public signing keys (*rsa.PublicKey for RS256, *ecdsa.PublicKey for ES256).
type Provider struct {
	ARN       string
	Host      string
	ClientIDs []string
	Keys      []crypto.PublicKey
}

// TokenError is a refusal of a token with AWS's error code (InvalidIdentityToken,
// ExpiredTokenException) and message.
type TokenError struct {
	Code, Message string
}

func (e *TokenError) Error() string { return e.Code + ": " + e.Message }

func tokenErr(code, format string, args ...any) *TokenError {
	return &TokenError{Code: code, Message: fmt.Sprintf(format, args...)}
}

var errBadJWT = errors.New("malformed JWT")

// parseJWT splits and decodes a compact JWS without checking its signature.
func parseJWT(tok string) (alg string, claims Claims, signed, sig []byte, err error) {
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

// verifySignature checks sig over signed with any of the keys (RS256 or ES256).
func verifySignature(alg string, signed, sig []byte, keys []crypto.PublicKey) bool {
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

// VerifyWebIdentity validates a web identity token in the order AWS documents for
// AssumeRoleWithWebIdentity
// (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html):
// the token must parse, its issuer (an https:// URL) must be a known provider (provider looks it
// up by iss), the signature must verify with the provider's keys, it must not be expired or
// not yet valid, and its audience must be one of the provider's client ids. It returns the
// provider and the claims with Aud reduced to the matching audience; a refusal is a *TokenError.
func VerifyWebIdentity(tok string, provider func(iss string) (Provider, bool), now time.Time) (Provider, Claims, error) {
	alg, cl, signed, sig, err := parseJWT(tok)
	if err != nil {
		return Provider{}, cl, tokenErr("InvalidIdentityToken", "The ID Token provided is not a valid JWT.")
	}
	p, ok := Provider{}, false
	if strings.HasPrefix(cl.Iss, "https://") {
		p, ok = provider(cl.Iss)
	}
	if !ok {
		return Provider{}, cl, tokenErr("InvalidIdentityToken", "No OpenIDConnect provider found in your account for %s", cl.Iss)
	}
	if !verifySignature(alg, signed, sig, p.Keys) {
		return Provider{}, cl, tokenErr("InvalidIdentityToken", "Couldn't verify the token signature with the keys of the identity provider %s", cl.Iss)
	}
	if cl.Exp == 0 || now.Unix() >= cl.Exp {
		return Provider{}, cl, tokenErr("ExpiredTokenException", "Token expired: current date/time %d must be before the expiration date/time %d", now.Unix(), cl.Exp)
	}
	if cl.Nbf != 0 && now.Unix() < cl.Nbf {
		return Provider{}, cl, tokenErr("InvalidIdentityToken", "Token is not valid yet (nbf %d)", cl.Nbf)
	}
	aud := ""
	for _, a := range cl.Aud {
		for _, id := range p.ClientIDs {
			if a == id {
				aud = a
			}
		}
	}
	if aud == "" {
		return Provider{}, cl, tokenErr("InvalidIdentityToken", "Incorrect token audience")
	}
	cl.Aud = StringList{aud}
	return p, cl, nil
}

// WebIdentityRequest is what a role's trust policy is evaluated against for a verified token:
// Principal Federated = the provider's ARN, action sts:AssumeRoleWithWebIdentity, and the
// condition keys PROVIDER:sub and PROVIDER:aud ("Available keys for AWS web identity
// federation", https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_iam-condition-keys.html#condition-keys-wif).
func WebIdentityRequest(p Provider, cl Claims) Request {
	aud := ""
	if len(cl.Aud) > 0 {
		aud = cl.Aud[0]
	}
	return Request{Principal: &Principal{Kind: "Federated", ID: p.ARN}, Action: "sts:AssumeRoleWithWebIdentity",
		Context: map[string]string{p.Host + ":sub": cl.Sub, p.Host + ":aud": aud}}
}

// SignJWT makes a compact RS256 or ES256 JWT over claims with key (*rsa.PrivateKey or
// *ecdsa.PrivateKey with P-256), as an OIDC issuer (the EKS cluster) does for a projected
// ServiceAccount token.
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
