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

// Defaults of TokenCacheConfig.
const (
	// DefaultTokenCacheEntries bounds the keys held: far more database users than one pod's
	// apps log in as, and small enough (about 1 KiB a token) that a login storm with made-up
	// user names cannot grow the heap without end.
	DefaultTokenCacheEntries = 1024
	// DefaultTokenIdleTTL drops a key nobody logged in as for this long. It is the refresh
	// point (two thirds of TokenLifetime): the token was minted no later than its last use, so
	// by then the next login would mint anyway. What is lost is only the stale token an STS
	// outage would have served for the last few minutes of its life, to a key nobody uses.
	DefaultTokenIdleTTL = TokenLifetime * 2 / 3
)

// TokenCacheConfig tunes a TokenCache; zero values take defaults.
type TokenCacheConfig struct {
	Minter Minter           // default SDKMinter
	Now    func() time.Time // default time.Now
	// MaxEntries is the most keys held; past it the least recently used goes first.
	MaxEntries int
	// IdleTTL drops an entry unused for this long.
	IdleTTL time.Duration
}

// TokenCache hands out IAM tokens, minting one per Key and reusing it for every login until two
// thirds of its life are gone (RDS throttles IAM logins per second, not token reuse). Concurrent
// callers share one mint. When a refresh fails, the old token is served while it is still valid,
// so an STS outage does not break logins until the cached token expires.
//
// The cache is bounded: an entry goes when its token has expired, when it has not been used for
// IdleTTL, or when MaxEntries are held and it is the least recently used. Evictions run inside
// Token (at most every sweepEvery) and at each /metrics scrape, so no goroutine is needed.
type TokenCache struct {
	creds      aws.CredentialsProvider
	mint       Minter
	now        func() time.Time
	log        *zap.Logger
	metrics    tokenMetrics
	maxEntries int
	idleTTL    time.Duration
	sweepEvery time.Duration

	mu        sync.Mutex
	entries   map[Key]*tokenEntry
	lru       tokenEntry // sentinel of the use-ordered ring: lru.next is the newest, lru.prev the oldest
	nextSweep time.Time
}

type tokenEntry struct {
	key       Key
	token     string
	expires   time.Time
	refreshAt time.Time
	minting   chan struct{} // closed when the mint in flight ends; nil when none is
	err       error         // the last mint's error, for callers that waited on it
	lastUsed  time.Time
	// prev and next link the entry into TokenCache.lru; nil once evicted. A minter and its
	// waiters hold the entry itself, so an eviction during a mint still hands them its result.
	prev, next *tokenEntry
}

type tokenMetrics struct {
	mints       *prometheus.CounterVec
	mintSeconds prometheus.Histogram
	stale       prometheus.Counter
	evictions   *prometheus.CounterVec
}

// Eviction reasons, the label of rdsvalet_auth_token_cache_evictions_total.
const (
	evictExpired = "expired" // the token is past use and no mint is in flight
	evictIdle    = "idle"    // unused for IdleTTL
	evictSize    = "size"    // MaxEntries reached; the least recently used went
)

// NewTokenCache returns a cache minting from creds. Metrics are registered on reg.
func NewTokenCache(cfg TokenCacheConfig, creds aws.CredentialsProvider, log *zap.Logger, reg prometheus.Registerer) *TokenCache {
	if cfg.Minter == nil {
		cfg.Minter = SDKMinter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultTokenCacheEntries
	}
	if cfg.IdleTTL <= 0 {
		cfg.IdleTTL = DefaultTokenIdleTTL
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
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_auth_token_cache_evictions_total",
			Help: "IAM token cache entries dropped, by reason (expired, idle, size).",
		}, []string{"reason"}),
	}
	for _, r := range []string{"ok", "credentials_error", "sign_error"} {
		m.mints.WithLabelValues(r)
	}
	for _, r := range []string{evictExpired, evictIdle, evictSize} {
		m.evictions.WithLabelValues(r)
	}
	c := &TokenCache{creds: creds, mint: cfg.Minter, now: cfg.Now, log: log, metrics: m,
		maxEntries: cfg.MaxEntries, idleTTL: cfg.IdleTTL, sweepEvery: min(cfg.IdleTTL/4, time.Minute),
		entries: map[Key]*tokenEntry{}}
	c.lru.next, c.lru.prev = &c.lru, &c.lru
	if reg != nil {
		size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rdsvalet_auth_token_cache_entries",
			Help: "Keys (endpoint, region, user) the IAM token cache holds.",
		}, c.held)
		reg.MustRegister(m.mints, m.mintSeconds, m.stale, m.evictions, size)
	}
	return c
}

