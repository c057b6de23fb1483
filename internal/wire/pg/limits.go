package pg

import (
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

// What PostgreSQL accepts, checked on the startup as the sidecar would forward it (after
// force_user, with the defaulted database, without protocol options) before anything is
// dialed: past these the server refuses or changes the login, and such an answer must never
// look like a broken path (an 08P01 for a 20 kB startup marked every path down).
const (
	// maxIdentifierLength is NAMEDATALEN-1 (src/include/pg_config_manual.h): ProcessStartupPacket
	// (src/backend/tcop/backend_startup.c) cuts longer user and database names to it instead
	// of refusing them, and CREATE ROLE/DATABASE truncate them the same way, so no role or
	// database has a longer name. The sidecar refuses them rather than forwarding: the IAM token
	// is signed for the name the sidecar sends, while the server would authenticate the
	// truncated one, and the app would get an auth failure naming a user it never sent.
	maxIdentifierLength = 63
	// maxForwardedStartup bounds the StartupMessage sent upstream, its length word included.
	// PostgreSQL refuses a startup whose length past that word exceeds MAX_STARTUP_PACKET_LENGTH
	// (10000, src/include/libpq/pqcomm.h): it logs "invalid length of startup packet" and
	// closes without an ErrorResponse (the RDS stand-in answers 08P01). The sidecar keeps the
	// 4 bytes of margin the app side reads with (maxStartupLength), as the stand-in does.
	// PostgreSQL bounds no single parameter value further: application_name and the like are
	// truncated, not refused.
	maxForwardedStartup = maxStartupLength
)

// codeNameTooLong is name_too_long, what PostgreSQL uses for an identifier over
// NAMEDATALEN-1.
const codeNameTooLong = "42622"

// Reasons of rdsvalet_pg_startup_limit_refusals_total.
const (
	reasonUserTooLong     = "user_name_too_long"
	reasonDatabaseTooLong = "database_name_too_long"
	reasonStartupTooLong  = "startup_packet_too_long"
)

var limitReasons = []string{reasonUserTooLong, reasonDatabaseTooLong, reasonStartupTooLong}

func newLimitRefusals() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rdsvalet_pg_startup_limit_refusals_total",
		Help: "App startups refused before dialing because what would be forwarded exceeds PostgreSQL's limits, by reason (user_name_too_long, database_name_too_long, startup_packet_too_long).",
	}, []string{"listener", "reason"})
}

// checkLimits refuses a startup whose forwarded form PostgreSQL would not take as sent: the
// app gets an ErrorResponse naming the limit, and the error is a ClientError, so no upstream
// source is asked and no path is blamed.
func (p *Protocol) checkLimits(client net.Conn, params map[string]string) error {
	reason, e := startupLimit(params, p.cfg.ForceUser != "")
	if e == nil {
		return nil
	}
	p.cfg.Metrics.limits.WithLabelValues(p.cfg.Listener, reason).Inc()
	_ = writeError(client, e)
	return &proxy.ClientError{Err: e}
}

// startupLimit returns the first limit params exceed and the app's error, or "" and nil. The
// names themselves stay out of the message: they may be kilobytes long.
func startupLimit(params map[string]string, forced bool) (string, *Error) {
	if n := len(params["user"]); n > maxIdentifierLength {
		e := newError(codeNameTooLong, "user name of %d bytes is longer than PostgreSQL's limit of %d bytes (NAMEDATALEN-1)", n, maxIdentifierLength)
		e.Hint = "PostgreSQL cuts longer names, so no role has this one; the IAM token would be signed for a name the server does not check"
		if forced {
			e.Hint = "the listener's force_user is too long: fix the sidecar's configuration"
		}
		return reasonUserTooLong, e
	}
	if n := len(params["database"]); n > maxIdentifierLength {
		e := newError(codeNameTooLong, "database name of %d bytes is longer than PostgreSQL's limit of %d bytes (NAMEDATALEN-1)", n, maxIdentifierLength)
		e.Hint = "PostgreSQL cuts longer names, so no database has this one"
		return reasonDatabaseTooLong, e
	}
	if n := forwardedStartupLength(params); n > maxForwardedStartup {
		e := newError(codeProtocolViolation, "startup packet too long: forwarded upstream (user, database and parameters) it would be %d bytes, over PostgreSQL's limit of %d bytes (MAX_STARTUP_PACKET_LENGTH)", n, maxForwardedStartup)
		e.Hint = "send fewer or shorter startup parameters; a database left out defaults to the user name and counts too"
		return reasonStartupTooLong, e
	}
	return "", nil
}

// forwardedStartupLength is the length of the StartupMessage login() sends for params, length
// word included: the length and the version, each parameter as two NUL-terminated strings,
// and the final NUL (pgproto3.StartupMessage.Encode).
func forwardedStartupLength(params map[string]string) int {
	n := 4 + 4 + 1
	for k, v := range params {
		n += len(k) + 1 + len(v) + 1
	}
	return n
}
