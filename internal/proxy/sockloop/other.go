//go:build !linux

package sockloop

import (
	"errors"
	"net"
)

// The relay loop is built on epoll; the sidecar runs on Linux only. This keeps the module
// building (and vet running) elsewhere.

var errNotLinux = errors.New("sockloop: relaying sessions needs Linux (epoll)")

// Wrap returns c.
func Wrap(c net.Conn) net.Conn { return c }

// Relay is a session being relayed by a loop.
type Relay struct{}

// Start fails: there is no loop outside Linux.
func Start(app, up net.Conn, _ []byte, _ Handler) (*Relay, error) {
	_ = app.Close()
	_ = up.Close()
	return nil, errNotLinux
}

// Poke does nothing.
func (r *Relay) Poke() {}
