// Package iamtoken verifies RDS IAM authentication tokens the way RDS does: it recomputes the
// SigV4 presigned-URL signature from the secret key that issued the credentials and checks
// expiry, the host:port the token was signed for, the DB user, the region and the service.
//
// It deliberately does not use the SDK's signer: a verifier that shares code with the signer
// would agree with any bug in it. The tests round-trip tokens minted by the real
// feature/rds/auth to prove the two independently agree.
package iamtoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Errors returned by Verify, wrapped with details; test with errors.Is.
var (
	ErrMalformed        = errors.New("malformed token")
	ErrUnknownAccessKey = errors.New("unknown access key")
	ErrBadSignature     = errors.New("signature does not match")
	ErrExpired          = errors.New("token expired")
	ErrNotYetValid      = errors.New("token not yet valid")
	ErrWrongHost        = errors.New("token signed for another host")
	ErrWrongUser        = errors.New("token signed for another DB user")
	ErrWrongScope       = errors.New("token signed for another region or service")
	ErrSessionToken     = errors.New("session token does not match the credentials")
)

const (
	algorithm = "AWS4-HMAC-SHA256"
	service   = "rds-db"
	// maxExpires is what RDS allows: tokens live 15 minutes at most.
	maxExpires = 900 * time.Second
	// clockSkew tolerates a signer whose clock runs slightly ahead of ours.
	clockSkew = 5 * time.Minute
	// amzDateFormat is the ISO 8601 basic format SigV4 uses for X-Amz-Date.
	amzDateFormat = "20060102T150405Z"
)

