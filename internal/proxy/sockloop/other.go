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

// NewListener returns ln.
func NewListener(ln net.Listener) net.Listener { return ln }

// Relay is a session being relayed by a loop.
type Relay struct{}

// Loops has no loop outside Linux: New succeeds, so that the process assembles as on Linux,
// and every Start fails.
type Loops struct{}

// New returns Loops whose Start always fails.
func New(int) (*Loops, error) { return &Loops{}, nil }

// Start fails: there is no loop outside Linux.
func (*Loops) Start(app, up net.Conn, _ []byte, _ Handler) (*Relay, error) {
	_ = app.Close()
	_ = up.Close()
	return nil, errNotLinux
}

// Close does nothing.
func (*Loops) Close() {}

// Poke does nothing.
func (r *Relay) Poke() {}
