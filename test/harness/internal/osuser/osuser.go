// Package osuser lets the harness run database servers that refuse to run as root (PostgreSQL,
// and MariaDB by default) under their Debian system user when the tests run as root.
package osuser

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// For returns the credential to run a server with: nil when not root (run as ourselves), else
// the named system user's (created by the Debian server package).
func For(name string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("running as root needs the %s OS user (install the server package): %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("uid of %s: %w", name, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("gid of %s: %w", name, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// Chown gives p to cred's user; a nil cred (not root) changes nothing.
func Chown(p string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	return nil
}

// MakeTraversable adds the search bit for others on dir and its ancestors, so that a server
// user can reach its data directory below a root-owned 0700 test temp dir. It grants no read
// or write access.
func MakeTraversable(dir string) error {
	for d := dir; ; {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("make %s traversable: %w", d, err)
			}
		}
		parent := parentDir(d)
		if parent == d {
			return nil
		}
		d = parent
	}
}

func parentDir(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "/"
}
