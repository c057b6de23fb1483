package mysql

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/wire/wiretest"
)

// These fuzzers cover every parser that reads bytes from the network on the MySQL side.
// `make fuzz` runs each for a bounded time; without -fuzz they run their seeds as unit tests.

func seedGreeting(caps uint32, plugin string) []byte {
	return (&Greeting{ServerVersion: "8.0.36", ConnectionID: 7, Scramble: bytes.Repeat([]byte{'a'}, 20),
		Capabilities: caps, Charset: 45, Status: gm.SERVER_STATUS_AUTOCOMMIT, AuthPlugin: plugin}).Encode()
}

func FuzzReadPacket(f *testing.F) {
	f.Add(AppendPacket(nil, 0, []byte("hello")), 16)
	f.Add([]byte{0xff, 0xff, 0xff, 0}, MaxHandshakePacket)
	f.Add([]byte{0xff, 0xff, 0xff, 0}, 1<<24)
	f.Add([]byte{5, 0, 0, 1, 'a'}, 16)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 0 || max > 1<<24 {
			return
		}
		seq, p, err := ReadPacket(bytes.NewReader(in), max)
		if err != nil {
			return
		}
		if len(p) > max || len(p) >= maxPhysical {
			t.Fatalf("payload of %d bytes accepted with max %d", len(p), max)
		}
		if !bytes.Equal(AppendPacket(nil, seq, p), in[:4+len(p)]) {
			t.Fatal("packet does not re-encode to its bytes")
		}
	})
}

func FuzzParseGreeting(f *testing.F) {
	f.Add(seedGreeting(allCaps, gm.AUTH_NATIVE_PASSWORD))
	f.Add(seedGreeting(allCaps&^gm.CLIENT_LONG_PASSWORD, gm.AUTH_CACHING_SHA2_PASSWORD))
	f.Add(seedGreeting(gm.CLIENT_PROTOCOL_41, ""))
	f.Add((&Err{Code: 1040, State: "08004", Message: "Too many connections"}).Encode())
	f.Add([]byte{10, 'x', 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		g, err := ParseGreeting(p)
		if err != nil {
			return
		}
		if len(g.Scramble) < 8 {
			t.Fatalf("greeting accepted with a %d-byte scramble", len(g.Scramble))
		}
	})
}

func FuzzParseHandshakeResponse(f *testing.F) {
	full := HandshakeResponse{Capabilities: allCaps, MaxPacketSize: 1 << 24, Charset: 45, User: "app",
		AuthData: bytes.Repeat([]byte{1}, 20), Database: "db", AuthPlugin: gm.AUTH_NATIVE_PASSWORD,
		Attrs: []Attr{{"_client_name", "libmysql"}, {"program_name", "app"}}}
	f.Add(full.Encode())
	ssl := full
	ssl.SSLRequest = true
	f.Add(ssl.Encode())
	old := full
	old.Capabilities = gm.CLIENT_PROTOCOL_41 | gm.CLIENT_SECURE_CONNECTION
	f.Add(old.Encode())
	f.Add(append(full.Encode()[:len(full.Encode())-4], 0xfe, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := ParseHandshakeResponse(p)
		if err != nil {
			return
		}
		if h.SSLRequest {
			return
		}
		size := len(h.User) + len(h.AuthData) + len(h.Database) + len(h.AuthPlugin)
		for _, a := range h.Attrs {
			size += len(a.Key) + len(a.Value)
		}
		if size > len(p) {
			t.Fatalf("decoded %d bytes of fields from a %d-byte packet", size, len(p))
		}
	})
}

func FuzzParseErrAndOK(f *testing.F) {
	f.Add((&Err{Code: 1045, State: "28000", Message: "Access denied"}).Encode())
	f.Add([]byte{0xff, 1})
	f.Add(AppendOK(nil, gm.SERVER_STATUS_IN_TRANS))
	f.Add([]byte{0, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 0xfc, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, p []byte) {
		e := ParseErr(p)
		if e == nil || (len(p) >= 3 && p[0] == gm.ERR_HEADER && len(e.Message) > len(p)) || len(e.State) != 5 {
			t.Fatalf("ParseErr(%q) = %+v", p, e)
		}
		_, _ = OKStatus(p)
	})
}

