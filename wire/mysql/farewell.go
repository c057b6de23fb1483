package mysql

import "github.com/rdsvalet/rds-valet/proxy"

// farewell is the ERR packet the app reads last when the sidecar ends its session or loses the
// upstream: the app's next command gets it as its answer (sequence id 1) instead of "invalid
// connection" or "Lost connection", with the reason. It is said only between commands (no
// answer outstanding, nothing half-sent), where the app's next read is the answer to its next
// command, and not to an app that has sent COM_QUIT.
func farewell(t *tracker, reason, path string) []byte {
	if !t.betweenCommands() {
		return nil
	}
	var e *Error
	switch reason {
	case proxy.CloseDrain, proxy.CloseCut:
		e = newError(codeServerShutdown, "terminating connection because the sidecar is shutting down")
	case proxy.ClosePathDown:
		e = newError(codeServerLost, "terminating connection because its upstream path %q is down; a new connection goes to a healthy path", path)
	case proxy.CloseUpstream:
		e = newError(codeServerLost, "the connection to the database on path %q was lost", path)
	default:
		e = newError(codeServerLost, "terminating connection")
	}
	return AppendPacket(nil, 1, e.Encode())
}
