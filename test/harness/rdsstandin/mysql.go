package rdsstandin

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// MySQL capability flags (the subset the login needs to reason about).
const (
	clientLongPassword      = 1 << 0 // also "CLIENT_MYSQL": set, MariaDB extended caps are off
	clientConnectWithDB     = 1 << 3
	clientCompress          = 1 << 5
	clientProtocol41        = 1 << 9
	clientSSL               = 1 << 11
	clientSecureConnection  = 1 << 15
	clientPluginAuth        = 1 << 19
	clientConnectAttrs      = 1 << 20
	clientPluginAuthLenenc  = 1 << 21
	clientSSLVerifyServer   = 1 << 30
	maxMySQLHandshakePacket = 16 << 10
	clearPasswordPlugin     = "mysql_clear_password"
	nativePasswordPlugin    = "mysql_native_password"
)

// MySQL error numbers and states the stand-in answers with, as RDS/MySQL do.
const (
	erAccessDenied      = 1045
	erHandshake         = 1043
	erNotSupportedAuth  = 1251
	erSecureTransport   = 3159
	stateAccessDenied   = "28000"
	stateHandshake      = "08S01"
	stateNotSupported   = "08004"
	stateSecureRequired = "HY000"
)

// StartMySQL listens on a random loopback port and speaks the MySQL protocol; Options.Backend
// is a MySQL/MariaDB server on which every user logging in exists with an empty password.
// What the client sees of capabilities, server version and connection id is the backend's,
// so that the raw relay after login stays coherent.
func StartMySQL(o Options) (*Server, error) {
	s, err := start(o)
	if err != nil {
		return nil, err
	}
	s.handle = s.serveMySQL
	s.run()
	return s, nil
}

// greeting is what the stand-in keeps of the backend's initial handshake.
type greeting struct {
	version string
	connID  uint32
	caps    uint32
	charset byte
	status  uint16
}

// handshakeResponse is a parsed HandshakeResponse41.
type handshakeResponse struct {
	caps      uint32
	maxPacket uint32
	charset   byte
	user      string
	auth      []byte
	db        string
	plugin    string
	attrs     []byte // raw, length prefix included
}

