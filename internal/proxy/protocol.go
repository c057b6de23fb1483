// Package proxy accepts app connections on a listener, enforces limits, runs each connection's
// three steps (the engine's Accept, a Source's Open, the engine's Greet), then relays bytes
// both ways while tracking whether the session is idle, so that draining and path failover
// close sessions between transactions.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// A connection goes through three steps, each with one owner (docs/architecture.md):
//
//  1. Protocol.Accept (wire/<engine>) reads the app's startup and says who the app is, a
//     Startup, without touching the network upstream.
//  2. Source.Open (internal/upstream, and later sources) returns a logged-in upstream Session
//     for that Startup: which path, which secret, TLS, the login.
//  3. Protocol.Greet (wire/<engine>) greets the app from that Session and hands the relay an
//     Upstream.
//
// The Startup flows one way, from the listener through these steps to the relay.

// Protocol is one engine's side of a connection toward the app: its startup, its greeting, and
// errors in its own protocol. wire/pg and wire/mysql implement it.
type Protocol interface {
	// Accept runs the app-facing startup and returns who the app is. It never dials
	// upstream. On failure it has already told the app why, in its protocol. A nil Startup
	// with a nil error means the connection was served out of band (a Postgres cancel
	// request).
	Accept(ctx context.Context, client net.Conn) (*Startup, error)
	// Greet tells the app it is logged in, from the upstream session s, and returns what the
	// relay needs. On failure s is closed.
	Greet(client net.Conn, st *Startup, s *Session) (*Upstream, error)
	// Reject tells the app, in its protocol, why no upstream session could be had for st
	// (err is what Source.Open returned).
	Reject(client net.Conn, st *Startup, err error)
	// Refuse tells a client that will not be served why (too many connections, shutting
	// down), reading as much of its startup as the protocol needs first.
	Refuse(ctx context.Context, client net.Conn, reason error)
}

// Startup is who an app said it is, as its engine read it: the identity an upstream session
// is asked for.
type Startup struct {
	// User is the database user to log in as (after the listener's force_user), Database the
	// database the app named (or its engine's default).
	User, Database string
	// Engine is the engine's own record of the startup: what its login upstream and its
	// greeting need (Postgres startup parameters, MySQL capabilities and attributes). Only
	// the engine that made it reads it.
	Engine any
}

// Source hands out logged-in upstream sessions (step 2). It reports the outcome of what it
// tried to the health of its paths; its errors are ClientError, a *PathError wrapping an
// AnsweredError (the database answered on that path), or a NoPathError.
type Source interface {
	Open(ctx context.Context, st *Startup) (*Session, error)
}

// PathEvicter is a Source that keeps upstream sessions of its own between apps (internal/reuse's
// pool). Server.Evict tells it whenever sessions must leave a path (the path went down, its
// instance lost the listener's role, fell behind, or a fallback is over), so that one call
// reaches both the relayed sessions and the kept ones. reason is Evict's (ClosePathDown,
// CloseFailover, ...). It must not block.
type PathEvicter interface {
	EvictPath(path, reason string)
}

// Session is a logged-in upstream session, before the app is greeted.
type Session struct {
	// Path is the name of the path the session runs on.
	Path string
	// Conn is the upstream connection (a *tls.Conn over a socket the relay can take over).
	Conn net.Conn
	// Leftover is what the login read from Conn past its end (see Leftover): the app gets it
	// first.
	Leftover []byte
	// Engine is what the engine's login learnt that its greeting needs (the server's
	// parameters, its key, the transaction status).
	Engine any
	// Release, when set (a Source that reuses sessions, internal/reuse), takes the upstream
	// back when the app leaves the session idle: the relay hands it conn, open and in Go's
	// poller again, with the session's Tracker, instead of closing it; it owns conn from then
	// on. A session that ended any other way calls it with a nil conn and the reason it
	// closed (CloseClient: the app left it busy). It is called from the relay loop, so it
	// must not block.
	Release func(conn net.Conn, t Tracker, reason string)
	// Reset, when set with Release, resets the session inside the relay loop when its app
	// leaves it idle; Release then gets conn only if the reset succeeded, with its socket
	// parked (see sockloop.Resetter).
	Reset Resetter
}

// Resetter resets an upstream session its app left idle from inside the relay loop (a Source
// that reuses sessions, for an engine that can), so that a reuse needs no goroutine and no
// trip through Go's poller. The relay calls it from its loop; it must not block.
type Resetter interface {
	// ResetRequest returns the bytes that reset the session t tracked and how long their
	// answer may take; nil leaves the reset to Release.
	ResetRequest(t Tracker) ([]byte, time.Duration)
	// ResetReply sees each chunk of the answer: done once it is whole, ok if the session may
	// serve another app.
	ResetReply(p []byte) (done, ok bool)
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
	// (or CloseFailover, CloseLagging, CloseFallback; "" when the relay itself failed). It is called under the session's lock, so it may consult
	// the Tracker (to speak only between messages); nil sends nothing.
	Farewell func(reason string) []byte
	// User and Database name the session in logs.
	User, Database string
	// Release is the Session's (Handshake copies it): set, an app that leaves the session
	// idle leaves the upstream to it.
	Release func(conn net.Conn, t Tracker, reason string)
	// Reset is the Session's (Handshake copies it).
	Reset Resetter
}

