package pg

import "github.com/rdsvalet/rds-valet/proxy"

// farewell is the FATAL ErrorResponse the app reads last when the sidecar ends its session or
// loses the upstream, as a PostgreSQL server says why it terminates a backend: drivers and
// pools see a connection-class SQLSTATE (57P01, 08006) and reconnect, and people see the
// reason instead of "unexpected EOF". It is said only between two server messages, never
// after the server's own ErrorResponse (a server ending the session says why itself), and
// not to an app that has sent Terminate.
func farewell(t *tracker, reason, path string) []byte {
	if !t.srv.atBoundary() || t.srv.last == 'E' || t.cli.last == 'X' {
		return nil
	}
	var e *Error
	switch reason {
	case proxy.CloseDrain, proxy.CloseCut:
		e = newError(codeAdminShutdown, "terminating connection because the sidecar is shutting down")
	case proxy.ClosePathDown:
		e = newError(codeConnectionFailure, "terminating connection because its upstream path %q is down; a new connection goes to a healthy path", path)
	case proxy.CloseUpstream:
		e = newError(codeConnectionFailure, "the connection to the database on path %q was lost", path)
	default:
		e = newError(codeConnectionFailure, "terminating connection")
	}
	b, err := encodeError(e)
	if err != nil {
		return nil
	}
	return b
}
