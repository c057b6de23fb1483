package auth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type credSource struct {
	calls   atomic.Int64
	fail    atomic.Bool
	expires func() time.Time
}

func (s *credSource) Retrieve(context.Context) (aws.Credentials, error) {
	s.calls.Add(1)
	if s.fail.Load() {
		return aws.Credentials{}, errors.New("sts: service unavailable")
	}
	c := aws.Credentials{AccessKeyID: "ASIATESTTESTTEST", SecretAccessKey: "secret-key-material", SessionToken: "session-token"}
	if s.expires != nil {
		c.CanExpire, c.Expires = true, s.expires()
	}
	return c, nil
}

func newTestCache(t *testing.T, src *credSource, clk *clock) (*TokenCache, *prometheus.Registry, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	reg := prometheus.NewRegistry()
	c := NewTokenCache(TokenCacheConfig{Now: clk.now}, src, zap.New(core), reg)
	return c, reg, logs
}

func TestTokenCacheReusesAndRefreshes(t *testing.T) {
	clk := &clock{t: time.Now()}
	src := &credSource{}
	c, reg, _ := newTestCache(t, src, clk)
	key := Key{Endpoint: "db.example.com:5432", Region: "us-east-1", User: "app"}
	ctx := context.Background()

	t1, err := c.Token(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(t1, "db.example.com:5432?Action=connect&") || !strings.Contains(t1, "DBUser=app") || !strings.Contains(t1, "X-Amz-Signature=") {
		t.Fatalf("not an RDS auth token: %.60s...", t1)
	}
	mints := func() float64 { return testutil.ToFloat64(c.metrics.mints.WithLabelValues("ok")) }
	clk.add(9 * time.Minute)
	t2, _ := c.Token(ctx, key)
	if t2 != t1 || mints() != 1 {
		t.Error("token not reused within two thirds of its life")
	}
	clk.add(2 * time.Minute) // 11 minutes: due for refresh
	if _, err := c.Token(ctx, key); err != nil || mints() != 2 {
		t.Errorf("token not refreshed after two thirds of its life (mints %v, err %v)", mints(), err)
	}
	other, _ := c.Token(ctx, Key{Endpoint: key.Endpoint, Region: key.Region, User: "reporting"})
	if !strings.Contains(other, "DBUser=reporting") {
		t.Error("tokens for different users must differ")
	}
	if got := mints(); got != 3 {
		t.Errorf("mints ok = %v, want 3", got)
	}
	if got := testutil.CollectAndCount(reg, "rdsvalet_auth_token_mints_total"); got != 3 {
		t.Errorf("mints metric has %d series, want 3 (one per result)", got)
	}
}

func TestTokenCacheConcurrentCallersShareOneMint(t *testing.T) {
	clk := &clock{t: time.Now()}
	src := &credSource{}
	c, _, _ := newTestCache(t, src, clk)
	key := Key{Endpoint: "db:5432", Region: "us-east-1", User: "app"}
	var wg sync.WaitGroup
	tokens := make([]string, 50)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := c.Token(context.Background(), key)
			if err != nil {
				t.Error(err)
			}
			tokens[i] = tok
		}()
	}
	wg.Wait()
	for _, tok := range tokens {
		if tok != tokens[0] {
			t.Fatal("concurrent callers got different tokens")
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("credentials retrieved %d times, want 1", n)
	}
}

func TestTokenCacheServesStaleWhileCredentialsFail(t *testing.T) {
	clk := &clock{t: time.Now()}
	src := &credSource{}
	c, _, logs := newTestCache(t, src, clk)
	key := Key{Endpoint: "db:5432", Region: "us-east-1", User: "app"}
	ctx := context.Background()
	t1, err := c.Token(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	src.fail.Store(true)
	clk.add(9 * time.Minute)
	if _, err := c.Token(ctx, key); err != nil { // in use, so not dropped as idle
		t.Fatal(err)
	}
	clk.add(2 * time.Minute)
	t2, err := c.Token(ctx, key)
	if err != nil || t2 != t1 {
		t.Fatalf("stale token not served while valid: %v", err)
	}
	if testutil.ToFloat64(c.metrics.stale) != 1 {
		t.Error("stale serve not counted")
	}
	clk.add(4 * time.Minute) // past expiry minus margin
	if _, err := c.Token(ctx, key); err == nil || !IsTokenError(err) {
		t.Fatalf("expired token served or wrong error: %v", err)
	}
	src.fail.Store(false)
	if _, err := c.Token(ctx, key); err != nil {
		t.Fatalf("no recovery after credentials return: %v", err)
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "X-Amz-Signature") || strings.Contains(f.String, "secret-key-material") {
				t.Fatalf("secret in log line %q", e.Message)
			}
		}
	}
	if got := testutil.ToFloat64(c.metrics.mints.WithLabelValues("credentials_error")); got != 2 {
		t.Errorf("credential errors = %v, want 2", got)
	}
}

func TestTokenLifetimeBoundedByCredentials(t *testing.T) {
	clk := &clock{t: time.Now()}
	src := &credSource{expires: func() time.Time { return clk.now().Add(3 * time.Minute) }}
	c, _, _ := newTestCache(t, src, clk)
	key := Key{Endpoint: "db:5432", Region: "us-east-1", User: "app"}
	_, _ = c.Token(context.Background(), key)
	clk.add(1 * time.Minute)
	_, _ = c.Token(context.Background(), key)
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("refreshed too early: %d mints", n)
	}
	clk.add(1*time.Minute + 10*time.Second) // past 2/3 of the credentials' 3 minutes
	_, _ = c.Token(context.Background(), key)
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("token outlived two thirds of its credentials' life: %d mints", n)
	}
}
