package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// blockedCreds is a credential source stuck in a slow STS call until release is closed.
type blockedCreds struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockedCreds) Retrieve(ctx context.Context) (aws.Credentials, error) {
	close(b.entered)
	select {
	case <-b.release:
		return aws.Credentials{AccessKeyID: "ASIATESTTESTTEST", SecretAccessKey: "k", SessionToken: "s"}, nil
	case <-ctx.Done():
		return aws.Credentials{}, ctx.Err()
	}
}

// A login that gives up while another one's mint waits on a slow credential source fails with
// a TokenError, as the minting login does, so that the app is told about credentials (28000)
// and not about the network.
func TestTokenWaitForOtherMintIsATokenError(t *testing.T) {
	src := &blockedCreds{entered: make(chan struct{}), release: make(chan struct{})}
	c := NewTokenCache(TokenCacheConfig{}, src, zap.NewNop(), prometheus.NewRegistry())
	key := Key{Endpoint: "db.example.com:5432", Region: "us-east-1", User: "app"}
	first := make(chan error, 1)
	go func() {
		_, err := c.Token(context.Background(), key)
		first <- err
	}()
	<-src.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Token(ctx, key)
	if !IsTokenError(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting caller: want a TokenError wrapping the deadline, got %v", err)
	}
	close(src.release)
	if err := <-first; err != nil {
		t.Fatalf("the minting caller: %v", err)
	}
}
