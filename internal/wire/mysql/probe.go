package mysql

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/health"
)

var _ health.Prober = (*Protocol)(nil)

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

// ProbeLogin implements health.Prober: a full login as the probe user and SELECT 1.
func (p *Protocol) ProbeLogin(ctx context.Context, path health.Path) error {
	user := p.cfg.ProbeUser
	if user == "" {
		user = p.cfg.ForceUser
	}
	if user == "" {
		return errors.New("no probe user configured")
	}
	gc, err := dialGreeting(ctx, p.cfg.Dialer, path.Address)
	if err != nil {
		return err
	}
	defer gc.raw.Close()
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
