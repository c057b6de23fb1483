// Package rdsstandin is a local stand-in for an RDS endpoint (instance or RDS Proxy). At login
// it behaves like RDS with IAM authentication and TLS enforced: it demands TLS, asks for a
// cleartext password (PostgreSQL) or switches the client to mysql_clear_password (MySQL), and
// verifies that password as an IAM auth token; then it serves the session from a real database
// server by logging in there on the client's behalf and relaying bytes both ways. A client that
// passes here has done what RDS asks.
package rdsstandin

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
)

// Protocol codes of the untyped first messages.
const (
	protocolV3  = 196608
	sslRequest  = 80877103
	gssRequest  = 80877104
	cancelCode  = 80877102
	maxStartup  = 10_000 // MAX_STARTUP_PACKET_LENGTH in PostgreSQL
	maxPassword = 16 << 10
)

// Failure reasons used as keys of Stats.LoginsFailed.
const (
	ReasonNoTLS       = "no_tls"
	ReasonProtocol    = "protocol"
	ReasonTLS         = "tls_handshake"
	ReasonBackend     = "backend"
	ReasonClientGone  = "client_gone" // the client hung up mid-login
	ReasonTokenPrefix = "token_"      // followed by the verifier's reason, e.g. token_expired
	// ReasonNotAuthorized: the token is good but its identity may not rds-db:connect as the user.
	ReasonNotAuthorized = "not_authorized"
)

// Options configure a Server.
type Options struct {
	// Backend is the real PostgreSQL (host:port, plain TCP, trusting the users that log in).
	Backend string
	// TLS is the server config presenting a certificate for the RDS-like hostname.
	TLS *tls.Config
	// Verify checks the password a client sent as an IAM token for user. IAMVerifier builds
	// one from iamtoken options.
	Verify func(token, user string) error
	// Authorize, when set, is asked after the token verifies whether the token's access key may
	// rds-db:connect as arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE/USER (DBUserResource +
	// "/" + user), as RDS checks the caller's IAM policy ("Creating and using an IAM policy
	// for IAM database access"). A refusal fails the login like a bad token does.
	Authorize func(accessKeyID, dbUserARN string) error
	// DBUserResource is arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE_ID (db-... for an
	// instance, prx-... for a proxy); required with Authorize.
	DBUserResource string
	// MySQLSwitchPlugin is the auth plugin MySQL clients are switched to; empty means
	// mysql_clear_password, as RDS does. Tests set another one to see how a client copes
	// with a plugin it does not speak.
	MySQLSwitchPlugin string
	// Listener, when set, is where the stand-in accepts (it takes it over and closes it);
	// nil listens on a random 127.0.0.1 port.
	Listener net.Listener
	// HandshakeTimeout bounds everything before the session is relayed; 0 means 10s.
	HandshakeTimeout time.Duration
	// Logf receives one line per event; tokens are never logged.
	Logf func(format string, args ...any)
}

// Stats are counters for test assertions.
type Stats struct {
	Accepted         int
	LoginsOK         int
	LoginsFailed     map[string]int // by reason
	CancelsForwarded int
	ActiveSessions   int // relaying right now
}

// Server is a running stand-in on 127.0.0.1.
type Server struct {
	opts   Options
	handle func(net.Conn) // the engine's per-connection protocol
	ln     net.Listener
	wg     sync.WaitGroup
	ctx    context.Context
	stop   context.CancelFunc

	closeOnce sync.Once
	closeErr  error

	mu             sync.Mutex
	stats          Stats
	conns          map[net.Conn]bool // every open client conn, handshaking or relaying
	sessions       map[net.Conn]net.Conn
	plaintextAfter []byte
}

// Start listens on a random loopback port and speaks PostgreSQL; Options.Backend is a
// PostgreSQL server that trusts the users logging in.
func Start(o Options) (*Server, error) {
	s, err := start(o)
	if err != nil {
		return nil, err
	}
	s.handle = s.serve
	s.run()
	return s, nil
}

func start(o Options) (*Server, error) {
	if o.Backend == "" || o.TLS == nil || o.Verify == nil {
		return nil, errors.New("rdsstandin: Backend, TLS and Verify are required")
	}
	if o.Authorize != nil && !strings.HasPrefix(o.DBUserResource, "arn:aws:rds-db:") {
		return nil, errors.New("rdsstandin: Authorize needs DBUserResource (arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE_ID)")
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	ln := o.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("rdsstandin: listen: %w", err)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{opts: o, ln: ln, ctx: ctx, stop: stop, conns: map[net.Conn]bool{}, sessions: map[net.Conn]net.Conn{},
		stats: Stats{LoginsFailed: map[string]int{}}}
	return s, nil
}

func (s *Server) run() {
	s.wg.Add(1)
	go s.acceptLoop()
}

// Addr is the address to dial.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.LoginsFailed = make(map[string]int, len(s.stats.LoginsFailed))
	for k, v := range s.stats.LoginsFailed {
		st.LoginsFailed[k] = v
	}
	st.ActiveSessions = len(s.sessions)
	return st
}

