package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// UnixSocket is a listener's unix socket: the file, its mode and owner (-1: leave as is).
type UnixSocket struct {
	Path     string
	Mode     os.FileMode
	UID, GID int
}

// umaskMu serialises the umask changes of concurrent binds (the umask is per process).
var umaskMu sync.Mutex

// liveProbeTimeout bounds the dial that tells a live socket from a stale one.
const liveProbeTimeout = time.Second

// listenUnix binds u.Path: it creates the directory if missing (0755), removes a stale socket
// left by a previous run (only a socket, and only one nobody answers on: a live one belongs
// to another process, which keeps it), binds with a umask that keeps the file closed to all
// but its owner until it has its mode and owner, then applies those.
func listenUnix(u UnixSocket) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
		return nil, fmt.Errorf("unix socket %s: create its directory: %w", u.Path, err)
	}
	if err := removeStale(u.Path); err != nil {
		return nil, err
	}
	umaskMu.Lock()
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: u.Path, Net: "unix"})
	syscall.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("unix socket %s: %w", u.Path, err)
	}
	if u.UID >= 0 || u.GID >= 0 {
		if err := os.Lchown(u.Path, u.UID, u.GID); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("unix socket %s: set owner %d:%d: %w", u.Path, u.UID, u.GID, err)
		}
	}
	if err := os.Chmod(u.Path, u.Mode); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("unix socket %s: set mode %#o: %w", u.Path, u.Mode, err)
	}
	return ln, nil
}

func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unix socket %s: %w", path, err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("unix socket %s: the file exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, liveProbeTimeout)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("unix socket %s: another process is listening on it; refusing to take it over", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("unix socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("unix socket %s: remove the stale socket: %w", path, err)
	}
	return nil
}

// clientAddr is what logs name a client by: its address, or for a unix-socket client (which
// has no name of its own) the socket it came through.
func clientAddr(c net.Conn) net.Addr {
	if ra, ok := c.RemoteAddr().(*net.UnixAddr); ok && (ra == nil || ra.Name == "" || ra.Name == "@") {
		return c.LocalAddr()
	}
	return c.RemoteAddr()
}