// held is the number of entries, after dropping those that are due: a scrape sweeps too, so
// that the gauge falls back once logins stop.
func (c *TokenCache) held() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(c.now())
	return float64(len(c.entries))
}

// Token returns a valid token for key.
func (c *TokenCache) Token(ctx context.Context, key Key) (string, error) {
	for {
		c.mu.Lock()
		now := c.now()
		c.sweepLocked(now)
		e := c.entries[key]
		if e == nil {
			e = c.insertLocked(key)
		}
		c.touchLocked(e, now)
		usable := e.usable(now)
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
				// The answer is read from the entry waited on, which may have been evicted
				// meanwhile: looking the key up again would mint once more.
				c.mu.Lock()
				err, tok := e.err, e.token
				ok := e.usable(c.now())
				c.mu.Unlock()
				if ok {
					if err != nil {
						c.metrics.stale.Inc()
					}
					return tok, nil
				}
				if err != nil {
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
		stillUsable := e.usable(c.now())
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

// usable reports whether e holds a token that RDS still accepts at now (staleMargin short of
// its expiry).
func (e *tokenEntry) usable(now time.Time) bool {
	return e.token != "" && now.Before(e.expires.Add(-staleMargin))
}

// insertLocked adds an empty entry for key, first making room if MaxEntries are held. The
// victim is the least recently used entry with no mint in flight; only when every entry is
// minting does one with a mint go (its minter and waiters still get their answer).
func (c *TokenCache) insertLocked(key Key) *tokenEntry {
	if len(c.entries) >= c.maxEntries {
		victim := c.lru.prev
		for v := c.lru.prev; v != &c.lru; v = v.prev {
			if v.minting == nil {
				victim = v
				break
			}
		}
		if victim != &c.lru {
			c.removeLocked(victim, evictSize)
		}
	}
	e := &tokenEntry{key: key}
	c.entries[key] = e
	return e
}

// touchLocked marks e used at now, moving it to the front of the use order.
func (c *TokenCache) touchLocked(e *tokenEntry, now time.Time) {
	e.lastUsed = now
	if c.lru.next == e {
		return
	}
	if e.next != nil {
		e.prev.next, e.next.prev = e.next, e.prev
	}
	e.prev, e.next = &c.lru, c.lru.next
	c.lru.next.prev = e
	c.lru.next = e
}

func (c *TokenCache) removeLocked(e *tokenEntry, reason string) {
	delete(c.entries, e.key)
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	c.metrics.evictions.WithLabelValues(reason).Inc()
}

// sweepLocked, when a sweep is due, drops the entries that are idle or hold no usable token; an
// entry with a mint in flight is in use and stays.
func (c *TokenCache) sweepLocked(now time.Time) {
	if now.Before(c.nextSweep) {
		return
	}
	c.nextSweep = now.Add(c.sweepEvery)
	for e := c.lru.prev; e != &c.lru; {
		prev := e.prev
		switch {
		case e.minting != nil:
		case now.Sub(e.lastUsed) >= c.idleTTL:
			c.removeLocked(e, evictIdle)
		case !e.usable(now):
			c.removeLocked(e, evictExpired)
		}
		e = prev
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
