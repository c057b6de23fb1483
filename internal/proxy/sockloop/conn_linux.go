package sockloop

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is a TCP (or unix stream) connection that can be handed to a loop. Until then it is the connection it
// wraps; once detached it owns a duplicate of the socket, outside Go's poller, and its Read
// and Write are the loop's non-blocking calls. Only the loop uses a detached Conn.
type Conn struct {
	inner    net.Conn // closed when detached
	detached atomic.Bool
	fd       int
	closed   bool
	// parked: detached but no loop's, after a reset in the loop (Resetter). Start takes it back
	// as it is; a blocking Read, Write or deadline gives it back to Go's poller first. Only its
	// owner of the moment (the pool, then a checkout) touches it, one at a time.
	parked bool
	// unread: the TLS connection may hold bytes the socket will not signal again (a login's
	// or a round trip's), so a loop taking the socket over reads it once at the start. Not so
	// for a socket taken over as it was parked: its loop found it empty.
	unread bool
	// armed lets Read call read(2). The loop arms it when epoll reports the socket readable;
	// a short, empty or failed read disarms it. So a TLS connection that asks for more bytes
	// than have arrived gets "would block" without a read that returns EAGAIN.
	armed bool
	// out is what Write could not send at once; the loop sends it when the socket is writable.
	out           []byte
	local, remote net.Addr
}

// Wrap returns c ready to be handed to a loop later (a *Conn), or c itself if it is neither a
// TCP nor a unix stream connection (an app may come through a unix socket; the loop's read
// and send calls are the same on both). Wrap the upstream socket before starting TLS on it.
func Wrap(c net.Conn) net.Conn {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
		return &Conn{inner: c, fd: -1}
	}
	return c
}

// errWouldBlock is what a detached Conn's Read returns when the socket has nothing more for
// now. It is a temporary net.Error, which crypto/tls hands back without breaking the
// connection (a partial record stays buffered for the next Read). Return it unwrapped:
// crypto/tls tests err.(net.Error), not errors.As. tlsassumptions_test.go pins all this.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "sockloop: socket not ready" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

func isWouldBlock(err error) bool { return errors.Is(err, errWouldBlock) }

// detach takes the socket out of Go's poller: it duplicates the descriptor and closes the
// original (which drops only that reference; the socket stays open, nothing is sent).
func (c *Conn) detach() error {
	if c.detached.Load() {
		c.unread = !c.parked
		c.parked = false
		return nil
	}
	c.unread = true
	sc, ok := c.inner.(syscall.Conn)
	if !ok {
		return errors.New("sockloop: connection has no socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = dupCloexec(int(fd)) }); err != nil {
		return err
	}
	if derr != nil {
		return os.NewSyscallError("dup", derr)
	}
	// No fcntl: a duplicate shares the file's status flags, and Go's poller made the socket
	// non-blocking when it took it (every *net.TCPConn and *net.UnixConn is).
	c.local, c.remote = c.inner.LocalAddr(), c.inner.RemoteAddr()
	_ = c.inner.Close()
	c.fd = nfd
	c.detached.Store(true)
	return nil
}

// park takes a detached socket the loop is done with out of its hands without giving it to
// Go's poller (Resetter): the caller has taken it out of its epoll set.
func (c *Conn) park() {
	c.parked, c.armed = true, false
}

// unpark gives a parked socket to Go's poller before a blocking call on it.
func (c *Conn) unpark() error {
	if !c.parked || c.closed {
		return nil
	}
	if err := c.reattach(); err != nil {
		return err
	}
	c.parked = false
	return nil
}

// reattach gives a detached socket back to Go's poller: the loop's descriptor becomes an
// *os.File in Go's poller (blocking Read and Write, deadlines), dressed as a net.Conn
// (pollConn). The caller has taken it out of its epoll set. On error nothing has changed.
//
// Not net.FileConn: that duplicates the descriptor again, asks the socket its type and both
// addresses, and sets TCP_NODELAY and keep-alive afresh (replacing the dialer's keep-alive
// settings with Go's defaults): some fifteen system calls per pooled session handed back,
// on the path of every app connection reuse serves. os.NewFile takes the descriptor as it
// is (already non-blocking): one fcntl and one epoll_ctl.
func (c *Conn) reattach() error {
	if !c.detached.Load() || c.closed {
		return errors.New("sockloop: the connection is not a detached open socket")
	}
	pc, err := newPollConn(c.fd, "sockloop-upstream", c.local, c.remote)
	if err != nil {
		return err
	}
	c.inner, c.fd, c.armed, c.out = pc, -1, false, nil
	c.detached.Store(false)
	return nil
}

// pollConn is a socket a loop handed back: an *os.File in Go's poller, as a net.Conn. Its
// errors are the ones a net.Conn gives (a *net.OpError, net.ErrClosed, io.EOF), so that
// crypto/tls sees a deadline as a temporary net.Error and keeps the connection usable, and
// callers' errors.Is(err, net.ErrClosed) holds.
type pollConn struct {
	f             *os.File
	local, remote net.Addr
}

// newPollConn puts a non-blocking socket into Go's poller as it is: os.NewFile keeps the
// descriptor (one fcntl and one epoll_ctl), where net.FileConn would duplicate it and ask
// the kernel again what it already told us.
func newPollConn(fd int, name string, local, remote net.Addr) (*pollConn, error) {
	f := os.NewFile(uintptr(fd), name)
	if f == nil {
		return nil, errors.New("sockloop: invalid descriptor")
	}
	return &pollConn{f: f, local: local, remote: remote}, nil
}

func (c *pollConn) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	return n, c.netErr("read", err)
}

func (c *pollConn) Write(p []byte) (int, error) {
	n, err := c.f.Write(p)
	return n, c.netErr("write", err)
}