func (s *Server) serveMySQL(raw net.Conn) {
	log := s.opts.Logf
	remote := raw.RemoteAddr().String()
	_ = raw.SetDeadline(time.Now().Add(s.opts.HandshakeTimeout))

	var d net.Dialer
	dctx, cancel := context.WithTimeout(s.ctx, s.opts.HandshakeTimeout)
	backend, err := d.DialContext(dctx, "tcp", s.opts.Backend)
	cancel()
	if err != nil {
		log("rdsstandin: mysql %s: backend: %v", remote, err)
		s.failed(ReasonBackend)
		_ = writePacket(raw, 0, errPacket(erHandshake, stateHandshake, "could not connect to the database instance"))
		return
	}
	backendOK := false
	defer func() {
		if !backendOK {
			backend.Close()
		}
	}()
	_ = backend.SetDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	_, gp, err := readPacket(backend, maxMySQLHandshakePacket)
	if err != nil {
		s.failed(ReasonBackend)
		log("rdsstandin: mysql: backend greeting: %v", err)
		return
	}
	if len(gp) > 0 && gp[0] == 0xff {
		// The backend refused before greeting (ERR 1040 "Too many connections", 1129 host
		// blocked): MySQL sends that ERR in place of the handshake, and so does RDS.
		s.failed(ReasonBackend)
		log("rdsstandin: mysql: backend refused before its greeting: %q", gp[min(len(gp), 9):])
		_ = writePacket(raw, 0, gp)
		return
	}
	g, err := parseGreeting(gp)
	if err != nil {
		s.failed(ReasonBackend)
		log("rdsstandin: mysql: backend greeting: %v", err)
		return
	}
	// The client may use what the backend offers, minus compression (the relay does not
	// speak it), plus TLS and plugin auth, which the stand-in itself terminates.
	caps := (g.caps | clientLongPassword | clientSSL | clientPluginAuth | clientSecureConnection) &^ clientCompress
	scramble := make([]byte, 20)
	_, _ = rand.Read(scramble)
	for i, b := range scramble {
		scramble[i] = b&0x7f | 1 // printable-safe, never NUL, as MySQL does
	}
	if err := writePacket(raw, 0, buildGreeting(g, caps, scramble)); err != nil {
		return
	}

	var conn net.Conn = raw
	seq, p, err := readPacket(conn, maxMySQLHandshakePacket)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		s.failed(ReasonClientGone)
		return
	}
	if err != nil {
		log("rdsstandin: mysql %s: handshake response: %v", remote, err)
		s.failed(ReasonProtocol)
		_ = writePacket(conn, seq+1, errPacket(erHandshake, stateHandshake, "Bad handshake"))
		return
	}
	if len(p) >= 4 && binary.LittleEndian.Uint32(p)&clientSSL != 0 {
		if len(p) != 32 {
			s.failed(ReasonProtocol)
			_ = writePacket(conn, seq+1, errPacket(erHandshake, stateHandshake, "Bad handshake"))
			return
		}
		tc := tls.Server(raw, s.opts.TLS)
		if err := tc.Handshake(); err != nil {
			log("rdsstandin: mysql %s: TLS handshake: %v", remote, err)
			s.failed(ReasonTLS)
			return
		}
		conn = tc
		if seq, p, err = readPacket(conn, maxMySQLHandshakePacket); err != nil {
			s.failed(ReasonClientGone)
			return
		}
	} else {
		// require_secure_transport=ON, as an RDS parameter group for IAM users sets it.
		hr, _ := parseHandshakeResponse(p)
		log("rdsstandin: mysql login %q refused: no TLS", hr.user)
		s.failed(ReasonNoTLS)
		_ = writePacket(conn, seq+1, errPacket(erSecureTransport, stateSecureRequired,
			"Connections using insecure transport are prohibited while --require_secure_transport=ON."))
		return
	}
	hr, err := parseHandshakeResponse(p)
	if err != nil {
		log("rdsstandin: mysql %s: handshake response: %v", remote, err)
		s.failed(ReasonProtocol)
		_ = writePacket(conn, seq+1, errPacket(erHandshake, stateHandshake, "Bad handshake"))
		return
	}
	if hr.caps&clientProtocol41 == 0 || hr.caps&clientCompress != 0 {
		s.failed(ReasonProtocol)
		_ = writePacket(conn, seq+1, errPacket(erHandshake, stateHandshake, "Bad handshake"))
		return
	}
	denied := func() {
		_ = writePacket(conn, seq+1, errPacket(erAccessDenied, stateAccessDenied,
			fmt.Sprintf("Access denied for user '%s'@'%s' (using password: YES)", hr.user, hostOf(raw.RemoteAddr()))))
	}

	// RDS makes IAM users authenticate with mysql_clear_password: a client that did not
	// start with it is switched to it.
	password := hr.auth
	plugin := clearPasswordPlugin
	if s.opts.MySQLSwitchPlugin != "" {
		plugin = s.opts.MySQLSwitchPlugin
	}
	if hr.plugin != plugin {
		if hr.caps&clientPluginAuth == 0 {
			s.failed(ReasonProtocol)
			_ = writePacket(conn, seq+1, errPacket(erNotSupportedAuth, stateNotSupported,
				"Client does not support authentication protocol requested by server; consider upgrading MySQL client"))
			return
		}
		sw := append([]byte{0xfe}, plugin+"\x00"...)
		if err := writePacket(conn, seq+1, sw); err != nil {
			return
		}
		if seq, password, err = readPacket(conn, maxMySQLHandshakePacket); err != nil {
			log("rdsstandin: mysql login %q: client left at the auth switch: %v", hr.user, err)
			s.failed(ReasonClientGone)
			return
		}
	}
	if n := len(password); n > 0 && password[n-1] == 0 {
		password = password[:n-1]
	}
	if reason, err := s.checkLogin(string(password), hr.user); err != nil {
		log("rdsstandin: mysql login %q refused: %v", hr.user, err)
		s.failed(reason)
		denied()
		return
	}

	// Log in to the backend on the client's behalf with the flags the client chose (the
	// backend offered all of them), minus TLS, which ended here.
	okPayload, err := backendLogin(backend, hr, g)
	if err != nil {
		log("rdsstandin: mysql login %q: backend: %v", hr.user, err)
		s.failed(ReasonBackend)
		var be *backendErr
		if errors.As(err, &be) {
			_ = writePacket(conn, seq+1, be.payload)
		} else {
			_ = writePacket(conn, seq+1, errPacket(erHandshake, stateHandshake, "could not connect to the database instance"))
		}
		return
	}
	if err := writePacket(conn, seq+1, okPayload); err != nil {
		return
	}
	_ = raw.SetDeadline(time.Time{})
	_ = backend.SetDeadline(time.Time{})
	backendOK = true
	log("rdsstandin: mysql login %s/%s ok", hr.user, hr.db)
	s.session(conn, backend)
}

