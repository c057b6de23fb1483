package sockloop

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Listener accepts app connections outside Go's poller, for a listener whose connections a
// loop will relay. Go's Accept registers each connection with its poller, asks the kernel its
// local address and sets TCP_NODELAY (and keep-alive off a loopback listener); handing it to
// a loop then costs a dup and a close that takes it out of the poller again. An app that
// connects per request pays all of that every time. An Accepted connection is a bare
// non-blocking socket: its handshake reads and writes are tried on the socket first, and it
// enters Go's poller only if one of them would block; a loop takes it over as it is.
type Listener struct {
	ln net.Listener
	// f is a duplicate of ln's socket as an *os.File: Go's listeners offer no raw read to
	// wait on (their RawConn has Control only), an *os.File in the poller does. ln stays
	// open and unused, so that closing it does what it always does (a unix socket's file).
	f      *os.File
	rc     syscall.RawConn
	tcp    bool
	local  net.Addr
	closed atomic.Bool
}

// NewListener wraps a *net.TCPListener or *net.UnixListener. Use it only where keep-alive is
// not wanted (Go would set it up on each connection; a loopback listener or a unix socket):
// an accepted socket gets TCP_NODELAY and nothing else. Other listeners come back as they are.
func NewListener(ln net.Listener) net.Listener {
	var sc syscall.Conn
	var tcp bool
	switch l := ln.(type) {
	case *net.TCPListener:
		sc, tcp = l, true
	case *net.UnixListener:
		sc = l
	default:
		return ln
	}
	lrc, err := sc.SyscallConn()
	if err != nil {
		return ln
	}
	dfd, derr := -1, error(nil)
	if err := lrc.Control(func(fd uintptr) { dfd, derr = dupCloexec(int(fd)) }); err != nil || derr != nil {
		return ln
	}
	f := os.NewFile(uintptr(dfd), "sockloop-listener")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return ln
	}
	return &Listener{ln: ln, f: f, rc: rc, tcp: tcp, local: ln.Addr()}
}

// Accept waits for the next connection and returns it as an *Accepted.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		var nfd int
		var sa syscall.Sockaddr
		var aerr error
		err := l.rc.Read(func(fd uintptr) bool {
			nfd, sa, aerr = syscall.Accept4(int(fd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
			return aerr != syscall.EAGAIN
		})
		if err != nil {
			if l.closed.Load() {
				// The poller says "use of closed file"; callers stop on net.ErrClosed, as
				// for Go's listeners.
				err = net.ErrClosed
			}
			return nil, &net.OpError{Op: "accept", Net: l.local.Network(), Addr: l.local, Err: err}
		}
		switch aerr {
		case nil:
		case syscall.EINTR, syscall.ECONNABORTED:
			// A connection reset while it waited in the queue: Go skips it too.
			continue
		default:
			return nil, &net.OpError{Op: "accept", Net: l.local.Network(), Addr: l.local, Err: os.NewSyscallError("accept4", aerr)}
		}
		c := &Accepted{fd: nfd, local: l.local, remote: sockaddrAddr(sa, l.tcp)}
		if l.tcp {
			// Every write of the relay is a whole message: Nagle would only hold the next one
			// back for the peer's delayed ACK.
			_ = syscall.SetsockoptInt(nfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		}
		return c, nil
	}
}

// Close closes the wrapped listener (a unix socket's file goes with it, as net.UnixListener
// unlinks what it created).
func (l *Listener) Close() error {
	l.closed.Store(true)
	_ = l.f.Close()
	return l.ln.Close()
}

// Addr is the wrapped listener's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

func sockaddrAddr(sa syscall.Sockaddr, tcp bool) net.Addr {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: append(net.IP(nil), a.Addr[:]...), Port: a.Port}
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: append(net.IP(nil), a.Addr[:]...), Port: a.Port}
	case *syscall.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: "unix"}
	}
	if tcp {
		return &net.TCPAddr{}
	}
	return &net.UnixAddr{Net: "unix"}
}

// Accepted is an app connection from a Listener: a non-blocking socket that is in no poller
// while its reads and writes do not block. The handshake's goroutine uses it as any net.Conn
// (deadlines included); a read or write that would block moves it into Go's poller first.
// Close may come from another goroutine at any time (a shutdown aborting a handshake): the
// mutex makes sure no read or write is on the descriptor when it closes, so that a number
// the kernel hands to the next connection is never read as this one. Once Start hands the
// socket to a loop, Close does nothing: the loop owns it, as it owns the duplicate of a
// connection Go accepted.
type Accepted struct {
	mu     sync.Mutex
	fd     int
	closed bool
	handed bool     // a loop has the socket
	inner  net.Conn // the socket in Go's poller (pollConn) once something would have blocked
	// Deadlines set while in no poller, applied when the socket enters one.
	rdl, wdl      time.Time
	local, remote net.Addr
}

