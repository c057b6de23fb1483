package wire

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// NoTLSError says an upstream would not agree to TLS, which the sidecar never goes without.
type NoTLSError struct{ Msg string }

func (e *NoTLSError) Error() string { return e.Msg }

// HealthReason implements health.Classified.
func (e *NoTLSError) HealthReason() string { return "tls" }

// ClosedByPeer reports whether err is the other end closing the connection (an EOF or a
// reset), as opposed to silence (a timeout) or a local failure. During a login that has
// already passed TLS it is a server hanging up, not a broken network path.
func ClosedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// IsTimeout reports whether err is a deadline passing (net.Error's Timeout).
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
