package pg

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// Authentication request subtypes ('R' messages).
const (
	authOK                = 0
	authCleartextPassword = 3
	authMD5Password       = 5
	authSASL              = 10
	authSASLContinue      = 11
	authSASLFinal         = 12
)

// maxUpstreamGreeting bounds what the login buffers for the app before ReadyForQuery
// (ParameterStatus, notices): a real server sends about a kilobyte; each message alone is
// already bounded by maxUpstreamLoginMsgLength.
const maxUpstreamGreeting = 4 << 20

// upstreamConn is a logged-in upstream session and what the server said after login.
type upstreamConn struct {
	conn   *tls.Conn
	br     *bufio.Reader
	key    backendKey // the server's cancel key; no secret if it sent none
	greet  []byte     // ParameterStatus, NoticeResponse ... and ReadyForQuery, encoded, in order
	status byte       // the transaction status of the final ReadyForQuery
}

// upstreamError is an ErrorResponse the upstream sent during login.
type upstreamError struct {
	resp pgproto3.ErrorResponse
}

func (e *upstreamError) Error() string {
	return fmt.Sprintf("upstream refused the login: %s %s: %s", e.resp.Severity, e.resp.Code, e.resp.Message)
}

// DatabaseAnswered implements health.Answer: the database refused, so the path reached it.
func (e *upstreamError) DatabaseAnswered() {}

// HealthReason implements health.Classified: class 28 is "invalid authorization
// specification" (a wrong password or token, no such role).
func (e *upstreamError) HealthReason() string {
	if strings.HasPrefix(e.resp.Code, "28") {
		return "auth"
	}
	return "other"
}

// Dialer opens TCP connections to the upstream.
type Dialer = wire.Dialer

// dialTLS connects to addr and negotiates TLS: SSLRequest, a single 'S' byte, then the TLS
// handshake. Nothing the server sends before its certificate is verified is trusted: the 'S'
// is read alone, so any plaintext after it fails the handshake (CVE-2021-23222).
func dialTLS(ctx context.Context, d Dialer, addr string, cfg *tls.Config) (*tls.Conn, error) {
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

	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
	if _, err := raw.Write(req[:]); err != nil {
		return nil, fmt.Errorf("send SSLRequest to %s: %w", addr, wire.CtxErr(ctx, err))
	}
	var resp [1]byte
	if _, err := io.ReadFull(raw, resp[:]); err != nil {
		return nil, fmt.Errorf("read SSLRequest answer from %s: %w", addr, wire.CtxErr(ctx, err))
	}
	switch resp[0] {
	case 'S':
	case 'N':
		return nil, &wire.NoTLSError{Msg: fmt.Sprintf("upstream %s refused TLS (answered 'N' to SSLRequest); the sidecar never logs in without TLS", addr)}
	default:
		return nil, fmt.Errorf("upstream %s answered SSLRequest with %q; not a PostgreSQL server speaking TLS", addr, resp[0])
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		var rec tls.RecordHeaderError
		if errors.As(err, &rec) {
			return nil, fmt.Errorf("TLS handshake with %s: upstream sent data that is not TLS after accepting SSLRequest: %w", addr, err)
		}
		return nil, fmt.Errorf("TLS handshake with %s (server name %q): %w", addr, cfg.ServerName, wire.CtxErr(ctx, err))
	}
	ok = true
	return tc, nil
}

