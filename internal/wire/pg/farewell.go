package pg

import "github.com/rdsvalet/rds-valet/internal/proxy"

// farewell is the FATAL ErrorResponse the app reads last when the sidecar ends its session or
// loses the upstream, as a PostgreSQL server says why it terminates a backend: drivers and
// pools see a connection-class SQLSTATE (57P01 on shutdown, else 08006) and reconnect, and
// people see the reason instead of "unexpected EOF". It is said only between two server
// messages, never after the server's own ErrorResponse (a server ending the session says why
// itself), and not to an app that has sent Terminate.
//
// With outcomeUnknown (a cluster's writer listener), a session that ends busy (a transaction
// open or a request outstanding) is told 08007 transaction_resolution_unknown: its COMMIT may
// have reached the old writer, or not, and only the app can tell by looking.
func farewell(t *tracker, reason, path string, outcomeUnknown bool) []byte {
	if !t.srv.atBoundary() || t.srv.last == 'E' || t.cli.last == 'X' {
		return nil
	}
	code := codeConnectionFailure
	if proxy.ShuttingDown(reason) {
		code = codeAdminShutdown
	}
	text := proxy.FarewellText(reason, path)
	if outcomeUnknown && !t.Idle() {
		code = codeTransactionResolutionUnknown
		text += "; the transaction or request in flight may or may not have committed: its outcome is unknown"
	}
	b, err := encodeError(newError(code, "%s", text))
	if err != nil {
		return nil
	}
	return b
}
