package mysql

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// Dialer opens TCP connections to the upstream.
type Dialer = wire.Dialer

// upstreamError is an ERR packet the upstream sent during the greeting or the login.
type upstreamError struct {
	Err
	// greeting: the server sent the ERR instead of its greeting, refusing any session now.
	greeting bool
}

func (e *upstreamError) Error() string {
	return fmt.Sprintf("upstream refused the login: ERROR %d (%s): %s", e.Code, e.State, e.Message)
}

// DatabaseAnswered implements health.Answer: the database refused, so the path reached it.
func (e *upstreamError) DatabaseAnswered() {}

// HealthReason implements health.Classified: access denied (a wrong password or token, no
// grant on the database) is an auth failure.
func (e *upstreamError) HealthReason() string {
	switch e.Code {
	case gm.ER_ACCESS_DENIED_ERROR, gm.ER_DBACCESS_DENIED_ERROR, gm.ER_ACCESS_DENIED_NO_PASSWORD_ERROR:
		return "auth"
	}
	return "other"
}

// unsupportedPluginError says the upstream asked for an auth plugin the sidecar cannot answer.
type unsupportedPluginError struct{ plugin string }

// HealthReason implements health.Classified.
func (e *unsupportedPluginError) HealthReason() string { return "auth" }

// DatabaseAnswered implements health.Answer: the server asked for a plugin, so it answered.
func (e *unsupportedPluginError) DatabaseAnswered() {}

func (e *unsupportedPluginError) Error() string {
	return fmt.Sprintf("upstream asks for auth plugin %q; the sidecar answers mysql_clear_password, mysql_native_password and caching_sha2_password only", e.plugin)
}

// greeted is an upstream TCP connection whose initial handshake has been read, before TLS.
type greeted struct {
	raw   net.Conn
	greet *Greeting
}

// dialGreeting connects to addr and reads the server's initial handshake, straight from the
// socket: nothing is buffered ahead, so no plaintext byte can be mistaken for TLS data later.
// The greeting itself is unauthenticated (MySQL negotiates TLS after it); the sidecar only
// takes capability hints from it and refuses to go on unless it offers TLS.
func dialGreeting(ctx context.Context, d Dialer, addr string) (*greeted, error) {
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = raw.Close()
		}
	}()
	stop := wire.BindContext(ctx, raw)
	defer stop()
	_, p, err := ReadPacket(raw, MaxHandshakePacket)
	if err != nil {
		return nil, fmt.Errorf("read the initial handshake from %s: %w", addr, wire.CtxErr(ctx, err))
	}
	g, err := ParseGreeting(p)
	if err != nil {
		var e *Err
		if errors.As(err, &e) {
			return nil, &upstreamError{Err: *e, greeting: true}
		}
		return nil, fmt.Errorf("initial handshake from %s: %w; not a MySQL server?", addr, err)
	}
	switch {
	case g.Capabilities&gm.CLIENT_PROTOCOL_41 == 0 || g.Capabilities&gm.CLIENT_SECURE_CONNECTION == 0:
		return nil, fmt.Errorf("upstream %s does not speak protocol 4.1 with secure connection", addr)
	case g.Capabilities&gm.CLIENT_SSL == 0:
		return nil, &wire.NoTLSError{Msg: fmt.Sprintf("upstream %s does not offer TLS (CLIENT_SSL unset); the sidecar never logs in without TLS", addr)}
	}
	_ = raw.SetDeadline(wire.NoDeadline)
	ok = true
	return &greeted{raw: raw, greet: g}, nil
}

// upstreamConn is a logged-in upstream session.
type upstreamConn struct {
	conn   *tls.Conn
	br     *bufio.Reader
	ok     []byte // the payload of the OK that ended the login, for the app
	status uint16
	caps   uint32 // what the login asked for: CLIENT_DEPRECATE_EOF shapes a result set
}

