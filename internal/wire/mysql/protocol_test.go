package mysql

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/upstream"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// onePath is the path source over a single path, logging in with password "pw".
func onePath(p *Protocol, path health.Path) proxy.Source {
	return upstream.New(upstream.Config{Listener: "t", Engine: p,
		Paths:  health.NewSet("t", []health.Path{path}, health.Thresholds{Rise: 1, Fall: 1}, nil),
		Secret: func(context.Context, health.Path, string) (string, error) { return "pw", nil }})
}

func TestHandshakeAgreesCapabilities(t *testing.T) {
	srvTLS, _ := testTLS(t)
	upCaps := allCaps&^gm.CLIENT_DEPRECATE_EOF | gm.CLIENT_MULTI_STATEMENTS | gm.CLIENT_MULTI_RESULTS | gm.CLIENT_LOCAL_FILES | gm.CLIENT_COMPRESS
	var upstreamSaw *HandshakeResponse
	addr, errc := fakeServer(t, srvTLS, upCaps, gm.AUTH_NATIVE_PASSWORD, func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
		upstreamSaw = r
		return WritePacket(c, 3, AppendOK(nil, gm.SERVER_STATUS_AUTOCOMMIT))
	})
	// The test certificate is self-signed for db.test: trust it through an insecure config
	// only here; verification itself is wire.TLSConfigs' business.
	tlsCfgs, err := wire.NewTLSConfigs(wire.Insecure, "")
	if err != nil {
		t.Fatal(err)
	}
	p := New(Config{Listener: "t", TLS: tlsCfgs})
	// What a probe of this server would have recorded: the app is greeted from it.
	p.learn(&Greeting{ServerVersion: "8.0.36", ConnectionID: 7, Capabilities: upCaps, Charset: 45, Status: gm.SERVER_STATUS_AUTOCOMMIT})
	app, side := net.Pipe()
	defer app.Close()
	type res struct {
		user string
		err  error
	}
	done := make(chan res, 1)
	go func() {
		up, err := proxy.Handshake(context.Background(), p, onePath(p, health.Path{Name: "p1", Address: addr, TLSServerName: "db.test"}), side)
		if up != nil {
			_ = up.Conn.Close()
			done <- res{up.User, err}
			return
		}
		done <- res{"", err}
	}()
	_ = app.SetDeadline(time.Now().Add(10 * time.Second))
	seq, pkt, err := ReadPacket(app, MaxHandshakePacket)
	if err != nil || seq != 0 {
		t.Fatalf("greeting: seq %d, %v", seq, err)
	}
	g, err := ParseGreeting(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if g.ServerVersion != "8.0.36" || g.ConnectionID == 7 || g.ConnectionID == 0 {
		t.Errorf("greeting version %q id %d, want the upstream's version and the sidecar's own id", g.ServerVersion, g.ConnectionID)
	}
	for name, c := range map[string]uint32{"CLIENT_SSL": gm.CLIENT_SSL, "CLIENT_COMPRESS": gm.CLIENT_COMPRESS, "CLIENT_DEPRECATE_EOF": gm.CLIENT_DEPRECATE_EOF} {
		if g.Capabilities&c != 0 {
			t.Errorf("the app is offered %s", name)
		}
	}
	if want := gm.CLIENT_MULTI_STATEMENTS | gm.CLIENT_LOCAL_FILES | gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_PROTOCOL_41; g.Capabilities&want != want {
		t.Errorf("the app is not offered %#x", want&^g.Capabilities)
	}
	// The app asks for what it was offered, minus LOCAL_FILES, plus two things it was not.
	resp := HandshakeResponse{Capabilities: g.Capabilities&^gm.CLIENT_LOCAL_FILES | gm.CLIENT_DEPRECATE_EOF | gm.CLIENT_COMPRESS,
		MaxPacketSize: 1 << 24, Charset: 33, User: "app", Database: "app", AuthPlugin: gm.AUTH_NATIVE_PASSWORD,
		AuthData: make([]byte, 20), Attrs: []Attr{{"program_name", "test"}}}
	if err := WritePacket(app, 1, resp.Encode()); err != nil {
		t.Fatal(err)
	}
	seq, pkt, err = ReadPacket(app, MaxHandshakePacket)
	if err != nil || seq != 2 || len(pkt) == 0 || pkt[0] != gm.OK_HEADER {
		t.Fatalf("final packet: seq %d %q, %v; want an OK with seq 2", seq, pkt, err)
	}
	r := <-done
	if r.err != nil || r.user != "app" {
		t.Fatalf("handshake: %q, %v", r.user, r.err)
	}
	if serr := <-errc; serr != nil {
		t.Fatal(serr)
	}
	c := upstreamSaw.Capabilities
	if c&gm.CLIENT_MULTI_STATEMENTS == 0 || c&gm.CLIENT_SSL == 0 {
		t.Errorf("upstream flags %#x lack MULTI_STATEMENTS or SSL", c)
	}
	if c&(gm.CLIENT_LOCAL_FILES|gm.CLIENT_DEPRECATE_EOF|gm.CLIENT_COMPRESS) != 0 {
		t.Errorf("upstream flags %#x carry LOCAL_FILES, DEPRECATE_EOF or COMPRESS the session did not agree on", c)
	}
	if upstreamSaw.Charset != 33 || upstreamSaw.Database != "app" || upstreamSaw.User != "app" {
		t.Errorf("upstream response %+v", upstreamSaw)
	}
	if n := len(upstreamSaw.Attrs); n != 2 || upstreamSaw.Attrs[1] != (Attr{"_proxy", "rds-valet"}) {
		t.Errorf("upstream attrs %v", upstreamSaw.Attrs)
	}
}

