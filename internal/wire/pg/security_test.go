package pg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// noPaths is a source that fails every open and counts them: a handshake that reaches it has
// let the app through the local checks.
type noPaths struct{ tries atomic.Int32 }

func (n *noPaths) Open(context.Context, *proxy.Startup) (*proxy.Session, error) {
	n.tries.Add(1)
	return nil, errors.New("no path in this test")
}

// TestEmptyLocalPasswordFileLetsNobodyIn: a local password file that is empty (a Secret mounted
// before it was filled) must not turn into "the empty password is right".
func TestEmptyLocalPasswordFileLetsNobodyIn(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "local")
	if err := os.WriteFile(pwFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	paths := &noPaths{}
	p := New(Config{Listener: "t", LocalPasswordFile: pwFile})
	app, side := net.Pipe()
	defer app.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := proxy.Handshake(context.Background(), p, paths, side)
		_ = side.Close()
		errc <- err
	}()
	_ = app.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := app.Write(startupBytes(map[string]string{"user": "app", "database": "db"})); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(app)
	typ, body, err := readMessage(br, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if typ == 'R' { // asked for the password: answer with an empty one
		pw, _ := (&pgproto3.PasswordMessage{Password: ""}).Encode(nil)
		if _, err := app.Write(pw); err != nil {
			t.Fatal(err)
		}
		if typ, body, err = readMessage(br, 4096); err != nil {
			t.Fatal(err)
		}
	}
	if herr := <-errc; herr == nil || paths.tries.Load() != 0 {
		t.Fatalf("handshake went on to the upstream (%d tries, err %v)", paths.tries.Load(), herr)
	}
	if typ != 'E' || !bytes.Contains(body, []byte("local password file")) {
		t.Fatalf("got %q %q, want an ErrorResponse about the local password file", typ, body)
	}
}

// Probe failures are classified by type: the database's own answer says whether it refused
// the credentials, and an upstream without TLS is a TLS failure.
func TestFailureReasons(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("login: %w", &upstreamError{resp: pgproto3.ErrorResponse{Code: "28P01"}}), "auth"},
		{&upstreamError{resp: pgproto3.ErrorResponse{Code: "3D000"}}, "other"},
		{&wire.NoTLSError{Msg: "answered 'N'"}, "tls"},
	} {
		if got := health.Reason(tc.err); got != tc.want {
			t.Errorf("health.Reason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
