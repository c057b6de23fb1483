package proxy

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenUnixModeStaleAndLive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "s.sock")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	left, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	left.SetUnlinkOnClose(false)
	_ = left.Close() // a killed run's socket: nobody answers on it

	ln, err := listenUnix(UnixSocket{Path: path, Mode: 0o640, UID: -1, GID: os.Getgid()})
	if err != nil {
		t.Fatalf("a stale socket must be replaced: %v", err)
	}
	st, err := os.Lstat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o640 {
		t.Fatalf("socket mode %v (%v), want a socket with 0640", st.Mode(), err)
	}
	if _, err := listenUnix(UnixSocket{Path: path, Mode: 0o660, UID: -1, GID: -1}); err == nil ||
		!strings.Contains(err.Error(), "another process is listening on it") {
		t.Fatalf("a live socket must be refused, got %v", err)
	}
	_ = ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("closing the listener must remove the socket file: %v", err)
	}

	file := filepath.Join(dir, "data")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenUnix(UnixSocket{Path: file, Mode: 0o660, UID: -1, GID: -1}); err == nil ||
		!strings.Contains(err.Error(), "is not a socket; refusing to replace it") {
		t.Fatalf("a regular file must be refused, got %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "x" {
		t.Fatal("the regular file was touched")
	}
}

func TestListenUnixCreatesItsDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "s.sock")
	ln, err := listenUnix(UnixSocket{Path: path, Mode: 0o600, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the new socket: %v", err)
	}
	_ = c.Close()
}
