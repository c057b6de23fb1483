package pg

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha256"
	"testing"
)

func TestSaltedCache(t *testing.T) {
	c := newSaltedCache()
	want, _ := pbkdf2.Key(sha256.New, "pw", []byte("salt"), 4096, sha256.Size)
	for range 2 {
		got, err := c.key("pw", []byte("salt"), 4096)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("key = %x, %v; want %x", got, err, want)
		}
	}
	other, _ := c.key("pw2", []byte("salt"), 4096)
	if bytes.Equal(other, want) {
		t.Fatal("a different password hit the cached entry")
	}
	for i := range maxSaltedEntries + 1 {
		_, _ = c.key("pw", []byte{byte(i)}, 1)
	}
	if len(c.m) > maxSaltedEntries {
		t.Fatalf("cache holds %d entries, bound %d", len(c.m), maxSaltedEntries)
	}
	var nilCache *saltedCache
	if got, _ := nilCache.key("pw", []byte("salt"), 4096); !bytes.Equal(got, want) {
		t.Fatal("nil cache computes a different key")
	}
}
