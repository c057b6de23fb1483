package reuse

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"time"
)

// errNotQuiet is a pooled session that received something while nobody was using it: a
// server that ended it (an ErrorResponse, an ERR, a close), a notification, a notice. Whatever
// it is, the session is not reused.
var errNotQuiet = errors.New("the pooled session received bytes while idle")

// quiet checks, without a round trip and without waiting, that an upstream connection about
// to be pooled has nothing to read: nothing buffered inside its TLS connection, nothing (and
// no EOF) on its socket. While it is pooled nothing reads the TLS connection, so whatever
// arrives later is on the socket: quietSocket is the check at checkout.
func quiet(c net.Conn) error {
	// A read with its deadline already past returns what the TLS connection holds, or a
	// timeout at once without touching the socket; crypto/tls keeps the connection usable
	// after a timeout (tlsassumptions_test.go in sockloop pins it).
	_ = c.SetReadDeadline(time.Unix(1, 0))
	var b [1]byte
	n, err := c.Read(b[:])
	_ = c.SetReadDeadline(time.Time{})
	var ne net.Error
	switch {
	case n > 0:
		return errNotQuiet
	case err == nil:
	case errors.As(err, &ne) && ne.Timeout():
	default:
		return err
	}
	return quietSocket(c)
}

// quietSocket checks that nothing (and no EOF) waits on c's socket: one recv with MSG_PEEK.
func quietSocket(c net.Conn) error {
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var b [1]byte
	var pn int
	var perr error
	// Control, not Read: a non-blocking peek needs nothing of the poller.
	if err := rc.Control(func(fd uintptr) {
		pn, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		return err
	}
	switch {
	case perr == syscall.EAGAIN:
		return nil
	case perr != nil:
		return perr
	case pn == 0:
		return io.EOF
	}
	return errNotQuiet
}
