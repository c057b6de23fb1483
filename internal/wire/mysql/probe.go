package mysql

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

var (
	_ health.Prober        = (*Protocol)(nil)
	_ health.SessionProber = (*Protocol)(nil)
)

// probeCapabilities are what a probe asks for: the minimum for a 4.1 login with plugins.
const probeCapabilities = gm.CLIENT_PROTOCOL_41 | gm.CLIENT_SECURE_CONNECTION | gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_LONG_PASSWORD

// ProbeTLS implements health.Prober: the server's greeting, an SSLRequest and a verified TLS
// handshake.
func (p *Protocol) ProbeTLS(ctx context.Context, path health.Path) error {
	gc, err := dialGreeting(ctx, p.cfg.Dialer, path.Address)
	if err != nil {
		return err
	}
	defer gc.raw.Close()
	p.learn(gc.greet) // what the next apps are greeted with
	if dl, ok := ctx.Deadline(); ok {
		_ = gc.raw.SetDeadline(dl)
	}
	req := HandshakeResponse{Capabilities: probeCapabilities | gm.CLIENT_SSL, MaxPacketSize: 1 << 24, Charset: gc.greet.Charset, SSLRequest: true}
	if err := WritePacket(gc.raw, 1, req.Encode()); err != nil {
		return fmt.Errorf("send SSLRequest: %w", err)
	}
	tc := tls.Client(gc.raw, p.cfg.TLS.For(path.TLSServerName))
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake (server name %q): %w", path.TLSServerName, err)
	}
	return tc.Close()
}

// probeLogin dials the path and logs in as the probe user (health.login_user, else the
// force-user).
func (p *Protocol) probeLogin(ctx context.Context, path health.Path) (*upstreamConn, error) {
	user := p.cfg.ProbeUser
	if user == "" {
		user = p.cfg.ForceUser
	}
	if user == "" {
		return nil, errors.New("no probe user configured")
	}
	gc, err := dialGreeting(ctx, p.cfg.Dialer, path.Address)
	if err != nil {
		return nil, err
	}
	p.learn(gc.greet) // what the next apps are greeted with
	caps := probeCapabilities & gc.greet.Capabilities
	if p.cfg.ProbeDatabase != "" {
		caps |= gm.CLIENT_CONNECT_WITH_DB
	}
	resp := HandshakeResponse{Capabilities: caps, MaxPacketSize: 1 << 24, Charset: gc.greet.Charset, User: user, Database: p.cfg.ProbeDatabase}
	up, err := login(ctx, gc, p.cfg.TLS.For(path.TLSServerName), resp, func(ctx context.Context) (string, error) {
		return p.cfg.ProbeSecret(ctx, path, user)
	})
	if err != nil {
		_ = gc.raw.Close()
		return nil, err
	}
	return up, nil
}

// ProbeLogin implements health.Prober: a full login as the probe user and SELECT 1.
func (p *Protocol) ProbeLogin(ctx context.Context, path health.Path) error {
	up, err := p.probeLogin(ctx, path)
	if err != nil {
		return err
	}
	defer up.conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = up.conn.SetDeadline(dl)
	}
	if err := WritePacket(up.conn, 0, append([]byte{gm.COM_QUERY}, "SELECT 1"...)); err != nil {
		return fmt.Errorf("probe query: %w", err)
	}
	// Without CLIENT_DEPRECATE_EOF a result set ends with its second EOF; an ERR ends it early.
	eofs := 0
	for eofs < 2 {
		_, pkt, err := ReadPacket(up.br, MaxHandshakePacket)
		if err != nil {
			return fmt.Errorf("probe query: %w", err)
		}
		switch {
		case len(pkt) > 0 && pkt[0] == gm.ERR_HEADER:
			return fmt.Errorf("probe query: %v", ParseErr(pkt))
		case len(pkt) > 0 && pkt[0] == gm.EOF_HEADER && len(pkt) < 9:
			eofs++
		}
	}
	_ = WritePacket(up.conn, 0, []byte{gm.COM_QUIT})
	return nil
}

// OpenProbeSession implements health.SessionProber: a login as the probe user, kept for
// COM_PING. An IAM token is needed only for this login: an established session outlives it.
func (p *Protocol) OpenProbeSession(ctx context.Context, path health.Path) (health.ProbeSession, error) {
	up, err := p.probeLogin(ctx, path)
	if err != nil {
		return nil, err
	}
	s := &probeSession{tc: up.conn}
	if n := up.br.Buffered(); n > 0 { // what the server sent past the login's OK
		b, _ := up.br.Peek(n)
		s.in = append(s.in, b...)
	}
	return s, nil
}

// probeSession is a kept probe session. It parses what it reads itself, from its own buffer,
// so that a read cut by a ping timeout loses nothing and the next Ping goes on waiting for
// the same answer.
type probeSession struct {
	tc      *tls.Conn
	in      []byte // read, not yet parsed
	pending bool   // a COM_PING was sent and its answer not yet read
}

// Ping implements health.ProbeSession: COM_PING, answered by OK (ERR: the server answered, but
// the session is no use; MariaDB sends one before closing an idle session).
func (s *probeSession) Ping(ctx context.Context) error {
	defer wire.BindContextKept(ctx, s.tc)()
	if !s.pending {
		if err := WritePacket(s.tc, 0, []byte{gm.COM_PING}); err != nil {
			return fmt.Errorf("probe ping: send: %w", wire.CtxErr(ctx, err))
		}
		s.pending = true
	}
	var buf [512]byte
	for {
		if len(s.in) >= 4 {
			n := int(s.in[0]) | int(s.in[1])<<8 | int(s.in[2])<<16
			if len(s.in) >= 4+n {
				pkt := s.in[4 : 4+n]
				s.in = s.in[4+n:]
				switch {
				case n > 0 && pkt[0] == gm.OK_HEADER:
					s.pending = false
					return nil
				case n > 0 && pkt[0] == gm.ERR_HEADER:
					return fmt.Errorf("probe ping: the server answered %v", ParseErr(pkt))
				default:
					return fmt.Errorf("probe ping: unexpected answer %#x", pkt[:min(n, 1)])
				}
			}
		}
		n, err := s.tc.Read(buf[:])
		s.in = append(s.in, buf[:n]...)
		if err != nil {
			if n > 0 && wire.IsTimeout(err) {
				continue // parse what came before giving up
			}
			return fmt.Errorf("probe ping: %w", wire.CtxErr(ctx, err))
		}
	}
}

// Close implements health.ProbeSession: COM_QUIT, then close.
func (s *probeSession) Close() error {
	_ = s.tc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_ = WritePacket(s.tc, 0, []byte{gm.COM_QUIT})
	return s.tc.Close()
}
