package auth

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

func boundedCache(t *testing.T, cfg TokenCacheConfig) (*TokenCache, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return NewTokenCache(cfg, &credSource{}, zap.NewNop(), reg), reg
}

func userKey(u string) Key { return Key{Endpoint: "db:5432", Region: "us-east-1", User: u} }

// gauge reads rdsvalet_auth_token_cache_entries as a scrape would.
func gauge(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "rdsvalet_auth_token_cache_entries" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("rdsvalet_auth_token_cache_entries not registered")
	return 0
}

func evictions(c *TokenCache, reason string) float64 {
	return testutil.ToFloat64(c.metrics.evictions.WithLabelValues(reason))
}

func held(c *TokenCache, users ...string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range users {
		if c.entries[userKey(u)] == nil {
			return false
		}
	}
	return true
}

// Past MaxEntries the least recently used key goes, not the oldest minted.
func TestTokenCacheBoundEvictsLeastRecentlyUsed(t *testing.T) {
	clk := &clock{t: time.Now()}
	c, reg := boundedCache(t, TokenCacheConfig{Now: clk.now, MaxEntries: 3})
	ctx := context.Background()
	for _, u := range []string{"a", "b", "c", "a", "d"} {
		clk.add(time.Second)
		if _, err := c.Token(ctx, userKey(u)); err != nil {
			t.Fatal(err)
		}
	}
	if !held(c, "a", "c", "d") || held(c, "b") {
		t.Error("b, the least recently used, should have gone; a, c and d stay")
	}
	if g := gauge(t, reg); g != 3 {
		t.Errorf("gauge %v, want 3", g)
	}
	if n := evictions(c, evictSize); n != 1 {
		t.Errorf("size evictions %v, want 1", n)
	}
	for i := range 100 {
		if _, err := c.Token(ctx, userKey(strings.Repeat("u", i+1))); err != nil {
			t.Fatal(err)
		}
		if g := gauge(t, reg); g > 3 {
			t.Fatalf("gauge %v after %d more users, bound 3", g, i+1)
		}
	}
}

// An entry unused for IdleTTL is dropped, at the next login or scrape; one in use stays.
func TestTokenCacheDropsIdleEntries(t *testing.T) {
	clk := &clock{t: time.Now()}
	c, reg := boundedCache(t, TokenCacheConfig{Now: clk.now, IdleTTL: time.Minute})
	ctx := context.Background()
	_, _ = c.Token(ctx, userKey("idle"))
	_, _ = c.Token(ctx, userKey("busy"))
	for range 4 {
		clk.add(20 * time.Second)
		if _, err := c.Token(ctx, userKey("busy")); err != nil {
			t.Fatal(err)
		}
	}
	if held(c, "idle") {
		t.Error("an entry unused for 80s, past IdleTTL 1m, is still held")
	}
	if !held(c, "busy") || evictions(c, evictIdle) != 1 {
		t.Errorf("busy held %v, idle evictions %v; want true, 1", held(c, "busy"), evictions(c, evictIdle))
	}
	clk.add(2 * time.Minute) // no login: the scrape itself sweeps
	if g := gauge(t, reg); g != 0 {
		t.Errorf("gauge %v two minutes after the last login, want 0", g)
	}
}

// An entry whose token is past use goes even when it was used lately (here the credentials
// behind it expire after 3 minutes and the refresh failed).
func TestTokenCacheDropsExpiredEntries(t *testing.T) {
	clk := &clock{t: time.Now()}
	src := &credSource{expires: func() time.Time { return clk.now().Add(3 * time.Minute) }}
	reg := prometheus.NewRegistry()
	c := NewTokenCache(TokenCacheConfig{Now: clk.now}, src, zap.NewNop(), reg)
	ctx := context.Background()
	if _, err := c.Token(ctx, userKey("a")); err != nil {
		t.Fatal(err)
	}
	clk.add(2*time.Minute + 10*time.Second) // due for refresh, still usable
	src.fail.Store(true)
	if _, err := c.Token(ctx, userKey("a")); err != nil {
		t.Fatalf("stale token not served: %v", err)
	}
	clk.add(time.Minute) // past expiry
	if g := gauge(t, reg); g != 0 || evictions(c, evictExpired) != 1 {
		t.Errorf("gauge %v, expired evictions %v; want 0, 1", g, evictions(c, evictExpired))
	}
}

// gatedMinter signs at once except for users in gate, whose mints wait for release.
type gatedMinter struct {
	gate    map[string]bool
	entered chan string
	release chan struct{}
}

func (g *gatedMinter) mint(ctx context.Context, key Key, creds aws.Credentials) (string, error) {
	if g.gate[key.User] {
		g.entered <- key.User
		<-g.release
	}
	return SDKMinter(ctx, key, creds)
}

// The bound picks a victim without a mint in flight; when every entry is minting, one still
// goes (the bound holds) and its callers still get their token.
func TestTokenCacheBoundSparesAndAnswersMints(t *testing.T) {
	g := &gatedMinter{gate: map[string]bool{"slow1": true, "slow2": true}, entered: make(chan string, 2), release: make(chan struct{})}
	clk := &clock{t: time.Now()}
	c, reg := boundedCache(t, TokenCacheConfig{Now: clk.now, Minter: g.mint, MaxEntries: 2})
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make(chan string, 4)
	call := func(u string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := c.Token(ctx, userKey(u))
			if err != nil || !strings.Contains(tok, "DBUser="+u) {
				t.Errorf("%s: token %.30q err %v", u, tok, err)
			}
			results <- u
		}()
	}
	call("slow1")
	<-g.entered // slow1 is the oldest entry and is minting
	clk.add(time.Second)
	if _, err := c.Token(ctx, userKey("fast")); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Second)
	call("slow2") // the cache is full: fast goes, not slow1 with its mint
	<-g.entered
	if !held(c, "slow1", "slow2") || held(c, "fast") {
		t.Fatal("the victim should be fast, the entry without a mint in flight")
	}
	call("slow1") // waits on slow1's mint
	clk.add(time.Second)
	if _, err := c.Token(ctx, userKey("fast")); err != nil { // every entry mints: one goes anyway
		t.Fatal(err)
	}
	if gg := gauge(t, reg); gg > 2 {
		t.Errorf("gauge %v with every entry minting, bound 2", gg)
	}
	close(g.release)
	wg.Wait()
	if n := len(results); n != 3 {
		t.Errorf("%d of 3 callers with a mint in flight answered", n)
	}
	// Two at least: fast, then a minting entry; a third when the waiting slow1 came only after
	// its entry had gone and minted anew.
	if n := evictions(c, evictSize); n < 2 {
		t.Errorf("size evictions %v, want at least 2", n)
	}
}