// SetPlaintextAfterSSLResponse makes the server send b right after its 'S' answer and before
// the TLS handshake, as a man in the middle injecting data would; nil turns it off. A correct
// client must refuse such a connection rather than read b as protocol data.
func (s *Server) SetPlaintextAfterSSLResponse(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plaintextAfter = append([]byte(nil), b...)
}

// DropSessions closes every relayed session at once (both sides), as an RDS failover does,
// and returns how many there were.
func (s *Server) DropSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, b := range s.sessions {
		c.Close()
		b.Close()
	}
	return len(s.sessions)
}

// Close stops accepting, closes every connection and waits for every goroutine. Calling it
// again is a no-op.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		s.closeErr = s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		for _, b := range s.sessions {
			b.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s.closeErr
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.stats.Accepted++
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.handle(c)
		}()
	}
}

func (s *Server) failed(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.LoginsFailed[reason]++
}

// serve runs one client connection: the pre-TLS negotiation, the login, then the relay.
func (s *Server) serve(raw net.Conn) {
	log := s.opts.Logf
	remote := raw.RemoteAddr().String()
	_ = raw.SetDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	var conn net.Conn = raw
	secure := false
	for {
		code, msg, err := readStartup(conn)
		if err != nil {
			log("rdsstandin: %s: bad startup packet: %v", remote, err)
			s.failed(ReasonProtocol)
			writeError(conn, "08P01", "invalid startup packet layout")
			return
		}
		switch code {
		case sslRequest:
			if secure {
				s.failed(ReasonProtocol)
				writeError(conn, "08P01", "SSLRequest inside TLS")
				return
			}
			s.mu.Lock()
			inject := s.plaintextAfter
			s.mu.Unlock()
			if _, err := conn.Write(append([]byte{'S'}, inject...)); err != nil {
				return
			}
			tc := tls.Server(raw, s.opts.TLS)
			if err := tc.Handshake(); err != nil {
				log("rdsstandin: %s: TLS handshake: %v", remote, err)
				s.failed(ReasonTLS)
				return
			}
			conn, secure = tc, true
		case gssRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return
			}
		case cancelCode:
			s.forwardCancel(msg)
			return
		case protocolV3:
			var sm pgproto3.StartupMessage
			if err := sm.Decode(msg); err != nil {
				log("rdsstandin: %s: startup message: %v", remote, err)
				s.failed(ReasonProtocol)
				writeError(conn, "08P01", "invalid startup packet layout")
				return
			}
			s.login(conn, raw, secure, &sm)
			return
		default:
			log("rdsstandin: %s: unsupported protocol %d.%d", remote, code>>16, code&0xffff)
			s.failed(ReasonProtocol)
			writeError(conn, "0A000", fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", code>>16, code&0xffff))
			return
		}
	}
}

func (s *Server) login(conn, raw net.Conn, secure bool, sm *pgproto3.StartupMessage) {
	log := s.opts.Logf
	user, db := sm.Parameters["user"], sm.Parameters["database"]
	if db == "" {
		db = user
	}
	if user == "" {
		s.failed(ReasonProtocol)
		writeError(conn, "28000", "no PostgreSQL user name specified in startup packet")
		return
	}
	if !secure {
		// What RDS answers when rds.force_ssl=1 and the client did not ask for TLS.
		log("rdsstandin: login %s/%s refused: no TLS", user, db)
		s.failed(ReasonNoTLS)
		writeError(conn, "28000", fmt.Sprintf("no pg_hba.conf entry for host %q, user %q, database %q, no encryption",
			hostOf(raw.RemoteAddr()), user, db))
		return
	}
	ask, _ := (&pgproto3.AuthenticationCleartextPassword{}).Encode(nil)
	if _, err := conn.Write(ask); err != nil {
		return
	}
	typ, body, err := readMessage(conn, maxPassword)
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		log("rdsstandin: login %s: client left before sending a password", user)
		s.failed(ReasonClientGone)
		return
	}
	if err != nil || typ != 'p' {
		log("rdsstandin: login %s: no password message (type %q, %v)", user, typ, err)
		s.failed(ReasonProtocol)
		writeError(conn, "08P01", "expected password response")
		return
	}
	var pm pgproto3.PasswordMessage
	if err := pm.Decode(body); err != nil {
		s.failed(ReasonProtocol)
		writeError(conn, "08P01", "invalid password packet")
		return
	}
	if reason, err := s.checkLogin(pm.Password, user); err != nil {
		log("rdsstandin: login %s/%s refused: %v", user, db, err)
		s.failed(reason)
		writeError(conn, "28P01", fmt.Sprintf("PAM authentication failed for user %q", user))
		return
	}

	var d net.Dialer
	dctx, cancel := context.WithTimeout(s.ctx, s.opts.HandshakeTimeout)
	backend, err := d.DialContext(dctx, "tcp", s.opts.Backend)
	cancel()
	if err != nil {
		log("rdsstandin: login %s/%s: backend: %v", user, db, err)
		s.failed(ReasonBackend)
		writeError(conn, "08006", "could not connect to the database instance")
		return
	}
	// The backend trusts the user; replaying the client's own startup keeps its parameters
	// (database, application_name, options, ...) exactly as sent.
	fwd, _ := sm.Encode(nil)
	if _, err := backend.Write(fwd); err != nil {
		backend.Close()
		s.failed(ReasonBackend)
		writeError(conn, "08006", "could not connect to the database instance")
		return
	}
	_ = raw.SetDeadline(time.Time{})
	log("rdsstandin: login %s/%s ok", user, db)
	s.session(conn, backend)
}