// login negotiates TLS on a greeted connection (SSLRequest with the same flags as the response
// that follows), then logs in as resp.User with the secret, answering the plugins the server
// asks for. secret is never part of an error.
func login(ctx context.Context, gc *greeted, cfg *tls.Config, resp HandshakeResponse, secret func(context.Context) (string, error)) (*upstreamConn, error) {
	raw, g := gc.raw, gc.greet
	stop := wire.BindContext(ctx, raw)
	defer stop()

	resp.Capabilities |= gm.CLIENT_SSL
	ssl := resp
	ssl.SSLRequest = true
	if err := WritePacket(raw, 1, ssl.Encode()); err != nil {
		return nil, fmt.Errorf("send SSLRequest: %w", wire.CtxErr(ctx, err))
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake (server name %q): %w", cfg.ServerName, wire.CtxErr(ctx, err))
	}
	pw, err := secret(ctx)
	if err != nil {
		return nil, err
	}
	plugin := g.AuthPlugin
	data, supported := authData(plugin, g.Scramble, pw)
	if !supported || (len(data) > 250 && resp.Capabilities&gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA == 0) {
		// Any plugin the server prefers by default that we cannot start with: begin with
		// mysql_native_password, the server switches us to what the user needs.
		plugin = gm.AUTH_NATIVE_PASSWORD
		data, _ = authData(plugin, g.Scramble, pw)
	}
	resp.AuthPlugin = plugin
	resp.AuthData = data
	if resp.Capabilities&gm.CLIENT_PLUGIN_AUTH == 0 {
		resp.AuthPlugin = ""
	}
	if err := WritePacket(tc, 2, resp.Encode()); err != nil {
		return nil, fmt.Errorf("send handshake response: %w", wire.CtxErr(ctx, err))
	}
	br := bufio.NewReaderSize(tc, 16<<10)
	switched := false
	for {
		seq, p, err := ReadPacket(br, MaxHandshakePacket)
		if err != nil {
			err = fmt.Errorf("read login response: %w", wire.CtxErr(ctx, err))
			if wire.ClosedByPeer(err) {
				// Past TLS, a server that hangs up has answered (it is going away).
				return nil, &proxy.HungUpError{Err: err}
			}
			return nil, err
		}
		if len(p) == 0 {
			return nil, errors.New("upstream sent an empty packet during login")
		}
		var reply []byte
		switch p[0] {
		case gm.OK_HEADER:
			st, ok := OKStatus(p)
			if !ok {
				return nil, errors.New("upstream sent a malformed OK packet")
			}
			_ = raw.SetDeadline(wire.NoDeadline)
			return &upstreamConn{conn: tc, br: br, ok: p, status: st, caps: resp.Capabilities}, nil
		case gm.ERR_HEADER:
			return nil, &upstreamError{Err: *ParseErr(p)}
		case gm.EOF_HEADER: // AuthSwitchRequest
			if switched {
				return nil, errors.New("upstream switched the auth plugin twice")
			}
			switched = true
			r := reader{b: p[1:]}
			name := string(r.nulStringOrRest())
			if len(p) == 1 {
				name = gm.AUTH_MYSQL_OLD_PASSWORD
			}
			scramble := r.b[r.off:]
			if n := len(scramble); n > 0 && scramble[n-1] == 0 {
				scramble = scramble[:n-1]
			}
			d, ok := authData(name, scramble, pw)
			if !ok {
				return nil, &unsupportedPluginError{plugin: name}
			}
			plugin, g = name, &Greeting{Scramble: append([]byte(nil), scramble...)}
			reply = d
		case 0x01: // AuthMoreData
			if plugin != gm.AUTH_CACHING_SHA2_PASSWORD || len(p) < 2 {
				return nil, fmt.Errorf("upstream sent unexpected auth data for plugin %q", plugin)
			}
			switch p[1] {
			case gm.CACHE_SHA2_FAST_AUTH:
				continue // the OK follows
			case gm.CACHE_SHA2_FULL_AUTH:
				// Over TLS the full authentication takes the password in clear.
				reply = append([]byte(pw), 0)
			default:
				return nil, fmt.Errorf("upstream sent unknown caching_sha2_password state %d", p[1])
			}
		default:
			return nil, fmt.Errorf("upstream sent unexpected packet 0x%02x during login", p[0])
		}
		if err := WritePacket(tc, seq+1, reply); err != nil {
			return nil, fmt.Errorf("send auth data: %w", wire.CtxErr(ctx, err))
		}
	}
}

// authData computes what plugin sends for password pw with the server's scramble.
func authData(plugin string, scramble []byte, pw string) ([]byte, bool) {
	if len(scramble) > 20 {
		scramble = scramble[:20]
	}
	switch plugin {
	case gm.AUTH_CLEAR_PASSWORD:
		return append([]byte(pw), 0), true
	case gm.AUTH_NATIVE_PASSWORD, "":
		return gm.CalcPassword(scramble, []byte(pw)), true
	case gm.AUTH_CACHING_SHA2_PASSWORD:
		return gm.CalcCachingSha2Password(scramble, pw), true
	}
	return nil, false
}

// answerRetry says why another path could change the server's refusal e, or "" when it would
// not: the server is going away (behind another path may be the new writer), or it judges the
// client's host, which differs per path (the RDS Proxy's address rather than the pod's). A
// full server (1040), a bad password (1045) or an unknown database (1049) is the same on every
// path.
func answerRetry(e *Err) string {
	switch e.Code {
	case gm.ER_SERVER_SHUTDOWN:
		return "the server is shutting down (1053)"
	case erConnectionKilled:
		return "the server killed the connection (1927)"
	case erServerOfflineMode:
		return "the server is in offline mode (3032)"
	case gm.ER_HOST_IS_BLOCKED, gm.ER_HOST_NOT_PRIVILEGED:
		return fmt.Sprintf("the server refuses the client host (%d), which differs per path", e.Code)
	}
	return ""
}

// Error codes go-mysql does not name: MariaDB's ER_CONNECTION_KILLED and MySQL's
// ER_SERVER_OFFLINE_MODE.
const (
	erConnectionKilled  = 1927
	erServerOfflineMode = 3032
)
