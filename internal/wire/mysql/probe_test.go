package mysql

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// openPingSession logs a probe session in to a fake server that then hands each COM_PING it
// reads to answer (false: the server closes), and ends at COM_QUIT.
func openPingSession(t *testing.T, answer func(c net.Conn, q int) bool) (health.ProbeSession, <-chan error) {
	t.Helper()
	srvTLS, _ := testTLS(t)
	addr, errc := fakeServer(t, srvTLS, allCaps, gm.AUTH_NATIVE_PASSWORD, func(c net.Conn, g *Greeting, r *HandshakeResponse) error {
		if r.User != "probe" {
			return errors.New("probe session logged in as " + r.User)
		}
		if err := WritePacket(c, 3, AppendOK(nil, gm.SERVER_STATUS_AUTOCOMMIT)); err != nil {
			return err
		}
		for q := 0; ; q++ {
			seq, p, err := ReadPacket(c, MaxHandshakePacket)
			if err != nil {
				return nil // the client closed
			}
			if seq != 0 || len(p) != 1 {
				return errors.New("unexpected command packet")
			}
			switch p[0] {
			case gm.COM_QUIT:
				return nil
			case gm.COM_PING:
			default:
				return errors.New("unexpected command")
			}
			if !answer(c, q) {
				return nil
			}
		}
	})
	tlsCfgs, err := wire.NewTLSConfigs(wire.Insecure, "")
	if err != nil {
		t.Fatal(err)
	}
	p := New(Config{Listener: "t", TLS: tlsCfgs, ProbeUser: "probe",
		ProbeSecret: func(context.Context, health.Path, string) (string, error) { return "pw", nil }})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := p.OpenProbeSession(ctx, health.Path{Name: "a", Address: addr, TLSServerName: "db.test"})
	if err != nil {
		t.Fatal(err)
	}
	return sess, errc
}

func pingWithin(s health.ProbeSession, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.Ping(ctx)
}

// COM_PING on a kept session: answered; a ping the server is slow to answer times out, stays
// outstanding (no second COM_PING) and is answered later, even cut in two across timeouts.
func TestProbeSessionPingAndSilence(t *testing.T) {
	release, written := make(chan struct{}), make(chan struct{})
	ok := AppendPacket(nil, 1, AppendOK(nil, gm.SERVER_STATUS_AUTOCOMMIT))
	sess, errc := openPingSession(t, func(c net.Conn, q int) bool {
		if q == 1 {
			<-release
			if _, err := c.Write(ok[:2]); err != nil {
				return false
			}
			written <- struct{}{}
			<-release
			_, err := c.Write(ok[2:])
			return err == nil
		}
		_, err := c.Write(ok)
		return err == nil
	})
	if err := pingWithin(sess, 5*time.Second); err != nil {
		t.Fatalf("first ping: %v", err)
	}
	if err := pingWithin(sess, 50*time.Millisecond); !wire.IsTimeout(err) {
		t.Fatalf("unanswered ping: %v, want a timeout", err)
	}
	release <- struct{}{}
	<-written
	if err := pingWithin(sess, 50*time.Millisecond); !wire.IsTimeout(err) {
		t.Fatalf("half-answered ping: %v, want a timeout", err)
	}
	release <- struct{}{}
	if err := pingWithin(sess, 5*time.Second); err != nil {
		t.Fatalf("the late answer: %v", err)
	}
	if err := pingWithin(sess, 5*time.Second); err != nil {
		t.Fatalf("ping after the late answer: %v", err)
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server: %v", err)
	}
}

// A server closing an idle session (wait_timeout: MariaDB's ERR 4031, or a KILL) answers with
// its ERR: the session is gone, and that is not a timeout.
func TestProbeSessionEndedByServer(t *testing.T) {
	sess, errc := openPingSession(t, func(c net.Conn, q int) bool {
		_ = WritePacket(c, 1, (&Err{Code: 4031, State: "HY000", Message: "The client was disconnected by the server because of inactivity"}).Encode())
		return false
	})
	err := pingWithin(sess, 5*time.Second)
	if err == nil || wire.IsTimeout(err) || !strings.Contains(err.Error(), "4031") {
		t.Fatalf("ping on a closed session: %v, want the server's ERR 4031", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server: %v", err)
	}
	if err := pingWithin(sess, 5*time.Second); err == nil || wire.IsTimeout(err) {
		t.Fatalf("ping after the server closed: %v, want an error that is not a timeout", err)
	}
	_ = sess.Close()
}