// FuzzDialGreeting is what the sidecar reads from an upstream before TLS: whatever it is, the
// sidecar either refuses it or goes on only with a server that offers TLS.
func FuzzDialGreeting(f *testing.F) {
	f.Add(AppendPacket(nil, 0, seedGreeting(allCaps, gm.AUTH_NATIVE_PASSWORD)))
	f.Add(AppendPacket(nil, 0, seedGreeting(allCaps&^gm.CLIENT_SSL, gm.AUTH_NATIVE_PASSWORD)))
	f.Add(AppendPacket(nil, 0, (&Err{Code: 1040, State: "08004", Message: "Too many connections"}).Encode()))
	f.Add([]byte{0xff, 0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, stream []byte) {
		cc, sc := net.Pipe()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sc.Close()
			_ = sc.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = sc.Write(stream)
		}()
		defer wg.Wait()
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gc, err := dialGreeting(ctx, wiretest.PipeDialer{C: cc}, "db.test:3306")
		if ctx.Err() != nil {
			t.Fatal("dialGreeting did not end before its deadline")
		}
		if err != nil {
			return
		}
		defer gc.raw.Close()
		if gc.greet.Capabilities&gm.CLIENT_SSL == 0 {
			t.Fatal("went on with an upstream that does not offer TLS")
		}
	})
}

// acceptSSLRequest reads a client's SSLRequest packet; TLS follows at once.
func acceptSSLRequest(sc net.Conn) bool {
	_, _, err := ReadPacket(sc, MaxHandshakePacket)
	return err == nil
}

// FuzzLogin plays a fuzzed server byte stream after the SSLRequest and a real TLS handshake:
// OK, ERR, auth switches, caching_sha2 states. The login must end in a result or an error,
// never a panic, a hang, or the secret in an error.
func FuzzLogin(f *testing.F) {
	switchTo := func(name string, scr []byte) []byte {
		b := append([]byte{gm.EOF_HEADER}, name...)
		return append(append(append(b, 0), scr...), 0)
	}
	okp := AppendOK(nil, gm.SERVER_STATUS_AUTOCOMMIT)
	scr := bytes.Repeat([]byte{'b'}, 20)
	cat := func(p ...[]byte) []byte { return bytes.Join(p, nil) }
	f.Add(AppendPacket(nil, 2, okp), gm.AUTH_NATIVE_PASSWORD)
	f.Add(cat(AppendPacket(nil, 2, switchTo(gm.AUTH_CLEAR_PASSWORD, nil)), AppendPacket(nil, 4, okp)), gm.AUTH_NATIVE_PASSWORD)
	f.Add(cat(AppendPacket(nil, 2, switchTo(gm.AUTH_CACHING_SHA2_PASSWORD, scr)), AppendPacket(nil, 4, []byte{1, gm.CACHE_SHA2_FULL_AUTH}), AppendPacket(nil, 6, okp)), gm.AUTH_NATIVE_PASSWORD)
	f.Add(cat(AppendPacket(nil, 2, []byte{1, gm.CACHE_SHA2_FAST_AUTH}), AppendPacket(nil, 3, okp)), gm.AUTH_CACHING_SHA2_PASSWORD)
	f.Add(AppendPacket(nil, 2, (&Err{Code: 1045, State: "28000", Message: "Access denied"}).Encode()), gm.AUTH_CLEAR_PASSWORD)
	f.Add(cat(AppendPacket(nil, 2, []byte{gm.EOF_HEADER}), AppendPacket(nil, 2, switchTo("x", nil))), "")
	f.Add([]byte{0xff, 0xff, 0xff, 2}, gm.AUTH_NATIVE_PASSWORD)

	srvTLS, cliTLS := testTLS(f)
	// Resumed sessions skip the certificate work: several times the execs per second.
	cliTLS.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	srvTLS.MinVersion, cliTLS.MinVersion = tls.VersionTLS13, tls.VersionTLS13
	const secret = "s3cr3t-token-value"
	f.Fuzz(func(t *testing.T, stream []byte, plugin string) {
		cc, sc := net.Pipe()
		_ = sc.SetDeadline(time.Now().Add(5 * time.Second))
		wait := wiretest.TLSServer(sc, srvTLS, acceptSSLRequest, func(ts *tls.Conn) { _, _ = ts.Write(stream) })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		defer wait()
		defer cc.Close()
		g := &Greeting{ServerVersion: "8.0", Scramble: bytes.Repeat([]byte{'a'}, 20), Capabilities: allCaps, AuthPlugin: plugin}
		resp := HandshakeResponse{Capabilities: allCaps, MaxPacketSize: 1 << 24, Charset: 45, User: "app", Database: "db"}
		up, err := login(ctx, &greeted{raw: cc, greet: g}, cliTLS, resp, func(context.Context) (string, error) { return secret, nil })
		if ctx.Err() != nil {
			t.Fatal("login did not end before its deadline")
		}
		if err != nil {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the secret appears in the error: %v", err)
			}
			return
		}
		if len(up.ok) == 0 || up.ok[0] != gm.OK_HEADER {
			t.Fatalf("login succeeded without an OK: %q", up.ok)
		}
	})
}

