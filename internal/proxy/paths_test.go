package proxy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/internal/auth"
	"github.com/rdsvalet/rds-valet/internal/health"
)

// A login that fails for want of an IAM token (STS down, token file gone) must not count
// against the path: with fall 1, one such failure would otherwise mark it down and evict every
// idle session on it. A network failure still counts.
func TestTryDoesNotBlameThePathForTokenErrors(t *testing.T) {
	set := health.NewSet("pg", []health.Path{{Name: "only", Address: "127.0.0.1:1"}}, health.Thresholds{Rise: 1, Fall: 1}, nil)
	tryer := pathTryer{set: set, listener: "pg", m: NewMetrics(nil), connectTimeout: time.Second}
	tokenErr := &auth.TokenError{Key: auth.Key{Endpoint: "db:5432", Region: "us-east-1", User: "app"}, Err: errors.New("get AWS credentials: STS unavailable")}
	for range 3 {
		_, err := tryer.Try(context.Background(), func(context.Context, health.Path) error { return tokenErr })
		var ne *NoPathError
		if !errors.As(err, &ne) || !ne.All(auth.IsTokenError) {
			t.Fatalf("want a NoPathError of token errors, got %v", err)
		}
	}
	if !set.AnyUp() {
		t.Fatal("token errors marked the path down")
	}
	_, _ = tryer.Try(context.Background(), func(context.Context, health.Path) error { return errors.New("dial: connection refused") })
	if set.AnyUp() {
		t.Fatal("a network failure did not count against the path")
	}
}