// Options say what a valid token must look like and where to find the signing secrets.
type Options struct {
	// ExpectHost is the host:port the token must be signed for (the RDS endpoint).
	ExpectHost string
	// ExpectUser is the DB user the client logs in as; the token must name the same user.
	ExpectUser string
	// Region is the AWS region the token must be scoped to.
	Region string
	// Lookup returns the secret key and session token issued with an access key id.
	// A sessionToken of "" means long-term credentials, which carry no X-Amz-Security-Token.
	Lookup func(accessKeyID string) (secret, sessionToken string, ok bool)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Claims are what a verified token says.
type Claims struct {
	AccessKeyID string
	User        string
	Host        string
	Region      string
	SignedAt    time.Time
	Expires     time.Time
}

// Verify checks token against o and returns the first problem found, wrapping one of the
// package's Err* values. Structural problems are reported before signature problems so that a
// test gets the most specific reason; time and session token are judged only once the
// signature is good. Claims are filled in as far as the token could be parsed, also on error.
func Verify(token string, o Options) (Claims, error) {
	var c Claims
	if o.Lookup == nil {
		return c, fmt.Errorf("iamtoken: no Lookup configured")
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	if strings.Contains(token, "://") {
		return c, fmt.Errorf("%w: has a URL scheme (RDS tokens have none)", ErrMalformed)
	}
	hostPath, rawQuery, ok := strings.Cut(token, "?")
	if !ok {
		return c, fmt.Errorf("%w: no query string", ErrMalformed)
	}
	// The SDK emits "host:port/?..." or "host:port?..." depending on whether the signer
	// normalised the empty path; both sign the canonical path "/".
	host := strings.TrimSuffix(hostPath, "/")
	if host == "" || strings.Contains(host, "/") {
		return c, fmt.Errorf("%w: %q is not host:port with an empty path", ErrMalformed, hostPath)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return c, fmt.Errorf("%w: query: %v", ErrMalformed, err)
	}
	for k, v := range q {
		if len(v) != 1 {
			return c, fmt.Errorf("%w: parameter %s given %d times", ErrMalformed, k, len(v))
		}
	}
	for _, k := range []string{"Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
		"X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"} {
		if q.Get(k) == "" {
			return c, fmt.Errorf("%w: missing %s", ErrMalformed, k)
		}
	}
	if a := q.Get("Action"); a != "connect" {
		return c, fmt.Errorf("%w: Action=%q, want connect", ErrMalformed, a)
	}
	if a := q.Get("X-Amz-Algorithm"); a != algorithm {
		return c, fmt.Errorf("%w: algorithm %q", ErrMalformed, a)
	}
	if h := q.Get("X-Amz-SignedHeaders"); h != "host" {
		return c, fmt.Errorf("%w: signed headers %q, want host", ErrMalformed, h)
	}
	cred := strings.Split(q.Get("X-Amz-Credential"), "/")
	if len(cred) != 5 || cred[4] != "aws4_request" {
		return c, fmt.Errorf("%w: credential scope %q", ErrMalformed, q.Get("X-Amz-Credential"))
	}
	akid, scopeDate, region, svc := cred[0], cred[1], cred[2], cred[3]
	signedAt, err := time.Parse(amzDateFormat, q.Get("X-Amz-Date"))
	if err != nil {
		return c, fmt.Errorf("%w: X-Amz-Date: %v", ErrMalformed, err)
	}
	if signedAt.Format("20060102") != scopeDate {
		return c, fmt.Errorf("%w: scope date %s does not match X-Amz-Date", ErrMalformed, scopeDate)
	}
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || secs <= 0 {
		return c, fmt.Errorf("%w: X-Amz-Expires %q", ErrMalformed, q.Get("X-Amz-Expires"))
	}
	expires := time.Duration(secs) * time.Second
	if expires > maxExpires {
		return c, fmt.Errorf("%w: X-Amz-Expires %d exceeds %d", ErrMalformed, secs, int(maxExpires.Seconds()))
	}
	c = Claims{AccessKeyID: akid, User: q.Get("DBUser"), Host: host, Region: region,
		SignedAt: signedAt, Expires: signedAt.Add(expires)}

	if svc != service || region != o.Region {
		return c, fmt.Errorf("%w: scope %s/%s, want %s/%s", ErrWrongScope, region, svc, o.Region, service)
	}
	if o.ExpectHost != "" && host != o.ExpectHost {
		return c, fmt.Errorf("%w: %q, want %q", ErrWrongHost, host, o.ExpectHost)
	}
	if c.User != o.ExpectUser {
		return c, fmt.Errorf("%w: token for %q, login as %q", ErrWrongUser, c.User, o.ExpectUser)
	}
	secret, sessionToken, ok := o.Lookup(akid)
	if !ok {
		return c, fmt.Errorf("%w: %s", ErrUnknownAccessKey, akid)
	}
	want := Sign(secret, host, region, signedAt, q)
	got, err := hex.DecodeString(q.Get("X-Amz-Signature"))
	if err != nil || !hmac.Equal(got, want) {
		return c, fmt.Errorf("%w (access key %s)", ErrBadSignature, akid)
	}
	// Only a token with a valid signature gets its time and session token judged, so that a
	// forged token is always reported as a bad signature.
	t := now()
	if t.After(c.Expires) {
		return c, fmt.Errorf("%w: at %s (now %s)", ErrExpired, c.Expires.Format(time.RFC3339), t.UTC().Format(time.RFC3339))
	}
	if signedAt.After(t.Add(clockSkew)) {
		return c, fmt.Errorf("%w: signed at %s (now %s)", ErrNotYetValid, signedAt.Format(time.RFC3339), t.UTC().Format(time.RFC3339))
	}
	if q.Get("X-Amz-Security-Token") != sessionToken {
		return c, fmt.Errorf("%w (access key %s)", ErrSessionToken, akid)
	}
	return c, nil
}

// Sign computes the SigV4 signature of a presigned "GET host/?query" request, with every
// query parameter except X-Amz-Signature signed and "host" the only signed header. Exported
// so that tests can forge tokens with a chosen secret.
func Sign(secret, host, region string, signedAt time.Time, q url.Values) []byte {
	signed := url.Values{}
	for k, v := range q {
		if k != "X-Amz-Signature" {
			signed[k] = v
		}
	}
	canonical := strings.Join([]string{
		"GET",
		"/",
		canonicalQuery(signed),
		"host:" + host + "\n",
		"host",
		hexSHA256(""), // the RDS signer signs an empty payload hash
	}, "\n")
	date := signedAt.UTC().Format("20060102")
	scope := date + "/" + region + "/" + service + "/aws4_request"
	stringToSign := algorithm + "\n" + signedAt.UTC().Format(amzDateFormat) + "\n" + scope + "\n" + hexSHA256(canonical)
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	k = hmacSHA256(k, "aws4_request")
	return hmacSHA256(k, stringToSign)
}

// canonicalQuery sorts by key and percent-encodes per RFC 3986 (unreserved characters kept,
// space as %20), which is what SigV4 requires; url.Values.Encode sorts and differs only in
// writing space as '+'.
func canonicalQuery(q url.Values) string {
	return strings.ReplaceAll(q.Encode(), "+", "%20")
}

func hexSHA256(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// Forge builds a token the way feature/rds/auth does but with a chosen signing time, lifetime
// and secret, so that tests can present expired, future-dated or wrongly signed tokens that are
// otherwise well formed. sessionToken "" leaves X-Amz-Security-Token out.
func Forge(host, region, user, accessKeyID, secret, sessionToken string, signedAt time.Time, expires time.Duration) string {
	signedAt = signedAt.UTC()
	q := url.Values{
		"Action":              {"connect"},
		"DBUser":              {user},
		"X-Amz-Algorithm":     {algorithm},
		"X-Amz-Credential":    {accessKeyID + "/" + signedAt.Format("20060102") + "/" + region + "/" + service + "/aws4_request"},
		"X-Amz-Date":          {signedAt.Format(amzDateFormat)},
		"X-Amz-Expires":       {strconv.Itoa(int(expires / time.Second))},
		"X-Amz-SignedHeaders": {"host"},
	}
	if sessionToken != "" {
		q.Set("X-Amz-Security-Token", sessionToken)
	}
	q.Set("X-Amz-Signature", hex.EncodeToString(Sign(secret, host, region, signedAt, q)))
	return host + "/?" + canonicalQuery(q)
}
