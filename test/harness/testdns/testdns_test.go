package testdns

import (
	"context"
	"testing"
	"time"
)

// The cache keeps an answer for its TTL and asks again once it has expired.
func TestCacheHonoursTTL(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	c := NewCache(s.Addr)
	s.SetTTL("db.example.test", time.Second, "127.0.0.2")
	if ip, err := c.Lookup(ctx, "db.example.test"); err != nil || ip != "127.0.0.2" {
		t.Fatalf("first lookup: %q, %v", ip, err)
	}
	flipped := time.Now()
	s.SetTTL("db.example.test", time.Second, "127.0.0.3")
	if ip, _ := c.Lookup(ctx, "db.example.test"); ip != "127.0.0.2" {
		t.Fatalf("lookup within the TTL: %q, want the cached 127.0.0.2", ip)
	}
	for {
		ip, err := c.Lookup(ctx, "db.example.test")
		if err != nil {
			t.Fatal(err)
		}
		if ip == "127.0.0.3" {
			break
		}
		if time.Since(flipped) > 3*time.Second {
			t.Fatal("the cache kept the old answer past its TTL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.Lookup(ctx, "missing.example.test"); err == nil {
		t.Fatal("a name with no record resolved")
	}
}