// Tracker follows a session's framing to tell when it is idle: no request outstanding and no
// transaction open. The relay calls it, under the session's lock, with every chunk it copies.
type Tracker interface {
	FromClient(p []byte)
	FromServer(p []byte)
	Idle() bool
}

// Rewriter is a Tracker that may change what the app reads from the server: the relay calls
// Rewrite in place of FromServer with each chunk, under the session's lock, and delivers what
// it returns (p itself, or other bytes; what it holds back comes out with a later chunk or
// not at all). It lets an engine replace a dying server's last words while a transaction is in
// flight with the outcome-unknown error (docs/cluster.md). The returned slice may be reused at
// the next call.
type Rewriter interface {
	Rewrite(p []byte) []byte
}

// Goodbye is a Tracker that knows its protocol's goodbye (PostgreSQL Terminate, MySQL
// COM_QUIT): a session whose upstream can be reused (Upstream.Release) keeps that message from
// the server, which would end the session.
type Goodbye interface {
	// Goodbye reports whether p, a chunk from the app, is exactly the goodbye message sent
	// with the session idle.
	Goodbye(p []byte) bool
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
	case CloseFailover:
		return fmt.Sprintf("terminating connection because the instance %q no longer has this listener's role (failover); a new connection goes to the instance that has it", path)
	case CloseLagging:
		return fmt.Sprintf("terminating connection because the replica %q fell behind max_replica_lag; a new connection goes to a fresh reader", path)
	case CloseFallback:
		return fmt.Sprintf("terminating connection because it ran on the writer %q only while no reader was fresh (reader_fallback); a new connection goes to a fresh reader", path)
	case CloseSilent:
		return fmt.Sprintf("terminating connection because the database on path %q sent nothing within session_timeout and the path is down", path)
	}
	return "terminating connection"
}

// ShuttingDown reports whether reason is the sidecar's own shutdown (the engines give it its
// own error code), rather than a lost or abandoned upstream.
func ShuttingDown(reason string) bool { return reason == CloseDrain || reason == CloseCut }

// Reasons a client is refused before its handshake.
var (
	ErrTooManyConnections = errors.New("too many connections to the sidecar")
	ErrShuttingDown       = errors.New("the sidecar is shutting down")
)

// ClientError marks a failure caused by what the app sent (bad startup, wrong password).
type ClientError struct{ Err error }

func (e *ClientError) Error() string { return e.Err.Error() }
func (e *ClientError) Unwrap() error { return e.Err }

// AnsweredError marks a login the database answered with a refusal (an ErrorResponse, an ERR
// packet): the path works, the request did not. The app gets the database's own code and
// message. Retry, when set, says why another path could change the answer (the server behind
// this one is shutting down); otherwise a Source stops at it.
type AnsweredError struct {
	Err   error
	Retry string
}

func (e *AnsweredError) Error() string { return e.Err.Error() }
func (e *AnsweredError) Unwrap() error { return e.Err }

// DatabaseAnswered marks the error as the database's answer (health.Answer).
func (e *AnsweredError) DatabaseAnswered() {}

// IncompatibleError marks a path whose upstream cannot serve what the app was already
// promised (a MySQL capability offered in the sidecar's own greeting): the path works, this
// session cannot run on it. A Source moves on to the next path and does not count it against
// this one's health.
type IncompatibleError struct{ Err error }

func (e *IncompatibleError) Error() string { return e.Err.Error() }
func (e *IncompatibleError) Unwrap() error { return e.Err }

// DatabaseAnswered marks the error as the database's answer (its greeting): see health.Answer.
func (e *IncompatibleError) DatabaseAnswered() {}

// HungUpError marks a login the server hung up on after TLS, without an answer (a restart, a
// failover in progress): the path reached a server, so it is not counted against the path, but
// no session came of it. A Source moves on to the next path; if none serves, the app is told it
// could not connect, naming this.
type HungUpError struct{ Err error }

func (e *HungUpError) Error() string {
	return "the server closed the connection during login: " + e.Err.Error()
}
func (e *HungUpError) Unwrap() error { return e.Err }

// DatabaseAnswered marks the path as having reached a server (health.Answer).
func (e *HungUpError) DatabaseAnswered() {}

// PathError is one failed attempt on one path.
type PathError struct {
	Path string
	Err  error
}

func (e *PathError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *PathError) Unwrap() error { return e.Err }

// AnsweredOn is the path whose database answered a failed Source.Open (a *PathError around an
// AnsweredError), or "" when no single path did.
func AnsweredOn(err error) string {
	var pe *PathError
	if errors.As(err, &pe) {
		return pe.Path
	}
	return ""
}

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
