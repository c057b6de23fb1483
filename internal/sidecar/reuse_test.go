package sidecar

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A rotated password file makes the pool's credentials digest change once the recheck
// interval has passed, and not before; an unreadable file is its own digest.
func TestPasswordDigestFollowsRotation(t *testing.T) {
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte("old-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1000, 0)
	digest := passwordDigest(file, func() time.Time { return clock })
	first := digest()
	if first == "" || first == "unreadable" || first == "old-secret" {
		t.Fatalf("first digest %q", first)
	}
	// A different length, so that the stat differs even where the mtime's resolution is coarse.
	if err := os.WriteFile(file, []byte("the-new-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(credentialsRecheck / 2)
	if got := digest(); got != first {
		t.Fatalf("digest changed before the recheck interval: %q -> %q", first, got)
	}
	clock = clock.Add(credentialsRecheck)
	second := digest()
	if second == first || second == "unreadable" {
		t.Fatalf("digest after rotation %q, first %q", second, first)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(credentialsRecheck)
	if got := digest(); got != "unreadable" {
		t.Fatalf("digest of a missing file %q", got)
	}
	// A clock stepped back is not trusted to keep the cache.
	if err := os.WriteFile(file, []byte("the-new-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(-10 * credentialsRecheck)
	if got := digest(); got != second {
		t.Fatalf("digest after the clock stepped back %q, want %q", got, second)
	}
}
