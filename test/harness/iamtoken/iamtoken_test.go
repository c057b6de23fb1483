package iamtoken

import (
	"context"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
)

const (
	host   = "orders.proxy-test.us-east-1.rds.amazonaws.com:5432"
	region = "us-east-1"
	akid   = "ASIATESTACCESSKEY001"
	secret = "s3cr3t/with+odd=chars"
	sess   = "FwoGZXIvYXdzE+session/token=="
)

func lookup(id string) (string, string, bool) {
	if id == akid {
		return secret, sess, true
	}
	return "", "", false
}

func mint(t *testing.T, endpoint, user, key, sec, tok string) string {
	t.Helper()
	tokStr, err := auth.BuildAuthToken(context.Background(), endpoint, region, user,
		credentials.NewStaticCredentialsProvider(key, sec, tok))
	if err != nil {
		t.Fatal(err)
	}
	return tokStr
}

func opts() Options {
	return Options{ExpectHost: host, ExpectUser: "app", Region: region, Lookup: lookup}
}

func TestRoundTripSDKToken(t *testing.T) {
	for _, user := range []string{"app", "user with space", "ünïcode~.-_", "a+b/c=d"} {
		tok := mint(t, host, user, akid, secret, sess)
		o := opts()
		o.ExpectUser = user
		c, err := Verify(tok, o)
		if err != nil {
			t.Fatalf("user %q: genuine SDK token refused: %v\n%s", user, err, tok)
		}
		if c.User != user || c.Host != host || c.AccessKeyID != akid || c.Expires.Sub(c.SignedAt) != 15*time.Minute {
			t.Fatalf("claims %+v", c)
		}
	}
}

func TestLongTermCredentials(t *testing.T) {
	tok := mint(t, host, "app", "AKIALONGTERM", secret, "")
	o := opts()
	o.Lookup = func(id string) (string, string, bool) { return secret, "", id == "AKIALONGTERM" }
	if _, err := Verify(tok, o); err != nil {
		t.Fatalf("long-term credential token refused: %v", err)
	}
}

func TestRefused(t *testing.T) {
	good := mint(t, host, "app", akid, secret, sess)
	tamper := func(k, v string) string {
		h, q, _ := strings.Cut(good, "?")
		vals, err := url.ParseQuery(q)
		if err != nil {
			t.Fatal(err)
		}
		vals.Set(k, v)
		return h + "?" + vals.Encode()
	}
	later := func(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }
	cases := []struct {
		name  string
		token string
		mod   func(*Options)
		want  error
	}{
		{"forged with another secret", mint(t, host, "app", akid, "not-the-secret", sess), nil, ErrBadSignature},
		{"unknown access key", mint(t, host, "app", "ASIAUNKNOWN", secret, sess), nil, ErrUnknownAccessKey},
		{"expired", good, func(o *Options) { o.Now = later(16 * time.Minute) }, ErrExpired},
		{"from the future", good, func(o *Options) { o.Now = later(-time.Hour) }, ErrNotYetValid},
		{"wrong user", mint(t, host, "admin", akid, secret, sess), nil, ErrWrongUser},
		{"wrong host", mint(t, "other.rds.amazonaws.com:5432", "app", akid, secret, sess), nil, ErrWrongHost},
		{"wrong port", mint(t, "orders.proxy-test.us-east-1.rds.amazonaws.com:3306", "app", akid, secret, sess), nil, ErrWrongHost},
		{"wrong region", good, func(o *Options) { o.Region = "eu-west-1" }, ErrWrongScope},
		{"session token swapped", mint(t, host, "app", akid, secret, "another-session"), nil, ErrSessionToken},
		{"user tampered", tamper("DBUser", "admin"), func(o *Options) { o.ExpectUser = "admin" }, ErrBadSignature},
		{"expiry extended", tamper("X-Amz-Expires", "899"), nil, ErrBadSignature},
		{"signature flipped", tamper("X-Amz-Signature", strings.Repeat("0", 64)), nil, ErrBadSignature},
		{"expires too long", tamper("X-Amz-Expires", "3600"), nil, ErrMalformed},
		{"with scheme", "https://" + good, nil, ErrMalformed},
		{"not a token", "hunter2", nil, ErrMalformed},
		{"empty", "", nil, ErrMalformed},
		{"no signature", tamper("X-Amz-Signature", ""), nil, ErrMalformed},
		{"wrong action", tamper("Action", "disconnect"), nil, ErrMalformed},
		{"wrong service", tamper("X-Amz-Credential", strings.Replace(mustQuery(t, good).Get("X-Amz-Credential"), "rds-db", "s3", 1)), nil, ErrWrongScope},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := opts()
			if tc.mod != nil {
				tc.mod(&o)
			}
			_, err := Verify(tc.token, o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v\n%s", err, tc.want, tc.token)
			}
		})
	}
}

// TestSignMatchesSDK pins Sign to the SDK signer byte for byte, which is what lets tests forge
// tokens with Sign and trust that only the secret differs.
func TestSignMatchesSDK(t *testing.T) {
	tok := mint(t, host, "app", akid, secret, sess)
	q := mustQuery(t, tok)
	at, err := time.Parse(amzDateFormat, q.Get("X-Amz-Date"))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(Sign(secret, host, region, at, q)); got != q.Get("X-Amz-Signature") {
		t.Fatalf("Sign = %s, SDK = %s", got, q.Get("X-Amz-Signature"))
	}
}

func mustQuery(t *testing.T, tok string) url.Values {
	t.Helper()
	_, raw, _ := strings.Cut(tok, "?")
	q, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestForge(t *testing.T) {
	now := time.Now()
	tok := Forge(host, region, "app", akid, secret, sess, now.Add(-time.Minute), 15*time.Minute)
	if _, err := Verify(tok, opts()); err != nil {
		t.Fatalf("forged-but-valid token refused: %v", err)
	}
	old := Forge(host, region, "app", akid, secret, sess, now.Add(-20*time.Minute), 15*time.Minute)
	if _, err := Verify(old, opts()); !errors.Is(err, ErrExpired) {
		t.Fatalf("old token: %v, want ErrExpired", err)
	}
}