func TestLocalPasswordSwitchesOtherPluginsToNative(t *testing.T) {
	srvTLS, _ := testTLS(t)
	tlsCfgs, _ := wire.NewTLSConfigs(wire.Insecure, "")
	pwFile := t.TempDir() + "/local"
	if err := os.WriteFile(pwFile, []byte("local-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		answer string
		wantOK bool
	}{
		{"right password", "local-pw", true},
		{"wrong password", "nope", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := fakeServer(t, srvTLS, allCaps, gm.AUTH_NATIVE_PASSWORD, func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
				return WritePacket(c, 3, AppendOK(nil, gm.SERVER_STATUS_AUTOCOMMIT))
			})
			p := New(Config{Listener: "t", TLS: tlsCfgs, LocalPasswordFile: pwFile})
			p.learn(&Greeting{ServerVersion: "8.0.36", Capabilities: allCaps, Charset: 45})
			app, g, errc := greetOnPipe(t, p, onePath(p, health.Path{Name: "p1", Address: addr, TLSServerName: "db.test"}))
			resp := HandshakeResponse{Capabilities: g.Capabilities, MaxPacketSize: 1 << 24, Charset: 33, User: "app",
				AuthPlugin: gm.AUTH_CACHING_SHA2_PASSWORD, AuthData: gm.CalcCachingSha2Password(g.Scramble, tc.answer)}
			if err := WritePacket(app, 1, resp.Encode()); err != nil {
				t.Fatal(err)
			}
			seq, sw, err := ReadPacket(app, MaxHandshakePacket)
			if err != nil || seq != 2 || len(sw) < 2 || sw[0] != gm.EOF_HEADER {
				t.Fatalf("want an AuthSwitchRequest with seq 2, got seq %d %q, %v", seq, sw, err)
			}
			name, rest, _ := bytes.Cut(sw[1:], []byte{0})
			if string(name) != gm.AUTH_NATIVE_PASSWORD || len(rest) < 20 {
				t.Fatalf("switch to %q with %d bytes of scramble", name, len(rest))
			}
			if err := WritePacket(app, 3, gm.CalcPassword(rest[:20], []byte(tc.answer))); err != nil {
				t.Fatal(err)
			}
			seq, last, err := ReadPacket(app, MaxHandshakePacket)
			if err != nil || seq != 4 {
				t.Fatalf("final packet seq %d, %v; want seq 4", seq, err)
			}
			herr := <-errc
			if tc.wantOK {
				if last[0] != gm.OK_HEADER || herr != nil {
					t.Fatalf("want OK, got %q, %v", last, herr)
				}
				return
			}
			if e := ParseErr(last); e.Code != 1045 || e.State != "28000" || herr == nil {
				t.Fatalf("want ERR 1045 (28000) and a handshake error, got %v, %v", e, herr)
			}
			var ce *proxy.ClientError
			if !errors.As(herr, &ce) {
				t.Fatalf("handshake error %v is not a ClientError", herr)
			}
		})
	}
}

