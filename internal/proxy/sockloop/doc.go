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
// Ownership: the package keeps no state. New starts a set of loops (Loops), one per P by
// default; the process creates one set, hands it to every listener's server, and closes it
// after the servers have drained. Close stops each loop goroutine and waits for it; a relay
// still running then is cut (Farewell(ByHandler), then Ended), and Start fails with ErrClosed.
//
// The upstream side may be TLS: the socket must be wrapped with Wrap before TLS starts on it.
// Wrap is a pure function, passed in by the assembly (the protocols' Config.Wrap), so that no
// protocol package imports the relay. Once the session is handed to a loop, the wrapped
// socket's Read and Write become non-blocking: a Read that would block returns a temporary
// net.Error, which crypto/tls passes through without breaking the connection or losing a
// partial record, and a Write the socket cannot take is queued, so the loop drives the
// tls.Conn that sits on top. tlsassumptions_test.go pins that crypto/tls behaviour.
package sockloop
