// Package mysqlstandin is the MySQL side of the RDS stand-in: between the sidecar and a real
// MariaDB it does what RDS does at login. It demands TLS, switches the client to
// mysql_clear_password, verifies the IAM token, then logs in to MariaDB as the same user with
// a password it knows and relays the session.
package mysqlstandin

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	wm "github.com/rdsvalet/rds-valet/wire/mysql"
)

// Config configures the stand-in.
type Config struct {
	// Listen defaults to 127.0.0.1:0.
	Listen string
	// TLS is the server side's TLS configuration (a certificate for the RDS name).
	TLS *tls.Config
	// Backend is MariaDB's address; Passwords maps each database user to its MariaDB password.
	Backend   string
	Passwords map[string]string
	// Verify checks an IAM token for a user (see NewTokenVerifier, or test/harness/iamtoken).
	Verify func(token, user string) error
	// SwitchPlugin is the auth plugin clients are switched to (default mysql_clear_password);
	// tests set another one to see how a client copes with a plugin it does not speak.
	SwitchPlugin string
	// Logf, when set, receives a line per refused login.
	Logf func(format string, args ...any)
}

// Server is a running stand-in.
type Server struct {
	cfg Config
	ln  net.Listener
	wg  sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	// Counters for assertions.
	Accepted        atomic.Int64
	InsecureRefused atomic.Int64 // clients that did not ask for TLS
	TokenRefused    atomic.Int64 // tokens that failed verification
	LoginsOK        atomic.Int64 // sessions relayed to MariaDB
	BackendFailed   atomic.Int64
	LastRefusal     atomic.Value // string: why the last token was refused
}

// Start listens and serves until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.SwitchPlugin == "" {
		cfg.SwitchPlugin = gm.AUTH_CLEAR_PASSWORD
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.TLS == nil || cfg.Verify == nil {
		return nil, errors.New("mysqlstandin: TLS and Verify are required")
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ln: ln, conns: map[net.Conn]struct{}{}}
	s.LastRefusal.Store("")
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops accepting, closes every connection and waits for every goroutine.
func (s *Server) Close() {
	_ = s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// track registers a connection for Close, or closes it at once when Close has begun.
func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case add && s.closed:
		_ = c.Close()
	case add:
		s.conns[c] = struct{}{}
	default:
		delete(s.conns, c)
	}
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.Accepted.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.track(c, true)
			defer s.track(c, false)
			defer c.Close()
			s.handle(c)
		}()
	}
}

