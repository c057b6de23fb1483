package mysqlstandin

// TEMPORARY: this token verifier stands in for the shared SigV4 verifier of test/harness/iamtoken
// (built on another branch). Replace NewTokenVerifier's uses with iamtoken's at merge time;
// Config.Verify takes any func(token, user string) error.

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// Credentials are what the verifier knows of one access key.
type Credentials struct {
	SecretAccessKey string
	SessionToken    string // when set, tokens must carry it
}

// NewTokenVerifier checks RDS IAM auth tokens as RDS does: signed (SigV4, presigned URL,
// service rds-db) with a known access key for tokenHost in region, Action=connect, DBUser equal
// to the login user, and not expired.
func NewTokenVerifier(keys map[string]Credentials, region, tokenHost string, now func() time.Time) func(token, user string) error {
	if now == nil {
		now = time.Now
	}
	return func(token, user string) error {
		host, rawQuery, ok := strings.Cut(token, "?")
		host = strings.TrimSuffix(host, "/")
		if !ok {
			return errors.New("not an RDS auth token (no query)")
		}
		if host != tokenHost {
			return fmt.Errorf("token is for %q, not %q", host, tokenHost)
		}
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return fmt.Errorf("token query: %w", err)
		}
		if q.Get("Action") != "connect" {
			return fmt.Errorf("token action %q", q.Get("Action"))
		}
		if q.Get("DBUser") != user {
			return fmt.Errorf("token is for user %q, login is for %q", q.Get("DBUser"), user)
		}
		if q.Get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" {
			return errors.New("token algorithm is not AWS4-HMAC-SHA256")
		}
		scope := strings.Split(q.Get("X-Amz-Credential"), "/")
		if len(scope) != 5 || scope[3] != "rds-db" || scope[4] != "aws4_request" {
			return fmt.Errorf("token credential scope %q", q.Get("X-Amz-Credential"))
		}
		if scope[2] != region {
			return fmt.Errorf("token is for region %q, not %q", scope[2], region)
		}
		creds, ok := keys[scope[0]]
		if !ok {
			return fmt.Errorf("unknown access key %q", scope[0])
		}
		if creds.SessionToken != "" && q.Get("X-Amz-Security-Token") != creds.SessionToken {
			return errors.New("token carries the wrong session token")
		}
		signed, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
		if err != nil {
			return fmt.Errorf("token date: %w", err)
		}
		if scope[1] != signed.Format("20060102") {
			return errors.New("token date and credential scope disagree")
		}
		expires, err := strconv.Atoi(q.Get("X-Amz-Expires"))
		if err != nil || expires <= 0 || expires > 900 {
			return fmt.Errorf("token expiry %q", q.Get("X-Amz-Expires"))
		}
		t := now()
		if t.After(signed.Add(time.Duration(expires) * time.Second)) {
			return fmt.Errorf("token expired at %s", signed.Add(time.Duration(expires)*time.Second).Format(time.RFC3339))
		}
		if signed.After(t.Add(5 * time.Minute)) {
			return errors.New("token is signed in the future")
		}

		// Sign the same request again and compare signatures.
		want := url.Values{}
		want.Set("Action", "connect")
		want.Set("DBUser", user)
		want.Set("X-Amz-Expires", q.Get("X-Amz-Expires"))
		req, err := http.NewRequest(http.MethodGet, "https://"+host+"?"+want.Encode(), nil)
		if err != nil {
			return err
		}
		ac := aws.Credentials{AccessKeyID: scope[0], SecretAccessKey: creds.SecretAccessKey, SessionToken: q.Get("X-Amz-Security-Token")}
		signedURL, _, err := v4.NewSigner().PresignHTTP(context.Background(), ac, req, emptyPayloadHash, "rds-db", region, signed)
		if err != nil {
			return err
		}
		u, err := url.Parse(signedURL)
		if err != nil {
			return err
		}
		got, exp := q.Get("X-Amz-Signature"), u.Query().Get("X-Amz-Signature")
		if len(q["X-Amz-Signature"]) != 1 || subtle.ConstantTimeCompare([]byte(got), []byte(exp)) != 1 {
			return errors.New("token signature does not match")
		}
		// Every parameter of the token must be one we signed.
		for k := range q {
			if _, ok := u.Query()[k]; !ok {
				return fmt.Errorf("token carries unsigned parameter %q", k)
			}
		}
		return nil
	}
}