// pollable moves the socket into Go's poller with the deadlines set so far. Called locked.
func (c *Accepted) pollable() (net.Conn, error) {
	if c.inner != nil {
		return c.inner, nil
	}
	pc, err := newPollConn(c.fd, "sockloop-app", c.local, c.remote)
	if err != nil {
		return nil, err
	}
	c.inner, c.fd = pc, -1
	if !c.rdl.IsZero() {
		_ = pc.SetReadDeadline(c.rdl)
	}
	if !c.wdl.IsZero() {
		_ = pc.SetWriteDeadline(c.wdl)
	}
	return pc, nil
}

// usable returns the connection to block on (inner), or nil to try the socket itself;
// called locked.
func (c *Accepted) usable() (net.Conn, error) {
	switch {
	case c.closed || c.handed:
		return nil, net.ErrClosed
	case c.inner != nil:
		return c.inner, nil
	}
	return nil, nil
}

func (c *Accepted) Read(p []byte) (int, error) {
	c.mu.Lock()
	n, in, err := c.readLocked(p)
	c.mu.Unlock()
	if in == nil {
		return n, err
	}
	return in.Read(p)
}

// readLocked reads the bare socket; in is the poller's connection to block on instead, when
// the socket has nothing yet (or already entered the poller).
func (c *Accepted) readLocked(p []byte) (n int, in net.Conn, err error) {
	if in, err = c.usable(); in != nil || err != nil {
		return 0, in, err
	}
	if !c.rdl.IsZero() && !time.Now().Before(c.rdl) {
		return 0, nil, c.opError("read", os.ErrDeadlineExceeded)
	}
	n, e := rawRead(c.fd, p)
	switch {
	case e == 0 && n == 0 && len(p) > 0:
		return 0, nil, io.EOF
	case e == 0:
		return n, nil, nil
	case e != syscall.EAGAIN:
		return 0, nil, c.opError("read", os.NewSyscallError("read", e))
	}
	in, err = c.pollable()
	return 0, in, err
}

func (c *Accepted) Write(p []byte) (int, error) {
	c.mu.Lock()
	done, in, err := c.writeLocked(p)
	c.mu.Unlock()
	if in == nil {
		return done, err
	}
	n, err := in.Write(p[done:])
	return done + n, err
}

// writeLocked writes what the bare socket takes; in is the poller's connection to write the
// rest through (blocking), when the socket's buffer filled (or it already entered the poller).
func (c *Accepted) writeLocked(p []byte) (done int, in net.Conn, err error) {
	if in, err = c.usable(); in != nil || err != nil {
		return 0, in, err
	}
	if !c.wdl.IsZero() && !time.Now().Before(c.wdl) {
		return 0, nil, c.opError("write", os.ErrDeadlineExceeded)
	}
	for done < len(p) {
		n, e := rawSend(c.fd, p[done:])
		if e == syscall.EAGAIN {
			break
		}
		if e != 0 {
			return done, nil, c.opError("write", os.NewSyscallError("write", e))
		}
		done += n
	}
	if done == len(p) {
		return done, nil, nil
	}
	in, err = c.pollable()
	return done, in, err
}

func (c *Accepted) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.local.Network(), Source: c.local, Addr: c.remote, Err: err}
}

// Close closes the socket, unless a loop has it.
func (c *Accepted) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.handed:
		return nil
	case c.closed:
		return net.ErrClosed
	}
	c.closed = true
	if c.inner != nil {
		return c.inner.Close()
	}
	return syscall.Close(c.fd)
}

func (c *Accepted) LocalAddr() net.Addr  { return c.local }
func (c *Accepted) RemoteAddr() net.Addr { return c.remote }

func (c *Accepted) SetDeadline(t time.Time) error      { return c.setDeadline(true, true, t) }
func (c *Accepted) SetReadDeadline(t time.Time) error  { return c.setDeadline(true, false, t) }
func (c *Accepted) SetWriteDeadline(t time.Time) error { return c.setDeadline(false, true, t) }

// setDeadline passes a deadline to the poller's connection, or keeps it for the bare socket's
// reads and writes (and for pollable, should the socket enter the poller later).
func (c *Accepted) setDeadline(read, write bool, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner != nil && !c.handed {
		switch {
		case read && write:
			return c.inner.SetDeadline(t)
		case read:
			return c.inner.SetReadDeadline(t)
		default:
			return c.inner.SetWriteDeadline(t)
		}
	}
	if read {
		c.rdl = t
	}
	if write {
		c.wdl = t
	}
	return nil
}

// handOver gives the socket to a loop: as it is if it never entered Go's poller, else a
// duplicate (detach), as for a connection Go accepted.
func (c *Accepted) handOver() (*Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.handed {
		return nil, net.ErrClosed
	}
	if c.inner == nil {
		c.handed = true
		lc := &Conn{fd: c.fd, local: c.local, remote: c.remote}
		lc.detached.Store(true)
		c.fd = -1
		return lc, nil
	}
	lc := &Conn{inner: c.inner, fd: -1}
	if err := lc.detach(); err != nil {
		return nil, err
	}
	c.handed = true
	return lc, nil
}