// greetOnPipe runs a connection's handshake through p and src on a pipe and returns the app's
// end once the app has read its greeting; errc gets the handshake's outcome.
func greetOnPipe(t *testing.T, p *Protocol, src proxy.Source) (app net.Conn, g *Greeting, errc <-chan error) {
	t.Helper()
	app, side := net.Pipe()
	t.Cleanup(func() { app.Close() })
	ch := make(chan error, 1)
	go func() {
		up, err := proxy.Handshake(context.Background(), p, src, side)
		if up != nil {
			_ = up.Conn.Close()
		}
		_ = side.Close()
		ch <- err
	}()
	_ = app.SetDeadline(time.Now().Add(10 * time.Second))
	_, pkt, err := ReadPacket(app, MaxHandshakePacket)
	if err != nil {
		t.Fatal(err)
	}
	if g, err = ParseGreeting(pkt); err != nil {
		t.Fatal(err)
	}
	return app, g, ch
}

// countingSource fails every open and counts them.
type countingSource struct{ opens atomic.Int32 }

func (c *countingSource) Open(context.Context, *proxy.Startup) (*proxy.Session, error) {
	c.opens.Add(1)
	return nil, errors.New("no upstream in this test")
}

// An app is greeted before anything is asked of the upstream, with the default server until
// an upstream greeting has been seen and with that greeting's version and flags after; an app
// that never answers the greeting costs no upstream session.
func TestGreetsTheAppWithoutTheUpstream(t *testing.T) {
	p := New(Config{Listener: "t"})
	src := &countingSource{}
	app, g, errc := greetOnPipe(t, p, src)
	if g.ServerVersion != defaultServer.version || g.Capabilities&gm.CLIENT_QUERY_ATTRIBUTES != 0 || g.Capabilities&gm.CLIENT_TRANSACTIONS == 0 {
		t.Errorf("first greeting: version %q flags %#x; want the default server's", g.ServerVersion, g.Capabilities)
	}
	if n := src.opens.Load(); n != 0 {
		t.Fatalf("greeting the app opened %d upstream sessions", n)
	}
	_ = app.Close() // says nothing and leaves
	if err := <-errc; err == nil {
		t.Fatal("a silent app's handshake succeeded")
	}
	if n := src.opens.Load(); n != 0 {
		t.Fatalf("an app that never answered cost %d upstream sessions", n)
	}

	p.learn(&Greeting{ServerVersion: "10.11.6-MariaDB", Capabilities: allCaps &^ gm.CLIENT_DEPRECATE_EOF, Charset: 33, Status: gm.SERVER_STATUS_AUTOCOMMIT})
	app, g, errc = greetOnPipe(t, p, src)
	if g.ServerVersion != "10.11.6-MariaDB" || g.Charset != 33 || g.Capabilities&gm.CLIENT_DEPRECATE_EOF != 0 || g.Capabilities&gm.CLIENT_TRANSACTIONS == 0 {
		t.Errorf("greeting after an upstream's: version %q charset %d flags %#x", g.ServerVersion, g.Charset, g.Capabilities)
	}
	resp := HandshakeResponse{Capabilities: g.Capabilities &^ gm.CLIENT_SSL, MaxPacketSize: 1 << 24, Charset: 33, User: "app", AuthData: make([]byte, 20)}
	if err := WritePacket(app, 1, resp.Encode()); err != nil {
		t.Fatal(err)
	}
	seq, pkt, err := ReadPacket(app, MaxHandshakePacket)
	if err != nil || seq != 2 || pkt[0] != gm.ERR_HEADER {
		t.Fatalf("after the response: seq %d %q, %v; want the source's failure as ERR seq 2", seq, pkt, err)
	}
	<-errc
	if n := src.opens.Load(); n != 1 {
		t.Fatalf("an app that answered opened %d upstream sessions, want 1", n)
	}
}

