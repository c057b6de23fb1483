package pg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/health"
)

// noPaths fails every login and counts the attempts: a handshake that reaches it has let the
// app through the local checks.
type noPaths struct{ tries atomic.Int32 }

func (n *noPaths) Try(context.Context, func(context.Context, health.Path) error) (health.Path, error) {
	n.tries.Add(1)
	return health.Path{}, errors.New("no path in this test")
}
func (n *noPaths) Lookup(string) (health.Path, bool) { return health.Path{}, false }

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
		_, err := p.Handshake(context.Background(), side, paths)
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
