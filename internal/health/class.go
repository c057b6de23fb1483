package health

import (
	"errors"

	"github.com/rdsvalet/rds-valet/internal/auth"
)

// Failure classes: what a failed attempt (a probe, a login, a relayed session) says about the
// path it was made on. Only ClassPath counts against a path (docs/reliability.md).
const (
	// ClassPath: the path is broken. The dial was refused or timed out, the connection was reset
	// before the server's first byte, the TLS handshake failed, or the server fell silent past
	// the timeout.
	ClassPath = "path"
	// ClassAnswered: the database answered (an ErrorResponse, an ERR packet, an auth refusal, a
	// startup rejection): the path works, whatever the answer was.
	ClassAnswered = "answered"
	// ClassInput: the app's input was bad and was refused locally, before anything went
	// upstream. It never reaches a path's health.
	ClassInput = "input"
	// ClassSecret: the sidecar could not get its own secret (an IAM token, the password file):
	// it says nothing about the path.
	ClassSecret = "secret"
)

// Answer is an error that carries the database's own answer. The engines' login errors and
// proxy.AnsweredError implement it; it proves the path reached the database.
type Answer interface {
	error
	DatabaseAnswered()
}

// probeClass is ClassOf for the sidecar's own probe logins, with one exception: the database
// refusing the probe's own credentials (reason auth) is the path's failure. The probe logs in as
// the sidecar itself, with a token signed for this path's token host; refused here, every login
// over this path will be (a wrong token_host, IAM auth off on that endpoint), while another path
// may take them. An app's refused login is that app's answer, never the path's.
func probeClass(err error) string {
	if c := ClassOf(err); c != ClassAnswered || Reason(err) != "auth" {
		return c
	}
	return ClassPath
}

// ClassOf says which class a failed attempt on a path belongs to: ClassAnswered, ClassSecret
// or ClassPath (the app's input never reaches here; callers that see it say ClassInput).
func ClassOf(err error) string {
	var a Answer
	switch {
	case errors.As(err, &a):
		return ClassAnswered
	case auth.IsSecretError(err):
		return ClassSecret
	}
	return ClassPath
}