type backendErr struct{ payload []byte }

func (e *backendErr) Error() string {
	if len(e.payload) > 9 {
		return fmt.Sprintf("ERR %d: %s", binary.LittleEndian.Uint16(e.payload[1:]), e.payload[9:])
	}
	return "ERR packet"
}

// backendLogin authenticates hr.user with an empty password and returns the backend's OK.
func backendLogin(backend net.Conn, hr handshakeResponse, g greeting) ([]byte, error) {
	caps := (hr.caps &^ (clientSSL | clientSSLVerifyServer | clientCompress)) & (g.caps | clientLongPassword)
	caps |= clientProtocol41 | clientSecureConnection | clientPluginAuth
	p := binary.LittleEndian.AppendUint32(nil, caps)
	p = binary.LittleEndian.AppendUint32(p, hr.maxPacket)
	p = append(p, hr.charset)
	p = append(p, make([]byte, 23)...)
	p = append(append(p, hr.user...), 0)
	p = append(p, 0) // empty auth response: lenenc 0 or 1-byte length 0, the same byte
	if caps&clientConnectWithDB != 0 {
		p = append(append(p, hr.db...), 0)
	}
	p = append(append(p, nativePasswordPlugin...), 0)
	if caps&clientConnectAttrs != 0 {
		if hr.attrs != nil {
			p = append(p, hr.attrs...)
		} else {
			p = append(p, 0)
		}
	}
	if err := writePacket(backend, 1, p); err != nil {
		return nil, err
	}
	for range 3 {
		seq, r, err := readPacket(backend, maxMySQLHandshakePacket)
		if err != nil {
			return nil, err
		}
		if len(r) == 0 {
			return nil, errors.New("empty packet")
		}
		switch r[0] {
		case 0x00:
			return r, nil
		case 0xff:
			return nil, &backendErr{payload: r}
		case 0xfe:
			// Auth switch to whatever the user's plugin is: an empty password answers
			// every plugin with empty data.
			if err := writePacket(backend, seq+1, nil); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unexpected packet 0x%02x during backend login", r[0])
		}
	}
	return nil, errors.New("backend login did not finish")
}

func buildGreeting(g greeting, caps uint32, scramble []byte) []byte {
	p := []byte{10}
	p = append(append(p, g.version...), 0)
	p = binary.LittleEndian.AppendUint32(p, g.connID)
	p = append(p, scramble[:8]...)
	p = append(p, 0)
	p = binary.LittleEndian.AppendUint16(p, uint16(caps))
	p = append(p, g.charset)
	p = binary.LittleEndian.AppendUint16(p, g.status)
	p = binary.LittleEndian.AppendUint16(p, uint16(caps>>16))
	p = append(p, byte(len(scramble)+1))
	p = append(p, make([]byte, 10)...)
	p = append(append(p, scramble[8:]...), 0)
	return append(append(p, nativePasswordPlugin...), 0)
}

func parseGreeting(p []byte) (greeting, error) {
	var g greeting
	if len(p) < 1 || p[0] != 10 {
		return g, errors.New("not a protocol 10 greeting")
	}
	i := 1
	end := indexNUL(p, i)
	if end < 0 {
		return g, errors.New("greeting: no version")
	}
	g.version = string(p[i:end])
	i = end + 1
	if len(p) < i+4+8+1+2+1+2+2 {
		return g, errors.New("greeting too short")
	}
	g.connID = binary.LittleEndian.Uint32(p[i:])
	i += 4 + 8 + 1
	lo := uint32(binary.LittleEndian.Uint16(p[i:]))
	g.charset = p[i+2]
	g.status = binary.LittleEndian.Uint16(p[i+3:])
	hi := uint32(binary.LittleEndian.Uint16(p[i+5:]))
	g.caps = lo | hi<<16
	return g, nil
}

