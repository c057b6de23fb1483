// Package sockloop relays logged-in sessions between pairs of sockets from a few event loops
// (epoll) instead of two goroutines per session.
//
// Why: a sidecar relays small request/response messages for thousands of mostly idle pooled
// connections. With a goroutine per direction every message costs a goroutine park and
// wake-up, a read that finds the socket empty before parking, and a trip through the
// scheduler on each system call (which, under a one-CPU limit, makes the runtime hand the
// only P to another thread whenever a loopback write is slow); and every idle session pins
// two goroutine stacks and two read buffers. A loop owns its sockets outright (they are
// taken out of Go's poller), makes its reads and writes as raw non-blocking system calls,
// reads into one buffer shared by all its sessions, and parks in Go's poller on its epoll
// descriptor only when none of its sockets has anything to do. An idle session is then a
// few hundred bytes of state plus its TLS connection.
//
// The upstream side may be TLS: the protocol code wraps the dialed socket with Wrap before
// starting TLS on it; once the session is handed to a loop, the wrapped socket's Read and
// Write become non-blocking (a Read that would block returns a temporary error, which
// crypto/tls passes through without breaking the connection), so the loop drives the
// tls.Conn that sits on top.
package sockloop
