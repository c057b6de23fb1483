package auth

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// BenchmarkTokenCacheHit is the cost a new connection pays for its IAM token once the cache
// holds one: the connect-per-query case pays it on every query. It signs with the real SDK
// minter, but only once, before the timer.
func BenchmarkTokenCacheHit(b *testing.B) {
	c := NewTokenCache(TokenCacheConfig{}, &credSource{}, zap.NewNop(), prometheus.NewRegistry())
	key := Key{Endpoint: "db.example.us-east-1.rds.amazonaws.com:5432", Region: "us-east-1", User: "app"}
	ctx := context.Background()
	if _, err := c.Token(ctx, key); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Token(ctx, key); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkTokenMint is a cache miss: signing a token with the SDK.
func BenchmarkTokenMint(b *testing.B) {
	key := Key{Endpoint: "db.example.us-east-1.rds.amazonaws.com:5432", Region: "us-east-1", User: "app"}
	creds, _ := (&credSource{}).Retrieve(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SDKMinter(context.Background(), key, creds); err != nil {
			b.Fatal(err)
		}
	}
}
