package world_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go"

	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// retrieveAs gets credentials the way the sidecar does, with the world's IRSA environment.
func retrieveAs(ctx context.Context, t *testing.T, w *world.World) (string, error) {
	t.Helper()
	w.SetEnv(t.Setenv)
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.Credentials.Retrieve(ctx)
	return c.AccessKeyID, err
}

// The standard world's role trusts the pod's ServiceAccount and allows rds-db:connect as the
// world's db user on each stand-in's resource, and nothing else.
func TestWorldIAM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := world.Start(ctx, world.Options{Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	w.CloseOnCleanup(t)
	if !strings.HasPrefix(w.STS.Issuer(), "https://oidc.eks.us-east-1.amazonaws.com/id/") || w.OIDCProviderARN != w.STS.ProviderARN() ||
		!strings.HasPrefix(w.DBUserResource, "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-") {
		t.Fatalf("issuer %s, provider %s, resource %s", w.STS.Issuer(), w.OIDCProviderARN, w.DBUserResource)
	}
	akid, err := retrieveAs(ctx, t, w)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AuthorizeDBConnect(akid, w.DBUserResource+"/"+w.DBUser); err != nil {
		t.Errorf("the world's db user: %v", err)
	}
	for _, arn := range []string{w.DBUserResource + "/postgres", "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-other/" + w.DBUser} {
		if err := w.AuthorizeDBConnect(akid, arn); err == nil || !strings.Contains(err.Error(), "not authorized to perform: rds-db:connect") {
			t.Errorf("%s: %v, want refused", arn, err)
		}
	}
}

// A world whose role trusts another ServiceAccount: STS refuses the pod's token.
func TestWorldTrustSubject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := world.Start(ctx, world.Options{Dir: t.TempDir(), Logf: t.Logf, TrustSubject: "system:serviceaccount:billing:api"})
	if err != nil {
		t.Fatal(err)
	}
	w.CloseOnCleanup(t)
	var ae smithy.APIError
	if _, err := retrieveAs(ctx, t, w); !errors.As(err, &ae) || ae.ErrorCode() != "AccessDenied" {
		t.Fatalf("got %v, want AccessDenied", err)
	}
	if n := len(w.STS.Issued()); n != 0 {
		t.Fatalf("%d credentials issued", n)
	}
}

// A world whose role policy allows another db user: the credential is issued but may not
// connect as the world's user.
func TestWorldDBUsersAllowed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := world.Start(ctx, world.Options{Dir: t.TempDir(), Logf: t.Logf, DBUsersAllowed: []string{"reporting"}})
	if err != nil {
		t.Fatal(err)
	}
	w.CloseOnCleanup(t)
	akid, err := retrieveAs(ctx, t, w)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AuthorizeDBConnect(akid, w.DBUserResource+"/"+w.DBUser); err == nil {
		t.Error("the world's db user is allowed")
	}
	if err := w.AuthorizeDBConnect(akid, w.DBUserResource+"/reporting"); err != nil {
		t.Errorf("the allowed user: %v", err)
	}
}