// session counts a successful login and relays until either side ends.
func (s *Server) session(client, backend net.Conn) {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		backend.Close()
		return
	}
	s.stats.LoginsOK++
	s.sessions[client] = backend
	s.mu.Unlock()

	relay(client, backend)

	s.mu.Lock()
	delete(s.sessions, client)
	s.mu.Unlock()
}

// relay copies both ways until either side ends, then closes both so the other copy ends too.
func relay(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		a.Close()
		b.Close()
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// forwardCancel passes a CancelRequest to the backend unchanged; the key the client holds is
// the backend's own, because the session bytes were relayed verbatim.
func (s *Server) forwardCancel(body []byte) {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.HandshakeTimeout)
	defer cancel()
	b, err := d.DialContext(ctx, "tcp", s.opts.Backend)
	if err != nil {
		s.opts.Logf("rdsstandin: cancel: backend: %v", err)
		return
	}
	defer b.Close()
	pkt := binary.BigEndian.AppendUint32(nil, uint32(4+len(body)))
	if _, err := b.Write(append(pkt, body...)); err != nil {
		s.opts.Logf("rdsstandin: cancel: %v", err)
		return
	}
	// PostgreSQL answers a cancel by closing; waiting for that orders the cancel before a
	// test's next assertion.
	_ = b.SetReadDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	_, _ = io.Copy(io.Discard, b)
	s.mu.Lock()
	s.stats.CancelsForwarded++
	s.mu.Unlock()
	s.opts.Logf("rdsstandin: cancel for backend pid %d forwarded", binary.BigEndian.Uint32(body[4:]))
}

// readStartup reads an untyped first-phase message (bounded like PostgreSQL's) and returns
// its code and its body after the length word, code included (StartupMessage.Decode wants it).
func readStartup(r io.Reader) (uint32, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > maxStartup {
		return 0, nil, fmt.Errorf("length %d out of range", n)
	}
	msg := make([]byte, n-4)
	if _, err := io.ReadFull(r, msg); err != nil {
		return 0, nil, err
	}
	return binary.BigEndian.Uint32(msg), msg, nil
}

// readMessage reads one typed message with a body of at most limit bytes.
func readMessage(r io.Reader, limit int) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n-4 > limit {
		return hdr[0], nil, fmt.Errorf("message length %d out of range", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return hdr[0], nil, err
	}
	return hdr[0], body, nil
}

func writeError(w io.Writer, code, msg string) {
	b, err := (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg}).Encode(nil)
	if err == nil {
		_, _ = w.Write(b)
	}
}

func hostOf(a net.Addr) string {
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// checkLogin verifies the token for user and then, with Authorize set, the token's identity's
// rds-db:connect permission; it returns the Stats reason of a refusal.
func (s *Server) checkLogin(token, user string) (string, error) {
	if err := s.opts.Verify(token, user); err != nil {
		return ReasonTokenPrefix + Reason(err), err
	}
	if s.opts.Authorize == nil {
		return "", nil
	}
	if err := s.opts.Authorize(tokenAccessKey(token), s.opts.DBUserResource+"/"+user); err != nil {
		return ReasonNotAuthorized, err
	}
	return "", nil
}

// tokenAccessKey is the access key id in a token's X-Amz-Credential (AKID/DATE/REGION/...).
func tokenAccessKey(token string) string {
	i := strings.Index(token, "?")
	if i < 0 {
		return ""
	}
	q, err := url.ParseQuery(token[i+1:])
	if err != nil {
		return ""
	}
	akid, _, _ := strings.Cut(q.Get("X-Amz-Credential"), "/")
	return akid
}

// IAMVerifier returns a Verify function that checks tokens with iamtoken, expecting the user
// the client logs in as. o.ExpectUser is ignored.
func IAMVerifier(o iamtoken.Options) func(token, user string) error {
	return func(token, user string) error {
		o := o
		o.ExpectUser = user
		_, err := iamtoken.Verify(token, o)
		return err
	}
}

// Reason names a verification failure for Stats.LoginsFailed ("token_" + Reason(err)).
func Reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{iamtoken.ErrMalformed, "malformed"},
		{iamtoken.ErrUnknownAccessKey, "unknown_access_key"},
		{iamtoken.ErrBadSignature, "bad_signature"},
		{iamtoken.ErrExpired, "expired"},
		{iamtoken.ErrNotYetValid, "not_yet_valid"},
		{iamtoken.ErrWrongHost, "wrong_host"},
		{iamtoken.ErrWrongUser, "wrong_user"},
		{iamtoken.ErrWrongScope, "wrong_scope"},
		{iamtoken.ErrSessionToken, "session_token"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}
