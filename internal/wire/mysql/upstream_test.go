package mysql

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// testTLS returns a server config with a certificate for "db.test" and a client config that
// trusts it.
func testTLS(t testing.TB) (server, client *tls.Config) { return pki.TestConfigs(t, "db.test") }

// fakeServer greets with plugin and caps, takes TLS, then hands the decoded response and the
// TLS connection to auth, which plays the rest of the login.
func fakeServer(t *testing.T, srvTLS *tls.Config, caps uint32, plugin string, auth func(c net.Conn, g *Greeting, r *HandshakeResponse) error) (addr string, errc <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		ch <- func() error {
			g := &Greeting{ServerVersion: "8.0.36", ConnectionID: 7, Scramble: newScramble(), Capabilities: caps,
				Charset: 45, Status: gm.SERVER_STATUS_AUTOCOMMIT, AuthPlugin: plugin}
			if err := WritePacket(c, 0, g.Encode()); err != nil {
				return err
			}
			_, p, err := ReadPacket(c, MaxHandshakePacket)
			if err != nil {
				return err
			}
			ssl, err := ParseHandshakeResponse(p)
			if err != nil || !ssl.SSLRequest {
				return fmt.Errorf("want an SSLRequest: %v", err)
			}
			tc := tls.Server(c, srvTLS)
			if err := tc.Handshake(); err != nil {
				return err
			}
			seq, p, err := ReadPacket(tc, MaxHandshakePacket)
			if err != nil || seq != 2 {
				return fmt.Errorf("response seq %d: %v", seq, err)
			}
			r, err := ParseHandshakeResponse(p)
			if err != nil {
				return err
			}
			if r.Capabilities != ssl.Capabilities {
				return fmt.Errorf("SSLRequest flags %#x differ from the response's %#x", ssl.Capabilities, r.Capabilities)
			}
			return auth(tc, g, r)
		}()
	}()
	return ln.Addr().String(), ch
}

const allCaps = gm.CLIENT_PROTOCOL_41 | gm.CLIENT_SECURE_CONNECTION | gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_SSL |
	gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | gm.CLIENT_CONNECT_WITH_DB | gm.CLIENT_CONNECT_ATTRS |
	gm.CLIENT_DEPRECATE_EOF | gm.CLIENT_TRANSACTIONS | gm.CLIENT_LONG_PASSWORD

func expect(c net.Conn, seq byte, want []byte) error {
	s, p, err := ReadPacket(c, MaxHandshakePacket)
	if err != nil {
		return err
	}
	if s != seq || !bytes.Equal(p, want) {
		return fmt.Errorf("got seq %d %q, want seq %d %q", s, p, seq, want)
	}
	return nil
}

func TestLoginPlugins(t *testing.T) {
	const pw = "s3cret-token"
	switchTo := func(name string, scr []byte) []byte {
		b := append([]byte{gm.EOF_HEADER}, name...)
		return append(append(append(b, 0), scr...), 0)
	}
	okp := AppendOK(nil, gm.SERVER_STATUS_AUTOCOMMIT)
	cases := []struct {
		name    string
		plugin  string
		auth    func(c net.Conn, g *Greeting, r *HandshakeResponse) error
		wantErr string
	}{
		{name: "native, accepted", plugin: gm.AUTH_NATIVE_PASSWORD, auth: func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
			if r.AuthPlugin != gm.AUTH_NATIVE_PASSWORD || !bytes.Equal(r.AuthData, gm.CalcPassword(g.Scramble, []byte(pw))) {
				return fmt.Errorf("bad native answer %q", r.AuthData)
			}
			return WritePacket(c, 3, okp)
		}},
		{name: "switch to mysql_clear_password (RDS IAM)", plugin: gm.AUTH_NATIVE_PASSWORD, auth: func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
			if err := WritePacket(c, 3, switchTo(gm.AUTH_CLEAR_PASSWORD, newScramble())); err != nil {
				return err
			}
			if err := expect(c, 4, append([]byte(pw), 0)); err != nil {
				return err
			}
			return WritePacket(c, 5, okp)
		}},
		{name: "clear password by default", plugin: gm.AUTH_CLEAR_PASSWORD, auth: func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
			if r.AuthPlugin != gm.AUTH_CLEAR_PASSWORD || string(r.AuthData) != pw+"\x00" {
				return fmt.Errorf("bad clear answer %q", r.AuthData)
			}
			return WritePacket(c, 3, okp)
		}},
		{name: "caching_sha2 fast auth", plugin: gm.AUTH_CACHING_SHA2_PASSWORD, auth: func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
			if !bytes.Equal(r.AuthData, gm.CalcCachingSha2Password(g.Scramble, pw)) {
				return errors.New("bad caching_sha2 scramble")
			}
			if err := WritePacket(c, 3, []byte{1, gm.CACHE_SHA2_FAST_AUTH}); err != nil {
				return err
			}
			return WritePacket(c, 4, okp)
		}},
		{name: "caching_sha2 full auth over TLS", plugin: gm.AUTH_CACHING_SHA2_PASSWORD, auth: func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
			if err := WritePacket(c, 3, []byte{1, gm.CACHE_SHA2_FULL_AUTH}); err != nil {
				return err
			}
			if err := expect(c, 4, append([]byte(pw), 0)); err != nil {
				return err
			}
			return WritePacket(c, 5, okp)
		}},
		{name: "switch to caching_sha2", plugin: gm.AUTH_NATIVE_PASSWORD, auth: func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
			scr := newScramble()
			if err := WritePacket(c, 3, switchTo(gm.AUTH_CACHING_SHA2_PASSWORD, scr)); err != nil {
				return err
			}
			if err := expect(c, 4, gm.CalcCachingSha2Password(scr, pw)); err != nil {
				return err
			}
			if err := WritePacket(c, 5, []byte{1, gm.CACHE_SHA2_FAST_AUTH}); err != nil {
				return err
			}
			return WritePacket(c, 6, okp)
		}},
		{name: "unsupported plugin", plugin: gm.AUTH_NATIVE_PASSWORD, wantErr: "client_ed25519", auth: func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
			return WritePacket(c, 3, switchTo("client_ed25519", newScramble()))
		}},
		{name: "refused", plugin: gm.AUTH_NATIVE_PASSWORD, wantErr: "ERROR 1045 (28000)", auth: func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
			return WritePacket(c, 3, (&Err{Code: 1045, State: "28000", Message: "Access denied"}).Encode())
		}},
	}
	srvTLS, cliTLS := testTLS(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, errc := fakeServer(t, srvTLS, allCaps, tc.plugin, tc.auth)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			gc, err := dialGreeting(ctx, &net.Dialer{}, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer gc.raw.Close()
			resp := HandshakeResponse{Capabilities: allCaps &^ gm.CLIENT_SSL, MaxPacketSize: 1 << 24, Charset: 45,
				User: "app", Database: "app", Attrs: []Attr{{"_proxy", "rds-valet"}}}
			up, err := login(ctx, gc, cliTLS, resp, func(context.Context) (string, error) { return pw, nil })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if serr := <-errc; serr != nil {
				t.Fatalf("server side: %v", serr)
			}
			if up.status != gm.SERVER_STATUS_AUTOCOMMIT || !bytes.Equal(up.ok, okp) {
				t.Fatalf("status %#x ok %q", up.status, up.ok)
			}
		})
	}
}

