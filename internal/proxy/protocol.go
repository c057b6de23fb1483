// Package proxy accepts app connections on a listener, enforces limits, hands each connection to
// its engine's Protocol for the handshakes, then relays bytes both ways while tracking whether
// the session is idle, so that draining and path failover close sessions between transactions.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/rdsvalet/rds-valet/internal/health"
)

// Protocol is one engine's side of a connection: the handshakes, and errors in the app's own
// protocol. wire/pg and wire/mysql implement it.
type Protocol interface {
	// Handshake runs the app-facing startup, logs in upstream through paths, and greets the
	// app. On failure it has already told the app why, in its protocol. A nil Upstream with a
	// nil error means the connection was served out of band (a Postgres cancel request).
	Handshake(ctx context.Context, client net.Conn, paths Paths) (*Upstream, error)
	// Refuse tells a client that will not be served why (too many connections, shutting
	// down), reading as much of its startup as the protocol needs first.
	Refuse(ctx context.Context, client net.Conn, reason error)
}

// Upstream is a logged-in upstream session, ready for the relay.
type Upstream struct {
	// Conn is a *tls.Conn over a socket wrapped with sockloop.Wrap (or, in tests, a TCP
	// connection): the relay loop takes it over.
	Conn net.Conn
	// Leftover is what the login read from Conn past its end (see Leftover): the app gets it
	// first.
	Leftover []byte
	Path     string
	Tracker  Tracker
	// OnClose runs once the session is over (e.g. to forget its cancel key).
	OnClose func()
	// Farewell, if set, returns what the app reads last when the sidecar ends the session or
	// the upstream goes away: reason is CloseUpstream, CloseDrain, CloseCut or ClosePathDown
	// ("" when the relay itself failed). It is called under the session's lock, so it may consult
	// the Tracker (to speak only between messages); nil sends nothing.
	Farewell func(reason string) []byte
	// User and Database name the session in logs.
	User, Database string
}

// Tracker follows a session's framing to tell when it is idle: no request outstanding and no
// transaction open. The relay calls it, under the session's lock, with every chunk it copies.
type Tracker interface {
	FromClient(p []byte)
	FromServer(p []byte)
	Idle() bool
}

// FarewellText is what an app is told when its relayed session ends for reason (see
// Upstream.Farewell) on path, the same words in either engine's error.
func FarewellText(reason, path string) string {
	switch reason {
	case CloseDrain, CloseCut:
		return "terminating connection because the sidecar is shutting down"
	case ClosePathDown:
		return fmt.Sprintf("terminating connection because its upstream path %q is down; a new connection goes to a healthy path", path)
	case CloseUpstream:
		return fmt.Sprintf("the connection to the database on path %q was lost", path)
	}
	return "terminating connection"
}

// ShuttingDown reports whether reason is the sidecar's own shutdown (the engines give it its
// own error code), rather than a lost or abandoned upstream.
func ShuttingDown(reason string) bool { return reason == CloseDrain || reason == CloseCut }

// Paths lets an engine reach the upstream: Try calls login with each candidate path, best
// first, until one succeeds, reporting the outcome of each attempt to the health set.
type Paths interface {
	Try(ctx context.Context, login func(ctx context.Context, p health.Path) error) (health.Path, error)
	Lookup(name string) (health.Path, bool)
}

// Reasons a client is refused before its handshake.
var (
	ErrTooManyConnections = errors.New("too many connections to the sidecar")
	ErrShuttingDown       = errors.New("the sidecar is shutting down")
)

// ClientError marks a failure caused by what the app sent (bad startup, wrong password).
type ClientError struct{ Err error }

func (e *ClientError) Error() string { return e.Err.Error() }
func (e *ClientError) Unwrap() error { return e.Err }

// FinalError marks an upstream answer that another path would not change (the database said
// the user has no access, the database does not exist): Try stops at it.
type FinalError struct{ Err error }

func (e *FinalError) Error() string { return e.Err.Error() }
func (e *FinalError) Unwrap() error { return e.Err }

// PathError is one failed attempt on one path.
type PathError struct {
	Path string
	Err  error
}

func (e *PathError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *PathError) Unwrap() error { return e.Err }

// NoPathError says that every path was tried and failed; its message lists each one.
type NoPathError struct {
	Attempts []*PathError
}

func (e *NoPathError) Error() string {
	if len(e.Attempts) == 0 {
		return "no upstream path is configured"
	}
	parts := make([]string, len(e.Attempts))
	for i, a := range e.Attempts {
		parts[i] = a.Error()
	}
	return "no upstream path worked: " + strings.Join(parts, "; ")
}

// All reports whether every attempt failed with an error matching target.
func (e *NoPathError) All(match func(error) bool) bool {
	if len(e.Attempts) == 0 {
		return false
	}
	for _, a := range e.Attempts {
		if !match(a.Err) {
			return false
		}
	}
	return true
}
