package mysql

import "github.com/rdsvalet/rds-valet/internal/proxy"

// farewell is the ERR packet the app reads last when the sidecar ends its session or loses the
// upstream (1053 on shutdown, else 2013): the app's next command gets it as its answer
// (sequence id 1) instead of "invalid connection" or "Lost connection", with the reason. It is
// said only between commands (no answer outstanding, nothing half-sent), where the app's next
// read is the answer to its next command, or while a single command waits with no byte of its
// answer come (a silent upstream), where it is that command's answer; never to an app that
// has sent COM_QUIT.
func farewell(t *tracker, reason, path string) []byte {
	if !t.betweenCommands() && !t.awaitingAnswer() {
		return nil
	}
	code := uint16(codeServerLost)
	if proxy.ShuttingDown(reason) {
		code = codeServerShutdown
	}
	return AppendPacket(nil, 1, newError(code, "%s", proxy.FarewellText(reason, path)).Encode())
}