// An upstream that lacks a flag the app already chose (the server changed since the greeting
// the app was greeted from) gets the app a clear ERR, not a session whose framing the two
// sides disagree on; the path is not blamed, and the next app is offered what the server has.
func TestUpstreamLackingAnAgreedCapabilityIsAClearError(t *testing.T) {
	srvTLS, _ := testTLS(t)
	addr, _ := fakeServer(t, srvTLS, allCaps&^gm.CLIENT_DEPRECATE_EOF, gm.AUTH_NATIVE_PASSWORD, func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
		return WritePacket(c, 3, AppendOK(nil, gm.SERVER_STATUS_AUTOCOMMIT))
	})
	tlsCfgs, _ := wire.NewTLSConfigs(wire.Insecure, "")
	p := New(Config{Listener: "t", TLS: tlsCfgs})
	p.learn(&Greeting{ServerVersion: "8.0.36", Capabilities: allCaps, Charset: 45})
	set := health.NewSet("t", []health.Path{{Name: "p1", Address: addr, TLSServerName: "db.test"}}, health.Thresholds{Rise: 1, Fall: 1}, nil)
	src := upstream.New(upstream.Config{Listener: "t", Engine: p, Paths: set,
		Secret: func(context.Context, health.Path, string) (string, error) { return "pw", nil }})
	app, g, errc := greetOnPipe(t, p, src)
	if g.Capabilities&gm.CLIENT_DEPRECATE_EOF == 0 {
		t.Fatal("the app was not offered CLIENT_DEPRECATE_EOF, which the learnt server has")
	}
	resp := HandshakeResponse{Capabilities: g.Capabilities, MaxPacketSize: 1 << 24, Charset: 45, User: "app", AuthData: make([]byte, 20)}
	if err := WritePacket(app, 1, resp.Encode()); err != nil {
		t.Fatal(err)
	}
	seq, pkt, err := ReadPacket(app, MaxHandshakePacket)
	if err != nil || seq != 2 || pkt[0] != gm.ERR_HEADER {
		t.Fatalf("got seq %d %q, %v; want an ERR with seq 2", seq, pkt, err)
	}
	if e := ParseErr(pkt); e.Code != codeConnHostError || !strings.Contains(e.Message, "lacks capabilities") || !strings.Contains(e.Message, `"p1"`) {
		t.Fatalf("ERR %v does not say the path lacks the agreed capabilities", e)
	}
	var inc *proxy.IncompatibleError
	var ne *proxy.NoPathError
	if err := <-errc; !errors.As(err, &ne) || !ne.All(func(e error) bool { return errors.As(e, &inc) }) {
		t.Fatalf("handshake error %v is not an IncompatibleError on every path", err)
	}
	if !set.AnyUp() {
		t.Fatal("a capability mismatch marked the path down")
	}
	if p.greeting().caps&gm.CLIENT_DEPRECATE_EOF != 0 {
		t.Fatal("the server's new greeting was not learnt")
	}
}
