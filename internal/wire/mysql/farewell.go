package mysql

import "github.com/rdsvalet/rds-valet/internal/proxy"

// farewell is the ERR packet the app reads last when the sidecar ends its session or loses the
// upstream (1053 on shutdown, else 2013): the app's next command gets it as its answer
// (sequence id 1) instead of "invalid connection" or "Lost connection", with the reason. It is
// said only between commands (no answer outstanding, nothing half-sent), where the app's next
// read is the answer to its next command, or while a single command waits with no byte of its
// answer come (a silent upstream), where it is that command's answer; never to an app that
// has sent COM_QUIT.
//
// With outcomeUnknown (a cluster's writer listener), a session that ends busy (a transaction
// open or a command outstanding) is told ERR 2013 with SQL state 08007 and words saying its
// transaction's outcome is unknown: its COMMIT may have reached the old writer, or not.
func farewell(t *tracker, reason, path string, outcomeUnknown bool) []byte {
	if t.serverEnded || !t.betweenCommands() && !t.awaitingAnswer() {
		return nil
	}
	code := uint16(codeServerLost)
	if proxy.ShuttingDown(reason) {
		code = codeServerShutdown
	}
	e := newError(code, "%s", proxy.FarewellText(reason, path))
	if outcomeUnknown && !t.Idle() {
		e = newError(codeServerLost, "%s; the transaction or command in flight may or may not have committed: its outcome is unknown", proxy.FarewellText(reason, path))
		e.State = stateTransactionResolutionUnknown
	}
	return AppendPacket(nil, 1, e.Encode())
}
