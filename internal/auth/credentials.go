// Package auth supplies what the sidecar logs in upstream with: RDS IAM auth tokens minted from
// the SDK's default credential chain (IRSA web identity, EKS Pod Identity, env, shared config,
// IMDS) and cached per (endpoint, region, user), or a static password read from a file.
package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
)

// DefaultCredentialsRefreshWindow is how long before expiry the SDK's credential cache fetches
// new credentials, so that a token is never minted from credentials about to lapse.
const DefaultCredentialsRefreshWindow = 5 * time.Minute

// LoadCredentials returns the SDK's default credential chain, cached, refreshed refreshWindow
// before expiry. With IRSA (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE) the chain re-reads the
// projected token file at every refresh, so a rotated file is picked up.
func LoadCredentials(ctx context.Context, region string, refreshWindow time.Duration) (aws.CredentialsProvider, error) {
	if refreshWindow <= 0 {
		refreshWindow = DefaultCredentialsRefreshWindow
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx,
		awsconfig.WithRegion(region),
		awsconfig.WithCredentialsCacheOptions(func(o *aws.CredentialsCacheOptions) {
			o.ExpiryWindow = refreshWindow
			o.ExpiryWindowJitterFrac = 0.2
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Credentials == nil {
		return nil, fmt.Errorf("load AWS configuration: no credential provider found")
	}
	return cfg.Credentials, nil
}

// PasswordFile serves a static password read from a file at every login, so that a rotated
// secret (a re-mounted Kubernetes Secret) is used without a restart.
type PasswordFile struct {
	Path string
}

// Password returns the file's content without a trailing newline.
func (p PasswordFile) Password(context.Context) (string, error) {
	b, err := os.ReadFile(p.Path)
	if err != nil {
		return "", &PasswordFileError{Err: fmt.Errorf("read password file: %w", err)}
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", &PasswordFileError{Err: fmt.Errorf("read password file %s: file is empty", p.Path)}
	}
	return pw, nil
}

// PasswordFileError is a failure to read the password file; it says nothing about the
// database or the network path to it.
type PasswordFileError struct{ Err error }

func (e *PasswordFileError) Error() string { return e.Err.Error() }
func (e *PasswordFileError) Unwrap() error { return e.Err }

// IsSecretError reports whether err is the sidecar failing to get its own secret (an IAM token
// or the password file), not anything the database or the network did.
func IsSecretError(err error) bool {
	var pe *PasswordFileError
	return IsTokenError(err) || errors.As(err, &pe)
}
