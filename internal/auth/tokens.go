package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	rdsauth "github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// TokenLifetime is how long RDS accepts an IAM auth token after it is signed.
const TokenLifetime = 15 * time.Minute

// staleMargin is kept between a cached token's expiry and its last use, so that a login that
// starts with it finishes before RDS would refuse it.
const staleMargin = 30 * time.Second

// Key identifies one IAM token: RDS checks the signed host:port, the region and the user.
type Key struct {
	Endpoint string // host:port the token is signed for
	Region   string
	User     string
}

// Minter signs a token for key with creds; the default is the SDK's rdsauth.BuildAuthToken.
type Minter func(ctx context.Context, key Key, creds aws.Credentials) (string, error)

// SDKMinter signs with aws-sdk-go-v2's feature/rds/auth.
func SDKMinter(ctx context.Context, key Key, creds aws.Credentials) (string, error) {
	return rdsauth.BuildAuthToken(ctx, key.Endpoint, key.Region, key.User, credentials.StaticCredentialsProvider{Value: creds})
}

// TokenCacheConfig tunes a TokenCache; zero values take defaults.
type TokenCacheConfig struct {
	Minter Minter           // default SDKMinter
	Now    func() time.Time // default time.Now
}

// TokenCache hands out IAM tokens, minting one per Key and reusing it for every login until two
// thirds of its life are gone (RDS throttles IAM logins per second, not token reuse). Concurrent
// callers share one mint. When a refresh fails, the old token is served while it is still valid,
// so an STS outage does not break logins until the cached token expires.
type TokenCache struct {
	creds   aws.CredentialsProvider
	mint    Minter
	now     func() time.Time
	log     *zap.Logger
	metrics tokenMetrics

	mu      sync.Mutex
	entries map[Key]*tokenEntry
}

type tokenEntry struct {
	token     string
	expires   time.Time
	refreshAt time.Time
	minting   chan struct{} // closed when the mint in flight ends; nil when none is
	err       error         // the last mint's error, for callers that waited on it
}

type tokenMetrics struct {
	mints       *prometheus.CounterVec
	mintSeconds prometheus.Histogram
	stale       prometheus.Counter
}

// NewTokenCache returns a cache minting from creds. Metrics are registered on reg.
func NewTokenCache(cfg TokenCacheConfig, creds aws.CredentialsProvider, log *zap.Logger, reg prometheus.Registerer) *TokenCache {
	if cfg.Minter == nil {
		cfg.Minter = SDKMinter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := tokenMetrics{
		mints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_auth_token_mints_total",
			Help: "IAM auth tokens minted, by result (ok, credentials_error, sign_error).",
		}, []string{"result"}),
		mintSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rdsvalet_auth_token_mint_duration_seconds",
			Help:    "Time to mint an IAM auth token, including fetching credentials when they are due.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rdsvalet_auth_token_stale_served_total",
			Help: "Logins served with a cached token because refreshing it failed.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.mints, m.mintSeconds, m.stale)
	}
	for _, r := range []string{"ok", "credentials_error", "sign_error"} {
		m.mints.WithLabelValues(r)
	}
	return &TokenCache{creds: creds, mint: cfg.Minter, now: cfg.Now, log: log, metrics: m, entries: map[Key]*tokenEntry{}}
}

// Token returns a valid token for key.
func (c *TokenCache) Token(ctx context.Context, key Key) (string, error) {
	for {
		c.mu.Lock()
		e := c.entries[key]
		if e == nil {
			e = &tokenEntry{}
			c.entries[key] = e
		}
		now := c.now()
		usable := e.token != "" && now.Before(e.expires.Add(-staleMargin))
		if usable && now.Before(e.refreshAt) {
			tok := e.token
			c.mu.Unlock()
			return tok, nil
		}
		if e.minting != nil {
			if usable {
				// Someone else refreshes; the old token is still good for this login.
				tok := e.token
				c.mu.Unlock()
				return tok, nil
			}
			wait := e.minting
			c.mu.Unlock()
			select {
			case <-wait:
				c.mu.Lock()
				err := e.err
				ok := e.token != "" && c.now().Before(e.expires.Add(-staleMargin))
				c.mu.Unlock()
				if !ok && err != nil {
					return "", err
				}
				continue
			case <-ctx.Done():
				// A TokenError like the mint's own failure: the app is told it is a credential
				// problem (a slow STS), not a network one.
				return "", &TokenError{Key: key, Err: fmt.Errorf("wait for the IAM token being minted: %w", ctx.Err())}
			}
		}
		done := make(chan struct{})
		e.minting = done
		c.mu.Unlock()

		tok, expires, err := c.mintOne(ctx, key)

		c.mu.Lock()
		e.minting = nil
		e.err = err
		if err == nil {
			now := c.now()
			e.token, e.expires = tok, expires
			e.refreshAt = now.Add(expires.Sub(now) * 2 / 3)
		}
		close(done)
		stillUsable := e.token != "" && c.now().Before(e.expires.Add(-staleMargin))
		old := e.token
		c.mu.Unlock()

		if err == nil {
			return tok, nil
		}
		if stillUsable {
			c.metrics.stale.Inc()
			c.log.Warn("IAM token refresh failed; serving the cached token until it expires",
				zap.String("endpoint", key.Endpoint), zap.String("db_user", key.User), zap.Error(err))
			return old, nil
		}
		return "", err
	}
}

func (c *TokenCache) mintOne(ctx context.Context, key Key) (string, time.Time, error) {
	start := c.now()
	creds, err := c.creds.Retrieve(ctx)
	if err != nil {
		c.metrics.mints.WithLabelValues("credentials_error").Inc()
		c.log.Error("cannot get AWS credentials for the IAM token", zap.String("endpoint", key.Endpoint),
			zap.String("db_user", key.User), zap.Error(err))
		return "", time.Time{}, &TokenError{Key: key, Err: fmt.Errorf("get AWS credentials: %w", err)}
	}
	tok, err := c.mint(ctx, key, creds)
	if err != nil {
		c.metrics.mints.WithLabelValues("sign_error").Inc()
		c.log.Error("cannot sign the IAM token", zap.String("endpoint", key.Endpoint), zap.String("db_user", key.User), zap.Error(err))
		return "", time.Time{}, &TokenError{Key: key, Err: fmt.Errorf("sign token: %w", err)}
	}
	now := c.now()
	expires := now.Add(TokenLifetime)
	if creds.CanExpire && creds.Expires.Before(expires) {
		// A token outlives neither its signature window nor the session credentials behind it.
		expires = creds.Expires
	}
	c.metrics.mints.WithLabelValues("ok").Inc()
	c.metrics.mintSeconds.Observe(now.Sub(start).Seconds())
	c.log.Debug("minted IAM token", zap.String("endpoint", key.Endpoint), zap.String("db_user", key.User),
		zap.String("access_key_id", creds.AccessKeyID), zap.Time("expires", expires))
	return tok, expires, nil
}

// TokenError is a failure to produce an IAM token; its message never contains a secret.
type TokenError struct {
	Key Key
	Err error
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("IAM token for %s@%s (%s): %v", e.Key.User, e.Key.Endpoint, e.Key.Region, e.Err)
}

func (e *TokenError) Unwrap() error { return e.Err }

// IsTokenError reports whether err came from minting a token.
func IsTokenError(err error) bool {
	var te *TokenError
	return errors.As(err, &te)
}
