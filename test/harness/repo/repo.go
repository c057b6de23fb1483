// Package repo finds the repository a test runs in, for tests that read its files (docs, the
// chart, the Dockerfile).
package repo

import (
	"os"
	"path/filepath"
	"testing"
)

// Root is the nearest directory above the test's working directory that holds go.mod.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = filepath.Dir(dir)
	}
}
