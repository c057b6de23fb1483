package mysql

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/wire/wiretest"
)

// endlessConn is a net.Conn over wiretest.Endless that swallows what it is sent:
// it backs a forged length with as many bytes as the reader asks for, so only a limit checked
// before allocating stops it.
type endlessConn struct {
	net.Conn // nil: only the methods below are used
	src      wiretest.Endless
	wrote    bytes.Buffer
}

func (e *endlessConn) Read(p []byte) (int, error)                                    { return e.src.Read(p) }
func (e *endlessConn) Write(p []byte) (int, error)                                   { return e.wrote.Write(p) }
func (e *endlessConn) Close() error                                                  { return nil }
func (e *endlessConn) SetDeadline(time.Time) error                                   { return nil }
func (e *endlessConn) SetReadDeadline(time.Time) error                               { return nil }
func (e *endlessConn) SetWriteDeadline(time.Time) error                              { return nil }
func (e *endlessConn) RemoteAddr() net.Addr                                          { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (e *endlessConn) LocalAddr() net.Addr                                           { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (e *endlessConn) DialContext(context.Context, string, string) (net.Conn, error) { return e, nil }

// allocBudget is far below MaxHandshakePacket: a reader that allocated what a forged length
// asks for fails the test.
const allocBudget = 8 << 10

func hdr(n int, seq byte) []byte { return []byte{byte(n), byte(n >> 8), byte(n >> 16), seq} }

// TestOversizedPacketsAreRefusedBeforeAllocating sends every packet the MySQL side reads
// during the handshake (the upstream's greeting, the app's handshake response and local-auth
// answer) with the largest 3-byte length and just past MaxHandshakePacket: each read fails
// with an error naming the length and the limit, without allocating the payload.
func TestOversizedPacketsAreRefusedBeforeAllocating(t *testing.T) {
	p := New(Config{Listener: "t"})
	g := &serverInfo{version: "8.0.36", caps: allCaps}
	upstreamGreeting := func(c *endlessConn) error {
		_, err := dialGreeting(context.Background(), c, "db.test:3306")
		return err
	}
	appResponse := func(c *endlessConn) error {
		err := p.serveApp(&appConn{conn: c}, g)
		// The app is told in an ERR packet (after the sidecar's greeting) what was wrong.
		_, greet, _ := ReadPacket(&c.wrote, MaxHandshakePacket)
		_, errp, _ := ReadPacket(&c.wrote, MaxHandshakePacket)
		if greet == nil || errp == nil || errp[0] != gm.ERR_HEADER || ParseErr(errp).Code != gm.ER_HANDSHAKE_ERROR ||
			!strings.Contains(ParseErr(errp).Message, "exceeds the limit") {
			return errors.New("the app was not sent ERR 1043 naming the limit")
		}
		return err
	}
	for _, tt := range []struct {
		name    string
		head    []byte
		read    func(*endlessConn) error
		wantErr string
	}{
		{"upstream greeting 16 MB", hdr(maxPhysical, 0), upstreamGreeting, "length 16777215 exceeds the limit of 131072 bytes"},
		{"upstream greeting one past the limit", hdr(MaxHandshakePacket+1, 0), upstreamGreeting, "length 131073 exceeds the limit of 131072 bytes"},
		{"app handshake response 16 MB", hdr(maxPhysical, 1), appResponse, "length 16777215 exceeds the limit"},
		{"app handshake response one past the limit", hdr(MaxHandshakePacket+1, 1), appResponse, "length 131073 exceeds the limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			n := wiretest.Allocated(20, func() { err = tt.read(&endlessConn{src: wiretest.Endless{Head: bytes.Clone(tt.head)}}) })
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			if n > allocBudget {
				t.Fatalf("allocated %d bytes per read for a refused length (budget %d)", n, allocBudget)
			}
		})
	}
}

// TestOversizedLoginPacketIsRefused: after TLS, an upstream packet beyond the limit ends the
// login with an error naming it.
func TestOversizedLoginPacketIsRefused(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	addr, _ := fakeServer(t, srvTLS, allCaps, gm.AUTH_NATIVE_PASSWORD, func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
		_, err := c.Write(append(hdr(maxPhysical, 3), make([]byte, 64<<10)...))
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gc, err := dialGreeting(ctx, &net.Dialer{}, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer gc.raw.Close()
	_, err = login(ctx, gc, cliTLS, HandshakeResponse{Capabilities: allCaps, User: "app"}, func(context.Context) (string, error) { return "pw", nil })
	if err == nil || !strings.Contains(err.Error(), "length 16777215 exceeds the limit of 131072 bytes") {
		t.Fatalf("err = %v", err)
	}
}

// TestLengthEncodedFieldsBeyondThePacket: lengths inside a handshake response that claim more
// than the packet holds are refused, not trusted.
func TestLengthEncodedFieldsBeyondThePacket(t *testing.T) {
	base := HandshakeResponse{Capabilities: allCaps &^ gm.CLIENT_CONNECT_ATTRS, MaxPacketSize: 1 << 24, Charset: 45, User: "app"}
	prefix := base.Encode()
	prefix = prefix[:len(prefix)-1-len(base.AuthPlugin)-1-len(base.Database)-1] // up to the auth data
	huge := []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
	if _, err := ParseHandshakeResponse(append(bytes.Clone(prefix), huge...)); err == nil || !strings.Contains(err.Error(), "string of") {
		t.Fatalf("auth data of 2^63 bytes: err = %v", err)
	}
	attrs := base
	attrs.Capabilities |= gm.CLIENT_CONNECT_ATTRS
	b := append(attrs.Encode()[:len(attrs.Encode())-1], huge...)
	if _, err := ParseHandshakeResponse(b); err == nil || !strings.Contains(err.Error(), "connection attributes of") {
		t.Fatalf("attributes of 2^63 bytes: err = %v", err)
	}
}
