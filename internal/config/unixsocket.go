package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// UnixSockets configures the unix-socket listeners that apps in the same pod reach through a
// shared directory (an emptyDir). A listener with a unix socket listens on it besides its TCP
// address: the loopback port stays, for probes and apps that do not use the socket.
type UnixSockets struct {
	// Dir, when set, gives every listener without its own unix_socket a socket here:
	// PostgreSQL's is the directory itself (the file .s.PGSQL.<port>, so libpq's host=Dir
	// works as with a local server), MySQL's is Dir/mysql-<port>.sock.
	Dir string `mapstructure:"dir" yaml:"dir,omitempty"`
	// Mode is the socket files' permission bits, in octal; default 0660 (owner and group:
	// the pod's fsGroup, or group).
	Mode string `mapstructure:"mode" yaml:"mode,omitempty"`
	// Owner and Group, numeric ids, chown the socket files; empty leaves the process's own.
	Owner string `mapstructure:"owner" yaml:"owner,omitempty"`
	Group string `mapstructure:"group" yaml:"group,omitempty"`
}

// DefaultUnixSocketMode is the socket files' mode unless unix_sockets.mode says otherwise.
const DefaultUnixSocketMode = "0660"

// maxSunPath is the room for a socket path in struct sockaddr_un (sun_path, 108 bytes on
// Linux) less its terminating NUL.
const maxSunPath = 107

// UnixSocketFile is the socket file a listener binds: for PostgreSQL the unix_socket names
// a directory and the file is .s.PGSQL.<port> in it (the port of listen), for MySQL the
// unix_socket is the file. Empty when the listener has none.
func (l Listener) UnixSocketFile() string {
	if l.UnixSocket == "" {
		return ""
	}
	if l.Engine == EngineMySQL {
		return l.UnixSocket
	}
	_, port, _ := net.SplitHostPort(l.Listen)
	return filepath.Join(l.UnixSocket, ".s.PGSQL."+port)
}

// SocketMode is unix_sockets.mode parsed; call it on a validated config.
func (u UnixSockets) SocketMode() os.FileMode {
	n, _ := strconv.ParseUint(u.Mode, 8, 32)
	return os.FileMode(n)
}

// SocketOwner is the uid and gid to chown the socket files to, -1 for "leave as is".
func (u UnixSockets) SocketOwner() (uid, gid int) {
	return parseID(u.Owner), parseID(u.Group)
}

func parseID(s string) int {
	if s == "" {
		return -1
	}
	n, _ := strconv.Atoi(s)
	return n
}

// applyUnixSocketDefaults fills the mode and gives each listener its socket in unix_sockets.dir.
func (c *Config) applyUnixSocketDefaults() {
	if c.UnixSockets.Mode == "" {
		c.UnixSockets.Mode = DefaultUnixSocketMode
	}
	if c.UnixSockets.Dir == "" {
		return
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.UnixSocket != "" {
			continue
		}
		if l.Engine == EngineMySQL {
			_, port, _ := net.SplitHostPort(l.Listen)
			l.UnixSocket = filepath.Join(c.UnixSockets.Dir, "mysql-"+port+".sock")
		} else {
			l.UnixSocket = c.UnixSockets.Dir
		}
	}
}

// validateUnixSockets checks the socket settings as bad reports them, key first.
func (c *Config) validateUnixSockets(bad func(key, format string, args ...any)) {
	u := c.UnixSockets
	if u.Dir != "" && !filepath.IsAbs(u.Dir) {
		bad("unix_sockets.dir", "%q is not an absolute path", u.Dir)
	}
	if n, err := strconv.ParseUint(u.Mode, 8, 32); err != nil || n > 0o777 {
		bad("unix_sockets.mode", "%q is not an octal permission mode such as 0660", u.Mode)
	} else if n&0o600 != 0o600 {
		bad("unix_sockets.mode", "%q must let the owner read and write (0600)", u.Mode)
	} else if n&0o111 != 0 {
		bad("unix_sockets.mode", "%q sets execute bits, which mean nothing on a socket", u.Mode)
	}
	for _, id := range []struct{ key, v string }{{"unix_sockets.owner", u.Owner}, {"unix_sockets.group", u.Group}} {
		if id.v == "" {
			continue
		}
		if n, err := strconv.Atoi(id.v); err != nil || n < 0 {
			bad(id.key, "%q is not a numeric id (names are not looked up)", id.v)
		}
	}
	files := map[string]int{}
	for i, l := range c.Listeners {
		if l.UnixSocket == "" {
			continue
		}
		key := fmt.Sprintf("listeners[%d].unix_socket", i)
		if !filepath.IsAbs(l.UnixSocket) {
			bad(key, "%q is not an absolute path", l.UnixSocket)
			continue
		}
		f := l.UnixSocketFile()
		if strings.HasSuffix(f, ".s.PGSQL.0") {
			bad(key, "PostgreSQL names its socket after listen's port, and %q has port 0", l.Listen)
			continue
		}
		if len(f) > maxSunPath {
			bad(key, "socket file %q is %d bytes, over the %d a unix socket address holds", f, len(f), maxSunPath)
			continue
		}
		if j, dup := files[f]; dup {
			bad(key, "socket file %q is already used by listeners[%d]", f, j)
		}
		files[f] = i
		if err := checkSocketPlace(f); err != nil {
			bad(key, "%v", err)
		}
	}
}

// checkSocketPlace checks what can be known before binding: the directory exists (or can be
// created) and the file, if present, is a socket (a stale one is removed at bind time; any
// other file is never touched).
func checkSocketPlace(file string) error {
	dir := filepath.Dir(file)
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return fmt.Errorf("%q is not a directory", dir)
	} else if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("directory %q: %v", dir, err)
	}
	st, err := os.Lstat(file)
	switch {
	case os.IsNotExist(err):
		return nil
	case err != nil:
		return fmt.Errorf("socket file %q: %v", file, err)
	case st.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("%q exists and is not a socket; refusing to replace it", file)
	}
	return nil
}
