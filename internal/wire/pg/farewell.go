package pg

import "github.com/rdsvalet/rds-valet/internal/proxy"

// farewell is the FATAL ErrorResponse the app reads last when the sidecar ends its session or
// loses the upstream, as a PostgreSQL server says why it terminates a backend: drivers and
// pools see a connection-class SQLSTATE (57P01 on shutdown, else 08006) and reconnect, and
// people see the reason instead of "unexpected EOF". It is said only between two server
// messages, never after the server's own ErrorResponse (a server ending the session says why
// itself), and not to an app that has sent Terminate.
func farewell(t *tracker, reason, path string) []byte {
	if !t.srv.atBoundary() || t.srv.last == 'E' || t.cli.last == 'X' {
		return nil
	}
	code := codeConnectionFailure
	if proxy.ShuttingDown(reason) {
		code = codeAdminShutdown
	}
	b, err := encodeError(newError(code, "%s", proxy.FarewellText(reason, path)))
	if err != nil {
		return nil
	}
	return b
}
