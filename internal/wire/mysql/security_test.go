package mysql

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/health"
)

// serveAppOnPipe runs serveApp against an app that sends resp as its handshake response and
// returns the packet the app got after its response and serveApp's error.
func serveAppOnPipe(t *testing.T, p *Protocol, resp HandshakeResponse) ([]byte, error) {
	t.Helper()
	app, side := net.Pipe()
	defer app.Close()
	g := &serverInfo{version: "8.0.36", caps: allCaps}
	errc := make(chan error, 1)
	go func() {
		err := p.serveApp(&appConn{conn: side}, g)
		_ = side.Close()
		errc <- err
	}()
	_ = app.SetDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := ReadPacket(app, MaxHandshakePacket); err != nil {
		t.Fatal(err)
	}
	if err := WritePacket(app, 1, resp.Encode()); err != nil {
		t.Fatal(err)
	}
	_, last, _ := ReadPacket(app, MaxHandshakePacket)
	return last, <-errc
}

// TestEmptyLocalPasswordFileLetsNobodyIn: a local password file that is empty (a Secret mounted
// before it was filled) must not turn into "the empty password is right".
func TestEmptyLocalPasswordFileLetsNobodyIn(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "local")
	if err := os.WriteFile(pwFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := New(Config{Listener: "t", LocalPasswordFile: pwFile})
	last, err := serveAppOnPipe(t, p, HandshakeResponse{Capabilities: allCaps &^ gm.CLIENT_SSL, MaxPacketSize: 1 << 24,
		Charset: 45, User: "app", AuthPlugin: gm.AUTH_NATIVE_PASSWORD})
	if err == nil {
		t.Fatal("an empty password passed an empty local password file")
	}
	if len(last) == 0 || last[0] != gm.ERR_HEADER || !bytes.Contains(last, []byte("local password file")) {
		t.Fatalf("app got %q, want an ERR about the local password file", last)
	}
}

// Probe failures are classified by type: access denied is auth, an unknown plugin too, any
// other refusal is the database's business.
func TestFailureReasons(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&upstreamError{Err: Err{Code: 1045, State: "28000"}}, "auth"},
		{&upstreamError{Err: Err{Code: 1049, State: "42000"}}, "other"},
		{&unsupportedPluginError{plugin: "auth_gssapi_client"}, "auth"},
	} {
		if got := health.Reason(tc.err); got != tc.want {
			t.Errorf("health.Reason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