func TestDialGreetingRefusesUpstreamWithoutTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		g := &Greeting{ServerVersion: "5.7", Scramble: newScramble(), Capabilities: allCaps &^ gm.CLIENT_SSL, AuthPlugin: gm.AUTH_NATIVE_PASSWORD}
		_ = WritePacket(c, 0, g.Encode())
	}()
	_, err = dialGreeting(context.Background(), &net.Dialer{}, ln.Addr().String())
	<-done
	if err == nil || !strings.Contains(err.Error(), "does not offer TLS") {
		t.Fatalf("error %v, want a refusal to go on without TLS", err)
	}
}

func TestHandshakeResponseRoundTripAndBadInput(t *testing.T) {
	in := HandshakeResponse{Capabilities: allCaps &^ gm.CLIENT_SSL &^ gm.CLIENT_LONG_PASSWORD, MaxPacketSize: 1 << 24, Charset: 33,
		MariaDBCaps: 0x1d, User: "app", AuthData: bytes.Repeat([]byte("t"), 900), Database: "db", AuthPlugin: gm.AUTH_CLEAR_PASSWORD,
		Attrs: []Attr{{"_client_name", "x"}, {"_proxy", "rds-valet"}}}
	out, err := ParseHandshakeResponse(in.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(*out) != fmt.Sprint(in) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", *out, in)
	}
	full := in.Encode()
	for _, n := range []int{0, 3, 20, 33, 40, len(full) - 1} {
		if _, err := ParseHandshakeResponse(full[:n]); err == nil {
			t.Errorf("a response cut to %d bytes parsed", n)
		}
	}
	if _, err := ParseHandshakeResponse([]byte{0, 0, 0, 0, 0, 0, 0, 0}); !errors.Is(err, errPre41) {
		t.Errorf("pre-4.1 response: %v", err)
	}
	g := &Greeting{ServerVersion: "5.5.5-10.11.6-MariaDB", ConnectionID: 9, Scramble: newScramble(), Capabilities: allCaps &^ gm.CLIENT_LONG_PASSWORD,
		Charset: 45, Status: 2, AuthPlugin: gm.AUTH_NATIVE_PASSWORD, MariaDBCaps: 0x7}
	g2, err := ParseGreeting(g.Encode())
	if err != nil || fmt.Sprint(*g2) != fmt.Sprint(*g) {
		t.Fatalf("greeting round trip: %+v, %v", g2, err)
	}
	if _, _, err := ReadPacket(strings.NewReader("GET / HTTP/1.1\r\n"), MaxHandshakePacket); !errors.Is(err, errBadPacket) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestRefuseSendsERRInsteadOfTheGreeting(t *testing.T) {
	for _, tc := range []struct {
		reason error
		code   uint16
		state  string
	}{
		{proxy.ErrTooManyConnections, 1040, "08004"},
		{proxy.ErrShuttingDown, 1053, "08S01"},
	} {
		a, b := net.Pipe()
		go func() {
			New(Config{Listener: "t"}).Refuse(context.Background(), a, tc.reason)
			_ = a.Close()
		}()
		seq, p, err := ReadPacket(b, MaxHandshakePacket)
		if err != nil || seq != 0 {
			t.Fatalf("%v: seq %d, %v", tc.reason, seq, err)
		}
		e := ParseErr(p)
		if e.Code != tc.code || e.State != tc.state || !strings.HasPrefix(e.Message, sidecarPrefix) {
			t.Fatalf("%v: got %v, want %d (%s)", tc.reason, e, tc.code, tc.state)
		}
		_ = b.Close()
	}
}