// FuzzTracker checks the transaction tracker on arbitrary streams cut at arbitrary points: it
// never panics, and never calls a session idle while either direction is inside a packet.
func FuzzTracker(f *testing.F) {
	f.Add(query("select 1"), cat(pkt(1, 1), coldef(2), eof(3, gm.SERVER_STATUS_AUTOCOMMIT), row(4, "1"), eof(5, gm.SERVER_STATUS_AUTOCOMMIT)), uint8(3), uint8(5), false)
	f.Add(query("begin"), ok(1, gm.SERVER_STATUS_IN_TRANS), uint8(0), uint8(0), false)
	f.Add(query("select 1"), cat(pkt(1, 1), coldef(2), row(3, "1"), okFE(4, 0)), uint8(1), uint8(2), true)
	f.Add([]byte{0xff, 0xff, 0xff, 0, 3}, errp(1), uint8(9), uint8(9), true)
	f.Fuzz(func(t *testing.T, cli, srv []byte, cstep, sstep uint8, deprecateEOF bool) {
		caps := uint32(gm.CLIENT_PROTOCOL_41)
		if deprecateEOF {
			caps |= gm.CLIENT_DEPRECATE_EOF
		}
		tr := newTracker(caps, gm.SERVER_STATUS_AUTOCOMMIT)
		wiretest.FeedInterleaved(t, tr, cli, srv, cstep, sstep, midPacket(cli), midPacket(srv))
	})
}

// midPacket returns whether the first n bytes of stream end inside a packet or before the
// continuation of a 2^24-1-byte one.
func midPacket(stream []byte) func(n int) bool {
	bounds := map[int]bool{0: true}
	for off := 0; off+4 <= len(stream); {
		l := int(stream[off]) | int(stream[off+1])<<8 | int(stream[off+2])<<16
		next := off + 4 + l
		if next > len(stream) {
			break
		}
		off = next
		if l != maxPhysical {
			bounds[off] = true
		}
	}
	return func(n int) bool { return !bounds[n] }
}

// FuzzServeApp plays a fuzzed app byte stream against the app side of the handshake with a
// local password: the handshake response, then whatever the app answers to the auth switch.
// No stream may panic it or hang it, and none gets past the local password, which the fuzzer
// cannot know the scramble for.
func FuzzServeApp(f *testing.F) {
	resp := HandshakeResponse{Capabilities: allCaps &^ gm.CLIENT_SSL, MaxPacketSize: 1 << 24, Charset: 45, User: "app",
		AuthPlugin: gm.AUTH_NATIVE_PASSWORD, AuthData: bytes.Repeat([]byte{1}, 20), Database: "db",
		Attrs: []Attr{{"_client_name", "libmysql"}}}
	f.Add(AppendPacket(nil, 1, resp.Encode()))
	sha := resp
	sha.AuthPlugin, sha.AuthData = gm.AUTH_CACHING_SHA2_PASSWORD, bytes.Repeat([]byte{2}, 32)
	f.Add(append(AppendPacket(nil, 1, sha.Encode()), AppendPacket(nil, 3, bytes.Repeat([]byte{3}, 20))...))
	ssl := resp
	ssl.SSLRequest = true
	f.Add(AppendPacket(nil, 1, ssl.Encode()))
	old := resp
	old.Capabilities = gm.CLIENT_PROTOCOL_41
	f.Add(AppendPacket(nil, 1, old.Encode()))
	f.Add([]byte{0xff, 0xff, 0xff, 1})
	f.Add([]byte{})
	// Over the servers' limits as forwarded (limits.go): refused before the local password.
	big := resp
	big.Attrs = []Attr{{"k", strings.Repeat("x", 70000)}}
	f.Add(AppendPacket(nil, 1, big.Encode()))
	longUser := resp
	longUser.User = strings.Repeat("u", maxUserNameChars+1)
	f.Add(AppendPacket(nil, 1, longUser.Encode()))

	pwFile := f.TempDir() + "/local"
	if err := os.WriteFile(pwFile, []byte("local-pw\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	p := New(Config{Listener: "fuzz", LocalPasswordFile: pwFile})
	si := &serverInfo{version: "8.0.36", caps: allCaps}
	f.Fuzz(func(t *testing.T, stream []byte) {
		c := &scriptedConn{r: bytes.NewReader(stream)}
		if err := p.serveApp(&appConn{conn: c}, si); err == nil {
			t.Fatal("an app got past the local password without knowing it")
		}
	})
}

// scriptedConn is an app that sends a fixed byte stream, then EOF, and swallows what it is sent.
type scriptedConn struct {
	endlessConn
	r *bytes.Reader
}

func (s *scriptedConn) Read(p []byte) (int, error) { return s.r.Read(p) }
