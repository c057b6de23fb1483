package world_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go"

	"github.com/rdsvalet/rds-valet/test/harness/world"
)

func TestWorld(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := world.Start(ctx, world.Options{Logf: t.Logf}) // no Dir: the world owns a temp dir
	if err != nil {
		t.Fatal(err)
	}
	dir := w.Dir

	t.Run("environment", func(t *testing.T) {
		env := w.Environ([]string{"PATH=/bin", "AWS_ACCESS_KEY_ID=AKIAAMBIENT", "AWS_PROFILE=dev", "HOME=/root"})
		for _, want := range []string{"PATH=/bin", "HOME=/root", "AWS_REGION=us-east-1", "AWS_ENDPOINT_URL_STS=" + w.STS.URL,
			"AWS_WEB_IDENTITY_TOKEN_FILE=" + w.TokenFile, "AWS_ROLE_ARN=" + w.STS.RoleARN(), "AWS_EC2_METADATA_DISABLED=true",
			"AWS_ACCESS_KEY_ID=", "AWS_PROFILE="} {
			if !slices.Contains(env, want) {
				t.Errorf("Environ lacks %q", want)
			}
		}
		for _, kv := range env {
			if strings.Contains(kv, "AKIAAMBIENT") || kv == "AWS_PROFILE=dev" {
				t.Errorf("ambient %q leaked", kv)
			}
		}
		if b, err := os.ReadFile(w.TokenFile); err != nil || string(b) != w.WebIdentityToken {
			t.Errorf("token file: %q %v", b, err)
		}
		if w.TokenHost != world.DefaultRDSHost+":5432" || w.TLSServerName != world.DefaultRDSHost || w.Address == "" {
			t.Errorf("path names: %s %s %s", w.Address, w.TLSServerName, w.TokenHost)
		}
	})

	t.Run("rotation through the SDK", func(t *testing.T) {
		w.SetEnv(t.Setenv)
		retrieve := func() error {
			cfg, err := config.LoadDefaultConfig(ctx, config.WithRetryMaxAttempts(1))
			if err != nil {
				t.Fatal(err)
			}
			_, err = cfg.Credentials.Retrieve(ctx)
			return err
		}
		if err := retrieve(); err != nil {
			t.Fatal(err)
		}
		old := w.WebIdentityToken
		if err := w.RotateWebIdentityToken(); err != nil {
			t.Fatal(err)
		}
		if err := retrieve(); err != nil {
			t.Fatalf("after rotation: %v", err)
		}
		if err := os.WriteFile(w.TokenFile, []byte(old), 0o644); err != nil {
			t.Fatal(err)
		}
		var ae smithy.APIError
		if err := retrieve(); !errors.As(err, &ae) || ae.ErrorCode() != "ExpiredTokenException" {
			t.Fatalf("old token: %v, want ExpiredTokenException (rotated away and expired)", err)
		}
		if err := os.WriteFile(w.TokenFile, []byte(w.WebIdentityToken), 0o644); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pod identity through the SDK", func(t *testing.T) {
		w.SetPodIdentityEnv(t.Setenv)
		cfg, err := config.LoadDefaultConfig(ctx, config.WithRetryMaxAttempts(1))
		if err != nil {
			t.Fatal(err)
		}
		before := w.STS.Calls()
		c, err := cfg.Credentials.Retrieve(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := w.STS.Lookup(c.AccessKeyID); !ok || w.STS.Calls() != before+1 {
			t.Fatalf("credentials not from the fake agent (calls %d -> %d)", before, w.STS.Calls())
		}
	})

	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("world dir %s left behind (%v)", dir, err)
	}
}