// handle runs one client: greeting, TLS, auth switch, token check, backend login, relay.
func (s *Server) handle(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	back, err := net.DialTimeout("tcp", s.cfg.Backend, 10*time.Second)
	if err != nil {
		s.BackendFailed.Add(1)
		_ = wm.WritePacket(c, 0, (&wm.Err{Code: gm.ER_SERVER_SHUTDOWN, State: "08S01", Message: "backend unavailable"}).Encode())
		return
	}
	s.track(back, true)
	defer s.track(back, false)
	defer back.Close()
	_ = back.SetDeadline(time.Now().Add(30 * time.Second))
	_, p, err := wm.ReadPacket(back, wm.MaxHandshakePacket)
	if err != nil {
		s.BackendFailed.Add(1)
		return
	}
	bg, err := wm.ParseGreeting(p)
	if err != nil || len(bg.Scramble) < 20 {
		s.BackendFailed.Add(1)
		return
	}

	// Greet like RDS: TLS offered, mysql_native_password as the default plugin.
	offer := bg.Capabilities&^(gm.CLIENT_COMPRESS|gm.CLIENT_ZSTD_COMPRESSION_ALGORITHM|gm.CLIENT_OPTIONAL_RESULTSET_METADATA) |
		gm.CLIENT_SSL | gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_SECURE_CONNECTION | gm.CLIENT_PROTOCOL_41 |
		gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | gm.CLIENT_CONNECT_ATTRS | gm.CLIENT_CONNECT_WITH_DB
	g := &wm.Greeting{ServerVersion: bg.ServerVersion, ConnectionID: bg.ConnectionID, Scramble: scramble(),
		Capabilities: offer, Charset: bg.Charset, Status: bg.Status, AuthPlugin: gm.AUTH_NATIVE_PASSWORD}
	if err := wm.WritePacket(c, 0, g.Encode()); err != nil {
		return
	}
	seq, p, err := wm.ReadPacket(c, wm.MaxHandshakePacket)
	if err != nil {
		return
	}
	first, err := wm.ParseHandshakeResponse(p)
	if err != nil {
		_ = wm.WritePacket(c, seq+1, (&wm.Err{Code: gm.ER_HANDSHAKE_ERROR, State: "08S01", Message: "Bad handshake"}).Encode())
		return
	}
	if !first.SSLRequest {
		s.InsecureRefused.Add(1)
		s.cfg.Logf("mysql stand-in: refused a client without TLS (user %q)", first.User)
		_ = wm.WritePacket(c, seq+1, (&wm.Err{Code: 3159, State: "HY000",
			Message: "Connections using insecure transport are prohibited while --require_secure_transport=ON."}).Encode())
		return
	}
	tc := tls.Server(c, s.cfg.TLS)
	if err := tc.Handshake(); err != nil {
		return
	}
	seq, p, err = wm.ReadPacket(tc, wm.MaxHandshakePacket)
	if err != nil {
		return
	}
	resp, err := wm.ParseHandshakeResponse(p)
	if err != nil || resp.SSLRequest {
		_ = wm.WritePacket(tc, seq+1, (&wm.Err{Code: gm.ER_HANDSHAKE_ERROR, State: "08S01", Message: "Bad handshake"}).Encode())
		return
	}
	// RDS answers IAM users with a switch to mysql_clear_password, whatever the client began
	// with.
	sw := append([]byte{gm.EOF_HEADER}, s.cfg.SwitchPlugin...)
	sw = append(sw, 0)
	sw = append(append(sw, scramble()...), 0)
	if err := wm.WritePacket(tc, seq+1, sw); err != nil {
		return
	}
	seq, p, err = wm.ReadPacket(tc, wm.MaxHandshakePacket)
	if err != nil {
		return
	}
	token := strings.TrimSuffix(string(p), "\x00")
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	denied := &wm.Err{Code: gm.ER_ACCESS_DENIED_ERROR, State: "28000",
		Message: fmt.Sprintf("Access denied for user '%s'@'%s' (using password: YES)", resp.User, host)}
	pw, known := s.cfg.Passwords[resp.User]
	if err := s.cfg.Verify(token, resp.User); err != nil || !known {
		if err == nil {
			err = errors.New("no such user")
		}
		s.TokenRefused.Add(1)
		s.LastRefusal.Store(err.Error())
		s.cfg.Logf("mysql stand-in: refused token for %q: %v", resp.User, err)
		_ = wm.WritePacket(tc, seq+1, denied.Encode())
		return
	}

	// Log in to MariaDB with the client's flags, so that what the client believes holds.
	br := wm.HandshakeResponse{
		Capabilities: resp.Capabilities&^gm.CLIENT_SSL&(bg.Capabilities|gm.CLIENT_CONNECT_WITH_DB) |
			gm.CLIENT_PROTOCOL_41 | gm.CLIENT_SECURE_CONNECTION | gm.CLIENT_PLUGIN_AUTH,
		MaxPacketSize: resp.MaxPacketSize, Charset: resp.Charset, User: resp.User, Database: resp.Database,
		AuthPlugin: gm.AUTH_NATIVE_PASSWORD, AuthData: gm.CalcPassword(bg.Scramble[:20], []byte(pw)),
		Attrs: resp.Attrs,
	}
	if resp.Database != "" {
		br.Capabilities |= gm.CLIENT_CONNECT_WITH_DB
	}
	if err := wm.WritePacket(back, 1, br.Encode()); err != nil {
		return
	}
	for {
		bseq, bp, err := wm.ReadPacket(back, wm.MaxHandshakePacket)
		if err != nil || len(bp) == 0 {
			s.BackendFailed.Add(1)
			return
		}
		switch bp[0] {
		case gm.OK_HEADER, gm.ERR_HEADER:
			if bp[0] == gm.ERR_HEADER {
				s.BackendFailed.Add(1)
			}
			if err := wm.WritePacket(tc, seq+1, bp); err != nil || bp[0] == gm.ERR_HEADER {
				return
			}
			s.LoginsOK.Add(1)
			s.relay(tc, back)
			return
		case gm.EOF_HEADER: // switch: only mysql_native_password is expected from MariaDB
			name, data, _ := strings.Cut(string(bp[1:]), "\x00")
			if name != gm.AUTH_NATIVE_PASSWORD || len(data) < 20 {
				s.BackendFailed.Add(1)
				return
			}
			if err := wm.WritePacket(back, bseq+1, gm.CalcPassword([]byte(data[:20]), []byte(pw))); err != nil {
				return
			}
		default:
			s.BackendFailed.Add(1)
			return
		}
	}
}

// relay copies both ways until either side closes.
func (s *Server) relay(client, back net.Conn) {
	_ = client.SetDeadline(time.Time{})
	_ = back.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(back, client)
		_ = back.Close()
		close(done)
	}()
	_, _ = io.Copy(client, back)
	_ = client.Close()
	<-done
}

func scramble() []byte {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = 0x21 + b[i]%94
	}
	return b
}
