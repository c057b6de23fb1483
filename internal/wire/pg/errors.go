// Package pg speaks the PostgreSQL wire protocol on both sides of the sidecar: the server side
// toward the app (SSLRequest/GSSENCRequest refused in plain text, StartupMessage, optional
// local password, CancelRequest routing) and the client side toward RDS (TLS with
// verification, login with an IAM token or a password by cleartext, MD5 or SCRAM-SHA-256),
// with every failure reported to the app as an ErrorResponse.
package pg

import (
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATE codes the sidecar reports itself.
const (
	codeProtocolViolation = "08P01"
	codeUnableToConnect   = "08001"
	codeConnectionFailure = "08006"
	// codeTransactionResolutionUnknown: the connection was lost while a transaction or a
	// request was in flight on a cluster's writer (docs/cluster.md).
	codeTransactionResolutionUnknown = "08007"
	codeInvalidAuthSpec              = "28000"
	codeInvalidPassword              = "28P01"
	codeTooManyConnections           = "53300"
	codeCannotConnectNow             = "57P03"
	codeAdminShutdown                = "57P01"
	codeFeatureNotSupported          = "0A000"
	codeInternalError                = "XX000"
	severityFatal                    = "FATAL"
	sidecarMessagePrefix             = "rds-valet: "
	maxUpstreamLoginMsgLength        = 1 << 20
)

// Error is a failure the app is told about as an ErrorResponse.
type Error struct {
	Severity string
	Code     string
	Message  string
	Detail   string
	Hint     string
	Err      error // the cause, for logs; never sent as is
}

func (e *Error) Error() string {
	msg := e.Code + " " + e.Message
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

func newError(code, format string, args ...any) *Error {
	return &Error{Severity: severityFatal, Code: code, Message: sidecarMessagePrefix + fmt.Sprintf(format, args...)}
}

// writeError sends e to the app as an ErrorResponse.
func writeError(w io.Writer, e *Error) error {
	b, err := encodeError(e)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// encodeError is e as an ErrorResponse.
func encodeError(e *Error) ([]byte, error) {
	sev := e.Severity
	if sev == "" {
		sev = severityFatal
	}
	msg := &pgproto3.ErrorResponse{
		Severity: sev, SeverityUnlocalized: sev, Code: e.Code,
		Message: e.Message, Detail: e.Detail, Hint: e.Hint,
	}
	return msg.Encode(nil)
}
