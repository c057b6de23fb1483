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
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rdsvalet/rds-valet/internal/proxy"
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

// TestAttrsLength: the length checkLimits computes is that of the block Encode writes.
func TestAttrsLength(t *testing.T) {
	for _, attrs := range [][]Attr{
		nil,
		{{"_client_name", "libmysql"}},
		{{"k", strings.Repeat("v", 250)}, {strings.Repeat("k", 251), strings.Repeat("v", 70000)}},
	} {
		h := HandshakeResponse{Capabilities: allCaps &^ gm.CLIENT_SSL, User: "app", Attrs: attrs}
		without := h
		without.Capabilities &^= gm.CLIENT_CONNECT_ATTRS
		n := attrsLength(attrs)
		if got, want := len(h.Encode())-len(without.Encode()), lenencLen(n)+n; got != want {
			t.Errorf("%d attributes: encoded %d bytes, computed %d", len(attrs), got, want)
		}
	}
}

// TestHandshakeLimits runs the app side of the handshake with responses that fit the
// sidecar's packet limit but not, as forwarded, the servers': each is refused with an ERR
// naming the limit, with the code the server would answer, and counted; those that fit pass.
func TestHandshakeLimits(t *testing.T) {
	long := func(s string, n int) string { return strings.Repeat(s, n) }
	base := HandshakeResponse{Capabilities: allCaps &^ gm.CLIENT_SSL, MaxPacketSize: 1 << 24, Charset: 45, User: "app",
		AuthPlugin: gm.AUTH_NATIVE_PASSWORD, AuthData: bytes.Repeat([]byte{1}, 20), Database: "db"}
	with := func(f func(*HandshakeResponse)) HandshakeResponse { h := base; f(&h); return h }
	// attrs returns one attribute that makes the forwarded block, _proxy included, n bytes.
	attrs := func(n int) []Attr {
		v := n - attrsLength([]Attr{proxyAttr}) - 2 - 3
		return []Attr{{"k", long("x", v)}}
	}
	tests := []struct {
		name      string
		resp      HandshakeResponse
		forceUser string
		code      uint16 // 0 when the handshake must pass
		reason    string
		want      string
	}{
		{name: "user of 128 characters", resp: with(func(h *HandshakeResponse) { h.User = long("é", 128) })},
		{name: "user of 129 characters", resp: with(func(h *HandshakeResponse) { h.User = long("u", 129) }),
			code: gm.ER_WRONG_STRING_LENGTH, reason: reasonUserTooLong, want: "user name of 129 characters is too long (should be no longer than 128"},
		{name: "force_user of 129 characters", resp: base, forceUser: long("u", 129),
			code: gm.ER_WRONG_STRING_LENGTH, reason: reasonUserTooLong, want: "force_user"},
		{name: "database of 64 characters", resp: with(func(h *HandshakeResponse) { h.Database = long("é", 64) })},
		{name: "database of 65 characters", resp: with(func(h *HandshakeResponse) { h.Database = long("d", 65) }),
			code: gm.ER_WRONG_DB_NAME, reason: reasonDatabaseTooLong, want: "65 characters, longer than the servers' limit of 64"},
		{name: "attributes of 65,535 bytes forwarded", resp: with(func(h *HandshakeResponse) { h.Attrs = attrs(maxConnectAttrs) })},
		{name: "attributes of 65,536 bytes forwarded", resp: with(func(h *HandshakeResponse) { h.Attrs = attrs(maxConnectAttrs + 1) }),
			code: gm.ER_HANDSHAKE_ERROR, reason: reasonAttrsTooLong, want: "connection attributes of 65536 bytes as forwarded (the sidecar adds _proxy), over the servers' limit of 65535 bytes"},
		{name: "attributes of 120 KiB", resp: with(func(h *HandshakeResponse) { h.Attrs = []Attr{{"k", long("x", 120<<10)}} }),
			code: gm.ER_HANDSHAKE_ERROR, reason: reasonAttrsTooLong, want: "over the servers' limit of 65535 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMetrics(nil)
			p := New(Config{Listener: "t", ForceUser: tt.forceUser, Metrics: m})
			c := &scriptedConn{r: bytes.NewReader(AppendPacket(nil, 1, tt.resp.Encode()))}
			err := p.serveApp(&appConn{conn: c}, &serverInfo{version: "8.0.36", caps: allCaps})
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ce *proxy.ClientError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a ClientError", err)
			}
			_, _, _ = ReadPacket(&c.wrote, MaxHandshakePacket) // the sidecar's greeting
			seq, errp, rerr := ReadPacket(&c.wrote, MaxHandshakePacket)
			if rerr != nil || len(errp) == 0 || errp[0] != gm.ERR_HEADER || seq != 2 {
				t.Fatalf("the app got no ERR with sequence 2: %v %q", rerr, errp)
			}
			if e := ParseErr(errp); e.Code != tt.code || e.State != sqlState(tt.code) || !strings.Contains(e.Message, tt.want) {
				t.Fatalf("app got %v, want %d naming %q", e, tt.code, tt.want)
			}
			if bytes.Contains(errp, []byte(long("x", 64))) {
				t.Fatal("the error echoes the oversized value")
			}
			for _, r := range limitReasons {
				want := 0.0
				if r == tt.reason {
					want = 1
				}
				if got := testutil.ToFloat64(m.handshakeErrors.WithLabelValues("t", r)); got != want {
					t.Errorf("%s = %v, want %v", r, got, want)
				}
			}
		})
	}
}
