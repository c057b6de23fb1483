// Package mysql speaks the MySQL client/server protocol on both sides of the sidecar: the server
// side toward the app (initial handshake, the app's HandshakeResponse41, optional local
// password, SSLRequest refused in plain text) and the client side toward RDS (TLS required and
// verified, login with an IAM token by mysql_clear_password, or a static password by
// mysql_native_password or caching_sha2_password). After login it relays raw packets, so it
// makes the capability flags the app and the upstream believe in agree. Every failure reaches
// the app as an ERR packet with a MySQL error code and SQL state.
package mysql

import (
	"fmt"
	"io"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// Error codes the sidecar reports itself (server codes, plus the client code 2003 that drivers
// already show as "cannot connect").
const (
	codeConCount         = gm.ER_CON_COUNT_ERROR     // 1040, 08004
	codeHandshake        = gm.ER_HANDSHAKE_ERROR     // 1043, 08S01
	codeAccessDenied     = gm.ER_ACCESS_DENIED_ERROR // 1045, 28000
	codeServerShutdown   = gm.ER_SERVER_SHUTDOWN     // 1053, 08S01
	codeNotSupportedAuth = gm.ER_NOT_SUPPORTED_AUTH_MODE
	codeConnHostError    = 2003 // CR_CONN_HOST_ERROR
	codeServerLost       = 2013 // CR_SERVER_LOST: "Lost connection to MySQL server"
	codeUnknownError     = gm.ER_UNKNOWN_ERROR

	sidecarPrefix = "rds-valet: "
	// stateTransactionResolutionUnknown is SQL:2016's 08007, which MySQL has no code for: the
	// farewell of a transaction cut by a writer failover carries it (docs/cluster.md).
	stateTransactionResolutionUnknown = "08007"
)

// sqlState returns the SQL state MySQL uses for code.
func sqlState(code uint16) string {
	if s, ok := gm.MySQLState[code]; ok {
		return s
	}
	switch code {
	case codeConnHostError, codeServerLost:
		return "HY000"
	case codeAccessDenied:
		return "28000"
	}
	return gm.DEFAULT_MYSQL_STATE
}

// Error is a failure the app is told about as an ERR packet.
type Error struct {
	Err
	Cause error // for logs; never sent as is
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Cause }

func newError(code uint16, format string, args ...any) *Error {
	return &Error{Err: Err{Code: code, State: sqlState(code), Message: sidecarPrefix + fmt.Sprintf(format, args...)}}
}

// writeErr sends e as an ERR packet with sequence id seq.
func writeErr(w io.Writer, seq byte, e *Err) error {
	return WritePacket(w, seq, e.Encode())
}
