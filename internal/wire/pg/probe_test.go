package pg

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// probeServer accepts one connection on ln, logs the probe user in over TLS, then hands each
// ping query it reads to answer; it checks what the login asked for.
func probeServer(ln net.Listener, srvTLS *tls.Config, answer func(tc *tls.Conn, q int) bool) (done <-chan error) {
	ch := make(chan error, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer sc.Close()
		ch <- func() error {
			if !acceptSSLRequest(sc) {
				return errors.New("no SSLRequest")
			}
			tc := tls.Server(sc, srvTLS)
			be := pgproto3.NewBackend(tc, tc)
			msg, err := be.ReceiveStartupMessage()
			if err != nil {
				return err
			}
			sm, ok := msg.(*pgproto3.StartupMessage)
			if !ok || sm.Parameters["user"] != "probe" || sm.Parameters["application_name"] != ProbeApplicationName {
				return errors.New("unexpected startup")
			}
			be.Send(&pgproto3.AuthenticationOk{})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if err := be.Flush(); err != nil {
				return err
			}
			for q := 0; ; q++ {
				m, err := be.Receive()
				if err != nil {
					return nil // the client closed
				}
				switch m := m.(type) {
				case *pgproto3.Terminate:
					return nil
				case *pgproto3.Query:
					if m.String != "" {
						return errors.New("ping is not an empty query: " + m.String)
					}
				default:
					return errors.New("unexpected message")
				}
				if !answer(tc, q) {
					return nil
				}
			}
		}()
	}()
	return ch
}

func openTestSession(t *testing.T, answer func(tc *tls.Conn, q int) bool) (health.ProbeSession, <-chan error) {
	t.Helper()
	srvTLS, _ := pgTestTLS(t)
	tlsCfgs, err := wire.NewTLSConfigs(wire.Insecure, "")
	if err != nil {
		t.Fatal(err)
	}
	// A real socket: a ping that times out mid-answer must not block the server's write.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	done := probeServer(ln, srvTLS, answer)
	p := New(Config{Listener: "t", TLS: tlsCfgs, ProbeUser: "probe",
		ProbeSecret: func(context.Context, health.Path, string) (string, error) { return "", nil }})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := p.OpenProbeSession(ctx, health.Path{Name: "a", Address: ln.Addr().String(), TLSServerName: "db.test"})
	if err != nil {
		t.Fatal(err)
	}
	return sess, done
}

func pingWithin(s health.ProbeSession, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.Ping(ctx)
}

// A kept session answers pings; a ping the server is slow to answer times out, stays
// outstanding (no second query is sent) and is answered later even when the answer arrives
// cut in two across the timeouts.
func TestProbeSessionPingAndSilence(t *testing.T) {
	release, written := make(chan struct{}), make(chan struct{})
	var empty, ready []byte
	empty, _ = (&pgproto3.EmptyQueryResponse{}).Encode(nil)
	ready, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(nil)
	answer := append(append([]byte{}, empty...), ready...)
	sess, done := openTestSession(t, func(tc *tls.Conn, q int) bool {
		if q == 1 { // the second ping: first silence, then half an answer, then the rest
			<-release
			if _, err := tc.Write(answer[:3]); err != nil {
				return false
			}
			written <- struct{}{}
			<-release
			_, err := tc.Write(answer[3:])
			return err == nil
		}
		_, err := tc.Write(answer)
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
	// Half an answer is still no answer.
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
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
}

// A server that terminates the session (pg_terminate_backend, an idle timeout) answers the
// ping with its FATAL: the session is gone, and that is not a timeout.
func TestProbeSessionEndedByServer(t *testing.T) {
	sess, done := openTestSession(t, func(tc *tls.Conn, q int) bool {
		b, _ := (&pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}).Encode(nil)
		_, _ = tc.Write(b)
		return false
	})
	err := pingWithin(sess, 5*time.Second)
	if err == nil || wire.IsTimeout(err) || !strings.Contains(err.Error(), "57P01") {
		t.Fatalf("ping on a terminated session: %v, want the server's 57P01", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
	if err := pingWithin(sess, 5*time.Second); err == nil || wire.IsTimeout(err) {
		t.Fatalf("ping after the server closed: %v, want an error that is not a timeout", err)
	}
	_ = sess.Close()
}