func parseHandshakeResponse(p []byte) (handshakeResponse, error) {
	var h handshakeResponse
	if len(p) < 32 {
		return h, errors.New("handshake response too short")
	}
	h.caps = binary.LittleEndian.Uint32(p)
	h.maxPacket = binary.LittleEndian.Uint32(p[4:])
	h.charset = p[8]
	i := 32
	end := indexNUL(p, i)
	if end < 0 {
		return h, errors.New("no user name")
	}
	h.user = string(p[i:end])
	i = end + 1
	switch {
	case h.caps&clientPluginAuthLenenc != 0:
		n, w, ok := lenenc(p[i:])
		if !ok || uint64(len(p)-i-w) < n {
			return h, errors.New("bad auth response length")
		}
		h.auth = p[i+w : i+w+int(n)]
		i += w + int(n)
	case h.caps&clientSecureConnection != 0:
		if i >= len(p) || len(p)-i-1 < int(p[i]) {
			return h, errors.New("bad auth response length")
		}
		h.auth = p[i+1 : i+1+int(p[i])]
		i += 1 + int(p[i])
	default:
		end := indexNUL(p, i)
		if end < 0 {
			return h, errors.New("unterminated auth response")
		}
		h.auth = p[i:end]
		i = end + 1
	}
	if h.caps&clientConnectWithDB != 0 && i < len(p) {
		end := indexNUL(p, i)
		if end < 0 {
			return h, errors.New("unterminated database name")
		}
		h.db = string(p[i:end])
		i = end + 1
	}
	if h.caps&clientPluginAuth != 0 && i < len(p) {
		end := indexNUL(p, i)
		if end < 0 {
			return h, errors.New("unterminated plugin name")
		}
		h.plugin = string(p[i:end])
		i = end + 1
	}
	if h.caps&clientConnectAttrs != 0 && i < len(p) {
		n, w, ok := lenenc(p[i:])
		if !ok || uint64(len(p)-i-w) < n {
			return h, errors.New("bad connection attributes length")
		}
		h.attrs = p[i : i+w+int(n)]
	}
	return h, nil
}

func lenenc(b []byte) (uint64, int, bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	switch b[0] {
	case 0xfc:
		if len(b) < 3 {
			return 0, 0, false
		}
		return uint64(binary.LittleEndian.Uint16(b[1:])), 3, true
	case 0xfd:
		if len(b) < 4 {
			return 0, 0, false
		}
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, 4, true
	case 0xfe:
		if len(b) < 9 {
			return 0, 0, false
		}
		return binary.LittleEndian.Uint64(b[1:]), 9, true
	case 0xfb, 0xff:
		return 0, 0, false
	}
	return uint64(b[0]), 1, true
}

func indexNUL(p []byte, from int) int {
	for i := from; i < len(p); i++ {
		if p[i] == 0 {
			return i
		}
	}
	return -1
}

// readPacket reads one MySQL packet of at most limit bytes (login packets are small; a
// multi-packet payload is a protocol error here).
func readPacket(r io.Reader, limit int) (byte, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	if n > limit {
		return hdr[3], nil, fmt.Errorf("packet of %d bytes exceeds %d", n, limit)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return hdr[3], nil, err
	}
	return hdr[3], p, nil
}

func writePacket(w io.Writer, seq byte, p []byte) error {
	b := make([]byte, 4, 4+len(p))
	b[0], b[1], b[2], b[3] = byte(len(p)), byte(len(p)>>8), byte(len(p)>>16), seq
	_, err := w.Write(append(b, p...))
	return err
}

func errPacket(code uint16, state, msg string) []byte {
	p := []byte{0xff}
	p = binary.LittleEndian.AppendUint16(p, code)
	p = append(p, '#')
	p = append(p, state...)
	return append(p, msg...)
}