// login runs the PostgreSQL startup on an established TLS connection. secret is fetched only
// when the server asks for a password, and never appears in an error.
func login(ctx context.Context, tc *tls.Conn, params map[string]string, secret func(context.Context) (string, error), salted *saltedCache) (*upstreamConn, error) {
	stop := wire.BindContext(ctx, tc)
	defer stop()

	sm := &pgproto3.StartupMessage{ProtocolVersion: protocolVersion3, Parameters: params}
	buf, err := sm.Encode(nil)
	if err != nil {
		return nil, fmt.Errorf("encode startup: %w", err)
	}
	if _, err := tc.Write(buf); err != nil {
		return nil, fmt.Errorf("send startup: %w", wire.CtxErr(ctx, err))
	}
	br := bufio.NewReaderSize(tc, 8192)
	up := &upstreamConn{conn: tc, br: br}
	var scram *scramClient
	authenticated, negotiated := false, false
	for {
		typ, body, err := readMessage(br, maxUpstreamLoginMsgLength)
		if err != nil {
			err = fmt.Errorf("read login response: %w", wire.CtxErr(ctx, err))
			if wire.ClosedByPeer(err) {
				// Past TLS, a server that hangs up has answered (it is going away).
				return nil, &proxy.HungUpError{Err: err}
			}
			return nil, err
		}
		switch typ {
		case 'E':
			ue := &upstreamError{}
			if err := ue.resp.Decode(body); err != nil {
				return nil, fmt.Errorf("decode upstream ErrorResponse: %w", err)
			}
			return nil, ue
		case 'R':
			if authenticated {
				return nil, errors.New("upstream sent an authentication request after authentication succeeded")
			}
			if len(body) < 4 {
				return nil, errors.New("upstream sent a short authentication request")
			}
			sub := binary.BigEndian.Uint32(body)
			var reply []byte
			switch sub {
			case authOK:
				authenticated = true
				continue
			case authCleartextPassword:
				pw, err := secret(ctx)
				if err != nil {
					return nil, err
				}
				reply, err = (&pgproto3.PasswordMessage{Password: pw}).Encode(nil)
				if err != nil {
					return nil, err
				}
			case authMD5Password:
				if len(body) != 8 {
					return nil, errors.New("upstream sent a malformed MD5 password request")
				}
				pw, err := secret(ctx)
				if err != nil {
					return nil, err
				}
				reply, err = (&pgproto3.PasswordMessage{Password: md5Password(pw, params["user"], body[4:8])}).Encode(nil)
				if err != nil {
					return nil, err
				}
			case authSASL:
				m := &pgproto3.AuthenticationSASL{}
				if err := m.Decode(body); err != nil {
					return nil, fmt.Errorf("decode SASL request: %w", err)
				}
				if !contains(m.AuthMechanisms, "SCRAM-SHA-256") {
					return nil, fmt.Errorf("upstream offers SASL mechanisms %v; the sidecar speaks SCRAM-SHA-256", m.AuthMechanisms)
				}
				pw, err := secret(ctx)
				if err != nil {
					return nil, err
				}
				scram, err = newSCRAMClient(pw)
				if err != nil {
					return nil, err
				}
				scram.cache = salted
				reply, err = (&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: scram.clientFirst()}).Encode(nil)
				if err != nil {
					return nil, err
				}
			case authSASLContinue:
				if scram == nil {
					return nil, errors.New("upstream sent SASLContinue before SASL started")
				}
				final, err := scram.clientFinal(body[4:])
				if err != nil {
					return nil, err
				}
				reply, err = (&pgproto3.SASLResponse{Data: final}).Encode(nil)
				if err != nil {
					return nil, err
				}
			case authSASLFinal:
				if scram == nil {
					return nil, errors.New("upstream sent SASLFinal before SASL started")
				}
				if err := scram.verifyServerFinal(body[4:]); err != nil {
					return nil, err
				}
				continue
			default:
				return nil, fmt.Errorf("upstream asks for authentication method %d, which the sidecar does not support", sub)
			}
			if _, err := tc.Write(reply); err != nil {
				return nil, fmt.Errorf("send authentication response: %w", wire.CtxErr(ctx, err))
			}
		case 'K':
			if up.key, err = decodeBackendKeyData(body); err != nil {
				return nil, fmt.Errorf("decode BackendKeyData: %w", err)
			}
		case 'Z':
			if !authenticated {
				return nil, errors.New("upstream sent ReadyForQuery before authentication")
			}
			if len(body) != 1 || !validTxStatus(body[0]) {
				return nil, errors.New("upstream sent a malformed ReadyForQuery")
			}
			up.status = body[0]
			up.greet = appendMessage(up.greet, typ, body)
			_ = tc.SetDeadline(wire.NoDeadline)
			return up, nil
		case 'v':
			// NegotiateProtocolVersion: the sidecar asked for 3.0 without options, so a server
			// can only be confirming that; the app's own negotiation was with the sidecar.
			if authenticated || negotiated {
				return nil, errors.New("upstream sent NegotiateProtocolVersion out of place")
			}
			negotiated = true
		case 'S', 'N':
			// ParameterStatus, NoticeResponse: the app needs them.
			if !authenticated && typ == 'S' {
				return nil, errors.New("upstream sent ParameterStatus before authentication")
			}
			if len(up.greet)+5+len(body) > maxUpstreamGreeting {
				return nil, fmt.Errorf("upstream sent more than %d bytes of messages before ReadyForQuery", maxUpstreamGreeting)
			}
			up.greet = appendMessage(up.greet, typ, body)
		default:
			return nil, fmt.Errorf("upstream sent unexpected message %q during login", typ)
		}
	}
}

// readMessage reads one backend message, refusing lengths beyond max before allocating.
func readMessage(r *bufio.Reader, max int) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n < 4 || int64(n) > int64(max) {
		return 0, nil, fmt.Errorf("message %q with length %d is outside 4..%d", hdr[0], n, max)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

func appendMessage(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)+4))
	return append(dst, body...)
}

func md5Password(password, user string, salt []byte) string {
	inner := md5.Sum([]byte(password + user))
	h := md5.New()
	h.Write([]byte(hex.EncodeToString(inner[:])))
	h.Write(salt)
	return "md5" + hex.EncodeToString(h.Sum(nil))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// validTxStatus reports whether b is a ReadyForQuery transaction status: idle, in a
// transaction, or in a failed one. Anything else is a server we do not understand.
func validTxStatus(b byte) bool { return b == 'I' || b == 'T' || b == 'E' }