func (c *pollConn) Close() error                      { return c.netErr("close", c.f.Close()) }
func (c *pollConn) LocalAddr() net.Addr               { return c.local }
func (c *pollConn) RemoteAddr() net.Addr              { return c.remote }
func (c *pollConn) SetDeadline(t time.Time) error     { return c.netErr("set", c.f.SetDeadline(t)) }
func (c *pollConn) SetReadDeadline(t time.Time) error { return c.netErr("set", c.f.SetReadDeadline(t)) }
func (c *pollConn) SetWriteDeadline(t time.Time) error {
	return c.netErr("set", c.f.SetWriteDeadline(t))
}
func (c *pollConn) SyscallConn() (syscall.RawConn, error) {
	return c.f.SyscallConn()
}

// netErr turns an *os.File error into the one net.Conn gives for it.
func (c *pollConn) netErr(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	inner := err
	var pe *os.PathError
	if errors.As(err, &pe) {
		inner = pe.Err
	}
	switch {
	case errors.Is(inner, os.ErrClosed):
		inner = net.ErrClosed
	case errors.Is(inner, os.ErrDeadlineExceeded):
	default:
		var errno syscall.Errno
		if errors.As(inner, &errno) {
			inner = os.NewSyscallError(op, errno)
		}
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: inner}
}

func (c *Conn) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: os.NewSyscallError(op, e)}
}

// Read reads the wrapped connection, or once detached, the socket without blocking.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.unpark(); err != nil {
		return 0, err
	}
	if !c.detached.Load() {
		return c.inner.Read(p)
	}
	if c.closed {
		return 0, net.ErrClosed
	}
	if !c.armed {
		return 0, errWouldBlock
	}
	n, e := rawRead(c.fd, p)
	switch {
	case e == syscall.EAGAIN:
		c.armed = false
		return 0, errWouldBlock
	case e != 0:
		c.armed = false
		return 0, c.opError("read", e)
	case n == 0:
		c.armed = false
		return 0, io.EOF
	}
	if n < len(p) {
		c.armed = false // the socket is drained: a stream read returns all it has
	}
	return n, nil
}

// Write writes the wrapped connection, or once detached, sends what the socket takes now and
// queues the rest (in order, after anything already queued) for the loop to send.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.unpark(); err != nil {
		return 0, err
	}
	if !c.detached.Load() {
		return c.inner.Write(p)
	}
	if c.closed {
		return 0, net.ErrClosed
	}
	if len(c.out) > 0 {
		c.out = append(c.out, p...)
		return len(p), nil
	}
	n, err := c.send(p)
	if err != nil {
		return n, err
	}
	if n < len(p) {
		c.out = append(c.out, p[n:]...)
	}
	return len(p), nil
}

// send writes as much of p as the socket takes without blocking.
func (c *Conn) send(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, e := rawSend(c.fd, p[done:])
		if e == syscall.EAGAIN {
			break
		}
		if e != 0 {
			return done, c.opError("write", e)
		}
		done += n
	}
	return done, nil
}

// flush sends what is queued; it reports whether the queue is now empty (and released).
func (c *Conn) flush() (bool, error) {
	n, err := c.send(c.out)
	if err != nil {
		return false, err
	}
	if n == len(c.out) {
		c.out = nil
		return true, nil
	}
	c.out = c.out[:copy(c.out, c.out[n:])]
	return false, nil
}

// Close closes the wrapped connection, or once detached, the socket.
func (c *Conn) Close() error {
	if !c.detached.Load() {
		return c.inner.Close()
	}
	if c.closed {
		return nil
	}
	c.closed, c.out = true, nil
	return syscall.Close(c.fd)
}

func (c *Conn) LocalAddr() net.Addr {
	if c.detached.Load() {
		return c.local
	}
	return c.inner.LocalAddr()
}

func (c *Conn) RemoteAddr() net.Addr {
	if c.detached.Load() {
		return c.remote
	}
	return c.inner.RemoteAddr()
}

// Deadlines apply until the connection is detached; the loop never blocks, so they mean
// nothing after (crypto/tls sets one around its close_notify). A parked socket goes back to
// Go's poller, where they do.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.unpark(); err != nil {
		return err
	}
	if c.detached.Load() {
		return nil
	}
	return c.inner.SetDeadline(t)
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	if err := c.unpark(); err != nil {
		return err
	}
	if c.detached.Load() {
		return nil
	}
	return c.inner.SetReadDeadline(t)
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	if err := c.unpark(); err != nil {
		return err
	}
	if c.detached.Load() {
		return nil
	}
	return c.inner.SetWriteDeadline(t)
}

// SyscallConn is the socket's raw access while the connection is Go's (before it is handed to
// a loop, or after a loop handed it back) or parked (Control only): internal/reuse peeks at
// a pooled session's socket.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if c.detached.Load() && c.parked && !c.closed {
		return parkedRaw{fd: c.fd}, nil
	}
	sc, ok := c.inner.(syscall.Conn)
	if c.detached.Load() || !ok {
		return nil, errors.New("sockloop: the socket is not Go's now")
	}
	return sc.SyscallConn()
}

// parkedRaw is a parked socket's raw access: Control runs f on the descriptor; Read and Write
// (which wait in Go's poller) are refused, as the socket is in no poller.
type parkedRaw struct{ fd int }

var errParkedRaw = errors.New("sockloop: a parked socket has no poller to wait in")

func (r parkedRaw) Control(f func(fd uintptr)) error { f(uintptr(r.fd)); return nil }
func (parkedRaw) Read(func(fd uintptr) bool) error   { return errParkedRaw }
func (parkedRaw) Write(func(fd uintptr) bool) error  { return errParkedRaw }
