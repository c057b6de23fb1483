package mysql

import (
	"unicode/utf8"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// What MySQL 8 and MariaDB accept in a handshake response, checked on what the sidecar would
// forward before anything is dialed: past these the server refuses the handshake or logs in
// as another name, and such an answer must never look like a broken path (120 KiB of
// attributes made every MySQL path fail).
const (
	// maxConnectAttrs bounds the connection attributes block (the key/value pairs after its
	// length). Both servers' read_client_connect_attrs refuse a longer one ("impose an
	// artificial length limit of 64k", sql/auth/sql_authentication.cc in MySQL, sql/sql_acl.cc
	// in MariaDB) with ER_HANDSHAKE_ERROR; MySQL documents it under "Connection Attribute
	// Limits" (https://dev.mysql.com/doc/refman/8.0/en/performance-schema-connection-attribute-tables.html).
	// MariaDB 10.11 answers 1043 to a 65,536-byte block. Longer single attributes are only
	// truncated in performance_schema (performance_schema_session_connect_attrs_size), not
	// refused, so they are not bounded here.
	maxConnectAttrs = 65535
	// maxUserNameChars is MariaDB's USERNAME_CHAR_LENGTH (include/mysql_com.h; MariaDB 10.11
	// refuses CREATE USER past 128 characters with 1470, and logs a longer login name in as
	// its first 128 characters, under a name the IAM token was not signed for). MySQL 8's is
	// 32: a longer name is no account there and the server answers 1045 itself, a database
	// answer that costs no path; refusing 33 to 128 characters would refuse real MariaDB users.
	maxUserNameChars = 128
	// maxDatabaseNameChars is NAME_CHAR_LEN in both servers (include/mysql_com.h); both answer
	// a longer name with ER_WRONG_DB_NAME, which the sidecar says before dialing.
	maxDatabaseNameChars = 64
)

// The app's auth data is never forwarded (the sidecar logs in with its own IAM token or
// password): it is bounded only by MaxHandshakePacket, and with a local password anything but
// the 20-byte mysql_native_password answer is a wrong password.

// proxyAttr is the attribute the sidecar adds to the app's upstream: it counts toward
// maxConnectAttrs.
var proxyAttr = Attr{"_proxy", "rds-valet"}

// Reasons of rdsvalet_mysql_app_handshake_errors_total for a handshake over a limit.
const (
	reasonUserTooLong     = "user_name_too_long"
	reasonDatabaseTooLong = "database_name_too_long"
	reasonAttrsTooLong    = "connect_attrs_too_long"
)

var limitReasons = []string{reasonUserTooLong, reasonDatabaseTooLong, reasonAttrsTooLong}

// checkLimits refuses the app's handshake when what would be forwarded exceeds what the
// servers accept: the app gets an ERR naming the limit (the code the server itself would
// answer), counted and returned as a ClientError, so no upstream source is asked.
func (p *Protocol) checkLimits(app *appConn) error {
	reason, e := handshakeLimit(app.user, app.resp, p.cfg.ForceUser != "")
	if e == nil {
		return nil
	}
	return p.clientFail(app, reason, e, e)
}

// handshakeLimit returns the first limit the forwarded handshake for user and resp exceeds
// and the app's error, or "" and nil. The values stay out of the message: they may be
// kilobytes long.
func handshakeLimit(user string, resp *HandshakeResponse, forced bool) (string, *Error) {
	if n := utf8.RuneCountInString(user); n > maxUserNameChars {
		// 1470 ER_WRONG_STRING_LENGTH is what both servers answer CREATE USER with.
		e := newError(gm.ER_WRONG_STRING_LENGTH, "user name of %d characters is too long (should be no longer than %d, MariaDB's limit; MySQL 8's is 32)", n, maxUserNameChars)
		if forced {
			e.Message += ": the listener's force_user is too long, fix the sidecar's configuration"
		}
		return reasonUserTooLong, e
	}
	if n := utf8.RuneCountInString(resp.Database); n > maxDatabaseNameChars {
		return reasonDatabaseTooLong, newError(gm.ER_WRONG_DB_NAME, "Incorrect database name: %d characters, longer than the servers' limit of %d", n, maxDatabaseNameChars)
	}
	if n := attrsLength(append(resp.Attrs[:len(resp.Attrs):len(resp.Attrs)], proxyAttr)); n > maxConnectAttrs {
		// 1043 is what MySQL and MariaDB answer this handshake with themselves.
		return reasonAttrsTooLong, newError(codeHandshake, "Bad handshake: connection attributes of %d bytes as forwarded (the sidecar adds %s), over the servers' limit of %d bytes", n, proxyAttr.Key, maxConnectAttrs)
	}
	return "", nil
}

// attrsLength is the length of the connection attributes block HandshakeResponse.Encode
// writes for attrs, its own length prefix not included: what the servers compare with 64 KiB.
func attrsLength(attrs []Attr) int {
	n := 0
	for _, a := range attrs {
		n += lenencLen(len(a.Key)) + len(a.Key) + lenencLen(len(a.Value)) + len(a.Value)
	}
	return n
}

// lenencLen is the size of n as a length-encoded integer.
func lenencLen(n int) int {
	switch {
	case n < 251:
		return 1
	case n < 1<<16:
		return 3
	case n < 1<<24:
		return 4
	}
	return 9
}
